"""Group graph nodes into the rows of a layer table.

``fold``: a layer is a node plus the chain of single-input pointwise ops that
follow it and only it (batch norm, activations, dropout, views like flatten,
and an adaptive pooling that is the identity at this size, like torchvision
VGG's 7x7 -> 7x7 ``avgpool``), as the CS231n VGG16 table counts "CONV3-64"
once for conv + ReLU.
``depth``: rows are scopes cut at ``depth`` dotted components
(``layer1.0.conv1`` at depth 2 -> ``layer1.0``), like fvcore's ``max_depth``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph

FOLDABLE = frozenset({
    "batch_norm2d", "relu", "relu6", "sigmoid", "hardsigmoid", "hardswish", "silu", "identity", "dropout", "flatten",
})
VIEWS = frozenset({"flatten", "identity", "dropout"})


def fold_layers(graph: Graph) -> list[list[str]]:
    """Groups of node names in execution order; each group is one layer."""
    groups: list[list[str]] = []
    owner: dict[str, int] = {}
    outputs = set(graph.outputs.values())
    for node in graph.topo_order():
        identity_pool = node.op == "adaptive_avg_pool2d" and node.shape == graph[node.inputs[0]].shape
        if (node.op in FOLDABLE or identity_pool) and len(node.inputs) == 1:
            src = node.inputs[0]
            if src in owner and graph[src].op != "input" and src not in outputs and len(graph.users(src)) == 1 \
                    and groups[owner[src]][-1] == src:
                groups[owner[src]].append(node.name)
                owner[node.name] = owner[src]
                continue
        owner[node.name] = len(groups)
        groups.append([node.name])
    return groups


def scope_of(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def group_by_depth(graph: Graph, groups: list[list[str]], depth: int) -> list[list[str]]:
    """Merge consecutive-or-not groups whose head shares a scope prefix of ``depth``
    parts; order of first appearance."""
    merged: dict[str, list[str]] = {}
    for g in groups:
        merged.setdefault(scope_of(g[0], depth), []).extend(g)
    return list(merged.values())
