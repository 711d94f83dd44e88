"""Importing values whose dim 0 is not the batch (``archlab.torchio.import_shifted``):
constants folded into one ``constant`` node, parameter-derived tensors computed
on ``parameter`` nodes, windows merged into the batch dim; einsum and masked
attention (``archlab.torchio.import_windows``); Swin and MaxViT themselves.

Each small model is checked at a batch of 3 (the trace saw 1) after a strict
``load_state_dict``: same outputs, same parameter count, MACs equal to
FlopCounterMode's.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.analysis import mac_counts
from archlab.errors import ImportTorchError
from archlab.torchio.peers import flop_counter_macs


def assert_exact(model: nn.Module, input_shape=(4, 6, 6)):
    """Import, compile with a strict state_dict and compare at batch 3; returns the graph."""
    model.eval()
    graph = archlab.from_torch(model, input_shape)
    assert graph.num_params() == sum(p.numel() for p in model.parameters())
    assert mac_counts(graph, "torchvision").total == flop_counter_macs(copy.deepcopy(model), input_shape)
    compiled = archlab.to_module(graph, state_dict=model.state_dict()).double()  # strict
    x = torch.randn(3, *input_shape, dtype=torch.float64)
    with torch.no_grad():
        want, got = model.double()(x), compiled(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    return graph


def ops(graph) -> list[str]:
    return [n.op for n in graph]


# -- constants --------------------------------------------------------------------------------
class BufferBias(nn.Module):
    def __init__(self, persistent: bool):
        super().__init__()
        self.register_buffer("bias", torch.linspace(-1, 1, 6).view(1, 6), persistent=persistent)

    def forward(self, x):
        return x + self.bias


@pytest.mark.parametrize("persistent", [True, False])
def test_a_buffer_is_a_constant_named_after_it_with_its_persistence(persistent):
    graph = assert_exact(BufferBias(persistent))
    (const,) = [n for n in graph if n.op == "constant"]
    assert const.name == "bias" and const.attrs["persistent"] is persistent
    assert ("bias" in archlab.to_module(graph).state_dict()) is persistent


def test_a_mask_built_from_sizes_is_one_constant():
    class Masked(nn.Module):  # Swin's shift mask in small: new_zeros, item assignment, masked_fill
        def forward(self, x):
            mask = x.new_zeros(x.shape[-2:])
            for k, (a, b) in enumerate(((0, -2), (-2, -1), (-1, None))):
                mask[a:b, :] = k
            m = mask.view(-1)
            m = (m.unsqueeze(1) - m.unsqueeze(0)).masked_fill(m.unsqueeze(1) != m.unsqueeze(0), -100.0)
            return x.flatten(2) @ m

    graph = assert_exact(Masked())
    assert ops(graph).count("constant") == 1


def test_a_constant_computed_from_a_persistent_buffer_is_refused():
    class Derived(nn.Module):  # folding would drop the buffer's state_dict key
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(6))

        def forward(self, x):
            return x * (self.scale * 2)

    with pytest.raises(ImportTorchError, match="persistent buffer.*'scale'"):
        archlab.from_torch(Derived(), (4, 6, 6))


# -- parameter-derived values -----------------------------------------------------------------------
class RelativeBias(nn.Module):
    """Swin's relative-position bias: a parameter table gathered by a buffer index,
    viewed, permuted and broadcast over windows of tokens."""

    def __init__(self, heads=2, n=6):
        super().__init__()
        self.heads, self.n = heads, n
        self.table = nn.Parameter(torch.randn(2 * n - 1, heads))
        i = torch.arange(n)
        self.register_buffer("index", (i[:, None] - i[None, :] + n - 1).flatten())

    def forward(self, x):  # x: B x C x H x W, tokens n = W
        bias = self.table[self.index].view(self.n, self.n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        attn = x[:, : self.heads] @ x[:, : self.heads].transpose(-2, -1) + bias
        return attn.softmax(-1) @ x[:, self.heads:]


def test_a_parameter_gathered_by_a_constant_index_is_an_index_select():
    graph = assert_exact(RelativeBias())
    assert "index_select" in ops(graph) and "parameter" in ops(graph)


class LeViTAttention(nn.Module):
    """LeViT in miniature: batch norm over tokens merged into the batch dim, and
    attention biases gathered by a 2-D index buffer along dim 1 (``biases[:, idxs]``)."""

    def __init__(self, c=4, n=6, heads=2):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.bn = nn.BatchNorm1d(3 * c)
        self.biases = nn.Parameter(torch.randn(heads, n))
        i = torch.arange(n)
        self.register_buffer("idxs", (i[:, None] - i[None, :]).abs(), persistent=False)
        self.heads, self.c = heads, c

    def forward(self, x):  # x: B x C x H x W -> tokens B x (H*W) x C; H*W = n
        t = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(t)
        qkv = self.bn(qkv.flatten(0, 1)).reshape_as(qkv)
        b, n, _ = t.shape
        q, k, v = qkv.view(b, n, self.heads, -1).permute(0, 2, 1, 3).split(3 * self.c // (3 * self.heads), dim=3)
        attn = (q @ k.transpose(-2, -1) + self.biases[:, self.idxs]).softmax(-1)
        return (attn @ v).transpose(1, 2).reshape(b, n, -1)


def test_levit_token_batch_norm_and_a_2d_gather_import_exactly():
    model = LeViTAttention()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    graph = assert_exact(model, (4, 2, 3))
    assert {n.op for n in graph.nodes} >= {"batch_norm1d", "index_select"}
    assert next(n for n in graph.nodes if n.op == "batch_norm1d").attrs["channels_last"]


class FourierPosition(nn.Module):
    """XCiT's position encoding in miniature: a layer over a grid built from sizes
    (one sample, computed without the input), repeated over the batch."""

    def __init__(self, c=4):
        super().__init__()
        self.proj = nn.Conv2d(2, c, 1)

    def forward(self, x):
        (b, _, h, w), device = x.shape, self.proj.weight.device
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=device).view(1, h, 1).repeat(1, 1, w)
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=device).view(1, 1, w).repeat(1, h, 1)
        grid = torch.stack((ys / h, xs / w), dim=1).to(self.proj.weight.dtype)  # 1 x 2 x H x W
        return x + self.proj(grid).repeat(b, 1, 1, 1)


def test_a_layer_over_a_constant_sample_runs_per_sample():
    graph = assert_exact(FourierPosition())
    conv = next(n for n in graph.nodes if n.op == "conv2d")
    assert conv.name == "proj" and graph[conv.inputs[0]].op in ("constant", "reshape")


def test_an_mlp_on_a_constant_table_counts_once_per_sample():
    """Swin v2's continuous position bias: an MLP over a constant coordinate table;
    at batch 1 FlopCounterMode's once-per-forward count equals the per-sample one."""
    class CPB(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("coords", torch.randn(1, 6, 6, 2))
            self.mlp = nn.Sequential(nn.Linear(2, 8), nn.ReLU(inplace=True), nn.Linear(8, 1, bias=False))
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(1, 1, 1)))

        def forward(self, x):
            bias = 16 * torch.sigmoid(self.mlp(self.coords).view(6, 6))
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            return x * scale + bias

    graph = assert_exact(CPB())
    assert {"linear", "clamp", "exp"} <= set(ops(graph))


