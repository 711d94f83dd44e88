"""``archlab`` command line. User errors print one line and exit with status 2."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from archlab.cli import commands
from archlab.cli.args import (
    MAX_FORWARD_BATCH, Parser, bounded_int, input_shape, nonnegative_float, output_path, positive_int,
)

MODEL_HELP = "zoo name (archlab zoo), description file (.yaml), torchvision:NAME or package.module:callable"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="archlab", description="Describe, analyze and search CNN architectures.")
    p.add_argument("--version", action="version", version=f"archlab {_version()}")
    p.add_argument("--traceback", action="store_true",
                   help="on an error, print the full Python trace (also: environment ARCHLAB_TRACEBACK=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("zoo", help="list the model zoo with parameter counts")
    s.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*'")
    s.set_defaults(func=commands.cmd_zoo)

    def model_cmd(name: str, help: str, func):
        s = sub.add_parser(name, help=help)
        s.add_argument("model", help=MODEL_HELP)
        s.add_argument("--input", metavar="CxHxW", type=input_shape,
                       help="input shape, e.g. 3x224x224, or one side: 224 (default: the model's)")
        s.add_argument("--num-classes", type=positive_int, default=None, help="classifier outputs (zoo/torchvision models)")
        s.set_defaults(func=func)
        return s

    s = model_cmd("analyze", "per-layer params, MACs, memory and receptive fields", commands.cmd_analyze)
    s.add_argument("--batch", type=positive_int, default=1, help="batch size for MACs and memory (default 1)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "fp32", "fp16", "bf16"],
                   help="activation dtype (default float32)")
    s.add_argument("--depth", type=positive_int, default=None, help="aggregate rows by scope, e.g. 1 -> layer1, layer2, ...")
    s.add_argument("--flops-convention", default="torchvision", choices=["torchvision", "fvcore", "full"],
                   help="what counts as a MAC (default torchvision: conv + linear only)")
    s.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    s.add_argument("--all-nodes", action="store_true", help="one row per node (default folds BN/activations into their layer)")
    s.add_argument("--optimizer", default="adam", choices=["sgd", "sgd_momentum", "adam"], help="for training memory")
    s.add_argument("-o", "--output", type=output_path, help="write to a file instead of stdout")

    s = model_cmd("show", "print a graph one node a line", commands.cmd_show)
    s.add_argument("--full", action="store_true", help="print every node (default elides the middle of long graphs)")
    s = model_cmd("export", "write a model's description file (or ONNX, for Netron)", commands.cmd_export)
    s.add_argument("-o", "--output", type=output_path, help="file to write (default: stdout; onnx needs a file)")
    s.add_argument("--format", choices=["yaml", "onnx"], default="yaml",
                   help="yaml: archlab's description file (default); onnx: the compiled module, for Netron")

    s = sub.add_parser("compare", help="params and MACs against fvcore, FlopCounterMode and torchvision; outputs against torchvision")
    s.add_argument("model", help=MODEL_HELP)
    s.add_argument("--against", choices=["torchvision", "none"], default=None,
                   help="torchvision: require and run the weights/outputs check (default: run it when torchvision has the model)")
    s.add_argument("--weights-only", action="store_true", help="skip the counts table")
    s.add_argument("--num-classes", type=positive_int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--input", metavar="CxHxW", type=input_shape, help="input shape (default: the model's canonical input)")
    s.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    # Real forward passes of two models: a batch beyond this is a typo, not a check.
    s.add_argument("--batch", type=bounded_int(low=1, high=MAX_FORWARD_BATCH), default=1,
                   help=f"batch of the outputs check (default 1, at most {MAX_FORWARD_BATCH})")
    s.add_argument("--tolerance", type=nonnegative_float, default=1e-5, help="max abs output difference allowed")
    s.set_defaults(func=commands.cmd_compare)

    from archlab.cli import erf_cmd

    erf_cmd.add_parser(sub)
    from archlab.cli import draw_cmd

    draw_cmd.add_parser(sub)
    from archlab.cli import search_cmd

    search_cmd.add_parser(sub)
    from archlab.cli import train_cmd

    train_cmd.add_parser(sub)

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


MAX_ERROR_CHARS = 480  # an error line longer than this is cut (--traceback prints it whole)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("archlab")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from archlab import __version__

        return __version__


def _one_line(text: str, full: bool, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line; cut to ``limit`` characters unless ``full``."""
    line = " ".join(text.split())
    if len(line) > limit and not full:
        line = line[:limit - 60].rstrip() + f" ... [{len(line):,} characters; --traceback shows all]"
    return line


def main(argv: list[str] | None = None) -> int:
    """Run one ``archlab`` command; returns the exit status.

    0: done; 1: a check the command ran failed (``compare``) or an internal
    error (a bug: reported as one line asking for a report); 2: a user error,
    one line ``archlab: error: ...`` (usage errors too); 130: interrupted.
    With ``--traceback`` (or ``ARCHLAB_TRACEBACK=1``) every error also prints
    its full Python trace, including the user's own code's.
    """
    from archlab.errors import ArchlabError

    argv = list(sys.argv[1:] if argv is None else argv)
    # --traceback is honoured anywhere before a "--" (also after the subcommand).
    end = argv.index("--") if "--" in argv else len(argv)
    full = "--traceback" in argv[:end] or os.environ.get("ARCHLAB_TRACEBACK", "") not in ("", "0")
    argv = [a for i, a in enumerate(argv) if not (i < end and a == "--traceback")]
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # `search --gpus` restarts itself once per GPU with these
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except ArchlabError as e:
        if full:
            traceback.print_exception(e)
            if getattr(e, "details", None):  # what the one line leaves out (every unsupported node, ...)
                print(e.details, file=sys.stderr)
        # One line; a multiline error (an import's unsupported ops) adds a bounded list, one item per line.
        head, *rest = str(e).split("\n")
        print("\n".join([f"archlab: error: {_one_line(head, full)}",
                         *[("  " if line.startswith("  ") else "") + _one_line(line, full) for line in rest]]),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in archlab: say so honestly, in one line, and ask for a report
        if full:
            traceback.print_exception(e)
        print(f"archlab: internal error: {_one_line(f'{type(e).__name__}: {e}', full, 300)}; this is a bug in archlab, "
              "please report it (--traceback shows the full trace)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
