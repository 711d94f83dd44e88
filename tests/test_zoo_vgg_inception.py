"""VGG, GoogLeNet and Inception v3 beyond the generic torchvision check.

- The auxiliary classifiers (``aux_logits=True``) are torchvision's: same
  parameters, same state_dict keys (strict load), same main and auxiliary
  logits. torchvision computes its aux heads only in training mode, so the tests
  run its ``aux1``/``aux2``/``AuxLogits`` submodules on the trunk activations
  captured with forward hooks, all in eval mode and float64, with weights that
  keep activations O(1) so that the logits depend on the input.
- VGG's cfg builder produces Table 1 of Simonyan & Zisserman layer by layer.

Reference numbers: torchvision 0.29 with ``weights=None``.
"""
from __future__ import annotations

import pytest
import torch
import torchvision

from archlab import GraphBuilder, get_model, to_module
from archlab.errors import ArchlabError
from archlab.ops import get_op
from archlab.torchio.compare import perturb_
from archlab.zoo.inception import aux_head as inception_aux_head
from archlab.zoo.vgg import CFGS, vgg

GOOGLENET_AUX_PARAMS = 13_004_888  # torchvision googlenet(aux_logits=True): 6,624,904 + 2 x 3,189,992
INCEPTION_V3_AUX_PARAMS = 27_161_264  # torchvision Inception_V3_Weights.IMAGENET1K_V1.meta["num_params"]


