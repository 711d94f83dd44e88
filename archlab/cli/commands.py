"""The ``archlab`` subcommands. Each takes the parsed arguments and returns an exit status."""
from __future__ import annotations

import argparse

from archlab.cli.args import write_text
from archlab.cli.status import is_imported, status
from archlab.cli.table import render


def _graph(args: argparse.Namespace):
    """The graph of ``args.model`` at ``args.input`` (already parsed by
    :func:`archlab.cli.args.input_shape`) with ``args.num_classes``."""
    from archlab.resolve import resolve_model

    cfg = {}
    if getattr(args, "num_classes", None) is not None:
        cfg["num_classes"] = args.num_classes
    shape = getattr(args, "input", None)
    if not is_imported(args.model):
        return resolve_model(args.model, input_shape=shape, **cfg)
    with status(f"importing {args.model} (torch, torch.fx trace)"):
        return resolve_model(args.model, input_shape=shape, **cfg)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Per-layer params, MACs, activation memory and receptive field, with totals."""
    from archlab.analysis import analyze

    a = analyze(
        _graph(args), batch=args.batch, dtype=args.dtype, convention=args.flops_convention,
        depth=args.depth, fold=not args.all_nodes, optimizer=args.optimizer,
    )
    write_text(a.render(args.format), args.output)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    """List the zoo: family, parameter count (from the IR), reference, torchvision twin."""
    from archlab.errors import ModelNotFoundError
    from archlab.zoo import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        hint = "" if any(c in args.pattern for c in "*?[") else f"; for every name starting with it: '{args.pattern}*'"
        raise ModelNotFoundError(f"no zoo model matches {args.pattern!r}{hint}; `archlab zoo` lists them all")
    rows = []
    for name in names:
        info = model_info(name)
        params = info.build().num_params()
        ref = f"{info.ref_params:,}" if info.ref_params else "-"
        rows.append([name, info.family, f"{params:,}", ref, info.torchvision or "-", "x".join(map(str, info.input_shape))])
    print(render(["model", "family", "params", "reference", "torchvision", "input"], rows, align="llrrll"))
    print(f"\n{len(rows)} models. Params are counted from the graph (no weights built); "
          "`archlab compare MODEL --against torchvision` checks a model against torchvision.")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print the graph, one node a line."""
    g = _graph(args)
    print(g.to_text(max_nodes=None if args.full else 60))
    print(f"# {len(g)} nodes, {g.num_params():,} parameters, outputs: {', '.join(g.outputs)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the description file (YAML), or with ``--format onnx`` the ONNX model."""
    from archlab.lang import dump

    if getattr(args, "format", "yaml") == "onnx":
        from archlab.cli.draw_cmd import export_onnx
        from archlab.errors import ArchlabError

        if not args.output or args.output == "-":
            raise ArchlabError("--format onnx writes a binary file: give it with -o net.onnx")
        export_onnx(_graph(args), args.output)
        return 0
    write_text(dump(_graph(args)), args.output)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Side-by-side params and MACs against the peer tools; with ``--against
    torchvision`` (or by default for zoo models torchvision also has), also load
    torchvision's weights and compare outputs."""
    from archlab.errors import ArchlabError
    from archlab.torchio.compare import compare_with_torchvision, torchvision_model
    from archlab.torchio.count_compare import compare_counts
    from archlab.zoo.registry import find_model, model_info

    in_zoo = find_model(args.model) is not None
    twin = model_info(args.model).torchvision if in_zoo else None
    if args.against == "torchvision" and not twin:
        if in_zoo:
            raise ArchlabError(f"model {args.model} has no torchvision counterpart; `archlab compare {args.model}` compares counts only")
        raise ArchlabError(f"--against torchvision needs a zoo model name; '{args.model}' is not one (see `archlab zoo`)")
    ok = True
    if not args.weights_only:
        graph = _graph(args)
        canonical = in_zoo and tuple(graph.input_nodes[0].attrs["shape"]) == tuple(model_info(args.model).input_shape)
        with status("counting with fvcore and FlopCounterMode"):
            reference = torchvision_model(args.model) if twin else None
            # torchvision's metadata was measured at the canonical input size only.
            counts = compare_counts(graph, reference=reference, torchvision_name=twin if canonical else None)
        print(counts.report())
        ok = counts.ok
    if twin and args.against != "none":
        with status(f"running {args.model} and torchvision's {twin}"):
            r = compare_with_torchvision(args.model, input_shape=args.input, dtype=args.dtype, batch=args.batch)
        print()
        print(r.report())
        same = r.params_equal and r.state_dict_keys_equal and r.max_abs_diff <= args.tolerance
        print(f"  verdict           {'identical' if same else 'DIFFERENT'} (tolerance {args.tolerance:g})")
        ok = ok and same
    return 0 if ok else 1


def cmd_ops(args: argparse.Namespace) -> int:
    """List the registered ops and their attributes."""
    from archlab.ops import all_ops

    rows = []
    for name, op in sorted(all_ops().items()):
        lo, hi = op.arity
        arity = str(lo) if lo == hi else f"{lo}+" if hi is None else f"{lo}-{hi}"
        attrs = ", ".join(a.name + ("" if a.required else "=" + repr(a.default)) for a in op.attrs)
        rows.append([name, arity, attrs or "-", op.doc])
    print(render(["op", "inputs", "attributes", "what it does"], rows, align="llll"))
    return 0
