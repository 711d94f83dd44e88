"""Shape inference: a pass that writes ``node.meta['shape']`` for every node."""
from __future__ import annotations

from typing import TYPE_CHECKING

from archlab.errors import ShapeError, fmt_shape, node_error
from archlab.ops import get_op

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.graph import Graph
    from archlab.graph.node import Node


MAX_ELEMENTS = 2**63 - 1
"""A tensor's element count is an int64 in PyTorch: no shape may exceed it (this
also keeps every count the analyzers derive from shapes finite as a float)."""


def infer_node(graph: Graph, node: Node, op=None) -> None:
    """Infer one node's shape from its inputs (inferring those first if needed);
    ``op``: the node's op definition, when the caller has it at hand."""
    shapes = []
    nodes = graph._nodes
    for i in node.inputs:
        src = nodes.get(i)
        if src is None:
            from archlab.errors import UnknownNodeError

            raise node_error(UnknownNodeError, node, f"input '{i}' does not exist")
        s = src.meta.get("shape")
        if s is None:
            infer_node(graph, src)
            s = src.meta["shape"]
        shapes.append(s)
    if op is None:
        op = get_op(node.op, node=node.name)
    # Ops whose output depends on nodes other than their inputs (max_unpool2d
    # restores the shape of its pool's input) set ``needs_graph``.
    shape = tuple(op.infer_shape_in(graph, node, shapes) if op.needs_graph else op.infer_shape(node, shapes))
    n = 1
    for x in shape:
        if not isinstance(x, int) or x <= 0:
            raise node_error(
                ShapeError, node,
                f"output shape {fmt_shape(shape)} has a non-positive size "
                f"(inputs {', '.join(fmt_shape(s) for s in shapes) or 'none'})",
                fix="use a larger input or fewer downsampling stages",
            )
        n *= x
    if n > MAX_ELEMENTS:
        raise node_error(
            ShapeError, node,
            f"output shape {fmt_shape(shape)} has more elements than a PyTorch tensor can hold (2**63 - 1)",
            fix="check the sizes, strides and kernels that lead here",
        )
    node.meta["shape"] = shape


def infer_shapes(graph: Graph) -> None:
    """Infer every node's output shape in topological order.

    Raises:
        ShapeError (and subclasses), naming the first node whose inputs do not fit.
    """
    for node in graph.nodes:
        node.meta.pop("shape", None)
    for node in graph.topo_order():
        infer_node(graph, node)
    graph._cache["shapes"] = True
