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
from archlab.analysis import mac_counts
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
    # the rest are named by their module scope and op; the root-level flatten joins its input's scope
    assert graph["layer1.0.add"].op == "add" and graph["avgpool.flatten"].op == "flatten"
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


def test_shufflenet_channel_shuffle_imports_as_reshape_and_permute():
    graph = assert_same_as(torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval(), (3, 32, 32))
    unit = "stage2.1"  # a unit that splits its input in two and shuffles channels after the concat
    assert [graph[f"{unit}.chunk.{k}"].op for k in (0, 1)] == ["slice", "slice"]
    assert graph[f"{unit}.reshape"].attrs["shape"] == (2, 24, 4, 4)  # view(batch, groups, C // groups, H, W)
    assert graph[f"{unit}.permute"].attrs["dims"] == (0, 2, 1, 3, 4)  # transpose(1, 2)


class FunctionalBatchNorm(nn.Module):
    """22 conv + ``F.batch_norm`` reading another module's weights: each call is
    named after the module owning them, so the state_dict still loads."""

    def __init__(self, n=22):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4 if i else 3, 4, 3, padding=1) for i in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm2d(4) for _ in range(n))

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = torch.tanh(F.batch_norm(conv(x), bn.running_mean, bn.running_var, bn.weight, bn.bias))
        return x


def test_functional_layers_are_named_after_the_module_owning_their_weights():
    graph = assert_same_as(FunctionalBatchNorm().eval(), (3, 8, 8))
    assert graph["bns.21"].op == "batch_norm2d" and graph["bns.21.tanh"].op == "tanh"


