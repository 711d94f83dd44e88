"""Receptive fields of the decoder ops, on the lecture's hand-sized examples
(CS231n / Johnson "In-network upsampling" slides: unpooling, max unpooling,
transposed convolution), and on the zoo's decoders.

Each small example first checks that the compiled op computes what the slide
shows, then asserts the field of every output unit, derived by hand in the
comments: what the autograd oracle measures (input pixels whose gradient is
non-zero) and what the theory gives (its box, with the ``slack`` its edges may
be off by, since after resampling the fields are a regular grid only on average).

Convention (``archlab.analysis.receptive_field``): coordinates are input pixels,
0 the centre of the first one; boxes are the first and last pixel a field spans,
unclipped (a unit may read inputs beyond the border, as a padded conv does).
"""
from __future__ import annotations

from fractions import Fraction as F

import pytest
import torch

import archlab
from archlab import GraphBuilder
from archlab.analysis.receptive_field import receptive_field, receptive_fields
from archlab.analysis.rf_oracle import measure_receptive_field


def _run(graph, x, weight=None):
    """The compiled graph on ``x`` (a list of rows, one channel, batch 1); ``weight``
    for the layer ``up``, bias 0."""
    module = archlab.to_module(graph)
    if weight is not None:
        with torch.no_grad():
            module.up.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(module.up.weight.shape))
            module.up.bias.zero_()
    with torch.no_grad():
        return module(torch.tensor(x, dtype=torch.float32)[None, None])[0, 0].tolist()


def _measured(graph, unit):
    """The oracle's pixel box of ``unit`` on the graph's own input size."""
    r = measure_receptive_field(graph, "up", input_size=tuple(graph.input_nodes[0].shape[1:]), unit=unit)
    assert r.ok, r.report()
    return r.box


# -- transposed convolution ---------------------------------------------------------------------

def _transpose_1d():
    """The slide's "1D transpose conv, kernel size=3, stride=2, padding=0" on 2 inputs,
    as a 1x2 image and a 1x3 kernel."""
    b = GraphBuilder("transpose_1d")
    b.output(b.conv_transpose2d(b.input((1, 1, 2)), 1, (1, 3), stride=(1, 2), name="up"))
    return b.build()


def test_1d_transposed_conv_computes_the_slides_product():
    # X^T a with filter (x, y, z) = (1, 10, 100) and input (a, b) = (1, 2):
    # (ax, ay, az + bx, by, bz) = (1, 10, 102, 20, 200); 5 outputs = (2 - 1) * 2 + 3.
    assert _run(_transpose_1d(), [[1, 2]], weight=[1, 10, 100]) == [[1, 10, 102, 20, 200]]


def test_1d_transposed_conv_fields_per_output_unit():
    # Input i is copied, scaled by the kernel, to outputs 2i, 2i+1, 2i+2:
    #   a (i=0) feeds outputs 0, 1, 2;  b (i=1) feeds outputs 2, 3, 4.
    # So output o reads: 0 -> {a}, 1 -> {a}, 2 -> {a, b}, 3 -> {b}, 4 -> {b}.
    g = _transpose_1d()
    fields = {0: (0, 0), 1: (0, 0), 2: (0, 1), 3: (1, 1), 4: (1, 1)}
    for o, cols in fields.items():
        assert _measured(g, (0, o)) == ((0, 0), cols)
    # Theory. Unclipped, output o reads the inputs i with 2i in [o - 2, o]: {-1, 0}, {0},
    # {0, 1}, {1}, {1, 2} (-1 and 2 lie beyond the border, like padding). The regular
    # grid: jump 1/2 input, kernel 2 (the widest read), and the centre of output o at
    # (o - 1)/2, half-way between the reads of the even outputs (exact: -1/2, 1/2, 3/2)
    # and of the odd ones (0, 1): boxes [-1, 0], [-1/2, 1/2], [0, 1], [1/2, 3/2], [1, 2].
    # The odd outputs' true edges are 1/2 away: slack 1/2.
    rf = receptive_field(g, "up")
    assert rf.size[1] == 2 and rf.jump[1] == F(1, 2) and rf.start[1] == F(-1, 2) and rf.slack[1] == F(1, 2)
    assert [rf.box(0, o)[1] for o in range(5)] == [(-1, 0), (F(-1, 2), F(1, 2)), (0, 1), (F(1, 2), F(3, 2)), (1, 2)]
    assert rf.size[0] == 1 and rf.slack[0] == 0  # the 1-wide axis is a plain 1x1 conv


