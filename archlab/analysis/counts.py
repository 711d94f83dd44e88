"""Parameter and MAC passes: per-node rules from the op registry, summed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from archlab.errors import ArchlabError
from archlab.graph.plan import per_sig, plan
from archlab.ops.base import CONVENTIONS, SHARES

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


def param_counts(graph: Graph) -> tuple[Counts, Counts]:
    """Trainable parameters and buffers of every node (elements, not bytes);
    writes ``node.meta['params']``."""
    params, buffers = Counts(), Counts()
    p, b = params.per_node, buffers.per_node
    for s, (n_params, n_buffers) in zip(plan(graph), param_table(graph)):
        p[s.name] = s.node.meta["params"] = n_params
        b[s.name] = n_buffers
    return params, buffers


def param_table(graph: Graph) -> list[tuple[int, int]]:
    """``(params, buffers)`` of each step of :func:`~archlab.graph.plan.plan`
    (cached per graph version: do not mutate)."""
    steps = plan(graph)
    return graph.cached("param_table", lambda: per_sig(steps, _param_rule))


def _param_rule(s) -> tuple[int, int]:
    if SHARES in s.node.attrs:  # another node's weights: counted there
        return 0, 0
    return s.op.params(s.node, s.in_shapes), s.op.buffers(s.node, s.in_shapes)


def mac_counts(graph: Graph, convention: str = "torchvision") -> Counts:
    """Multiply-accumulates per node for one sample (see
    :data:`archlab.ops.base.CONVENTIONS`); writes ``node.meta['macs'][convention]``."""
    if convention not in CONVENTIONS:
        raise ArchlabError(f"unknown FLOP convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    out = Counts()
    steps = plan(graph)

    def rule(s):
        try:
            return s.op.macs(s.node, s.in_shapes, s.shape, convention)
        except NotImplementedError:
            return None

    for s, n in zip(steps, per_sig(steps, rule)):
        if n is None:
            out.unsupported.append(f"{s.op.name} '{s.name}'")
            continue
        out.per_node[s.name] = n
        s.node.meta.setdefault("macs", {})[convention] = n
    return out
