"""The effective receptive field (Luo et al., NeurIPS 2016) and ``archlab erf``."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from archlab import GraphBuilder
from archlab.analysis.erf import centred_squares, default_node, effective_receptive_field
from archlab.report.erf import erf_figure, square_box, square_colours, write_erf_png
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


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def _near(px: np.ndarray, fig, ax, x: float, y: float, colour: str, reach: int = 2) -> bool:
    """Whether a pixel within ``reach`` of data point (x, y) has ``colour`` (within 40 per channel)."""
    from matplotlib.colors import to_rgb

    want = np.array([round(255 * c) for c in to_rgb(colour)])
    dx, dy = ax.transData.transform((x, y))
    col, row = int(round(dx)), int(round(px.shape[0] - dy))
    patch = px[max(0, row - reach):row + reach + 1, max(0, col - reach):col + reach + 1]
    return bool((np.abs(patch - want).max(axis=-1) <= 40).any())


def test_png_draws_every_square_the_theory_and_the_centre(erf_three, tmp_path):
    """Tested on the pixels: each listed square's edges in its colour, the theoretical
    field's dashed outline, the white image centre; axes, a colour bar; the PNG is that canvas."""
    import matplotlib.pyplot as plt

    fig = erf_figure(erf_three)
    ax, bar = fig.axes[0], fig.axes[1]
    px = _pixels(fig)
    colours = square_colours(erf_three)
    assert sorted(colours) == sorted(erf_three.squares) == [0.2, 0.5, 0.95]
    for f, colour in colours.items():
        t, b, left, r = square_box(erf_three, f)
        mid_x, mid_y = (left + r) / 2, (t + b) / 2
        for x, y in ((mid_x, t - 0.4), (mid_x, b + 0.4), (left - 0.4, mid_y), (r + 0.4, mid_y)):
            assert _near(px, fig, ax, x, y, colour, reach=3), (f, colour, x, y)
    (t, b), (left, r) = erf_three.theory.pixel_box(*erf_three.unit)
    assert _near(px, fig, ax, left - 0.5, t - 0.5, "#00ffff", reach=7)  # the 7x7 field's corner, just outside
    assert _near(px, fig, ax, 15, 15 - 0.4, "#ffffff", reach=1)  # the centre "+" (its vertical arm)
    assert ax.get_xlabel() == "input column (px)" and ax.get_ylabel() == "input row (px)"
    assert len(bar.get_yticks()) >= 2 and "E|d unit / d input|" in bar.get_ylabel()
    caption = " ".join(t.get_text() for t in fig.texts)
    side = erf_three.squares[0.95]
    assert f"95% square = {side**2 / 31**2:.1%} of the image's area, {side**2 / 49:.1%} of the theoretical " \
           "field's area in the image" in caption.replace("\n", " ")
    path = tmp_path / "erf.png"
    size = write_erf_png(erf_three, str(path))
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size == (px.shape[1], px.shape[0])
        assert np.array_equal(np.asarray(img.convert("RGB")).astype(int), px)
    plt.close(fig)


def test_png_says_when_the_theoretical_field_is_larger_than_the_image():
    """... and squares of equal size (here 5 px: the whole image) all still show on the pixels."""
    import matplotlib.pyplot as plt

    erf = effective_receptive_field(_three_convs(side=5), samples=2, batch=2)
    fig = erf_figure(erf)
    ax = fig.axes[0]
    px = _pixels(fig)
    x, y = ax.transData.transform((2, -0.5))  # the image's top border, in figure pixels
    column = px[int(round(px.shape[0] - y)) + 1:int(round(px.shape[0] - y)) + 14, int(round(x))]  # just below it
    for f, colour in square_colours(erf).items():  # 95 % and 50 % are both the whole image: both inside the map
        if square_box(erf, f) == (0, 4, 0, 4):
            want = np.array([round(255 * c) for c in __import__("matplotlib").colors.to_rgb(colour)])
            assert (np.abs(column - want).max(axis=-1) <= 40).any(), (f, colour, column.tolist())
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("theoretical field 7x7 px, larger than the 5x5 image (5x5 inside)" in x for x in labels), labels
    plt.close(fig)


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
    assert png.exists() and Image.open(png).size == (792, 836)
