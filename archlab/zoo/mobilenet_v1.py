"""MobileNet (v1): a plain stack of depthwise-separable convolutions.

Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto & Adam, "MobileNets:
Efficient Convolutional Neural Networks for Mobile Vision Applications",
arXiv:1704.04861, 2017. Table 1: a standard 3x3 conv (32, stride 2), then 13
depthwise-separable blocks, each a 3x3 depthwise conv -> BN -> ReLU followed by
a 1x1 pointwise conv -> BN -> ReLU (Figure 3), then a global average pool and a
fully connected layer. Convolutions have no bias (BN follows each); the FC has one.

torchvision has no MobileNet v1, so the names are archlab's own, in torchvision's
``Conv2dNormActivation`` style: ``features.0.0``/``features.0.1`` are the stem
conv/BN; block ``i`` (1..13) is ``features.i.dw.0``/``features.i.dw.1`` (depthwise
conv/BN) and ``features.i.pw.0``/``features.i.pw.1`` (pointwise conv/BN); the FC
is ``classifier``.

Table 1 prints the stride of the 13th depthwise conv as 2, but its input and
output are both 7x7: it is a typo, and this (like the TensorFlow and Keras
reference code) uses stride 1. ``width_mult`` is the paper's width multiplier
alpha (Section 3.3): every layer has ``alpha * N`` channels (at least 8, as in the
TensorFlow code's ``min_depth``); the resolution multiplier rho is just a smaller
``input_shape``.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model

HOWARD2017 = ("Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
              "Applications, arXiv:1704.04861, 2017")

# Table 1 of Howard et al., one row per depthwise-separable block:
# c = output channels of the pointwise conv, s = stride of the depthwise conv.
BLOCKS = (
    # c, s
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),  # printed "s2" in Table 1, a typo: 7x7 in, 7x7 out
)
STEM_CHANNELS = 32
MIN_CHANNELS = 8  # the TensorFlow reference's min_depth


def depthwise_separable(b: GraphBuilder, x: Ref, out_channels: int, stride: int) -> Ref:
    """3x3 depthwise conv -> BN -> ReLU, then 1x1 pointwise conv -> BN -> ReLU (Figure 3, right)."""
    with b.scope("dw"):
        x = conv_bn(b, x, x.channels, 3, stride=stride, groups=x.channels, names=("0", "1"))
    with b.scope("pw"):
        return conv_bn(b, x, out_channels, 1, names=("0", "1"))


def mobilenet_v1(
    *,
    name: str = "mobilenet_v1",
    width_mult: float = 1.0,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
) -> Graph:
    """Build a MobileNet (v1) graph.

    Args:
        width_mult: the width multiplier alpha (1.0, 0.75, 0.5 and 0.25 in the paper):
            every conv's channels are ``max(8, int(alpha * N))``.
    """
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    width = lambda c: max(MIN_CHANNELS, int(c * width_mult))  # noqa: E731
    b = GraphBuilder(name, meta={"family": "mobilenet_v1"})
    x = b.input(input_shape)
    with b.scope("features"):
        with b.scope(0):
            x = conv_bn(b, x, width(STEM_CHANNELS), 3, stride=2, names=("0", "1"))
        for i, (c, s) in enumerate(BLOCKS, start=1):
            with b.scope(i):
                x = depthwise_separable(b, x, width(c), s)
    x = b.flatten(b.adaptive_avg_pool2d(x, 1, name="avgpool"))
    x = b.linear(x, num_classes, name="classifier")
    b.output(x)
    return b.build()


register_model(
    "mobilenet_v1", family="mobilenet_v1", paper=HOWARD2017,
    ref_params=4_231_976,
    ref_source="Howard et al. Tables 1, 4 and 6: 1.0 MobileNet-224 has 4.2M parameters (and 569M mult-adds). "
    "4,231,976 counts every trainable parameter: 4,210,088 in the convs (3,185,088) and the FC "
    "(1,025,000, bias included), which is the paper's 4.2M, plus 21,888 batch-norm scales and shifts",
)(mobilenet_v1)
