"""The node schema of the archlab IR."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archlab.ops.base import OpName, Shape


@dataclass
class Node:
    """One operation in a :class:`~archlab.graph.Graph`.

    Fields:
        name: unique within the graph; dotted scopes (``layer1.0.conv1``). For ops
            with parameters the name is the module path of the compiled
            ``nn.Module``, so it decides the ``state_dict`` keys.
        op: a registered op name (:mod:`archlab.ops`).
        inputs: names of the nodes feeding this one, in argument order (the same
            node may appear twice, as in ``mul(x, x)``).
        attrs: the op's attributes, canonicalised by the op definition (pairs are
            2-tuples, defaults filled in). Written once, when the node is created.
        meta: results of passes over the graph, keyed by pass. Shape inference
            writes ``meta["shape"]`` (a :data:`Shape`, batch excluded). Passes own
            their keys; nothing else writes here.
    """

    name: str
    op: OpName
    inputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> Shape | None:
        """The inferred output shape, or ``None`` before shape inference."""
        return self.meta.get("shape")

    def signature(self) -> tuple:
        """What identifies this node structurally (``meta`` excluded)."""
        return (self.name, self.op, tuple(self.inputs), tuple(sorted(self.attrs.items())))
