"""DenseNet and MobileNet facts that the torchvision equivalence test does not cover.

MobileNet v1 has no torchvision counterpart, so it is checked against the figures
of Howard et al., "MobileNets", arXiv:1704.04861 (Tables 1, 6 and 7). The
parameter counts are exact (every trainable parameter, batch norm included);
the paper rounds to 0.1M and counts no batch-norm parameters (21,888 at alpha=1).
"""
import pytest
import torch

import archlab
from archlab.zoo import get_model


def mult_adds(graph) -> int:
    """Multiply-accumulates of the convs and FCs, the paper's "Mult-Adds"."""
    total = 0
    for n in graph:
        if n.op == "conv2d":
            kh, kw = n.attrs["kernel_size"]
            c_in = graph[n.inputs[0]].shape[0]
            c_out, h, w = n.shape
            total += c_out * h * w * (c_in // n.attrs["groups"]) * kh * kw
        elif n.op == "linear":
            total += graph[n.inputs[0]].shape[0] * n.shape[0]
    return total


# -- MobileNet v1 ------------------------------------------------------------------

def test_mobilenet_v1_param_count():
    # Paper Table 1/4: 1.0 MobileNet-224 has 4.2M parameters. Exactly: 3,185,088 conv
    # weights + 1,025,000 FC weights and biases = 4,210,088 (the paper's 4.2M),
    # + 21,888 batch-norm scales and shifts.
    assert get_model("mobilenet_v1").num_params() == 4_231_976


@pytest.mark.parametrize(
    "alpha, params, paper_millions",
    [  # Table 6: 0.75 / 0.5 / 0.25 MobileNet-224 have 2.6M / 1.3M / 0.5M parameters
        (0.75, 2_585_560, 2.6),
        (0.5, 1_331_592, 1.3),
        (0.25, 470_072, 0.5),
    ],
)
def test_mobilenet_v1_width_multiplier_param_count(alpha, params, paper_millions):
    n = get_model("mobilenet_v1", width_mult=alpha).num_params()
    assert n == params
    assert round(n / 1e6, 1) == paper_millions


@pytest.mark.parametrize(
    "alpha, size, paper_mult_adds_millions",
    [  # Table 6 (width multiplier at 224) and Table 7 (resolution at alpha = 1)
        (1.0, 224, 569), (0.75, 224, 325), (0.5, 224, 149), (0.25, 224, 41),
        (1.0, 192, 418), (1.0, 160, 290), (1.0, 128, 186),
    ],
)
def test_mobilenet_v1_mult_adds_match_paper(alpha, size, paper_mult_adds_millions):
    graph = get_model("mobilenet_v1", width_mult=alpha, input_shape=(3, size, size))
    # within 1M: the paper's rounding is loose (568.7M -> "569", but 290.7M -> "290" at 160)
    assert abs(mult_adds(graph) / 1e6 - paper_mult_adds_millions) < 1


def test_mobilenet_v1_last_depthwise_conv_has_stride_1():
    # Table 1 prints "Conv dw / s2" for 7x7x1024 -> 7x7x1024: a typo; the map stays 7x7.
    graph = get_model("mobilenet_v1")
    assert graph.shape("features.12.pw.relu") == (1024, 7, 7)
    assert graph.shape("features.13.dw.0") == (1024, 7, 7)


def test_mobilenet_v1_state_dict_names():
    keys = list(archlab.to_module(get_model("mobilenet_v1", input_shape=(3, 32, 32))).state_dict())
    assert keys[:2] == ["features.0.0.weight", "features.0.1.weight"]
    assert "features.13.dw.0.weight" in keys and "features.13.pw.1.running_var" in keys
    assert keys[-2:] == ["classifier.weight", "classifier.bias"]


def test_mobilenet_v1_compiles_and_runs_at_224():
    module = archlab.to_module(get_model("mobilenet_v1"))
    with torch.no_grad():
        y = module(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000)
    assert torch.isfinite(y).all()
    assert sum(p.numel() for p in module.parameters()) == 4_231_976


# -- MobileNet v2 / v3 options torchvision also has --------------------------------

@pytest.mark.parametrize(
    "name, width_mult",
    [("mobilenet_v2", 0.5), ("mobilenet_v2", 1.4), ("mobilenet_v3_large", 0.75), ("mobilenet_v3_small", 0.5)],
)
def test_mobilenet_width_mult_matches_torchvision(name, width_mult):
    import torchvision

    reference = torchvision.models.get_model(name, weights=None, width_mult=width_mult)
    assert get_model(name, width_mult=width_mult).num_params() == sum(p.numel() for p in reference.parameters())


def test_mobilenet_v3_batch_norm_is_tensorflow_style():
    # torchvision: BatchNorm2d(eps=0.001, momentum=0.01); momentum matters only in training.
    module = archlab.to_module(get_model("mobilenet_v3_small", input_shape=(3, 32, 32)))
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 0.001 and m.momentum == 0.01 for m in norms)


# -- DenseNet -----------------------------------------------------------------------

def test_densenet121_dense_block_channels():
    graph = get_model("densenet121")
    # 64 stem channels + 6 layers x growth rate 32
    assert graph.shape("features.denseblock1.concat") == (64 + 6 * 32, 56, 56)
    # the transition halves channels and resolution
    assert graph.shape("features.transition1.pool") == (128, 28, 28)
    # 512 + 16 x 32 before the classifier (Huang et al. Table 1)
    assert graph.shape("features.norm5") == (1024, 7, 7)


def test_densenet_layer_sees_every_earlier_feature_in_order():
    graph = get_model("densenet121", input_shape=(3, 64, 64))
    block = "features.denseblock1"
    concat = graph[f"{block}.denselayer3.concat"]
    assert list(concat.inputs) == ["features.pool0", f"{block}.denselayer1.conv2", f"{block}.denselayer2.conv2"]
    assert list(graph[f"{block}.denselayer3.norm1"].inputs) == [concat.name]