def test_a_bias_clone_with_a_zeroed_slice_is_a_product_with_a_mask():
    class ZeroedBias(nn.Module):  # Swin v2's qkv bias: the key third zeroed
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(6, 18)

        def forward(self, x):
            bias = self.qkv.bias.clone()
            bias[6:12].zero_()
            return F.linear(x, self.qkv.weight, bias)

    graph = assert_exact(ZeroedBias())
    assert {"constant", "mul", "matmul"} <= set(ops(graph))


def test_an_in_place_write_whose_result_is_unused_is_still_seen():
    class Written(nn.Module):
        def forward(self, x):
            y = x.clone()
            y[:, :2].zero_()
            return y * 2

    with pytest.raises(ImportTorchError, match="in place"):
        archlab.from_torch(Written(), (4, 6, 6))


# -- windows merged into the batch dim ------------------------------------------------------------
def test_windows_merged_into_the_batch_dim_and_back():
    class Windows(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            b, c, h, w = x.shape
            t = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
            t = self.fc(t.reshape(-1, 4, c)).softmax(-1)  # B*9 windows of 4 tokens
            return t.view(b, h // 2, w // 2, 2, 2, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)

    assert_exact(Windows())


def test_a_reshape_that_does_not_merge_whole_leading_dims_into_the_batch_is_refused():
    class Odd(nn.Module):
        def forward(self, x):
            return x.reshape(2, -1) * 2  # (1, 4, 6, 6) -> (2, 72): half a channel block in dim 0

    with pytest.raises(ImportTorchError, match="merging it with whole leading dims"):
        archlab.from_torch(Odd(), (4, 6, 6))


def test_roll_imports_as_roll():
    class Rolled(nn.Module):
        def forward(self, x):
            return torch.roll(x, shifts=(-1, 2), dims=(2, 3)) + x.roll(1, -1)

    assert ops(assert_exact(Rolled())).count("roll") == 2


# -- MaxViT: einsum and masked attention -------------------------------------------------------------
class EinsumAttention(nn.Module):
    def forward(self, x):  # x: B x C x H x W as heads x tokens x features
        dots = torch.einsum("b h i d, b h j d -> b h i j", x, x * 0.5)
        return torch.einsum("bhij,bhjd->bhid", dots.softmax(-1), x)


def test_einsum_matrix_products_are_matmuls_counted_as_fvcore_counts_einsum():
    from archlab.torchio.peers import fvcore_macs

    model = EinsumAttention()
    graph = assert_exact(model, (2, 7, 5))
    assert ops(graph).count("matmul") == 2
    assert mac_counts(graph, "fvcore").total == fvcore_macs(EinsumAttention(), (2, 7, 5))[0]


@pytest.mark.parametrize("equation", ["bij,bjk,bkl->bil", "bii->bi", "bij,bkl->bijkl", "ij,bjk->bik"])
def test_other_einsums_are_refused(equation):
    class Other(nn.Module):
        def forward(self, x):
            operands = [x.flatten(2)] * equation.split("->")[0].count(",") + [x.flatten(2)]
            return torch.einsum(equation, *operands)

    with pytest.raises(ImportTorchError, match="einsum"):
        archlab.from_torch(Other(), (4, 2, 2))


def test_attention_with_a_parameter_derived_mask_keeps_the_mask():
    class Masked(RelativeBias):
        def forward(self, x):
            bias = self.table[self.index].view(self.n, self.n, -1).permute(2, 0, 1).unsqueeze(0)
            q = x[:, : self.heads]
            return F.scaled_dot_product_attention(q, q, x[:, self.heads:], attn_mask=bias)

    graph = assert_exact(Masked())
    (sdpa,) = [n for n in graph if n.op == "sdpa"]
    assert len(sdpa.inputs) == 4


# -- Swin ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("source, name", [("torchvision", "swin_t"), ("torchvision", "swin_v2_t"),
                                          ("timm", "swin_tiny_patch4_window7_224"), ("torchvision", "maxvit_t"),
                                          ("timm", "maxvit_pico_rw_256")])
