"""Receptive fields of imported models agree with the autograd oracle: the
theory (archlab's per-op rules over the imported graph) against the input
pixels whose gradient is non-zero, for six families, ViT's global token mixing
included."""
from __future__ import annotations

import pytest
import torchvision

import archlab
from archlab.analysis.rf_oracle import measure_receptive_field

# (model, the node before global pooling, a node mid-network, whether theory is exact there)
CASES = [
    ("resnet18", "layer4.1.relu_1", "layer2.1.add"),
    ("mobilenet_v3_small", "features.12.2", "features.5.add"),  # SE gates: global, with the local field checked
    ("efficientnet_b0", "features.8.2", "features.3.1.add"),
    ("regnet_x_400mf", "trunk_output.block4.block4-11.activation", "trunk_output.block2.block2-0.activation"),
    ("shufflenet_v2_x0_5", "conv5.2", "stage3.0.reshape_1"),  # channel shuffle: reshape, permute, reshape
    ("densenet121", "features.norm5", "features.denseblock2.denselayer3.concat"),
]


def _imported(name: str, **kw):
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kw).eval()
    return archlab.from_torch(model, (3, 64, 64))


@pytest.mark.parametrize("name, end, mid", CASES, ids=[c[0] for c in CASES])
def test_imported_fields_agree_with_the_autograd_oracle(name, end, mid):
    graph = _imported(name)
    # A reshape is specialised on the traced sizes (ShuffleNet's view(N, 2, C/2, H, W)): the oracle
    # measures at the imported size, where fields larger than the input are compared clipped.
    fixed = {"input_size": (64, 64)} if any(n.op == "reshape" for n in graph.nodes) else {}
    for node in (end, mid):
        r = measure_receptive_field(graph, node, **fixed)
        assert r.ok, r.report()
        if fixed:
            continue
        if r.theory.is_global:  # squeeze-and-excitation: the whole input, and the spatial paths checked alone
            assert r.box == ((0, 63), (0, 63))
            local = measure_receptive_field(graph, node, local=True)
            assert local.ok and local.theory.exact and local.size == r.theory.local_size, local.report()
        else:
            assert r.theory.exact and not r.clipped and r.size == r.theory.size, r.report()


def test_vit_token_mixing_is_global_and_the_oracle_sees_the_whole_input():
    graph = _imported("vit_b_16", image_size=64)
    patches = measure_receptive_field(graph, "conv_proj")  # before any token mixing: one 16x16 patch
    assert patches.ok and patches.theory.size == (16, 16) and patches.size == (16, 16)
    first = graph["encoder.layers.encoder_layer_0.self_attention"]
    r = measure_receptive_field(graph, first.name)
    assert r.theory.is_global and r.ok and r.box == ((0, 63), (0, 63))
