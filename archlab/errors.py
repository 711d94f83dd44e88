"""The exceptions archlab raises.

Every error a user can cause derives from :class:`ArchlabError`. Errors about a
graph name the node, its op, the shapes it saw and what was expected, so a
message can be acted on without reading a stack trace. The CLI catches
``ArchlabError``, prints its message on one line and exits with status 2.
"""
from __future__ import annotations


MAX_MESSAGE = 500
"""Characters of an error message: longer ones are cut (``... (N more characters)``),
so every one-line error stays one readable line however large the input."""


class ArchlabError(Exception):
    """Base class of every error caused by user input (graphs, files, names).

    A message (the first argument) longer than :data:`MAX_MESSAGE` characters is
    shortened on construction and line breaks become spaces; build messages
    from :func:`short` and :func:`short_list` so no part of one is unbounded."""

    multiline: bool = False  # the message is a head line and a bounded list, one item per line

    def __init__(self, *args) -> None:
        if args and isinstance(args[0], str):
            text = args[0]
            args = ("\n".join(cap_message(line) for line in text.split("\n")) if self.multiline
                    else cap_message(text), *args[1:])
        super().__init__(*args)


class GraphError(ArchlabError):
    """A structural problem with a graph: cycles, dangling or duplicate nodes."""


class CycleError(GraphError):
    """The graph is not a DAG."""


class DanglingNodeError(GraphError):
    """A node is unreachable from the inputs or does not reach any output."""


class DuplicateNameError(GraphError):
    """Two nodes share a name."""


class UnknownNodeError(GraphError):
    """A node refers to an input that does not exist."""


class UnknownOpError(ArchlabError):
    """A node uses an op that is not registered."""


class ArityError(ArchlabError):
    """A node has the wrong number of inputs for its op."""


class AttrError(ArchlabError):
    """A node's attributes are missing, unknown or of the wrong type."""


class ShapeError(ArchlabError):
    """Shapes do not fit: non-positive sizes, kernels larger than the padded input."""


class ChannelMismatchError(ShapeError):
    """add/mul/concat inputs disagree on channels."""


class SpatialMismatchError(ShapeError):
    """add/mul/concat inputs disagree on height/width."""


class SerializationError(ArchlabError):
    """A description file cannot be read."""


class ImportTorchError(ArchlabError):
    """A PyTorch model cannot be imported into the IR: a head line, then one line
    per kind of unsupported node (the importer bounds the list), then what to do."""

    multiline = True


class ModelNotFoundError(ArchlabError):
    """A model name is not in the zoo and is not a file or import path."""


class UserCodeError(ArchlabError):
    """Code the user supplied (a ``pkg.mod:callable`` model, a space file) raised.

    The message names the code and the exception on one line; ``__cause__`` is
    the original exception, which ``archlab --traceback`` prints in full.
    """


class TrialFailed(Exception):
    """A search candidate could not be evaluated for a reason of its own: its
    training diverged, ran out of memory or past ``--trial-timeout``.

    Not an :class:`ArchlabError`: the search engine records the trial as FAIL
    with this message (user attr ``fail_reason``), counts it as decided and goes
    on with the next candidate, instead of stopping as it does for a user error.
    """


def fmt_shape(shape) -> str:
    """``(64, 56, 56)`` -> ``'64x56x56'``; ``None`` -> ``'?'``; an astronomically
    large size as ``~1.0e400`` (:func:`short_int`)."""
    if shape is None:
        return "?"
    if not isinstance(shape, (tuple, list)):
        return short(shape)
    text = "x".join(short_int(s) if type(s) is int else short(s, 20) for s in shape[:8])
    return text + (f"x... ({len(shape) - 8} more)" if len(shape) > 8 else "")


def cap_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line and at most about ``limit`` characters."""
    text = text.replace("\r", " ").replace("\n", " ")
    if len(text) <= limit:
        return text
    return f"{text[:limit - 30]}... ({len(text) - limit + 30:,} more characters)"


def short_int(n: int) -> str:
    """``str(n)``, or ``~1.2e400`` for an int of more than 18 digits: Python
    refuses to write ints beyond 4,300 digits, and nobody reads one."""
    if -10**18 < n < 10**18:
        return str(n)
    import math

    sign, n = ("-" if n < 0 else ""), abs(n)
    shift = max(0, n.bit_length() - 64)
    e10 = math.log10(n >> shift) + shift * math.log10(2)
    e = math.floor(e10)
    return f"~{sign}{10 ** (e10 - e):.1f}e{e}"


def short(obj, limit: int = 80) -> str:
    """A ``repr`` of ``obj`` of at most about ``limit`` characters, in time
    bounded by ``limit`` whatever ``obj`` is (a YAML alias bomb, a list of a
    million items, an int of 10,000 digits)."""
    import itertools

    out: list[str] = []
    budget = [limit]

    def put(text: str) -> bool:
        if budget[0] <= 0:
            return False
        out.append(text[:budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(x, depth: int) -> bool:
        t = type(x)
        if t is bool or x is None or t is float:
            return put(repr(x))
        if t is int:
            return put(short_int(x))
        if t is str:
            return put(repr(x[:limit]) if len(x) <= limit else repr(x[:limit]) + "...")
        if t in (list, tuple, dict):
            if depth > 4:
                return put("...")
            open_, close = {list: "[]", tuple: "()", dict: "{}"}[t]
            if not put(open_):
                return False
            items = list(itertools.islice(x.items(), limit)) if t is dict else x[:limit]
            for k, item in enumerate(items):
                if k and not put(", "):
                    return False
                if t is dict:
                    if not walk(item[0], depth + 1) or not put(": ") or not walk(item[1], depth + 1):
                        return False
                elif not walk(item, depth + 1):
                    return False
            return put(close)
        return put(f"<{t.__name__}>")

    walk(obj, 0)
    text = "".join(out)
    return text if budget[0] > 0 else text[:limit] + "..."


def short_list(items, limit: int = 8, *, sep: str = ", ") -> str:
    """``'a, b, c, ... (19,997 more)'``: at most ``limit`` of ``items`` (strings)."""
    items = list(items) if not isinstance(items, (list, tuple)) else items
    head = sep.join(str(x)[:120] for x in items[:limit])
    return head + (f"{sep}... ({len(items) - limit:,} more)" if len(items) > limit else "")


def node_error(cls: type[ArchlabError], node, message: str, *, fix: str | None = None) -> ArchlabError:
    """Build ``cls`` with the standard prefix ``<op> '<name>': <message>[; <fix>]``."""
    text = f"{node.op} '{node.name}': {message}"
    if fix:
        text += f"; {fix}"
    err = cls(text)
    err.node = node.name
    return err
