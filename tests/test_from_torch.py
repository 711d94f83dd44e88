"""``from_torch`` imports fx-traceable models into the IR, or names what it cannot.

Reference: torchvision 0.29 builders with ``weights=None``. A faithful import
has torchvision's parameter count, takes its ``state_dict`` with
``strict=True`` and gives the same outputs in float64 (batch-norm statistics
perturbed first so BN is not the identity; see ``compare.perturb_``).
"""
import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import archlab
from archlab.errors import ImportTorchError
from archlab.torchio.compare import compare_modules

RESNET50_PARAMS = 25_557_032  # torchvision ResNet50_Weights.IMAGENET1K_V1.meta["num_params"]


def assert_same_as(module, input_shape, **kw):
    """Import ``module``, load its weights strictly and compare outputs in float64."""
    graph = archlab.from_torch(module, input_shape, **kw)
    r = compare_modules("imported", type(module).__name__, graph, module)
    assert r.archlab_params == r.reference_params
    assert r.state_dict_keys_equal
    assert r.max_abs_diff <= 1e-5
    return graph


def import_error(module, input_shape=(3, 16, 16)) -> ImportTorchError:
    with pytest.raises(ImportTorchError) as info:
        archlab.from_torch(module, input_shape)
    return info.value


# -- torchvision ------------------------------------------------------------------
def test_resnet50_imports_with_torchvision_params_and_outputs():
    tv = torchvision.models.resnet50()
    graph = assert_same_as(tv, (3, 64, 64))
    assert graph.num_params() == RESNET50_PARAMS
    assert graph["layer1.0.conv1"].op == "conv2d"  # stateful layers keep their module paths
    assert graph["add"].op == "add" and graph["flatten"].op == "flatten"  # the rest keep fx names
    assert graph.input_nodes[0].name == "x" and list(graph.outputs) == ["out"]


@pytest.mark.parametrize("name, kwargs, input_shape", [
    ("mobilenet_v2", {}, (3, 16, 16)),
    ("mobilenet_v3_small", {}, (3, 16, 16)),  # hardswish, squeeze-excitation gates (mul)
    ("googlenet", {"aux_logits": False, "init_weights": False}, (3, 32, 32)),  # concat, ceil_mode pools
    ("squeezenet1_1", {}, (3, 64, 64)),
    ("efficientnet_b0", {}, (3, 16, 16)),  # silu; stochastic depth is the identity in eval mode
])
def test_torchvision_models_import_exactly(name, kwargs, input_shape):
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    assert_same_as(model, input_shape)


def test_shufflenet_channel_shuffle_is_reported_by_node():
    err = import_error(torchvision.models.shufflenet_v2_x0_5(num_classes=10), (3, 32, 32))
    for node in ("view", "transpose", "chunk"):  # channel shuffle and the split of each unit
        assert node in err.nodes and f"  - {node}: " in err.details
    assert "Tensor.view x32 (view, view_1, ...)" in str(err) and "torch.transpose x16" in str(err)
    assert "Tensor.chunk" in err.details and "file an issue" in str(err)
    assert len(str(err)) < 500 and len(err.nodes) == 87 and "(86 more; --traceback lists all)" in str(err)


class FunctionalBatchNorm(nn.Module):
    """22 conv + ``F.batch_norm`` with the weights read directly: 22 unsupported
    calls, each with four weight reads (get_attr) that are not failures of their own."""

    def __init__(self, n=22):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4 if i else 3, 4, 3, padding=1) for i in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm2d(4) for _ in range(n))

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = torch.tanh(F.batch_norm(conv(x), bn.running_mean, bn.running_var, bn.weight, bn.bias))
        return x


def test_a_long_import_error_is_bounded_and_counts_weight_reads_with_their_reader():
    err = import_error(FunctionalBatchNorm(), (3, 8, 8))
    text = str(err)
    assert len(text) < 500, len(text)
    assert len(err.nodes) == 44 and not any("running_mean" in n or "weight" in n for n in err.nodes)
    assert text.startswith("cannot import FunctionalBatchNorm: 44 fx node(s) of 2 kind(s) cannot be expressed in "
                           "archlab: torch.nn.functional.batch_norm x22 (batch_norm, batch_norm_1, ...), "
                           "torch.tanh x22 (tanh, tanh_1, ...)")
    assert "it reads 4 weight(s) directly" in err.details and err.details.count("\n") == 43


def test_stochastic_depth_in_training_mode_asks_for_eval_mode():
    err = import_error(torchvision.models.efficientnet_b0(num_classes=10).train(), (3, 32, 32))
    assert "stochastic_depth" in err.nodes and "model.eval()" in str(err)


def test_named_tuple_outputs_keep_their_field_names():
    # In training mode GoogLeNet returns GoogLeNetOutputs(logits, aux_logits2, aux_logits1).
    model = torchvision.models.googlenet(num_classes=10, aux_logits=True, init_weights=False)
    graph = archlab.from_torch(model, (3, 32, 32))
    assert graph.outputs == {"logits": "fc", "aux_logits2": "aux2.fc2", "aux_logits1": "aux1.fc2"}
    assert graph.num_params() == sum(p.numel() for p in model.parameters())
    archlab.to_module(graph, state_dict=model.state_dict())  # strict: every weight has a node


def test_feature_extractor_dict_outputs():
    from torchvision.models.feature_extraction import create_feature_extractor

    fe = create_feature_extractor(torchvision.models.resnet18().eval(), {"layer2": "mid", "layer4": "last"})
    graph = assert_same_as(fe, (3, 32, 32))
    assert list(graph.outputs) == ["mid", "last"]


