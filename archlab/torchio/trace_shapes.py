"""Shapes without the arithmetic, for :mod:`archlab.torchio.trace`.

An import reads only the *shapes* (and dtypes) of values computed from the
example input: control flow on their values is refused. Yet running them costs
a whole forward pass, and keeping every value alive for the importer costs
memory the size of all activations. Inside :class:`ShapesOnly` (a dispatch mode,
so it sees ATen ops however the model reaches them: a layer, ``F.linear``,
``nn.MultiheadAttention``'s Python), four kinds of op are not computed:

* convolutions, matrix products, pooling windows and attention
  (:data:`_HEAVY`): torch's shape function runs on ``meta`` tensors (once per
  distinct signature) and the op answers an uninitialised tensor of the
  result's shape, strides, dtype and device (integer results, such as pooling
  indices, are zeros);
* in-place activations (:data:`_IN_PLACE_ACTIVATIONS`) answer their input;
* tensor-tensor arithmetic (:data:`_ARITHMETIC`) answers an uninitialised
  tensor of the broadcast shape and promoted dtype (in place: its first operand),
  and a mean over dims (:data:`_MEAN`) one of the reduced shape;
* batch norm at inference (:data:`_BATCH_NORMS`) answers an uninitialised
  tensor like its input.

Every other op runs as it is: for cheap elementwise ops torch's meta functions
(Python decompositions) are slower than the real kernel. A float-to-integer
conversion answers zeros (indices built from values stay in range and the trace
deterministic), and an op whose result depends on values (``.item()``,
``nonzero``, a boolean mask, ``unique``) is refused, as the tracer refuses
``if x.sum() > 0``; where an op's arguments mix dtypes or devices, or are not
contiguous, it runs for real so that torch decides. So the *values* of an
import's input-dependent nodes are unspecified; their shapes, dtypes and
storage sharing (views, in-place results) are what torch gives. Values that do
not depend on the input (constants, work on parameters alone) never enter the
mode and are exact.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _shape_as(op):
    """The result of an ``addmm`` is its ``mm``'s (whose meta function is cheaper),
    once its bias broadcasts to it."""
    def shape(bias, a, b, *args, **kwargs):
        out = op(a, b)
        if torch.broadcast_shapes(bias.shape, out.shape) != out.shape:
            raise RuntimeError("bias does not broadcast to the product")
        return out
    return shape


def _convolution(x, weight, bias, *args):
    """The meta convolution, which does not check the bias."""
    out = aten.convolution.default(x, weight, bias, *args)
    if bias is not None and tuple(bias.shape) != (out.shape[1],):
        raise RuntimeError("bias size differs from the output channels")
    return out


_HEAVY: dict[Any, Any] = {
    **{op: op for op in (
        aten.mm.default, aten.bmm.default,
        aten.max_pool2d_with_indices.default, aten.max_pool3d_with_indices.default,
        aten.avg_pool2d.default, aten.avg_pool3d.default,
        aten._scaled_dot_product_flash_attention_for_cpu.default, aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_cudnn_attention.default,
        aten._native_multi_head_attention.default,  # nn.MultiheadAttention's fast path at inference
    )},
    aten.convolution.default: _convolution,
    aten.addmm.default: _shape_as(aten.mm.default),
    aten.baddbmm.default: _shape_as(aten.bmm.default),
}
"""ATen ops whose cost grows with the product of their sizes (> 90 % of a forward
pass of the benchmark's models), each with the op that gives its result's shape on meta."""

_LAYOUT_FOLLOWING = frozenset((
    aten.convolution.default, aten.max_pool2d_with_indices.default, aten.max_pool3d_with_indices.default,
    aten.avg_pool2d.default, aten.avg_pool3d.default,
))
"""Ops of :data:`_HEAVY` whose result's memory format follows their input's
(channels_last in, channels_last out), which the meta kernels do not all
reproduce: with an input (or weight) not contiguous in the default format they
run for real, so a later ``.view`` sees the strides torch gives it. A model
converted to channels_last therefore imports at the cost of a real forward of
its convolutions and pools (on uninitialised values: the result is only shapes)."""

_IN_PLACE_ACTIVATIONS = frozenset((
    aten.relu_.default, aten.silu_.default, aten.hardswish_.default, aten.hardsigmoid_.default,
    aten.gelu_.default, aten.sigmoid_.default, aten.tanh_.default, aten.leaky_relu_.default,
    aten.elu_.default, aten.hardtanh_.default, aten.mish_.default, aten.celu_.default, aten.selu_.default,
    aten.clamp_.default, aten.clamp_min_.default,
))
"""In-place elementwise ops on one tensor (the rest scalars): the result is that
tensor, its shape, dtype and storage unchanged, so on a float tensor they need not run."""

_ARITHMETIC = frozenset((aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor))
_ARITHMETIC_IN_PLACE = frozenset((aten.add_.Tensor, aten.sub_.Tensor, aten.mul_.Tensor))
"""Tensor-tensor arithmetic on contiguous float tensors of one device: the result
is contiguous, of the operands' broadcast shape and promoted dtype (the in-place
forms: the first operand, when the broadcast shape is its own)."""

_VALUE_DEPENDENT = frozenset((
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
    aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default, aten.bincount.default,
    aten.repeat_interleave.Tensor, aten.histc.default,
))
"""Ops whose result (a Python number, or a shape) depends on their input's values,
which a trace of shapes does not have: refused, as the tracer refuses ``if x.sum() > 0``."""


class ValueDependentOp(RuntimeError):
    """An op of :data:`_VALUE_DEPENDENT` (or a boolean-mask index) on a value
    computed from the input, refused inside :class:`ShapesOnly`: its result depends
    on values the trace does not have."""


_MEAN = aten.mean.dim
"""``x.mean(dims, keepdim)`` (global average pooling written as a mean): the result
has ``x``'s shape without (or with ones at) the reduced dims."""

