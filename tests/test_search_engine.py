"""The search engine on NAS-Bench-201 (tabular reward, no training): every sampler,
analytic constraints, trial records, ``archlab best``, resume and CLI errors."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import archlab.lang
from archlab.cli.main import main
from archlab.errors import ArchlabError
from archlab.search.constraints import Constraints
from archlab.search.engine import SearchConfig, Worker, arch_text, best_trial, run_search

optuna.logging.set_verbosity(optuna.logging.WARNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RECORDED = ("arch", "params", "macs", "memory", "rf", "reward", "eval_s", "overhead_s", "worker")


@pytest.mark.parametrize("sampler", ["random", "tpe", "evolution", "reinforce", "nsga2"])
def test_each_sampler_finishes_exactly_n_trials_on_nasbench201(sampler):
    objectives = ("reward", "macs") if sampler == "nsga2" else ("reward",)
    r = run_search(SearchConfig(space="nasbench201", sampler=sampler, n_trials=20, storage=":memory:", seed=0,
                                objectives=objectives))
    trials = r.study.get_trials(states=FINISHED)
    assert len(trials) == len(r.study.trials) == 20 and r.ran == 20
    best = best_trial(r.study).user_attrs["reward"]
    assert 60.0 < best <= 95.0  # NB201 CIFAR-10 validation accuracies (%) lie below ~91.6


def test_constraint_prunes_with_reason_and_no_evaluation():
    r = run_search(SearchConfig(space="nasbench201", sampler="random", n_trials=20, storage=":memory:", seed=1,
                                constraints=Constraints(max_params=300_000)))
    pruned = r.study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "with seed 1 some cells exceed 300k parameters"
    for t in pruned:
        assert t.user_attrs["pruned_reason"].startswith("params ") and "> max 300,000" in t.user_attrs["pruned_reason"]
        assert t.user_attrs["params"] > 300_000 and "reward" not in t.user_attrs
        assert "eval_s" not in t.user_attrs  # never evaluated (its time is the overhead benchmark's: ~10 ms)
    for t in r.study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.user_attrs["params"] <= 300_000


def test_trial_records_every_attr_and_best_file_round_trips(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--space", "nasbench201", "--sampler", "tpe", "--n-trials", "8", "--seed", "0",
                 "--study", "s", "--quiet"]) == 0
    assert (tmp_path / "runs" / "archlab.db").is_file()  # the default storage
    study = optuna.load_study(study_name="s", storage="sqlite:///runs/archlab.db")
    df = study.trials_dataframe()
    for key in RECORDED:
        assert f"user_attrs_{key}" in df.columns and df[f"user_attrs_{key}"].notna().all(), key
    assert (df["user_attrs_rf"] == "global").all()  # NB201 ends in global average pooling
    assert main(["best", "--study", "s", "-o", "best.yaml"]) == 0
    best = best_trial(study)
    g = archlab.lang.load((tmp_path / "best.yaml").read_text())
    assert g.num_params() == best.user_attrs["params"]
    assert archlab.lang.dump(g) == arch_text(best)
    capsys.readouterr()
    assert main(["trials", "--study", "s", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("number,state,reward,params,macs,memory,rf") and len(lines) == 9


def test_resume_after_interrupt_ends_with_exactly_n_distinct_trials(tmp_path):
    cfg = SearchConfig(space="nasbench201", sampler="reinforce", n_trials=12, storage=f"sqlite:///{tmp_path}/r.db",
                       study="resume", seed=0)

    def stop_after_5(p):
        if p.finished == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Worker.open(cfg).run(stop_after_5)
    r = run_search(SearchConfig(**{**cfg.__dict__, "seed": 1}))
    assert r.ran == 7
    numbers = [t.number for t in r.study.trials]
    assert numbers == list(range(12))
    assert all(t.state == TrialState.COMPLETE for t in r.study.trials)


def test_engine_overhead_per_trial_is_recorded(tmp_path):
    r = run_search(SearchConfig(space="nasbench201", sampler="random", n_trials=15, storage=f"sqlite:///{tmp_path}/o.db",
                                seed=0))
    over = sorted(r.overhead_s)
    assert len(over) == 15 and over[len(over) // 2] < 0.5  # generous: the figure is reported, not gated, here


# -- bad input: one line, exit 2, nothing written ---------------------------------------
_RAISES = "def space(trial):\n    raise ValueError('boom')\n"
_NOT_GRAPH = "def space(trial):\n    return 42\n\ndef evaluator(**kw):\n    return lambda trial, graph: 1.0\n"


@pytest.mark.parametrize("args, expect", [
    (["--space", "nasbench20"], "did you mean nasbench201"),
    (["--sampler", "reinfroce"], "did you mean 'reinforce'"),
    (["--sampler", "nsga2"], "needs two or more objectives"),
    (["--sampler", "evolution", "--objectives", "reward,macs"], "optimizes one objective"),
    (["--objectives", "reward,latency"], "unknown objective"),
    (["--storage", "sqlite:///missing_dir/x.db"], "cannot open storage"),
    (["--storage", "postgresql+psycopg2://u:secret@127.0.0.1:9/db"], "cannot open storage"),
    (["--space", "raises.py"], "raised ValueError: boom"),
    (["--space", "notgraph.py"], "returned a int, not an archlab Graph"),
    (["--max-params", "-5"], "must be positive"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raises.py").write_text(_RAISES)
    (tmp_path / "notgraph.py").write_text(_NOT_GRAPH)
    base = {"--space": "nasbench201", "--sampler": "tpe"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["search", "--n-trials", "3", "--quiet"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("archlab: error:") and expect in err, err
    assert "secret" not in err
    assert not (tmp_path / "runs" / "archlab.db").exists() or not optuna.get_all_study_names("sqlite:///runs/archlab.db")


def test_best_of_unknown_study_names_the_studies_there(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_search(SearchConfig(space="nasbench201", sampler="random", n_trials=2, storage="sqlite:///a.db", study="alpha"))
    assert main(["best", "--study", "alpah", "--storage", "sqlite:///a.db"]) == 2
    assert "did you mean alpha" in capsys.readouterr().err
    assert main(["trials", "--study", "x", "--storage", "sqlite:///nothing.db"]) == 2
    assert not (tmp_path / "nothing.db").exists()


def test_resuming_with_other_objectives_is_refused(tmp_path):
    run_search(SearchConfig(space="nasbench201", sampler="random", n_trials=2, storage=f"sqlite:///{tmp_path}/a.db", study="x"))
    with pytest.raises(ArchlabError, match="optimizes reward, not reward,macs"):
        Worker.open(SearchConfig(space="nasbench201", sampler="nsga2", n_trials=2, storage=f"sqlite:///{tmp_path}/a.db",
                                 study="x", objectives=("reward", "macs")))


def test_joining_a_reinforce_study_with_other_controller_settings_is_refused_before_it_writes(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    base = {"space": "nasbench201", "sampler": "reinforce", "storage": db, "study": "rl", "seed": 0}
    run_search(SearchConfig(n_trials=3, **base))
    with pytest.raises(ArchlabError, match=r"built with lr=0\.005 \(this worker: 0\.01\).*another --study name"):
        Worker.open(SearchConfig(n_trials=6, sampler_options={"lr": 0.01}, **base))
    assert len(optuna.load_study(study_name="rl", storage=db).trials) == 3
    r = run_search(SearchConfig(n_trials=5, sampler_options={"avoid_duplicates": False}, **base))
    assert len(r.study.get_trials(states=FINISHED)) == 5  # a draw-only setting may differ
