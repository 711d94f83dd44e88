"""torchvision's semantic segmentation models on dilated ResNets: FCN and DeepLabV3.

* FCN: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
  Segmentation", CVPR 2015 (arXiv:1411.4038), in torchvision's form: a ResNet at
  output stride 8 and one 3x3 conv head, not the paper's VGG with skip fusions.
* DeepLabV3: Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for
  Semantic Image Segmentation", 2017 (arXiv:1706.05587), with ASPP.

Both use torchvision's ``resnet50``/``resnet101`` with
``replace_stride_with_dilation=[False, True, True]`` (output stride 8), a head on
``layer4`` and, with ``aux_loss=True``, an auxiliary :func:`fcn_head` on
``layer3``; each prediction is upsampled bilinearly (``align_corners=False``) to
the input size. Node names are torchvision's ``state_dict`` keys
(``backbone.layer4.2.conv3``, ``classifier.0.convs.0.0``, ``aux_classifier.0``)
and the compiled module returns ``{"out": ..., "aux": ...}`` like torchvision's
``OrderedDict``.

Accepted inputs: any H x W >= 1 x 1 (torchvision's ``min_size`` is (1, 1)); in
training mode the ASPP pooling branch's batch norm sees one value per channel
and image, so it needs a batch of 2 or more (as torchvision's).
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model
from archlab.zoo.resnet import resnet_backbone

FCN_PAPER = "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015 (arXiv:1411.4038)"
DEEPLABV3_PAPER = ("Chen, Papandreou, Schroff & Adam, Rethinking Atrous Convolution for Semantic Image Segmentation, "
                   "2017 (arXiv:1706.05587)")
OUTPUT_STRIDE_8 = (False, True, True)  # replace_stride_with_dilation for layer2..layer4, as torchvision's builders
ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead default (the paper's rates for output stride 8)


def dilated_resnet(b: GraphBuilder, x: Ref, *, depth: int,
                   replace_stride_with_dilation: tuple[bool, bool, bool] = OUTPUT_STRIDE_8) -> list[Ref]:
    """torchvision's ResNet (v1.5 bottlenecks) under the scope ``backbone``; returns
    the outputs of ``layer1``..``layer4`` (``layer3`` and ``layer4`` at stride 8 by default)."""
    with b.scope("backbone"):
        return resnet_backbone(b, x, depth=depth, replace_stride_with_dilation=replace_stride_with_dilation)


def fcn_head(b: GraphBuilder, x: Ref, num_classes: int, *, channels: int | None = None, dropout: float = 0.1) -> Ref:
    """torchvision's ``FCNHead`` in the current scope: 3x3 conv to ``channels``
    (default ``in_channels // 4``) ``0`` -> BN ``1`` -> ReLU -> dropout ``3`` ->
    1x1 conv with bias ``4`` to ``num_classes``."""
    x = conv_bn(b, x, channels or x.channels // 4, 3, padding=1, names=("0", "1"))
    x = b.dropout(x, dropout, name="3")
    return b.conv2d(x, num_classes, 1, name="4")


def image_pooling(b: GraphBuilder, x: Ref, out_channels: int, *, bins: int = 1) -> Ref:
    """Adaptive average pool to ``bins`` x ``bins`` ``0`` -> 1x1 conv ``1`` -> BN ``2``
    -> ReLU -> bilinear upsample back to ``x``'s size (torchvision's ``ASPPPooling``
    for ``bins=1``; one level of PSPNet's pyramid otherwise)."""
    p = b.adaptive_avg_pool2d(x, bins, name="0")
    p = conv_bn(b, p, out_channels, 1, padding=0, names=("1", "2"))
    return b.upsample(p, x, mode="bilinear")


def aspp(b: GraphBuilder, x: Ref, rates: tuple[int, ...], out_channels: int = 256) -> Ref:
    """Atrous spatial pyramid pooling (torchvision's ``ASPP``) in the current scope:
    branches ``convs.0`` (1x1), ``convs.1..n`` (3x3 dilated by each rate, padding =
    rate) and ``convs.n+1`` (image pooling), concatenated and projected by a 1x1
    conv ``project.0`` -> BN ``project.1`` -> ReLU -> dropout 0.5 ``project.3``."""
    with b.scope("convs"):
        with b.scope(0):
            branches = [conv_bn(b, x, out_channels, 1, padding=0, names=("0", "1"))]
        for i, rate in enumerate(rates, start=1):
            with b.scope(i):
                branches.append(conv_bn(b, x, out_channels, 3, padding=rate, dilation=rate, names=("0", "1")))
        with b.scope(len(rates) + 1):
            branches.append(image_pooling(b, x, out_channels))
    with b.scope("project"):
        y = conv_bn(b, b.concat(branches), out_channels, 1, padding=0, names=("0", "1"))
        return b.dropout(y, 0.5, name="3")


def deeplab_head(b: GraphBuilder, x: Ref, num_classes: int, rates: tuple[int, ...]) -> Ref:
    """torchvision's ``DeepLabHead``: ASPP ``0`` -> 3x3 conv 256 ``1`` -> BN ``2`` ->
    ReLU -> 1x1 conv with bias ``4``."""
    with b.scope(0):
        x = aspp(b, x, rates)
    x = conv_bn(b, x, 256, 3, padding=1, names=("1", "2"))
    return b.conv2d(x, num_classes, 1, name="4")


def segmentation_net(name: str, family: str, depth: int, num_classes: int, input_shape: tuple[int, int, int],
                     aux_loss: bool, head) -> Graph:
    """Dilated ResNet (output stride 8) -> ``head(b, layer4)`` in scope ``classifier``
    -> bilinear upsampling to the input (output ``out``); with ``aux_loss``, an
    ``FCNHead`` on ``layer3`` in scope ``aux_classifier`` (output ``aux``)."""
    b = GraphBuilder(name, meta={"family": family})
    image = b.input(input_shape)
    _, _, c4, c5 = dilated_resnet(b, image, depth=depth)
    with b.scope("classifier"):
        out = b.upsample(head(b, c5), image, mode="bilinear", name="upsample")
    b.output(out, "out")
    if aux_loss:
        with b.scope("aux_classifier"):
            aux = b.upsample(fcn_head(b, c4, num_classes), image, mode="bilinear", name="upsample")
        b.output(aux, "aux")
    return b.build()


def fcn_resnet(
    *,
    name: str = "fcn_resnet",
    depth: int = 50,
    num_classes: int = 21,
    input_shape: tuple[int, int, int] = (3, 520, 520),
    aux_loss: bool = False,
) -> Graph:
    """torchvision's ``fcn_resnet50`` / ``fcn_resnet101``.

    Args:
        depth: 50 or 101 (any bottleneck depth builds).
        num_classes: classes including the background (21 for Pascal VOC).
        input_shape: (C, H, W); any H, W >= 1 (see the module docstring).
        aux_loss: add the auxiliary ``FCNHead`` on ``layer3`` as output ``aux``.

    Returns:
        A graph with output ``out`` (and ``aux``), each ``num_classes`` x H x W.
    """
    return segmentation_net(name, "fcn", depth, num_classes, input_shape, aux_loss,
                         lambda b, x: fcn_head(b, x, num_classes))


def deeplabv3_resnet(
    *,
    name: str = "deeplabv3_resnet",
    depth: int = 50,
    num_classes: int = 21,
    input_shape: tuple[int, int, int] = (3, 520, 520),
    aux_loss: bool = False,
    atrous_rates: tuple[int, ...] = ASPP_RATES,
) -> Graph:
    """torchvision's ``deeplabv3_resnet50`` / ``deeplabv3_resnet101``.

    Args:
        depth: 50 or 101 (any bottleneck depth builds).
        num_classes: classes including the background (21 for Pascal VOC).
        input_shape: (C, H, W); any H, W >= 1 (see the module docstring).
        aux_loss: add the auxiliary ``FCNHead`` on ``layer3`` as output ``aux``.
        atrous_rates: dilation of each 3x3 ASPP branch (one branch per rate).

    Returns:
        A graph with output ``out`` (and ``aux``), each ``num_classes`` x H x W.
    """
    return segmentation_net(name, "deeplabv3", depth, num_classes, input_shape, aux_loss,
                         lambda b, x: deeplab_head(b, x, num_classes, tuple(atrous_rates)))


# name: (builder, paper, depth, torchvision weights meta num_params (aux head included)).
# The aux head, FCNHead(1024, 21), has 1024*256*9 + 2*256 + 256*21 + 21 = 2,365,205 parameters.
_AUX_HEAD_PARAMS = 2_365_205
_SEGMENTATION = {
    "fcn_resnet50": (fcn_resnet, FCN_PAPER, 50, 35_322_218),
    "fcn_resnet101": (fcn_resnet, FCN_PAPER, 101, 54_314_346),
    "deeplabv3_resnet50": (deeplabv3_resnet, DEEPLABV3_PAPER, 50, 42_004_074),
    "deeplabv3_resnet101": (deeplabv3_resnet, DEEPLABV3_PAPER, 101, 60_996_202),
}
for _name, (_builder, _paper, _depth, _meta_params) in _SEGMENTATION.items():
    for _aux in (False, True):
        register_model(
            _name + ("_aux" if _aux else ""), family=_name.split("_")[0], paper=_paper,
            input_shape=(3, 520, 520), torchvision=_name,
            torchvision_kwargs={"weights_backbone": None, "aux_loss": _aux},
            ref_params=_meta_params if _aux else _meta_params - _AUX_HEAD_PARAMS,
            ref_source=(f"torchvision {_name} weights meta num_params (counts the aux head)" if _aux else
                        f"torchvision {_name}(weights=None, weights_backbone=None, aux_loss=False); its weights' meta "
                        f"num_params {_meta_params:,} includes the aux head ({_AUX_HEAD_PARAMS:,})"),
            defaults={"depth": _depth, "aux_loss": _aux},
        )(_builder)
