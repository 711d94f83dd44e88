"""Fuzz the importer: random models built from a vocabulary of torch code
(layers, functional calls, views, permutes, indexing, attention, in-place
ops, code that moves the batch). Whatever the model, ``from_torch`` either
raises an ``ImportTorchError`` or gives a graph that is exact: the same
outputs at a batch size other than the traced one, the same parameter count
and the same MACs as FlopCounterMode. Never a crash, never silent nonsense."""
from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from timm.layers import ScaledStdConv2d

import archlab
from archlab.analysis import mac_counts
from archlab.errors import ImportTorchError
from archlab.torchio.peers import flop_counter_macs

C, H = 4, 6  # every step maps an N x C x H x H tensor to one of the same shape


def _conv(m):
    return lambda x: m(x)


# Each step: (name, make(module) -> fn(x)); modules it needs are created by ``make``.
STEPS = {
    "conv": lambda m: _conv(m.add(nn.Conv2d(C, C, 3, padding=1))),
    "bn_relu_": lambda m: (lambda bn: lambda x: F.relu_(bn(x)))(m.add(nn.BatchNorm2d(C))),
    "gelu": lambda m: lambda x: F.gelu(x),
    "channels_last_mlp": lambda m: (lambda ln, fc: lambda x: fc(ln(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2))(
        m.add(nn.LayerNorm(C)), m.add(nn.Linear(C, C))),
    "se_gate": lambda m: (lambda fc: lambda x: x * torch.sigmoid(fc(x.mean((2, 3), keepdim=True))))(
        m.add(nn.Conv2d(C, C, 1))),
    "chunk_cat": lambda m: lambda x: torch.cat(list(reversed(x.chunk(2, dim=1))), dim=1),
    "shuffle": lambda m: lambda x: x.view(x.size(0), 2, C // 2, H, H).transpose(1, 2).reshape(x.size(0), C, H, H),
    "slice_pad": lambda m: lambda x: F.pad(x[:, :, 1:, :-1], (0, 1, 0, 1)),
    "layer_scale": lambda m: (lambda p: lambda x: x * p)(m.param(torch.rand(C, 1, 1) + 0.5)),
    "tokens_attention": lambda m: (lambda attn: lambda x: attn(
        x.flatten(2).transpose(1, 2), x.flatten(2).transpose(1, 2), x.flatten(2).transpose(1, 2),
        need_weights=False)[0].transpose(1, 2).reshape(x.shape))(m.add(nn.MultiheadAttention(C, 2, batch_first=True))),
    "sdpa_heads": lambda m: lambda x: F.scaled_dot_product_attention(
        *[x.flatten(2).view(x.size(0), 2, C // 2, H * H).transpose(2, 3)] * 3).transpose(2, 3).reshape(x.shape),
    "softmax_scalar": lambda m: lambda x: 2.0 * x.softmax(dim=1) - 1,
    "upsample_pool": lambda m: lambda x: F.avg_pool2d(F.interpolate(x, scale_factor=2, mode="bilinear"), 2),
    "residual": lambda m: (lambda c: lambda x: x + c(x))(m.add(nn.Conv2d(C, C, 3, padding=1, groups=2))),
    "grn": lambda m: (lambda g, b: lambda x: _grn(x, g, b))(m.param(torch.rand(1, C, 1, 1)), m.param(torch.rand(1, C, 1, 1))),
    "eca": lambda m: (lambda c: lambda x: x * c(x.mean((2, 3)).view(x.size(0), 1, -1)).view(x.size(0), -1, 1, 1)
                      .sigmoid().expand_as(x))(m.add(nn.Conv1d(1, 1, 3, padding=1, bias=False))),
    "normalize": lambda m: lambda x: F.normalize(x, dim=1) + F.normalize(x, dim=-1, eps=1e-3),
    "scaled_std_conv": lambda m: _conv(m.add(ScaledStdConv2d(C, C, 3, padding=1, gamma=1.7))),
    "roll": lambda m: lambda x: torch.roll(x, (1, -2), dims=(2, 3)),
    "windows": lambda m: m.add(_WindowAttention()),
    # refused, each for its own reason: the importer must say so, not import something else
    "unsqueeze_batch": lambda m: lambda x: x.unsqueeze(0).sum(0),
    "value_branch": lambda m: lambda x: x if x.sum().item() > 0 else -x,
    "inplace_through_view": lambda m: _view_then_inplace,
    "shared_conv": lambda m: (lambda c: lambda x: c(F.relu(c(x))))(m.add(nn.Conv2d(C, C, 1))),  # weights shared
}


def _grn(x, gamma, beta):
    """ConvNeXt-V2's global response normalisation (channels first)."""
    g = x.norm(p=2, dim=(2, 3), keepdim=True)
    return torch.addcmul(beta, gamma, x * (g / (g.mean(dim=1, keepdim=True) + 1e-6))) + x


class _WindowAttention(nn.Module):
    """Swin in miniature: a cyclic shift; 2x2 windows merged into the batch dim; a
    relative-position bias gathered from a parameter table by a buffer index; a
    shift mask built from sizes by item assignment; the windows merged back."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 1))
        self.register_buffer("index", torch.arange(16).view(4, 4).flip(1).reshape(-1) % 7)

    def forward(self, x):
        return _window_attention(x, self.table, self.index)


def _window_attention(x, table, index):
    b, c, h, w = x.shape
    t = torch.roll(x.permute(0, 2, 3, 1), shifts=(-1, -1), dims=(1, 2))
    t = t.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, c)  # B*9 windows of 4 tokens
    attn = (t * c ** -0.5) @ t.transpose(-2, -1)
    attn = attn + table[index].view(4, 4, 1).permute(2, 0, 1)
    mask = t.new_zeros((h, w))
    mask[-1:, :] = 1.0
    mask[:, -1:] = 2.0
    m = mask.view(h // 2, 2, w // 2, 2).permute(0, 2, 1, 3).reshape(9, 4)
    m = (m.unsqueeze(1) - m.unsqueeze(2)).masked_fill(m.unsqueeze(1) != m.unsqueeze(2), -100.0)
    attn = (attn.view(-1, 9, 4, 4) + m.unsqueeze(0)).view(-1, 4, 4).softmax(-1)
    t = (attn @ t).view(b, h // 2, w // 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    return torch.roll(t, shifts=(1, 1), dims=(1, 2)).permute(0, 3, 1, 2)


def _view_then_inplace(x):
    a = x[:, :2]  # a view, read after x is overwritten in place
    y = F.relu_(x)
    return y + a.sum(1, keepdim=True)


class Random(nn.Module):
    def __init__(self, names):
        super().__init__()
        self.layers = nn.ModuleList()
        self.params = nn.ParameterList()
        self.fns = [STEPS[n](self) for n in names]

    def add(self, module):
        self.layers.append(module)
        return module

    def param(self, value):
        self.params.append(nn.Parameter(value))
        return self.params[-1]

    def forward(self, x):
        for fn in self.fns:
            x = fn(x)
        return x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=5), st.integers(0, 2**16))
def test_random_models_import_exactly_or_are_refused(names, seed):
    torch.manual_seed(seed)
    model = Random(names).eval()
    try:
        graph = archlab.from_torch(model, (C, H, H))
    except ImportTorchError as e:
        assert str(e).startswith("cannot import") or str(e).startswith("from_torch"), str(e)
        return
    assert graph.num_params() == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):  # the same structure, counted without weights (steps close over their modules)
        twin = Random(names).eval()
    assert mac_counts(graph, "torchvision").total == flop_counter_macs(twin, (C, H, H))
    compiled = archlab.to_module(graph, state_dict=model.state_dict()).double()
    model = model.double()
    x = torch.randn(3, C, H, H, dtype=torch.float64)  # a batch of 3: the trace saw 1
    with torch.no_grad():
        want, got = model(x.clone()), compiled(x.clone())
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-9, atol=1e-9), names


@pytest.mark.parametrize("name", ["unsqueeze_batch", "value_branch", "inplace_through_view"])
def test_each_refused_step_is_refused_on_its_own(name):
    with pytest.raises(ImportTorchError):
        archlab.from_torch(Random([name]).eval(), (C, H, H))


@pytest.mark.parametrize("names", [["roll"], ["windows"], ["conv", "windows", "layer_scale", "windows"]])
def test_window_attention_imports_exactly(names):
    """Swin's ingredients (roll, windows merged into the batch, constant masks, a
    gathered bias) at a batch other than the traced one."""
    torch.manual_seed(0)
    model = Random(names).eval()
    graph = archlab.from_torch(model, (C, H, H))
    assert graph.num_params() == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        twin = Random(names).eval()
    assert mac_counts(graph, "torchvision").total == flop_counter_macs(twin, (C, H, H))
    compiled = archlab.to_module(graph, state_dict=model.state_dict()).double()
    x = torch.randn(3, C, H, H, dtype=torch.float64)
    with torch.no_grad():
        want, got = model.double()(x.clone()), compiled(x.clone())
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-9, atol=1e-9)
