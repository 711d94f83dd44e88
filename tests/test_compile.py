"""Compiling graphs to torch: names, weights, multiple outputs, torch.export."""
import pytest
import torch

import archlab
from archlab.errors import ArchlabError, GraphError


def tiny(two_outputs=False):
    b = archlab.GraphBuilder("tiny")
    x = b.input((3, 16, 16))
    with b.scope("body"):
        y = b.relu(b.batch_norm2d(b.conv2d(x, 8, 3, padding=1, name="conv"), name="bn"))
    head = b.linear(b.flatten(b.adaptive_avg_pool2d(y, 1)), 5, name="fc")
    b.output(head)
    if two_outputs:
        b.output(b.linear(b.flatten(b.adaptive_avg_pool2d(y, 1, name="pool2")), 2, name="aux_fc"), "aux")
    return b.build()


def test_parameter_names_are_node_names():
    m = archlab.to_module(tiny())
    assert list(m.state_dict()) == [
        "body.conv.weight", "body.conv.bias", "body.bn.weight", "body.bn.bias", "body.bn.running_mean",
        "body.bn.running_var", "body.bn.num_batches_tracked", "fc.weight", "fc.bias",
    ]


def test_ir_param_count_equals_module_param_count():
    g = tiny()
    m = archlab.to_module(g)
    assert g.num_params() == sum(p.numel() for p in m.parameters())
    assert g.num_buffers() == sum(b.numel() for b in m.buffers())


def test_generated_forward_is_readable():
    code = archlab.to_module(tiny()).code
    assert "body_conv = self.body.conv(x)" in code
    assert "torch.nn.functional.relu(body_bn)" in code


def test_several_outputs_come_back_as_a_dict():
    y = archlab.to_module(tiny(two_outputs=True))(torch.randn(2, 3, 16, 16))
    assert set(y) == {"out", "aux"} and y["out"].shape == (2, 5) and y["aux"].shape == (2, 2)


def test_wrong_weights_are_reported_by_key():
    g = tiny()
    sd = archlab.to_module(g).state_dict()
    sd["fc.weight"] = torch.zeros(7, 8)
    with pytest.raises(ArchlabError, match=r"fc.weight: \(7, 8\) vs \(5, 8\)"):
        archlab.to_module(g, state_dict=sd)
    del sd["fc.weight"]
    with pytest.raises(ArchlabError, match="missing 1 key"):
        archlab.to_module(g, state_dict=sd)


def test_layer_with_parameters_cannot_also_be_a_scope():
    b = archlab.GraphBuilder()
    x = b.input((3, 8, 8))
    y = b.conv2d(x, 4, 1, name="block")
    with b.scope("block"):
        y = b.conv2d(y, 4, 1, name="inner")
    with pytest.raises(GraphError, match=r"conv2d 'block' and conv2d 'block.inner'"):
        archlab.to_module(b.build())


def test_name_shadowing_a_module_attribute_is_rejected():
    b = archlab.GraphBuilder()
    x = b.input((3, 8, 8))
    b.conv2d(x, 4, 1, name="forward")
    with pytest.raises(GraphError, match=r"conv2d 'forward': the name 'forward' is taken"):
        archlab.to_module(b.build())


def test_torch_export_and_gradients_work():
    m = archlab.to_module(tiny())
    x = torch.randn(2, 3, 16, 16)
    ep = torch.export.export(m, (x,))
    assert torch.allclose(ep.module()(x), m(x))
    m.train()
    m(x).sum().backward()
    assert m.body.conv.weight.grad is not None
