"""SegNet: a VGG16 encoder and a mirrored decoder that unpools with the encoder's
max-pooling indices.

Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017 (arXiv:1511.00561). The layers
are those of the authors' Caffe ``segnet_train.prototxt`` (SegNet-VGG16):

* encoder: VGG16's 13 3x3 convs, each followed by batch norm and ReLU, named as
  torchvision's ``vgg16_bn`` ``features.N`` (so its ImageNet weights load by name;
  the paper initialises the encoder from VGG16), and 5 2x2/2 max pools that keep
  their argmax indices (``features.6``, ``13``, ``23``, ``33``, ``43``);
* decoder: the mirror image, deepest stage first (Caffe names): ``upsample5``
  (``max_unpool2d`` with the indices of ``features.43``) then ``conv5_3_D``,
  ``conv5_2_D``, ``conv5_1_D``, each with batch norm (``*_bn``) and ReLU, ... down to
  ``conv1_2_D``; each stage's last conv goes back to the width its encoder stage
  started from (512 -> 256 after stage 4, ...);
* ``conv1_1_D``: a 3x3 conv to ``num_classes`` (no norm, no ReLU), fed to the
  softmax loss.

The pools round up (Caffe's pooling, which the prototxt's ``upsample_h`` of 23 for
a 360x480 CamVid image confirms) and every unpooling restores its pool's input
size exactly, so any input size works (down to 1x1: a ceil-mode 2x2 pool of a
1-pixel map gives 1 pixel, as in PyTorch) and the output ``conv1_1_D`` is
``num_classes x H x W``.

Parameters: 29,449,355 at the default 11 CamVid classes (conv weights and biases
29,433,483, batch-norm scales and shifts 15,872). The paper quotes 29.5M for the
encoder-decoder; at its 37 SUN RGB-D classes our count is 29,464,357 (29.5M).
"""
from __future__ import annotations

from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.registry import register_model
from archlab.zoo.vgg import CFGS

BADRINARAYANAN2017 = (
    "Badrinarayanan, Kendall & Cipolla, SegNet: A Deep Convolutional Encoder-Decoder Architecture for "
    "Image Segmentation, TPAMI 2017 (arXiv:1511.00561)"
)


def encoder_stages(cfg: list[int | str]) -> list[list[int]]:
    """Split a VGG cfg (``[64, 64, "M", 128, ...]``) into the conv widths of each
    pooled stage: ``[[64, 64], [128, 128], ...]``."""
    stages: list[list[int]] = [[]]
    for v in cfg:
        if v == "M":
            stages.append([])
        else:
            stages[-1].append(v)
    return [s for s in stages if s]


def segnet(
    *,
    name: str = "segnet",
    num_classes: int = 11,
    input_shape: tuple[int, int, int] = (3, 512, 512),
    cfg: list[int | str] | None = None,
) -> Graph:
    """Build SegNet.

    Args:
        num_classes: output maps (11 for CamVid, as the authors' Caffe model; 37 for
            SUN RGB-D).
        input_shape: ``(C, H, W)``; any ``H, W >= 1`` (the unpoolings restore odd sizes).
        cfg: the encoder as a VGG cfg list (default VGG16, ``vgg.CFGS["D"]``); every
            stage must end with ``"M"``. The decoder mirrors it.

    Returns:
        A graph whose output ``out`` (node ``conv1_1_D``) is ``num_classes x H x W``.
    """
    stages = encoder_stages(CFGS["D"] if cfg is None else cfg)
    b = GraphBuilder(name, meta={"family": "segnet"})
    x = b.input(input_shape)
    pools: list[Ref] = []
    widths_in: list[int] = []  # channels entering each encoder stage
    with b.scope("features"):
        i = 0  # torchvision's vgg16_bn ``features`` index of the next layer
        for widths in stages:
            widths_in.append(x.channels)
            for w in widths:
                x = b.batch_norm2d(b.conv2d(x, w, 3, padding=1, name=i), name=i + 1)
                x = b.relu(x, name=i + 2)
                i += 3
            x = b.max_pool2d_with_indices(x, 2, stride=2, ceil_mode=True, name=i)
            pools.append(x)
            i += 1
    for s in range(len(stages), 0, -1):  # the decoder: stage 5 first
        widths = stages[s - 1]
        x = b.max_unpool2d(x, pools[s - 1], name=f"upsample{s}")
        # Mirror of the encoder stage: widths reversed, the last conv back to the stage's input width.
        outs = [*reversed(widths[:-1]), widths_in[s - 1]]
        for j, w in zip(range(len(widths), 0, -1), outs):
            conv = f"conv{s}_{j}_D"
            if s == 1 and j == 1:
                x = b.conv2d(x, num_classes, 3, padding=1, name=conv)
            else:
                x = b.batch_norm2d(b.conv2d(x, w, 3, padding=1, name=conv), name=f"{conv}_bn")
                x = b.relu(x, name=f"relu{s}_{j}_D")
    b.output(x)
    return b.build()


register_model(
    "segnet", family="segnet", paper=BADRINARAYANAN2017, input_shape=(3, 512, 512), ref_params=29_449_355,
    ref_source="sum of the layer shapes of the authors' Caffe SegNet-VGG16 (segnet_train.prototxt) at 11 CamVid "
    "classes; the paper quotes 29.5M (29,464,357 at its 37 SUN RGB-D classes)",
)(segnet)
