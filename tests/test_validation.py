"""validate() rejects each kind of bad graph with an error that names the node."""
import pytest

from archlab import Graph, GraphBuilder
from archlab.errors import (
    ArchlabError, ArityError, AttrError, ChannelMismatchError, CycleError, DanglingNodeError,
    ShapeError, SpatialMismatchError, UnknownNodeError, UnknownOpError,
)


def graph_with(*nodes, outputs=("out",)):
    """A graph from (name, op, inputs, attrs) rows, input 'x' 3x32x32 first."""
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 32, 32])
    for name, op, inputs, attrs in nodes:
        g.add_node(name, op, inputs, **attrs)
    for o in outputs:
        g.set_output(nodes[-1][0] if o == "out" else o, "out")
    return g


def test_all_errors_share_one_base_class():
    for cls in (ArityError, AttrError, ChannelMismatchError, CycleError, DanglingNodeError, ShapeError,
                SpatialMismatchError, UnknownNodeError, UnknownOpError):
        assert issubclass(cls, ArchlabError)


def test_cycle_is_rejected_naming_the_nodes():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    g.add_node("a", "add", ["x", "b"])
    g.add_node("b", "relu", ["a"])
    g.set_output("b")
    with pytest.raises(CycleError, match=r"'a'.*'b'|'b'.*'a'"):
        g.validate()


def test_unknown_op_names_node_and_suggests():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    with pytest.raises(UnknownOpError, match=r"node 'act1': unknown op 'reluu'; did you mean relu"):
        g.add_node("act1", "reluu", ["x"])


def test_wrong_input_count():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    with pytest.raises(ArityError, match=r"add 'sum': takes at least 2 input\(s\), got 1"):
        g.add_node("sum", "add", ["x"])
    with pytest.raises(ArityError, match=r"conv2d 'c': takes 1 input"):
        g.add_node("c", "conv2d", ["x", "x"], out_channels=4, kernel_size=3)


def test_channel_mismatch_in_add_names_node_shapes_and_fix():
    b = GraphBuilder()
    x = b.input((64, 56, 56))
    y = b.conv2d(x, 256, 1, name="conv3")
    with pytest.raises(ChannelMismatchError) as e:
        b.add(y, x, name="layer1.0.add")
    msg = str(e.value)
    assert "add 'layer1.0.add'" in msg and "256x56x56" in msg and "64x56x56" in msg and "1x1 projection" in msg


def test_channel_mismatch_in_mul():
    b = GraphBuilder()
    x = b.input((64, 8, 8))
    gate = b.conv2d(b.adaptive_avg_pool2d(x, 1), 32, 1)
    with pytest.raises(ChannelMismatchError, match=r"mul 'se': got input 64x8x8, 32x1x1"):
        b.mul(x, gate, name="se")


def test_spatial_mismatch_in_concat():
    b = GraphBuilder()
    x = b.input((3, 32, 32))
    a = b.conv2d(x, 8, 3, name="a")
    c = b.conv2d(x, 8, 3, padding=1, name="c")
    with pytest.raises(SpatialMismatchError, match=r"concat 'cat': got input 8x30x30, 8x32x32.*crop or resize"):
        b.concat([a, c], name="cat")


def test_spatial_mismatch_in_add():
    b = GraphBuilder()
    x = b.input((8, 32, 32))
    y = b.conv2d(x, 8, 3, stride=2, padding=1, name="down")
    with pytest.raises(SpatialMismatchError, match=r"add 'res'.*8x16x16, 8x32x32.*strided shortcut"):
        b.add(y, x, name="res")


def test_kernel_larger_than_padded_input():
    b = GraphBuilder()
    x = b.input((3, 5, 5))
    with pytest.raises(ShapeError, match=r"conv2d 'big': got input 3x5x5: kernel 7 \(dilated\) is larger than the padded input 5"):
        b.conv2d(x, 8, 7, name="big")
    with pytest.raises(ShapeError, match=r"max_pool2d 'pool'.*kernel 3 is larger than the padded input 2"):
        b.max_pool2d(b.conv2d(x, 4, 4, name="c4"), 3, name="pool")


