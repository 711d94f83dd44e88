"""The embedded tasks ``scenes`` and ``shapes``: contract, determinism, options, and the design
properties that make the lecture's choices matter (the slow test trains nets on it)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from archlab.train.data import DataError, load_data
from archlab.train.data.embedded import SceneOptions, generate_scenes, load_scenes, load_shapes
from archlab.train.data.embedded_draw import SHAPE_NAMES


@pytest.fixture(scope="module")
def scenes():
    return load_scenes(None, n=48, val=16, seed=0)


# -- contract ---------------------------------------------------------------------------
def test_scenes_follow_the_split_contract(scenes):
    assert scenes.task == "seg" and scenes.num_classes == 5 and scenes.ignore_index == 255
    assert scenes.class_names == ("background", "disc", "square", "triangle", "cross")
    assert scenes.input_shape == (3, 64, 64)
    for split, n in ((scenes.train, 48), (scenes.val, 16)):
        assert split.images.dtype == torch.uint8 and split.images.shape == (n, 3, 64, 64)
        assert split.targets.dtype == torch.uint8 and split.targets.shape == (n, 64, 64)
        assert split.images.device.type == "cpu" and split.images.is_contiguous() and split.targets.is_contiguous()
        assert int(split.targets.max()) < scenes.num_classes  # no ignored pixel: boundaries count


def test_mean_and_std_are_those_of_the_train_images(scenes):
    x = scenes.train.images.double() / 255
    assert scenes.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert scenes.std == pytest.approx(x.std(dim=(0, 2, 3)).tolist(), abs=1e-6)


def test_size_and_class_count_are_options():
    d = load_data("scenes:n=4,val=2,classes=7", size=(32, 48), seed=1)
    assert d.input_shape == (3, 32, 48) and d.train.targets.shape == (4, 32, 48)
    assert d.num_classes == 8 and d.class_names[1:] == SHAPE_NAMES[:7]


def test_shapes_follow_the_classification_contract():
    d = load_shapes(None, n=40, val=8, classes=5, seed=0)
    assert d.task == "cls" and d.num_classes == 5 and d.class_names == SHAPE_NAMES[:5]
    assert d.input_shape == (3, 32, 32)
    assert d.train.targets.dtype == torch.int64 and d.train.targets.shape == (40,)
    assert d.val.images.shape == (8, 3, 32, 32) and d.val.images.dtype == torch.uint8
    assert int(d.train.targets.min()) >= 0 and int(d.train.targets.max()) < 5


def test_embedded_tasks_are_registered_without_a_root():
    from archlab.train.data.spec import layouts

    known = layouts()
    assert (known["scenes"].task, known["scenes"].needs_root) == ("seg", False)
    assert (known["shapes"].task, known["shapes"].needs_root) == ("cls", False)


# -- determinism ----------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes():
    a, b = load_data("scenes:n=20,val=5", seed=3), load_data("scenes:n=20,val=5", seed=3)
    for sa, sb in ((a.train, b.train), (a.val, b.val)):
        assert torch.equal(sa.images, sb.images) and torch.equal(sa.targets, sb.targets)


def test_different_seeds_and_splits_differ():
    a, b = load_scenes(None, n=20, val=20, seed=0), load_scenes(None, n=20, val=20, seed=1)
    assert not torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.targets, a.val.targets)  # validation is its own stream


def test_shapes_are_deterministic():
    a, b = load_shapes(None, n=16, val=4, seed=2), load_shapes(None, n=16, val=4, seed=2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.targets, b.train.targets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_drawing_on_cuda_gives_the_cpu_labels():
    x, y, _ = generate_scenes(64, seed=5)
    xg, yg, _ = generate_scenes(64, seed=5, device="cuda")
    assert xg.device.type == "cpu" and torch.equal(y, yg)
    assert int((x.int() - xg.int()).abs().max()) <= 1  # float rounding of the background, at most one grey level


# -- balance and scale ------------------------------------------------------------------------
def test_every_class_is_present(scenes):
    assert torch.bincount(scenes.train.targets.flatten().long(), minlength=5).min() > 0
    d = load_shapes(None, n=64, val=4, classes=8)
    assert torch.bincount(d.train.targets, minlength=8).min() > 0


def test_object_scale_range_is_honoured():
    opt = SceneOptions(classes=8, objects=1, min_scale=0.2, max_scale=0.3, clutter=0)
    _, y, facts = generate_scenes(200, seed=1, options=opt)
    scale = facts["scale"][:, 0]
    assert float(scale.min()) >= 0.2 and float(scale.max()) <= 0.3
    assert float(scale.max()) - float(scale.min()) > 0.08  # the range is used, not one size
    fg = y > 0
    extent = torch.maximum(fg.any(2).sum(1), fg.any(1).sum(1)).float()  # bounding box side, pixels
    # the circumscribed diameter bounds the extent; the flattest shape (a square seen along
    # its side) still spans 1/sqrt(2) of it
    assert bool((extent <= scale * 64 + 1).all())
    assert bool((extent >= scale * 64 / 2 ** 0.5 - 2).all())


def test_default_scales_span_small_to_large_objects():
    _, _, facts = generate_scenes(64, seed=0)
    s = facts["scale"][facts["active"]]
    assert float(s.min()) < 0.15 and float(s.max()) > 0.45


# -- the design: context and resolution matter -------------------------------------------------
def test_fill_colour_does_not_depend_on_the_class():
    """Inside an object a pixel's colour says nothing about its class: only the outline does."""
    opt = SceneOptions(classes=8, objects=1, noise=0.0, clutter=0)
    x, y, facts = generate_scenes(1024, size=(32, 32), seed=7, options=opt)
    first = (y > 0).flatten(1).float().argmax(1)  # any object pixel holds the fill (no noise)
    fill = x.flatten(2)[torch.arange(len(x)), :, first].double() / 255  # (n, C)
    kinds = facts["kinds"][:, 0]
    overall = fill.mean(0)
    for k in range(8):
        assert (fill[kinds == k].mean(0) - overall).abs().max() < 0.06, SHAPE_NAMES[k]


