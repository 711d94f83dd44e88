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
    # refused, each for its own reason: the importer must say so, not import something else
    "unsqueeze_batch": lambda m: lambda x: x.unsqueeze(0).sum(0),
    "value_branch": lambda m: lambda x: x if x.sum().item() > 0 else -x,
    "roll": lambda m: lambda x: torch.roll(x, 1, dims=2),
    "inplace_through_view": lambda m: _view_then_inplace,
    "shared_conv": lambda m: (lambda c: lambda x: c(c(x)))(m.add(nn.Conv2d(C, C, 1))),
}


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


@pytest.mark.parametrize("name", ["unsqueeze_batch", "value_branch", "roll", "inplace_through_view", "shared_conv"])
def test_each_refused_step_is_refused_on_its_own(name):
    with pytest.raises(ImportTorchError):
        archlab.from_torch(Random([name]).eval(), (C, H, H))
