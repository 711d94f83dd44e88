"""PSPNet: Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017
(arXiv:1612.01105).

A dilated ResNet at output stride 8 feeds the pyramid pooling module: the
``layer4`` features are average-pooled to 1x1, 2x2, 3x3 and 6x6 bins, each level
reduced by a 1x1 conv to 2048/4 = 512 channels (BN, ReLU) and upsampled back,
and the four levels are concatenated with the features (Figure 3 of the paper).
A 3x3 conv (512, BN, ReLU, dropout 0.1) and a 1x1 classifier follow, and the
prediction is upsampled bilinearly to the input. The deep-supervision loss of
§3.3 is the auxiliary :func:`~archlab.zoo.seg_torchvision.fcn_head` on ``layer3``
(output ``aux``), as in torchvision's segmentation models.

Differences from the paper's network, stated rather than hidden:

* The backbone is torchvision's ResNet-50 (v1.5 bottlenecks, stride in the 3x3,
  7x7 stem) with ``replace_stride_with_dilation=[False, True, True]``; the
  paper's ResNet has a deep stem of three 3x3 convs and Caffe's v1 bottlenecks.
* Upsampling uses ``align_corners=False`` (the Caffe ``Interp`` layer of the
  original aligns corners).
* For a layer4 map whose side is not a multiple of 3 or 6 (64x64 at a 512x512
  input), ``adaptive_avg_pool2d``'s bins overlap and vary in size rather than
  forming a regular window; shapes and MACs are unaffected.

Node names: ``backbone.*`` (torchvision's ResNet), ``classifier.0.stages.{i}.{0,1,2}``
(pool, conv, BN of pyramid level i), ``classifier.{1,2,4,5}`` (3x3 conv, BN,
dropout, 1x1 classifier), ``aux_classifier.{0,1,3,4}`` (as torchvision's ``FCNHead``).

Accepted inputs: any H x W >= 1 x 1 (adaptive pooling to 6 bins of a map smaller
than 6 repeats values; ``min_input_size()`` is 1, searched from 1).
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model
from archlab.zoo.seg_torchvision import image_pooling, segmentation_net

PSPNET_PAPER = "Zhao, Shi, Qi, Wang & Jia, Pyramid Scene Parsing Network, CVPR 2017 (arXiv:1612.01105)"
PYRAMID_BINS = (1, 2, 3, 6)  # §3.2: bin sizes of the four pyramid levels


def pyramid_pooling(b: GraphBuilder, x: Ref, bins: tuple[int, ...] = PYRAMID_BINS) -> Ref:
    """The pyramid pooling module in the current scope: ``x`` concatenated with one
    :func:`image_pooling` level per bin size (``stages.{i}``), each reducing to
    ``C / len(bins)`` channels (512 for 2048 and four levels)."""
    with b.scope("stages"):
        levels = []
        for i, k in enumerate(bins):
            with b.scope(i):
                levels.append(image_pooling(b, x, x.channels // len(bins), bins=k))
    return b.concat([x, *levels], name="concat")


def pspnet(
    *,
    name: str = "pspnet",
    depth: int = 50,
    num_classes: int = 21,
    input_shape: tuple[int, int, int] = (3, 512, 512),
    bins: tuple[int, ...] = PYRAMID_BINS,
    aux_loss: bool = True,
) -> Graph:
    """Build PSPNet (see the module docstring for what differs from the paper).

    Args:
        depth: ResNet depth of the backbone (50 here; the paper also uses 101, 152, 269).
        num_classes: classes including the background (21 for Pascal VOC).
        input_shape: (C, H, W); any H, W >= 1.
        bins: pyramid level sizes (the paper's 1, 2, 3, 6).
        aux_loss: add the auxiliary head on ``layer3`` as output ``aux``.

    Returns:
        A graph with output ``out`` (and ``aux``), each ``num_classes`` x H x W.
    """
    def head(b: GraphBuilder, c5: Ref) -> Ref:
        with b.scope(0):
            x = pyramid_pooling(b, c5, tuple(bins))
        x = conv_bn(b, x, 512, 3, padding=1, names=("1", "2"))
        x = b.dropout(x, 0.1, name="4")
        return b.conv2d(x, num_classes, 1, name="5")

    return segmentation_net(name, "pspnet", depth, num_classes, input_shape, aux_loss, head)


register_model(
    "pspnet", family="pspnet", paper=PSPNET_PAPER, input_shape=(3, 512, 512),
    ref_params=None,
    ref_source="no published count for this torchvision-backbone variant; tests hold the IR's count to "
    "sum(p.numel()) of the compiled module",
    defaults={"depth": 50},
)(pspnet)
