"""Group graph nodes into the rows of a layer table.

``fold``: a layer is a node plus the chain of single-input ops that follow it
and only it and are no row of a layer table by their op's memory rule
(:attr:`archlab.ops.base.MemoryRule.table_row`: batch norm, activations,
dropout, views like flatten, and an adaptive pooling that is the identity at
this size, like torchvision VGG's 7x7 -> 7x7 ``avgpool``), as the CS231n VGG16
table counts "CONV3-64" once for conv + ReLU.
``depth``: rows are scopes cut at ``depth`` dotted components
(``layer1.0.conv1`` at depth 2 -> ``layer1.0``), like fvcore's ``max_depth``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph

from archlab.graph.plan import plan


def fold_layers(graph: Graph) -> list[list[str]]:
    """Groups of node names in execution order; each group is one layer
    (cached per graph version: do not mutate the result)."""
    return graph.cached("layers", lambda: _fold(graph))


def _fold(graph: Graph) -> list[list[str]]:
    rules = _memory_rules(graph)
    steps = plan(graph)
    # A node joins the group of its only input when that input is the group's last
    # node, is not the graph input or an output, and feeds nothing else.
    closed = set(graph.outputs.values()) | {n.name for n in graph.input_nodes}
    groups: list[list[str]] = []
    owner: dict[str, list[str]] = {}
    for s in steps:
        name, inputs = s.name, s.inputs
        if len(inputs) == 1:
            rule = rules.get(name)
            src = inputs[0]
            if rule is not None and not rule.table_row and src not in closed and len(graph.users(src)) == 1:
                group = owner[src]
                if group[-1] == src:
                    group.append(name)
                    owner[name] = group
                    continue
        owner[name] = group = [name]
        groups.append(group)
    return groups


def _memory_rules(graph: Graph) -> dict:
    from archlab.analysis.memory import _rules

    return _rules(graph, strict=False)[0]


def last_allocating(graph: Graph, group: list[str], rules: dict | None = None) -> str:
    """The last node of a layer that allocates its output (views share storage):
    the node whose shape and receptive field the layer reports (``rules``: the
    graph's memory rules, when the caller has them at hand)."""
    if rules is None:
        rules = _memory_rules(graph)
    for name in reversed(group):
        rule = rules.get(name)
        if rule is None or rule.alias is None:
            return name
    return group[-1]


def scope_of(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def group_by_depth(graph: Graph, groups: list[list[str]], depth: int) -> list[tuple[str, list[str]]]:
    """``(scope, names)`` rows: layers merged by the first ``depth`` dotted parts
    of their first node's name, in order of first appearance."""
    merged: dict[str, list[str]] = {}
    for g in groups:
        merged.setdefault(scope_of(g[0], depth), []).extend(g)
    return list(merged.items())
