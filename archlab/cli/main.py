"""``archlab`` command line. User errors print one line and exit with status 2."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from archlab.cli import commands

MODEL_HELP = "zoo name (archlab zoo), description file (.yaml), torchvision:NAME or package.module:callable"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archlab", description="Describe, analyze and search CNN architectures.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("zoo", help="list the model zoo with parameter counts")
    s.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*'")
    s.set_defaults(func=commands.cmd_zoo)

    def model_cmd(name: str, help: str, func):
        s = sub.add_parser(name, help=help)
        s.add_argument("model", help=MODEL_HELP)
        s.add_argument("--input", metavar="CxHxW", help="input shape, e.g. 3x224x224 (default: the model's)")
        s.add_argument("--num-classes", type=int, default=None, help="classifier outputs (zoo/torchvision models)")
        s.set_defaults(func=func)
        return s

    s = model_cmd("analyze", "per-layer params, MACs, memory and receptive fields", commands.cmd_analyze)
    s.add_argument("--batch", type=int, default=1, help="batch size for MACs and memory (default 1)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "fp32", "fp16", "bf16"],
                   help="activation dtype (default float32)")
    s.add_argument("--depth", type=int, default=None, help="aggregate rows by scope, e.g. 1 -> layer1, layer2, ...")
    s.add_argument("--flops-convention", default="torchvision", choices=["torchvision", "fvcore", "full"],
                   help="what counts as a MAC (default torchvision: conv + linear only)")
    s.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    s.add_argument("--all-nodes", action="store_true", help="one row per node (default folds BN/activations into their layer)")
    s.add_argument("--optimizer", default="adam", choices=["sgd", "sgd_momentum", "adam"], help="for training memory")
    s.add_argument("-o", "--output", help="write to a file instead of stdout")

    s = model_cmd("show", "print a graph one node a line", commands.cmd_show)
    s.add_argument("--full", action="store_true", help="print every node (default elides the middle of long graphs)")
    s = model_cmd("export", "write a model's description file", commands.cmd_export)
    s.add_argument("-o", "--output", help="file to write (default: stdout)")

    s = sub.add_parser("compare", help="params and MACs against fvcore, FlopCounterMode and torchvision; outputs against torchvision")
    s.add_argument("model", help=MODEL_HELP)
    s.add_argument("--against", choices=["torchvision", "none"], default=None,
                   help="torchvision: require and run the weights/outputs check (default: run it when torchvision has the model)")
    s.add_argument("--weights-only", action="store_true", help="skip the counts table")
    s.add_argument("--num-classes", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--input", metavar="CxHxW", help="input shape (default: the model's canonical input)")
    s.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--tolerance", type=float, default=1e-5, help="max abs output difference allowed")
    s.set_defaults(func=commands.cmd_compare)

    from archlab.cli import erf_cmd

    erf_cmd.add_parser(sub)
    from archlab.cli import search_cmd

    search_cmd.add_parser(sub)

    s = sub.add_parser("ops", help="list the registered ops")
    s.set_defaults(func=commands.cmd_ops)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """archlab's own warnings as one line, like its errors; other packages' as Python shows them."""
    if Path(filename).resolve().is_relative_to(_PACKAGE):
        print(f"archlab: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_PACKAGE = Path(__file__).resolve().parents[1]
_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    from archlab.errors import ArchlabError

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except ArchlabError as e:
        msg = " ".join(str(e).split("\n"))
        print(f"archlab: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
