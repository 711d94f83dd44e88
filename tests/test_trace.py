"""The concrete tracer behind ``from_torch``: fx with the real values riding along."""
from __future__ import annotations

import zlib

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


@pytest.mark.parametrize("read", [lambda y: y.nonzero(), lambda y: y[y > 0], lambda y: torch.unique(y)],
                         ids=["nonzero", "boolean-mask", "unique"])
def test_an_op_whose_result_depends_on_values_gets_the_control_flow_advice(read):
    """The trace refuses it (trace_shapes.ShapesOnly) as it refuses ``if x.sum() > 0``,
    and says so: the input's shape is not what is wrong."""
    class ReadsValues(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return y + read(y).sum()

    with pytest.raises(ImportTorchError, match=r"failed at node '\w+' .*depends on the input's values.*"
                       r"on one example input, so branch on sizes \(x\.shape\)") as info:
        archlab.from_torch(ReadsValues().eval(), (3, 4, 4))
    assert "\n" not in str(info.value) and "check input_shape" not in str(info.value)
    assert "ValueDependentOp" not in str(info.value)  # the tracer's own class is no news to the user


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


# ShapesOnly: ops not computed give the shape, dtype and device torch would give.
_HEAVY_CALLS = {
    "conv2d": lambda x: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)(x),
    "conv2d_dilated": lambda x: nn.Conv2d(4, 6, 3, padding=2, dilation=2)(x),
    "conv_transpose2d": lambda x: nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1)(x),
    "conv1d": lambda x: nn.Conv1d(4, 5, 3)(x.flatten(2)),
    "linear": lambda x: nn.Linear(9, 7)(x),
    "linear_nobias": lambda x: nn.Linear(9, 7, bias=False)(x),
    "matmul": lambda x: x @ x.transpose(-1, -2),
    "bmm": lambda x: torch.bmm(x[0], x[0].transpose(1, 2)),
    "baddbmm": lambda x: torch.baddbmm(torch.ones(1, 9), x[0], x[0].transpose(1, 2)),
    "max_pool_ceil": lambda x: F.max_pool2d(x, 2, ceil_mode=True),
    "max_pool_indices": lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True),
    "avg_pool": lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "sdpa": lambda x: F.scaled_dot_product_attention(x, x, x),
    "mha": lambda x: nn.MultiheadAttention(9, 3, batch_first=True).eval()(x[0], x[0], x[0])[0],
    "batch_norm": lambda x: nn.BatchNorm2d(4).eval()(x),
    "silu_": lambda x: F.silu(x.clone(), inplace=True),
    "hardswish_": lambda x: F.hardswish(x.clone(), inplace=True),
    "add_broadcast": lambda x: x + x[:, :1],
    "mul_promoted": lambda x: x.mean((2, 3), keepdim=True) * torch.ones(1, dtype=torch.float64),
    "add_": lambda x: x.clone().add_(x[:, :1]),
    "mean_keepdim": lambda x: x.mean((2, 3), keepdim=True),
    "mean_negative": lambda x: x.mean((-1, 1)),
}


@pytest.mark.parametrize("name", sorted(_HEAVY_CALLS))
def test_shapes_only_gives_the_shape_dtype_and_device_torch_gives(name):
    from archlab.torchio.trace_shapes import ShapesOnly

    # An input of its own per call, and the shapes-only call first: its outputs are
    # uninitialised memory, which the allocator may hand back from a tensor freed
    # earlier; with one shared input, add_'s freed result equalled add_broadcast's.
    seed = zlib.crc32(name.encode())
    torch.manual_seed(seed)
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        torch.manual_seed(seed)
        with ShapesOnly():
            cheap = _HEAVY_CALLS[name](x)
        torch.manual_seed(seed)
        real = _HEAVY_CALLS[name](x)
    for r, c in zip(real if isinstance(real, tuple) else (real,), cheap if isinstance(cheap, tuple) else (cheap,)):
        assert (c.shape, c.dtype, c.device) == (r.shape, r.dtype, r.device)
        assert not torch.equal(c, r)  # not computed


def test_shapes_only_keeps_storage_sharing_and_answers_repeated_calls_alike():
    """In-place results are their input (the importer's in-place check compares
    storage); a repeated signature reuses its meta result but not its tensor."""
    from archlab.torchio.trace_shapes import ShapesOnly

    conv = nn.Conv2d(4, 4, 3, padding=1)
    with torch.no_grad(), ShapesOnly() as mode:
        x = torch.randn(1, 4, 8, 8)
        y = F.relu(x, inplace=True)
        a, b = conv(x), conv(x)
    assert y.data_ptr() == x.data_ptr()
    assert a.shape == b.shape == (1, 4, 8, 8) and a.data_ptr() != b.data_ptr()
    assert len(mode._results) == 1


