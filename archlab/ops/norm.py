"""Normalisation ops."""
from __future__ import annotations

from archlab.errors import ChannelMismatchError, ShapeError
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, Saved, numel, register_op
from archlab.ops.dims import axis, is_spatial


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

    def channels(self, node, shapes) -> int:
        return shapes[0][0]

    def weight_shape(self, node, shapes):
        return self.channels(node, shapes)

    def params(self, node, shapes):
        return 2 * self.channels(node, shapes) if node.attrs["affine"] else 0

    def buffers(self, node, shapes):
        return 2 * self.channels(node, shapes) + 1 if node.attrs["track_running_stats"] else 0

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
        c = self.channels(node, shapes)
        stats = tuple(Saved(w, c, per_sample=False, dtype="param") for w in ("save_mean", "save_invstd"))
        # running_mean/var in fp32, num_batches_tracked an int64.
        buffers = 2 * c * 4 + 8 if node.attrs["track_running_stats"] else 0
        return MemoryRule(saved_inputs=(0,), saved_extra=stats, buffer_bytes=buffers, table_row=False)

    torch_module = "BatchNorm2d"  # the torch.nn class emit builds

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = getattr(nn, self.torch_module)(
            self.channels(node, shapes), eps=a["eps"], momentum=a["momentum"], affine=a["affine"],
            track_running_stats=a["track_running_stats"],
        )
        return ctx.call_module(node, mod, args)


@register_op
class BatchNorm1d(BatchNorm2d):
    """``torch.nn.BatchNorm1d`` on ``(C,)`` features or ``(C, L)`` sequences (MLP
    heads, RepViT's classifier), or with ``channels_last`` on ``(L, C)`` tokens,
    run as LeViT runs it: ``bn(x.flatten(0, 1)).view(x.shape)``, the batch and the
    tokens merged into the rows; the rules are batch_norm2d's, per element."""

    name = "batch_norm1d"
    doc = "batch normalisation over channels of a (C,) or (C, L) input, or (L, C) tokens with channels_last"
    attrs = (*BatchNorm2d.attrs, Attr("channels_last", "bool", False))

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        if node.attrs["channels_last"] and len(shape) != 2:
            raise self.shape_error(ShapeError, node, shapes, "batch_norm1d with channels_last needs (L, C) tokens")
        if len(shape) not in (1, 2):
            raise self.shape_error(ShapeError, node, shapes, "batch_norm1d needs a (C,) or (C, L) input",
                                   fix="use batch_norm2d on a CxHxW input")
        return shape

    def channels(self, node, shapes) -> int:
        return shapes[0][-1] if node.attrs["channels_last"] else shapes[0][0]

    torch_module = "BatchNorm1d"

    def emit(self, ctx, node, args, shapes):
        if not node.attrs["channels_last"]:
            return super().emit(ctx, node, args, shapes)
        import torch

        rows = ctx.call_function(torch.flatten, [args[0], 0, 1])  # (B * L, C)
        return ctx.call_function(torch.Tensor.view_as, [super().emit(ctx, node, [rows], shapes), args[0]])


def _norm_stats(n: int, affine: bool) -> tuple[Saved, Saved]:
    """The per-row mean and inverse std a layer/group norm kernel returns and
    autograd saves: in the parameters' dtype when the norm is affine (PyTorch's
    CPU kernels compute them in the parameters' type), else the input's."""
    dtype = "param" if affine else "activation"
    return Saved("mean", n, dtype=dtype), Saved("rstd", n, dtype=dtype)


@register_op
class LayerNorm(Op):
    """``torch.nn.LayerNorm`` over the last ``normalized_dims`` dims
    (``normalized_shape = shape[-normalized_dims:]``): ViT and ConvNeXt.

    Rules:
        * params: ``prod(normalized_shape)`` each for weight and bias (when
          ``elementwise_affine``; bias only with ``bias``).
        * MACs: torchvision 0; fvcore 5 per element with affine parameters, 4
          without (fvcore's ``norm`` handler: measured 960 for 192 elements);
          full: the fvcore figure.
        * receptive field: its statistics mix the normalised dims; as the last
          axis is always one of them, :data:`GLOBAL` for a rank >= 3 tensor
          (whose last two axes are spatial), pointwise below.
        * memory: autograd saves the input, mean and rstd (one each per
          normalised row); the kernel returns mean and rstd beside the output
          (scratch at inference).
    """

    name = "layer_norm"
    doc = "layer normalisation over the last normalized_dims dims (transformers, ConvNeXt)"
    attrs = (
        Attr("normalized_dims", "int", 1, positive=True),
        Attr("eps", "float", 1e-5),
        Attr("elementwise_affine", "bool", True),
        Attr("bias", "bool", True),
    )

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        k = node.attrs["normalized_dims"]
        if k > len(shape):
            raise self.shape_error(ShapeError, node, shapes, f"normalized_dims={k} exceeds the sample's rank {len(shape)}",
                                   fix="normalize over at most every non-batch dim")
        return shape

    def _normalized(self, node, shapes):
        return shapes[0][len(shapes[0]) - node.attrs["normalized_dims"]:]

    def params(self, node, shapes):
        a = node.attrs
        if not a["elementwise_affine"]:
            return 0
        return numel(self._normalized(node, shapes)) * (2 if a["bias"] else 1)

    def macs(self, node, shapes, out, convention):
        if convention == "torchvision":
            return 0
        return numel(out) * (5 if node.attrs["elementwise_affine"] else 4)

    def rf(self, node, shapes, out):
        return GLOBAL if len(out) >= 3 else POINTWISE

    def memory(self, node, shapes, out):
        rows = numel(out) // numel(self._normalized(node, shapes))
        stats = _norm_stats(rows, node.attrs["elementwise_affine"])
        return MemoryRule(saved_inputs=(0,), saved_extra=stats, scratch=stats, table_row=False)

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.LayerNorm(self._normalized(node, shapes), eps=a["eps"], elementwise_affine=a["elementwise_affine"],
                           bias=a["bias"])
        return ctx.call_module(node, mod, args)


