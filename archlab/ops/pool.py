"""Pooling ops: max, average, adaptive average."""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import GLOBAL, Attr, MemoryRule, Op, Saved, Window, numel, register_op
from archlab.ops.spatial import window_out
from archlab.ops.windows import adaptive_window


class _Pool2d(Op):
    """Shared geometry of max/avg pooling; ``stride`` defaults to the kernel size."""

    def derive_attrs(self, attrs):
        if attrs["stride"] is None:
            attrs["stride"] = attrs["kernel_size"]
        return attrs

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        if len(shape) != 3:
            raise self.shape_error(ShapeError, node, shapes, f"{self.name} needs a CxHxW input")
        a = node.attrs
        c, h, w = shape
        out = []
        for axis, size in ((0, h), (1, w)):
            k, s, p = a["kernel_size"][axis], a["stride"][axis], a["padding"][axis]
            d = a["dilation"][axis] if "dilation" in a else 1
            if 2 * p > k:
                raise self.shape_error(
                    ShapeError, node, shapes, f"padding {p} exceeds half the kernel {k}", fix="PyTorch requires padding <= kernel_size / 2"
                )
            o = window_out(size, k, s, p, d, ceil_mode=a["ceil_mode"])
            if o <= 0:
                raise self.shape_error(
                    ShapeError, node, shapes, f"kernel {d * (k - 1) + 1} is larger than the padded input {size + 2 * p}",
                    fix="use a larger input or remove a downsampling stage",
                )
            out.append(o)
        return (c, out[0], out[1])

    def macs(self, node, shapes, out, convention):
        if convention != "full":
            return 0  # neither torchvision nor fvcore counts pooling
        kh, kw = node.attrs["kernel_size"]
        return numel(out) * kh * kw

    def rf(self, node, shapes, out):
        a = node.attrs
        d = a.get("dilation", (1, 1))
        return tuple(Window(d[i] * (a["kernel_size"][i] - 1) + 1, a["stride"][i], a["padding"][i]) for i in (0, 1))


@register_op
class MaxPool2d(_Pool2d):
    name = "max_pool2d"
    doc = "max pooling (ceil_mode as in PyTorch)"
    attrs = (
        Attr("kernel_size", "pair", positive=True),
        Attr("stride", "pair", None, positive=True),
        Attr("padding", "pair", 0, nonnegative=True),
        Attr("dilation", "pair", 1, positive=True),
        Attr("ceil_mode", "bool", False),
    )

    def memory(self, node, shapes, out):
        # MaxPool2DWithIndicesBackward0 saves the input and int64 argmax indices.
        return MemoryRule(saved_inputs=(0,), saved_extra=(Saved("indices", numel(out), dtype="int64"),))

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        a = node.attrs
        kw = dict(kernel_size=a["kernel_size"], stride=a["stride"], padding=a["padding"],
                  dilation=a["dilation"], ceil_mode=a["ceil_mode"])
        return ctx.call_function(F.max_pool2d, args, kw)


@register_op
class AvgPool2d(_Pool2d):
    name = "avg_pool2d"
    doc = "average pooling (count_include_pad as in PyTorch)"
    attrs = (
        Attr("kernel_size", "pair", positive=True),
        Attr("stride", "pair", None, positive=True),
        Attr("padding", "pair", 0, nonnegative=True),
        Attr("ceil_mode", "bool", False),
        Attr("count_include_pad", "bool", True),
    )

    def memory(self, node, shapes, out):
        return MemoryRule(saved_inputs=(0,))  # AvgPool2DBackward0 saves the input

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        a = node.attrs
        kw = dict(kernel_size=a["kernel_size"], stride=a["stride"], padding=a["padding"],
                  ceil_mode=a["ceil_mode"], count_include_pad=a["count_include_pad"])
        return ctx.call_function(F.avg_pool2d, args, kw)


@register_op
class AdaptiveAvgPool2d(Op):
    """Average into a fixed ``output_size`` grid of bins (1 = global average pooling)."""

    name = "adaptive_avg_pool2d"
    doc = "adaptive average pooling to output_size bins (1 = global pooling)"
    attrs = (Attr("output_size", "pair", 1, positive=True),)

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        if len(shape) != 3:
            raise self.shape_error(ShapeError, node, shapes, "adaptive_avg_pool2d needs a CxHxW input")
        return (shape[0], *node.attrs["output_size"])

    def macs(self, node, shapes, out, convention):
        # fvcore: 1 per input element; full: the same (one add per input element).
        return 0 if convention == "torchvision" else numel(shapes[0])

    def rf(self, node, shapes, out):
        """Global for a 1x1 output; otherwise the bins of PyTorch's adaptive
        pooling (:func:`adaptive_window`), a regular window exactly when the
        output size divides the input's."""
        if out[1:] == (1, 1):
            return GLOBAL
        return tuple(adaptive_window(size, o) for size, o in zip(shapes[0][1:], out[1:]))

    def memory(self, node, shapes, out):
        """A 1x1 output dispatches to ``mean`` (MeanBackward1 saves no tensor);
        other sizes to ``_adaptive_avg_pool2d``, which saves its input. Pooling
        to the input's own size (torchvision VGG's 7x7 at 224) is an identity
        that still allocates, and no row of a per-layer table."""
        saved = () if out[1:] == (1, 1) else (0,)
        return MemoryRule(saved_inputs=saved, table_row=out != shapes[0])

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        return ctx.call_function(F.adaptive_avg_pool2d, args, {"output_size": node.attrs["output_size"]})

