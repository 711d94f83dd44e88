"""Parameter and MAC passes: per-node rules from the op registry, summed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from archlab.errors import ArchlabError
from archlab.ops import get_op
from archlab.ops.base import CONVENTIONS

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph


@dataclass
class Counts:
    """Per-node counts of one pass.

    Fields:
        per_node: node name -> count (nodes whose op lacks the rule are absent).
        unsupported: ``"op 'name'"`` strings for nodes whose op has no rule; the
            total then excludes them and callers must say so.
    """

    per_node: dict[str, int] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.per_node.values())


def _ensure_shapes(graph: Graph) -> None:
    graph.validate()


def param_counts(graph: Graph) -> tuple[Counts, Counts]:
    """Trainable parameters and buffers of every node (elements, not bytes)."""
    _ensure_shapes(graph)
    params, buffers = Counts(), Counts()
    for node in graph.topo_order():
        op = get_op(node.op)
        shapes = [graph[i].shape for i in node.inputs]
        params.per_node[node.name] = op.params(node, shapes)
        buffers.per_node[node.name] = op.buffers(node, shapes)
        node.meta["params"] = params.per_node[node.name]
    return params, buffers


def mac_counts(graph: Graph, convention: str = "torchvision") -> Counts:
    """Multiply-accumulates per node for one sample (see
    :data:`archlab.ops.base.CONVENTIONS`); writes ``node.meta['macs'][convention]``."""
    if convention not in CONVENTIONS:
        raise ArchlabError(f"unknown FLOP convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    _ensure_shapes(graph)
    out = Counts()
    for node in graph.topo_order():
        shapes = [graph[i].shape for i in node.inputs]
        try:
            n = get_op(node.op).macs(node, shapes, node.shape, convention)
        except NotImplementedError:
            out.unsupported.append(f"{node.op} '{node.name}'")
            continue
        out.per_node[node.name] = n
        node.meta.setdefault("macs", {})[convention] = n
    return out
