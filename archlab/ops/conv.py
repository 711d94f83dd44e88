"""Learned linear ops: 2-D convolution (plain and weight-standardised), 1-D
convolution and fully connected layers."""
from __future__ import annotations

from typing import ClassVar

from archlab.errors import ChannelMismatchError, ShapeError
from archlab.ops.base import GLOBAL, Attr, MemoryRule, Op, Saved, Window, numel, register_op
from archlab.ops.spatial import window_out


def check_groups(op: Op, node, shapes) -> None:
    """Grouped (de)convolution: ``groups`` must divide both channel counts."""
    g, c, out = node.attrs["groups"], shapes[0][0], node.attrs["out_channels"]
    if c % g or out % g:
        raise op.shape_error(ChannelMismatchError, node, shapes,
                             f"groups={g} must divide in_channels={c} and out_channels={out}")


def conv_attrs(geometry: str) -> tuple[Attr, ...]:
    """A convolution's attributes, in the order the builder takes them;
    ``geometry`` is the kind of ``kernel_size``, ``stride``, ``padding`` and
    ``dilation``: ``"pair"`` (H, W) for conv2d, ``"int"`` (L) for conv1d."""
    return (
        Attr("out_channels", "int", positive=True),
        Attr("kernel_size", geometry, positive=True),
        Attr("stride", geometry, 1, positive=True),
        Attr("padding", geometry, 0, nonnegative=True),
        Attr("dilation", geometry, 1, positive=True),
        Attr("groups", "int", 1, positive=True),
        Attr("bias", "bool", True),
    )


def _per_axis(attrs: dict, name: str) -> tuple[int, ...]:
    """Attribute ``name`` per convolved axis (conv2d's are pairs, conv1d's one int)."""
    v = attrs[name]
    return (v,) if isinstance(v, int) else tuple(v)


