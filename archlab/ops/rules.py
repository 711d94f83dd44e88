"""The vocabulary of per-op rules: FLOP conventions, receptive-field windows
and memory rules. Op classes (:mod:`archlab.ops.base`) return these values; the
analyzers (:mod:`archlab.analysis`) consume them."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Iterable, Union

if TYPE_CHECKING:  # pragma: no cover
    from archlab.ops.base import Shape

CONVENTIONS = ("torchvision", "fvcore", "full")
"""FLOP/MAC counting conventions (all figures are multiply-accumulates, MACs):

* ``torchvision``: convolutions and matrix products only (conv: out elements x
  in_channels/groups x kh x kw; linear: out elements x in_features; matmul: out
  elements x K; attention: L*S*E + L*S*Ev per head, as FlopCounterMode reports
  ``scaled_dot_product_attention`` on the meta device); bias, norms,
  activations, pooling and element-wise ops count 0. Reproduces torchvision's
  ``_ops`` metadata and ``torch.utils.flop_counter.FlopCounterMode`` / 2.
* ``fvcore``: what ``fvcore.nn.FlopCountAnalysis`` counts: convolutions, linear
  and matmul as above, plus batch norm (eval: 1 per element, 2 if affine),
  layer and group norm (5 per element with affine parameters, 4 without),
  adaptive average pooling (1 per input element), nearest/bilinear upsampling
  (1/4 per output element); everything else (ReLU, GELU, add, mul, softmax,
  reductions, pad, attention, pooling, concat, ...) 0.
* ``full``: every op: the above with bias adds, batch norm as 2 per element
  (affine) or 1, one op per element for activations, scalar and element-wise
  ops (add per extra input), one per input element for reductions, three per
  element for softmax, one per window element for pooling; each op's
  docstring states its figure.
"""

Count = int



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
        return cls.from_offsets(kernel, stride, min(offs), max(offs))

    @classmethod
    def from_offsets(cls, kernel: int, stride: Union[int, Fraction], lo, hi) -> Window:
        """What :meth:`fit` gives from the extreme edge offsets alone: ``lo`` and
        ``hi`` bound ``first + (kernel-1)/2 - o * stride`` and ``last - (kernel-1)/2
        - o * stride`` over every output ``o``. Rules whose reads follow a closed
        form (transposed conv, adaptive bins, bilinear resampling) compute these
        bounds in O(1), so the pass never loops over a stride or a size."""
        half = Fraction(kernel - 1, 2)
        centre, slack = Fraction(lo + hi) / 2, Fraction(hi - lo) / 2
        q = lambda x: x.numerator if x.denominator == 1 else x  # noqa: E731
        return cls(kernel, q(Fraction(stride)), q(half - centre), q(slack))


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
        cross_inputs: with ``cross_saved``, the inputs this applies to (``None``:
            all of ``saved_inputs``); ``div`` saves ``b`` always and ``a`` only
            when ``b`` requires grad.
        saved_extra: tensors saved besides inputs and output.
        buffer_bytes: bytes of the node's buffers (running statistics, counters).
        side_outputs: tensors the node allocates besides its output (a max pool's
            argmax indices); at inference each stays live until the last node that
            reads it (:attr:`Op.input_reads`) has run, and dies at once if none does.
        scratch: temporaries the emitted function allocates and frees within
            the call (a broadcast matmul's expanded operand, layer norm's mean and
            rstd): live beside the inputs and the output while the node runs at
            inference (:class:`Saved` gives each one's size and dtype).
        allocates: ``False`` when the output lives in storage the activation
            count leaves out: ``parameter`` returns a view of its own parameter,
            so it allocates nothing and saving it for backward costs nothing.
        layout: how an allocated output is laid out, for the views that follow
            (a ``reshape`` of a non-contiguous tensor copies): ``"dense"``
            (row-major), ``"like_input"`` (element-wise kernels: dense in the
            dimension order of input 0's strides). Views compute their strides
            with :meth:`~archlab.ops.base.Op.view_strides`.
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
    cross_inputs: tuple[int, ...] | None = None
    scratch: tuple[Saved, ...] = ()
    allocates: bool = True
    layout: str = "dense"


def numel(shape: Shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
