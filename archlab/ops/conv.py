"""Learned linear ops: 2-D convolution and fully connected layers."""
from __future__ import annotations

from archlab.errors import ChannelMismatchError, ShapeError
from archlab.ops.base import Attr, MemoryRule, Op, GLOBAL, Window, numel, register_op
from archlab.ops.spatial import window_out


def check_groups(op: Op, node, shapes) -> None:
    """Grouped (de)convolution: ``groups`` must divide both channel counts."""
    g, c, out = node.attrs["groups"], shapes[0][0], node.attrs["out_channels"]
    if c % g or out % g:
        raise op.shape_error(ChannelMismatchError, node, shapes,
                             f"groups={g} must divide in_channels={c} and out_channels={out}")


@register_op
class Conv2d(Op):
    """``torch.nn.Conv2d``: out = floor((H + 2p - d(k-1) - 1)/s) + 1."""

    name = "conv2d"
    doc = "2-D convolution (groups for grouped/depthwise, dilation for atrous)"
    attrs = (
        Attr("out_channels", "int", positive=True),
        Attr("kernel_size", "pair", positive=True),
        Attr("stride", "pair", 1, positive=True),
        Attr("padding", "pair", 0, nonnegative=True),
        Attr("dilation", "pair", 1, positive=True),
        Attr("groups", "int", 1, positive=True),
        Attr("bias", "bool", True),
    )

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        a = node.attrs
        if len(shape) != 3:
            raise self.shape_error(ShapeError, node, shapes, "conv2d needs a CxHxW input", fix="remove the flatten before it")
        c, h, w = shape
        check_groups(self, node, shapes)
        out = []
        for axis, size in ((0, h), (1, w)):
            k, s, p, d = a["kernel_size"][axis], a["stride"][axis], a["padding"][axis], a["dilation"][axis]
            o = window_out(size, k, s, p, d)
            if o <= 0:
                raise self.shape_error(
                    ShapeError, node, shapes,
                    f"kernel {d * (k - 1) + 1} (dilated) is larger than the padded input {size + 2 * p}",
                    fix="use a larger input or more padding",
                )
            out.append(o)
        return (a["out_channels"], out[0], out[1])

    def params(self, node, shapes):
        a = node.attrs
        cin = shapes[0][0]
        kh, kw = a["kernel_size"]
        n = a["out_channels"] * (cin // a["groups"]) * kh * kw
        return n + (a["out_channels"] if a["bias"] else 0)

    def macs(self, node, shapes, out, convention):
        a = node.attrs
        kh, kw = a["kernel_size"]
        n = numel(out) * (shapes[0][0] // a["groups"]) * kh * kw
        if convention == "full" and a["bias"]:
            n += numel(out)
        return n

    def rf(self, node, shapes, out):
        a = node.attrs
        return tuple(
            Window(a["dilation"][i] * (a["kernel_size"][i] - 1) + 1, a["stride"][i], a["padding"][i]) for i in (0, 1)
        )

    def memory(self, node, shapes, out):
        # ConvolutionBackward0 saves input and weight (the weight counts as a parameter).
        return MemoryRule(saved_inputs=(0,))

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.Conv2d(
            shapes[0][0], a["out_channels"], a["kernel_size"], stride=a["stride"], padding=a["padding"],
            dilation=a["dilation"], groups=a["groups"], bias=a["bias"],
        )
        return ctx.call_module(node, mod, args)


@register_op
class Linear(Op):
    """``torch.nn.Linear`` on the last dim: ``(..., F) -> (..., out_features)``,
    any rank (a flat ``(F,)`` vector after a flatten, ``(L, E)`` tokens).

    Rules:
        * params: ``F * out_features`` (+ ``out_features`` with bias).
        * MACs: output elements x ``F`` in every convention (FlopCounterMode and
          fvcore agree); ``full`` adds one per output element for the bias.
        * receptive field: :data:`GLOBAL` (it mixes the last axis, which is
          spatial for a rank >= 3 tensor; a flat vector has no layout).
        * memory: autograd saves the input (a view of it, folded to 2-D) and the
          weight (a parameter). A non-contiguous input of rank >= 2 is copied
          first; that copy is not modelled.
    """

    name = "linear"
    doc = "fully connected layer on the last dim: (..., F) -> (..., out_features)"
    attrs = (Attr("out_features", "int", positive=True), Attr("bias", "bool", True))

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        return (*shape[:-1], node.attrs["out_features"])

    def params(self, node, shapes):
        n = shapes[0][-1] * node.attrs["out_features"]
        return n + (node.attrs["out_features"] if node.attrs["bias"] else 0)

    def macs(self, node, shapes, out, convention):
        n = numel(out) * shapes[0][-1]
        return n + (numel(out) if convention == "full" and node.attrs["bias"] else 0)

    def rf(self, node, shapes, out):
        return GLOBAL

    def memory(self, node, shapes, out):
        # AddmmBackward0 (MmBackward0 without bias) saves the input and weight.t().
        return MemoryRule(saved_inputs=(0,))

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        mod = nn.Linear(shapes[0][-1], node.attrs["out_features"], bias=node.attrs["bias"])
        return ctx.call_module(node, mod, args)
