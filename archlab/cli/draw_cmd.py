"""``archlab draw MODEL -o net.svg`` (a picture of the graph, :mod:`archlab.report.draw`)
and the ONNX half of ``archlab export MODEL --format onnx -o net.onnx`` (open it in Netron)."""
from __future__ import annotations

import argparse
import contextlib
import sys

from archlab.cli.args import input_shape, output_path, positive_int

_MODEL_HELP = "zoo name, description file (.yaml), torchvision:NAME or package.module:callable"


def add_parser(sub) -> None:
    """Register ``draw`` (``export --format onnx`` is :func:`export_onnx`, called by ``archlab export``)."""
    s = sub.add_parser("draw", help="draw a model's graph (SVG, PNG or PDF; blocks collapsed by --depth)")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("-o", "--output", required=True, type=output_path, help="file to write: .svg, .png or .pdf")
    s.add_argument("--depth", type=positive_int, help="one box per scope at this depth (as `analyze --depth`)")
    s.add_argument("--input", metavar="CxHxW", type=input_shape, help="input shape (default: the model's)")
    s.set_defaults(func=cmd_draw)


def cmd_draw(args: argparse.Namespace) -> int:
    """Write the picture; print where."""
    from archlab.report import use_file_backend
    from archlab.report.draw import picture_format, write_drawing
    from archlab.resolve import resolve_model

    use_file_backend()

    picture_format(args.output)  # before any work
    graph = resolve_model(args.model, input_shape=args.input)
    write_drawing(graph, args.output, depth=args.depth)
    print(f"wrote {args.output}: {graph.name}" + (f" at depth {args.depth}" if args.depth else ""))
    return 0


def export_onnx(graph, output: str) -> None:
    """Compile ``graph`` to a module and export it with ``torch.onnx`` (its progress goes to stderr).

    Raises:
        ArchlabError: no single input, onnx/onnxscript missing, the exporter failed, the file cannot be written.
    """
    import torch

    from archlab.errors import ArchlabError
    from archlab.torchio.compile import to_module

    if len(graph.input_nodes) != 1:
        raise ArchlabError(f"model {graph.name} has {len(graph.input_nodes)} inputs; export takes one image input")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ArchlabError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                           "pip install onnx onnxscript") from None
    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 5):
        raise ArchlabError(f"ONNX export needs torch >= 2.5 (its dynamo exporter); this is torch {torch.__version__}")
    shape = tuple(graph.input_nodes[0].attrs["shape"])
    module = to_module(graph).eval()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            torch.onnx.export(module, (torch.randn(1, *shape),), output, dynamo=True,
                              input_names=["input"], output_names=list(graph.outputs))
    except OSError as e:
        raise ArchlabError(f"cannot write {output}: {e.strerror or e}") from None
    except Exception as e:  # the exporter's own failure: name it on one line
        raise ArchlabError(f"torch.onnx could not export {graph.name}: {type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]}") from None
    print(f"wrote {output}: {graph.name}, input 1x{'x'.join(map(str, shape))} (open it in Netron)", file=sys.stderr)
