"""Normalisation ops."""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import POINTWISE, Attr, MemoryRule, Op, Saved, numel, register_op


@register_op
class BatchNorm2d(Op):
    """``torch.nn.BatchNorm2d``; params 2C when affine, buffers 2C+1 when tracking stats."""

    name = "batch_norm2d"
    doc = "batch normalisation over channels"
    attrs = (
        Attr("eps", "float", 1e-5),
        Attr("momentum", "float", 0.1),
        Attr("affine", "bool", True),
        Attr("track_running_stats", "bool", True),
    )

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        if len(shape) != 3:
            raise self.shape_error(ShapeError, node, shapes, "batch_norm2d needs a CxHxW input")
        return shape

    def params(self, node, shapes):
        return 2 * shapes[0][0] if node.attrs["affine"] else 0

    def buffers(self, node, shapes):
        return 2 * shapes[0][0] + 1 if node.attrs["track_running_stats"] else 0

    def macs(self, node, shapes, out, convention):
        # Inference: a per-channel scale (and shift when affine), as fvcore counts it.
        if convention == "torchvision":
            return 0
        return numel(out) * (2 if node.attrs["affine"] else 1)

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        # NativeBatchNormBackward0 saves the input, weight and running stats, and
        # the per-channel batch mean and inverse std in the weights' dtype.
        c = shapes[0][0]
        stats = tuple(Saved(w, c, per_sample=False, dtype="param") for w in ("save_mean", "save_invstd"))
        # running_mean/var in fp32, num_batches_tracked an int64.
        buffers = 2 * c * 4 + 8 if node.attrs["track_running_stats"] else 0
        return MemoryRule(saved_inputs=(0,), saved_extra=stats, buffer_bytes=buffers, table_row=False)

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.BatchNorm2d(
            shapes[0][0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"],
            track_running_stats=a["track_running_stats"],
        )
        return ctx.call_module(node, mod, args)
