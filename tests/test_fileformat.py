"""The description file round-trips losslessly for every zoo model."""
import pytest
import torch

import archlab
from archlab.errors import SerializationError, UnknownOpError
from archlab.zoo import list_models, model_info

ALL = list_models()


@pytest.mark.parametrize("name", ALL)
def test_dump_load_round_trip_is_identical(name):
    g = archlab.get_model(name)
    text = archlab.dump(g)
    g2 = archlab.load(text)
    assert g2 == g
    assert [n.name for n in g2] == [n.name for n in g]
    assert [n.attrs for n in g2] == [n.attrs for n in g]
    assert archlab.dump(g2) == text


@pytest.mark.parametrize("name", ALL)
def test_loaded_graph_compiles_to_the_same_function(name):
    side = max(64, model_info(name).min_input_size())
    g = archlab.get_model(name, input_shape=(3, side, side), num_classes=10)
    m1 = archlab.to_module(g)
    m2 = archlab.to_module(archlab.load(archlab.dump(g)), state_dict=m1.state_dict())
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        y1, y2 = m1(x), m2(x)
    if isinstance(y1, dict):
        assert y1.keys() == y2.keys()
        y1, y2 = torch.cat([v.flatten() for v in y1.values()]), torch.cat([v.flatten() for v in y2.values()])
    assert torch.equal(y1, y2)


def test_file_is_readable_one_node_a_line():
    text = archlab.dump(archlab.get_model("resnet18"))
    lines = text.splitlines()
    assert lines[0] == "format: archlab/1" and lines[1] == "name: resnet18"
    assert "- {name: conv1, op: conv2d, in: [x], out_channels: 64, kernel_size: 7, stride: 2, padding: 3, bias: false}" in lines
    assert lines[-1] == "outputs: {out: fc}"


def test_save_and_load_file(tmp_path):
    g = archlab.get_model("resnet18")
    p = archlab.save(g, tmp_path / "r18.yaml")
    assert archlab.load_file(p) == g


def test_float_attributes_round_trip_exactly():
    b = archlab.GraphBuilder("eps")
    x = b.input((3, 8, 8))
    b.batch_norm2d(x, eps=1e-3, momentum=0.01)
    g = b.build()
    assert archlab.load(archlab.dump(g))["batch_norm2d"].attrs["eps"] == 1e-3


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(SerializationError, match="not valid YAML"):
        archlab.load("nodes: [unclosed")
    with pytest.raises(SerializationError, match="not an archlab description"):
        archlab.load("just: a mapping")
    with pytest.raises(SerializationError, match="node #1 must be a mapping"):
        archlab.load("nodes:\n- {name: x, op: input, shape: [3, 8, 8]}\n- 42\n")
    with pytest.raises(UnknownOpError, match=r"net.yaml: node #1: node 'c': unknown op 'conv'"):
        archlab.load("nodes:\n- {name: x, op: input, shape: [3, 8, 8]}\n- {name: c, op: conv, in: [x]}\n", source="net.yaml")
    with pytest.raises(SerializationError, match="cannot read"):
        archlab.load_file(tmp_path / "missing.yaml")
