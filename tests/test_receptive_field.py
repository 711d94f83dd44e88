"""Theoretical receptive fields (Araujo, Norris & Sim, Distill 2019) and their
autograd oracle.

Published values: google-research ``receptive_field`` README, computed on the
TF-Slim models: alexnet_v2 195 (effective padding 64), vgg_16 212 (90),
inception_v3 1311 (618), mobilenet_v1 315 (126), resnet_v1_50 483 (239),
resnet_v1_101 1027, resnet_v1_152 1507. Effective padding P and our ``start``
are related by ``start = (r - 1) / 2 - P``.
"""
from __future__ import annotations

from fractions import Fraction

import pytest

from archlab import GraphBuilder, get_model, list_models
from archlab.analysis.receptive_field import receptive_field, receptive_fields
from archlab.analysis.rf_oracle import measure_receptive_field
from archlab.errors import ArchlabError


def _stack(*convs, shape=(1, 31, 31)):
    """A chain of convs given as dicts of conv2d attributes (8 channels each)."""
    b = GraphBuilder("stack")
    x = b.input(shape)
    for kw in convs:
        x = b.relu(b.conv2d(x, 8, **kw))
    b.output(x)
    return b.build()


# -- single path ----------------------------------------------------------------------

def test_three_stacked_3x3_convs_see_7x7():
    """The lecture's question: three 3x3 convs (stride 1) see what one 7x7 conv sees."""
    g = _stack(*[dict(kernel_size=3, padding=1)] * 3)
    fields = receptive_fields(g)
    convs = [n.name for n in g.topo_order() if n.op == "conv2d"]
    assert [fields[c].size for c in convs] == [(3, 3), (5, 5), (7, 7)]
    rf = fields[convs[-1]]
    assert rf.jump == (1, 1) and rf.start == (0, 0) and rf.side == 7
    assert rf.is_global is False and rf.aligned is True
    assert rf.coverage == pytest.approx(49 / 31**2)
    assert g[convs[-1]].meta["rf"] == rf


def test_unpadded_convs_shift_the_start_by_the_padding_not_the_size():
    rf = receptive_field(_stack(*[dict(kernel_size=3)] * 3), "relu_2")
    assert rf.size == (7, 7) and rf.start == (3, 3)
    assert rf.box(0, 0) == ((0, 6), (0, 6))


def test_dilated_convs_grow_the_field_exponentially():
    """3x3 convs with dilation 1, 2, 4: 3, 7, 15 (the dilated kernel is d(k-1)+1)."""
    g = _stack(*[dict(kernel_size=3, padding=d, dilation=d) for d in (1, 2, 4)], shape=(1, 40, 40))
    fields = receptive_fields(g)
    assert [fields[n].side for n in ("conv2d", "conv2d_1", "conv2d_2")] == [3, 7, 15]
    r = measure_receptive_field(g, "conv2d_2")
    assert r.ok and r.size == (15, 15), r.report()


def test_rectangular_kernels_and_strides_per_axis():
    g = _stack(dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0), stride=(2, 1)))
    rf = receptive_field(g, "conv2d_1")
    assert rf.size == (7, 7) and rf.jump == (2, 1) and rf.side == 7


def test_pooling_with_ceil_mode_keeps_the_window_and_clips_the_last_unit():
    """max_pool(3, 2, ceil_mode) on 10 pixels: 5 windows, the last one reads pixels 8..10,
    of which pixel 10 does not exist (the oracle measures the clipped box)."""
    b = GraphBuilder("pool")
    x = b.max_pool2d(b.input((1, 10, 10)), 3, stride=2, ceil_mode=True)
    b.output(x)
    g = b.build()
    rf = receptive_field(g, "max_pool2d")
    assert g["max_pool2d"].shape == (1, 5, 5)
    assert rf.size == (3, 3) and rf.jump == (2, 2) and rf.start == (1, 1)
    assert rf.box(4, 4) == ((8, 10), (8, 10)) and rf.pixel_box(4, 4) == ((8, 9), (8, 9))
    r = measure_receptive_field(g, "max_pool2d", input_size=(10, 10), unit=(4, 4))
    assert r.clipped and r.ok and r.box == ((8, 9), (8, 9)), r.report()


def test_adaptive_pooling_that_does_not_divide_gives_a_fractional_jump():
    # AlexNet at 300x300: pool5 is 8x8, pooled to 6x6 bins of 2 pixels, 4/3 apart.
    rf = receptive_field(get_model("alexnet", input_shape=(3, 300, 300)), "avgpool")
    assert rf.jump == (Fraction(128, 3), Fraction(128, 3))
    assert rf.size == (195 + 32, 195 + 32)