def _transpose_2x2_to_4x4():
    """The slide's "3 x 3 transpose convolution, stride 2 pad 1": input 2x2, output 4x4
    (PyTorch needs output_padding=1 for the 4th row: (2 - 1) * 2 - 2 + 3 + 1 = 4)."""
    b = GraphBuilder("transpose_2d")
    b.output(b.conv_transpose2d(b.input((1, 2, 2)), 1, 3, stride=2, padding=1, output_padding=1, name="up"))
    return b.build()


def test_3x3_stride_2_transposed_conv_sums_where_the_copies_overlap():
    # Each input pixel places a copy of the (all-ones) filter, centred on output 2i:
    # rows/cols 2i - 1 .. 2i + 1 (row -1 is cut off by the padding). Copies overlap on
    # row/col 1: sum there.
    assert _run(_transpose_2x2_to_4x4(), [[1, 2], [3, 4]], weight=[1] * 9) == [
        [1, 3, 2, 2], [4, 10, 6, 6], [3, 7, 4, 4], [3, 7, 4, 4]]


def test_3x3_stride_2_transposed_conv_fields_per_output_unit():
    # Per axis, input i feeds outputs 2i - 1, 2i, 2i + 1: i=0 -> 0, 1 (and -1, cut);
    # i=1 -> 1, 2, 3. Output o reads: 0 -> {0}, 1 -> {0, 1}, 2 -> {1}, 3 -> {1}.
    g = _transpose_2x2_to_4x4()
    reads = {0: (0, 0), 1: (0, 1), 2: (1, 1), 3: (1, 1)}
    for (r, rows), (c, cols) in ((a, b) for a in reads.items() for b in reads.items()):
        assert _measured(g, (r, c)) == (rows, cols)
    # Theory: unclipped output 3 also reads input 2 (2i = o + 1 - t for t = 0). Reads
    # {0}, {0, 1}, {1}, {1, 2}: kernel 2, output o centred on o/2; boxes [-1/2, 1/2],
    # [0, 1], [1/2, 3/2], [1, 2]; the even outputs' single input is 1/2 from either edge.
    rf = receptive_field(g, "up")
    assert rf.size == (2, 2) and rf.jump == (F(1, 2),) * 2 and rf.start == (0, 0) and rf.slack == (F(1, 2),) * 2
    assert [rf.box(o, o)[0] for o in range(4)] == [(F(-1, 2), F(1, 2)), (0, 1), (F(1, 2), F(3, 2)), (1, 2)]


# -- unpooling -------------------------------------------------------------------------------------

SLIDE_2x2 = [[1, 2], [3, 4]]


def _nearest():
    b = GraphBuilder("nearest")
    b.output(b.upsample(b.input((1, 2, 2)), scale_factor=2, name="up"))
    return b.build()


