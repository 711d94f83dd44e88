"""``archlab search`` on spaces that train every candidate for its reward
(archlab/search/trained.py): the built-in seg and cls spaces end to end, learning
curves and pruning, comparable budgets, faults inside a trial (divergence, out of
memory, timeouts, a SIGKILLed worker), kept weights, the hardware penalty and
``--gpus``'s launcher. Sizes are tiny so the whole file runs in about a minute."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import archlab
from archlab.cli.main import main
from archlab.search.engine import SearchConfig, decided, run_search
from archlab.search.trained import TrainBudget, check_same_training, parse_penalty
from archlab.errors import ArchlabError

from _tiny_space import TINY_SPACE  # noqa: E402  (tests/ is on sys.path)

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = ["--data", "scenes:n=16,val=8", "--epochs", "2", "--batch-size", "8"]



@pytest.fixture
def tiny_space(tmp_path) -> str:
    path = tmp_path / "tiny_space.py"
    path.write_text(TINY_SPACE)
    return str(path)


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _search(*argv: str) -> int:
    return main(["search", "--quiet", *argv])


# -- out of the box -------------------------------------------------------------------------
@pytest.mark.parametrize("space,metric", [("seg", "miou"), ("cls", "top1")])
def test_builtin_space_search_trains_every_candidate(space, metric, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/s.db"
    data = "scenes:n=16,val=8" if space == "seg" else "shapes:n=16,val=8"
    rc = main(["search", "--space", space, "--sampler", "reinforce", "--n-trials", "3", "--storage", db,
               "--data", data, "--epochs", "2", "--batch-size", "8"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"study '{space}-reinforce': 3/3 finished trials" in out
    assert "trial 3/3" in err  # the progress lines (a tqdm bar with the epoch on a terminal)
    study = _study(db, f"{space}-reinforce")
    training = study.user_attrs["training"]
    assert training["task"] == space and training["metric"] == metric and training["epochs"] == 2
    assert training["input"] == [3, 32, 32] and training["train_images"] == 16
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done, [t.user_attrs.get("pruned_reason") for t in study.trials]
    for t in done:  # the reward is the last epoch's validation metric; the curve is in the trial
        assert sorted(t.intermediate_values) == [1, 2]
        assert t.value == pytest.approx(t.intermediate_values[2]) == pytest.approx(t.user_attrs["accuracy"])
        assert 0.0 <= t.value <= 1.0 and t.user_attrs["epochs"] == 2 and t.user_attrs["device"] == "cpu"
        graph = archlab.load(_arch(t))
        shape = graph.shape(graph.outputs["out"])
        assert tuple(shape) == ((5, 32, 32) if space == "seg" else (4,))  # the data's classes and size


def _arch(trial) -> str:
    from archlab.search.trials import arch_text

    return arch_text(trial)


def test_progress_bar_names_the_trial_and_epoch(tmp_path):
    from archlab.cli.search_train import TrainProgress

    class Rec:
        epoch, val = 2, {"miou": 0.25}

    import io

    stream = io.StringIO()
    bar = TrainProgress(3, stream)
    bar.bar.disable = False
    bar.epoch(7, Rec(), 4)
    assert "trial #7 epoch 2/4 miou 0.250" in bar.bar.postfix
    bar.close()


# -- pruning --------------------------------------------------------------------------------
def test_halving_pruner_stops_trials_after_an_epoch_and_records_it(tiny_space, tmp_path):
    db = f"sqlite:///{tmp_path}/p.db"
    cfg = SearchConfig(space=tiny_space, sampler="random", n_trials=12, seed=0, storage=db, study="p",
                       training=TrainBudget(data="scenes:n=16,val=8", epochs=6, batch_size=8, pruner="halving"))
    study = run_search(cfg).study
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and sum(decided(t) for t in study.trials) == 12
    for t in pruned:
        e = t.user_attrs["stopped_epoch"]
        assert 2 <= e < 6 and max(t.intermediate_values) == e  # never after epoch 1 (make_pruner)
        assert f"pruned by the halving pruner after epoch {e}/6" in t.user_attrs["pruned_reason"]
        assert t.value == pytest.approx(t.intermediate_values[e])


def test_median_pruner_never_stops_a_trial_after_the_first_epoch(tiny_space):
    cfg = SearchConfig(space=tiny_space, sampler="random", n_trials=14, seed=2, storage=":memory:",
                       training=TrainBudget(data="scenes:n=16,val=8", epochs=4, batch_size=8, pruner="median"))
    trials = run_search(cfg).study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [t.intermediate_values for t in trials]
    assert all(2 <= t.user_attrs["stopped_epoch"] < 4 for t in pruned)


def test_pruner_with_several_objectives_is_refused(tiny_space):
    with pytest.raises(ArchlabError, match="--pruner needs a single objective"):
        run_search(SearchConfig(space=tiny_space, sampler="nsga2", n_trials=2, storage=":memory:",
                                objectives=("reward", "macs"), training=TrainBudget(pruner="median")))


# -- comparable rewards ---------------------------------------------------------------------
@pytest.mark.parametrize("extra,named", [(["--epochs", "3"], "epochs=3"), (["--data", "scenes:n=24,val=8"], "data="),
                                         (["--lr", "0.01"], "lr=0.01"), (["--input", "3x64x64"], "input=3x64x64"),
                                         (["--pruner", "median"], "pruner=median")])
def test_worker_with_another_budget_is_refused_before_writing(extra, named, tiny_space, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/c.db"
    base = ["--space", tiny_space, "--sampler", "random", "--n-trials", "2", "--storage", db, "--study", "c", *TINY]
    assert _search(*base) == 0
    before = [(t.number, t.state, t.datetime_complete) for t in _study(db, "c").trials]
    capsys.readouterr()
    argv = base + ["--n-trials", "4"]
    for flag in extra[::2]:  # replace the option when it is in TINY
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    rc = _search(*argv, *extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert named in err and "would not compare" in err and "pick another --study name" in err
    assert [(t.number, t.state, t.datetime_complete) for t in _study(db, "c").trials] == before
    assert _search(*base, "--n-trials", "3", "--device", "cpu") == 0  # the device is the worker's own


def test_training_options_are_refused_for_a_tabular_space(capsys):
    rc = _search("--space", "nasbench201", "--n-trials", "2", "--storage", ":memory:", "--epochs", "3")
    err = capsys.readouterr().err
    assert rc == 2 and "computes its rewards without training" in err


# -- faults inside a trial ------------------------------------------------------------------
def test_diverging_candidates_fail_with_the_reason_and_the_search_completes(tiny_space, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/d.db"
    rc = _search("--space", tiny_space, "--sampler", "tpe", "--n-trials", "3", "--storage", db, "--study", "d",
                 *TINY, "--lr", "1e30")
    out, err = capsys.readouterr()
    assert rc == 1 and "3/3 finished trials" in out and "3 failed" in out and "diverged" in out
    assert "every trial failed, so the study has no reward" in err
    trials = _study(db, "d").trials
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs["fail_reason"].startswith("diverged: the loss became") for t in trials)


def test_out_of_memory_fails_the_trial_and_the_search_goes_on(tiny_space, tmp_path, monkeypatch):
    import archlab.train.trainer as trainer

    real, calls = trainer._train, []

    def flaky(*a, **k):  # the second candidate runs out of memory, as on a GPU
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(trainer, "_train", flaky)
    study = run_search(SearchConfig(space=tiny_space, sampler="random", n_trials=3, seed=1, storage=":memory:",
                                    training=TrainBudget(data="scenes:n=16,val=8", epochs=1, batch_size=8))).study
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "out of memory on cpu training tiny at batch size 8" in study.trials[1].user_attrs["fail_reason"]


def test_trial_timeout_fails_the_trial_and_the_search_goes_on(tiny_space, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/t.db"
    rc = _search("--space", tiny_space, "--sampler", "random", "--n-trials", "2", "--storage", db, "--study", "t",
                 "--data", "scenes:n=16,val=8", "--epochs", "400", "--batch-size", "8", "--trial-timeout", "0.5")
    assert rc == 1 and "every trial failed" in capsys.readouterr().err  # all timed out: the settings
    for t in _study(db, "t").trials:
        assert t.state == TrialState.FAIL and "timed out" in t.user_attrs["fail_reason"]
        assert "--trial-timeout 0.5 s" in t.user_attrs["fail_reason"]
        assert t.user_attrs["eval_s"] < 5


def test_worker_killed_while_training_is_retried_and_n_trials_finish(tiny_space, tmp_path):
    db = f"sqlite:///{tmp_path}/k.db"
    argv = [sys.executable, "-m", "archlab", "search", "--quiet", "--space", tiny_space, "--sampler", "random",
            "--n-trials", "3", "--storage", db, "--study", "k", "--heartbeat-interval", "1", "--grace-period", "2",
            "--data", "scenes:n=16,val=8", "--epochs", "60", "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            running = _study(db, "k").get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the study is not there yet
            continue
        victim = next((t.number for t in running if t.intermediate_values), None)  # mid-training
    assert victim is not None, proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = _study(db, "k").trials
    assert sum(decided(t) for t in trials) == 3
    assert trials[victim].state == TrialState.FAIL and "fail_reason" not in trials[victim].user_attrs
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert retried and retried[0].params == trials[victim].params and decided(retried[0])
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(1, 61)) and "reward" in t.user_attrs


# -- weights, best, train longer ------------------------------------------------------------
def test_best_trials_keep_their_weights_which_load_and_retrain(tiny_space, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/w.db"
    wdir = tmp_path / "weights"
    rc = _search("--space", tiny_space, "--sampler", "random", "--n-trials", "5", "--storage", db, "--study", "w",
                 *TINY, "--save-weights", str(wdir), "--keep", "2", "--seed", "3")
    assert rc == 0, capsys.readouterr().err
    study = _study(db, "w")
    done = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    files = sorted(p.name for p in wdir.iterdir())
    assert len(files) == 2 and f"w-trial{done[0].number:05d}.pt" in files  # the best two are kept
    yaml, pt = tmp_path / "best.yaml", tmp_path / "best.pt"
    assert main(["best", "--study", "w", "--storage", db, "-o", str(yaml), "--weights", str(pt)]) == 0
    graph = archlab.load_file(yaml)
    module = archlab.to_module(graph)
    module.load_state_dict(torch.load(pt), strict=True)  # the architecture file and its weights match

    from archlab.train.data import load_data
    from archlab.train.evaluate import evaluate
    from archlab.train.augment import Normalizer

    data = load_data("scenes:n=16,val=8", size=(32, 32))
    val = evaluate(module.eval(), data.val, task="seg", num_classes=5, ignore_index=255,
                   normalize=Normalizer(data.mean, data.std, torch.device("cpu")), batch_size=16,
                   device=torch.device("cpu"), autocast=None, channels_last=False)
    assert val["miou"] == pytest.approx(done[0].user_attrs["accuracy"], abs=1e-6)  # the trial's own reward
    capsys.readouterr()
    assert main(["train", str(yaml), "--data", "scenes:n=16,val=8", "--epochs", "3", "--batch-size", "8",
                 "--no-progress", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 3


def test_unwritable_weights_folder_is_refused_before_anything_is_written(tiny_space, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    db = tmp_path / "u.db"
    rc = _search("--space", tiny_space, "--n-trials", "1", "--storage", f"sqlite:///{db}", *TINY,
                 "--save-weights", str(tmp_path / "file" / "w"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot write there" in err and not db.exists()


def test_best_weights_without_save_weights_is_one_line(tiny_space, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/n.db"
    assert _search("--space", tiny_space, "--sampler", "random", "--n-trials", "1", "--storage", db,
                   "--study", "n", *TINY) == 0
    capsys.readouterr()
    rc = main(["best", "--study", "n", "--storage", db, "-o", str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "b.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "kept no weights: run the search with --save-weights" in err


# -- hardware-aware reward ------------------------------------------------------------------
def test_penalty_scales_the_reward_mnasnet_style(tiny_space, tmp_path):
    study = run_search(SearchConfig(space=tiny_space, sampler="random", n_trials=3, seed=0, storage=":memory:",
                                    training=TrainBudget(data="scenes:n=16,val=8", epochs=1, batch_size=8,
                                                         penalty=parse_penalty("macs:100k")))).study
    for t in study.trials:
        factor = (t.user_attrs["macs"] / 100_000) ** -0.07
        assert t.user_attrs["penalty"] == pytest.approx(factor)
        assert t.value == pytest.approx(t.user_attrs["accuracy"] * factor)
    assert study.user_attrs["training"]["penalty"] == {"metric": "macs", "target": 100_000.0, "weight": -0.07}


@pytest.mark.parametrize("text,msg", [("flops:5M", "METRIC one of"), ("macs:-5", "positive count"),
                                      ("params:1e6:x", "finite number"), ("macs", "METRIC:TARGET")])
def test_bad_penalty_is_one_line(text, msg, tiny_space, capsys):
    rc = _search("--space", tiny_space, "--n-trials", "1", "--storage", ":memory:", "--penalty", text)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and msg in err


def test_multi_objective_search_trains_candidates(tiny_space):
    study = run_search(SearchConfig(space=tiny_space, sampler="nsga2", n_trials=3, seed=0, storage=":memory:",
                                    objectives=("reward", "macs"),
                                    training=TrainBudget(data="scenes:n=16,val=8", epochs=1, batch_size=8))).study
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and t.values[0] == pytest.approx(t.user_attrs["accuracy"])
        assert t.values[1] == t.user_attrs["macs"]


# -- many GPUs --------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,msg", [([], "has no CUDA GPU"), (["--device", "cpu"], "give one of them"),
                                       (["--storage", ":memory:"], "needs a storage the workers share")])
def test_gpus_bad_use_is_one_line_before_anything_is_written(extra, msg, tiny_space, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    db = tmp_path / "x.db"
    rc = _search("--space", tiny_space, "--n-trials", "1", "--storage", f"sqlite:///{db}", *extra, "--gpus", "all")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and len(err.splitlines()) == 1
    assert not db.exists()


def test_worker_argv_gives_each_worker_its_device_and_seed():
    from archlab.cli.search_train import worker_argv

    argv = ["search", "--space", "seg", "--gpus", "0,1", "--seed", "7", "--device=cpu", "--quiet", "--n-trials", "9"]
    assert worker_argv(argv, 1, 1, 7) == ["search", "--space", "seg", "--n-trials", "9", "--device", "cuda:1",
                                          "--quiet", "--seed", "8"]


def test_gpus_launcher_runs_workers_on_one_study(tiny_space, tmp_path, monkeypatch, capsys):
    """The launcher's mechanism with two workers (on the CPU here: no GPU on CI)."""
    import archlab.cli.search_train as st

    monkeypatch.setattr(st, "gpu_list", lambda text: [0, 0])  # two workers on "GPU 0"
    real = st.worker_argv
    monkeypatch.setattr(st, "worker_argv", lambda *a: [x if x != "cuda:0" else "cpu" for x in real(*a)])
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    db = f"sqlite:///{tmp_path}/g.db"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rc = main(["search", "--space", tiny_space, "--sampler", "random", "--n-trials", "6", "--storage", db,
               "--study", "g", "--seed", "0", *TINY, "--gpus", "0,0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "started 2 workers on GPU 0,0" in err
    assert sum(decided(t) for t in _study(db, "g").trials) == 6  # however the two shared them


# -- user space files -------------------------------------------------------------------------
def test_space_file_with_a_bad_task_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(TINY_SPACE.replace('TASK = "seg"', 'TASK = "detection"'))
    rc = _search("--space", str(path), "--n-trials", "1", "--storage", ":memory:")
    assert rc == 2 and "TASK = 'detection'; use 'seg' or 'cls'" in capsys.readouterr().err


def test_check_same_training_names_the_first_difference():
    class S:
        study_name, user_attrs = "s", {"training": TrainBudget(epochs=4).record()}

    check_same_training(S, TrainBudget(epochs=4, device="cuda:3", keep=9).record())  # per-worker fields differ: fine
    with pytest.raises(ArchlabError, match=r"batch_size=32, but this worker asks batch_size=64.*--batch-size"):
        check_same_training(S, TrainBudget(epochs=4, batch_size=64).record())


def test_seg_search_data_mismatch_is_one_line(capsys):
    rc = _search("--space", "seg", "--n-trials", "1", "--storage", ":memory:", "--data", "shapes:n=8,val=4")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is a seg space but data shapes:n=8,val=4 is a cls task" in err


# -- the benchmarks run (tiny sizes; their figures come from a GPU: benchmarks/README.md) ------------
@pytest.mark.parametrize("script,argv,expect", [
    ("proxy_fidelity.py", ["--n", "3", "--epochs", "1", "--factor", "2"], "brief_vs_long: Kendall tau"),
    ("search_trained.py", ["--samplers", "random", "--pruned", "random", "--seeds", "1", "--trials", "3",
                           "--epochs", "2", "--factor", "1"], "best re-trained"),
])
def test_benchmark_scripts_run_end_to_end(script, argv, expect, tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), *argv, "--data", "scenes:n=16,val=8",
                           "--device", "cpu", "--workers", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert expect in done.stdout and json.loads(out.read_text())["runs"]


def test_gpus_for_a_space_that_does_not_train_is_refused(capsys, tmp_path):
    db = tmp_path / "nb.db"
    rc = _search("--space", "nasbench201", "--n-trials", "1", "--storage", f"sqlite:///{db}", "--gpus", "0")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "computes its rewards without training" in err and not db.exists()


def test_a_study_created_meanwhile_by_another_worker_is_checked_not_overwritten(tiny_space, tmp_path, monkeypatch):
    """Two workers that both saw no study: the second one's create fails, and it joins with the checks."""
    db = f"sqlite:///{tmp_path}/race.db"
    first = TrainBudget(data="scenes:n=16,val=8", epochs=1, batch_size=8)
    run_search(SearchConfig(space=tiny_space, sampler="random", n_trials=1, storage=db, study="r", training=first))
    monkeypatch.setattr(optuna, "get_all_study_names", lambda storage: [])  # it looked before the first created it
    with pytest.raises(ArchlabError, match="epochs=1, but this worker asks epochs=2"):
        run_search(SearchConfig(space=tiny_space, sampler="random", n_trials=2, storage=db, study="r",
                                training=TrainBudget(data="scenes:n=16,val=8", epochs=2, batch_size=8)))
    assert _study(db, "r").user_attrs["training"]["epochs"] == 1


def test_explicit_default_lr_matches_a_study_made_with_the_default(tiny_space, tmp_path):
    db = f"sqlite:///{tmp_path}/lr.db"
    base = dict(data="scenes:n=16,val=8", epochs=1, batch_size=8)
    run_search(SearchConfig(space=tiny_space, sampler="random", n_trials=1, storage=db, study="l",
                            training=TrainBudget(**base)))
    run_search(SearchConfig(space=tiny_space, sampler="random", n_trials=2, storage=db, study="l",
                            training=TrainBudget(**base, lr=3e-3)))
    assert _study(db, "l").user_attrs["training"]["lr"] == 3e-3


def test_horizon_trains_exactly_the_first_part_of_the_longer_run():
    """``horizon`` K: the brief budget is the first 1/K of a K-times longer run, to the last bit
    on the CPU (so the proxy benchmark's long-run curves measure that budget's ranking exactly)."""
    from archlab.train import TrainConfig, train
    from archlab.train.data import load_data
    from search_spaces.seg import seg_graph

    data = load_data("scenes:n=16,val=8", size=(32, 32))
    cfg = dict(depth=3, output_stride=8, base_width=16, width_growth=2.0, block="plain", kernel_size=3,
               skip="add", upsample="bilinear", head="none")
    graph = seg_graph(cfg, num_classes=data.num_classes, input_shape=data.input_shape)
    brief = train(graph, data, TrainConfig(epochs=2, batch_size=8, horizon=5, device="cpu"), progress=False)
    long = train(graph, data, TrainConfig(epochs=10, batch_size=8, device="cpu"), progress=False)
    assert brief.final == long.history[1].val
    assert [h.loss for h in brief.history] == [h.loss for h in long.history[:2]]
    plain = train(graph, data, TrainConfig(epochs=2, batch_size=8, device="cpu"), progress=False)
    assert plain.history[-1].loss != brief.history[-1].loss  # the schedule did change


def test_a_study_made_before_a_setting_existed_takes_its_default():
    class S:
        study_name = "old"
        user_attrs = {"training": {k: v for k, v in TrainBudget().record().items() if k != "horizon"}}

    check_same_training(S, TrainBudget().record())
    with pytest.raises(ArchlabError, match="horizon=1.0, but this worker asks horizon=10"):
        check_same_training(S, TrainBudget(horizon=10).record())


def test_a_study_made_before_horizon_was_stored_keeps_1_when_the_default_changes(monkeypatch):
    """Changing TrainBudget's default horizon must not let a worker with the new default
    join a study that never stored one (it was trained at horizon 1)."""
    import dataclasses

    import archlab.search.trained as trained

    @dataclasses.dataclass
    class NewDefault(TrainBudget):
        horizon: float = 10.0

    monkeypatch.setattr(trained, "TrainBudget", NewDefault)

    class S:
        study_name = "old"
        user_attrs = {"training": {k: v for k, v in TrainBudget().record().items() if k != "horizon"}}

    with pytest.raises(ArchlabError, match="horizon=1.0, but this worker asks horizon=10.0"):
        check_same_training(S, NewDefault().record())
    check_same_training(S, NewDefault(horizon=1.0).record())
    S.user_attrs = {"training": NewDefault().record()}  # a new study stores its horizon
    check_same_training(S, NewDefault().record())


def _benchmark(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pruning_replay_trains_everything_without_a_pruner_and_keeps_a_dominant_best():
    replay = _benchmark("pruning_replay").replay
    # candidate k's curve is worse than k-1's at every epoch: pruning can only drop the worse ones
    curves = {k: [0.5 - 0.05 * k + 0.01 * e for e in range(8)] for k in range(9)}
    order = list(range(9))
    assert replay(curves, order, optuna.pruners.NopPruner(), 8) == (72, 0)
    used, best = replay(curves, order, optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3), 8)
    assert best == 0 and used < 72
    # in ascending order every arrival beats all before it at each rung: asynchronous halving stops none
    assert replay(curves, order[::-1], optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
                  8) == (72, 0)


def test_pruning_replay_and_search_table_on_the_recorded_h100_runs():
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    done = subprocess.run([sys.executable, str(root / "pruning_replay.py"), "--budgets", "brief,8", "--orders", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert len(rows) == 9 + 11 and all(sum(x.endswith("%") for x in r) == 1 for r in rows)
    table = subprocess.run([sys.executable, str(root / "search_trained.py"), "--table",
                            str(root / "results" / "search_trained_h100.json")],
                           capture_output=True, text=True, timeout=120).stdout
    tpe = next(line.split() for line in table.splitlines() if line.split()[:2] == ["tpe", "none"])
    assert tpe[3:7] == ["0.2387", "+-", "0.0035", "0.048"]  # TPE's brief rewards above random's (README)


def test_reward_noise_icc_separates_architecture_from_seed():
    icc = _benchmark("reward_noise").icc
    same = icc([[0.2, 0.2, 0.2], [0.3, 0.3, 0.3], [0.4, 0.4, 0.4]])  # seeds agree: all architecture
    assert same["seed_std"] == 0 and same["icc"] == 1 and abs(same["arch_std"] - 0.1) < 1e-12
    noise = icc([[0.1, 0.3], [0.3, 0.1], [0.2, 0.2]])  # equal means: all seed
    assert noise["arch_std"] == 0 and noise["icc"] < 0 and abs(noise["seed_std"] - math.sqrt(0.04 / 3)) < 1e-12
    # ICC(1) by hand: MSB = 2 * 0.02 / 2 = 0.02, MSW = 6 * 0.0001 / 3 = 0.0002 -> 0.0198 / 0.0202
    mixed = icc([[0.19, 0.21], [0.29, 0.31], [0.39, 0.41]])
    assert abs(mixed["icc"] - 0.0099 / 0.0101) < 1e-9


def test_reward_noise_with_one_fresh_seed_ranks_across_seeds_unless_seed0_continues_the_selection():
    """Two seeds: brief and long are compared across seeds 0 and 1, and the long curves of
    seed 1 against seed 0's long run -- but only when seed 0's long run is not the very run
    the study selected on (study horizon == factor), where it would share all its luck."""
    rn = _benchmark("reward_noise")
    long0, long1 = [0.30, 0.40, 0.50, 0.45], [0.31, 0.42, 0.46, 0.47]  # long seeds swap candidates 2 and 3
    curves = [[long1[i] * (e + 1) / 4 for e in range(4)] for i in range(4)]
    curves[0][0] = 0.9  # candidate 0 (the worst) leads after epoch 1
    cands = [{"params": {"i": i}, "brief": [0.1 * i, 0.1 * (3 - i)], "long": [long0[i], long1[i]],
              "long_curves": [None, curves[i]]} for i in range(4)]
    lines = rn.two_seeds(cands)
    # brief seed 1 is the reverse order (5 of 6 pairs discordant with long seed 0), brief seed 0 long seed 1's order
    assert "brief seed 1 vs long seed 0: -0.67" in lines[0] and "brief seed 0 vs long seed 1: 1.00" in lines[0]
    assert "one long run against another): 0.67" in lines[0]  # 1 discordant pair of 6
    curve = rn.by_budget(cands, 4, with_seed0=True)
    assert "against seed 0's long reward" in curve[0]
    # E=1: candidate 0 first, 4 of 6 pairs discordant with long seed 0; then seed 1's order
    assert curve[1:] == ["  E= 1: tau -0.33", "  E= 2: tau 0.67", "  E= 4: tau 0.67"]
    assert rn.by_budget(cands, 4) == []  # without seed 0 there is nothing to rank against

    result = {"budget": {"epochs": 8, "horizon": 5, "data": None, "batch_size": 32}, "long_epochs": 4, "seeds": 2,
              "study_budget": False, "candidates": cands,
              "search": {"args": {"horizon": 1.0, "factor": 10}, "runs": []}}
    assert "brief seed 1 vs long seed 0" in rn.analyse(result)
    result["search"]["args"]["horizon"] = 10.0
    report = rn.analyse(result)
    assert "brief seed 1 vs long seed 0" not in report and "needs 3 long seeds" in report
    assert "E= 1" not in report


def test_reward_noise_compare_ranks_budgets_against_pooled_long_runs_of_other_seeds():
    rn = _benchmark("reward_noise")
    params = [{"w": i} for i in range(4)]
    search = {"runs": [{"sampler": "random", "pruner": "none", "seed": i,
                        "best": {"params": p, "reward": 0.2, "long": 0.3 + 0.1 * i}} for i, p in enumerate(params)]}

    def result(brief, long1, epochs):
        return {"search": search, "long_epochs": 40, "seeds": 2, "budget": {"epochs": epochs, "horizon": 1},
                "candidates": [{"params": p, "brief": brief[i], "long": [0.3 + 0.1 * i, long1[i]]}
                               for i, p in enumerate(params)]}

    good = result([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4]], [0.5, 0.6, 0.7, 0.8], 8)
    bad = result([[0.4, 0.4], [0.3, 0.3], [0.2, 0.2], [0.1, 0.1]], [None] * 4, 4)  # its long seed 1 from `good`
    lines = rn.compare([good, bad]).splitlines()
    assert lines[1].startswith("  8 epochs, horizon 1: mean 1.00") and "b1/l0 1.00 (4)" in lines[1]
    assert "b0/l0" not in lines[1]  # the same seed shares initialisation and data order: not compared
    assert lines[2].startswith("  4 epochs, horizon 1: mean -1.00") and "b0/l1 -1.00 (4)" in lines[2]
    other = result([[0.1, 0.1]] * 4, [0.5, 0.6, 0.7, 0.9], 8)  # another seed-1 long reward for candidate 3
    with pytest.raises(SystemExit, match="two long rewards"):
        rn.compare([good, other])


def test_reward_noise_retrains_a_search_s_bests_with_more_seeds(tmp_path):
    """search_trained.py's --out feeds reward_noise.py: the study's reward is reproduced by
    seed 0, the recorded fresh long run is kept at its seed, the statistics and the budget
    curve are computed, a cut run resumes with only what is missing, and the plot is drawn."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    search, out, png = tmp_path / "search.json", tmp_path / "noise.json", tmp_path / "noise.png"
    done = subprocess.run([sys.executable, str(root / "search_trained.py"), "--samplers", "random", "--pruned=",
                           "--seeds", "3", "--trials", "1", "--epochs", "1", "--factor", "2", "--long-seeds", "1",
                           "--data", "scenes:n=16,val=8", "--device", "cpu", "--workers", "1", "--out", str(search)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(search.read_text())["runs"]
    assert all(r["best"]["long_seed_offsets"] == [1] for r in runs)
    recorded = {json.dumps(r["best"]["params"], sort_keys=True): r["best"]["long_runs"][0] for r in runs}
    assert len(recorded) == 3  # three studies, three different bests
    argv = [sys.executable, str(root / "reward_noise.py"), str(search), "--seeds", "3", "--workers", "1",
            "--out", str(out)]
    done = subprocess.run([*argv, "--plot", str(png)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    assert "seed 0's brief reward re-run against the study's: largest difference 0.00e+00\n" in text
    assert text.count("] candidate") == 3 * 3 + 3 * 2  # long seed 1 is the search's own
    fresh = next(line for line in text.splitlines() if line.startswith("brief, fresh seeds"))
    assert "ICC nan" not in fresh and "(3 candidates x 2 seeds)" in fresh
    assert "budget --epochs E --horizon 2/E" in text and "mean of its fresh seeds 1..2" in text
    assert png.stat().st_size > 10_000
    result = json.loads(out.read_text())
    for c in result["candidates"]:
        assert len(c["brief"]) == len(c["long"]) == 3
        assert c["long"][1] == recorded[json.dumps(c["params"], sort_keys=True)] and c["long_curves"][1] is None
        assert [len(c["long_curves"][s]) for s in (0, 2)] == [2, 2] and c["long_curves"][2][-1] == c["long"][2]
    cut = json.loads(out.read_text())
    value = cut["candidates"][1]["brief"][2]
    cut["candidates"][1]["brief"][2] = None
    out.write_text(json.dumps(cut))
    again = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(out.read_text())
    assert again.stdout.count("] candidate") == 1 and resumed["candidates"] == result["candidates"]
    assert resumed["candidates"][1]["brief"][2] == value
    other = subprocess.run([*argv, "--resume", "--horizon", "3"], capture_output=True, text=True, timeout=300, env=env)
    assert other.returncode == 1 and "--resume:" in other.stderr and "give another --out" in other.stderr
