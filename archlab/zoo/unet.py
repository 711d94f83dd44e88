"""U-Net: a contracting path of 3x3 convs and 2x2 pools, and an expanding path of
2x2 up-convolutions concatenated with the cropped features of the same level.

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597), Fig. 1 and Sec. 2:

* contracting path: 4 levels of two unpadded 3x3 convs with ReLU (64, 128, 256,
  512 channels) and a 2x2/2 max pool, then two 3x3 convs of 1024 (``center``);
  dropout (0.5) "at the end of the contracting path", placed as in the authors'
  released Caffe net: after level 4's convs (which the skip also reads) and after
  ``center``;
* expanding path, per level: a 2x2/2 up-convolution halving the channels, the
  level's encoder features centre-cropped to its size and concatenated after it,
  and two 3x3 convs with ReLU;
* a 1x1 conv to ``num_classes`` (2 in the paper).

The released Caffe net differs slightly from the paper: a ReLU after each
up-convolution and 128 channels out of the last one; this builder follows the paper.

Node names: ``down{1..4}.conv1`` / ``conv2`` / ``pool``, ``center.conv1`` /
``conv2``, ``up{4..1}.upconv`` / ``crop`` / ``concat`` / ``conv1`` / ``conv2`` and
``score``.

Accepted input sizes (``padding=``):

* ``"valid"`` (the paper's, canonical 572x572 -> 388x388): each level loses 4 pixels
  to its convs and every 2x2 pool must see an even size, so that the crops stay
  aligned and tiles join seamlessly (Sec. 2). That holds exactly for sides
  ``16k + 124`` with ``k >= 4``: 188, 204, ..., 556, 572, 588, ...; the output side
  is the input side minus 184. Other sides fail at the first pool given an odd
  size, naming it and its input.
* ``"same"`` (``unet_same``): the convs pad 1, the output is as large as the input
  and no crop is needed; sides must be multiples of 16.
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.fcn_vgg import check_even_pool
from archlab.zoo.registry import register_model

RONNEBERGER2015 = (
    "Ronneberger, Fischer & Brox, U-Net: Convolutional Networks for Biomedical Image Segmentation, "
    "MICCAI 2015 (arXiv:1505.04597)"
)

WIDTHS = (64, 128, 256, 512, 1024)  # Fig. 1: channels of the 4 levels and the centre
PADDINGS = ("valid", "same")


def valid_sides(n: int = 8, *, levels: int = 4) -> list[int]:
    """The first ``n`` input sides the valid (unpadded) U-Net accepts: every pool
    input even and every map at least 1 pixel, i.e. ``16k + 124`` for k >= 4
    with 4 levels (188, 204, ...; 572 is k = 28)."""
    sides, side = [], 1
    while len(sides) < n:
        size, ok = side, True
        for _ in range(levels):
            size -= 4
            ok &= size > 0 and size % 2 == 0
            size //= 2
        size -= 4  # the centre convs
        for _ in range(levels):
            size = 2 * size - 4  # up-convolution, then two 3x3 convs
            ok &= size > 0
        if ok:
            sides.append(side)
        side += 1
    return sides


def double_conv(b: GraphBuilder, x: Ref, width: int, pad: int) -> Ref:
    """Two 3x3 convs, each followed by a ReLU (``conv1``, ``conv2`` in the current scope)."""
    x = b.relu(b.conv2d(x, width, 3, padding=pad, name="conv1"), name="relu1")
    return b.relu(b.conv2d(x, width, 3, padding=pad, name="conv2"), name="relu2")


def unet(
    *,
    name: str = "unet",
    num_classes: int = 2,
    input_shape: tuple[int, int, int] = (1, 572, 572),
    padding: str = "valid",
    widths: tuple[int, ...] = WIDTHS,
    dropout: float = 0.5,
) -> Graph:
    """Build U-Net.

    Args:
        num_classes: output maps (2 in the paper: cell and background).
        input_shape: ``(C, H, W)``; the paper's tiles are 1x572x572 (grey levels).
            ``padding="valid"``: sides ``16k + 124``, k >= 4 (see :func:`valid_sides`);
            ``padding="same"``: sides divisible by 16.
        padding: ``"valid"`` (the paper: unpadded convs, crops before each concat)
            or ``"same"`` (padded convs, output as large as the input, no crops).
        widths: channels of each level, the last being the centre (paper: 64 ... 1024).
        dropout: probability of the two dropouts ending the contracting path
            (0 leaves them out).

    Returns:
        A graph whose output ``out`` (node ``score``) is ``num_classes x H' x W'``,
        ``H' = H - 184`` for ``"valid"`` (388 for 572) and ``H`` for ``"same"``.

    Raises:
        ValueError: an unknown ``padding``.
        ShapeError: a side the network cannot take: the pool that would halve an
            odd size is named with its input, or (too small) the conv whose kernel
            no longer fits.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    pad = 1 if padding == "same" else 0
    levels = len(widths) - 1
    accepted = ("sides 16k + 124 with k >= 4 (188, 204, ..., 572, ...)" if pad == 0 and levels == 4
                else "sides for which every pool input is even (see unet.valid_sides)" if pad == 0
                else f"sides divisible by {2 ** levels}")
    b = GraphBuilder(name, meta={"family": "unet", "padding": padding})
    x = b.input(input_shape)
    skips: list[Ref] = []
    for level, width in enumerate(widths[:-1], start=1):
        with b.scope(f"down{level}"):
            x = double_conv(b, x, width, pad)
            if dropout and level == levels:
                x = b.dropout(x, dropout, name="drop")
            skips.append(x)
            check_even_pool(x, f"down{level}.pool", f"{name} (padding={padding!r})",
                            f"{accepted}; got {input_shape[1]}x{input_shape[2]}")
            x = b.max_pool2d(x, 2, stride=2, name="pool")
    with b.scope("center"):
        x = double_conv(b, x, widths[-1], pad)
        if dropout:
            x = b.dropout(x, dropout, name="drop")
    for level in range(levels, 0, -1):
        with b.scope(f"up{level}"):
            x = b.conv_transpose2d(x, widths[level - 1], 2, stride=2, name="upconv")
            skip = skips[level - 1]
            if pad == 0:
                skip = b.crop2d(skip, x, name="crop")
            x = double_conv(b, b.concat([x, skip], name="concat"), widths[level - 1], pad)
    b.output(b.conv2d(x, num_classes, 1, name="score"))
    return b.build()


# Fig. 1 counted by hand (1 input channel, 2 classes): convs 3x3 with bias, up-convs
# 2x2 with bias, 1x1 score. Padding changes no parameter.
_PARAMS = 31_030_658
_SOURCE = "sum of the layer shapes of Fig. 1 of the paper (1 input channel, 2 classes; no published exact count)"
register_model(
    "unet", family="unet", paper=RONNEBERGER2015, input_shape=(1, 572, 572),
    ref_params=_PARAMS, ref_source=_SOURCE,
)(unet)
register_model(
    "unet_same", family="unet", paper=RONNEBERGER2015 + "; with padded convs (output as large as the input)",
    input_shape=(1, 512, 512), ref_params=_PARAMS, ref_source=_SOURCE, defaults={"padding": "same"},
)(unet)
register_model(
    "unet_small", family="unet",
    paper=RONNEBERGER2015 + "; padded convs, 3 levels of 16-32-64 channels and a 128-channel centre "
    "(a CPU-trainable size for archlab train)",
    input_shape=(3, 64, 64), defaults={"padding": "same", "widths": (16, 32, 64, 128)},
)(unet)