_BATCH_NORMS = frozenset((aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default))
"""Batch norm: at inference (``training`` False) the result has its input's shape and
dtype; the two statistics it also returns are empty and ``F.batch_norm`` drops them."""


class ShapesOnly(TorchDispatchMode):
    """Inside, the ops of the module docstring are not computed. A heavy op whose
    meta function cannot answer (no meta kernel, a wrong shape) runs for real, so a
    wrong shape fails with torch's own message."""

    def __init__(self) -> None:
        super().__init__()
        self._results: dict[tuple, Any] = {}  # (op, argument signatures) -> its result(s) on meta

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _VALUE_DEPENDENT or (func is aten.index.Tensor and any(
                i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])):
            raise ValueDependentOp(f"{func.__name__.split('.')[0]} on a value computed from the input: its "
                                   "result depends on the input's values, which archlab's trace does not follow")
        if func is aten._to_copy.default and args[0].is_floating_point() and \
                kwargs.get("dtype") not in (None, *_FLOATS):  # x.long(): deterministic indices, not noise
            return torch.zeros(args[0].shape, dtype=kwargs["dtype"], device=kwargs.get("device") or args[0].device)
        if func in _IN_PLACE_ACTIVATIONS and args[0].is_floating_point() and args[0].is_contiguous():
            return args[0]
        if func in _BATCH_NORMS and not (func is aten.native_batch_norm.default and args[5]) and \
                _alike(args[0], args[1:5]):
            x = args[0]
            return torch.empty_like(x), x.new_empty(0), x.new_empty(0)
        if (func in _ARITHMETIC or func in _ARITHMETIC_IN_PLACE) and len(args) == 2 and not kwargs and \
                isinstance(args[1], torch.Tensor):
            out = _broadcast(*args, in_place=func in _ARITHMETIC_IN_PLACE)
            if out is not None:
                return out
        if func is _MEAN:
            out = _mean(*args, **kwargs)
            if out is not None:
                return out
        shape_of = _HEAVY.get(func)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if shape_of is None or not _alike(tensors[0], tensors[1:]) or (  # mixed dtypes or devices: torch says so
                func in _LAYOUT_FOLLOWING and not all(t.is_contiguous() for t in tensors)):
            return func(*args, **kwargs)
        key = (func, *map(_signature, args), *((k, _signature(v)) for k, v in sorted(kwargs.items())))
        results = self._results.get(key)  # repeated blocks repeat their calls: one meta call each
        if results is None:
            try:
                out = shape_of(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args],
                               **{k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
            except Exception:  # noqa: BLE001 - no meta kernel, or a refusal: the real call says what is wrong
                return func(*args, **kwargs)
            results = self._results[key] = out
        device = tensors[0].device
        if isinstance(results, torch.Tensor):
            return _like(results, device)
        return tuple(_like(r, device) if isinstance(r, torch.Tensor) else r for r in results)


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _like(meta: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor with the meta result's shape, strides and dtype;
    integer results (pooling indices) are zeros, so what reads them is
    deterministic and in range."""
    if not meta.is_floating_point():
        return torch.zeros(meta.shape, dtype=meta.dtype, device=device)
    return torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=device)


def _alike(x: torch.Tensor, others: Any) -> bool:
    """Whether every tensor of ``others`` has ``x``'s dtype and device."""
    return all(t is None or not isinstance(t, torch.Tensor) or (t.dtype == x.dtype and t.device == x.device)
               for t in others)


def _signature(a: Any) -> Any:
    """What a heavy op's result shapes depend on: a tensor's shape and dtype, or the value."""
    if isinstance(a, torch.Tensor):
        return "tensor", tuple(a.shape), a.dtype
    return tuple(map(_signature, a)) if isinstance(a, (list, tuple)) else a


def _broadcast(a: torch.Tensor, b: torch.Tensor, in_place: bool) -> torch.Tensor | None:
    """``a op b`` without computing it, or None where torch would refuse it (then
    the real call raises torch's own message)."""
    if not (a.is_floating_point() and b.is_floating_point() and a.device == b.device
            and a.is_contiguous() and b.is_contiguous()):
        return None  # type promotion, devices and output strides are torch's to work out
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        return None
    if in_place:
        return a if shape == a.shape and torch.can_cast(torch.result_type(a, b), a.dtype) else None
    return torch.empty(shape, dtype=torch.result_type(a, b), device=a.device)


def _mean(x: torch.Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> torch.Tensor | None:
    """``x.mean(dim, keepdim)`` without computing it, or None where torch would refuse it."""
    rank = x.dim()
    dims = list(range(rank)) if not dim else list(dim)
    if dtype is not None or not x.is_floating_point() or not x.is_contiguous() or \
            not all(-max(rank, 1) <= d < max(rank, 1) for d in dims) or \
            len({d % max(rank, 1) for d in dims}) != len(dims):
        return None
    dims = {d % max(rank, 1) for d in dims}
    shape = [1 if i in dims else n for i, n in enumerate(x.shape)] if keepdim else \
        [n for i, n in enumerate(x.shape) if i not in dims]
    return x.new_empty(shape)