@register_op
class GroupNorm(Op):
    """``torch.nn.GroupNorm``: channels (torch dim 1) in ``num_groups`` groups,
    each normalised over its channels and every later dim.

    Rules:
        * params: 2C with ``affine``.
        * MACs: as :class:`LayerNorm` (fvcore's ``norm`` handler: 5 per element
          with affine, 4 without; torchvision 0).
        * receptive field: a group's statistics read every position, so
          :data:`GLOBAL` for a rank >= 3 tensor, pointwise below.
        * memory: autograd saves the input and a mean and rstd per group;
          the kernel returns those beside the output.
    """

    name = "group_norm"
    doc = "group normalisation (channels in num_groups groups)"
    attrs = (Attr("num_groups", "int", positive=True), Attr("eps", "float", 1e-5), Attr("affine", "bool", True))

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        g = node.attrs["num_groups"]
        if shape[0] % g:
            raise self.shape_error(ChannelMismatchError, node, shapes,
                                   f"num_groups={g} must divide the {shape[0]} channels (torch dim 1)")
        return shape

    def params(self, node, shapes):
        return 2 * shapes[0][0] if node.attrs["affine"] else 0

    def macs(self, node, shapes, out, convention):
        if convention == "torchvision":
            return 0
        return numel(out) * (5 if node.attrs["affine"] else 4)

    def rf(self, node, shapes, out):
        return GLOBAL if len(out) >= 3 else POINTWISE

    def memory(self, node, shapes, out):
        stats = _norm_stats(node.attrs["num_groups"], node.attrs["affine"])
        return MemoryRule(saved_inputs=(0,), saved_extra=stats, scratch=stats, table_row=False)

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        return ctx.call_module(node, nn.GroupNorm(a["num_groups"], shapes[0][0], eps=a["eps"], affine=a["affine"]), args)


@register_op
class Normalize(Op):
    """``F.normalize(x, p=2, dim, eps)``: ``x / max(||x||, eps)`` along ``dim``
    (cross-covariance attention in XCiT and EdgeNeXt, cosine attention in
    Swin V2). No parameters.

    Rules: MACs 0 under torchvision and fvcore (neither counts it); ``full``: 2
    per element (a square-and-add for the norm, a division). Receptive field
    :data:`POINTWISE` unless ``dim`` is spatial (then :data:`GLOBAL`). Memory:
    the norm and its clamped copy (one element per reduced row each) are saved
    with the input for backward; at inference the clamped norm is scratch
    beside the output (torch computes ``x / norm.clamp_min(eps).expand_as(x)``)."""

    name = "normalize"
    doc = "divide by the Euclidean norm along a dim (F.normalize)"
    attrs = (Attr("dim", "int", 1), Attr("eps", "float", 1e-12))

    def _axis(self, node, shapes) -> int:
        return axis(self, node, shapes, node.attrs["dim"], len(shapes[0]))

    def infer_shape(self, node, shapes):
        self._axis(node, shapes)
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return 2 * numel(out) if convention == "full" else 0

    def rf(self, node, shapes, out):
        return GLOBAL if is_spatial(self._axis(node, shapes), len(out)) else POINTWISE

    def memory(self, node, shapes, out):
        rows = numel(out) // out[self._axis(node, shapes)]
        norms = (Saved("norm", rows), Saved("clamped_norm", rows))
        return MemoryRule(saved_inputs=(0,), saved_extra=norms, scratch=norms[1:], layout="like_input")

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        return ctx.call_function(F.normalize, [args[0]], {"p": 2.0, "dim": node.attrs["dim"], "eps": node.attrs["eps"]})
