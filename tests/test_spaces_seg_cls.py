"""The ``seg`` and ``cls`` search spaces (search_spaces/seg.py, search_spaces/cls.py):
every sampled configuration builds a valid, analyzable graph of the right output
shape; parameter names are as documented; fixed configurations have hand-checked
parameter counts; they train their candidates for a reward (tests/test_search_trained.py),
and a space file with neither an evaluator nor a TASK is refused with one line."""
from __future__ import annotations

import optuna
import pytest
import torch

import archlab
from archlab.analysis import analyze
from archlab.cli.main import main
from archlab.errors import ArchlabError
from search_spaces import get_space, list_spaces
from search_spaces.cls import NUM_FILTERS, make_cls_space, num_params_of
from search_spaces.seg import UPSAMPLES, make_seg_space, seg_graph

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_SAMPLES = 50


def _sample(space, n: int, seed: int = 0):
    """``n`` (trial, graph) pairs drawn by Optuna's RandomSampler in an in-memory study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial, space(trial)


def _out_shape(g: archlab.Graph) -> tuple[int, ...]:
    return tuple(g.shape(g.outputs["out"]))


SEG_SMALL = dict(depth=3, output_stride=8, base_width=16, width_growth=2.0, block="plain", kernel_size=3,
                 skip="add", upsample="bilinear", head="none")


# -- registration -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seg", "cls"])
def test_space_is_registered_as_trained_for_its_reward(name):
    space = list_spaces()[name]
    assert space.evaluator is None and space.task == name and space.factory is not None
    assert "after brief training" in space.description


# -- seg --------------------------------------------------------------------------------
def test_seg_random_configurations_build_validate_and_analyze():
    space = get_space("seg")
    for trial, g in _sample(space, N_SAMPLES):
        g.validate()
        assert _out_shape(g) == (21, 64, 64), trial.params
        a = analyze(g)
        assert a.totals["params"] == g.num_params() > 0


def test_seg_parameter_names_are_the_documented_nine_plus_aspp_rates():
    base = {"depth", "output_stride", "base_width", "width_growth", "block", "kernel_size", "skip", "upsample", "head"}
    for trial, _ in _sample(get_space("seg"), N_SAMPLES, seed=1):
        want = base | ({"aspp_rates"} if trial.params["head"] == "aspp" else set())
        assert set(trial.params) == want
        assert len(trial.params) == (10 if trial.params["head"] == "aspp" else 9)


def test_seg_fixed_small_config_has_the_hand_counted_parameters():
    # depth 3, OS 8, widths 16/32/64/128, plain 3x3 blocks, add skips, bilinear, no head, 21 classes:
    #   stem 3->16: 432 + bn 32                                          =     464
    #   enc1 16->32: 4608 + 64 + 9216 + 64                               =  13,952
    #   enc2 32->64: 18432 + 128 + 36864 + 128                           =  55,552
    #   enc3 64->128: 73728 + 256 + 147456 + 256                         = 221,696
    #   dec2: proj 1x1 128->64 8192 + 128; block 64->64 2 x (36864 + 128) =  82,304
    #   dec1: proj 64->32 2048 + 64; block 2 x (9216 + 64)               =  20,672
    #   dec0: proj 32->16 512 + 32; block 2 x (2304 + 32)                =   5,216
    #   classifier 1x1 16->21 with bias: 336 + 21                        =     357
    #   total                                                            = 400,213
    g = get_space("seg")(optuna.trial.FixedTrial(SEG_SMALL))
    assert g.num_params() == 400_213
    # concat skips double the decoder blocks' first conv input: +64*64*9 + 32*32*9 + 16*16*9
    g = get_space("seg")(optuna.trial.FixedTrial({**SEG_SMALL, "skip": "concat"}))
    assert g.num_params() == 400_213 + 36_864 + 9_216 + 2_304


@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_seg_compiles_and_runs_for_every_upsampling_kind(upsample):
    heads = {"bilinear": "aspp", "nearest": "ppm", "transposed": "none", "unpool": "aspp"}
    cfg = {**SEG_SMALL, "upsample": upsample, "head": heads[upsample], "aspp_rates": "2,4,6",
           "block": "bottleneck" if upsample == "unpool" else "basic", "skip": "concat", "kernel_size": 5}
    g = get_space("seg")(optuna.trial.FixedTrial(cfg))
    module = archlab.to_module(g).eval()
    with torch.no_grad():
        y = module(torch.randn(1, 3, 64, 64))
    assert tuple(y.shape) == (1, 21, 64, 64)
    assert sum(p.numel() for p in module.parameters()) == g.num_params()


def test_seg_output_stride_below_the_depth_dilates_the_last_stages():
    g = seg_graph({**SEG_SMALL, "depth": 5, "output_stride": 8, "block": "basic"})
    assert tuple(g.shape("enc3.conv1")[1:]) == tuple(g.shape("enc5.conv1")[1:]) == (8, 8)  # 64 / 8
    assert g["enc4.conv1"].attrs["dilation"] in (2, (2, 2), [2, 2])
    assert g["enc5.conv1"].attrs["dilation"] in (4, (4, 4), [4, 4])
    assert "dec2" in {n.name.split(".")[0] for n in g} and "dec3" not in {n.name.split(".")[0] for n in g}


def test_seg_output_stride_above_two_to_the_depth_is_clamped():
    a = seg_graph({**SEG_SMALL, "output_stride": 32})
    assert a.num_params() == seg_graph(SEG_SMALL).num_params()


def test_seg_factory_takes_classes_and_input_shape():
    space = make_seg_space(num_classes=5, input_shape=(1, 96, 128))
    for trial, g in _sample(space, 10, seed=2):
        assert _out_shape(g) == (5, 96, 128), trial.params


def test_seg_factory_refuses_sizes_that_some_depth_cannot_pool():
    with pytest.raises(ArchlabError, match="multiples of 32"):
        make_seg_space(input_shape=(3, 100, 100))


# -- cls --------------------------------------------------------------------------------
def test_cls_random_configurations_build_validate_and_analyze():
    space = get_space("cls")
    for trial, g in _sample(space, N_SAMPLES):
        g.validate()
        assert _out_shape(g) == (10,), trial.params
        analyze(g)
        strides = g.meta["strides"]
        assert len(strides) == trial.params["num_layers"] and strides.count(2) <= 3  # 32 -> 16 -> 8 -> 4


def test_cls_parameter_names_follow_layers_in_the_documented_order():
    for trial, _ in _sample(get_space("cls"), N_SAMPLES, seed=1):
        n = trial.params["num_layers"]
        assert len(trial.params) == num_params_of(n) == 1 + 4 * n + (n - 1) * (n - 2) // 2
        expected = ["num_layers"]
        for i in range(n):
            expected += [f"layer{i}.skip.{j}" for j in range(i - 1)]
            expected += [f"layer{i}.{k}" for k in ("filter_height", "filter_width", "filters", "stride")]
        assert list(trial.params) == expected  # suggestion order, as a controller sees it
        assert all(trial.params[f"layer{i}.filters"] in NUM_FILTERS for i in range(n))
    assert (num_params_of(6), num_params_of(12)) == (35, 104)


def _cls_fixed(**overrides):
    params = {"num_layers": 6}
    for i in range(6):
        params.update({f"layer{i}.skip.{j}": False for j in range(i - 1)})
        params.update({f"layer{i}.filter_height": 3, f"layer{i}.filter_width": 3,
                       f"layer{i}.filters": 24, f"layer{i}.stride": 1})
    params.update(overrides)
    return optuna.trial.FixedTrial(params)


def test_cls_fixed_small_config_has_the_hand_counted_parameters():
    # 6 layers of 24 3x3 filters; layer 2 also reads layer 0 (a stride-2 layer 1 makes
    # that a 2x2 max pool, no parameters); layer 5 is 1x7; 10 classes:
    #   layer0 3->24: 648 + bn 48 = 696;  layer1, 3, 4: 5184 + 48 = 5232 each
    #   layer2 (24 + 24)->24: 10368 + 48 = 10416;  layer5 1x7: 4032 + 48 = 4080
    #   fc 24->10: 250;  total 696 + 3 * 5232 + 10416 + 4080 + 250 = 31,138
    g = get_space("cls")(_cls_fixed(**{"layer1.stride": 2, "layer2.skip.0": True,
                                        "layer5.filter_height": 1, "layer5.filter_width": 7}))
    assert g.num_params() == 31_138
    assert g.meta["strides"] == [1, 2, 1, 1, 1, 1]
    assert tuple(g.shape("layer2.pool0")) == (24, 16, 16)


def test_cls_stride_budget_keeps_the_map_at_least_4x4():
    g = get_space("cls")(_cls_fixed(**{f"layer{i}.stride": 2 for i in range(6)}))
    assert g.meta["strides"] == [2, 2, 2, 1, 1, 1]
    assert tuple(g.shape("layer5.relu")[1:]) == (4, 4)


def test_cls_skips_across_odd_sizes_are_pooled_to_match():
    space = make_cls_space(num_classes=7, input_shape=(1, 37, 45))
    for trial, g in _sample(space, 20, seed=3):
        assert _out_shape(g) == (7,), trial.params


def test_cls_compiles_and_runs():
    for _, g in _sample(get_space("cls"), 3, seed=4):
        module = archlab.to_module(g).eval()
        with torch.no_grad():
            y = module(torch.randn(1, 3, 32, 32))
        assert tuple(y.shape) == (1, 10)
        assert sum(p.numel() for p in module.parameters()) == g.num_params()


# -- the engine -------------------------------------------------------------------------
def test_search_refuses_a_space_file_without_evaluator_or_task_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bare.py"
    path.write_text("from search_spaces.seg import seg_space as space\n")
    rc = main(["search", "--space", str(path), "--sampler", "random", "--n-trials", "3"])  # default SQLite storage
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "has no evaluator and no TASK" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.py"]  # refused before anything is written