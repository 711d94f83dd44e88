"""MobileNetV2: inverted residuals with linear bottlenecks.

Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks", CVPR 2018 (arXiv:1801.04381). Each block expands the
channels ``t``-fold with a 1x1 conv, filters them with a 3x3 depthwise conv
and projects back with a *linear* 1x1 conv (no activation); a residual joins
blocks that keep shape.

Node names follow torchvision's ``mobilenetv2.py``: ``features.0.{0,1}`` is the
stem conv/BN (a ``Conv2dNormActivation``); block ``N`` is ``features.N.conv.*``:
with expansion, ``conv.0.{0,1}`` (1x1 expand), ``conv.1.{0,1}`` (3x3 depthwise),
``conv.2`` (1x1 project) and ``conv.3`` (its BN); with ``t == 1`` the expand
step is missing and the indices shift down by one. The last 1x1 conv is
``features.18.{0,1}`` and the classifier is ``classifier.0`` (dropout) ->
``classifier.1`` (linear).
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model

SANDLER2018 = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018 (arXiv:1801.04381)"

# Table 2 of Sandler et al.: t = expansion factor, c = output channels,
# n = how many times the block repeats, s = stride of the first repeat.
INVERTED_RESIDUAL_SETTING = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%.

    The rule of the TensorFlow MobileNet code (and torchvision's ``_make_divisible``),
    used by the width multiplier of MobileNetV2/V3 and by V3's squeeze channels.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def inverted_residual(b: GraphBuilder, x: Ref, out_channels: int, stride: int, expand_ratio: int) -> Ref:
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection [+ x]."""
    hidden = int(round(x.channels * expand_ratio))
    with b.scope("conv"):
        out, i = x, 0
        if expand_ratio != 1:
            with b.scope(i):
                out = conv_bn(b, out, hidden, 1, act="relu6", names=("0", "1"))
            i += 1
        with b.scope(i):
            out = conv_bn(b, out, hidden, 3, stride=stride, groups=hidden, act="relu6", names=("0", "1"))
        out = conv_bn(b, out, out_channels, 1, act=None, names=(str(i + 1), str(i + 2)))
    if stride == 1 and x.channels == out_channels:
        out = b.add(x, out)
    return out


def mobilenet_v2(
    *,
    name: str = "mobilenet_v2",
    width_mult: float = 1.0,
    round_nearest: int = 8,
    dropout: float = 0.2,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
) -> Graph:
    """Build a MobileNetV2 graph (torchvision's ``MobileNetV2``).

    Args:
        width_mult: the width multiplier; every layer's channels are scaled by it
            and rounded to a multiple of ``round_nearest`` (the last conv's 1280
            only grows, never shrinks, as in the paper).
        round_nearest: channel rounding (1 turns rounding off).
        dropout: dropout probability before the classifier.
    """
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    b = GraphBuilder(name, meta={"family": "mobilenet_v2"})
    x = b.input(input_shape)
    last_channels = make_divisible(1280 * max(1.0, width_mult), round_nearest)
    with b.scope("features"):
        with b.scope(0):
            x = conv_bn(b, x, make_divisible(32 * width_mult, round_nearest), 3, stride=2, act="relu6",
                        names=("0", "1"))
        idx = 1
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                with b.scope(idx):
                    x = inverted_residual(b, x, out_channels, s if i == 0 else 1, t)
                idx += 1
        with b.scope(idx):
            x = conv_bn(b, x, last_channels, 1, act="relu6", names=("0", "1"))
    x = b.flatten(b.adaptive_avg_pool2d(x, 1, name="avgpool"))
    with b.scope("classifier"):
        x = b.linear(b.dropout(x, dropout, name="0"), num_classes, name="1")
    b.output(x)
    return b.build()


register_model(
    "mobilenet_v2", family="mobilenet_v2", paper=SANDLER2018, torchvision="mobilenet_v2",
    ref_params=3_504_872,
    ref_source="torchvision MobileNet_V2_Weights.IMAGENET1K_V1.meta['num_params']; the paper's Table 4 says 3.4M",
)(mobilenet_v2)
