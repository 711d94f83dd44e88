"""Inception v3, in torchvision's layout.

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016 (Table 1, Figures 5-7). Module
types follow torchvision's ``inception.py``: A = Figure 5 (35x35, the 5x5 kept as
in the released model), B = grid reduction 35 -> 17, C = Figure 6 (factorised
1x7/7x1), D = grid reduction 17 -> 8, E = Figure 7 (expanded 1x3/3x1 outputs).
Every conv is conv (no bias) -> batch norm (eps=0.001) -> ReLU. Node names are
torchvision's, so its ``state_dict`` loads as is. ``transform_input`` (the
re-normalisation torchvision applies for its ported weights) is not modelled:
it is off in torchvision's ``weights=None`` builder.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model

SZEGEDY2016 = "Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016 (arXiv:1512.00567)"
BN_EPS = 0.001  # torchvision's BasicConv2d


def basic_conv(b: GraphBuilder, x: Ref, name: str, out: int, k: int | tuple[int, int], *,
               stride: int = 1, padding: int | tuple[int, int] = 0) -> Ref:
    """torchvision's ``BasicConv2d`` at ``name``: ``name.conv`` -> ``name.bn`` (eps 0.001) -> ReLU."""
    with b.scope(name):
        return conv_bn(b, x, out, k, stride=stride, padding=padding, eps=BN_EPS)


def chain(b: GraphBuilder, x: Ref, prefix: str, layers: tuple) -> Ref:
    """Consecutive ``BasicConv2d`` named ``{prefix}_{suffix}``; rows are (suffix, out, kernel, stride, padding)."""
    for suffix, out, k, stride, padding in layers:
        x = basic_conv(b, x, f"{prefix}_{suffix}", out, k, stride=stride, padding=padding)
    return x


def _pool_branch(b: GraphBuilder, x: Ref, out: int) -> Ref:
    """3x3/1 average pool (padding counted, as F.avg_pool2d) -> 1x1 projection."""
    x = b.avg_pool2d(x, 3, stride=1, padding=1, name="branch_pool_avg")
    return basic_conv(b, x, "branch_pool", out, 1)


def inception_a(b: GraphBuilder, x: Ref, pool_features: int) -> Ref:
    """35x35 module (Figure 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1."""
    return b.concat([
        basic_conv(b, x, "branch1x1", 64, 1),
        chain(b, x, "branch5x5", (("1", 48, 1, 1, 0), ("2", 64, 5, 1, 2))),
        chain(b, x, "branch3x3dbl", (("1", 64, 1, 1, 0), ("2", 96, 3, 1, 1), ("3", 96, 3, 1, 1))),
        _pool_branch(b, x, pool_features),
    ], name="cat")


def inception_b(b: GraphBuilder, x: Ref) -> Ref:
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | max pool 3x3/2."""
    return b.concat([
        basic_conv(b, x, "branch3x3", 384, 3, stride=2),
        chain(b, x, "branch3x3dbl", (("1", 64, 1, 1, 0), ("2", 96, 3, 1, 1), ("3", 96, 3, 2, 0))),
        b.max_pool2d(x, 3, stride=2, name="branch_pool"),
    ], name="cat")


# (kernel, stride, padding) of the factorised 7x7: a 1x7 and a 7x1 conv, both "same".
CONV_1x7 = ((1, 7), 1, (0, 3))
CONV_7x1 = ((7, 1), 1, (3, 0))


def inception_c(b: GraphBuilder, x: Ref, c7: int) -> Ref:
    """17x17 module (Figure 6) with n=7: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | pool-1x1."""
    return b.concat([
        basic_conv(b, x, "branch1x1", 192, 1),
        chain(b, x, "branch7x7", (("1", c7, 1, 1, 0), ("2", c7, *CONV_1x7), ("3", 192, *CONV_7x1))),
        chain(b, x, "branch7x7dbl", (
            ("1", c7, 1, 1, 0), ("2", c7, *CONV_7x1), ("3", c7, *CONV_1x7), ("4", c7, *CONV_7x1), ("5", 192, *CONV_1x7),
        )),
        _pool_branch(b, x, 192),
    ], name="cat")


def inception_d(b: GraphBuilder, x: Ref) -> Ref:
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool 3x3/2."""
    return b.concat([
        chain(b, x, "branch3x3", (("1", 192, 1, 1, 0), ("2", 320, 3, 2, 0))),
        chain(b, x, "branch7x7x3", (
            ("1", 192, 1, 1, 0), ("2", 192, *CONV_1x7), ("3", 192, *CONV_7x1), ("4", 192, 3, 2, 0),
        )),
        b.max_pool2d(x, 3, stride=2, name="branch_pool"),
    ], name="cat")


def _split_1x3_3x1(b: GraphBuilder, x: Ref, prefix: str) -> Ref:
    """Figure 7's expanded output: a 1x3 and a 3x1 conv side by side, concatenated."""
    return b.concat([
        basic_conv(b, x, f"{prefix}a", 384, (1, 3), padding=(0, 1)),
        basic_conv(b, x, f"{prefix}b", 384, (3, 1), padding=(1, 0)),
    ], name=f"{prefix}_cat")


