"""The trainer: it learns, is deterministic, names its faults and leaves nothing behind."""
from __future__ import annotations

import math

import pytest
import torch

from archlab.lang import GraphBuilder
from archlab.train import NonFiniteLossError, TrainConfig, TrainError, TrainOutOfMemoryError, load_data, train
from archlab.train.augment import Normalizer, augment_segmentation
from archlab.train.data.base import Split, TaskData
from archlab.train.init import initialise
from archlab.torchio.compile import to_module
from archlab.zoo import get_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def colour_task(n: int = 96, size: int = 16, classes: int = 3, seed: int = 0, task: str = "seg") -> TaskData:
    """Each pixel's class is which channel is brightest (one class per image for
    ``cls``): learnable by a 1x1 conv."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, classes, (n, size // 4, size // 4), generator=g)
    if task == "cls":  # one class per image
        cls = cls[:, :1, :1].expand(-1, size // 4, size // 4)
    cls = cls.repeat_interleave(4, 1).repeat_interleave(4, 2)
    img = torch.randint(0, 90, (n, 3, size, size), generator=g, dtype=torch.uint8)
    img.scatter_(1, cls.unsqueeze(1), 220)
    targets = cls.to(torch.uint8) if task == "seg" else cls[:, 0, 0].long()
    cut = n * 3 // 4
    return TaskData(spec="colour", task=task, num_classes=classes, train=Split(img[:cut], targets[:cut]),
                    val=Split(img[cut:], targets[cut:]), mean=(0.3, 0.3, 0.3), std=(0.35, 0.35, 0.35))


def small_seg(classes: int = 3, size: int = 16, *, aux: bool = False):
    b = GraphBuilder("tiny_seg", meta={"family": "test"})
    x = b.input((3, size, size))
    h = b.relu(b.batch_norm2d(b.conv2d(x, 8, 3, padding=1, name="c1"), name="bn1"))
    b.output(b.conv2d(h, classes, 1, name="head"), name="out")
    if aux:
        b.output(b.conv2d(h, classes, 1, name="aux_head"), name="aux")
    return b.build()


def small_cls(classes: int = 3, size: int = 16):
    b = GraphBuilder("tiny_cls")
    x = b.input((3, size, size))
    h = b.relu(b.batch_norm2d(b.conv2d(x, 8, 3, padding=1, name="c1"), name="bn1"))
    h = b.flatten(b.adaptive_avg_pool2d(h, 1, name="pool"), name="flat")
    b.output(b.linear(h, classes, name="fc"))
    return b.build()


FAST = dict(epochs=4, batch_size=8, device="cpu", augment=False, lr=0.03)


def test_a_trained_net_is_far_above_an_untrained_one_on_the_same_validation_set():
    data = colour_task()
    untrained = train(small_seg(), data, TrainConfig(**{**FAST, "lr": 1e-12, "epochs": 1}), progress=False)
    trained = train(small_seg(), data, TrainConfig(**FAST), progress=False)
    assert trained.final["miou"] > 0.9
    assert trained.final["miou"] > untrained.final["miou"] + 0.4
    assert set(trained.final) == {"miou", "pixel_acc", "mean_acc"}
    assert [h.epoch for h in trained.history] == [1, 2, 3, 4]
    assert trained.history[-1].loss < trained.history[0].loss


def test_classification_reports_top1():
    r = train(small_cls(), colour_task(task="cls"), TrainConfig(**{**FAST, "epochs": 6}), progress=False)
    assert set(r.final) == {"top1"} and 0 <= r.final["top1"] <= 1 and r.final["top1"] > 0.6


def test_same_seed_same_weights_and_history_on_the_cpu_other_seed_differs():
    data = colour_task()
    cfg = TrainConfig(epochs=2, batch_size=8, device="cpu")  # with augmentation: its randomness is seeded too
    a, b = (train(small_seg(), data, cfg, progress=False) for _ in range(2))
    c = train(small_seg(), data, TrainConfig(epochs=2, batch_size=8, device="cpu", seed=1), progress=False)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert all(torch.equal(v, b.module.state_dict()[k]) for k, v in a.module.state_dict().items())
    assert [h.loss for h in a.history] != [h.loss for h in c.history]


def test_steps_budget_ends_with_a_partial_epoch():
    r = train(small_seg(), colour_task(), TrainConfig(steps=13, batch_size=8, device="cpu"), progress=False)
    assert r.steps == 13 and r.epochs == 2 and r.history[-1].step == 13  # 72 images / 8 = 9 steps an epoch


def test_callback_sees_every_epoch_and_can_stop_training():
    seen = []
    r = train(small_seg(), colour_task(), TrainConfig(epochs=5, batch_size=8, device="cpu"),
              callback=lambda rec: seen.append(rec.epoch) or rec.epoch == 2, progress=False)
    assert seen == [1, 2] and r.stopped_early and r.epochs == 2


def test_a_diverging_net_stops_with_the_step_named_and_the_next_training_works():
    data = colour_task()
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(epoch \d+\).*lower --lr") as e:
        train(small_seg(), data, TrainConfig(epochs=3, batch_size=8, device="cpu", optimizer="sgd", lr=1e12,
                                             check_every=4), progress=False)
    assert e.value.step >= 1
    assert train(small_seg(), data, TrainConfig(**FAST), progress=False).final["miou"] > 0.9


def test_out_of_memory_is_named_with_batch_and_prediction_and_the_next_training_works(monkeypatch):
    import archlab.torchio.compile as compile_mod

    real = compile_mod.to_module

    def exploding(graph, **kw):
        m = real(graph, **kw)
        m.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")))
        return m

    monkeypatch.setattr(compile_mod, "to_module", exploding)
    with pytest.raises(TrainOutOfMemoryError, match=r"batch size 8: archlab predicts [\d.]+ [KMG]?i?B"):
        train(small_seg(), colour_task(), TrainConfig(**FAST), progress=False)
    monkeypatch.setattr(compile_mod, "to_module", real)
    assert train(small_seg(), colour_task(), TrainConfig(**FAST), progress=False).final["miou"] > 0.9


def test_auxiliary_heads_are_trained_and_weighted():
    from archlab.train.trainer import _loss_fn

    data = colour_task()
    cfg = TrainConfig(aux_weight=0.5).resolved()
    loss = _loss_fn(cfg, data, "out", ["aux"])
    y = torch.randint(0, 3, (2, 4, 4))
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(loss({"out": a, "aux": b}, y), ce(a, y) + 0.5 * ce(b, y))
    r = train(small_seg(aux=True), data, TrainConfig(**FAST), progress=False)
    assert r.final["miou"] > 0.9


@pytest.mark.parametrize("graph, message", [
    (lambda: small_seg(classes=5), r"output 'out' of model tiny_seg is 5x16x16, but data colour needs 3x16x16"),
    (lambda: small_seg(size=32), r"takes 3x32x32 but data colour has images 3x16x16"),
    (lambda: small_cls(), r"needs 3x16x16 \(per-pixel classes"),
])
def test_a_model_that_does_not_fit_the_data_is_refused_before_training(graph, message):
    with pytest.raises(TrainError, match=message):
        train(graph(), colour_task(), TrainConfig(**FAST), progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(TrainError, match="no CUDA GPU"):
        train(small_seg(), colour_task(), TrainConfig(**{**FAST, "device": "cuda"}), progress=False)


@pytest.mark.parametrize("field, value", [("batch_size", 1), ("epochs", 0), ("lr", math.nan), ("lr", -1.0),
                                          ("optimizer", "adam"), ("warmup", 2.0), ("steps", 0)])
def test_bad_config_is_one_line_naming_the_field(field, value):
    with pytest.raises(TrainError.__mro__[1], match=field):
        TrainConfig(**{field: value}).resolved()


def test_segmentation_augmentation_keeps_labels_and_marks_padding_ignored():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (16, 24, 24), dtype=torch.uint8)
    x = Normalizer((0.5,) * 3, (0.25,) * 3, "cpu")(masks.unsqueeze(1).repeat(1, 3, 1, 1) * 60)
    xa, ma = augment_segmentation(x, masks, scale=(0.5, 2.0), ignore_index=255, generator=g)
    assert set(ma.unique().tolist()) <= {0, 1, 2, 3, 255} and (ma == 255).any()
    assert ma.dtype == torch.int64 and xa.shape == x.shape
    # image pixels where the mask is ignored are padding, the normalised mean 0 (but for
    # the one-pixel rim where bilinear sampling still reaches into the image)
    padded = xa.permute(0, 2, 3, 1)[ma == 255].abs().amax(1)
    assert (padded < 1e-6).float().mean() > 0.7
    # no zoom: every image is itself or its mirror, exactly
    xs, ms = augment_segmentation(x, masks, scale=(1.0, 1.0), ignore_index=255, generator=g)
    flips = 0
    for i in range(16):
        same = torch.equal(ms[i], masks[i].long())
        assert same or torch.equal(ms[i], masks[i].long().flip(-1))
        assert torch.allclose(xs[i], x[i] if same else x[i].flip(-1), atol=1e-5)  # image follows its mask
        flips += not same
    assert 0 < flips < 16


def test_init_follows_torchvision_kaiming_fan_out_and_unit_batch_norm():
    from archlab.zoo import get_model

    g = get_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    torch.manual_seed(0)
    m = initialise(to_module(g), g)
    w = m.get_submodule("layer1.0.conv1").weight
    assert abs(w.std().item() - math.sqrt(2 / (64 * 9))) < 0.1 * math.sqrt(2 / (64 * 9))
    bn = m.get_submodule("layer1.0.bn1")
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


@pytest.mark.parametrize("model, how, kaiming", [
    ("resnet18", "auto", True),            # torchvision ships ResNet: its init
    ("unet_small", "auto", False),         # archlab's own net: PyTorch's defaults, as torchvision's seg heads
    ("unet_small", "torchvision", True),
    ("resnet18", "pytorch", False),
    ("torchvision:resnet18", "auto", True),  # an import knows it is torchvision's
    ("fcn_resnet50", "auto", True),
    ("fcn8s", "auto", False),              # archlab's own FCN on VGG (torchvision has none)
    ("pspnet", "auto", False),
    ("mobilenet_v1", "auto", False),
])
def test_init_mode_picks_torchvision_or_pytorch_defaults(model, how, kaiming):
    from archlab.resolve import resolve_model

    g = resolve_model(model, input_shape=(3, 64, 64))
    torch.manual_seed(0)
    m = to_module(g)
    conv = next(c for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.in_channels >= 16)
    before = conv.weight.detach().clone()
    initialise(m, g, how)
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    if kaiming:
        assert abs(conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.15 * math.sqrt(2 / fan_out)
    else:
        assert torch.equal(conv.weight, before)  # PyTorch's default, untouched


def test_scale_crop_range_comes_from_the_data_unless_the_config_names_one(monkeypatch):
    from archlab.train import trainer

    seen = []
    real = trainer.augment_segmentation
    monkeypatch.setattr(trainer, "augment_segmentation", lambda *a, **k: seen.append(k["scale"]) or real(*a, **k))
    data = load_data("scenes:n=8,val=4", size=(32, 32), seed=0)
    assert data.aug_scale == (1.0, 1.0)   # generated scenes already vary in scale
    g = get_model("unet_small", num_classes=data.num_classes, input_shape=data.input_shape)
    train(g, data, TrainConfig(steps=1, batch_size=4, device="cpu"), progress=False)
    train(g, data, TrainConfig(steps=1, batch_size=4, device="cpu", scale=(0.5, 2.0)), progress=False)
    assert seen == [(1.0, 1.0), (0.5, 2.0)]
    r = train(g, data, TrainConfig(steps=1, batch_size=4, device="cpu"), progress=False)
    assert r.config["scale"] == (1.0, 1.0) and r.config["init"] == "pytorch"  # what was applied


@pytest.mark.parametrize("field, value", [("init", "xavier"), ("scale", (2.0, 1.0)), ("scale", (0.0, 1.0)),
                                          ("scale", (1.0,)), ("scale", 2.0), ("scale", "0.5,2"),
                                          ("scale", (0.5, True)), ("scale", (0.5, math.inf))])
def test_bad_init_or_scale_is_refused_naming_it(field, value):
    with pytest.raises(TrainError.__mro__[1], match=field):
        TrainConfig(**{field: value}).resolved()
