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


# --------------------------------------------------------------------------- the direct emitter
def _pyyaml_flow(obj):
    """The one-line flow YAML PyYAML writes: what dump() wrote node by node before
    it had its own emitter (the reference the emitter must match byte for byte)."""
    import yaml

    from archlab.lang.fileformat import _DUMPER

    if isinstance(obj, (dict, list)):
        return yaml.dump(obj, Dumper=_DUMPER, default_flow_style=True, width=10**9, sort_keys=False).strip()
    return _pyyaml_flow([obj])[1:-1]


def _pyyaml_dump(graph):
    from archlab.lang.fileformat import FORMAT, _item
    from archlab.ops import get_op

    # the node mappings are dump()'s own (_item); what is checked is their text
    lines = [f"format: {FORMAT}", f"name: {_pyyaml_flow(graph.name)}"]
    if graph.meta:
        lines.append(f"meta: {_pyyaml_flow(graph.meta)}")
    lines.append("nodes:")
    for n in graph.nodes:
        lines.append(f"- {_pyyaml_flow(_item(n, get_op(n.op).defaults()))}")
    lines.append(f"outputs: {_pyyaml_flow(dict(graph.outputs))}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ALL)
def test_dump_is_byte_identical_to_pyyaml(name):
    g = archlab.get_model(name)
    assert archlab.dump(g) == _pyyaml_dump(g)


def test_nasbench201_cells_dump_byte_identical_to_pyyaml():
    import optuna

    from search_spaces import get_space

    space = get_space("nasbench201")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(5):
        trial = study.ask()
        g = space(trial)
        text = archlab.dump(g)
        assert text == _pyyaml_dump(g)
        assert archlab.load(text) == g
        study.tell(trial, 0.0)


_ODD_STRINGS = ["", " ", "a b", "Yes", "yes", "YES", "yES", "no", "On", "oN", "off", "null", "Null", "~", "y", "n",
                "true", "False", "a:b", "a: b", "-a", "a-", ".a", "a.", "_x", "x#y", "x #y", "1a", "1", "1.5", "0x1f",
                "1e3", ".inf", "-.inf", ".nan", "é", "a'b", 'a"b', "\t", "a\nb", "a,b", "[a]", "{a}", "<<", "=", "a/b",
                "&a", "*a", "!a", "%a", "@a", "`a", "|a", ">a", "?a", "a?", "a!", "x" * 200, "2001-12-14", "12:30",
                "cells.0.edge_0_1", "layer1.0.conv1", "conv/1", "ЖЖ", "a\\b", "A_B-C.D/E"]
_ODD_VALUES = [0, -1, 7, 2**70, True, False, None, 0.0, -0.0, 1.0, 0.1, 1e-5, 1e20, 1e16, -2.5, float("inf"),
               float("-inf"), float("nan"), 1 / 3]


@pytest.mark.parametrize("value", _ODD_STRINGS + _ODD_VALUES)
def test_emitter_writes_scalars_as_pyyaml_does(value):
    from archlab.lang.fileformat import _emit

    assert _emit(value) == _pyyaml_flow(value)
    assert _emit([value, value]) == _pyyaml_flow([value, value])
    assert _emit({"k": value, "in": [value]}) == _pyyaml_flow({"k": value, "in": [value]})


@pytest.mark.parametrize("key", _ODD_STRINGS + ["x" * 127, "x" * 128, 1, None, True, 1.5])
def test_emitter_writes_mapping_keys_as_pyyaml_does(key):
    from archlab.lang.fileformat import _emit

    assert _emit({key: 1, "b": [key]}) == _pyyaml_flow({key: 1, "b": [key]})


def test_emitter_writes_nested_and_shared_containers_as_pyyaml_does():
    from archlab.lang.fileformat import _emit

    shared = [1, 2]
    for obj in ([], {}, [[]], {"a": {}}, {"a": [1, [2, [3]]], "b": {"c": {"d": "e f"}}},
                {"a": shared, "b": shared}, [shared, [shared]], {"a": {"x": 1}, "b": [{"y": None}]}):
        assert _emit(obj) == _pyyaml_flow(obj)


def test_graph_meta_and_names_with_odd_text_round_trip_byte_identical():
    b = archlab.GraphBuilder("my net: v2")
    x = b.input((3, 8, 8), name="in put")
    y = b.conv2d(x, 4, 3, padding=1, name="yes")
    b.relu(y, name="a#b")
    g = b.build()
    g.meta.update({"paper": "A, B & C: 'quoted' \"text\"", "no": True, "list": [1, "x y", None, 0.5],
                   "nested": {"k": []}})
    text = archlab.dump(g)
    assert text == _pyyaml_dump(g)
    assert archlab.load(text) == g
