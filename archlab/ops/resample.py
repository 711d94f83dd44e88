"""Decoder ops: transposed convolution, upsampling, max-unpooling (with the
max-pool that records indices for it) and cropping."""
from __future__ import annotations

import operator
from dataclasses import replace

from archlab.errors import ChannelMismatchError, ShapeError, SpatialMismatchError
from archlab.ops.base import Attr, MemoryRule, Op, SideOutput, Window, get_op, numel, register_op
from archlab.ops.conv import check_groups
from archlab.ops.pool import MaxPool2d
from archlab.ops.windows import (  # noqa: F401  (re-exported: the rules' home before)
    linear_window, nearest_indices, nearest_window, spread_window)


@register_op
class ConvTranspose2d(Op):
    """``torch.nn.ConvTranspose2d``: out = (H-1)s - 2p + d(k-1) + output_padding + 1.

    MACs follow FlopCounterMode and fvcore: every input pixel meets the whole
    kernel, ``H_in x W_in x C_in x C_out/groups x kh x kw``."""

    name = "conv_transpose2d"
    doc = "transposed convolution (learned upsampling; FCN, U-Net)"
    attrs = (
        Attr("out_channels", "int", positive=True),
        Attr("kernel_size", "pair", positive=True),
        Attr("stride", "pair", 1, positive=True),
        Attr("padding", "pair", 0, nonnegative=True),
        Attr("output_padding", "pair", 0, nonnegative=True),
        Attr("groups", "int", 1, positive=True),
        Attr("bias", "bool", True),
        Attr("dilation", "pair", 1, positive=True),
    )

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        a = node.attrs
        if len(shape) != 3:
            raise self.shape_error(ShapeError, node, shapes, "conv_transpose2d needs a CxHxW input")
        c, h, w = shape
        check_groups(self, node, shapes)
        out = []
        for axis, size in ((0, h), (1, w)):
            s, op_ = a["stride"][axis], a["output_padding"][axis]
            if op_ >= max(s, a["dilation"][axis]):
                raise self.shape_error(ShapeError, node, shapes, f"output_padding {op_} must be smaller than stride or dilation")
            out.append((size - 1) * s - 2 * a["padding"][axis] + a["dilation"][axis] * (a["kernel_size"][axis] - 1) + op_ + 1)
        return (a["out_channels"], out[0], out[1])

    def params(self, node, shapes):
        a = node.attrs
        kh, kw = a["kernel_size"]
        return shapes[0][0] * (a["out_channels"] // a["groups"]) * kh * kw + (a["out_channels"] if a["bias"] else 0)

    def macs(self, node, shapes, out, convention):
        a = node.attrs
        kh, kw = a["kernel_size"]
        n = numel(shapes[0]) * (a["out_channels"] // a["groups"]) * kh * kw
        return n + (numel(out) if convention == "full" and a["bias"] else 0)

    def rf(self, node, shapes, out):
        """Output o reads inputs i with i*s in [o + p - d(k-1), o + p] (see
        :func:`spread_window`): at most ``d(k-1)//s + 1`` of them (2 for k4 s2, 1
        for k2 s2), stride ``1/s``."""
        a = node.attrs
        return tuple(spread_window(a["kernel_size"][i], a["stride"][i], a["padding"][i], a["dilation"][i]) for i in (0, 1))

    def memory(self, node, shapes, out):
        return MemoryRule(saved_inputs=(0,))

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.ConvTranspose2d(
            shapes[0][0], a["out_channels"], a["kernel_size"], stride=a["stride"], padding=a["padding"],
            output_padding=a["output_padding"], groups=a["groups"], bias=a["bias"], dilation=a["dilation"],
        )
        return ctx.call_module(node, mod, args)


@register_op
class Upsample(Op):
    """``F.interpolate``: nearest or bilinear, by ``scale_factor``, to a fixed
    ``size``, or to the spatial size of a second input (``upsample(x, like)``)."""

    name = "upsample"
    arity = (1, 2)
    input_reads = {1: "shape"}  # a second input only gives the size
    doc = "nearest/bilinear resize by scale_factor, to size, or to a second input's size"
    attrs = (
        Attr("mode", "str", "nearest"),
        Attr("scale_factor", "int", None, positive=True),
        Attr("size", "pair", None, positive=True),
        Attr("align_corners", "bool", False),
    )

    def _target(self, node, shapes):
        a = node.attrs
        given = [a["scale_factor"] is not None, a["size"] is not None, len(shapes) == 2]
        if sum(given) != 1:
            raise self.shape_error(ShapeError, node, shapes, "give exactly one of scale_factor, size or a second input to match")
        if a["mode"] not in ("nearest", "bilinear"):
            raise self.shape_error(ShapeError, node, shapes, f"mode must be nearest or bilinear, got {a['mode']!r}")
        if len(shapes) == 2:
            return tuple(shapes[1][1:])
        if a["size"] is not None:
            return tuple(a["size"])
        return (shapes[0][1] * a["scale_factor"], shapes[0][2] * a["scale_factor"])

    def infer_shape(self, node, shapes):
        if any(len(s) != 3 for s in shapes):
            raise self.shape_error(ShapeError, node, shapes, "upsample needs CxHxW inputs")
        return (shapes[0][0], *self._target(node, shapes))

    def macs(self, node, shapes, out, convention):
        if convention == "torchvision":
            return 0
        return numel(out) * (4 if node.attrs["mode"] == "bilinear" else 1)  # fvcore's rule

    def rf(self, node, shapes, out):
        """The inputs each output reads, as ATen computes them (``upsample_nearest2d``,
        ``upsample_bilinear2d``), fitted by :meth:`Window.fit` over one period:

        * nearest: output o reads input ``floor(o H / H')``, up to float32 rounding
          (:func:`nearest_indices`): kernel 1, stride H/H' (a 2x upsampling reads
          ``o // 2``: centred 1/4 input step early, slack 1/4);
        * bilinear: o samples ``x = (o + 1/2) H/H' - 1/2`` (``align_corners=False``)
          or ``o (H-1)/(H'-1)`` (True) and reads ``floor(x)`` and ``ceil(x)`` (1 unit
          when x is whole). Unclipped, as a padded conv: ATen clamps x to 0 at the
          first outputs, which read inputs before the first.
        """
        a = node.attrs
        wins = []
        for i in (0, 1):
            h, ho = shapes[0][1 + i], out[1 + i]
            if a["mode"] == "nearest":
                wins.append(nearest_window(h, ho))
            elif a["align_corners"]:
                wins.append(linear_window(h - 1, 0, ho - 1) if ho > 1 else linear_window(0, 0, 1))
            else:
                wins.append(linear_window(2 * h, h - ho, 2 * ho))
        return tuple(wins)

    def memory(self, node, shapes, out):
        return MemoryRule()  # upsample backward needs only sizes

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        a = node.attrs
        size = self._target(node, shapes)
        kw = {"size": size, "mode": a["mode"]}
        if a["mode"] == "bilinear":
            kw["align_corners"] = a["align_corners"]
        return ctx.call_function(F.interpolate, args[:1], kw)


@register_op
class MaxPool2dWithIndices(MaxPool2d):
    """Max pooling that also records where each maximum came from, for a later
    ``max_unpool2d`` (SegNet). Consumers see the pooled values; the int64
    indices are a side output (``"indices"``) that only unpooling reads."""

    name = "max_pool2d_with_indices"
    doc = "max pooling that keeps argmax indices for max_unpool2d (SegNet)"

    def memory(self, node, shapes, out):
        # Saved for backward as max_pool2d's; at inference the indices stay live until
        # the unpooling that reads them.
        return replace(super().memory(node, shapes, out), side_outputs=(SideOutput("indices", numel(out), dtype="int64"),))

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        a = node.attrs
        kw = dict(kernel_size=a["kernel_size"], stride=a["stride"], padding=a["padding"],
                  dilation=a["dilation"], ceil_mode=a["ceil_mode"], return_indices=True)
        pair = ctx.call_function(F.max_pool2d, args, kw)
        # Take the indices out only when an unpooling reads them: no dead fx node holds them.
        if any("indices" in reads_of(ctx.graph[u], node.name) for u in ctx.graph.users(node.name)):
            ctx.side[node.name] = ctx.call_function(operator.getitem, [pair, 1])
        return ctx.call_function(operator.getitem, [pair, 0])


def reads_of(node, input_name: str) -> set[str]:
    """What ``node`` reads of its input ``input_name`` (:meth:`Op.reads`), over
    every position it takes it at (SegNet's deepest unpooling takes the pool as
    both its values and its indices)."""
    op = get_op(node.op)
    return {op.reads(k) for k, i in enumerate(node.inputs) if i == input_name}


@register_op
class MaxUnpool2d(Op):
    """``F.max_unpool2d(x, indices of pool)``: inputs are ``x`` and the
    ``max_pool2d_with_indices`` node whose indices place the values; the output
    has the shape of that pool's input (odd sizes included)."""

    name = "max_unpool2d"
    arity = (2, 2)
    doc = "place values back at a max_pool2d_with_indices node's argmax positions (SegNet)"

    needs_graph = True
    input_reads = {1: "indices"}  # the pool's argmax positions, not its values

    def infer_shape_in(self, graph, node, shapes):
        x, pooled = shapes
        pool = graph[node.inputs[1]]
        if pool.op != "max_pool2d_with_indices":
            raise self.shape_error(ShapeError, node, shapes, f"second input '{pool.name}' is a {pool.op}",
                                   fix="unpool the output of a max_pool2d_with_indices node")
        if x != pooled:
            cls = ChannelMismatchError if x[0] != pooled[0] else SpatialMismatchError
            raise self.shape_error(cls, node, shapes, f"input must have the shape of the pool '{pool.name}' it unpools")
        return tuple(graph[pool.inputs[0]].shape)

    def macs(self, node, shapes, out, convention):
        return 0 if convention != "full" else numel(shapes[0])

    def rf_in(self, graph, node, shapes, out):
        """A pooled value goes back to its argmax, which may be any position of its
        window: output o may read the pooled units whose windows cover it, the
        geometry of a transposed conv with the pool's kernel, stride, padding and
        dilation (:func:`spread_window`). For the usual 2x2/2 pool: unit ``o // 2``,
        stride 1/2 whatever the sizes (ceil mode included), slack 1/4."""
        a = graph[node.inputs[1]].attrs
        return tuple(spread_window(a["kernel_size"][i], a["stride"][i], a["padding"][i], a["dilation"][i])
                     for i in (0, 1))

    def memory(self, node, shapes, out):
        # MaxUnpool2DBackward0 saves the pool's own indices tensor, which the pool already
        # saves (and counts): one storage, so nothing extra here.
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        pool = ctx.graph[node.inputs[1]]
        a = pool.attrs
        size = list(ctx.graph[pool.inputs[0]].shape[1:])
        return ctx.call_function(F.max_unpool2d, [args[0], ctx.side[pool.name]],
                                 dict(kernel_size=a["kernel_size"], stride=a["stride"], padding=a["padding"], output_size=size))


@register_op
class Crop2d(Op):
    """Crop ``x`` to the spatial size of a second input (U-Net's skip, FCN's
    score fusion). ``offset`` (top, left) defaults to centred."""

    name = "crop2d"
    arity = (2, 2)
    input_reads = {1: "shape"}  # the second input only gives the size
    doc = "crop to a second input's HxW, centred or at offset (U-Net/FCN skips)"
    attrs = (Attr("offset", "pair", None, nonnegative=True),)

    def _offset(self, node, shapes):
        (c, h, w), ref = shapes
        th, tw = ref[1:]
        if th > h or tw > w:
            raise self.shape_error(
                SpatialMismatchError, node, shapes,
                f"cannot crop '{node.inputs[0]}' ({h}x{w}) to the size of '{node.inputs[1]}' ({th}x{tw})",
                fix="the input size must fit the network's downsampling (see the model's docs for accepted sizes)",
            )
        off = node.attrs["offset"] or ((h - th) // 2, (w - tw) // 2)
        if off[0] + th > h or off[1] + tw > w:
            raise self.shape_error(SpatialMismatchError, node, shapes, f"offset {off} puts the crop outside the input")
        return off

    def infer_shape(self, node, shapes):
        if any(len(s) != 3 for s in shapes):
            raise self.shape_error(ShapeError, node, shapes, "crop2d needs CxHxW inputs")
        self._offset(node, shapes)
        return (shapes[0][0], *shapes[1][1:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        top, left = self._offset(node, shapes)
        return (Window(1, 1, -top), Window(1, 1, -left))

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0)  # slicing: a view of the input; autograd saves nothing

    def emit(self, ctx, node, args, shapes):
        top, left = self._offset(node, shapes)
        h, w = shapes[1][1:]
        return ctx.call_function(crop, [args[0], top, left, h, w])


def crop(x, top: int, left: int, height: int, width: int):
    """``x[:, :, top:top + height, left:left + width]``."""
    return x[:, :, top:top + height, left:left + width]


