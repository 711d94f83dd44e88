"""MobileNetV3-Large and -Small: V2's inverted residuals plus squeeze-excitation and hard-swish.

Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le & Adam,
"Searching for MobileNetV3", ICCV 2019 (arXiv:1905.02244). The block tables are
the paper's Tables 1 and 2.

Node names follow torchvision's ``mobilenetv3.py``: ``features.0.{0,1}`` is the
stem conv/BN; block ``N`` is ``features.N.block.*``, a sequence of
``Conv2dNormActivation``s (``block.K.0`` conv, ``block.K.1`` BN): the 1x1
expand (only when it changes the width), the depthwise conv, the
squeeze-excitation ``block.K.fc1``/``block.K.fc2`` (1x1 convs with bias) if the
row says so, and the linear 1x1 project. The last 1x1 conv is ``features.{16|12}``;
the classifier is ``classifier.0`` (linear) -> hard-swish -> ``classifier.2``
(dropout) -> ``classifier.3`` (linear). Batch norms use eps 0.001 and momentum
0.01 (torchvision's values, from the TensorFlow reference).
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.mobilenet_v2 import make_divisible
from archlab.zoo.registry import register_model

HOWARD2019 = "Howard et al., Searching for MobileNetV3, ICCV 2019 (arXiv:1905.02244)"

BN_EPS, BN_MOMENTUM = 0.001, 0.01

# Tables 1 and 2 of Howard et al. (the input channels of a row are the previous row's
# output, 16 for the first). Columns: k = depthwise kernel, exp = expanded channels,
# c = output channels, se = squeeze-excitation, nl = "RE" (ReLU) or "HS" (hard-swish),
# s = stride of the depthwise conv.
LARGE = (
    # k, exp,   c,    se,    nl,  s
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
SMALL = (
    # k, exp,  c,    se,    nl,  s
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
# arch: (block table, channels of the classifier's hidden layer)
CONFIGS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}
ACTIVATIONS = {"RE": "relu", "HS": "hardswish"}


def conv_norm_act(b: GraphBuilder, x: Ref, out_channels: int, k: int, *, stride: int = 1, groups: int = 1,
                  act: str | None = None) -> Ref:
    """torchvision's ``Conv2dNormActivation`` with V3's batch norm: conv ``0``, BN ``1``, activation."""
    x = b.conv2d(x, out_channels, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False, name="0")
    x = b.batch_norm2d(x, eps=BN_EPS, momentum=BN_MOMENTUM, name="1")
    return b.node(act, x) if act else x


def squeeze_excite(b: GraphBuilder, x: Ref, squeeze_channels: int) -> Ref:
    """Global pool -> 1x1 ``fc1`` -> ReLU -> 1x1 ``fc2`` -> hard-sigmoid -> scale ``x``
    (torchvision's ``SqueezeExcitation`` with ``scale_activation=Hardsigmoid``)."""
    s = b.adaptive_avg_pool2d(x, 1, name="avgpool")
    s = b.relu(b.conv2d(s, squeeze_channels, 1, name="fc1"))
    s = b.hardsigmoid(b.conv2d(s, x.channels, 1, name="fc2"))
    return b.mul(x, s, name="scale")


def inverted_residual(b: GraphBuilder, x: Ref, k: int, expanded: int, out_channels: int, use_se: bool,
                      act: str, stride: int) -> Ref:
    """[1x1 expand] -> kxk depthwise -> [squeeze-excite] -> 1x1 linear project [+ x]."""
    with b.scope("block"):
        out, i = x, 0
        if expanded != x.channels:
            with b.scope(i):
                out = conv_norm_act(b, out, expanded, 1, act=act)
            i += 1
        with b.scope(i):
            out = conv_norm_act(b, out, expanded, k, stride=stride, groups=expanded, act=act)
        i += 1
        if use_se:
            with b.scope(i):
                out = squeeze_excite(b, out, make_divisible(expanded // 4, 8))
            i += 1
        with b.scope(i):
            out = conv_norm_act(b, out, out_channels, 1)
    if stride == 1 and x.channels == out_channels:
        out = b.add(out, x)
    return out


def mobilenet_v3(
    *,
    name: str = "mobilenet_v3_large",
    arch: str = "large",
    width_mult: float = 1.0,
    dropout: float = 0.2,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
) -> Graph:
    """Build a MobileNetV3 graph (torchvision's ``MobileNetV3``).

    Args:
        arch: ``"large"`` (Table 1) or ``"small"`` (Table 2).
        width_mult: scales every block's channels, rounded to multiples of 8
            (the stem and the last 1x1 conv follow the first and last rows).
        dropout: dropout probability inside the classifier.
    """
    if arch not in CONFIGS:
        raise ValueError(f"arch must be one of {sorted(CONFIGS)}, got {arch!r}")
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    table, hidden = CONFIGS[arch]
    width = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    b = GraphBuilder(name, meta={"family": "mobilenet_v3"})
    x = b.input(input_shape)
    with b.scope("features"):
        with b.scope(0):
            x = conv_norm_act(b, x, width(16), 3, stride=2, act="hardswish")
        for idx, (k, exp, c, se, nl, s) in enumerate(table, start=1):
            with b.scope(idx):
                x = inverted_residual(b, x, k, width(exp), width(c), se, ACTIVATIONS[nl], s)
        with b.scope(len(table) + 1):
            x = conv_norm_act(b, x, 6 * x.channels, 1, act="hardswish")
    x = b.flatten(b.adaptive_avg_pool2d(x, 1, name="avgpool"))
    with b.scope("classifier"):
        x = b.hardswish(b.linear(x, width(hidden), name="0"), name="1")
        x = b.linear(b.dropout(x, dropout, name="2"), num_classes, name="3")
    b.output(x)
    return b.build()


_TV = "torchvision MobileNet_V3_{}_Weights.IMAGENET1K_V1.meta['num_params']; the paper's Table 3 says {}"
register_model(
    "mobilenet_v3_large", family="mobilenet_v3", paper=HOWARD2019, torchvision="mobilenet_v3_large",
    ref_params=5_483_032, ref_source=_TV.format("Large", "5.4M"), defaults={"arch": "large"},
)(mobilenet_v3)
register_model(
    "mobilenet_v3_small", family="mobilenet_v3", paper=HOWARD2019, torchvision="mobilenet_v3_small",
    ref_params=2_542_856, ref_source=_TV.format("Small", "2.5M"),
    defaults={"arch": "small"},
)(mobilenet_v3)
