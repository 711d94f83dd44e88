"""Ops on tensors of any rank (transformer and modern-ConvNet vocabulary): each
compiles to the torch code it names, and its parameter, MAC, memory and
receptive-field rules agree with torch, FlopCounterMode and fvcore.

Reference figures are measured on torch 2.14 / fvcore 0.1.5 (CPU): MACs with
:mod:`archlab.torchio.peers` (FlopCounterMode on the meta device / 2, fvcore's
total), memory with :func:`archlab.analysis.measure.tensor_peak_bytes` (inference)
and ``saved_tensors_hooks`` (training), as ``tests/test_memory.py`` does.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab.analysis.counts import mac_counts
from archlab.analysis.measure import saved_tensor_bytes, tensor_peak_bytes
from archlab.analysis.memory import activation_memory, training_memory
from archlab.analysis.receptive_field import receptive_fields
from archlab.errors import ShapeError
from archlab.lang import dump, load
from archlab.torchio.peers import flop_counter_macs, fvcore_macs

BATCH = 2


# -- measuring torch ------------------------------------------------------------------------------
def _inputs(shapes, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, *s, generator=g) for s in shapes]


def _flop_counter(module, shapes) -> int:
    """``peers.flop_counter_macs`` for several inputs (meta device, /2)."""
    if len(shapes) == 1:
        return flop_counter_macs(module, shapes[0], batch=BATCH)
    from torch.utils.flop_counter import FlopCounterMode

    module = module.to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*[torch.zeros(BATCH, *s, device="meta") for s in shapes])
    return counter.get_total_flops() // 2


def _fvcore(module, shapes) -> int:
    """``peers.fvcore_macs`` for several inputs."""
    if len(shapes) == 1:
        return fvcore_macs(module, shapes[0], batch=BATCH)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        fca = FlopCountAnalysis(module.eval(), tuple(torch.zeros(BATCH, *s) for s in shapes))
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(fca.total())


# -- the cases ----------------------------------------------------------------------------------------
# name -> (input shapes, build(b, *refs) -> output ref, reference(module, *xs) -> tensor)
CASES = {
    "gelu": ([(4, 6)], lambda b, x: b.gelu(x), lambda m, x: F.gelu(x)),
    "gelu_tanh": ([(4, 6)], lambda b, x: b.gelu(x, approximate="tanh"), lambda m, x: F.gelu(x, approximate="tanh")),
    "leaky_relu": ([(3, 4, 5)], lambda b, x: b.leaky_relu(x, 0.2), lambda m, x: F.leaky_relu(x, 0.2)),
    "mish": ([(6,)], lambda b, x: b.mish(x), lambda m, x: F.mish(x)),
    "tanh": ([(2, 3, 4, 5)], lambda b, x: b.tanh(x), lambda m, x: torch.tanh(x)),
    "hardtanh": ([(4, 6)], lambda b, x: b.hardtanh(x, min_val=-0.5, max_val=0.5), lambda m, x: F.hardtanh(x, -0.5, 0.5)),
    "elu": ([(4, 6)], lambda b, x: b.elu(x, alpha=0.7), lambda m, x: F.elu(x, 0.7)),
    "softplus": ([(4, 6)], lambda b, x: b.softplus(x, beta=2.0, threshold=1.0), lambda m, x: F.softplus(x, 2.0, 1.0)),
    "layer_norm": ([(5, 8)], lambda b, x: b.layer_norm(x, name="ln"), lambda m, x: m.ln(x)),
    "layer_norm_2d_no_affine": ([(3, 4, 6)], lambda b, x: b.layer_norm(x, 2, elementwise_affine=False),
                                lambda m, x: F.layer_norm(x, (4, 6))),
    "layer_norm_no_bias": ([(5, 8)], lambda b, x: b.layer_norm(x, eps=1e-6, bias=False, name="ln"),
                           lambda m, x: F.layer_norm(x, (8,), m.ln.weight, None, 1e-6)),
    "group_norm": ([(6, 4, 5)], lambda b, x: b.group_norm(x, 3, name="gn"),
                   lambda m, x: F.group_norm(x, 3, m.gn.weight, m.gn.bias)),
    "group_norm_no_affine": ([(6, 5)], lambda b, x: b.group_norm(x, 2, affine=False), lambda m, x: F.group_norm(x, 2)),
    "batch_norm1d_features": ([(6,)], lambda b, x: b.batch_norm1d(x, name="bn"), lambda m, x: m.bn(x)),
    "batch_norm1d_tokens": ([(5, 6)], lambda b, x: b.batch_norm1d(x, channels_last=True, name="bn"),
                            lambda m, x: m.bn(x.flatten(0, 1)).view_as(x)),
    "batch_norm1d_sequence": ([(6, 5)], lambda b, x: b.batch_norm1d(x, affine=False, name="bn"), lambda m, x: m.bn(x)),
    "linear_tokens": ([(5, 8)], lambda b, x: b.linear(x, 3, name="fc"), lambda m, x: x @ m.fc.weight.T + m.fc.bias),
    "linear_rank3": ([(2, 5, 8)], lambda b, x: b.linear(x, 3, bias=False, name="fc"), lambda m, x: x @ m.fc.weight.T),
    "permute": ([(3, 4, 5)], lambda b, x: b.permute(x, [0, 2, 3, 1]), lambda m, x: x.permute(0, 2, 3, 1)),
    "reshape": ([(4, 6)], lambda b, x: b.reshape(x, [2, -1, 3]), lambda m, x: x.reshape(BATCH, 2, 4, 3)),
    "flatten_2": ([(3, 4, 5)], lambda b, x: b.flatten(x, 2), lambda m, x: x.flatten(2)),
    "flatten_1_2": ([(3, 4, 5)], lambda b, x: b.flatten(x, 1, -2), lambda m, x: x.flatten(1, -2)),
    "slice": ([(4, 7)], lambda b, x: b.slice(x, -1, 1, -1, 2), lambda m, x: x[:, :, 1:-1:2]),
    "slice_clamped": ([(4, 7)], lambda b, x: b.slice(x, 1, -10, 100), lambda m, x: x[:, -10:100]),
    "select": ([(4, 7)], lambda b, x: b.select(x, 1, -1), lambda m, x: x[:, -1]),
    "concat_dim2": ([(3, 4), (3, 2)], lambda b, x, y: b.concat([x, y], dim=2), lambda m, x, y: torch.cat([x, y], 2)),
    "stack": ([(3, 4), (3, 4)], lambda b, x, y: b.stack([x, y], dim=-1), lambda m, x, y: torch.stack([x, y], -1)),
    "pad": ([(2, 4, 5)], lambda b, x: b.pad(x, [1, 2, -1, 0], value=0.5), lambda m, x: F.pad(x, (1, 2, -1, 0), value=0.5)),
    "matmul": ([(2, 5, 4), (2, 4, 3)], lambda b, x, y: b.matmul(x, y), lambda m, x, y: x @ y),
    "matmul_broadcast_b": ([(3, 5, 4), (1, 4, 3)], lambda b, x, y: b.matmul(x, y), lambda m, x, y: x @ y),
    "matmul_broadcast_a": ([(1, 5, 4), (3, 4, 3)], lambda b, x, y: b.matmul(x, y), lambda m, x, y: x @ y),
    "softmax": ([(3, 5)], lambda b, x: b.softmax(x, 1), lambda m, x: x.softmax(1)),
    "reduce_mean": ([(3, 4, 5)], lambda b, x: b.reduce(x, "mean", [-1, -2]), lambda m, x: x.mean((-1, -2))),
    "reduce_sum_keepdim": ([(3, 4)], lambda b, x: b.reduce(x, "sum", [1], keepdim=True), lambda m, x: x.sum(1, True)),
    "reduce_amax": ([(3, 4)], lambda b, x: b.reduce(x, "amax", [2]), lambda m, x: x.amax(2)),
    "reduce_amin": ([(3, 4)], lambda b, x: b.reduce(x, "amin", [1]), lambda m, x: x.amin(1)),
    "reduce_norm": ([(3, 4, 5)], lambda b, x: b.reduce(x, "norm", [1, 2], keepdim=True),
                    lambda m, x: x.norm(p=2, dim=(1, 2), keepdim=True)),
    "normalize": ([(3, 4)], lambda b, x: b.normalize(x, -1), lambda m, x: F.normalize(x, dim=-1)),
    "normalize_spatial": ([(2, 3, 4)], lambda b, x: b.normalize(x, 2, eps=1e-6), lambda m, x: F.normalize(x, dim=2, eps=1e-6)),
    "addcmul": ([(3, 4), (1, 4), (3, 4)], lambda b, a, x, y: b.addcmul(a, x, y),
                lambda m, a, x, y: a + x * y),
    "addcmul_value": ([(1, 4), (1, 4), (3, 4)], lambda b, a, x, y: b.addcmul(a, x, y, value=0.5),
                      lambda m, a, x, y: torch.addcmul(a, x, y, value=0.5)),
    "conv1d": ([(1, 16)], lambda b, x: b.conv1d(x, 1, 3, padding=1, bias=False, name="c"), lambda m, x: m.c(x)),
    "conv1d_grouped": ([(4, 9)], lambda b, x: b.conv1d(x, 6, 3, stride=2, groups=2, name="c"), lambda m, x: m.c(x)),
    "add_broadcast": ([(3, 4), (1, 4)], lambda b, x, y: b.add(x, y), lambda m, x, y: x + y),
    "sub": ([(3, 4), (3, 1)], lambda b, x, y: b.sub(x, y), lambda m, x, y: x - y),
    "div": ([(3, 4), (3, 4)], lambda b, x, y: b.div(x, y), lambda m, x, y: x / y),
    "mul_tokens": ([(3, 4), (1, 4)], lambda b, x, y: b.mul(x, y), lambda m, x, y: x * y),
    "sdpa_flash": ([(2, 5, 4), (2, 7, 4), (2, 7, 4)], lambda b, q, k, v: b.sdpa(q, k, v),
                   lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v)),
    "sdpa_tokens_causal": ([(5, 4), (5, 4), (5, 4)], lambda b, q, k, v: b.sdpa(q, k, v, is_causal=True, scale=0.3),
                           lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)),
    "sdpa_math": ([(2, 5, 4), (2, 7, 4), (2, 7, 3)], lambda b, q, k, v: b.sdpa(q, k, v),
                  lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v)),
    "sdpa_math_rank4": ([(2, 2, 5, 4), (2, 2, 7, 4), (2, 2, 7, 4)], lambda b, q, k, v: b.sdpa(q, k, v),
                        lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v)),
    "sdpa_math_causal": ([(2, 5, 4), (2, 7, 4), (2, 7, 3)], lambda b, q, k, v: b.sdpa(q, k, v, is_causal=True),
                         lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
    "multihead_attention": ([(6, 8)], lambda b, x: b.multihead_attention(x, 8, 2, name="attn"),
                            lambda m, x: m.attn(x, x, x, need_weights=False)[0]),
    "multihead_attention_no_bias": ([(6, 8)], lambda b, x: b.multihead_attention(x, 8, 2, bias=False, name="attn"),
                                    lambda m, x: m.attn(x, x, x, need_weights=False)[0]),
    "parameter": ([(3, 4)], lambda b, x: b.add(x, b.parameter(x, shape=[1, 4], stored=[4], name="pos")),
                  lambda m, x: x + m.pos.reshape(1, 1, 4)),
}
_INDEX = torch.tensor([3, 0, 0, 2, 1])  # a gather with a repeat, out of order
_MASK = torch.tensor([[0.0, -100.0, 0.0, -100.0]])


def _constant(b, ref, value):
    from archlab.ops.constant import encode

    return b.constant(ref, shape=list(value.shape), dtype=str(value.dtype).replace("torch.", ""),
                      data=encode(value.numpy().tobytes()))


CASES.update({
    "exp": ([(3, 4)], lambda b, x: b.exp(x), lambda m, x: torch.exp(x)),
    "clamp_max": ([(3, 4)], lambda b, x: b.clamp(x, max=0.3), lambda m, x: torch.clamp(x, max=0.3)),
    "clamp_both": ([(3, 4)], lambda b, x: b.clamp(x, min=-0.2, max=0.3), lambda m, x: x.clamp(-0.2, 0.3)),
    "sdpa_mask_rank4": ([(2, 2, 5, 4), (2, 2, 7, 4), (2, 2, 7, 4), (1, 2, 5, 7)],
                        lambda b, q, k, v, m: b.sdpa(q, k, v, m),
                        lambda m, q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
    "sdpa_mask_tokens": ([(2, 5, 4), (2, 7, 4), (2, 7, 4), (1, 5, 7)], lambda b, q, k, v, m: b.sdpa(q, k, v, m),
                         lambda m, q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
    "roll": ([(3, 4, 5)], lambda b, x: b.roll(x, shifts=[1, -2], dims=[2, 3]), lambda m, x: torch.roll(x, (1, -2), (2, 3))),
    "constant": ([(3, 4)], lambda b, x: b.add(x, _constant(b, x, _MASK)), lambda m, x: x + _MASK),
    "index_select": ([(4, 3)], lambda b, x: b.index_select(x, _constant(b, x, _INDEX), dim=1),
                     lambda m, x: x[:, _INDEX]),
})
for fn, expr in (("add", lambda x: x + 1.5), ("sub", lambda x: x - 1.5), ("rsub", lambda x: 1.5 - x),
                 ("mul", lambda x: x * 1.5), ("div", lambda x: x / 1.5), ("rdiv", lambda x: 1.5 / x),
                 ("pow", lambda x: x ** 1.5)):
    CASES[f"scalar_{fn}"] = ([(3, 4)], lambda b, x, fn=fn: b.scalar(x, fn, 1.5), lambda m, x, expr=expr: expr(x))


def _graph(name, *, grad: bool = False):
    """The case's graph; with ``grad``, each input first goes through ``mul`` by
    a learned scale (a ``parameter``), so that the op's inputs require grad."""
    shapes, build, _ = CASES[name]
    b = archlab.GraphBuilder(name)
    refs = [b.input(s, name=f"x{i}") for i, s in enumerate(shapes)]
    if grad:
        refs = [b.mul(r, b.parameter(r, shape=[1] * len(r.shape), name=f"scale{i}"), name=f"in{i}")
                for i, r in enumerate(refs)]
    b.output(build(b, *refs))
    return b.build()


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_op_computes_what_it_names(name):
    shapes, _, reference = CASES[name]
    g = _graph(name)
    torch.manual_seed(0)
    m = archlab.to_module(g)
    xs = _inputs(shapes)
    if name.startswith(("scalar_pow", "scalar_rdiv")):
        xs = [x.abs() + 0.5 for x in xs]
    with torch.no_grad():
        got, want = m(*xs), reference(m, *xs)
    assert tuple(got.shape) == (BATCH, *g[g.outputs["out"]].shape)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_params_are_the_modules_parameters(name):
    g = _graph(name)
    assert g.num_params() == sum(p.numel() for p in archlab.to_module(g).parameters())


