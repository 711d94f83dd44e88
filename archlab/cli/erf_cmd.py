"""``archlab erf MODEL``: the effective receptive field of one node, beside its
theoretical receptive field (see :mod:`archlab.analysis.erf`)."""
from __future__ import annotations

import argparse

from archlab.cli.args import bounded_int, input_shape, output_path, seed
from archlab.cli.status import is_imported, status

MAX_SAMPLES = 4096  # each sample is a forward and a backward pass

_MODEL_HELP = "zoo name (archlab zoo), description file (.yaml), torchvision:NAME or package.module:callable"


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the ``erf`` subcommand on an ``argparse`` subparsers object."""
    s = sub.add_parser(
        "erf", help="effective receptive field of a node (Luo et al. 2016) and its theoretical field",
        description="Average |d unit / d input| over random inputs (random weights unless --weights) "
        "and report the sides of the centred squares holding 20/50/95% of the gradient mass.",
    )
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--node", help="node to analyse (default: the last feature map larger than 1x1)")
    s.add_argument("--input", metavar="CxHxW", type=input_shape,
                   help="input shape, e.g. 3x224x224, or one side: 224 (default: the model's)")
    s.add_argument("--samples", type=bounded_int(low=1, high=MAX_SAMPLES), default=16,
                   help=f"random inputs to average (default 16, at most {MAX_SAMPLES})")
    s.add_argument("--seed", type=seed, default=0, help="seed of the weights and inputs (default 0)")
    s.add_argument("--weights", metavar="FILE", help="a state_dict saved with torch.save (default: random weights)")
    s.add_argument("--png", metavar="FILE", type=output_path, help="write the heatmap to this PNG (checked before the work)")
    s.set_defaults(func=cmd_erf)
    return s


def cmd_erf(args: argparse.Namespace) -> int:
    """Print the ERF squares and the theoretical field; optionally write the PNG."""
    from archlab.analysis.erf import effective_receptive_field
    from archlab.report.erf import write_erf_png
    from archlab.errors import ArchlabError
    from archlab.resolve import resolve_model

    if is_imported(args.model):
        with status(f"importing {args.model} (torch, torch.fx trace)"):
            graph = resolve_model(args.model, input_shape=args.input)
    else:
        graph = resolve_model(args.model, input_shape=args.input)
    state_dict = None
    if args.weights:
        import torch

        try:
            state_dict = torch.load(args.weights, map_location="cpu", weights_only=True)
        except Exception as e:  # missing, not a torch file, truncated, pickled code refused, ...
            text = " ".join(str(e).split())[:200]
            raise ArchlabError(f"cannot read weights {args.weights}: {type(e).__name__}: {text}") from None
    if args.node is not None:
        graph[args.node]  # UnknownNodeError names the graph
    with status(f"averaging gradients over {args.samples} random inputs"):
        erf = effective_receptive_field(graph, args.node, samples=args.samples, seed=args.seed, state_dict=state_dict)
    print(f"{graph.name}  ({'given' if state_dict is not None else 'random'} weights)")
    print(erf.report())
    if args.png:
        from archlab.report import use_file_backend

        use_file_backend()
        try:
            w, h = write_erf_png(erf, args.png, title=f"{graph.name} {erf.node} (N={erf.samples})")
        except OSError as e:  # the folder vanished or the disk filled during the work
            raise ArchlabError(f"cannot write {args.png}: {e.strerror or e}") from None
        print(f"wrote {args.png} ({w}x{h})")
    return 0
