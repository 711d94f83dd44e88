"""The Python description language: scopes, names, positional attributes, early errors."""
import pytest

from archlab import GraphBuilder
from archlab.errors import ArchlabError, ShapeError


def test_scopes_nest_names_like_module_paths():
    b = GraphBuilder("net")
    x = b.input((3, 32, 32))
    with b.scope("layer1"):
        with b.scope(0):
            y = b.conv2d(x, 8, 3, padding=1, name="conv1")
            z = b.relu(y)
            z2 = b.relu(z)
    assert (y.name, z.name, z2.name) == ("layer1.0.conv1", "layer1.0.relu", "layer1.0.relu_1")


def test_positional_values_fill_attributes_in_order():
    b = GraphBuilder()
    x = b.input((3, 32, 32))
    y = b.conv2d(x, 16, 5, 2, 2)
    node = b.graph[y.name]
    assert node.attrs["out_channels"] == 16 and node.attrs["kernel_size"] == (5, 5)
    assert node.attrs["stride"] == (2, 2) and node.attrs["padding"] == (2, 2)
    assert y.shape == (16, 16, 16)


def test_concat_takes_a_list_or_several_refs():
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    a, c = b.conv2d(x, 4, 1), b.conv2d(x, 6, 1)
    assert b.concat([a, c]).shape == (10, 8, 8)
    assert b.concat(a, c, x).shape == (13, 8, 8)


def test_error_is_raised_where_the_mistake_is_made_and_node_is_not_kept():
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    with pytest.raises(ShapeError, match="conv2d 'too_big'"):
        b.conv2d(x, 4, 11, name="too_big")
    assert "too_big" not in b.graph


def test_explicit_duplicate_name_is_an_error():
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    b.conv2d(x, 4, 1, name="conv")
    with pytest.raises(ArchlabError, match="conv2d 'conv': name already used"):
        b.conv2d(x, 4, 1, name="conv")


def test_build_marks_last_node_as_output_and_validates():
    b = GraphBuilder()
    x = b.input((3, 8, 8))
    b.relu(x)
    g = b.build()
    assert g.outputs == {"out": "relu"}


def test_unknown_builder_method():
    b = GraphBuilder()
    with pytest.raises(AttributeError, match="no attribute or op 'convolution'"):
        b.convolution


def test_text_form_one_line_per_node():
    b = GraphBuilder("tiny")
    x = b.input((3, 8, 8))
    y = b.conv2d(x, 4, 3, padding=1, bias=False, name="conv")
    b.output(b.relu(y))
    text = b.build().to_text()
    assert text.splitlines() == [
        "graph tiny(%x: 3x8x8)",
        "  %conv = conv2d[out_channels=4, kernel_size=3, padding=1, bias=False](%x) -> 4x8x8",
        "  %relu = relu(%conv) -> 4x8x8",
        "  return out=%relu",
    ]
