"""Classic segmentation nets: FCN-32s/16s/8s on VGG16, SegNet and U-Net.

Shapes come from shape inference alone; parameters and MACs are held to the
compiled module (``sum(p.numel())`` and ``FlopCounterMode``) at small inputs.

Reference parameter counts are sums of the layer shapes of the authors' nets
(no paper prints an exact count): Caffe ``voc-fcn{32,16,8}s`` at 21 classes (the
FCN paper's Table 1 rounds the VGG16 net to 134M), Caffe SegNet-VGG16 at 11 CamVid
classes (the paper quotes 29.5M), U-Net Fig. 1 with 1 input channel and 2 classes.
"""
from __future__ import annotations

import pytest
import torch
import torchvision

import archlab
from archlab.analysis import analyze, mac_counts
from archlab.analysis.measure import saved_tensor_bytes
from archlab.analysis.memory import activation_memory, training_memory
from archlab.analysis.receptive_field import receptive_fields
from archlab.errors import ArchlabError
from archlab.torchio.peers import flop_counter_macs
from archlab.zoo import model_info
from archlab.zoo.unet import valid_sides

# model: (canonical input, output node, output shape at the canonical input)
CANONICAL = {
    "fcn32s": ((3, 512, 512), "score", (21, 512, 512)),
    "fcn16s": ((3, 512, 512), "score", (21, 512, 512)),
    "fcn8s": ((3, 512, 512), "score", (21, 512, 512)),
    "segnet": ((3, 512, 512), "conv1_1_D", (11, 512, 512)),
    "unet": ((1, 572, 572), "score", (2, 388, 388)),  # Fig. 1 of Ronneberger et al.
    "unet_same": ((1, 512, 512), "score", (2, 512, 512)),
}
MODELS = list(CANONICAL)
REF_PARAMS = {
    "fcn32s": 136_152_917,  # 134,346,581 + upscore 21*21*64*64
    "fcn16s": 134_815_994,
    "fcn8s": 134_489_759,
    "segnet": 29_449_355,
    "unet": 31_030_658,
    "unet_same": 31_030_658,
}
# torchvision-convention MACs at the canonical input (conv and transposed-conv weights only).
REF_MACS = {
    "fcn32s": 190_194_856_704,
    "fcn16s": 190_281_890_448,
    "fcn8s": 190_366_583_952,
    "segnet": 161_564_590_080,
    "unet": 150_428_424_448,
    "unet_same": 192_384_335_872,
}
# Small inputs for the torch runs (U-Net valid: its smallest side, 188 -> 4).
SMALL = {"fcn32s": (3, 32, 32), "fcn16s": (3, 32, 32), "fcn8s": (3, 32, 32), "segnet": (3, 45, 61),
         "unet": (3, 188, 188), "unet_same": (3, 64, 48)}
# The Caffe geometry runs VGG16 on a 100-pixel-padded image (~20 GMACs even for a tiny
# input): only FCN-8s, whose crops are the most involved, runs it in torch; the others
# run the same-size geometry (same layers and parameters, no crops).
CFG = {"fcn32s": {"padding": "same"}, "fcn16s": {"padding": "same"}}
NUM_CLASSES = 5


def _out(g):
    return g[g.outputs["out"]]


@pytest.fixture(scope="module", params=MODELS)
def compiled(request):
    """(name, graph, CPU module) at the model's small input and 5 classes."""
    name = request.param
    torch.manual_seed(0)
    g = archlab.get_model(name, input_shape=SMALL[name], num_classes=NUM_CLASSES, **CFG.get(name, {}))
    return name, g, archlab.to_module(g).eval()


# -- shapes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_canonical_input_gives_the_documented_output(name):
    shape, node, out = CANONICAL[name]
    assert model_info(name).input_shape == shape
    g = archlab.get_model(name)
    assert g.outputs["out"] == node and g[node].shape == out


@pytest.mark.parametrize("name", [n for n in MODELS if n != "unet"])
def test_output_is_as_large_as_a_512_input(name):
    g = archlab.get_model(name, input_shape=(3, 512, 512), num_classes=7)
    assert _out(g).shape == (7, 512, 512)


def test_valid_unet_maps_572_to_388_and_loses_184_pixels():
    assert _out(archlab.get_model("unet", input_shape=(3, 572, 572))).shape == (2, 388, 388)
    for side in valid_sides(4):
        assert _out(archlab.get_model("unet", input_shape=(1, side, side))).shape == (2, side - 184, side - 184)


def test_valid_unet_sides_are_16k_plus_124():
    sides = valid_sides(30)
    assert sides[:3] == [188, 204, 220] and 572 in sides
    assert all((s - 124) % 16 == 0 for s in sides)
    assert model_info("unet").min_input_size() == 188


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_fcn_caffe_geometry_takes_any_size(name):
    for h, w in [*((s, s + 5) for s in range(1, 70, 3)), (500, 500), (333, 517)]:
        assert _out(archlab.get_model(name, input_shape=(3, h, w))).shape == (21, h, w)


