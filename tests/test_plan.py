"""The execution plan shared by the analyzers, and the memo behind it."""
from __future__ import annotations

import pytest

import archlab
from archlab import GraphBuilder
from archlab.analysis import analyze
from archlab.analysis.receptive_field import receptive_fields
from archlab.errors import AttrError
from archlab.graph.plan import per_sig, plan


def test_plan_follows_execution_order_and_numbers_distinct_nodes():
    g = archlab.get_model("resnet50")
    steps = plan(g)
    assert [s.name for s in steps] == [n.name for n in g.topo_order()]
    assert plan(g) is steps  # cached per graph version
    for s in steps:
        assert s.in_shapes == tuple(g[i].shape for i in s.inputs)
        assert s.reads == tuple(s.op.reads(k) for k in range(len(s.inputs)))
    # equal sig <=> same op, attributes, input and output shapes
    by_sig = {}
    for s in steps:
        key = (s.op.name, tuple(s.node.attrs.items()), s.in_shapes, s.shape)
        assert by_sig.setdefault(s.sig, key) == key
    assert len(by_sig) < len(steps) / 3  # ResNet stages repeat their blocks


def test_per_sig_calls_the_rule_once_per_distinct_node():
    g = archlab.get_model("resnet50")
    steps = plan(g)
    calls = []
    out = per_sig(steps, lambda s: calls.append(s.name) or s.op.params(s.node, s.in_shapes))
    assert out == [s.op.params(s.node, s.in_shapes) for s in steps]
    assert len(calls) == len({s.sig for s in steps})


def test_plan_is_rebuilt_after_an_edit():
    b = GraphBuilder("t")
    x = b.input((3, 8, 8))
    b.output(b.relu(b.conv2d(x, 4, 3)))
    g = b.build()
    first = plan(g)
    g.add_node("extra", "relu", ["relu"])
    g.set_output("extra")
    assert [s.name for s in plan(g)] == [s.name for s in first] + ["extra"]


def test_pointwise_nodes_share_their_inputs_field():
    g = archlab.get_model("resnet18")
    rfs = receptive_fields(g)
    assert rfs["bn1"] is rfs["conv1"] and rfs["relu"] is rfs["conv1"]
    # a merge names its largest input, so the relu after it gets a field of its own
    assert rfs["layer1.0.add"].max_input is not None
    assert rfs["layer1.0.relu_1"] is not rfs["layer1.0.add"]
    assert rfs["layer1.0.relu_1"].max_input is None
    assert rfs["layer1.0.relu_1"].size == rfs["layer1.0.add"].size


def test_analysis_of_a_fresh_graph_equals_a_second_analysis():
    a = analyze(archlab.get_model("densenet121"))
    g = archlab.get_model("densenet121")
    analyze(g)
    b = analyze(g)  # every cache warm
    assert a.rows == b.rows and a.totals == b.totals


@pytest.mark.parametrize("bad", [{"groups": True}, {"padding": (1, True)}, {"kernel_size": [3, 3.0]}])
def test_memoised_attributes_still_reject_what_canonicalisation_rejects(bad):
    b = GraphBuilder("t")
    x = b.input((4, 8, 8))
    good = {"kernel_size": [3, 3], "groups": 1, "padding": (1, 1)}
    b.conv2d(x, 4, **good)
    b.conv2d(x, 4, **good)  # from the memo
    with pytest.raises(AttrError):
        b.conv2d(x, 4, **{**good, **bad})