def test_dilated_kernel_counts_its_span():
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    with pytest.raises(ShapeError, match=r"kernel 9 \(dilated\)"):
        b.conv2d(x, 8, 3, dilation=4, name="atrous")


def test_non_positive_sizes():
    g = Graph("t")
    with pytest.raises(AttrError, match=r"input 'x': attribute shape: must be positive"):
        g.add_node("x", "input", shape=[3, 0, 32])
    g.add_node("x", "input", shape=[3, 32, 32])
    with pytest.raises(AttrError, match=r"conv2d 'c': attribute out_channels: must be positive"):
        g.add_node("c", "conv2d", ["x"], out_channels=0, kernel_size=3)
    with pytest.raises(AttrError, match=r"conv2d 'c': attribute stride: must be positive"):
        g.add_node("c", "conv2d", ["x"], out_channels=4, kernel_size=3, stride=(1, -1))


def test_wrong_attribute_type_and_unknown_attribute():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    with pytest.raises(AttrError, match=r"conv2d 'c': attribute kernel_size: expected an int or a pair"):
        g.add_node("c", "conv2d", ["x"], out_channels=4, kernel_size="3")
    with pytest.raises(AttrError, match=r"conv2d 'c': unknown attribute\(s\) kernel; conv2d takes out_channels"):
        g.add_node("c", "conv2d", ["x"], out_channels=4, kernel=3)
    with pytest.raises(AttrError, match=r"conv2d 'c': missing required attribute kernel_size"):
        g.add_node("c", "conv2d", ["x"], out_channels=4)


def test_groups_must_divide_channels():
    b = GraphBuilder()
    x = b.input((6, 8, 8))
    with pytest.raises(ChannelMismatchError, match=r"conv2d 'dw'.*groups=4 must divide in_channels=6"):
        b.conv2d(x, 8, 3, groups=4, name="dw")


def test_linear_acts_on_the_last_dim_of_any_rank():
    # As torch.nn.Linear: (..., F) -> (..., out_features); a CxHxW input is (C, H, W) with F = W.
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    assert b.linear(x, 10, name="fc").shape == (3, 8, 10)
    assert b.linear(b.flatten(x), 10, name="fc2").shape == (10,)


def test_dangling_node_is_rejected():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    g.add_node("used", "relu", ["x"])
    g.add_node("unused", "sigmoid", ["x"])
    g.set_output("used")
    with pytest.raises(DanglingNodeError, match=r"sigmoid 'unused': not used by any output"):
        g.validate()


def test_unknown_input_reference():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    g.add_node("r", "relu", ["y"])
    g.set_output("r")
    with pytest.raises(UnknownNodeError, match=r"relu 'r': input 'y' does not exist"):
        g.validate()


def test_duplicate_name():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    g.add_node("r", "relu", ["x"])
    with pytest.raises(ArchlabError, match=r"sigmoid 'r': a node named 'r' already exists \(relu\)"):
        g.add_node("r", "sigmoid", ["x"])


def test_graph_without_output():
    g = Graph("t")
    g.add_node("x", "input", shape=[3, 8, 8])
    g.add_node("r", "relu", ["x"])
    with pytest.raises(ArchlabError, match="has no output"):
        g.validate()


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooling_output_size_matches_pytorch_or_both_reject(ceil_mode):
    import torch

    for size in range(1, 40):
        for k, s, p in ((3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 3, 1), (4, 2, 0), (3, 3, 0)):
            b = GraphBuilder()
            x = b.input((1, size, size))
            try:
                ref = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil_mode).shape[2:]
            except RuntimeError:
                with pytest.raises(ShapeError):
                    b.max_pool2d(x, k, stride=s, padding=p, ceil_mode=ceil_mode)
                continue
            y = b.max_pool2d(x, k, stride=s, padding=p, ceil_mode=ceil_mode)
            assert y.shape[1:] == tuple(ref), (size, k, s, p)