def inception_e(b: GraphBuilder, x: Ref) -> Ref:
    """8x8 module (Figure 7): 1x1 | 1x1-(1x3,3x1) | 1x1-3x3-(1x3,3x1) | pool-1x1."""
    # Built in torchvision's registration order (branch1x1 first) so the state_dict key order matches.
    b1 = basic_conv(b, x, "branch1x1", 320, 1)
    b3 = _split_1x3_3x1(b, basic_conv(b, x, "branch3x3_1", 384, 1), "branch3x3_2")
    d3 = chain(b, x, "branch3x3dbl", (("1", 448, 1, 1, 0), ("2", 384, 3, 1, 1)))
    d3 = _split_1x3_3x1(b, d3, "branch3x3dbl_3")
    return b.concat([b1, b3, d3, _pool_branch(b, x, 192)], name="cat")


def aux_head(b: GraphBuilder, x: Ref, num_classes: int) -> Ref:
    """Auxiliary classifier on the 17x17 grid: 5x5/3 avg pool -> 1x1 (128) -> 5x5 (768) -> global pool -> FC."""
    x = b.avg_pool2d(x, 5, stride=3, name="pool")
    x = basic_conv(b, x, "conv0", 128, 1)
    x = basic_conv(b, x, "conv1", 768, 5)
    x = b.flatten(b.adaptive_avg_pool2d(x, 1, name="avgpool"))
    return b.linear(x, num_classes, name="fc")


# The network after the stem, in order: (torchvision module name, block, block arguments).
BLOCKS = (
    ("Mixed_5b", inception_a, (32,)),
    ("Mixed_5c", inception_a, (64,)),
    ("Mixed_5d", inception_a, (64,)),
    ("Mixed_6a", inception_b, ()),
    ("Mixed_6b", inception_c, (128,)),
    ("Mixed_6c", inception_c, (160,)),
    ("Mixed_6d", inception_c, (160,)),
    ("Mixed_6e", inception_c, (192,)),
    ("Mixed_7a", inception_d, ()),
    ("Mixed_7b", inception_e, ()),
    ("Mixed_7c", inception_e, ()),
)
AUX_AFTER = "Mixed_6e"  # the auxiliary classifier taps the last 17x17 module


def inception_v3(
    *,
    name: str = "inception_v3",
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 299, 299),
    aux_logits: bool = False,
    dropout: float = 0.5,
) -> Graph:
    """Build Inception v3 (torchvision layout, ``transform_input=False``).

    Args:
        num_classes: outputs of the classifier (and of the auxiliary head).
        aux_logits: add torchvision's ``AuxLogits`` head as the extra graph output
            ``aux`` (``out`` stays the main logits); it needs the canonical
            299x299 input (its 5x5 conv wants a 17x17 grid). torchvision only
            computes it in training mode; the compiled graph always does.
        dropout: dropout before the final FC.
    """
    b = GraphBuilder(name, meta={"family": "inception"})
    x = b.input(input_shape)
    x = basic_conv(b, x, "Conv2d_1a_3x3", 32, 3, stride=2)
    x = basic_conv(b, x, "Conv2d_2a_3x3", 32, 3)
    x = basic_conv(b, x, "Conv2d_2b_3x3", 64, 3, padding=1)
    x = b.max_pool2d(x, 3, stride=2, name="maxpool1")
    x = basic_conv(b, x, "Conv2d_3b_1x1", 80, 1)
    x = basic_conv(b, x, "Conv2d_4a_3x3", 192, 3)
    x = b.max_pool2d(x, 3, stride=2, name="maxpool2")
    aux = None
    for block_name, block, args in BLOCKS:
        with b.scope(block_name):
            x = block(b, x, *args)
        if aux_logits and block_name == AUX_AFTER:
            with b.scope("AuxLogits"):
                aux = aux_head(b, x, num_classes)
    x = b.adaptive_avg_pool2d(x, 1, name="avgpool")
    x = b.flatten(b.dropout(x, dropout, name="dropout"))
    b.output(b.linear(x, num_classes, name="fc"), "out")
    if aux is not None:
        b.output(aux, "aux")
    return b.build()


register_model(
    "inception_v3", family="inception", paper=SZEGEDY2016, torchvision="inception_v3",
    # init_weights given (no FutureWarning) and False: trunc_normal_ costs seconds, and any weights
    # serve for the comparison, which copies them into the compiled graph.
    # (At std 0.1 it would also drive the logits to ~1e11.)
    torchvision_kwargs={"aux_logits": False, "init_weights": False},
    input_shape=(3, 299, 299), ref_params=23_834_568,
    ref_source="torchvision inception_v3(weights=None, aux_logits=False); its Inception_V3_Weights meta "
    "num_params 27,161,264 includes the AuxLogits head (3,326,696)",
)(inception_v3)
