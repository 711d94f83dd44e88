"""FCN-32s, FCN-16s and FCN-8s: fully convolutional VGG16 for semantic segmentation.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015 (arXiv:1411.4038); the layers are those of the authors'
Caffe nets ``voc-fcn32s``, ``voc-fcn16s`` and ``voc-fcn8s`` (fcn.berkeleyvision.org).

VGG16's 13 convs keep torchvision's ``features.N`` names (``features.0`` = conv1_1,
pools at 4, 9, 16 = pool3, 23 = pool4, 30 = pool5), so ``vgg16`` ImageNet weights
load by name; its classifier becomes convolutions: ``fc6`` (7x7, 4096; torchvision's
``classifier.0.weight.view(4096, 512, 7, 7)``) and ``fc7`` (1x1, 4096), each with
ReLU and dropout, then ``score_fr`` (1x1, one map per class). Transposed convs
without bias (the paper's bilinear-initialised "deconvolutions") upsample the
scores; FCN-16s and -8s first fuse (add) 1x1 class scores of pool4 and pool3.

Two geometries (``padding=``):

* ``"caffe"`` (default): the paper's. conv1_1 pads 100 pixels and the pools round
  up (Caffe), so every input of 1x1 or more fits; the score maps are aligned by
  the nets' fixed crop offsets (5 for pool4, 9 for pool3, and 19 / 27 / 31 to crop
  the final upsampling to the input for 32s / 16s / 8s), whatever the input size.
* ``"same"``: every conv pads to keep its size (fc6 pads 3) and each transposed
  conv upsamples exactly (k4 s2 p1, k16 s8 p4, k32 s16 p8, k64 s32 p16), with no
  crops; the input's height and width must be multiples of 32. Other sizes fail
  at the first pool given an odd size, naming it and its input.

Either way the output ``out`` (node ``score``; for ``"same"`` the last upsampling,
which keeps its Caffe name so weights move between the geometries) is
``num_classes x H x W`` for an ``H x W`` input.
"""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.registry import register_model
from archlab.zoo.vgg import CFGS

LONG2015 = (
    "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, "
    "CVPR 2015 (arXiv:1411.4038); Caffe nets voc-fcn32s/16s/8s"
)

# torchvision vgg16 feature indices of the pools whose scores FCN fuses.
POOL_INDEX = {"pool3": 16, "pool4": 23}

# Output stride -> (skips fused, deepest first; final upsampling name, kernel, stride;
# Caffe crop offset of that upsampling to the input). The nets' upsampling names.
VARIANTS: dict[int, tuple[tuple[str, ...], str, int, int, int]] = {
    32: ((), "upscore", 64, 32, 19),
    16: (("pool4",), "upscore16", 32, 16, 27),
    8: (("pool4", "pool3"), "upscore8", 16, 8, 31),
}
# skip -> (the 2x upsampling it is added to, Caffe crop offset of its score map)
SKIP_FUSION = {"pool4": ("upscore2", 5), "pool3": ("upscore_pool4", 9)}
PADDINGS = ("caffe", "same")


def check_even_pool(x: Ref, pool: str, model: str, accepted: str) -> None:
    """Raise when a 2x2/2 pool would halve an odd size, after which the decoder's
    maps no longer line up with the encoder's (FCN ``padding="same"``, U-Net).

    Raises:
        ShapeError: naming the pool, its input node and their sizes.
    """
    _, h, w = x.shape
    if h % 2 or w % 2:
        raise ShapeError(
            f"max_pool2d '{pool}' would halve '{x.name}' ({h}x{w}, odd) to {h // 2}x{w // 2}, "
            f"which the decoder cannot bring back to {h}x{w}; {model} accepts {accepted}"
        )


