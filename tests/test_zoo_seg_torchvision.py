"""Segmentation models: torchvision's FCN and DeepLabV3 on dilated ResNets, and PSPNet.

The end-to-end equality with torchvision (params, strict ``state_dict``, both
outputs in float64) of every registered variant, with and without the aux head,
is ``tests/test_zoo_torchvision.py``'s job; here: the dilated backbone, the heads
at sizes where each ASPP rate matters, the published counts and PSPNet.

Reference figures: torchvision 0.29 weights metadata (``num_params``, ``_ops`` in
GMACs at 520x520). Both describe the model *with* the aux head (the
``COCO_WITH_VOC_LABELS_V1`` weights are trained with ``aux_loss=True``).
"""
import pytest
import torch
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

import archlab
from archlab.analysis import analyze, mac_counts
from archlab.errors import ArchlabError
from archlab.lang import GraphBuilder
from archlab.torchio.compare import compare_modules, compare_with_torchvision
from archlab.torchio.peers import flop_counter_macs, torchvision_meta
from archlab.zoo import list_models, model_info
from archlab.zoo.seg_torchvision import deeplab_head

SEG_TV = ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"]

# torchvision weights meta (aux head included): num_params, _ops (GMACs at 520x520).
META = {
    "fcn_resnet50": (35_322_218, 152.717),
    "fcn_resnet101": (54_314_346, 232.738),
    "deeplabv3_resnet50": (42_004_074, 178.722),
    "deeplabv3_resnet101": (60_996_202, 258.743),
}
# Without the aux head (torchvision builder, aux_loss=False): sum(p.numel()) and GMACs at 520.
NO_AUX = {
    "fcn_resnet50": (32_957_013, 142.726),
    "deeplabv3_resnet50": (39_638_869, 168.731),
}
AUX_HEAD_PARAMS = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21  # FCNHead(1024, 21) = 2,365,205


# -- the dilated backbone ------------------------------------------------------------


def test_dilation_follows_torchvisions_make_layer():
    """[False, True, True]: a stage's first block keeps the previous dilation, later ones the new."""
    g = archlab.get_model("fcn_resnet50")
    conv2 = lambda stage, i: (g[f"backbone.layer{stage}.{i}.conv2"].attrs["stride"][0],  # noqa: E731
                              g[f"backbone.layer{stage}.{i}.conv2"].attrs["dilation"][0])
    assert conv2(2, 0) == (2, 1)
    assert [conv2(3, i) for i in range(6)] == [(1, 1)] + [(1, 2)] * 5
    assert [conv2(4, i) for i in range(3)] == [(1, 2), (1, 4), (1, 4)]
    assert g["backbone.layer3.0.downsample.0"].attrs["stride"] == (1, 1)
    assert g.shape("backbone.layer4.2.relu_2") == (2048, 65, 65)  # output stride 8 at 520


def test_dilated_classification_resnet_is_torchvisions():
    r = compare_with_torchvision("resnet50", input_shape=(3, 64, 64), num_classes=10,
                                 replace_stride_with_dilation=[True, True, True])
    assert r.params_equal and r.state_dict_keys_equal and r.max_abs_diff <= 1e-5


def test_basic_blocks_refuse_dilation_as_torchvision_does():
    with pytest.raises(ArchlabError, match="basic block"):
        archlab.get_model("resnet18", replace_stride_with_dilation=[False, True, True])


# -- heads -------------------------------------------------------------------------------


@pytest.mark.parametrize("rates", [(12, 24, 36), (2, 3, 5)])
def test_deeplab_head_is_torchvisions_where_every_rate_reaches_inside(rates):
    """At the 64x64 input of the generic test the 8x8 map makes a 3x3 conv dilated
    by 12+ a 1x1 (only the centre tap sees data); a 40x40 map exercises every tap."""
    b = GraphBuilder("head")
    x = b.input((32, 40, 40))
    with b.scope("classifier"):
        b.output(deeplab_head(b, x, 5, rates), "out")
    reference = torch.nn.Module()
    reference.classifier = DeepLabHead(32, 5, atrous_rates=rates)
    reference.forward = lambda x: reference.classifier(x)
    r = compare_modules("head", "torchvision:DeepLabHead", b.build(), reference)
    assert r.params_equal and r.state_dict_keys_equal and r.max_abs_diff <= 1e-5


def test_atrous_rates_are_configurable():
    g = archlab.get_model("deeplabv3_resnet50", atrous_rates=(6, 12, 18, 24))
    assert [g[f"classifier.0.convs.{i}.0"].attrs["dilation"][0] for i in (1, 2, 3, 4)] == [6, 12, 18, 24]
    assert g["classifier.0.convs.5.0"].op == "adaptive_avg_pool2d"
    assert g.shape("classifier.0.project.0") == (256, 65, 65)


