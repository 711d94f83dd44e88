"""ResNet and its descendants: ResNeXt, Wide ResNet, SE-ResNet.

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
Node names follow torchvision's ``resnet.py`` so that its ``state_dict`` loads
as is. torchvision's bottleneck puts the downsampling stride in the 3x3 conv
("ResNet v1.5"); the paper's original puts it in the first 1x1 (``stride_in="1x1"``).

:func:`resnet_backbone` (stem + ``layer1``..``layer4``, with torchvision's
``replace_stride_with_dilation``) is shared with the segmentation models
(``seg_torchvision.py``, ``pspnet.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

from archlab.errors import ArchlabError
from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.registry import register_model

HE2016 = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv:1512.03385)"


@dataclass(frozen=True)
class BlockCfg:
    groups: int = 1  # ResNeXt cardinality
    width_per_group: int = 64  # 64 = plain ResNet; 4 for ResNeXt-32x4d; 128 for Wide ResNet-50-2
    stride_in: str = "3x3"  # where a bottleneck downsamples: "3x3" (torchvision, v1.5) or "1x1" (paper, v1)
    se_reduction: int | None = None  # squeeze-and-excitation reduction ratio (16 in SENet), None = no SE


def squeeze_excite(b: GraphBuilder, x: Ref, reduction: int) -> Ref:
    """Hu et al. 2018: global pool -> FC (C/r) -> ReLU -> FC (C) -> sigmoid -> scale.
    The FCs are 1x1 convs with bias (as timm's ``SEModule``), named ``se.fc1``/``se.fc2``."""
    c = x.channels
    with b.scope("se"):
        s = b.adaptive_avg_pool2d(x, 1, name="pool")
        s = b.relu(b.conv2d(s, c // reduction, 1, name="fc1"))
        s = b.sigmoid(b.conv2d(s, c, 1, name="fc2"))
        return b.mul(x, s, name="scale")


def _shortcut(b: GraphBuilder, x: Ref, out_channels: int, stride: int) -> Ref:
    if stride == 1 and x.channels == out_channels:
        return x
    with b.scope("downsample"):
        return conv_bn(b, x, out_channels, 1, stride=stride, padding=0, act=None, names=("0", "1"))


def basic_block(b: GraphBuilder, x: Ref, planes: int, stride: int, cfg: BlockCfg, dilation: int = 1) -> Ref:
    """Two 3x3 convs (ResNet-18/34)."""
    if dilation > 1:  # as torchvision's BasicBlock
        raise ArchlabError("dilation > 1 is not supported by the basic block (ResNet-18/34); use depth >= 50")
    out = conv_bn(b, x, planes, 3, stride=stride, names=("conv1", "bn1"))
    out = conv_bn(b, out, planes, 3, act=None, names=("conv2", "bn2"))
    if cfg.se_reduction:
        out = squeeze_excite(b, out, cfg.se_reduction)
    out = b.add(out, _shortcut(b, x, planes, stride))
    return b.relu(out)


def bottleneck(b: GraphBuilder, x: Ref, planes: int, stride: int, cfg: BlockCfg, dilation: int = 1) -> Ref:
    """1x1 reduce -> 3x3 (grouped for ResNeXt; dilated, padding = dilation) -> 1x1 expand (x4) (ResNet-50+)."""
    width = int(planes * (cfg.width_per_group / 64.0)) * cfg.groups
    s1, s3 = (stride, 1) if cfg.stride_in == "1x1" else (1, stride)
    out = conv_bn(b, x, width, 1, stride=s1, padding=0, names=("conv1", "bn1"))
    out = conv_bn(b, out, width, 3, stride=s3, groups=cfg.groups, dilation=dilation, names=("conv2", "bn2"))
    out = conv_bn(b, out, planes * 4, 1, padding=0, act=None, names=("conv3", "bn3"))
    if cfg.se_reduction:
        out = squeeze_excite(b, out, cfg.se_reduction)
    out = b.add(out, _shortcut(b, x, planes * 4, stride))
    return b.relu(out)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck}

# name: (block, blocks per stage)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def resnet_backbone(
    b: GraphBuilder,
    x: Ref,
    *,
    depth: int = 50,
    cfg: BlockCfg = BlockCfg(),
    replace_stride_with_dilation: tuple[bool, bool, bool] | list[bool] | None = None,
) -> list[Ref]:
    """The stem (``conv1``, ``bn1``, ``maxpool``) and stages ``layer1``..``layer4``
    in the current scope, as torchvision's ``ResNet`` names them.

    ``replace_stride_with_dilation[i]`` (for ``layer2``..``layer4``) follows
    torchvision's ``_make_layer``: the stage's first block keeps stride 1 and the
    dilation the previous stage ended with (its conv2 and downsample are not
    strided), and the stage's later blocks dilate their 3x3 by the running
    dilation, multiplied by 2 for each stride so replaced. ``[False, True, True]``
    gives output stride 8 with dilations 1, 2 (then 2, 4) in layer3 (layer4).

    Returns:
        The outputs of ``layer1``..``layer4`` (strides 4, 8, 16, 32 without dilation).

    Raises:
        ValueError: unknown depth or stride placement.
        ArchlabError: a flag list that is not three long, or dilation asked of
            basic blocks (torchvision's ``BasicBlock`` refuses it too).
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    if cfg.stride_in not in ("3x3", "1x1"):
        raise ValueError(f"stride_in must be '3x3' or '1x1', got {cfg.stride_in!r}")
    dilate = tuple(replace_stride_with_dilation or (False, False, False))
    if len(dilate) != 3:
        raise ArchlabError(f"replace_stride_with_dilation needs 3 flags (layer2..layer4), got {list(dilate)}")
    kind, layers = DEPTHS[depth]
    block = BLOCKS[kind]
    x = conv_bn(b, x, 64, 7, stride=2, padding=3, names=("conv1", "bn1"))
    x = b.max_pool2d(x, 3, stride=2, padding=1, name="maxpool")
    dilation, stages = 1, []
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        stride, previous_dilation = (2 if stage > 1 else 1), dilation
        if stage > 1 and dilate[stage - 2]:
            dilation, stride = dilation * stride, 1
        with b.scope(f"layer{stage}"):
            for i in range(n):
                with b.scope(i):
                    x = block(b, x, planes, stride if i == 0 else 1, cfg, previous_dilation if i == 0 else dilation)
        stages.append(x)
    return stages


def resnet(
    *,
    name: str = "resnet",
    depth: int = 50,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
    groups: int = 1,
    width_per_group: int = 64,
    stride_in: str = "3x3",
    se_reduction: int | None = None,
    replace_stride_with_dilation: tuple[bool, bool, bool] | list[bool] | None = None,
) -> Graph:
    """Build a ResNet-family graph.

    Args:
        depth: 18, 34, 50, 101 or 152 (Table 1 of He et al.).
        groups, width_per_group: ResNeXt / Wide ResNet widths (torchvision's meaning).
        stride_in: ``"3x3"`` (torchvision, v1.5) or ``"1x1"`` (the paper's v1).
        se_reduction: add squeeze-and-excitation to every block with this ratio.
        replace_stride_with_dilation: three flags for layer2..layer4, torchvision's
            option (see :func:`resnet_backbone`); bottleneck depths only.
    """
    cfg = BlockCfg(groups, width_per_group, stride_in, se_reduction)
    b = GraphBuilder(name, meta={"family": "resnet"})
    x = b.input(input_shape)
    x = resnet_backbone(b, x, depth=depth, cfg=cfg, replace_stride_with_dilation=replace_stride_with_dilation)[-1]
    x = b.adaptive_avg_pool2d(x, 1, name="avgpool")
    x = b.linear(b.flatten(x), num_classes, name="fc")
    b.output(x)
    return b.build()


_TV = "torchvision reference (built with weights=None)"
for _depth, _params in ((18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)):
    register_model(f"resnet{_depth}", family="resnet", paper=HE2016, torchvision=f"resnet{_depth}",
                   ref_params=_params, ref_source=_TV, defaults={"depth": _depth})(resnet)
    if _depth >= 50:
        register_model(
            f"resnet{_depth}_v1", family="resnet",
            paper=HE2016 + "; original v1: stride 2 in the first 1x1 of a downsampling bottleneck",
            ref_params=_params, ref_source="same weights as torchvision's v1.5 (stride placement has no parameters)",
            defaults={"depth": _depth, "stride_in": "1x1"},
        )(resnet)

register_model(
    "resnext50_32x4d", family="resnext",
    paper="Xie et al., Aggregated Residual Transformations for Deep Neural Networks, CVPR 2017 (arXiv:1611.05431)",
    torchvision="resnext50_32x4d", ref_params=25_028_904, ref_source=_TV,
    defaults={"depth": 50, "groups": 32, "width_per_group": 4},
)(resnet)
register_model(
    "wide_resnet50_2", family="wide_resnet",
    paper="Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016 (arXiv:1605.07146)",
    torchvision="wide_resnet50_2", ref_params=68_883_240, ref_source=_TV,
    defaults={"depth": 50, "width_per_group": 128},
)(resnet)
register_model(
    "se_resnet50", family="senet",
    paper="Hu, Shen & Sun, Squeeze-and-Excitation Networks, CVPR 2018 (arXiv:1709.01507)",
    ref_params=28_088_024,
    ref_source="SENet paper Table 2/§6: SE-ResNet-50 ~28.1M (ResNet-50's 25,557,032 + 2,530,992 for the SE FCs, r=16, biases "
    "included); timm seresnet50 reports 28.09M",
    defaults={"depth": 50, "se_reduction": 16},
)(resnet)
