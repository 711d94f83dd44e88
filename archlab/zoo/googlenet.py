"""GoogLeNet (Inception v1), in torchvision's layout.

Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (Table 1). As in
torchvision's ``googlenet.py`` (whose weights were ported from a TensorFlow
re-implementation) and unlike the paper:

- every conv is conv (no bias) -> batch norm (eps=0.001) -> ReLU;
- the "5x5" branch uses a 3x3 conv (a known torchvision quirk, pytorch/vision#906);
- the max pools use ``ceil_mode=True`` and there is no local response normalisation;
- the auxiliary heads pool adaptively to 4x4 (the paper: 5x5/3 average pool).

Node names are torchvision's, so its ``state_dict`` loads as is.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model

SZEGEDY2015 = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (arXiv:1409.4842)"
BN_EPS = 0.001  # torchvision's BasicConv2d

# Table 1 of the paper, one row per inception module:
# (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj);
# two-column rows are max pools (name, kernel), stride 2 (torchvision's 2x2 before 5a).
STAGES: tuple[tuple[str, int, int, int, int, int, int] | tuple[str, int], ...] = (
    ("inception3a", 64, 96, 128, 16, 32, 32),
    ("inception3b", 128, 128, 192, 32, 96, 64),
    ("maxpool3", 3),
    ("inception4a", 192, 96, 208, 16, 48, 64),
    ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64),
    ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    ("maxpool4", 2),
    ("inception5a", 256, 160, 320, 32, 128, 128),
    ("inception5b", 384, 192, 384, 48, 128, 128),
)
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}  # where the auxiliary classifiers tap the trunk


def basic_conv(b: GraphBuilder, x: Ref, out: int, k: int, *, stride: int = 1, padding: int = 0) -> Ref:
    """torchvision's ``BasicConv2d``: ``conv`` -> ``bn`` (eps 0.001) -> ReLU."""
    return conv_bn(b, x, out, k, stride=stride, padding=padding, eps=BN_EPS)


def inception(b: GraphBuilder, x: Ref, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> Ref:
    """Four parallel branches concatenated along channels."""
    with b.scope("branch1"):
        b1 = basic_conv(b, x, c1, 1)
    with b.scope("branch2"):
        with b.scope(0):
            b2 = basic_conv(b, x, c3r, 1)
        with b.scope(1):
            b2 = basic_conv(b, b2, c3, 3, padding=1)
    with b.scope("branch3"):
        with b.scope(0):
            b3 = basic_conv(b, x, c5r, 1)
        with b.scope(1):  # torchvision: 3x3 where the paper has 5x5
            b3 = basic_conv(b, b3, c5, 3, padding=1)
    with b.scope("branch4"):
        b4 = b.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True, name=0)
        with b.scope(1):
            b4 = basic_conv(b, b4, pool_proj, 1)
    return b.concat([b1, b2, b3, b4], name="cat")


def aux_head(b: GraphBuilder, x: Ref, num_classes: int, dropout: float) -> Ref:
    """Auxiliary classifier: pool to 4x4 -> 1x1 conv (128) -> FC 1024 -> ReLU -> dropout -> FC."""
    x = b.adaptive_avg_pool2d(x, (4, 4), name="pool")
    with b.scope("conv"):
        x = basic_conv(b, x, 128, 1)
    x = b.relu(b.linear(b.flatten(x), 1024, name="fc1"))
    x = b.dropout(x, dropout, name="dropout")
    return b.linear(x, num_classes, name="fc2")


def googlenet(
    *,
    name: str = "googlenet",
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
    aux_logits: bool = False,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
) -> Graph:
    """Build GoogLeNet (torchvision layout, ``transform_input=False``).

    Args:
        num_classes: outputs of the classifier (and of the auxiliary heads).
        aux_logits: add the two auxiliary classifiers as extra graph outputs
            ``aux1`` (after inception4a) and ``aux2`` (after inception4d); ``out``
            stays the main logits. torchvision only computes them in training
            mode; the compiled graph always does.
        dropout, dropout_aux: dropout before the main / auxiliary final FC.
    """
    b = GraphBuilder(name, meta={"family": "googlenet"})
    x = b.input(input_shape)
    with b.scope("conv1"):
        x = basic_conv(b, x, 64, 7, stride=2, padding=3)
    x = b.max_pool2d(x, 3, stride=2, ceil_mode=True, name="maxpool1")
    with b.scope("conv2"):
        x = basic_conv(b, x, 64, 1)
    with b.scope("conv3"):
        x = basic_conv(b, x, 192, 3, padding=1)
    x = b.max_pool2d(x, 3, stride=2, ceil_mode=True, name="maxpool2")
    taps: dict[str, Ref] = {}
    for stage, *widths in STAGES:
        if len(widths) == 1:
            x = b.max_pool2d(x, widths[0], stride=2, ceil_mode=True, name=stage)
            continue
        with b.scope(stage):
            x = inception(b, x, *widths)
        if stage in AUX_AFTER:
            taps[AUX_AFTER[stage]] = x
    # The heads are added after the trunk so that the compiled module's
    # state_dict lists aux1/aux2 where torchvision registers them (before fc).
    aux = {}
    if aux_logits:
        for head, tap in taps.items():
            with b.scope(head):
                aux[head] = aux_head(b, tap, num_classes, dropout_aux)
    x = b.adaptive_avg_pool2d(x, 1, name="avgpool")
    x = b.dropout(b.flatten(x), dropout, name="dropout")
    b.output(b.linear(x, num_classes, name="fc"), "out")
    for head, ref in aux.items():
        b.output(ref, head)
    return b.build()


register_model(
    "googlenet", family="googlenet", paper=SZEGEDY2015, torchvision="googlenet",
    # init_weights given (no FutureWarning) and False: trunc_normal_ costs seconds, and any weights
    # serve for the comparison, which copies them into the compiled graph.
    torchvision_kwargs={"aux_logits": False, "init_weights": False},
    ref_params=6_624_904,
    ref_source="torchvision GoogLeNet_Weights.IMAGENET1K_V1.meta['num_params'] (without the auxiliary heads)",
)(googlenet)