def test_nearest_neighbour_unpooling_copies_each_input_over_a_2x2_block():
    assert _run(_nearest(), SLIDE_2x2) == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_nearest_neighbour_fields_are_the_copied_input():
    # Output (r, c) is a copy of input (r // 2, c // 2): one input unit.
    g = _nearest()
    for r in range(4):
        for c in range(4):
            assert _measured(g, (r, c)) == ((r // 2, r // 2), (c // 2, c // 2))
    # Theory: size 1, jump 1/2. Outputs 2q and 2q+1 both read q; the grid runs between
    # them, output o centred at o/2 - 1/4: -1/4, 1/4, 3/4, 5/4, each 1/4 from the truth.
    rf = receptive_field(g, "up")
    assert rf.size == (1, 1) and rf.jump == (F(1, 2),) * 2 and rf.start == (F(-1, 4),) * 2
    assert rf.slack == (F(1, 4),) * 2
    assert [rf.center(o, o)[0] for o in range(4)] == [F(-1, 4), F(1, 4), F(3, 4), F(5, 4)]


@pytest.mark.parametrize("size, out_size", [(2, 82), (3, 123), (5, 7), (7, 5), (60, 473)])
def test_nearest_rule_reads_what_aten_reads_in_float32(size, out_size):
    """Beyond 2x, ATen picks ``floor(o * scale)`` with a float32 scale: for 2 -> 82 output
    41 reads input 0, where 41 * 2 / 82 = 1. The rule's window holds every read."""
    from archlab.ops.resample import nearest_indices

    x = torch.arange(size, dtype=torch.float32).reshape(1, 1, 1, size)
    reads = torch.nn.functional.interpolate(x, size=(1, out_size), mode="nearest")[0, 0, 0].long().tolist()
    assert nearest_indices(size, out_size) == reads
    b = GraphBuilder("nearest_any")
    b.output(b.upsample(b.input((1, 1, size)), size=(1, out_size), name="up"))
    rf = receptive_field(b.build(), "up")
    assert all(abs(i - rf.center(0, o)[1]) <= rf.slack[1] for o, i in enumerate(reads))


def _bed_of_nails():
    """"Bed of nails": each input at the top-left of its 2x2 block, zeros elsewhere;
    a 1x1 transposed conv of stride 2 (output_padding 1 for the 4th row/col)."""
    b = GraphBuilder("bed_of_nails")
    b.output(b.conv_transpose2d(b.input((1, 2, 2)), 1, 1, stride=2, output_padding=1, name="up"))
    return b.build()


def test_bed_of_nails_places_each_input_at_the_top_left_of_its_block():
    assert _run(_bed_of_nails(), SLIDE_2x2, weight=[1]) == [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]


def test_bed_of_nails_fields_are_exact_and_empty_between_the_nails():
    # Output (2i, 2j) reads input (i, j); a unit with an odd row or column reads nothing.
    # Theory: jump 1/2 and size 1 with output o centred at o/2: input o/2 for even o, and a
    # half-integer point, which holds no pixel, for odd o. That is exact: no slack.
    g = _bed_of_nails()
    rf = receptive_field(g, "up")
    assert rf.exact and rf.size == (1, 1) and rf.jump == (F(1, 2),) * 2 and rf.start == (0, 0)
    for r in range(4):
        for c in range(4):
            empty = r % 2 or c % 2
            assert _measured(g, (r, c)) == (None if empty else ((r // 2, r // 2), (c // 2, c // 2)))
            (t, bottom), (left, right) = rf.pixel_box(r, c)
            assert (bottom < t or right < left) == bool(empty)


def _max_unpool():
    """4x4 image -> 2x2/2 max pool keeping indices -> max unpooling back to 4x4."""
    b = GraphBuilder("max_unpool")
    pool = b.max_pool2d_with_indices(b.input((1, 4, 4)), 2, name="pool")
    b.output(b.max_unpool2d(pool, pool, name="up"))
    return b.build()


def test_max_unpooling_puts_each_value_back_where_its_maximum_was():
    # An image whose 2x2 maxima are 1, 2, 3, 4 at the slide's positions: pooling gives the
    # slide's input [[1, 2], [3, 4]], unpooling the slide's output.
    image = [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]]
    assert _run(_max_unpool(), image) == image


def test_max_unpooling_fields_are_the_pooling_window():
    # Output (r, c) receives the maximum of the window covering it, if it was there: it
    # may read any pixel of that window, rows 2(r // 2) .. 2(r // 2) + 1, likewise for c.
    g = _max_unpool()
    for r in range(4):
        for c in range(4):
            assert _measured(g, (r, c)) == ((2 * (r // 2), 2 * (r // 2) + 1), (2 * (c // 2), 2 * (c // 2) + 1))
    # Theory: the pool's field is 2 wide, jump 2, centred at 1/2 (between pixels 0 and 1).
    # Unpooling reads pooled unit o // 2: jump 1, centred 1/4 pooled step (1/2 pixel) before
    # the middle of its pair: output o centred on o, boxes [o - 1/2, o + 1/2], 1/2 pixel from
    # the true window [0, 1] for o = 0 and 1, [2, 3] for o = 2 and 3.
    rf = receptive_field(g, "up")
    assert rf.size == (2, 2) and rf.jump == (1, 1) and rf.start == (0, 0) and rf.slack == (F(1, 2),) * 2
    assert [rf.box(o, o)[0] for o in range(4)] == [(F(-1, 2), F(1, 2)), (F(1, 2), F(3, 2)),
                                                   (F(3, 2), F(5, 2)), (F(5, 2), F(7, 2))]


# -- the zoo's decoders ------------------------------------------------------------------------------

def test_segnet_output_is_centred_with_unit_jump_at_any_size():
    """SegNet is symmetric: the output unit o is centred on pixel o. Each 2x unpooling
    may be off by a quarter of its pooled step: 32/4 + 16/4 + 8/4 + 4/4 + 2/4 = 15.5
    pixels. At CamVid's 360x480 the ceil-mode pools give 23 rows; the unpooling still
    strides by the pool's 2, not 45/23."""
    for shape in [(3, 512, 512), (3, 360, 480)]:
        rf = receptive_field(archlab.get_model("segnet", input_shape=shape), "conv1_1_D")
        assert rf.jump == (1, 1) and rf.start == (0, 0) and rf.size == (392, 392)
        assert rf.slack == (F(31, 2),) * 2


def test_a_small_segnet_attains_its_slack_and_stays_within_it():
    """Three stages (slack 8/4 + 4/4 + 2/4 = 3.5): over a period of 8 output units the
    oracle's edges stay within 3.5 pixels of the theory's box, and reach it."""
    g = archlab.get_model("segnet", input_shape=(1, 64, 64), cfg=[4, "M", 4, "M", 4, "M"], num_classes=2)
    rf = receptive_field(g, "conv1_1_D")
    assert rf.start == (0, 0) and rf.jump == (1, 1) and rf.slack == (F(7, 2),) * 2
    worst = 0
    for o in range(28, 36):
        r = measure_receptive_field(g, "conv1_1_D", input_size=(64, 64), unit=(o, o))
        assert r.ok and not r.clipped, r.report()
        (lo, hi), _ = rf.box(o, o)
        (top, bottom), _ = r.box
        worst = max(worst, abs(top - lo), abs(bottom - hi))
    assert worst == F(7, 2)


@pytest.mark.parametrize("name, node, start, slack", [
    # Each 2x2/2 up-convolution reads one input, o // 2: a quarter of its input step off.
    ("unet", "score", 92, F(16 + 8 + 4 + 2, 4)),
    # upscore2 and upscore_pool4 (k4 s2) a quarter step each, upscore8 (k16 s8) 7/16 of 8.
    ("fcn8s", "score", 0, F(32, 4) + F(16, 4) + F(7, 2)),
    ("fcn32s", "score", 0, F(31, 2)),  # k64 s32: (32 - 1) / 64 of 32 pixels
])
def test_unet_and_fcn_outputs_are_centred_within_their_slack(name, node, start, slack):
    rf = receptive_fields(archlab.get_model(name))[node]
    assert rf.jump == (1, 1) and rf.start == (start, start) and rf.slack == (slack, slack) and rf.aligned
