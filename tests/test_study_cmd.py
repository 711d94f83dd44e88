"""Reading studies back (archlab/cli/study_cmd.py): ``trials --pareto`` is exactly
Optuna's ``best_trials``, ``best --pareto`` writes one readable file per front
member, ``trials --sort/--top/--format``, ``studies``, and their one-line errors."""
from __future__ import annotations

import io
import json

import optuna
import pandas as pd
import pytest

from archlab.cli.main import main

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('studies')}/s.db"
    assert main(["search", "--quiet", "--space", "nasbench201", "--sampler", "nsga2", "--objectives", "reward,params",
                 "--n-trials", "30", "--seed", "0", "--storage", db, "--study", "mo"]) == 0
    assert main(["search", "--quiet", "--space", "nasbench201", "--sampler", "random", "--n-trials", "12",
                 "--seed", "1", "--storage", db, "--study", "so"]) == 0
    return db


def test_trials_pareto_lists_exactly_optunas_best_trials(storage, capsys):
    capsys.readouterr()
    assert main(["trials", "--study", "mo", "--storage", storage, "--pareto", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    front = optuna.load_study(study_name="mo", storage=storage).best_trials
    assert sorted(r["number"] for r in rows) == sorted(t.number for t in front) and len(front) >= 2


def test_best_pareto_writes_one_analyzable_file_per_front_member(storage, tmp_path, capsys):
    out = tmp_path / "front"
    assert main(["best", "--study", "mo", "--storage", storage, "--pareto", "-o", str(out)]) == 0
    front = optuna.load_study(study_name="mo", storage=storage).best_trials
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"trial{t.number:05d}.yaml" for t in front)
    for name in files:
        assert main(["analyze", str(out / name), "--format", "json"]) == 0
    capsys.readouterr()


def test_best_on_a_multi_objective_study_says_which_trial_it_wrote(storage, tmp_path, capsys):
    capsys.readouterr()
    assert main(["best", "--study", "mo", "--storage", storage, "-o", str(tmp_path / "b.yaml")]) == 0
    err = capsys.readouterr().err
    assert "optimizes reward,params: this is its highest-reward trial, one of" in err and "Pareto-optimal" in err


def test_trials_sort_top_and_formats(storage, capsys):
    capsys.readouterr()
    assert main(["trials", "--study", "so", "--storage", storage, "--sort", "reward", "--top", "3", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    study = optuna.load_study(study_name="so", storage=storage)
    best3 = sorted((t.value for t in study.trials if t.value is not None), reverse=True)[:3]
    assert len(df) == 3 and list(df["reward"]) == pytest.approx(best3)
    assert main(["trials", "--study", "so", "--storage", storage, "--sort", "params", "--format", "markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("|") and "reward" in md[0] and len(md) == 2 + len(study.trials)
    params = [int(line.split("|")[[c.strip() for c in md[0].split("|")].index("params")]) for line in md[2:]]
    assert params == sorted(params)


def test_studies_lists_each_study(storage, capsys):
    capsys.readouterr()
    assert main(["studies", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "mo" in out and "nsga2" in out and "reward,params" in out and "30/30" in out
    assert "so" in out and "random" in out and "12/12" in out


@pytest.mark.parametrize("argv,msg", [
    (["trials", "--study", "so", "--pareto"], "has one objective, so no Pareto front"),
    (["best", "--study", "mo", "--pareto"], "give the folder with -o DIR"),
    (["trials", "--study", "so", "--sort", "rewrd"], "no such column; did you mean reward"),
    (["trials", "--study", "som"], "no study 'som'"),
    (["best", "--study", "mo", "--pareto", "-o", "/proc/nope"], "cannot create the folder"),
])
def test_bad_requests_are_one_line(argv, msg, storage, capsys):
    capsys.readouterr()
    assert main([*argv, "--storage", storage]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err, err