def fcn(
    *,
    name: str = "fcn8s",
    output_stride: int = 8,
    num_classes: int = 21,
    input_shape: tuple[int, int, int] = (3, 512, 512),
    padding: str = "caffe",
    dropout: float = 0.5,
) -> Graph:
    """Build FCN-``output_stride``s on VGG16.

    Args:
        output_stride: 32, 16 or 8: the stride of the finest score map fused (FCN-32s
            upsamples ``score_fr`` alone; 16s adds pool4's scores, 8s pool4's and pool3's).
        num_classes: score maps (21 for PASCAL VOC: 20 classes and background).
        input_shape: ``(C, H, W)``. ``padding="caffe"`` takes any ``H, W >= 1``;
            ``padding="same"`` needs ``H`` and ``W`` divisible by 32.
        padding: ``"caffe"`` (the paper's 100-pixel pad and crop offsets) or
            ``"same"`` (size-preserving convs, exact upsampling, no crops).
        dropout: probability of the dropouts after fc6 and fc7.

    Returns:
        A graph whose output ``out`` (node ``score``, or the last upsampling for
        ``"same"``) is ``num_classes x H x W``.

    Raises:
        ValueError: an unknown ``output_stride`` or ``padding``.
        ShapeError: ``padding="same"`` with a side not divisible by 32, naming the
            pool that would halve an odd size and the node feeding it.
    """
    if output_stride not in VARIANTS:
        raise ValueError(f"output_stride must be one of {sorted(VARIANTS)}, got {output_stride!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    caffe = padding == "caffe"
    skips, final, final_k, final_s, final_offset = VARIANTS[output_stride]
    b = GraphBuilder(name, meta={"family": "fcn", "padding": padding})
    image = x = b.input(input_shape)
    taps: dict[str, Ref] = {}
    with b.scope("features"):
        i = 0  # torchvision's vgg16 ``features`` index of the next layer
        for v in CFGS["D"]:
            if v == "M":
                if not caffe:
                    got = f"got {input_shape[1]}x{input_shape[2]}; padding='caffe' takes any size"
                    check_even_pool(x, f"features.{i}", f"{name} with padding='same'", f"sides divisible by 32 ({got})")
                # Caffe pools round up; with 100 pixels of padding that is what makes any size fit.
                x = b.max_pool2d(x, 2, stride=2, ceil_mode=caffe, name=i)
                taps.update({k: x for k, idx in POOL_INDEX.items() if idx == i})
                i += 1
            else:
                pad = 100 if caffe and i == 0 else 1
                x = b.relu(b.conv2d(x, v, 3, padding=pad, name=i), name=i + 1)
                i += 2
    x = b.relu(b.conv2d(x, 4096, 7, padding=0 if caffe else 3, name="fc6"), name="relu6")
    x = b.dropout(x, dropout, name="drop6")
    x = b.dropout(b.relu(b.conv2d(x, 4096, 1, name="fc7"), name="relu7"), dropout, name="drop7")
    x = b.conv2d(x, num_classes, 1, name="score_fr")
    for skip in skips:
        up_name, offset = SKIP_FUSION[skip]
        up = b.conv_transpose2d(x, num_classes, 4, stride=2, padding=0 if caffe else 1, bias=False, name=up_name)
        score = b.conv2d(taps[skip], num_classes, 1, name=f"score_{skip}")
        if caffe:
            score = b.crop2d(score, up, offset=(offset, offset), name=f"score_{skip}c")
        x = b.add(up, score, name=f"fuse_{skip}")
    x = b.conv_transpose2d(x, num_classes, final_k, stride=final_s, padding=0 if caffe else (final_k - final_s) // 2,
                           bias=False, name=final)
    if caffe:
        x = b.crop2d(x, image, offset=(final_offset, final_offset), name="score")
    b.output(x)
    return b.build()


# Parameters at 21 classes, from the Caffe nets' layer shapes: VGG16 convs 14,714,688;
# fc6 102,764,544; fc7 16,781,312; score_fr 86,037; score_pool4 10,773; score_pool3
# 5,397; bias-free deconvs 21 x 21 x k x k (upscore2 / upscore_pool4 7,056 each,
# upscore8 112,896, upscore16 451,584, upscore 1,806,336).
_PARAMS = {32: 136_152_917, 16: 134_815_994, 8: 134_489_759}
_SOURCE = (
    "sum of the layer shapes of the authors' Caffe voc-fcn{}s net (fcn.berkeleyvision.org) at 21 classes; "
    "the paper's Table 1 quotes 134M for FCN-VGG16, which leaves out the upsampling filters "
    "(fcn32s without its 1,806,336 is 134,346,581)"
)
for _stride, _params in _PARAMS.items():
    register_model(
        f"fcn{_stride}s", family="fcn", paper=LONG2015, input_shape=(3, 512, 512),
        ref_params=_params, ref_source=_SOURCE.format(_stride), defaults={"output_stride": _stride},
    )(fcn)
