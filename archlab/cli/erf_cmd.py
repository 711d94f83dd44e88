"""``archlab erf MODEL``: the effective receptive field of one node, beside its
theoretical receptive field (see :mod:`archlab.analysis.erf`)."""
from __future__ import annotations

import argparse

_MODEL_HELP = "zoo name (archlab zoo), description file (.yaml), torchvision:NAME or package.module:callable"


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the ``erf`` subcommand on an ``argparse`` subparsers object."""
    s = sub.add_parser(
        "erf", help="effective receptive field of a node (Luo et al. 2016) and its theoretical field",
        description="Average |d unit / d input| over random inputs (random weights unless --weights) "
        "and report the sides of the centred squares holding 20/50/95%% of the gradient mass.",
    )
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--node", help="node to analyse (default: the last feature map larger than 1x1)")
    s.add_argument("--input", metavar="CxHxW", help="input shape, e.g. 3x224x224 (default: the model's)")
    s.add_argument("--samples", type=int, default=16, help="random inputs to average (default 16)")
    s.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default 0)")
    s.add_argument("--weights", metavar="FILE", help="a state_dict saved with torch.save (default: random weights)")
    s.add_argument("--png", metavar="FILE", help="write the heatmap to this PNG")
    s.set_defaults(func=cmd_erf)
    return s


def cmd_erf(args: argparse.Namespace) -> int:
    """Print the ERF squares and the theoretical field; optionally write the PNG."""
    from archlab.analysis.erf import effective_receptive_field, write_erf_png
    from archlab.errors import ArchlabError
    from archlab.resolve import parse_shape, resolve_model

    if args.samples <= 0:
        raise ArchlabError(f"--samples must be positive, got {args.samples}")
    shape = parse_shape(args.input) if args.input else None
    graph = resolve_model(args.model, input_shape=shape)
    state_dict = None
    if args.weights:
        import torch

        try:
            state_dict = torch.load(args.weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise ArchlabError(f"cannot read weights {args.weights}: {e}") from None
    if args.node is not None:
        graph[args.node]  # UnknownNodeError names the graph
    erf = effective_receptive_field(graph, args.node, samples=args.samples, seed=args.seed, state_dict=state_dict)
    print(f"{graph.name}  ({'given' if state_dict is not None else 'random'} weights)")
    print(erf.report())
    if args.png:
        w, h = write_erf_png(erf, args.png, title=f"{graph.name} {erf.node} (N={erf.samples})")
        print(f"wrote {args.png} ({w}x{h})")
    return 0