# -- resampling (decoders) ----------------------------------------------------------------------

def _decoder(up):
    """conv 3x3/2 (pad 1) on 32x32, then the upsampling ``up(b, x, image)``."""
    b = GraphBuilder("decoder")
    image = b.input((1, 32, 32))
    x = b.conv2d(image, 4, 3, stride=2, padding=1, name="down")
    b.output(up(b, x, image))
    return b.build()


@pytest.mark.parametrize("up, size", [
    (lambda b, x, im: b.conv_transpose2d(x, 4, 2, stride=2, name="up"), 3),  # reads 1 input: U-Net's up-conv
    (lambda b, x, im: b.conv_transpose2d(x, 4, 4, stride=2, padding=1, name="up"), 5),  # reads 2 inputs
    (lambda b, x, im: b.upsample(x, scale_factor=2, name="up"), 3),
    (lambda b, x, im: b.upsample(x, im, mode="bilinear", name="up"), 5),  # the size reference is not a path
])
def test_upsampling_halves_the_jump_and_grows_by_the_inputs_read(up, size):
    g = _decoder(up)
    rf = receptive_field(g, "up")
    assert rf.size == (size, size) and rf.jump == (1, 1) and rf.max_input is None and rf.aligned
    # Outputs 2q and 2q+1 read the same inputs: the regular grid runs through the middle,
    # a quarter of an input step (2 pixels) from either, so output 0 is centred at -1/2
    # and every edge lies within 1/2 pixel of the box.
    assert rf.start == (Fraction(-1, 2),) * 2
    assert not rf.exact and rf.slack == (Fraction(1, 2),) * 2 and "+-0.5" in str(rf)
    for i in range(14, 18):  # a full period of phases and then some
        r = measure_receptive_field(g, "up", input_size=(32, 32), unit=(i, i))
        assert r.ok and r.size[0] <= size, r.report()


def test_max_unpooling_spreads_each_pooled_value_over_its_window():
    b = GraphBuilder("segnet_like")
    x = b.conv2d(b.input((1, 32, 32)), 4, 3, padding=1)
    pool = b.max_pool2d_with_indices(x, 2, name="pool")
    y = b.max_unpool2d(b.conv2d(pool, 4, 3, padding=1), pool, name="unpool")
    b.output(y)
    g = b.build()
    rf = receptive_field(g, "unpool")
    # Pooling moves the centre half a pixel right, unpooling back: output o is centred on o,
    # within a quarter of the pooled step (2 pixels) either side.
    assert rf.size == (8, 8) and rf.jump == (1, 1) and rf.start == (0, 0) and rf.max_input is None
    assert rf.slack == (Fraction(1, 2),) * 2
    r = measure_receptive_field(g, "unpool", input_size=(32, 32))
    assert r.ok and r.size == (8, 8), r.report()


# -- several paths ------------------------------------------------------------------------

def _two_paths(shortcut_kernel: int):
    """``conv3x3/2 (pad 1) + conv kxk/2 (pad 0)`` on an 8x8 input."""
    b = GraphBuilder("two_paths")
    x = b.input((1, 8, 8))
    a = b.conv2d(x, 4, 3, stride=2, padding=1, name="main")
    c = b.conv2d(x, 4, shortcut_kernel, stride=2, name="shortcut")
    y = b.add(a, c, name="add")
    b.output(b.conv2d(y, 4, 3, padding=1, name="after"))
    return b.build()


def test_paths_with_equal_jumps_and_centres_are_aligned():
    # ResNet's projection shortcut: 1x1/2 without padding is centred like 3x3/2 with padding 1.
    fields = receptive_fields(_two_paths(1))
    assert fields["add"].aligned and fields["add"].misaligned_at == ()
    assert fields["add"].size == (3, 3) and fields["add"].max_input == "main"


def test_paths_whose_centres_differ_are_flagged_misaligned():
    # A 2x2/2 window is centred half a pixel right of a padded 3x3/2 one.
    g = _two_paths(2)
    fields = receptive_fields(g)
    assert fields["main"].start == (0, 0) and fields["shortcut"].start == (Fraction(1, 2),) * 2
    assert not fields["add"].aligned and fields["add"].misaligned_at == ("add",)
    assert not fields["after"].aligned and fields["after"].misaligned_at == ("add",)  # propagates
    assert fields["add"].size == (3, 3) and fields["add"].max_input == "main"  # the union of both paths
    r = measure_receptive_field(g, "after")
    assert r.ok, r.report()