def test_swin_and_maxvit_import_exactly(source, name):
    from archlab.torchio.coverage import ModelSpec, check

    r = check(ModelSpec(source, name))
    assert (r.params_ok, r.torchvision_ok, r.fvcore_ok, r.outputs_ok, r.strict_ok) == (True,) * 5, r.notes


class _HardCodedFold(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):  # 4 is the channel count: at batch 1 it looks like a fold of the batch with channels
        return self.c(x).reshape(4, -1).softmax(-1).reshape(-1, 4, 6, 6)


class _PadAcrossSamples(nn.Module):
    def forward(self, x):
        return F.pad(x.reshape(x.shape[0] * 4, 36), (0, 0, 1, -1)).reshape(x.shape)


class _ConstantChangedAfterRead(nn.Module):
    def forward(self, x):
        m = x.new_ones(1, 1, 1, 6)
        y = x + m
        m.mul_(3)
        return y + m


class _BufferWritten(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("b", torch.ones(1, 4, 1, 1))

    def forward(self, x):
        self.b[:, :2] = 7.0
        return x + self.b


@pytest.mark.parametrize("model", [_HardCodedFold, _PadAcrossSamples, _ConstantChangedAfterRead, _BufferWritten])
def test_what_batch_one_hides_is_caught_at_batch_two(model):
    m = model().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ImportTorchError, match="differs from the model at batch 2"):
        archlab.from_torch(m, (4, 6, 6))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # the model is as it was


def test_a_forward_that_writes_its_weights_is_refused():
    class Writes(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            with torch.no_grad():
                self.c.weight.mul_(2)
            return self.c(x)

    with pytest.raises(ImportTorchError, match="writes parameter"):
        archlab.from_torch(Writes().eval(), (4, 6, 6))
