"""A transient status line on stderr for the slow steps of a command (importing
torch, tracing a model, running forward passes).

Shown only when stderr is a terminal: the line is drawn, the step runs, and the
line is erased, so it never mixes into logs, pipes or the one-line error
contract (a failing command's stderr is still exactly its error line).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def status(text: str) -> Iterator[None]:
    """Show ``archlab: TEXT ...`` on a terminal's stderr while the block runs."""
    stream = sys.stderr
    shown = False
    try:
        shown = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        pass
    if shown:
        stream.write(f"archlab: {text} ...\r")
        stream.flush()
    try:
        yield
    finally:
        if shown:
            stream.write("\r\033[K")
            stream.flush()


def is_imported(spec: str) -> bool:
    """Whether resolving ``spec`` imports and traces a torch model (seconds, not ms)."""
    return ":" in spec and not spec.startswith("nb201:")
