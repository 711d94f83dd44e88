"""Shapes without the arithmetic, for :mod:`archlab.torchio.trace`.

An import reads only the *shapes* (and dtypes) of values computed from the
example input: control flow on their values is refused. Yet running them costs
a whole forward pass, and keeping every value alive for the importer costs
memory the size of all activations. Inside :class:`ShapesOnly` (a dispatch mode,
so it sees ATen ops however the model reaches them: a layer, ``F.linear``,
``nn.MultiheadAttention``'s Python), three kinds of op are not computed:

* convolutions, matrix products, pooling windows and attention
  (:data:`_HEAVY`): torch's shape function runs on ``meta`` tensors (once per
  distinct signature) and the op answers an uninitialised tensor of the
  result's shape, dtype and device;
* in-place activations (:data:`_IN_PLACE_ACTIVATIONS`) answer their input;
* tensor-tensor arithmetic (:data:`_ARITHMETIC`) answers an uninitialised
  tensor of the broadcast shape and promoted dtype (in place: its first operand),
  and a mean over dims (:data:`_MEAN`) one of the reduced shape;
* batch norm at inference (:data:`_BATCH_NORMS`) answers an uninitialised
  tensor like its input.

Every other op runs as it is: for cheap elementwise ops torch's meta functions
(Python decompositions) are slower than the real kernel. So the *values* of an
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


def _shape_as(op):  # the shape of an ``addmm`` is the shape of its ``mm`` (whose meta function is cheaper)
    return lambda bias, a, b, *args, **kwargs: op(a, b)


_HEAVY: dict[Any, Any] = {
    **{op: op for op in (
        aten.convolution.default, aten._convolution.default, aten.mm.default, aten.bmm.default,
        aten.max_pool2d_with_indices.default, aten.max_pool3d_with_indices.default,
        aten.avg_pool2d.default, aten.avg_pool3d.default,
        aten._scaled_dot_product_flash_attention_for_cpu.default, aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_cudnn_attention.default,
        aten._native_multi_head_attention.default,  # nn.MultiheadAttention's fast path at inference
    )},
    aten.addmm.default: _shape_as(aten.mm.default),
    aten.baddbmm.default: _shape_as(aten.bmm.default),
}
"""ATen ops whose cost grows with the product of their sizes (> 90 % of a forward
pass of the benchmark's models), each with the op that gives its result's shape on meta."""

_IN_PLACE_ACTIVATIONS = frozenset((
    aten.relu_.default, aten.silu_.default, aten.hardswish_.default, aten.hardsigmoid_.default,
    aten.gelu_.default, aten.sigmoid_.default, aten.tanh_.default, aten.leaky_relu_.default,
    aten.elu_.default, aten.hardtanh_.default, aten.mish_.default, aten.celu_.default, aten.selu_.default,
    aten.clamp_.default, aten.clamp_min_.default,
))
"""In-place elementwise ops on one tensor (the rest scalars): the result is that
tensor, its shape, dtype and storage unchanged, so on a float tensor they need not run."""

_ARITHMETIC = frozenset((aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor))
_ARITHMETIC_IN_PLACE = frozenset((aten.add_.Tensor, aten.sub_.Tensor, aten.mul_.Tensor, aten.div_.Tensor))
"""Tensor-tensor arithmetic: the result's shape is the operands' broadcast shape and
its dtype their promoted dtype (the in-place forms: the first operand, when the
broadcast shape is its own and the promoted dtype casts to its dtype)."""

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
        if func in _IN_PLACE_ACTIVATIONS and args[0].is_floating_point():
            return args[0]
        if func in _BATCH_NORMS and not (func is aten.native_batch_norm.default and args[5]):
            x = args[0]
            return torch.empty_like(x), x.new_empty(0), x.new_empty(0)
        if (func in _ARITHMETIC or func in _ARITHMETIC_IN_PLACE) and len(args) == 2 and \
                isinstance(args[1], torch.Tensor) and kwargs.get("rounding_mode") is None:
            out = _broadcast(*args, in_place=func in _ARITHMETIC_IN_PLACE)
            if out is not None:
                return out
        if func is _MEAN:
            out = _mean(*args, **kwargs)
            if out is not None:
                return out
        shape_of = _HEAVY.get(func)
        if shape_of is None:
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
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        if isinstance(results, torch.Tensor):
            return torch.empty(results.shape, dtype=results.dtype, device=device)
        return tuple(torch.empty(r.shape, dtype=r.dtype, device=device) if isinstance(r, torch.Tensor) else r
                     for r in results)


def _signature(a: Any) -> Any:
    """What a heavy op's result shapes depend on: a tensor's shape and dtype, or the value."""
    if isinstance(a, torch.Tensor):
        return "tensor", tuple(a.shape), a.dtype
    return tuple(map(_signature, a)) if isinstance(a, (list, tuple)) else a


def _broadcast(a: torch.Tensor, b: torch.Tensor, in_place: bool) -> torch.Tensor | None:
    """``a op b`` without computing it, or None where torch would refuse it (then
    the real call raises torch's own message)."""
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        return None
    dtype = torch.result_type(a, b)
    if in_place:
        return a if shape == a.shape and torch.can_cast(dtype, a.dtype) else None
    device = a.device if a.dim() or not b.dim() else b.device  # a 0-dim tensor may sit on the CPU
    if a.device != b.device and a.dim() and b.dim():
        return None
    return torch.empty(shape, dtype=dtype, device=device)


def _mean(x: torch.Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> torch.Tensor | None:
    """``x.mean(dim, keepdim)`` without computing it, or None where torch would refuse it."""
    rank = x.dim()
    dims = list(range(rank)) if not dim else list(dim)
    if dtype is not None or not x.is_floating_point() or not all(-max(rank, 1) <= d < max(rank, 1) for d in dims):
        return None
    dims = {d % max(rank, 1) for d in dims}
    shape = [1 if i in dims else n for i, n in enumerate(x.shape)] if keepdim else \
        [n for i, n in enumerate(x.shape) if i not in dims]
    return x.new_empty(shape)
