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

from archlab.ops import get_op


def fold_layers(graph: Graph) -> list[list[str]]:
    """Groups of node names in execution order; each group is one layer
    (cached per graph version: do not mutate the result)."""
    return graph.cached("layers", lambda: _fold(graph))


def _fold(graph: Graph) -> list[list[str]]:
    groups: list[list[str]] = []
    owner: dict[str, int] = {}
    outputs = set(graph.outputs.values())
    for node in graph.topo_order():
        if len(node.inputs) == 1 and not _is_row(graph, node):
            src = node.inputs[0]
            if src in owner and graph[src].op != "input" and src not in outputs and len(graph.users(src)) == 1 \
                    and groups[owner[src]][-1] == src:
                groups[owner[src]].append(node.name)
                owner[node.name] = owner[src]
                continue
        owner[node.name] = len(groups)
        groups.append([node.name])
    return groups


def _rule(graph: Graph, node):
    from archlab.analysis.memory import _rules

    return _rules(graph, strict=False)[0].get(node.name)


def _is_row(graph: Graph, node) -> bool:
    rule = _rule(graph, node)
    return rule is None or rule.table_row


def last_allocating(graph: Graph, group: list[str]) -> str:
    """The last node of a layer that allocates its output (views share storage):
    the node whose shape and receptive field the layer reports."""
    for name in reversed(group):
        rule = _rule(graph, graph[name])
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