class ManyUnsupported(nn.Module):
    """Three kinds of unsupported op, one of them 20 times, inside named modules."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Conv2d(3, 3, 3, padding=1) for _ in range(20))
        self.head = nn.Sequential(nn.Conv2d(3, 3, 1), nn.PixelShuffle(1))

    def forward(self, x):
        for conv in self.blocks:
            x = torch.cumsum(conv(x), dim=1)
        return torch.erf(self.head(x))


def test_an_import_error_names_each_unsupported_kind_once_with_count_and_first_module():
    err = import_error(ManyUnsupported(), (3, 8, 8))
    lines = str(err).split("\n")
    assert lines[0] == "cannot import ManyUnsupported: 22 node(s) of 3 kind(s) archlab cannot express:"
    assert lines[1].startswith("  - torch.cumsum x20, first at node cumsum: archlab has no op for torch.cumsum")
    assert lines[2].startswith("  - torch.pixel_shuffle x1, first in head.1 (node pixel_shuffle): archlab has no op")
    assert lines[3].startswith("  - torch.erf x1, first at node erf: ")
    assert lines[4].startswith("what to do: ") and len(lines) == 5
    assert len(err.nodes) == 22 and err.details.count("\n") == 21


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
    assert graph["pool.flatten"].op == "flatten"  # y.view(y.size(0), -1), at the root: its input's scope
    means = [n for n in graph.nodes if n.op == "reduce"]  # fvcore counts a mean as 0, not as a pool
    assert [(m.attrs["fn"], m.attrs["dims"], m.attrs["keepdim"]) for m in means] == [
        ("mean", (2, 3), True), ("mean", (2, 3), False)]
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
        self.act = nn.PReLU()  # no rule: traced through to F.prelu, which reads its weight directly

    def forward(self, x):
        return self.act(torch.erf(self.conv(x)))


def test_unsupported_ops_are_all_named():
    err = import_error(Unsupported())
    assert err.nodes == ["erf", "prelu"]
    assert "torch.erf x1, first at node erf: archlab has no op for torch.erf" in str(err)
    assert "torch.prelu x1, first in act (node prelu)" in str(err)
    assert "  - prelu: call_function torch.prelu: " in err.details


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(F.relu(self.conv(x)))


def test_a_module_called_twice_shares_its_weights_exactly():
    graph = assert_same_as(Shared(), (3, 16, 16))
    assert graph["conv_1"].attrs["shares"] == "conv" and graph.num_params() == 3 * 3 * 9 + 3
    assert mac_counts(graph).per_node["conv_1"] == 16 * 16 * 3 * 27  # each call is counted
    again = archlab.load(archlab.dump(graph))  # the description file keeps the sharing
    assert again["conv_1"].attrs["shares"] == "conv" and again.num_params() == graph.num_params()
    assert list(archlab.to_module(again).state_dict()) == ["conv.weight", "conv.bias"]


def test_a_layer_registered_under_two_paths_loads_from_either_key():
    model = Shared()
    model.again = nn.Sequential(model.conv)  # torch's state_dict now has conv.* and again.0.*
    model.forward = lambda x: model.again(F.relu(model.conv(x)))
    graph = archlab.from_torch(model, (3, 16, 16))
    compiled = archlab.to_module(graph, state_dict=model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.replace("shares: conv}", "shares: nowhere}"), "does not exist"),
    (lambda t: t.replace("shares: conv}", "shares: conv.relu}"), "other attributes"),
    (lambda t: t.replace("kernel_size: 3, padding: 1, shares", "kernel_size: 1, padding: 1, shares"),
     "other attributes"),
    (lambda t: t.replace("shares: conv}", "shares: conv}\n- {name: p, op: parameter, in: [x], shape: [3, 1, 1]}\n"
                         "- {name: q, op: parameter, in: [x], shape: [3, 1, 1], shares: p}\n"
                         "- {name: conv_1b, op: add, in: [conv_1, q, p]}").replace("out: conv_1}", "out: conv_1b}"),
     "cannot share"),
], ids=["missing", "other-op", "other-kernel", "parameter"])
def test_a_bad_shares_attribute_names_the_node(edit, words):
    text = archlab.dump(archlab.from_torch(Shared(), (3, 16, 16)))
    assert "shares: conv}" in text, text
    with pytest.raises(archlab.errors.ArchlabError, match=words) as info:
        archlab.load(edit(text))
    assert "conv_1" in str(info.value) or "'q'" in str(info.value)


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
    assert "DataDependent" in str(err) and "control flow on a tensor's value" in str(err)
    assert err.__cause__ is None and err.__suppress_context__


def test_wrong_input_shape_names_the_failing_node():
    err = import_error(Unsupported(), (5, 16, 16))
    assert "at node 'conv'" in str(err) and "1x5x16x16" in str(err)


@pytest.mark.parametrize("forward, node, words", [
    (lambda self, x: self.conv(x) * self.conv._parameters["weight"].sum(), "mul",  # eager: fx sees a constant
     "computed from parameters outside the trace"),
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


@pytest.mark.parametrize("spec, scopes", [
    ("torchvision:efficientnet_b0", ["x", "features", "avgpool", "classifier"]),
    ("torchvision:fcn_resnet50", ["x", "backbone", "classifier"]),  # offline: no backbone weights fetched
])
def test_depth_one_groups_an_imported_model_by_module_scope(capsys, spec, scopes):
    from archlab.cli.main import main

    assert main(["analyze", spec, "--depth", "1", "--input", "3x64x64", "--format", "csv"]) == 0
    rows = [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == scopes


# -- what a one-sample trace could get wrong, each refused or imported exactly -------------------------
class _Fn(nn.Module):
    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for k, m in modules.items():
            setattr(self, k, m)

    def forward(self, x):
        return self.fn(self, x)


@pytest.mark.parametrize("fn, words", [
    (lambda s, x: x * 2 if x.mean().item() > 0 else x, "reads a tensor's value"),
    (lambda s, x: x[:, : int(x.sum()) + 1], "a tensor's value used as a Python number"),
    (lambda s, x: x.unsqueeze(0).sum(1), "the batch dim"),  # moves the batch: a batch of 1 cannot show it
    (lambda s, x: x[None].mean(1), "before the batch dim"),
    (lambda s, x: x.squeeze(), "without a dim"),
    (lambda s, x: _view_then_inplace(s.conv(x)), "through a view"),
    (lambda s, x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), "samples by the scale itself"),
    (lambda s, x: x.permute(1, 0, 2, 3), "moves the batch dim"),
], ids=["item", "int", "unsqueeze-0", "none-index", "squeeze-all", "inplace-view", "fractional-scale",
        "permuted-output"])
def test_what_one_example_cannot_show_is_refused(fn, words):
    err = import_error(_Fn(fn, conv=nn.Conv2d(3, 4, 1)), (3, 8, 8))
    assert words in str(err)


def _view_then_inplace(y):
    a = y[:, :2]  # a view of y, read after y is overwritten in place
    return a + F.relu_(y)[:, 2:]


@pytest.mark.parametrize("fn", [
    lambda s, x: F.interpolate(x, scale_factor=2.0, mode="bilinear"),  # an integer scale: by the scale
    lambda s, x: F.interpolate(x, scale_factor=1.5, mode="nearest", recompute_scale_factor=True),
    lambda s, x: x.chunk(2, dim=1)[0].relu(),  # the unused part is left out
    lambda s, x: F.gelu(x, approximate="tanh"),
], ids=["integer-scale", "recomputed-scale", "unused-part", "gelu-tanh"])
def test_size_and_argument_variants_import_exactly(fn):
    assert_same_as(_Fn(fn), (4, 8, 8))


def _grn(s, x):
    g = x.norm(p=2, dim=(2, 3), keepdim=True)
    return torch.addcmul(s.beta, s.gamma, x * (g / (g.mean(dim=1, keepdim=True) + 1e-6))) + x


def _eca(s, x):
    y = s.conv1d(x.mean((2, 3)).view(x.size(0), 1, -1)).view(x.size(0), -1, 1, 1).sigmoid()
    return x * y.expand_as(x)


@pytest.mark.parametrize("fn, modules", [
    (_grn, {"beta": nn.Parameter(torch.rand(1, 4, 1, 1)), "gamma": nn.Parameter(torch.rand(1, 4, 1, 1))}),
    (lambda s, x: torch.addcmul(s.beta, s.alpha, x.permute(0, 2, 3, 1), value=0.5),
     {"beta": nn.Parameter(torch.rand(4)), "alpha": nn.Parameter(torch.rand(4))}),
    (_eca, {"conv1d": nn.Conv1d(1, 1, 3, padding=1, bias=False)}),
    (lambda s, x: F.conv1d(x.flatten(2), s.c.weight, s.c.bias, padding=2, dilation=2, groups=2),
     {"c": nn.Conv1d(4, 6, 3, groups=2)}),
    (lambda s, x: F.normalize(x, dim=1) * torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True), {}),
], ids=["grn", "addcmul-affine", "eca", "functional-conv1d", "normalize-vector-norm"])
def test_vector_math_and_conv1d_import_exactly(fn, modules):
    assert_same_as(_Fn(fn, **modules), (4, 8, 8))


def test_timm_weight_standardised_convs_import_exactly():
    timm_layers = pytest.importorskip("timm.layers")
    for conv in (timm_layers.StdConv2d(4, 6, 3, eps=1e-5), timm_layers.ScaledStdConv2d(4, 6, 3, stride=2, gamma=1.7)):
        graph = assert_same_as(nn.Sequential(conv), (4, 9, 9))
        assert [n.op for n in graph.nodes][1:] == ["std_conv2d"]


def test_an_expand_feeding_a_non_broadcasting_op_is_refused():
    err = import_error(_Fn(lambda s, x: torch.cat([x.mean((2, 3), keepdim=True).expand_as(x), x], 1)), (4, 8, 8))
    assert "does not broadcast" in str(err)


class StandardisedConv(nn.Conv2d):
    """Keeps Conv2d's forward but changes _conv_forward (weight standardisation, as timm's StdConv2d)."""

    def _conv_forward(self, x, weight, bias):
        w = (weight - weight.mean((1, 2, 3), keepdim=True)) / (weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups)


def test_a_subclass_that_changes_a_helper_is_not_taken_for_its_base():
    err = import_error(nn.Sequential(StandardisedConv(3, 4, 3)), (3, 8, 8))
    assert "computed at run time" in str(err)


def test_bad_input_shapes_and_extra_inputs_are_one_line_errors():
    with pytest.raises(ImportTorchError, match=r"has a size <= 0"):
        archlab.from_torch(nn.ReLU(), (3, -1, 8))

    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(ImportTorchError, match=r"forward takes 2 tensor inputs \(x, y\)"):
        archlab.from_torch(TwoInputs(), (3, 8, 8))