# -- registry, counts ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SEG_TV)
def test_aux_option_equals_the_registered_aux_variant(name):
    a, b = archlab.get_model(name, aux_loss=True), archlab.get_model(name + "_aux")
    assert [(n.name, n.op, n.attrs) for n in a] == [(n.name, n.op, n.attrs) for n in b]
    assert list(b.outputs) == ["out", "aux"] and list(archlab.get_model(name).outputs) == ["out"]


@pytest.mark.parametrize("name", SEG_TV)
def test_outputs_are_upsampled_to_any_input_size(name):
    g = archlab.get_model(name + "_aux", input_shape=(3, 97, 130), num_classes=7)
    assert g.shape(g.outputs["out"]) == g.shape(g.outputs["aux"]) == (7, 97, 130)


@pytest.mark.parametrize("name", [*SEG_TV, "pspnet"])
def test_any_input_of_at_least_one_pixel_is_accepted(name):
    assert model_info(name).min_input_size(start=1) == 1  # torchvision's meta min_size (1, 1)


@pytest.mark.parametrize("name", SEG_TV)
def test_torchvision_weights_meta_describes_the_aux_variant(name):
    meta = torchvision_meta(name)
    assert (meta["num_params"], meta["gmacs"]) == META[name]
    g = archlab.get_model(name + "_aux")
    assert g.num_params() == META[name][0]
    assert round(mac_counts(g, "torchvision").total / 1e9, 3) == META[name][1]
    assert archlab.get_model(name).num_params() == META[name][0] - AUX_HEAD_PARAMS


@pytest.mark.parametrize("name", sorted(NO_AUX))
def test_counts_without_the_aux_head(name):
    g = archlab.get_model(name)
    assert g.num_params() == NO_AUX[name][0]
    assert round(mac_counts(g, "torchvision").total / 1e9, 3) == NO_AUX[name][1]


# -- PSPNet ---------------------------------------------------------------------------------

PSPNET_PARAMS = 48_957_802  # = sum(p.numel()) of the compiled module (checked below)


@pytest.mark.parametrize("hw", [(512, 512), (512, 1024)])
def test_pspnet_predicts_at_the_input_size(hw):
    g = archlab.get_model("pspnet", input_shape=(3, *hw))
    assert list(g.outputs) == ["out", "aux"]
    assert g.shape(g.outputs["out"]) == g.shape(g.outputs["aux"]) == (21, *hw)
    assert g.shape("backbone.layer4.2.relu_2") == (2048, hw[0] // 8, hw[1] // 8)


def test_pspnet_pyramid_has_bins_1_2_3_6_of_512_channels():
    g = archlab.get_model("pspnet")
    assert [g.shape(f"classifier.0.stages.{i}.1") for i in range(4)] == [(512, k, k) for k in (1, 2, 3, 6)]
    assert g.shape("classifier.0.concat") == (4096, 64, 64)
    assert g.shape("classifier.1") == (512, 64, 64)
    assert g.shape("aux_classifier.0") == (256, 64, 64)


def test_pspnet_counts_equal_torchs_on_the_compiled_module():
    g = archlab.get_model("pspnet", input_shape=(3, 64, 64))
    m = archlab.to_module(g)
    assert g.num_params() == sum(p.numel() for p in m.parameters()) == PSPNET_PARAMS
    assert mac_counts(g, "torchvision").total == flop_counter_macs(m, (3, 64, 64), meta=False)
    with torch.no_grad():
        y = m(torch.randn(1, 3, 64, 64))
    assert y["out"].shape == y["aux"].shape == (1, 21, 64, 64)


def test_pspnet_prediction_sees_the_whole_image():
    """The pyramid's 1-bin level reaches every pixel; the aux head's field is local."""
    a = analyze(archlab.get_model("pspnet", input_shape=(3, 512, 1024)))
    rows = {r["name"]: r for r in a.rows}
    assert rows["classifier.upsample"]["rf_global"]
    assert rows["classifier.upsample"]["output_shape"] == [21, 512, 1024]
    assert not rows["aux_classifier.upsample"]["rf_global"] and rows["aux_classifier.upsample"]["rf_size"] == 291
    assert a.totals["params"] == PSPNET_PARAMS


def test_seg_models_are_registered():
    assert set(list_models("fcn_*") + list_models("deeplabv3_*")) == {n + s for n in SEG_TV for s in ("", "_aux")}
    assert all(model_info(n).torchvision_kwargs["weights_backbone"] is None for n in list_models("*resnet*_aux"))
