"""The effective receptive field (Luo et al., NeurIPS 2016) and ``archlab erf``."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from archlab import GraphBuilder
from archlab.analysis.erf import (
    _INFERNO, centred_squares, colormap, default_node, effective_receptive_field, write_erf_png,
)
from archlab.errors import ArchlabError


def _three_convs(*, relu: bool = True, side: int = 31):
    """The lecture's three stacked 3x3 convs (stride 1, padding 1), 8 channels."""
    b = GraphBuilder("three_convs")
    x = b.input((1, side, side))
    for i in range(3):
        x = b.conv2d(x, 8, 3, padding=1, name=f"conv{i}")
        if relu:
            x = b.relu(x, name=f"relu{i}")
    b.output(x)
    return b.build()


@pytest.fixture(scope="module")
def erf_three():
    return effective_receptive_field(_three_convs(), samples=32, batch=8)


def test_erf_lies_inside_the_theoretical_7x7_field(erf_three):
    e = erf_three
    assert e.node == "relu2" and e.unit == (15, 15) and e.centre == (15, 15)
    assert e.theory.size == (7, 7)
    outside = e.grad.copy()
    outside[12:19, 12:19] = 0
    assert e.grad[12:19, 12:19].min() > 0 and not outside.any()


def test_erf_mass_is_concentrated_in_the_centre(erf_three):
    e = erf_three
    centre3 = e.grad[14:17, 14:17].sum() / e.grad.sum()
    assert centre3 > 1.5 * 9 / 49  # well above a flat 7x7 field's share
    assert e.grad[15, 15] > e.grad[12, 12]  # a corner gets one path, the centre many
    sides = [e.squares[f] for f in (0.2, 0.5, 0.95)]
    assert sides == sorted(sides) and sides[0] >= 1 and sides[-1] <= 7
    assert e.area_ratio(0.95) == sides[-1] ** 2 / 31**2


def test_report_ratios_name_what_they_are_against(erf_three):
    """Each square's area is given against the theoretical field (7x7 here) and,
    separately and so labelled, against the image (31x31): RepLKNet's ratio."""
    e = erf_three
    assert e.theory_pixels == (7, 7)
    side = e.squares[0.95]
    assert e.theory_ratio(0.95) == side**2 / 49 and e.area_ratio(0.95) == side**2 / 31**2
    line = next(x for x in e.report().splitlines() if "95% mass" in x)
    assert f"{side} px square: {side**2 / 49:.1%} of the theoretical field's area in the image, " \
           f"{side**2 / 31**2:.1%} of the image's" in line
    assert "(7x7 px in the image" in e.report()


def test_a_field_larger_than_the_image_is_compared_within_the_image():
    e = effective_receptive_field(_three_convs(side=5), samples=2, batch=2)
    assert e.theory.size == (7, 7) and e.theory_pixels == (5, 5)
    assert e.theory_ratio(0.95) == e.area_ratio(0.95) == e.squares[0.95] ** 2 / 25


def test_centred_squares_follow_the_mass():
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    assert centred_squares(delta, (4, 4), (0.5, 0.95)) == {0.5: 1, 0.95: 1}
    flat = np.ones((9, 9))
    assert centred_squares(flat, (4, 4), (0.1, 0.5, 1.0)) == {0.1: 3, 0.5: 7, 1.0: 9}
    # An off-centre centre: squares are clipped to the map and still end at the whole map.
    assert centred_squares(flat, (0, 0), (1.0,)) == {1.0: 17}
    with pytest.raises(ArchlabError, match="zero everywhere"):
        centred_squares(np.zeros((3, 3)), (1, 1))


def test_given_weights_are_used_and_make_a_linear_net_input_independent():
    g = _three_convs(relu=False, side=15)
    sd = {}
    for i in range(3):
        cin = 1 if i == 0 else 8
        sd[f"conv{i}.weight"] = torch.full((8, cin, 3, 3), 0.1)
        sd[f"conv{i}.bias"] = torch.zeros(8)
    a = effective_receptive_field(g, samples=2, state_dict=sd, seed=0)
    b = effective_receptive_field(g, samples=2, state_dict=sd, seed=1)
    np.testing.assert_allclose(a.grad, b.grad)  # gradient of a linear map: no input dependence
    # Constant kernels: the field is the 3-fold convolution of a box, peaked at the centre.
    assert a.grad[7, 7] == a.grad.max() and a.grad[4, 4] == a.grad[10, 10] > 0
    with pytest.raises(ArchlabError, match="missing"):
        effective_receptive_field(g, samples=1, state_dict={"conv0.weight": sd["conv0.weight"]})


def test_default_node_is_the_last_feature_map():
    from archlab import get_model

    assert default_node(get_model("resnet18")) == "layer4.1.relu_1"
    assert default_node(get_model("vgg11", input_shape=(3, 64, 64))) == "features.20"  # not the 7x7 avgpool
    assert default_node(_three_convs()) == "relu2"


def test_colormap_runs_through_the_anchors():
    rgb = colormap(np.array([0.0, 1.0, 0.5, -1.0, 2.0]))
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 3)
    assert tuple(rgb[0]) == _INFERNO[0] and tuple(rgb[1]) == _INFERNO[-1]
    assert tuple(rgb[3]) == _INFERNO[0] and tuple(rgb[4]) == _INFERNO[-1]  # clipped


def test_png_is_a_valid_image_of_the_documented_size(erf_three, tmp_path):
    path = tmp_path / "erf.png"
    size = write_erf_png(erf_three, str(path))
    scale = 9  # ceil(256 / 31)
    assert size == (31 * scale + 64, 31 * scale + 44)
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size
        peak = np.unravel_index(erf_three.grad.argmax(), erf_three.grad.shape)
        centre_px = img.convert("RGB").getpixel((int(peak[1]) * scale + scale // 2, int(peak[0]) * scale + scale // 2))
        assert centre_px == _INFERNO[-1]  # the maximum is the brightest colour
        assert img.convert("RGB").getpixel((2, 2)) == _INFERNO[0]  # zero gradient far away


def test_cli_prints_the_erf_and_writes_the_png(tmp_path, capsys):
    from archlab.cli import erf_cmd

    parser = argparse.ArgumentParser(prog="archlab")
    erf_cmd.add_parser(parser.add_subparsers(dest="command"))
    png = tmp_path / "vgg.png"
    args = parser.parse_args(
        ["erf", "vgg11", "--input", "3x48x48", "--node", "features.5", "--samples", "2", "--png", str(png), "--seed", "1"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    # features.5 is pool2: conv3 (3), pool/2 (4), conv3 (8), pool/2 (10)
    assert "features.5" in out and "theoretical RF   10x10 jump 4" in out and "ERF  95% mass" in out
    assert png.exists() and Image.open(png).size == (48 * 6 + 64, 48 * 6 + 44)