def test_shapes_only_lets_torch_refuse_a_wrong_shape_in_its_own_words():
    from archlab.torchio.trace_shapes import ShapesOnly

    with ShapesOnly(), pytest.raises(RuntimeError, match="expected input.* to have 4 channels"):
        nn.Conv2d(4, 6, 3)(torch.zeros(1, 5, 8, 8))
    with ShapesOnly(), pytest.raises(RuntimeError, match="must match the size of tensor b"):
        torch.zeros(1, 4, 8, 8) + torch.zeros(5)
    with ShapesOnly(), pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        torch.zeros(1, 4, 1, 1).add_(torch.zeros(1, 4, 8, 8))
    with ShapesOnly(), pytest.raises(IndexError, match="Dimension out of range"):
        torch.zeros(1, 4, 8, 8).mean(4)
    with ShapesOnly(), pytest.raises(RuntimeError, match="dim 2 appears multiple times"):
        torch.zeros(1, 4, 8, 8).mean((2, -2))
    with ShapesOnly(), pytest.raises(RuntimeError, match="expanded size"):  # a wrong bias still fails
        F.linear(torch.zeros(1, 9), torch.zeros(7, 9), torch.zeros(5))
    with ShapesOnly(), pytest.raises(RuntimeError, match="bias"):
        F.conv2d(torch.zeros(1, 4, 8, 8), torch.zeros(6, 4, 3, 3), torch.zeros(5))
    with ShapesOnly(), pytest.raises(RuntimeError, match="dtype|type"):
        nn.Linear(9, 7).double()(torch.zeros(1, 9))
    with ShapesOnly(), pytest.raises(RuntimeError, match="view size is not compatible"):
        y = torch.zeros(2, 3, 4, 5).transpose(1, 3)
        (y + y).view(2, -1)
    channels_last = torch.zeros(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for layer in (nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.AvgPool2d(2)):  # out as in: channels_last
        with ShapesOnly(), pytest.raises(RuntimeError, match="view size is not compatible"):
            layer(channels_last).view(2, -1)


def test_a_channels_last_model_imports_as_torch_runs_it():
    """The meta convolution gives contiguous strides; the real one keeps channels_last.
    A ``.view`` that torch refuses on the real strides is refused by the import too,
    and a ``reshape`` imports and computes the model's output."""
    class ChannelsLast(nn.Module):
        def __init__(self, flatten):
            super().__init__()
            self.conv, self.flatten = nn.Conv2d(3, 4, 3, padding=1), flatten

        def forward(self, x):
            y = self.conv(x.contiguous(memory_format=torch.channels_last))
            return self.flatten(y)

    with pytest.raises(ImportTorchError, match=r"view size is not compatible.*use \.reshape where it calls \.view"):
        archlab.from_torch(ChannelsLast(lambda y: y.view(y.shape[0], -1)).eval(), (3, 8, 8))
    model = ChannelsLast(lambda y: y.reshape(y.shape[0], -1)).eval()
    graph = archlab.from_torch(model, (3, 8, 8))
    compiled = archlab.to_module(graph)
    compiled.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(compiled.eval()(x), model(x))


def test_shapes_only_refuses_values_it_does_not_have_and_keeps_indices_deterministic():
    from archlab.torchio.trace_shapes import ShapesOnly

    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad(), ShapesOnly():
        for read in (lambda y: y.nonzero(), lambda y: y[y > 0], lambda y: y.sum().item(), lambda y: y.unique()):
            with pytest.raises(RuntimeError, match="depends on the input's values"):
                read(nn.Conv2d(4, 4, 1)(x))
        pooled, idx = F.max_pool2d(x, 2, return_indices=True)
        unpooled = F.max_unpool2d(pooled, idx, 2)
        indices = nn.Conv2d(4, 4, 1)(x).long()
    assert not idx.any() and unpooled.shape == (1, 4, 8, 8)  # pooling indices: zeros, in range
    assert not indices.any()  # indices from values: zeros, not noise
    with ShapesOnly(), pytest.raises(RuntimeError, match="mean"):
        torch.zeros(1, 4, dtype=torch.long).mean(1)


def test_an_import_computes_shapes_from_the_input_and_values_from_parameters():
    """A convolution on the input is not run (its value is not conv(0) = bias), while
    a product of parameters is (its value is folded)."""
    from archlab.torchio.trace_import import import_trace

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.a, self.b = nn.Parameter(torch.randn(4, 5)), nn.Parameter(torch.randn(5, 4))

        def forward(self, x):
            return self.conv(x) + self.a @ self.b

    model = M().eval()
    nn.init.constant_(model.conv.bias, 1.0)
    gm, values = import_trace(model, (3, 4, 4))
    by_name = {n.name: v for n, v in values.items()}
    assert by_name["conv"].shape == (1, 3, 4, 4) and not torch.equal(by_name["conv"], torch.ones(1, 3, 4, 4))
    assert torch.equal(by_name["matmul"], model.a @ model.b)  # from parameters: computed
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(archlab.to_module(archlab.from_torch(model, (3, 4, 4)),
                                            state_dict=model.state_dict())(x), model(x), atol=1e-6)
