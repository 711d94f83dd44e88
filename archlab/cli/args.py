"""Argument types and the parser class every ``archlab`` subcommand shares.

Each ``type=`` function here either returns the parsed value or raises
``argparse.ArgumentTypeError`` with the value and what is accepted; the
:class:`Parser` prints that as one line ``archlab: error: ...`` and exits with
status 2, like every other user error. A subcommand module (``erf_cmd``,
``search_cmd``, ``train_cmd``) imports what it needs from here, so ``--batch 0``
means the same thing everywhere.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

MAX_ARG_ECHO = 60  # characters of a bad value echoed back in an error
MAX_FORWARD_BATCH = 1024  # largest batch of a command that runs real forward passes
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in [0, 2**32)


def _echo(text: str, limit: int = MAX_ARG_ECHO) -> str:
    """``repr`` of a user's value, cut so one error line stays short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line, ``archlab: error: ...``,
    exit status 2. Subparsers inherit the class (``add_subparsers`` uses the
    parent's type), so every subcommand shares it."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if len(message) > 300:
            message = message[:300] + "..."
        self.exit(2, f"archlab: error: {message}; see `{self.prog} --help`\n")


def _int(text: str) -> int:
    t = text.strip().replace("_", "")
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {_echo(text)}") from None


def bounded_int(*, low: int, high: int | None = None, what: str = "") -> "callable":
    """A ``type=`` accepting integers in ``[low, high]`` (``high=None``: no bound)."""

    def parse(text: str) -> int:
        v = _int(text)
        if v < low or (high is not None and v > high):
            rng = f">= {low}" if high is None else f"in [{low}, {high:,}]"
            raise argparse.ArgumentTypeError(f"must be an integer {rng}{what}, got {_echo(text)}")
        return v

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


positive_int = bounded_int(low=1)
nonnegative_int = bounded_int(low=0)
seed = bounded_int(low=0, high=MAX_SEED)


def _float(text: str, *, zero: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {_echo(text)}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if zero else '>'} 0, got {_echo(text)}")
    return v


def positive_float(text: str) -> float:
    """A finite float > 0 (``nan``, ``inf``, ``0`` and negatives are refused)."""
    return _float(text, zero=False)


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (``nan``, ``inf`` and negatives are refused)."""
    return _float(text, zero=True)


positive_float.__name__ = nonnegative_float.__name__ = "float"


def zoom_range(text: str) -> tuple[float, float]:
    """``LO,HI``: two finite floats with ``0 < LO <= HI`` (one number ``S`` means ``S,S``)."""
    parts = text.split(",")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"'{_echo(text)}' is not LO,HI (two numbers, e.g. 0.5,2)")
    lo, hi = positive_float(parts[0]), positive_float(parts[-1])
    if hi < lo:
        raise argparse.ArgumentTypeError(f"'{_echo(text)}': LO must be <= HI (e.g. 0.5,2)")
    return lo, hi


zoom_range.__name__ = "zoom range"


def input_shape(text: str) -> tuple[int, ...]:
    """``--input``: ``CxHxW`` (``3x224x224``) or one side ``S`` (``3xSxS``).

    Two parts (``3x224``) are refused: they could mean CxS or HxW.
    """
    from archlab.errors import ArchlabError
    from archlab.resolve import parse_shape

    try:
        return parse_shape(text)
    except ArchlabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


input_shape.__name__ = "shape"


def option_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``, VALUE read as an int, a float, ``true`` /
    ``false``, ``none`` or else the text itself (``--sampler-option lr=0.01``).
    Whether the sampler takes KEY with such a value is checked where it is built."""
    key, eq, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not eq or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"write KEY=VALUE (e.g. lr=0.01), got {_echo(text)}")
    v = value.strip()
    words = {"true": True, "false": False, "none": None, "null": None}
    if v.lower() in words:
        return key, words[v.lower()]
    for kind in (int, float):
        try:
            number = kind(v.replace("_", ""))
        except ValueError:
            continue
        if isinstance(number, float) and not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"{key}: not a finite number: {_echo(value)}")
        return key, number
    return key, v


def output_path(text: str) -> str:
    """A file to write (``-``: stdout), checked *before* any work is done: its
    folder must exist and be writable and the path must not be a folder."""
    if text == "-":
        return text
    if not text.strip():
        raise argparse.ArgumentTypeError("empty output path")
    p = Path(text)
    try:
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{_echo(text, 200)} is a folder; give a file name inside it")
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"cannot write {_echo(text, 200)}: folder {_echo(str(parent), 200)} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise argparse.ArgumentTypeError(f"cannot write {_echo(text, 200)}: permission denied")
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise argparse.ArgumentTypeError(f"cannot write {_echo(text, 200)}: {e}") from None
    return text


output_path.__name__ = "path"


def write_text(text: str, output: str | None) -> None:
    """``text`` (newline-terminated) to stdout (``None`` or ``-``) or to the file
    ``output``; an ``OSError`` (disk full, permissions changed) becomes one
    ``ArchlabError`` line naming the path."""
    from archlab.errors import ArchlabError

    if not text.endswith("\n"):
        text += "\n"
    if output in (None, "-"):
        sys.stdout.write(text)
        return
    try:
        with open(output, "w") as f:
            f.write(text)
    except OSError as e:
        raise ArchlabError(f"cannot write {output}: {e.strerror or e}") from None
    print(f"wrote {output}", file=sys.stderr)