def _well_conditioned_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """He-normal conv/linear weights plus perturbed batch norms, in float64 eval mode.

    With torchvision's own (or PyTorch's default) init these deep nets' logits
    barely depend on the input, which would make an output comparison blind.
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
    perturb_(model, seed)
    return model.double().eval()


def _tap(model: torch.nn.Module, taps: dict[str, str]) -> dict[str, torch.Tensor]:
    """Forward hooks storing the output of ``model.<module>`` under the name of the aux head reading it."""
    seen: dict[str, torch.Tensor] = {}
    for head, module in taps.items():
        getattr(model, module).register_forward_hook(lambda m, i, o, head=head: seen.__setitem__(head, o))
    return seen


def _input(shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-5
    assert (theirs[0] - theirs[1]).abs().max() > 1e-2  # the logits do depend on the input


# -- GoogLeNet ------------------------------------------------------------------------


def test_googlenet_aux_param_count_equals_torchvision():
    assert get_model("googlenet", aux_logits=True).num_params() == GOOGLENET_AUX_PARAMS
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    assert sum(p.numel() for p in reference.parameters()) == GOOGLENET_AUX_PARAMS


def test_googlenet_aux_heads_are_torchvisions():
    reference = _well_conditioned_(torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False,
                                                                num_classes=10))
    graph = get_model("googlenet", aux_logits=True, num_classes=10, input_shape=(3, 64, 64))
    mine = to_module(graph, state_dict=reference.state_dict(), strict=True).double().eval()
    assert list(mine.state_dict()) == list(reference.state_dict())
    seen = _tap(reference, {"aux1": "inception4a", "aux2": "inception4d"})
    x = _input((3, 64, 64))
    with torch.no_grad():
        ours = mine(x)
        theirs = {"out": reference(x), **{head: getattr(reference, head)(t) for head, t in seen.items()}}
    assert list(ours) == ["out", "aux1", "aux2"]
    for k in ours:
        _assert_close(ours[k], theirs[k])


def test_googlenet_without_aux_has_one_output():
    graph = get_model("googlenet", input_shape=(3, 64, 64))
    assert list(graph.outputs) == ["out"]
    assert not any(n.name.startswith(("aux1.", "aux2.")) for n in graph.nodes)


def test_googlenet_keeps_torchvisions_3x3_in_the_5x5_branch():
    graph = get_model("googlenet", input_shape=(3, 64, 64))
    assert graph["inception3a.branch3.1.conv"].attrs["kernel_size"] == (3, 3)
    assert graph["inception3a.branch3.1.bn"].attrs["eps"] == 0.001


# -- Inception v3 -----------------------------------------------------------------------
# The aux head's 5x5 conv needs Mixed_6e's 17x17 grid, i.e. the canonical 299x299
# input; a full float64 forward there is slow, so the fast tests check the head on
# its own and the end-to-end run is marked slow.


def _inception_v3_aux_reference() -> torch.nn.Module:
    return _well_conditioned_(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                                              num_classes=10))


def test_inception_v3_aux_param_count_equals_torchvision_metadata():
    assert get_model("inception_v3", aux_logits=True).num_params() == INCEPTION_V3_AUX_PARAMS


def test_inception_v3_aux_loads_torchvisions_state_dict_strictly():
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=10)
    graph = get_model("inception_v3", aux_logits=True, num_classes=10)
    assert list(graph.outputs) == ["out", "aux"]
    mine = to_module(graph, state_dict=reference.state_dict(), strict=True)
    assert list(mine.state_dict()) == list(reference.state_dict())
    assert graph.num_params() == sum(p.numel() for p in reference.parameters())


def test_inception_v3_aux_head_matches_torchvisions_on_a_17x17_grid():
    reference = _inception_v3_aux_reference()
    b = GraphBuilder("aux_head")
    x = b.input((768, 17, 17))
    with b.scope("AuxLogits"):
        b.output(inception_aux_head(b, x, 10))
    weights = {k: v for k, v in reference.state_dict().items() if k.startswith("AuxLogits.")}
    mine = to_module(b.build(), state_dict=weights, strict=True).double().eval()
    t = _input((768, 17, 17))
    with torch.no_grad():
        _assert_close(mine(t), reference.AuxLogits(t))


def test_inception_v3_aux_head_rejects_inputs_below_299():
    with pytest.raises(ArchlabError, match="AuxLogits"):
        get_model("inception_v3", aux_logits=True, input_shape=(3, 107, 107))


@pytest.mark.slow
def test_inception_v3_aux_outputs_are_torchvisions_at_299():
    reference = _inception_v3_aux_reference()
    graph = get_model("inception_v3", aux_logits=True, num_classes=10)
    mine = to_module(graph, state_dict=reference.state_dict(), strict=True).double().eval()
    seen = _tap(reference, {"aux": "Mixed_6e"})
    x = _input((3, 299, 299))
    with torch.no_grad():
        ours, out = mine(x), reference(x)
        aux = reference.AuxLogits(seen["aux"])
    assert list(ours) == ["out", "aux"]
    _assert_close(ours["out"], out)
    _assert_close(ours["aux"], aux)


# -- VGG ------------------------------------------------------------------------------------


def _layers(graph, op: str) -> list:
    return [n for n in graph.nodes if n.op == op]


@pytest.mark.parametrize("name, convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_weight_layers_match_table_1(name, convs):
    """Table 1: VGG-n has n weight layers, n - 3 convs and 3 fully connected."""
    graph = get_model(name, input_shape=(3, 32, 32))
    assert len(_layers(graph, "conv2d")) == convs
    assert len(_layers(graph, "linear")) == 3
    assert len(_layers(graph, "max_pool2d")) == 5


def test_vgg16_conv_widths_follow_cfg_d():
    graph = get_model("vgg16", input_shape=(3, 32, 32))
    assert [n.attrs["out_channels"] for n in _layers(graph, "conv2d")] == [v for v in CFGS["D"] if v != "M"]
    assert all(n.attrs["kernel_size"] == (3, 3) and n.attrs["padding"] == (1, 1) for n in _layers(graph, "conv2d"))


def _conv_params(graph, name: str) -> tuple[int, int]:
    """(weights, biases) of a conv node, from the IR alone."""
    node = graph[name]
    total = get_op("conv2d").params(node, [graph[node.inputs[0]].shape])
    bias = node.attrs["out_channels"] if node.attrs["bias"] else 0
    return total - bias, bias


def test_vgg16_conv2_1_is_features_5():
    graph = get_model("vgg16", input_shape=(3, 32, 32))
    assert graph["features.5"].op == "conv2d"
    assert _conv_params(graph, "features.5") == (73_728, 128)  # 3 x 3 x 64 x 128 weights + 128 biases


def test_vgg16_bn_shifts_torchvision_indices():
    """With batch norm every conv takes three Sequential slots, so conv2_1 is features.7."""
    graph = get_model("vgg16_bn", input_shape=(3, 32, 32))
    assert graph["features.7"].op == "conv2d" and graph["features.8"].op == "batch_norm2d"
    assert _conv_params(graph, "features.7") == (73_728, 128)


def test_vgg_builder_takes_a_custom_cfg():
    graph = vgg(name="tiny_vgg", cfg=[8, "M", 16, "M"], num_classes=10, input_shape=(3, 32, 32))
    assert [n.name for n in _layers(graph, "conv2d")] == ["features.0", "features.3"]
    assert graph.shape("features.5") == (16, 8, 8)


@pytest.mark.parametrize("cfg", ["F", [64, "X"], [64, 0]])
def test_vgg_builder_rejects_bad_cfg(cfg):
    with pytest.raises(ValueError, match="cfg"):
        vgg(cfg=cfg)
