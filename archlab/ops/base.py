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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from archlab.errors import ArchlabError, AttrError, UnknownOpError, fmt_shape, node_error

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.node import Node

Shape = tuple[int, ...]
"""An activation shape without the batch dimension: ``(C, H, W)`` or ``(F,)``."""

OpName = str

_REQUIRED = object()


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _as_pair(v: Any) -> tuple[int, int]:
    try:
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise TypeError
            return (_as_int(v[0]), _as_int(v[1]))
        x = _as_int(v)
        return (x, x)
    except TypeError:
        raise TypeError(f"expected an int or a pair of ints, got {v!r}") from None


def _as_ints(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of ints, got {v!r}")
    return tuple(_as_int(x) for x in v)


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true/false, got {v!r}")
    return v


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


_KINDS: dict[str, Callable[[Any], Any]] = {
    "int": _as_int,
    "pair": _as_pair,
    "ints": _as_ints,
    "float": _as_float,
    "bool": _as_bool,
    "str": _as_str,
}


@dataclass(frozen=True)
class Attr:
    """One attribute of an op.

    Args:
        name: the keyword used in the builder and in description files.
        kind: ``int``, ``pair`` (an int or two ints, stored as a 2-tuple),
            ``ints``, ``float``, ``bool`` or ``str``.
        default: the value when omitted; omit it to make the attribute required.
            ``None`` is allowed as a default and means "derived" (e.g. a pooling
            stride that defaults to its kernel size).
        positive: reject values <= 0 (for ints and pairs).
    """

    name: str
    kind: str
    default: Any = _REQUIRED
    positive: bool = False
    nonnegative: bool = False

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def canon(self, value: Any) -> Any:
        """Return ``value`` in canonical form; raise ``TypeError``/``ValueError``."""
        if value is None and self.default is None:
            return None
        v = _KINDS[self.kind](value)
        if self.kind in ("int", "pair", "ints"):
            items = v if isinstance(v, tuple) else (v,)
            if self.positive and any(x <= 0 for x in items):
                raise ValueError(f"must be positive, got {value!r}")
            if self.nonnegative and any(x < 0 for x in items):
                raise ValueError(f"must be >= 0, got {value!r}")
        return v


class Op:
    """Base class of op definitions. Subclasses set the class attributes and
    override the rules that apply to them.

    Class attributes:
        name: the op's registered name (``conv2d``).
        arity: ``(min, max)`` number of inputs; ``max`` ``None`` means unbounded.
        attrs: the op's attributes, in the order the builder takes them
            positionally after the inputs.
        doc: one line for ``archlab ops``.
    """

    name: ClassVar[OpName] = ""
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    attrs: ClassVar[tuple[Attr, ...]] = ()
    doc: ClassVar[str] = ""

    # -- node creation -----------------------------------------------------
    def canonical_attrs(self, node_name: str, given: dict[str, Any]) -> dict[str, Any]:
        """Validate ``given`` and return all attributes (defaults filled in),
        in declaration order, canonicalised."""
        known = {a.name: a for a in self.attrs}
        unknown = [k for k in given if k not in known]
        if unknown:
            raise AttrError(
                f"{self.name} '{node_name}': unknown attribute(s) {', '.join(sorted(unknown))}; "
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
        return self.derive_attrs(out)

    def derive_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Fill derived defaults (e.g. stride = kernel size). Must be idempotent."""
        return attrs

    def defaults(self) -> dict[str, Any]:
        """Canonical default of every optional attribute (``None`` = derived)."""
        return {a.name: a.canon(a.default) for a in self.attrs if not a.required}

    # -- rules ---------------------------------------------------------------
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

    def emit(self, ctx, node: Node, args: list, shapes: Sequence[Shape]):
        """Add ``node`` to the fx graph being compiled and return the fx value.

        ``ctx`` is an :class:`archlab.torchio.compile.EmitContext`; use
        ``ctx.call_module(node, module, args)`` for ops with state and
        ``ctx.call_function(fn, args, kwargs)`` otherwise.
        """
        raise NotImplementedError(f"op {self.name} cannot be compiled to torch")

    # -- helpers for subclasses -----------------------------------------------
    def shape_error(self, cls, node: Node, shapes: Sequence[Shape], message: str, fix: str | None = None):
        seen = ", ".join(fmt_shape(s) for s in shapes)
        return node_error(cls, node, f"got input {seen}: {message}", fix=fix)


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

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        where = f"node '{node}': " if node else ""
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known ops: {', '.join(sorted(_REGISTRY))}"
        raise UnknownOpError(f"{where}unknown op '{name}'{hint}") from None


def all_ops() -> dict[OpName, Op]:
    """All registered ops, by name (a copy)."""
    return dict(_REGISTRY)