def test_many_object_pixels_lie_near_a_boundary(scenes):
    """Thin parts and small objects: most object pixels are within 2 px of an edge,
    so a stride-8 output upsampled cannot be right about them."""
    t = scenes.train.targets.float().unsqueeze(1)
    hi = torch.nn.functional.max_pool2d(t, 5, 1, 2)
    lo = -torch.nn.functional.max_pool2d(-t, 5, 1, 2)
    band = (hi != lo).squeeze(1)
    fg = scenes.train.targets > 0
    assert float((band & fg).sum() / fg.sum()) > 0.5


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, words", [
    ("scenes:colour=3", "no option 'colour'"),
    ("scenes:classes=0", "classes=0"),
    ("scenes:classes=9", "classes=9"),
    ("scenes:min_scale=0.5,max_scale=0.2", "min_scale"),
    ("scenes:max_scale=1.5", "max_scale"),
    ("scenes:min_scale=0.01", "min_scale"),
    ("scenes:n=0", "n=0"),
    ("scenes:n=2.5", "n=2.5"),
    ("scenes:noise=-1", "noise"),
    ("scenes:objects=0", "objects"),
    ("scenes:clutter=-2", "clutter"),
    ("scenes:/data/somewhere", "takes no folder"),
    ("shapes:classes=12", "classes=12"),
    ("scenes:device=tpu9", "device='tpu9'"),
])
def test_bad_options_are_named_data_errors(spec, words):
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(".", r"\.")) as e:
        load_data(spec)
    assert "\n" not in str(e.value)


def test_too_small_an_image_is_refused():
    with pytest.raises(DataError, match="4x4"):
        load_data("scenes:n=2,val=2", size=(4, 4))


# -- slow: the task rewards what the lecture says it should -------------------------------------
def _benchmark():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "embedded_task.py"
    spec = importlib.util.spec_from_file_location("embedded_task", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scenes_reward_receptive_field_and_skip_links():
    """``benchmarks/embedded_task.py --quick`` (2 seeds, 64x64, 1024 scenes, 8 epochs, narrow
    nets, the trainer's defaults): (a) the dilated stack beats the same-size undilated one on
    mIoU; (b) skip links raise the boundary accuracy of the same encoder-decoder. Checked per
    seed for direction only; the sizes of the effects are the benchmark's (README).
    Reference, 2026-11-27, 2-core CPU (about 10 min): (a) +0.015, +0.023 mIoU;
    (b) +0.043, +0.039 boundary accuracy."""
    bench = _benchmark()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = bench.run(**bench.QUICK, size=64, device=device, log=lambda *_: None)
    local, context = res["a.local"], res["a.context"]
    assert local[0]["params"] == context[0]["params"] and context[0]["rf"] > 4 * local[0]["rf"]
    gain = [c["miou"] - l["miou"] for l, c in zip(local, context)]
    assert min(gain) > 0, gain
    none, concat = res["b.skip_none"], res["b.skip_concat"]
    assert concat[0]["params"] < 2 * none[0]["params"]
    edge_gain = [c["boundary_acc"] - n["boundary_acc"] for n, c in zip(none, concat)]
    assert min(edge_gain) > 0, edge_gain