def test_concat_of_inception_branches_takes_the_largest_field():
    b = GraphBuilder("inception")
    x = b.input((1, 32, 32))
    one = b.conv2d(x, 4, 1, name="b1")
    five = b.conv2d(b.conv2d(x, 4, 1), 4, 5, padding=2, name="b5")
    pool = b.conv2d(b.max_pool2d(x, 3, stride=1, padding=1), 4, 1, name="bp")
    b.output(b.concat([one, five, pool], name="cat"))
    rf = receptive_field(b.build(), "cat")
    assert rf.size == (5, 5) and rf.aligned and rf.max_input == "b5"


# -- global fields ----------------------------------------------------------------------------

def test_global_pooling_flatten_and_linear_cover_the_whole_input():
    g = get_model("resnet18")
    fields = receptive_fields(g)
    for name in ("avgpool", "flatten", "fc"):
        rf = fields[name]
        assert rf.is_global and rf.size == (224, 224) and rf.coverage == 1.0 and rf.local_size is None
        assert rf.pixel_box(0, 0) == ((0, 223), (0, 223)) and str(rf) == "global"
    assert not fields["layer4.1.relu_1"].is_global


def test_a_squeeze_excitation_gate_makes_the_field_global():
    fields = receptive_fields(get_model("se_resnet50"))
    gate, scaled = fields["layer1.0.se.sigmoid"], fields["layer1.0.se.scale"]
    assert gate.is_global and gate.local_size is None
    assert scaled.is_global and scaled.max_input == "layer1.0.se.sigmoid"
    # The spatial path is kept: the field without the gates is plain ResNet-50's.
    assert scaled.local_size == fields["layer1.0.bn3"].size
    assert fields["layer4.2.relu_2"].local_size == (427, 427)


def test_a_node_without_a_field_rule_is_reported(monkeypatch):
    from archlab.ops import get_op

    def no_rule(self, node, shapes, out):
        raise NotImplementedError

    monkeypatch.setattr(type(get_op("relu")), "rf", no_rule)
    with pytest.raises(ArchlabError, match="relu 'relu'.*no receptive-field rule"):
        receptive_fields(_stack(dict(kernel_size=3)))


# -- published values ---------------------------------------------------------------------------

def test_vgg16_pool5_is_212_as_published():
    rf = receptive_field(get_model("vgg16"), "features.30")
    assert rf.size == (212, 212) and rf.jump == (32, 32)
    assert (rf.size[0] - 1) / 2 - rf.start[0] == 90  # effective padding, as TF-Slim's vgg_16


def test_alexnet_pool5_is_195_in_torchvision_and_in_the_original_layout():
    """torchvision's AlexNet pads conv1 by 2 (the original: 0) and has 64-192-384-256-256
    filters, but sizes do not depend on padding or width: both give 195. The padding
    moves the field by 2 pixels: start 31 vs 33 (TF-Slim alexnet_v2, effective padding 64)."""
    tv = receptive_field(get_model("alexnet"), "features.12")
    assert tv.size == (195, 195) and tv.jump == (32, 32) and tv.start == (31, 31)

    b = GraphBuilder("alexnet_2012")
    x = b.input((3, 227, 227))
    x = b.max_pool2d(b.relu(b.conv2d(x, 96, 11, stride=4)), 3, stride=2)
    x = b.max_pool2d(b.relu(b.conv2d(x, 256, 5, padding=2)), 3, stride=2)
    for c in (384, 384, 256):
        x = b.relu(b.conv2d(x, c, 3, padding=1))
    b.output(b.max_pool2d(x, 3, stride=2, name="pool5"))
    original = receptive_field(b.build(), "pool5")
    assert original.size == (195, 195) and original.start == (33, 33)
    assert (original.size[0] - 1) / 2 - original.start[0] == 64

    r = measure_receptive_field(get_model("alexnet"), "features.12")
    assert r.ok and r.size == (195, 195), r.report()


def test_mobilenet_v1_last_pointwise_conv_is_315_as_published():
    # Same size as TF-Slim; the start differs (0 vs 31) because TF's "SAME" padding of a
    # stride-2 conv pads right only, PyTorch's padding=1 both sides.
    rf = receptive_field(get_model("mobilenet_v1"), "features.13.pw.0")
    assert rf.size == (315, 315) and rf.jump == (32, 32) and rf.start == (0, 0)


