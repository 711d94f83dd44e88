"""The op registry: one self-describing definition per op kind.

An op definition (a subclass of :class:`Op`, registered with :func:`register_op`)
carries everything archlab knows about that kind of node:

* ``arity`` and ``attrs``: what a node of this op looks like (validated and
  canonicalised when the node is created, so files round-trip exactly);
* ``infer_shape``: the output shape from the input shapes (no torch needed);
* ``params`` / ``buffers``: trainable parameter and buffer element counts;
* ``emit``: how to express the node in a ``torch.fx`` graph (torch is imported
  lazily there, so analysis never needs it).

Later passes (FLOPs, memory, receptive field) add their rules here too, so that
adding an op touches exactly one class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from archlab.errors import ArchlabError, AttrError, UnknownOpError, fmt_shape, node_error, short, short_list
from archlab.ops.attrs import Attr  # noqa: F401  (re-exported)
from archlab.ops.rules import (  # noqa: F401  (re-exported: op modules import them from here)
    CONVENTIONS, GLOBAL, POINTWISE, Count, MemoryRule, RFRule, Saved, SideOutput, Window, numel,
)

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.node import Node

Shape = tuple[int, ...]
"""An activation shape without the batch dimension, of any rank: ``(C, H, W)``,
``(F,)``, ``(L, E)`` tokens. The batch is always torch dim 0 and no op touches it;
attributes that name dimensions use the torch dims of the batched tensor (see
:mod:`archlab.ops.dims`)."""

OpName = str


SHARES = "shares"
"""The one attribute every op takes: ``shares: <node>`` makes a node use the
weights (parameters and buffers) of another node of the same op and
attributes (weight sharing: a module called twice, as CoaT's convolutional
position encodings are). Its parameters count once, at the node it names;
``to_module`` calls that node's module again. :func:`archlab.graph.validate.check_shared`
checks the pairing."""


class Op:
    """Base class of op definitions. Subclasses set the class attributes and
    override the rules that apply to them.

    Contract of the rules (``infer_shape``, ``params``, ``buffers``, ``macs``,
    ``rf``, ``memory``): they are functions of the node's op, attributes and
    shapes only (the node's name is for error messages), so the analyzers
    evaluate them once for nodes that agree on those
    (:func:`archlab.graph.plan.per_sig`). A rule that must read other nodes sets
    ``needs_graph``. ``canonical_attrs`` is memoised per op on the given values.

    Class attributes:
        name: the op's registered name (``conv2d``).
        arity: ``(min, max)`` number of inputs; ``max`` ``None`` means unbounded.
        attrs: the op's attributes, in the order the builder takes them
            positionally after the inputs.
        doc: one line for ``archlab ops``.
        needs_graph: the shape and receptive-field rules read nodes other than
            the inputs (``max_unpool2d`` reads its pool's input shape and
            geometry): the passes call ``infer_shape_in(graph, node, shapes)`` and
            :meth:`rf_in` instead of ``infer_shape`` and ``rf``.
        input_reads: for inputs not read for their value at run time, what is
            read instead (see :meth:`reads`); one declaration serves every pass.
    """

    name: ClassVar[OpName] = ""
    needs_graph: ClassVar[bool] = False  # shape and rf rules are infer_shape_in(graph, ...) and rf_in(graph, ...)
    input_reads: ClassVar[Mapping[int, str]] = {}  # input index -> what is read at run time, when not its value (see reads)
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    attrs: ClassVar[tuple[Attr, ...]] = ()
    doc: ClassVar[str] = ""
    shareable: ClassVar[bool] = True  # may take SHARES: its weights live in the module its emit calls

    # -- node creation -----------------------------------------------------
    def canonical_attrs(self, node_name: str, given: dict[str, Any]) -> dict[str, Any]:
        """Validate ``given`` and return all attributes (defaults filled in),
        in declaration order, canonicalised."""
        types = tuple(map(type, given.values()))
        key = (tuple(given.items()), types) if _SCALARS.issuperset(types) else _memo_key(given)
        memo = self.__dict__.get("_canon_memo")
        if memo is None:
            memo = self.__dict__["_canon_memo"] = {}
        hit = memo.get(key) if key is not None else None
        if hit is not None:
            return hit.copy()
        out = self._canonical_attrs(node_name, given)
        if key is not None and len(memo) < 4096:
            memo[key] = dict(out)
        return out

    def _canonical_attrs(self, node_name: str, given: dict[str, Any]) -> dict[str, Any]:
        known = {a.name: a for a in self.attrs}
        unknown = [k for k in given if k not in known and k != SHARES]
        if unknown:
            raise AttrError(
                f"{self.name} '{node_name}': unknown attribute(s) {short_list(sorted(k[:60] if isinstance(k, str) else short(k) for k in unknown))}; "
                f"{self.name} takes {', '.join(known) or 'no attributes'}"
            )
        out: dict[str, Any] = {}
        for a in self.attrs:
            if a.name in given:
                try:
                    out[a.name] = a.canon(given[a.name])
                except (TypeError, ValueError) as e:
                    raise AttrError(f"{self.name} '{node_name}': attribute {a.name}: {e}") from None
            elif a.required:
                raise AttrError(f"{self.name} '{node_name}': missing required attribute {a.name}")
            else:
                out[a.name] = a.canon(a.default)
        out = self.derive_attrs(out)
        if SHARES in given:
            if not isinstance(given[SHARES], str) or not given[SHARES] or given[SHARES] == node_name:
                raise AttrError(f"{self.name} '{node_name}': attribute {SHARES} must name another node, "
                                f"got {short(given[SHARES])}")
            out[SHARES] = given[SHARES]
        return out

    def derive_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Fill derived defaults (e.g. stride = kernel size). Must be idempotent."""
        return attrs

    def defaults(self) -> dict[str, Any]:
        """Canonical default of every optional attribute (``None`` = derived)."""
        return {a.name: a.canon(a.default) for a in self.attrs if not a.required}

    # -- rules ---------------------------------------------------------------
    def reads(self, k: int) -> str:
        """What the op reads of its input ``k`` when it runs (:attr:`input_reads`):

        * ``"value"`` (the default): the tensor's values. These inputs, and only
          these, are receptive-field paths, and stay live until the op has run.
        * ``"shape"``: only its size, at build time (``upsample``'s and ``crop2d``'s
          size reference): the compiled module does not take it, no field passes
          through it, and it need not be live.
        * the name of a side output of the input's node (``max_unpool2d`` reads
          its pool's ``"indices"``, :attr:`MemoryRule.side_outputs`): that tensor
          stays live until the op has run, the input's values need not; no field
          passes through it (positions, not values).
        """
        return self.input_reads.get(k, "value")

    def infer_shape(self, node: Node, shapes: Sequence[Shape]) -> Shape:
        """Output shape of ``node`` given its input shapes. Raise a
        :class:`~archlab.errors.ShapeError` naming the node when they do not fit."""
        raise NotImplementedError

    def params(self, node: Node, shapes: Sequence[Shape]) -> int:
        """Number of trainable parameter elements of ``node``."""
        return 0

    def buffers(self, node: Node, shapes: Sequence[Shape]) -> int:
        """Number of buffer elements (running statistics, counters) of ``node``."""
        return 0

    def weight_shape(self, node: Node, shapes: Sequence[Shape]) -> tuple:
        """What fixes the shapes of the node's weights, for :data:`SHARES` (two
        nodes share only if it is equal): by default the input shapes; a layer
        that any spatial size or token count fits says less (its channels)."""
        return tuple(tuple(s) for s in shapes)

    def macs(self, node: Node, shapes: Sequence[Shape], out: Shape, convention: str) -> Count:
        """Multiply-accumulates of one sample under ``convention`` (see
        :data:`CONVENTIONS`). Every op must define it: an op without a rule is
        reported by the analyzers, never counted as 0."""
        raise NotImplementedError

    def rf(self, node: Node, shapes: Sequence[Shape], out: Shape) -> RFRule:
        """Receptive-field rule: a :class:`Window` per spatial axis (H, W),
        :data:`POINTWISE` or :data:`GLOBAL`. Applies to every input read for its
        value (:meth:`reads`)."""
        raise NotImplementedError

    def rf_in(self, graph, node: Node, shapes: Sequence[Shape], out: Shape) -> RFRule:
        """The receptive-field rule of an op that ``needs_graph`` (called instead of
        :meth:`rf`, with the graph, read-only); by default :meth:`rf`."""
        return self.rf(node, shapes, out)

    def memory(self, node: Node, shapes: Sequence[Shape], out: Shape) -> MemoryRule:
        """Memory rule (:class:`MemoryRule`): aliasing, tensors saved for
        backward, buffers. Every op must define it: an op without a rule is
        reported by the memory analysis, never counted as 0."""
        raise NotImplementedError

    def view_strides(self, node: Node, shapes: Sequence[Shape], out: Shape,
                     strides: tuple[int, ...]) -> tuple[int, ...] | None:
        """For an op whose :meth:`memory` rule sets ``alias``: the strides (in
        elements, batch excluded) of the output view, given the strides of the
        aliased input, or ``None`` when the op must copy (``reshape`` of a
        permuted tensor), so that it allocates a dense output after all. Called
        by the memory pass per node (strides depend on the ops upstream). By
        default a view of the same rank keeps its input's strides (identity,
        dropout, ``crop2d``'s slicing), and any other is taken as dense."""
        if len(out) == len(strides):
            return tuple(strides)
        from archlab.ops.dims import dense_strides

        return dense_strides(out)

    def emit(self, ctx, node: Node, args: list, shapes: Sequence[Shape]):
        """Add ``node`` to the fx graph being compiled and return the fx value.

        ``ctx`` is an :class:`archlab.torchio.compile.EmitContext`; use
        ``ctx.call_module(node, module, args)`` for ops with state and
        ``ctx.call_function(fn, args, kwargs)`` otherwise.
        """
        raise NotImplementedError(f"op {self.name} cannot be compiled to torch")

    # -- helpers for subclasses -----------------------------------------------
    def shape_error(self, cls, node: Node, shapes: Sequence[Shape], message: str, fix: str | None = None):
        seen = short_list([fmt_shape(s) for s in shapes[:9]] + [""] * max(0, len(shapes) - 9)) if len(shapes) > 8 \
            else ", ".join(fmt_shape(s) for s in shapes)
        return node_error(cls, node, f"got input {seen}: {message}", fix=fix)


_SCALARS = frozenset((int, float, str, bool, type(None)))


def _memo_key(given: dict[str, Any]) -> tuple | None:
    """A hashable key for ``given`` that tells apart everything canonicalisation
    does (``1`` from ``True``, a list from a tuple), or ``None`` when some value is
    not a plain scalar or a sequence of ints (then the attributes are not memoised)."""
    types = tuple(map(type, given.values()))
    if _SCALARS.issuperset(types):
        return tuple(given.items()), types
    parts = []
    for (k, v), t in zip(given.items(), types):
        if t in _SCALARS:
            parts.append((k, v))
        elif (t is tuple or t is list) and all(type(x) is int for x in v):
            parts.append((k, tuple(v)))
        else:
            return None
    return tuple(parts), types


_REGISTRY: dict[OpName, Op] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: register an op definition under ``cls.name``.

    Raises:
        ArchlabError: if the name is empty or already registered.
    """
    if not cls.name:
        raise ArchlabError(f"op class {cls.__name__} has no name")
    if cls.name in _REGISTRY:
        raise ArchlabError(f"op '{cls.name}' is already registered (by {type(_REGISTRY[cls.name]).__name__})")
    _REGISTRY[cls.name] = cls()
    return cls


def get_op(name: OpName, *, node: str | None = None) -> Op:
    """Return the registered definition of ``name``.

    Raises:
        UnknownOpError: naming the node (if given) and the closest known ops.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3) if isinstance(name, str) and len(name) < 100 else []
        where = f"node {short(node)}: " if node else ""
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known ops: {', '.join(sorted(_REGISTRY))}"
        raise UnknownOpError(f"{where}unknown op {short(name)}{hint}") from None


def all_ops() -> dict[OpName, Op]:
    """All registered ops, by name (a copy)."""
    return dict(_REGISTRY)
