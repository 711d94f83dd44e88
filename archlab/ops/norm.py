"""Normalisation ops."""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import Attr, Op, register_op


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

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.BatchNorm2d(
            shapes[0][0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"],
            track_running_stats=a["track_running_stats"],
        )
        return ctx.call_module(node, mod, args)
