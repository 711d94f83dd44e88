"""Indexing ops on any rank: slice and select (views) and constant padding.

``dim`` attributes are torch dims of the batched tensor (:mod:`archlab.ops.dims`).
None of these ops does arithmetic: MACs are 0 in every convention.
"""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, Window, register_op
from archlab.ops.dims import axis, is_spatial


@register_op
class Slice(Op):
    """``x[..., start:stop:step, ...]`` along torch dim ``dim``, with Python's
    slice semantics (negative indices count from the end, out-of-range bounds
    clamp; ``None`` is the dim's start or end).

    Rules: a view (memory); receptive field: along a spatial axis (the last two
    of a rank >= 3 tensor) the exact shift ``Window(1, step, -start)``, else
    :data:`POINTWISE`."""

    name = "slice"
    doc = "x[start:stop:step] along one dim (a view)"
    attrs = (
        Attr("dim", "int"),
        Attr("start", "int", None),
        Attr("stop", "int", None),
        Attr("step", "int", 1, positive=True),
    )

    def _range(self, node, shapes) -> tuple[int, range]:
        ax = axis(self, node, shapes, node.attrs["dim"], len(shapes[0]))
        a = node.attrs
        return ax, range(*slice(a["start"], a["stop"], a["step"]).indices(shapes[0][ax]))

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        ax, r = self._range(node, shapes)
        if not len(r):
            a = node.attrs
            raise self.shape_error(ShapeError, node, shapes,
                                   f"slice {a['start']}:{a['stop']}:{a['step']} of dim {a['dim']} (size {shape[ax]}) "
                                   "selects nothing", fix="check start and stop against the dim's size")
        return (*shape[:ax], len(r), *shape[ax + 1:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        ax, r = self._range(node, shapes)
        if not is_spatial(ax, len(out)):
            return POINTWISE
        shift = Window(1, r.step, -r.start)
        return (shift, POINTWISE[1]) if ax == len(out) - 2 else (POINTWISE[0], shift)

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0, table_row=False)

    def view_strides(self, node, shapes, out, strides):
        ax, r = self._range(node, shapes)
        return (*strides[:ax], strides[ax] * r.step, *strides[ax + 1:])

    def emit(self, ctx, node, args, shapes):
        ax, r = self._range(node, shapes)
        return ctx.call_function(slice_dim, [args[0], ax + 1, r.start, r.stop, r.step])


def slice_dim(x, dim: int, start: int, stop: int, step: int):
    """``x[:, ..., start:stop:step]`` along torch dim ``dim`` (resolved bounds)."""
    return x[(slice(None),) * dim + (slice(start, stop if stop >= 0 else None, step),)]


@register_op
class Select(Op):
    """``x.select(dim, index)``: one index along torch dim ``dim``, which is
    removed (negative ``index`` counts from the end).

    Rules: a view; receptive field :data:`POINTWISE` when the removed dim is not
    spatial and the result still has rank >= 3, else :data:`GLOBAL`."""

    name = "select"
    doc = "take one index along a dim and drop the dim (a view)"
    attrs = (Attr("dim", "int"), Attr("index", "int"))

    def _axis(self, node, shapes) -> tuple[int, int]:
        (shape,) = shapes
        ax = axis(self, node, shapes, node.attrs["dim"], len(shape))
        i = node.attrs["index"]
        if not -shape[ax] <= i < shape[ax]:
            raise self.shape_error(ShapeError, node, shapes, f"index {i} is out of range for dim {node.attrs['dim']} "
                                   f"of size {shape[ax]}")
        return ax, i % shape[ax]

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        if len(shape) < 2:
            raise self.shape_error(ShapeError, node, shapes, "select would leave no dimension",
                                   fix="slice one element instead (it keeps the dim)")
        ax, _ = self._axis(node, shapes)
        return (*shape[:ax], *shape[ax + 1:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        ax, _ = self._axis(node, shapes)
        return GLOBAL if is_spatial(ax, len(shapes[0])) else POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0, table_row=False)

    def view_strides(self, node, shapes, out, strides):
        ax, _ = self._axis(node, shapes)
        return (*strides[:ax], *strides[ax + 1:])

    def emit(self, ctx, node, args, shapes):
        import torch

        ax, i = self._axis(node, shapes)
        return ctx.call_function(torch.select, [args[0], ax + 1, i])


@register_op
class Pad(Op):
    """``F.pad(x, pads, value=value)`` in constant mode: ``pads`` in F.pad's
    order, last dim first (``[left, right, top, bottom, ...]``); negative pads
    crop.

    Rules: MACs 0; a new tensor, nothing saved for backward (measured);
    receptive field: on each spatial axis (the last two of a rank >= 3 tensor)
    the exact shift ``Window(1, 1, left pad)``."""

    name = "pad"
    doc = "constant padding, F.pad order (last dim first); negative pads crop"
    attrs = (Attr("pads", "ints"), Attr("value", "float", 0.0))

    def _pairs(self, node, shapes) -> list[tuple[int, int]]:
        """(before, after) per IR axis, first axis first."""
        (shape,) = shapes
        pads = node.attrs["pads"]
        if not pads or len(pads) % 2 or len(pads) // 2 > len(shape):
            raise self.shape_error(ShapeError, node, shapes, f"pads {list(pads)} must be pairs (before, after), "
                                   f"last dim first, for at most the sample's {len(shape)} dims")
        pairs = [(0, 0)] * len(shape)
        for k in range(len(pads) // 2):
            pairs[len(shape) - 1 - k] = (pads[2 * k], pads[2 * k + 1])
        return pairs

    def infer_shape(self, node, shapes):
        out = tuple(s + a + b for s, (a, b) in zip(shapes[0], self._pairs(node, shapes)))
        if any(s <= 0 for s in out):
            raise self.shape_error(ShapeError, node, shapes, f"pads {list(node.attrs['pads'])} crop a dim to nothing")
        return out

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        if len(out) < 3:
            return POINTWISE
        pairs = self._pairs(node, shapes)
        return tuple(Window(1, 1, pairs[a][0]) for a in (len(out) - 2, len(out) - 1))

    def memory(self, node, shapes, out):
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        return ctx.call_function(F.pad, [args[0], list(node.attrs["pads"])], {"mode": "constant", "value": node.attrs["value"]})
