"""The concrete tracer behind ``from_torch``: fx with the real values riding along."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import archlab
from archlab.errors import ImportTorchError
from archlab.torchio.import_rules import is_leaf
from archlab.torchio.trace import TensorValueControlFlow, concrete_trace


class SamePad(nn.Module):
    """TF "same" padding computed from the input size (timm's Conv2dSame, tf_efficientnet)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        ih, iw = x.shape[-2:]
        pad_h = max((-(ih // -2) - 1) * 2 + 3 - ih, 0)
        pad_w = max((-(iw // -2) - 1) * 2 + 3 - iw, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self.conv(x)


@pytest.mark.parametrize("size", [(3, 16, 16), (3, 15, 17)])
def test_size_dependent_python_is_specialised_on_the_example_input(size):
    model = SamePad().eval()
    graph = archlab.from_torch(model, size)
    x = torch.randn(2, *size)
    assert torch.equal(archlab.to_module(graph, state_dict=model.state_dict())(x), model(x))
    pads = graph["pad"].attrs["pads"]
    assert pads == ((0, 1, 0, 1) if size[1] == 16 else (1, 1, 1, 1))  # read from x.shape at trace time


class Chunky(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)  # iterating over a traced tuple
        n = len(x[0])  # len() of a traced tensor is an int
        return torch.cat([b, a * float(n)], dim=1)


def test_tuples_iterate_and_sizes_are_ints():
    model = Chunky()
    graph = archlab.from_torch(model, (4, 3, 3))
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(archlab.to_module(graph)(x), model(x))
    assert [graph[n].op for n in ("chunk.0", "chunk.1")] == ["slice", "slice"]


def test_control_flow_on_tensor_values_is_refused_not_specialised():
    class Branchy(nn.Module):
        def forward(self, x):
            return x.relu() if x.mean() > 0 else -x

    with pytest.raises(TensorValueControlFlow):
        concrete_trace(Branchy(), torch.zeros(1, 3, 4, 4), is_leaf)
    with pytest.raises(ImportTorchError, match="control flow on a tensor's value"):
        archlab.from_torch(Branchy(), (3, 4, 4))


def test_values_match_an_eager_run_and_leaves_run_in_eval_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    stats = model[1].running_mean.clone()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        graph, tracer = concrete_trace(model, x, is_leaf)
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    model.eval()
    assert torch.equal(tracer.values[out], model(x))
    assert torch.equal(model[1].running_mean, stats)  # eval: running statistics untouched


def test_import_restores_buffers_and_flags_of_a_training_model():
    class FunctionalBN(nn.Module):  # F.batch_norm in training mode would update the statistics
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return F.batch_norm(x, self.bn.running_mean, self.bn.running_var, training=self.training)

    model = FunctionalBN().train()
    with pytest.raises(ImportTorchError, match="training mode"):
        archlab.from_torch(model, (3, 4, 4))
    assert model.training and torch.equal(model.bn.running_var, torch.ones(3))  # the run set it to 0.9


def test_item_assignment_on_a_computed_tensor_is_one_line_naming_it():
    class Written(nn.Module):
        def forward(self, x):
            y = x * 2
            y[:, 1:, :2] = 1.0
            return y

    with pytest.raises(ImportTorchError, match=r"item assignment \(x\[\.\.\.\] = v\).*input.*functional") as info:
        archlab.from_torch(Written(), (3, 4, 4))
    assert "\n" not in str(info.value)


def test_item_assignment_on_a_constant_is_traced_and_folded():
    """Swin's shift mask: built from sizes (``x.new_zeros``) and item assignment, it
    depends on neither the input nor a parameter, so it becomes one constant."""
    class Masked(nn.Module):
        def forward(self, x):
            mask = x.new_zeros(x.shape[-2:])
            mask[1:, :2] = 1.0
            return x + mask

    model = Masked()
    graph = archlab.from_torch(model, (3, 4, 4))
    (const,) = [n for n in graph if n.op == "constant"]
    assert tuple(const.attrs["shape"]) == (4, 4) and not const.attrs["persistent"]
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(archlab.to_module(graph)(x), model(x))


def test_a_constant_read_before_it_is_written_is_refused():
    class Stale(nn.Module):
        def forward(self, x):
            mask = x.new_zeros(x.shape[-2:])
            y = x + mask
            mask[1:, :2] = 1.0
            return y + mask

    with pytest.raises(ImportTorchError, match="writes a constant after a computed value has read it"):
        archlab.from_torch(Stale(), (3, 4, 4))


class _Cached(torch.nn.Module):
    """Fills a cache on its first call in eval mode (timm's LeViT/TinyViT attention biases)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(4))
        self.cache = {}

    def forward(self, x):
        if not self.training:
            if "b" not in self.cache:
                self.cache["b"] = self.bias * 2
            return x + self.cache["b"]
        return x + self.bias * 2


def test_a_trace_leaves_the_models_caches_and_attributes_as_it_found_them():
    model = _Cached().eval()
    graph = archlab.from_torch(model, (3, 4))
    assert model.cache == {} and not hasattr(model, "_archlab_trace")
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(model(x), archlab.to_module(graph, state_dict=model.state_dict())(x))
    assert isinstance(model.cache["b"], torch.Tensor)  # the model's own call fills it with a tensor, not a proxy
