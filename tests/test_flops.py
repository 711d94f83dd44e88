"""MAC counts under each named convention equal the peer tool that defines it, to the unit."""
import pytest
import torch

import archlab
from archlab.analysis.counts import mac_counts, param_counts
from archlab.torchio.peers import flop_counter_macs, fvcore_macs, torchvision_meta
from archlab.zoo import list_models, model_info

ALL = list_models()
TV = [n for n in ALL if model_info(n).torchvision]


def _torchvision_on_meta(name):
    import torchvision

    info = model_info(name)
    with torch.device("meta"):
        return torchvision.models.get_model(info.torchvision, weights=None, **info.torchvision_kwargs)


@pytest.mark.parametrize("name", TV)
def test_torchvision_convention_equals_flop_counter_mode(name):
    info = model_info(name)
    g = archlab.get_model(name)
    assert mac_counts(g, "torchvision").total == flop_counter_macs(_torchvision_on_meta(name), info.input_shape)


@pytest.mark.parametrize("name", TV)
def test_torchvision_convention_reproduces_torchvision_metadata(name):
    info = model_info(name)
    meta = torchvision_meta(info.torchvision)
    g = archlab.get_model(name)
    twins = [n for n in TV if n != name and model_info(n).torchvision == info.torchvision]
    if meta["num_params"] != g.num_params() and any(model_info(t).ref_params == meta["num_params"] for t in twins):
        pytest.skip(f"torchvision's metadata describes the variant with the auxiliary head, checked as {twins}")
    macs = mac_counts(g, "torchvision").total
    assert round(macs / 1e9, 3) == meta["gmacs"]


@pytest.mark.parametrize("name", [n for n in ALL if not model_info(n).torchvision])
def test_torchvision_convention_on_models_torchvision_lacks(name):
    """No torchvision twin: FlopCounterMode runs on archlab's own compiled module."""
    info = model_info(name)
    side = max(64, info.min_input_size())
    shape = (info.input_shape[0], side, side)
    g = archlab.get_model(name, input_shape=shape)
    assert mac_counts(g, "torchvision").total == flop_counter_macs(archlab.to_module(g), shape, meta=False)


@pytest.mark.parametrize("name", ALL)
def test_fvcore_convention_equals_fvcore_total(name):
    info = model_info(name)
    side = max(64, info.min_input_size())
    shape = (info.input_shape[0], side, side)
    g = archlab.get_model(name, input_shape=shape)
    total, _ = fvcore_macs(archlab.to_module(g), shape)
    assert mac_counts(g, "fvcore").total == total


def test_resnet_v1_matches_he_et_al_table_1():
    # He et al. 2016, Table 1: 3.8 / 7.6 / 11.3 x 10^9 multiply-adds (one significant decimal).
    for depth, paper in ((50, 3.8), (101, 7.6), (152, 11.3)):
        g = archlab.get_model(f"resnet{depth}_v1")
        assert abs(mac_counts(g, "torchvision").total / 1e9 - paper) < 0.06
    # SENet paper, Table 2 (re-implementation): ResNet-50 3.86 GFLOPs (MACs).
    assert round(mac_counts(archlab.get_model("resnet50_v1"), "torchvision").total / 1e9, 2) == 3.86


def test_lecture_1x1_bottleneck_example():
    """28x28x192 -> 32 5x5 filters: ~120.4M MACs; with a 16-channel 1x1 reduction: ~12.4M."""
    b = archlab.GraphBuilder()
    x = b.input((192, 28, 28))
    b.output(b.conv2d(x, 32, 5, padding=2, bias=False))
    assert mac_counts(b.build()).total == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400

    b = archlab.GraphBuilder()
    x = b.input((192, 28, 28))
    b.output(b.conv2d(b.conv2d(x, 16, 1, bias=False), 32, 5, padding=2, bias=False))
    assert mac_counts(b.build()).total == 28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16 == 12_443_648


def test_vgg16_lecture_table_params():
    """CS231n VGG16 table (weights only, biases omitted): conv1_1 (3*3*3)*64 = 1,728; conv2_1
    (3*3*64)*128 = 73,728; FC6 7*7*512*4096 = 102,760,448; total with biases 138,357,544."""
    g = archlab.get_model("vgg16")
    params, _ = param_counts(g)
    assert params.per_node["features.0"] == 1_728 + 64
    assert params.per_node["features.5"] == 73_728 + 128
    assert params.per_node["classifier.0"] == 102_760_448 + 4096
    assert params.total == 138_357_544


def test_full_convention_counts_every_op():
    b = archlab.GraphBuilder()
    x = b.input((4, 8, 8))
    y = b.relu(b.batch_norm2d(b.conv2d(x, 4, 3, padding=1)))
    b.output(b.max_pool2d(b.add(y, x), 2))
    g = b.build()
    n = 4 * 8 * 8
    assert mac_counts(g, "torchvision").total == n * 4 * 9
    assert mac_counts(g, "fvcore").total == n * 4 * 9 + 2 * n
    # conv + bias, BN (scale+shift), ReLU, add, max-pool (4 outputs x 2x2 window each per channel)
    assert mac_counts(g, "full").total == n * 4 * 9 + n + 2 * n + n + n + (n // 4) * 4


def test_unknown_convention_is_an_error():
    with pytest.raises(archlab.ArchlabError, match="unknown FLOP convention 'tflops'"):
        mac_counts(archlab.get_model("resnet18"), "tflops")
