"""The exceptions archlab raises.

Every error a user can cause derives from :class:`ArchlabError`. Errors about a
graph name the node, its op, the shapes it saw and what was expected, so a
message can be acted on without reading a stack trace. The CLI catches
``ArchlabError``, prints its message on one line and exits with status 2.
"""
from __future__ import annotations


class ArchlabError(Exception):
    """Base class of every error caused by user input (graphs, files, names)."""


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
    """A PyTorch model cannot be imported into the IR (lists the unmapped nodes)."""


class ModelNotFoundError(ArchlabError):
    """A model name is not in the zoo and is not a file or import path."""


def fmt_shape(shape) -> str:
    """``(64, 56, 56)`` -> ``'64x56x56'``; ``None`` -> ``'?'``."""
    if shape is None:
        return "?"
    return "x".join(str(s) for s in shape)


def node_error(cls: type[ArchlabError], node, message: str, *, fix: str | None = None) -> ArchlabError:
    """Build ``cls`` with the standard prefix ``<op> '<name>': <message>[; <fix>]``."""
    text = f"{node.op} '{node.name}': {message}"
    if fix:
        text += f"; {fix}"
    err = cls(text)
    err.node = node.name
    return err
