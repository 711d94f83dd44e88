"""The one-line-per-node text form of a graph (``repr``, errors, ``archlab show``).

Example::

    graph resnet18(%x: 3x224x224)
      %conv1 = conv2d[out_channels=64, kernel_size=7, stride=2, padding=3, bias=False](%x) -> 64x112x112
      ...
      return out=%fc

Only attributes that differ from their defaults are printed; a square pair
prints as one number.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archlab.errors import fmt_shape, short_int
from archlab.ops import get_op

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.graph import Graph
    from archlab.graph.node import Node


def fmt_value(v: Any, pair: bool = True) -> str:
    """An attribute value as written in a node line (ints beyond 18 digits as
    ``~1.0e400``: :func:`~archlab.errors.short_int`); a square ``pair`` as one
    number."""
    if pair and isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
        return fmt_value(v[0])
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt_value(x) for x in v) + ")"
    if type(v) is int:
        return short_int(v)
    if isinstance(v, str) and len(v) > 40:  # a constant's encoded data: its start and length
        return f"{v[:16]!r}...({len(v):,} chars)"
    return repr(v) if isinstance(v, str) else str(v)


def fmt_attrs(node: Node, *, all_attrs: bool = False) -> str:
    """``out_channels=64, kernel_size=3`` (non-default attributes only)."""
    try:
        op = get_op(node.op)
        defaults = op.defaults()
        pairs = {a.name for a in op.attrs if a.kind == "pair"}
    except Exception:  # unknown op: print everything
        defaults, pairs = {}, None
    items = [
        f"{k}={fmt_value(v, pairs is None or k in pairs)}"
        for k, v in node.attrs.items()
        if all_attrs or k not in defaults or defaults[k] != v
    ]
    return ", ".join(items)


def node_line(node: Node) -> str:
    """``%name = op[attrs](%in1, %in2) -> CxHxW``."""
    attrs = fmt_attrs(node)
    args = ", ".join(f"%{i}" for i in node.inputs)
    shape = f" -> {fmt_shape(node.shape)}" if node.shape is not None else ""
    return f"%{node.name} = {node.op}{'[' + attrs + ']' if attrs else ''}({args}){shape}"


def graph_text(graph: Graph, *, max_nodes: int | None = None) -> str:
    """The whole graph, one node a line; ``max_nodes`` elides the middle."""
    ins = ", ".join(
        f"%{n.name}: {fmt_shape(tuple(n.attrs['shape']))}" for n in graph.nodes if n.op == "input"
    )
    lines = [f"graph {graph.name}({ins})"]
    body = [n for n in graph.nodes if n.op != "input"]
    if max_nodes is not None and len(body) > max_nodes:
        half = max_nodes // 2
        body_lines = [node_line(n) for n in body[:half]]
        body_lines.append(f"... {len(body) - 2 * half} more nodes ...")
        body_lines += [node_line(n) for n in body[-half:]]
    else:
        body_lines = [node_line(n) for n in body]
    lines += ["  " + line for line in body_lines]
    outs = ", ".join(f"{k}=%{v}" for k, v in graph.outputs.items())
    lines.append(f"  return {outs}")
    return "\n".join(lines)
