"""What an import rule reads and returns: :class:`Site` (an fx node with its module
and traced values), :class:`Mapped` (the archlab op it becomes), :class:`Unmapped`
(why it cannot) and the ``Rule`` type; the rule tables are in
:mod:`archlab.torchio.import_rules`."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import fx, nn

ALIAS = "<alias>"  # the node's value is its first input (contiguous, dropout with training=False)
TUPLE = "<tuple>"  # the node's value is a tuple of tensors (split, chunk, unbind): Mapped.parts, read by getitem


class Unmapped(Exception):
    """Raised by a rule: the fx node cannot be expressed; the message says why."""


@dataclass
class Mapped:
    """What one fx node becomes.

    Fields:
        op: an archlab op name, or :data:`ALIAS` (the node passes its first input through).
        inputs: the fx nodes feeding it, in argument order.
        attrs: the op's attributes (canonicalised by the op definition).
        then: unary ops applied after ``op`` (``x[:, 0, 1:]`` is ``select`` then
            ``slice``); the last one carries the fx node's name.
        owner: the module path that owns the weights a functional call reads
            (``F.batch_norm(x, self.running_mean, ...)`` inside ``bn1``): the
            node is named after it, so ``state_dict`` keys match.
        parts: with ``op`` :data:`TUPLE`, one :class:`Mapped` per tuple element
            (``None`` for an element archlab does not compute, such as
            attention weights).
    """

    op: str
    inputs: tuple[fx.Node, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    then: tuple[tuple[str, dict[str, Any]], ...] = ()
    owner: str | None = None
    parts: tuple[Mapped | None, ...] = ()


class Site:
    """One fx node as a rule sees it: the node, its leaf module, traced shapes."""

    def __init__(self, node: fx.Node, module: nn.Module | None, results: dict[fx.Node, Any],
                 values: dict[fx.Node, Any] | None = None, modules: dict[str, nn.Module] | None = None):
        self.node = node
        self.module = module
        self._results = results
        self._values = values or {}
        self._modules = modules or {}

    def module_at(self, path: str) -> nn.Module | None:
        """The submodule at ``path`` of the traced model, if any."""
        return self._modules.get(path)

    def bind(self, *names: str, **defaults: Any) -> dict[str, Any]:
        """The call's arguments by parameter name (positional, then keywords), defaults filled.

        Raises:
            Unmapped: an argument is missing or is not among ``names``.
        """
        if len(self.node.args) > len(names):
            raise Unmapped(f"unexpected extra arguments {self.node.args[len(names):]!r}")
        bound = {**defaults, **dict(zip(names, self.node.args)), **self.node.kwargs}
        unknown = [k for k in self.node.kwargs if k not in names]
        missing = [k for k in names if k not in bound]
        if unknown or missing:
            raise Unmapped(f"unsupported argument(s) {', '.join(unknown)}" if unknown
                           else f"missing argument(s) {', '.join(missing)}")
        return bound

    def shape(self, value: Any) -> tuple[int, ...] | None:
        """The traced shape (batch included) of a tensor argument, else None."""
        s = self._results.get(value) if isinstance(value, fx.Node) else None
        return s if isinstance(s, tuple) else None

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        return self.shape(self.node)

    def value(self, node: Any) -> Any:
        """The traced value of an fx node (a tensor, a tuple of tensors, ...) on the example input."""
        return self._values.get(node) if isinstance(node, fx.Node) else node

    def dim(self, d: Any, x: fx.Node, what: str = "dim") -> int:
        """Torch dim ``d`` of tensor ``x`` as a non-negative index; the batch (0) is refused."""
        rank = len(self.shape(x))
        if not isinstance(d, int) or not -rank <= d < rank:
            raise Unmapped(f"{what} {d!r} is not a constant dim of a rank-{rank} tensor")
        d %= rank
        if d == 0:
            raise Unmapped(f"{what} 0 is the batch dim; archlab ops keep the batch dim as it is")
        return d

    def tensor(self, value: Any) -> fx.Node:
        """``value`` as a tensor input; constants cannot be expressed in archlab."""
        if self.shape(value) is None:
            raise Unmapped(f"operand {value!r} is not a tensor computed from the input (archlab ops take tensors only)")
        return value

    def module_input(self) -> fx.Node:
        if len(self.node.args) != 1 or self.node.kwargs:
            raise Unmapped("a leaf module called with more than one argument")
        return self.tensor(self.node.args[0])


Rule = Callable[[Site], Mapped]
