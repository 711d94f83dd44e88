"""The ``seg`` search space: encoder-decoder segmentation networks.

Every sampled network has the same skeleton; the decisions pick its parts.

* **Stem**: one k x k conv-BN-ReLU from the image to ``base_width`` channels at
  full resolution (encoder level 0).
* **Encoder**: ``depth`` stages; stage ``i`` (1-based) has width
  ``min(WIDTH_CAP, round8(base_width * width_growth ** i))``. The first
  ``log2(output_stride)`` stages halve the resolution with a 2x2 max pool
  (one that records its indices when the decoder unpools: SegNet); the later
  ones keep it and dilate their k x k convs instead (2, 4, ... as DeepLab's
  ``replace_stride_with_dilation``). Each stage is one block of the chosen type.
* **Context head** on the deepest features: none, ASPP (DeepLabV3; 1x1 branch,
  one dilated 3x3 branch per rate, image pooling, 1x1 projection; as many
  channels as the features) or pyramid pooling (PSPNet bins 1, 2, 3, 6,
  followed by a 3x3 conv-BN-ReLU back to the features' width).
* **Decoder**: one stage per pooled encoder stage, deepest first. A stage brings
  the features to the next finer level with the width of that level's encoder
  features: ``bilinear`` / ``nearest`` (1x1 conv-BN-ReLU projection, then
  ``upsample`` to the skip's size), ``transposed`` (2x2 stride-2 transposed
  conv, BN, ReLU) or ``unpool`` (projection, then ``max_unpool2d`` with the
  indices of the encoder's pool at that level); merges the encoder features of
  that level (``skip``: none, concat, add) and applies one block.
* **Classifier**: a 1x1 conv with bias to ``num_classes`` at full resolution:
  the output is ``num_classes x H x W``.

Blocks (``block``; output channels = the stage width, k x k convs with
padding ``dilation * (k - 1) / 2``): ``plain`` (conv-BN-ReLU twice, U-Net),
``basic`` (ResNet basic block, 1x1 conv-BN projection shortcut when the
channels change) and ``bottleneck`` (1x1 to ``max(4, width // 4)``, k x k,
1x1 back to the width, projection shortcut when needed). The zoo's ResNet
blocks are fixed to 3x3 kernels and the basic block refuses dilation, hence
these local ones.

Decisions, in suggestion order (all categorical):

==================  ===========================================  =================
name                choices                                      note
==================  ===========================================  =================
``depth``           3, 4, 5                                      encoder stages
``output_stride``   8, 16, 32                                    used as ``min(output_stride, 2 ** depth)``
``base_width``      16, 24, 32                                   stem channels
``width_growth``    1.5, 2.0                                     per stage
``block``           plain, basic, bottleneck
``kernel_size``     3, 5                                         every k x k conv
``skip``            none, concat, add                            encoder-decoder links
``upsample``        bilinear, nearest, transposed, unpool
``head``            none, aspp, ppm
``aspp_rates``      "1,2,3", "2,4,6", "3,6,9", "6,12,18"          only when ``head == "aspp"``
==================  ===========================================  =================

So a trial has 9 distinct parameters, 10 when its head is ASPP. The choice
lists never depend on earlier answers (Optuna requires one distribution per
name in a study); an ``output_stride`` above ``2 ** depth`` is clamped, so a
few parameter sets give the same network.

Inputs: :func:`make_seg_space` takes ``num_classes`` and ``input_shape``; H and
W must be multiples of ``2 ** max(DEPTHS)`` = 32, so every pooled size is
exact and every decoder stage meets its skip at the same size. The registered
``seg`` space function uses 21 classes (PASCAL VOC) at 3 x 64 x 64; a search
builds it again at its data's size and class count (``factory``).

Reward: ``seg`` is registered with ``task="seg"``: ``archlab search`` trains
every candidate briefly on ``--data`` (default: the embedded ``scenes`` at
32 x 32) and its validation mIoU is the reward (:mod:`archlab.search.trained`).
Note: the ASPP and pyramid-pooling branches
batch-normalize 1 x 1 pooled maps, so training needs batches of 2 or more (as
torchvision's DeepLabV3); inference runs at any batch size.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from archlab.errors import ArchlabError
from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from archlab.zoo.pspnet import pyramid_pooling
from archlab.zoo.seg_torchvision import aspp
from search_spaces import register_space

DEPTHS = (3, 4, 5)
OUTPUT_STRIDES = (8, 16, 32)
BASE_WIDTHS = (16, 24, 32)
WIDTH_GROWTHS = (1.5, 2.0)
BLOCKS = ("plain", "basic", "bottleneck")
KERNEL_SIZES = (3, 5)
SKIPS = ("none", "concat", "add")
UPSAMPLES = ("bilinear", "nearest", "transposed", "unpool")
HEADS = ("none", "aspp", "ppm")
ASPP_RATES = ("1,2,3", "2,4,6", "3,6,9", "6,12,18")  # strings: Optuna categoricals hold scalars only
PPM_BINS = (1, 2, 3, 6)  # PSPNet's pyramid (Zhao et al. 2017, §3.2)
WIDTH_CAP = 256  # widest stage, to keep candidates trainable on a CPU

SEG_INPUT_SHAPE = (3, 64, 64)
SEG_NUM_CLASSES = 21


def stage_widths(base_width: int, growth: float, depth: int) -> list[int]:
    """Channels of encoder levels 0 (stem) .. ``depth``: ``base * growth**i``
    rounded to a multiple of 8, at most :data:`WIDTH_CAP`."""
    return [min(WIDTH_CAP, max(8, int(round(base_width * growth ** i / 8)) * 8)) for i in range(depth + 1)]


# -- blocks ---------------------------------------------------------------------------
def _kxk(b: GraphBuilder, x: Ref, out: int, k: int, dilation: int, *, act: str | None = "relu",
         names: tuple[str, str]) -> Ref:
    return conv_bn(b, x, out, k, padding=dilation * (k - 1) // 2, dilation=dilation, act=act, names=names)


def _shortcut(b: GraphBuilder, x: Ref, out: int) -> Ref:
    if x.channels == out:
        return x
    with b.scope("downsample"):
        return conv_bn(b, x, out, 1, padding=0, act=None, names=("0", "1"))


def plain_block(b: GraphBuilder, x: Ref, out: int, k: int, dilation: int = 1) -> Ref:
    """conv-BN-ReLU twice (U-Net's double conv)."""
    x = _kxk(b, x, out, k, dilation, names=("conv1", "bn1"))
    return _kxk(b, x, out, k, dilation, names=("conv2", "bn2"))


def basic_block(b: GraphBuilder, x: Ref, out: int, k: int, dilation: int = 1) -> Ref:
    """ResNet's basic block with k x k (dilated) convs and a projection shortcut."""
    y = _kxk(b, x, out, k, dilation, names=("conv1", "bn1"))
    y = _kxk(b, y, out, k, dilation, act=None, names=("conv2", "bn2"))
    return b.relu(b.add(y, _shortcut(b, x, out)))


def bottleneck_block(b: GraphBuilder, x: Ref, out: int, k: int, dilation: int = 1) -> Ref:
    """ResNet's bottleneck with ``out`` output channels: 1x1 to ``max(4, out // 4)``,
    k x k (dilated), 1x1 back to ``out``; projection shortcut when needed."""
    mid = max(4, out // 4)
    y = conv_bn(b, x, mid, 1, padding=0, names=("conv1", "bn1"))
    y = _kxk(b, y, mid, k, dilation, names=("conv2", "bn2"))
    y = conv_bn(b, y, out, 1, padding=0, act=None, names=("conv3", "bn3"))
    return b.relu(b.add(y, _shortcut(b, x, out)))


BLOCK_FNS: dict[str, Callable[..., Ref]] = {"plain": plain_block, "basic": basic_block, "bottleneck": bottleneck_block}


# -- the network ------------------------------------------------------------------------
def _context(b: GraphBuilder, x: Ref, head: str, rates: tuple[int, ...]) -> Ref:
    if head == "aspp":
        with b.scope("aspp"):
            return aspp(b, x, rates, out_channels=x.channels)
    if head == "ppm":
        with b.scope("ppm"):
            y = pyramid_pooling(b, x, PPM_BINS)
            return conv_bn(b, y, x.channels, 3, padding=1, names=("project", "project_bn"))
    return x


def _up(b: GraphBuilder, x: Ref, skip: Ref, pool: Ref | None, out: int, kind: str) -> Ref:
    """``x`` brought to ``skip``'s level with ``out`` channels (see the module docstring)."""
    if kind == "transposed":
        x = b.conv_transpose2d(x, out, 2, stride=2, bias=False, name="up")
        return b.relu(b.batch_norm2d(x, name="up_bn"))
    x = conv_bn(b, x, out, 1, padding=0, names=("proj", "proj_bn"))
    if kind == "unpool":
        return b.max_unpool2d(x, pool, name="up")
    return b.upsample(x, skip, mode=kind, name="up")


def seg_graph(cfg: dict[str, Any], *, num_classes: int = SEG_NUM_CLASSES,
              input_shape: tuple[int, int, int] = SEG_INPUT_SHAPE, name: str = "seg") -> Graph:
    """The network of one configuration (the decisions of the module docstring,
    by name; ``aspp_rates`` only needed for an ASPP head).

    Raises:
        ArchlabError: an input whose H or W is not a multiple of ``2 ** depth``.
    """
    depth, k, kind = int(cfg["depth"]), int(cfg["kernel_size"]), cfg["upsample"]
    c, h, w = input_shape
    if h % 2 ** depth or w % 2 ** depth:
        raise ArchlabError(f"seg space: input {h}x{w} must be a multiple of 2**depth = {2 ** depth} in H and W")
    pooled = int(math.log2(min(int(cfg["output_stride"]), 2 ** depth)))  # stages that halve the size
    widths = stage_widths(int(cfg["base_width"]), float(cfg["width_growth"]), depth)
    block = BLOCK_FNS[cfg["block"]]
    rates = tuple(int(r) for r in cfg.get("aspp_rates", "1,2,3").split(","))
    b = GraphBuilder(name, meta={"family": "seg_space", "config": dict(cfg)})
    x = b.input(input_shape)
    with b.scope("stem"):
        x = _kxk(b, x, widths[0], k, 1, names=("conv", "bn"))
    feats, pools = [x], []  # encoder features of levels 0 .. pooled-1; the pools between them
    for i in range(1, depth + 1):
        with b.scope(f"enc{i}"):
            dilation = 1
            if i <= pooled:
                pool = (b.max_pool2d_with_indices(x, 2, name="pool") if kind == "unpool"
                        else b.max_pool2d(x, 2, name="pool"))
                pools.append(pool)
                x = pool
            else:
                dilation = 2 ** (i - pooled)
            x = block(b, x, widths[i], k, dilation)
        if i < pooled:
            feats.append(x)
    x = _context(b, x, cfg["head"], rates)
    for level in reversed(range(pooled)):
        skip = feats[level]
        with b.scope(f"dec{level}"):
            x = _up(b, x, skip, pools[level], widths[level], kind)
            if cfg["skip"] == "concat":
                x = b.concat([x, skip], name="merge")
            elif cfg["skip"] == "add":
                x = b.add(x, skip, name="merge")
            x = block(b, x, widths[level], k)
    b.output(b.conv2d(x, num_classes, 1, name="classifier"))
    return b.build()


def sample_config(trial: Any) -> dict[str, Any]:
    """The decisions of one trial, suggested in the documented order."""
    cfg = {
        "depth": trial.suggest_categorical("depth", DEPTHS),
        "output_stride": trial.suggest_categorical("output_stride", OUTPUT_STRIDES),
        "base_width": trial.suggest_categorical("base_width", BASE_WIDTHS),
        "width_growth": trial.suggest_categorical("width_growth", WIDTH_GROWTHS),
        "block": trial.suggest_categorical("block", BLOCKS),
        "kernel_size": trial.suggest_categorical("kernel_size", KERNEL_SIZES),
        "skip": trial.suggest_categorical("skip", SKIPS),
        "upsample": trial.suggest_categorical("upsample", UPSAMPLES),
        "head": trial.suggest_categorical("head", HEADS),
    }
    if cfg["head"] == "aspp":
        cfg["aspp_rates"] = trial.suggest_categorical("aspp_rates", ASPP_RATES)
    return cfg


def make_seg_space(*, num_classes: int = SEG_NUM_CLASSES,
                   input_shape: tuple[int, int, int] = SEG_INPUT_SHAPE) -> Callable[[Any], Graph]:
    """A ``seg`` space function for ``num_classes`` classes at ``input_shape``.

    Raises:
        ArchlabError: a non-positive class count, or H or W not a multiple of
            ``2 ** max(DEPTHS)`` (then some depth could not be built).
    """
    shape = tuple(int(s) for s in input_shape)
    unit = 2 ** max(DEPTHS)
    if num_classes <= 0 or len(shape) != 3 or min(shape) <= 0 or shape[1] % unit or shape[2] % unit:
        raise ArchlabError(f"seg space needs num_classes > 0 and a (C, H, W) input with H, W multiples of {unit}; "
                           f"got num_classes={num_classes}, input_shape={input_shape}")

    def space(trial: Any) -> Graph:
        """One encoder-decoder network (see :mod:`search_spaces.seg`)."""
        return seg_graph(sample_config(trial), num_classes=num_classes, input_shape=shape)  # type: ignore[arg-type]

    return space


seg_space = make_seg_space()
register_space("seg", description="encoder-decoder segmentation nets (U-Net/SegNet/DeepLab/PSPNet parts); "
               "reward: validation mIoU after brief training", task="seg", factory=make_seg_space)(seg_space)

__all__ = ["make_seg_space", "seg_graph", "sample_config", "seg_space", "stage_widths"]