def filter_numel(node, shapes) -> int:
    """Weights of one output channel's filter: ``in_channels/groups`` times the kernel's elements."""
    return (shapes[0][0] // node.attrs["groups"]) * numel(_per_axis(node.attrs, "kernel_size"))


class ConvNd(Op):
    """What conv1d and conv2d share, for any number of convolved axes
    (:attr:`axes`: the trailing dims of a ``(C, *axes)`` input); not registered.

    Rules:
        * shape: ``(out_channels, *sizes)``, each size
          ``floor((size + 2p - d(k-1) - 1)/s) + 1`` (:func:`window_out`); an
          input of another rank, ``groups`` not dividing both channel counts, or
          a dilated kernel longer than a padded axis is a ShapeError.
        * params: ``out_channels x in/groups x prod(kernel)`` (+ ``out_channels``
          with bias).
        * MACs: output elements x ``in/groups x prod(kernel)`` in every
          convention (FlopCounterMode and fvcore agree); ``full`` adds one per
          output element for the bias.
        * memory: ConvolutionBackward0 saves the input and the weight (a
          parameter).

    Subclasses set ``name``, ``doc``, ``attrs`` (:func:`conv_attrs`),
    :attr:`axes` and the wrong-rank error (:attr:`rank_error`,
    :attr:`rank_fix`), and define ``rf`` and ``emit``.
    """

    axes: ClassVar[int] = 2  # convolved (trailing) dims of the input
    rank_error: ClassVar[str] = ""  # the message for an input of another rank
    rank_fix: ClassVar[str] = ""  # the fix offered with it

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        a = node.attrs
        if len(shape) != 1 + self.axes:
            raise self.shape_error(ShapeError, node, shapes, self.rank_error, fix=self.rank_fix)
        check_groups(self, node, shapes)
        word = "longer" if self.axes == 1 else "larger"  # a sequence is long, an image large
        geometry = (_per_axis(a, n) for n in ("kernel_size", "stride", "padding", "dilation"))
        out = []
        for size, k, s, p, d in zip(shape[1:], *geometry):
            o = window_out(size, k, s, p, d)
            if o <= 0:
                raise self.shape_error(ShapeError, node, shapes, f"kernel {d * (k - 1) + 1} (dilated) is {word} than "
                                       f"the padded input {size + 2 * p}", fix=f"use a {word} input or more padding")
            out.append(o)
        return (a["out_channels"], *out)

    def params(self, node, shapes):
        a = node.attrs
        return a["out_channels"] * filter_numel(node, shapes) + (a["out_channels"] if a["bias"] else 0)

    def macs(self, node, shapes, out, convention):
        n = numel(out) * filter_numel(node, shapes)
        return n + (numel(out) if convention == "full" and node.attrs["bias"] else 0)

    def memory(self, node, shapes, out):
        return MemoryRule(saved_inputs=(0,))  # ConvolutionBackward0: input and weight


@register_op
class Conv2d(ConvNd):
    """``torch.nn.Conv2d``: out = floor((H + 2p - d(k-1) - 1)/s) + 1."""

    name = "conv2d"
    doc = "2-D convolution (groups for grouped/depthwise, dilation for atrous)"
    attrs = conv_attrs("pair")
    axes = 2
    rank_error = "conv2d needs a CxHxW input"  # std_conv2d's too
    rank_fix = "remove the flatten before it"

    def weight_shape(self, node, shapes):
        return shapes[0][0]  # in_channels

    def rf(self, node, shapes, out):
        a = node.attrs
        return tuple(
            Window(a["dilation"][i] * (a["kernel_size"][i] - 1) + 1, a["stride"][i], a["padding"][i]) for i in (0, 1)
        )

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.Conv2d(
            shapes[0][0], a["out_channels"], a["kernel_size"], stride=a["stride"], padding=a["padding"],
            dilation=a["dilation"], groups=a["groups"], bias=a["bias"],
        )
        return ctx.call_module(node, mod, args)


@register_op
class StdConv2d(Conv2d):
    """A conv2d whose filters are standardised before use: each filter to zero
    mean and unit (biased) variance over its ``in_channels/groups x kh x kw``
    weights, ``eps`` added to the variance (weight standardisation, Qiao et al.
    2019: timm's ``StdConv2d`` in BiT ResNet-V2s); with ``gain``, times a learned
    per-filter gain and the constant ``scale`` (NF-ResNets, Brock et al. 2021:
    timm's ``ScaledStdConv2d``, scale = gamma / sqrt(fan-in)).

    Rules:
        * params: conv2d's, plus ``out_channels`` with ``gain``.
        * MACs: conv2d's. fvcore also counts the standardisation (torch runs it
          as a training-mode ``batch_norm`` over the weight: 5 per weight element
          with a gain, 4 without); torchvision (FlopCounterMode) does not. It
          runs once per forward, whatever the batch, but is counted here per
          sample: exact at batch 1 (where the import benchmark compares),
          over-counted ``batch - 1`` times above it.
        * memory: conv2d's, plus per forward: the standardised weight (saved by
          the convolution), batch norm's mean and inverse std per filter, and the
          gain times scale; at inference the standardised weight and the gain
          times scale are scratch.
    """

    name = "std_conv2d"
    doc = "conv2d with weight standardisation (optionally a learned per-filter gain: NF-ResNets)"
    attrs = Conv2d.attrs + (Attr("eps", "float", 1e-6), Attr("gain", "bool", False), Attr("scale", "float", 1.0))

    def _weights(self, node, shapes) -> int:
        return node.attrs["out_channels"] * filter_numel(node, shapes)

    def params(self, node, shapes):
        return super().params(node, shapes) + (node.attrs["out_channels"] if node.attrs["gain"] else 0)

    def macs(self, node, shapes, out, convention):
        n = super().macs(node, shapes, out, convention)
        if convention == "torchvision":
            return n
        return n + (5 if node.attrs["gain"] else 4) * self._weights(node, shapes)

    def memory(self, node, shapes, out):
        c = node.attrs["out_channels"]
        weight = Saved("standardised_weight", self._weights(node, shapes), per_sample=False, dtype="param")
        stats = tuple(Saved(w, c, per_sample=False, dtype="param") for w in ("save_mean", "save_invstd"))
        gain = (Saved("gain_times_scale", c, per_sample=False, dtype="param"),) if node.attrs["gain"] else ()
        return MemoryRule(saved_inputs=(0,), saved_extra=(weight, *stats, *gain), scratch=(weight, *gain))

    def emit(self, ctx, node, args, shapes):
        from archlab.torchio.layers import StdConv2d as Layer

        a = node.attrs
        mod = Layer(shapes[0][0], a["out_channels"], a["kernel_size"], stride=a["stride"], padding=a["padding"],
                    dilation=a["dilation"], groups=a["groups"], bias=a["bias"], eps=a["eps"], gain=a["gain"],
                    scale=a["scale"])
        return ctx.call_module(node, mod, args)


@register_op
class Conv1d(ConvNd):
    """``torch.nn.Conv1d`` on a ``(C, L)`` sequence (ECA's channel attention
    convolves the pooled channel vector as a 1-channel sequence).

    Rules: params and MACs as conv2d with a 1-D kernel; receptive field
    :data:`GLOBAL` (a rank-2 tensor has no spatial layout, so every element is
    treated as seeing the whole input); memory: autograd saves the input."""

    name = "conv1d"
    doc = "1-D convolution over the last dim of a (C, L) sequence"
    attrs = conv_attrs("int")
    axes = 1
    rank_error = "conv1d needs a (C, L) input"
    rank_fix = "reshape to (C, L) first, or use conv2d on a CxHxW input"

    def rf(self, node, shapes, out):
        return GLOBAL

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.Conv1d(shapes[0][0], a["out_channels"], a["kernel_size"], stride=a["stride"], padding=a["padding"],
                        dilation=a["dilation"], groups=a["groups"], bias=a["bias"])
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

    def weight_shape(self, node, shapes):
        return shapes[0][-1]  # in_features: any number of tokens

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
