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
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence, Union

from archlab.errors import ArchlabError, AttrError, UnknownOpError, fmt_shape, node_error

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.node import Node

Shape = tuple[int, ...]
"""An activation shape without the batch dimension: ``(C, H, W)`` or ``(F,)``."""

OpName = str

CONVENTIONS = ("torchvision", "fvcore", "full")
"""FLOP/MAC counting conventions (all figures are multiply-accumulates, MACs):

* ``torchvision``: convolutions and matrix products only (conv: out elements x
  in_channels/groups x kh x kw; linear: in x out); bias, norms, activations,
  pooling and element-wise ops count 0. Reproduces torchvision's ``_ops``
  metadata and ``torch.utils.flop_counter.FlopCounterMode`` / 2.
* ``fvcore``: what ``fvcore.nn.FlopCountAnalysis`` counts: the above, plus batch
  norm (eval: 1 per element, 2 if affine), adaptive average pooling (1 per input
  element), nearest/bilinear upsampling (1/4 per output element); everything
  else (ReLU, add, mul, pooling, concat, ...) 0.
* ``full``: every op: the above with bias adds, batch norm as 2 per element
  (affine) or 1, one op per element for activations, add (per extra input) and
  mul, and one per window element for pooling.
"""

Count = int

_REQUIRED = object()


@dataclass(frozen=True)
class Window:
    """Receptive-field geometry of an op along one spatial axis
    (Araujo, Norris & Sim, Distill 2019).

    Fields:
        kernel: input units one output unit reads (dilation folded in:
            ``d * (k - 1) + 1``).
        stride: input units between neighbouring outputs; a ``Fraction`` below 1
            for upsampling / transposed convolution.
        padding: left padding in input units (the first window starts at
            ``-padding``); ``(kernel - 1) / 2 - padding`` is the centre of output
            0's window, in input units.
        slack: how far (input units) the first and last input a unit truly reads
            may lie from this regular window's edges; for resampling, the exact
            figure from :meth:`fit`. ``None`` (the default): 0 for an integer
            window; for a fractional one unknown, and the receptive-field pass
            assumes a whole step (``max(1, stride)``).
    """

    kernel: int
    stride: Union[int, Fraction] = 1
    padding: Union[int, Fraction] = 0
    slack: Union[int, Fraction, None] = None

    @classmethod
    def fit(cls, stride: Union[int, Fraction], reads: Iterable[tuple[int, int, int]]) -> Window:
        """The regular window of ``stride`` that best describes a resampling op
        whose output unit ``o`` reads input units ``first .. last``, given as
        ``(o, first, last)`` triples (one period of outputs is enough for a
        periodic pattern; outputs that read nothing are left out).

        The kernel is the widest read; the centre of output 0's window is chosen
        so that the largest distance between a true edge and the window's edge
        is least, and that distance is the ``slack`` (0: the regular window is
        exact). Example: nearest upsampling by 2 (``o`` reads ``o // 2``) gives
        kernel 1, stride 1/2, output 0 centred at -1/4 and slack 1/4.
        """
        stride = Fraction(stride)
        reads = list(reads)
        kernel = max(last - first + 1 for _, first, last in reads)
        half = Fraction(kernel - 1, 2)
        # Offsets of each true edge from a window centred at o * stride (+ centre).
        offs = [e for o, first, last in reads for e in (first + half - o * stride, last - half - o * stride)]
        centre, slack = (min(offs) + max(offs)) / 2, (max(offs) - min(offs)) / 2
        q = lambda x: x.numerator if x.denominator == 1 else x  # noqa: E731
        return cls(kernel, q(stride), q(half - centre), q(slack))


POINTWISE = (Window(1, 1, 0), Window(1, 1, 0))
"""The field rule of element-wise ops, norms, concat: one input unit per output unit."""

GLOBAL = "global"
"""The field rule of ops whose every output reads the whole input (global pooling, flatten)."""

RFRule = Union[tuple[Window, Window], str]


@dataclass(frozen=True)
class Saved:
    """A tensor an op saves for backward besides its inputs and output
    (max-pool indices, a dropout mask, batch-norm statistics).

    Fields:
        what: a name for reports (``indices``, ``mask``, ``save_mean``).
        elements: element count, per sample when ``per_sample`` else in total.
        per_sample: whether it scales with the batch (indices, masks) or not
            (per-channel statistics).
        dtype: ``"activation"`` (the activations' dtype), ``"param"`` (the
            parameters' dtype: batch norm computes its statistics in the weights'
            precision) or a fixed ``"int64"`` / ``"bool"``.
    """

    what: str
    elements: int
    per_sample: bool = True
    dtype: str = "activation"


@dataclass(frozen=True)
class SideOutput:
    """A tensor a node produces besides its output (max-pool argmax indices),
    consumed only by ops that name it in :attr:`Op.input_reads`.

    Fields:
        name: what consumers name it by (``indices``).
        elements: element count per sample.
        dtype: ``"activation"`` or a fixed ``"int64"`` / ``"bool"``.
    """

    name: str
    elements: int
    dtype: str = "activation"


@dataclass(frozen=True)
class MemoryRule:
    """How a node occupies memory in PyTorch, for the function its ``emit``
    calls, on CPU (checked with ``torch.autograd.graph.saved_tensors_hooks``).

    Fields:
        alias: index of the input whose storage the output shares at inference
            (eval mode, no grad): views (``flatten``) and no-ops (``identity``,
            eval ``dropout``) allocate nothing; ``None`` when the op allocates
            its output.
        train_alias: whether ``alias`` also holds in training mode (``False`` for
            dropout, which then allocates its output and a mask).
        saved_inputs: indices of the inputs autograd saves for backward.
        saved_output: whether autograd saves the output (ReLU, sigmoid).
        cross_saved: input ``i`` in ``saved_inputs`` is saved only when another
            input requires grad (``mul``: d(a*b)/da needs ``b``).
        saved_extra: tensors saved besides inputs and output.
        buffer_bytes: bytes of the node's buffers (running statistics, counters).
        side_outputs: tensors the node allocates besides its output (a max pool's
            argmax indices); at inference each stays live until the last node that
            reads it (:attr:`Op.input_reads`) has run, and dies at once if none does.
        table_row: whether a per-layer table in the CS231n style lists the node:
            layers, pooling, merges and the input do; element-wise activations
            (folded into the layer before them, as in-place ReLU), views, no-ops
            and pooling that is an identity at this input size do not.

    Saved tensors count only when the node is differentiable (it has parameters
    or an input that requires grad); parameters and buffers autograd saves
    (weights, running statistics) are counted as parameters, not here.
    """

    alias: int | None = None
    train_alias: bool = True
    saved_inputs: tuple[int, ...] = ()
    saved_output: bool = False
    cross_saved: bool = False
    saved_extra: tuple[Saved, ...] = ()
    buffer_bytes: int = 0
    table_row: bool = True
    side_outputs: tuple[SideOutput, ...] = ()


def numel(shape: Shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


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