def test_inception_v3_and_resnet_v1_match_tf_slim():
    rf = receptive_field(get_model("inception_v3"), "Mixed_7c.cat")
    assert rf.size == (1311, 1311) and (rf.size[0] - 1) / 2 - rf.start[0] == 618
    # TF-Slim's resnet_v1 strides in the first 1x1 conv (our resnet50_v1); torchvision's
    # ResNet (v1.5) strides in the 3x3 conv, which shrinks the field to 427.
    assert receptive_field(get_model("resnet50_v1"), "layer4.2.relu_2").size == (483, 483)
    assert receptive_field(get_model("resnet50"), "layer4.2.relu_2").size == (427, 427)


# -- the autograd oracle on the whole zoo --------------------------------------------------------

# Each is covered by a faster model with the same blocks that stays in the default run.
_SLOW = {
    "densenet161": "densenet121", "densenet169": "densenet121", "densenet201": "densenet121",  # 15-20 s each
    "resnet101": "resnet50", "resnet152": "resnet50", "resnet101_v1": "resnet50_v1", "resnet152_v1": "resnet50_v1",
    "deeplabv3_resnet101": "deeplabv3_resnet50_aux", "deeplabv3_resnet101_aux": "deeplabv3_resnet50_aux",
    "deeplabv3_resnet50": "deeplabv3_resnet50_aux", "fcn_resnet101": "fcn_resnet50_aux",
    "fcn_resnet101_aux": "fcn_resnet50_aux", "fcn_resnet50": "fcn_resnet50_aux",
}


def _oracle_nodes(g) -> list[str]:
    """A classifier's feature map before global pooling, or a dense predictor's
    outputs; and a merge (or layer) mid-network."""
    order = g.topo_order()
    merges = [n.name for n in order if n.op in ("add", "concat")]
    layers = merges or [n.name for n in order if n.op in ("conv2d", "max_pool2d")]
    ends = [g["avgpool"].inputs[0]] if "avgpool" in g else list(dict.fromkeys(g.outputs.values()))
    return [*ends, layers[len(layers) // 2]]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in list_models()]
)
def test_oracle_agrees_with_the_theory_on_every_zoo_model(name):
    g = get_model(name)
    for node in _oracle_nodes(g):
        r = measure_receptive_field(g, node)
        assert r.thinned and r.ok, r.report()
        if r.theory.is_global:  # SE gates, image pooling: the whole input; check the spatial paths too
            h, w = g.input_nodes[0].shape[1:]
            assert r.box == ((0, h - 1), (0, w - 1))
            local = measure_receptive_field(g, node, local=True)
            assert local.ok, local.report()
            if local.theory.exact:
                assert local.size == r.theory.local_size, local.report()
        elif r.theory.exact:  # no resampling upstream: the exact field, unclipped
            assert not r.clipped and r.size == r.theory.size, r.report()


def test_oracle_sees_the_whole_input_from_global_pooling():
    r = measure_receptive_field(get_model("resnet18"), "avgpool")
    assert r.theory.is_global and r.ok and r.box == ((0, 223), (0, 223))


def test_oracle_thinned_and_full_width_networks_agree():
    """Thinning (1 channel, no groups) does not change the measured box: depthwise
    convs, a concat and a squeeze-excitation gate at full width."""
    b = GraphBuilder("mixed")
    x = b.input((3, 40, 40))
    x = b.relu6(b.batch_norm2d(b.conv2d(x, 8, 3, stride=2, padding=1)))
    dw = b.conv2d(x, 8, 5, padding=4, dilation=2, groups=8)
    pool = b.max_pool2d(x, 3, stride=1, padding=1)
    x = b.concat([dw, pool])
    gate = b.hardsigmoid(b.conv2d(b.relu(b.conv2d(b.adaptive_avg_pool2d(x, 1), 4, 1)), 16, 1))
    x = b.hardswish(b.mul(x, gate, name="scaled"))
    b.output(b.conv2d(x, 4, 3, stride=2, name="out"))
    g = b.build()
    for local in (False, True):
        thin = measure_receptive_field(g, "out", local=local)
        full = measure_receptive_field(g, "out", local=local, thin=False)
        assert thin.thinned and not full.thinned
        assert thin.ok and full.ok and thin.box == full.box, (thin.report(), full.report())
    # Spatial paths: stem 3x3/2 gives 3; the dilated 5x5 (9 wide) adds 8 x jump 2; the last 3x3 adds 2 x 2.
    assert full.size == (3 + 8 * 2 + 2 * 2,) * 2
