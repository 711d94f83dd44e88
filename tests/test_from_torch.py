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
    ("mobilenet_v2", {}, (3, 32, 32)),
    ("mobilenet_v3_small", {}, (3, 32, 32)),  # hardswish, squeeze-excitation gates (mul)
    ("googlenet", {"aux_logits": False, "init_weights": False}, (3, 32, 32)),  # concat, ceil_mode pools
    ("squeezenet1_1", {}, (3, 64, 64)),
    ("efficientnet_b0", {}, (3, 32, 32)),  # silu; stochastic depth is the identity in eval mode
])
def test_torchvision_models_import_exactly(name, kwargs, input_shape):
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    assert_same_as(model, input_shape)


def test_shufflenet_channel_shuffle_is_reported_by_node():
    err = import_error(torchvision.models.shufflenet_v2_x0_5(num_classes=10), (3, 32, 32))
    for node in ("view", "transpose", "chunk"):  # channel shuffle and the split of each unit
        assert node in err.nodes and f"  - {node}: " in str(err)
    assert "torch.transpose" in str(err) and "Tensor.chunk" in str(err)
    assert "file an issue" in str(err)


def test_stochastic_depth_in_training_mode_asks_for_eval_mode():
    err = import_error(torchvision.models.efficientnet_b0(num_classes=10).train(), (3, 32, 32))
    assert "stochastic_depth" in err.nodes and "model.eval()" in str(err)


def test_feature_extractor_dict_outputs():
    from torchvision.models.feature_extraction import create_feature_extractor

    fe = create_feature_extractor(torchvision.models.resnet18().eval(), {"layer2": "mid", "layer4": "last"})
    graph = assert_same_as(fe, (3, 32, 32))
    assert list(graph.outputs) == ["mid", "last"]


# -- small custom models ------------------------------------------------------------
class Branchy(nn.Module):
    """view(size(0), -1), spatial means, cat, operator ops, functional pools."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.left = nn.Conv2d(8, 8, 1)
        self.right = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True, dilation=1)
        self.gate = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.left(x), F.relu6(self.right(x))], dim=1)
        y = operator.add(y, y.mean((2, 3), keepdim=True).sigmoid() * y)
        y = self.pool(y) * torch.sigmoid(self.gate(F.adaptive_avg_pool2d(y, 1)))
        y = F.avg_pool2d(F.max_pool2d(y, 2, padding=1), 2)
        return self.fc(F.dropout(y.view(y.size(0), -1), 0.1, self.training)) + self.fc_skip(y)

    def fc_skip(self, y):
        return torch.flatten(y, 1).mean(1, keepdim=True) * 0 if False else self.fc(y.reshape(y.shape[0], -1)).relu()


def test_custom_model_with_views_means_and_operators():
    torch.manual_seed(0)
    model = Branchy()
    model.fc_twice = False
    graph = None
    with pytest.raises(ImportTorchError, match="weight sharing"):  # fc is called twice
        archlab.from_torch(model, (3, 16, 16))

    class Single(Branchy):
        def forward(self, x):
            x = self.stem(x)
            y = torch.cat([self.left(x), F.relu6(self.right(x))], dim=1)
            y = operator.add(y, y.mean((2, 3), keepdim=True).sigmoid() * y)
            y = self.pool(y) * torch.sigmoid(self.gate(F.adaptive_avg_pool2d(y, 1)))
            y = F.avg_pool2d(F.max_pool2d(y, 2, padding=1), 2)
            return self.fc(F.dropout(y.view(y.size(0), -1), 0.1, self.training)) + y.mean([-1, -2])[:, :5].relu()

    graph = None
    err = import_error(Single(), (3, 16, 16))
    assert err.nodes == ["getitem"]  # only the slice is unmappable; the spatial mean is not


class Net(nn.Module):
    """view(size(0), -1), a spatial mean, cat and operator ops, all mappable."""

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