def test_segnet_unpools_odd_sizes_back():
    # CamVid's 360x480: pools (rounding up) give 23 rows before pool5, as the Caffe prototxt's upsample_h.
    g = archlab.get_model("segnet", input_shape=(3, 360, 480))
    assert g["features.33"].shape == (512, 23, 30) and g["upsample5"].shape == (512, 23, 30)
    assert _out(archlab.get_model("segnet", input_shape=(3, 45, 61))).shape == (11, 45, 61)
    assert model_info("segnet").min_input_size(start=1) == 1
    assert _out(archlab.get_model("segnet", input_shape=(3, 5, 3))).shape == (11, 5, 3)


# -- alignment (receptive fields) ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("padding", ["caffe", "same"])
def test_fcn_fusions_and_score_are_aligned_with_the_input(name, padding):
    """The Caffe crop offsets (5, 9; 19, 27, 31) put each score unit's field on its own pixel."""
    g = archlab.get_model(name, padding=padding)
    rf = receptive_fields(g)
    assert all(rf[n].aligned for n in ("fuse_pool4", "fuse_pool3") if n in rf)
    out = rf[g.outputs["out"]]
    assert out.aligned and out.jump == (1, 1) and out.start == (0, 0)


def test_unet_centre_crops_are_aligned():
    rf = receptive_fields(archlab.get_model("unet"))
    assert all(rf[f"up{level}.concat"].aligned for level in (1, 2, 3, 4))


# -- sizes that do not fit ----------------------------------------------------------------------
@pytest.mark.parametrize("name, side, words", [
    ("fcn8s", 500, ["max_pool2d 'features.16'", "'features.15' (125x125, odd)", "divisible by 32"]),
    ("fcn32s", 48, ["max_pool2d 'features.30'", "'features.29' (3x3, odd)", "divisible by 32"]),
    ("unet", 512, ["max_pool2d 'down3.pool'", "'down3.relu2' (121x121, odd)", "16k + 124"]),
    ("unet", 574, ["max_pool2d 'down2.pool'", "'down2.relu2' (281x281, odd)", "16k + 124"]),
    ("unet_same", 100, ["max_pool2d 'down3.pool'", "'down3.relu2' (25x25, odd)", "divisible by 16"]),
])
def test_unsupported_size_names_the_pool_and_its_input(name, side, words):
    cfg = {"padding": "same"} if name.startswith("fcn") else {}
    with pytest.raises(ArchlabError) as e:
        archlab.get_model(name, input_shape=(3, side, side), **cfg)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_too_small_valid_unet_names_the_conv_that_no_longer_fits():
    with pytest.raises(ArchlabError, match=r"conv2d 'up3.conv2': got input 256x2x2"):
        archlab.get_model("unet", input_shape=(1, 172, 172))


# -- parameters, MACs, the compiled module --------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_param_count_is_the_reference(name):
    assert archlab.get_model(name).num_params() == REF_PARAMS[name] == model_info(name).ref_params


@pytest.mark.parametrize("name", MODELS)
def test_macs_at_the_canonical_input(name):
    assert mac_counts(archlab.get_model(name), "torchvision").total == REF_MACS[name]


def test_param_count_equals_the_module(compiled):
    _, g, module = compiled
    assert sum(p.numel() for p in module.parameters()) == g.num_params()


def test_macs_equal_flop_counter_mode(compiled):
    name, g, module = compiled
    assert mac_counts(g, "torchvision").total == flop_counter_macs(module, SMALL[name], meta=False)


def test_module_runs_and_gives_class_maps(compiled):
    name, g, module = compiled
    with torch.no_grad():
        y = module(torch.randn(1, *SMALL[name]))
    assert tuple(y.shape) == (1, *_out(g).shape)
    h, w = SMALL[name][1:]
    assert y.shape[1:] == ((NUM_CLASSES, h - 184, w - 184) if name == "unet" else (NUM_CLASSES, h, w))


def test_vgg16_weights_load_by_name():
    """FCN's convs are torchvision vgg16's ``features``; SegNet's encoder vgg16_bn's."""
    with torch.device("meta"):
        fcn = archlab.to_module(archlab.get_model("fcn8s")).state_dict()
        segnet = archlab.to_module(archlab.get_model("segnet")).state_dict()
        for ours, tv in ((fcn, torchvision.models.vgg16()), (segnet, torchvision.models.vgg16_bn())):
            features = {k: v.shape for k, v in tv.state_dict().items() if k.startswith("features.")}
            assert {k: ours[k].shape for k in features} == features
    assert fcn["fc6.weight"].shape == (4096, 512, 7, 7)  # torchvision's classifier.0.weight, reshaped


# -- analyzers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_analyze_runs(name):
    a = analyze(archlab.get_model(name))
    assert a.totals["params"] == REF_PARAMS[name] and a.totals["macs"] == REF_MACS[name]


def test_crop_is_a_view_and_unpooling_saves_no_second_copy_of_the_indices():
    g = archlab.get_model("segnet", input_shape=(3, 19, 23))
    measured = saved_tensor_bytes(archlab.to_module(g), torch.randn(2, 3, 19, 23))
    assert training_memory(g, batch=2, optimizer="sgd").activations == measured
    assert activation_memory(archlab.get_model("fcn8s")).alias_of["score"] == "upscore8"