@pytest.mark.parametrize("name", sorted(CASES))
def test_torchvision_and_fvcore_macs_equal_the_peer_tools(name):
    shapes = CASES[name][0]
    g = _graph(name)
    assert mac_counts(g, "torchvision").total * BATCH == _flop_counter(archlab.to_module(g), shapes)
    assert mac_counts(g, "fvcore").total * BATCH == _fvcore(archlab.to_module(g), shapes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_inference_peak_equals_the_tensors_a_real_forward_holds(name):
    shapes = CASES[name][0]
    g = _graph(name, grad=True)
    m = archlab.to_module(g)
    assert activation_memory(g, batch=BATCH).peak_bytes == tensor_peak_bytes(m, *_inputs(shapes))


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_for_backward_equals_what_autograd_saves(name):
    shapes = CASES[name][0]
    g = _graph(name, grad=True)
    m = archlab.to_module(g)
    assert training_memory(g, batch=BATCH, optimizer="sgd").activations == saved_tensor_bytes(m, *_inputs(shapes))


def test_attention_macs_per_convention():
    # L=6 tokens of E=8, 2 heads: projections 4*L*E^2 = 1536, attention 2*L^2*E = 576.
    g = _graph("multihead_attention")
    assert mac_counts(g, "torchvision").total == 1536 + 576
    assert mac_counts(g, "fvcore").total == 1536  # fvcore skips scaled_dot_product_attention
    assert mac_counts(g, "full").total == 1536 + 576 + 4 * 6 * 8 + 3 * 2 * 6 * 6  # + biases + softmax
    # q (2, 5, 4), k (2, 7, 4), v (2, 7, 3): L*S*(E + Ev) per head.
    assert mac_counts(_graph("sdpa_math"), "torchvision").total == 2 * 5 * 7 * (4 + 3)


def test_norm_macs_follow_fvcore():
    assert mac_counts(_graph("layer_norm"), "fvcore").total == 5 * 5 * 8  # affine: 5 per element
    assert mac_counts(_graph("layer_norm_2d_no_affine"), "full").total == 4 * 3 * 4 * 6  # 4 without
    assert mac_counts(_graph("layer_norm"), "torchvision").total == 0


def test_multihead_attention_state_dict_keys_are_torchs():
    keys = set(archlab.to_module(_graph("multihead_attention")).state_dict())
    assert keys == {"attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias"}


def test_parameter_is_a_view_that_allocates_nothing():
    g = _graph("parameter")
    report = activation_memory(g, batch=BATCH)
    assert report.out_bytes["pos"] == 0
    assert dict(archlab.to_module(g).named_parameters())["pos"].shape == (4,)  # the stored shape
    assert g.num_params() == 4


def test_reshape_after_permute_copies_and_the_count_knows():
    """ShuffleNet's channel shuffle: the final reshape cannot view the permuted
    tensor, so it allocates (the first reshape and the permute are views)."""
    b = archlab.GraphBuilder("shuffle")
    x = b.input((6, 4, 4))
    y = b.reshape(b.relu(x), [2, 3, 4, 4], name="split")
    y = b.permute(y, [0, 2, 1, 3, 4], name="swap")
    b.output(b.relu(b.reshape(y, [6, 4, 4], name="merge")))
    g = b.build()
    report = activation_memory(g, batch=BATCH)
    assert report.alias_of["split"] == report.alias_of["swap"] == "relu"
    assert report.alias_of["merge"] == "merge" and report.out_bytes["merge"] == BATCH * 4 * 96
    assert report.peak_bytes == tensor_peak_bytes(archlab.to_module(g), *_inputs([(6, 4, 4)]))


def test_channel_shuffle_keeps_receptive_fields_exact():
    def net(shuffle):
        b = archlab.GraphBuilder("shuffle")
        y = b.conv2d(b.input((6, 16, 16)), 6, 3, padding=1, name="c1")
        if shuffle:
            y = b.reshape(b.permute(b.reshape(y, [2, 3, 16, 16]), [0, 2, 1, 3, 4]), [6, 16, 16])
        b.output(b.conv2d(y, 6, 3, stride=2, padding=1, name="c2"))
        return receptive_fields(b.build())["c2"]

    assert net(True) == net(False) and not net(True).is_global and net(True).exact


def test_ops_that_mix_spatial_axes_are_global():
    b = archlab.GraphBuilder("mix")
    x = b.conv2d(b.input((4, 8, 8)), 4, 3, padding=1, name="c")
    rules = {
        "over_channels": b.softmax(x, 1), "over_width": b.softmax(x, -1),
        "to_channels_last": b.permute(x, [0, 2, 3, 1]), "keeps_spatial": b.permute(
            b.reshape(x, [2, 2, 8, 8]), [0, 2, 1, 3, 4]),
        "mean_hw": b.reduce(x, "mean", [2, 3], keepdim=True), "mean_c": b.reduce(x, "mean", [1], keepdim=True),
        "ln": b.layer_norm(x), "tokens": b.flatten(x, 2),
    }
    b.output(b.concat([b.flatten(r) for r in rules.values()], dim=1))
    fields = receptive_fields(b.build())
    local = {k for k, r in rules.items() if not fields[r.name].is_global}
    assert local == {"over_channels", "keeps_spatial", "mean_c"}


def test_pad_and_slice_shift_the_field_exactly():
    b = archlab.GraphBuilder("shift")
    x = b.input((1, 16, 16))
    padded = b.pad(x, [2, 0, 1, 0], name="pad")  # 2 left, 1 top
    crop = b.slice(b.slice(x, 2, 3, None, 2, name="rows"), 3, 1, name="cols")
    b.output(b.concat([b.flatten(padded), b.flatten(crop)], dim=1))
    fields = receptive_fields(b.build())
    assert fields["pad"].start == (-1, -2) and fields["pad"].size == (1, 1)
    assert fields["cols"].start == (3, 1) and fields["cols"].jump == (2, 1)


def test_a_parameter_is_a_constant_and_sums_keep_the_other_field():
    b = archlab.GraphBuilder("pos")
    x = b.conv2d(b.input((3, 8, 8)), 4, 3, padding=1, name="c")
    pos = b.parameter(x, shape=[4, 8, 8], name="pos")
    b.output(b.add(x, pos, name="sum"))
    fields = receptive_fields(b.build())
    assert fields["pos"].is_constant and str(fields["pos"]) == "constant"
    assert fields["sum"] == fields["c"]


def test_tiny_vision_transformer_end_to_end():
    """Patch embedding, class token, position embedding, pre-norm attention and
    MLP blocks with layer scale, head on the class token."""
    b = archlab.GraphBuilder("vit")
    x = b.input((3, 16, 16))
    t = b.permute(b.flatten(b.conv2d(x, 8, 4, stride=4, name="conv_proj"), 2), [0, 2, 1])  # 16 x 8
    t = b.concat([b.parameter(t, shape=[1, 8], name="class_token"), t], dim=1)
    t = b.add(t, b.parameter(t, shape=[17, 8], stored=[1, 17, 8], name="pos_embedding"))
    a = b.multihead_attention(b.layer_norm(t, eps=1e-6, name="ln_1"), 8, 2, name="self_attention")
    t = b.add(t, b.mul(a, b.parameter(a, shape=[1, 8], name="gamma")))
    h = b.linear(b.gelu(b.linear(b.layer_norm(t, name="ln_2"), 16, name="mlp_0")), 8, name="mlp_3")
    t = b.add(t, h)
    b.output(b.linear(b.select(t, 1, 0), 10, name="head"))
    g = b.build()
    m = archlab.to_module(g)
    assert m(torch.randn(BATCH, 3, 16, 16)).shape == (BATCH, 10)
    assert g.num_params() == sum(p.numel() for p in m.parameters())
    assert mac_counts(g, "torchvision").total * BATCH == flop_counter_macs(m, (3, 16, 16), batch=BATCH)
    xs = _inputs([(3, 16, 16)])
    assert activation_memory(g, batch=BATCH).peak_bytes == tensor_peak_bytes(archlab.to_module(g), *xs)
    assert training_memory(g, batch=BATCH, optimizer="sgd").activations == saved_tensor_bytes(archlab.to_module(g), *xs)
    assert load(dump(g)) == g
    assert receptive_fields(g)["head"].is_global


def test_files_round_trip_square_int_lists():
    b = archlab.GraphBuilder("square")
    x = b.input((4, 4))
    b.output(b.pad(b.reshape(x, [2, 8]), [1, 1]))
    g = b.build()
    text = dump(g)
    assert "shape: [4, 4]" in text and "pads: [1, 1]" in text
    assert load(text) == g


@pytest.mark.parametrize("build, match", [
    (lambda b, x: b.softmax(x, 0, name="sm"), r"softmax 'sm'.*dim=0 is the batch dimension.*1\.\.2 or -2\.\.-1"),
    (lambda b, x: b.reduce(x, "mean", [3], name="r"), r"reduce 'r'.*dims=3 is out of range"),
    (lambda b, x: b.permute(x, [1, 0, 2], name="p"), r"permute 'p'.*moves the batch dimension.*keep 0"),
    (lambda b, x: b.reshape(x, [5, -1], name="rs"), r"reshape 'rs'.*12 elements do not divide"),
    (lambda b, x: b.slice(x, 1, 5, name="s"), r"slice 's'.*selects nothing"),
    (lambda b, x: b.select(x, 2, 4, name="sel"), r"select 'sel'.*index 4 is out of range"),
    (lambda b, x: b.matmul(x, x, name="mm"), r"matmul 'mm'.*inner sizes differ"),
    (lambda b, x: b.sub(x, b.reshape(x, [4, 3]), name="d"), r"sub 'd'.*dim 1 differs"),
    (lambda b, x: b.layer_norm(x, 3, name="ln"), r"layer_norm 'ln'.*normalized_dims=3 exceeds"),
    (lambda b, x: b.group_norm(x, 2, name="gn"), r"group_norm 'gn'.*num_groups=2 must divide the 3 channels"),
    (lambda b, x: b.multihead_attention(x, 4, 3, name="mha"), r"multihead_attention 'mha'.*num_heads=3"),
    (lambda b, x: b.sdpa(x, x, b.reshape(x, [4, 3]), name="att"), r"sdpa 'att'.*k has 3 positions, v 4"),
    (lambda b, x: b.parameter(x, shape=[3, 4], stored=[13], name="w"), r"parameter 'w'.*stored shape \[13\]"),
    (lambda b, x: b.pad(x, [1], name="pd"), r"pad 'pd'.*pairs"),
    (lambda b, x: b.scalar(x, "exp", 1.0, name="sc"), r"scalar 'sc'.*fn='exp' is not one of"),
    (lambda b, x: b.gelu(x, approximate="erf", name="g"), r"gelu 'g'.*approximate='erf'"),
    (lambda b, x: b.stack([x, b.reshape(x, [4, 3])], name="st"), r"stack 'st'.*differ in shape"),
])
def test_shape_errors_name_the_node_and_the_fix(build, match):
    b = archlab.GraphBuilder("errors")
    x = b.input((3, 4))
    with pytest.raises(ShapeError, match=match):
        build(b, x)


def test_concat_keeps_its_channel_default_and_old_files_load():
    text = "nodes:\n- {name: x, op: input, shape: [2, 4, 4]}\n- {name: c, op: concat, in: [x, x]}\n- {name: f, op: flatten, in: [c]}\noutputs: f\n"
    g = load(text)
    assert g["c"].shape == (4, 4, 4) and g["f"].shape == (64,)
    assert "dim" not in dump(g) and "start_dim" not in dump(g)


def test_elementwise_full_counts():
    n = 3 * 4
    assert mac_counts(_graph("gelu"), "full").total == 4 * 6
    assert mac_counts(_graph("softmax"), "full").total == 3 * 3 * 5
    assert mac_counts(_graph("reduce_amax"), "full").total == n  # one per input element
    assert mac_counts(_graph("scalar_pow"), "full").total == n
    assert mac_counts(_graph("matmul"), "full").total == 2 * 5 * 3 * 4 == math.prod((2, 5, 3)) * 4


@pytest.mark.parametrize("gain", [True, False])
def test_std_conv2d_counts_and_memory_are_torchs(gain):
    """Weight standardisation runs once per forward: MACs are exact at batch 1, memory at any batch."""
    b = archlab.GraphBuilder("std")
    b.output(b.std_conv2d(b.input((4, 9, 9)), 6, 3, padding=1, eps=1e-5, gain=gain, scale=0.3, bias=gain, name="c"))
    g = b.build()
    m = archlab.to_module(g)
    assert g.num_params() == sum(p.numel() for p in m.parameters())
    assert mac_counts(g, "torchvision").total == flop_counter_macs(archlab.to_module(g), (4, 9, 9), batch=1)
    assert mac_counts(g, "fvcore").total == fvcore_macs(archlab.to_module(g), (4, 9, 9), batch=1)[0]
    for batch in (1, 3):
        x = torch.randn(batch, 4, 9, 9)
        assert training_memory(g, batch=batch, optimizer="sgd").activations == saved_tensor_bytes(m, x)
        assert activation_memory(g, batch=batch).peak_bytes == tensor_peak_bytes(m, x)