# -- small custom models ------------------------------------------------------------
class Net(nn.Module):
    """view(size(0), -1), spatial means, cat, operator ops, functional pools: all mappable."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.left = nn.Conv2d(8, 8, 1)
        self.right = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.gate = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16 * 3 * 3, 5)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.left(x), F.relu6(self.right(x))], dim=1)
        y = operator.add(y, y.mean((2, 3), keepdim=True).sigmoid() * y)
        y = self.pool(y) * torch.sigmoid(self.gate(F.adaptive_avg_pool2d(y, 1)))
        y = F.avg_pool2d(F.max_pool2d(y, 2, padding=1), 2, ceil_mode=True)
        flat = F.dropout(y.view(y.size(0), -1), 0.1, self.training)
        return self.fc(flat) + self.head(y.mean([-1, -2])).relu()


def test_custom_model_with_views_means_and_operators():
    graph = assert_same_as(Net(), (3, 16, 16))
    assert graph["view"].op == "flatten"
    assert graph["mean"].op == "adaptive_avg_pool2d"  # keepdim=True
    assert graph["mean_1"].op == "flatten" and graph["mean_1"].inputs == ("mean_1.adaptive_avg_pool2d",)
    assert graph["stem.0"].attrs["padding"] == (1, 1)  # padding="same"


class Layers(nn.Module):
    """The remaining module and function rules, one use each."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding="valid", stride=(1, 2), groups=3)
        self.acts = nn.Sequential(nn.Identity(), nn.Hardtanh(0.0, 6.0), nn.Hardswish(), nn.SiLU(), nn.Hardsigmoid())
        self.pools = nn.Sequential(nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), nn.MaxPool2d(2, dilation=2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((2, None)), nn.Flatten(), nn.Dropout(0.3))

    def forward(self, x):
        y = self.pools(self.acts(self.conv(x)))
        y = torch.add(y, F.hardswish(F.silu(y)), alpha=1) * F.hardsigmoid(torch.relu(y))
        y = torch.mul(y, torch.sigmoid(y.mean(dim=(-2, -1), keepdim=True))).relu_()
        z = self.head(y)
        flat = y.view(-1, y.size(1) * y.size(2) * y.size(3))  # size arithmetic feeding a view
        return torch.concat([z, y.flatten(1), y.reshape(y.shape[0], -1), F.relu(flat)], 1)


def test_every_layer_rule_imports_exactly():
    graph = assert_same_as(Layers(), (3, 12, 16))
    assert {n.op for n in graph} >= {"identity", "relu6", "hardswish", "silu", "hardsigmoid", "avg_pool2d", "concat"}


def test_import_restores_training_flags():
    model = Net().train()
    archlab.from_torch(model, (3, 16, 16))
    assert all(m.training for m in model.modules())


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(torch.tanh(self.conv(x)))


def test_unsupported_ops_are_all_named():
    err = import_error(Unsupported())
    assert err.nodes == ["tanh", "act"]
    assert "tanh: call_function torch.tanh: archlab has no op for torch.tanh" in str(err)
    assert "call_module torch.nn.modules.activation.GELU 'act'" in str(err)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(F.relu(self.conv(x)))


def test_weight_sharing_is_reported():
    err = import_error(Shared())
    assert err.nodes == ["conv_1"] and "weight sharing" in str(err)


def test_tied_parameters_are_reported():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1))
    model[1].weight = model[0].weight
    err = import_error(model)
    assert err.nodes == ["_1"] and "'0.weight'" in str(err)


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return F.relu(x)
        return x


def test_untraceable_model_gives_one_line_error():
    err = import_error(DataDependent())
    assert "\n" not in str(err)
    assert "DataDependent" in str(err) and "TraceError" in str(err)
    assert err.__cause__ is None and err.__suppress_context__


def test_wrong_input_shape_names_the_failing_node():
    err = import_error(Unsupported(), (5, 16, 16))
    assert "at node 'conv'" in str(err) and "1x5x16x16" in str(err)


@pytest.mark.parametrize("forward, node, words", [
    (lambda self, x: self.conv(x) * 2, "mul", "operand 2"),
    (lambda self, x: (self.conv(x), x), "output", "return a dict"),
], ids=["constant-operand", "tuple-output"])
def test_unexpressible_uses_are_reported(forward, node, words):
    model = type("M", (Unsupported,), {"forward": forward})()
    err = import_error(model)
    assert err.nodes == [node] and words in str(err)


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        z = F.relu(y, inplace=True)  # also changes y, which the add reads
        return z + y


def test_inplace_op_whose_input_is_read_later_is_reported():
    err = import_error(InPlace())
    assert err.nodes == ["relu"] and "in place" in str(err)


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        return {"features": y, "logits": self.fc(torch.flatten(F.adaptive_avg_pool2d(y, (1, 1)), 1))}


def test_dict_outputs_become_named_outputs():
    graph = assert_same_as(Heads(), (3, 8, 8))
    assert graph.outputs == {"features": "conv", "logits": "fc"}


def test_the_import_error_bound_holds_for_many_long_kinds():
    from archlab.torchio.import_errors import MAX_ERROR, import_error

    problems = [(f"node_{k}_{i}_" + "n" * 40, f"some.very.long.module.path.Kind{k}" + "K" * 60, "call_function x: ",
                 "archlab has no op for it " + "because " * 30) for k in range(12) for i in range(5)]
    err = import_error("A" * 200, problems, {})
    assert len(str(err)) <= MAX_ERROR and "file an issue" in str(err)
    assert len(err.nodes) == 60 and err.details.count("\n") == 59
