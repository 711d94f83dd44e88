"""``archlab search`` / ``best``: argument checks and a user's own code failing,
each one line (exit 2), never a traceback or a silent run (issue 9)."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from archlab.cli.main import main

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("archlab: error:") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, expect", [
    (["--max-params", "inf"], "not a finite count: 'inf'"),
    (["--max-macs", "nan"], "not a finite count: 'nan'"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 4,294,967,295], got '-1'"),
    (["--seed", str(2**32)], "argument --seed: must be an integer in [0, 4,294,967,295], got '4294967296'"),
    (["--timeout", "nan"], "argument --timeout: must be a finite number > 0, got 'nan'"),
    (["--timeout", "-3"], "argument --timeout: must be a finite number > 0, got '-3'"),
    (["--heartbeat-interval", "0"], "argument --heartbeat-interval: must be an integer >= 1, got '0'"),
    (["--n-trials", "0"], "argument --n-trials: must be an integer >= 1, got '0'"),
    (["--train-seed", "-1"], "argument --train-seed: must be an integer in [0, 4,294,967,295], got '-1'"),
    (["--heartbeat-interval", "2", "--grace-period", "1"], "must be longer than the heartbeat interval"),
    (["--sampler", "reinforce", "--sampler-option", "lr=nan"], "argument --sampler-option: lr: not a finite number: 'nan'"),
    (["--sampler", "reinforce", "--sampler-option", "config=1"], "option config must be a ReinforceConfig (from Python)"),
    (["--sampler", "reinforce", "--sampler-option", "lr=1" + "0" * 400], "must be a finite float"),
    (["--sampler", "evolution", "--sampler-option", "population_size=" + "9" * 400 + ".5"], "not a finite number"),
    (["--sampler-option", "lr"], "argument --sampler-option: write KEY=VALUE (e.g. lr=0.01), got 'lr'"),
    (["--sampler", "random", "--sampler-option", "lr=1"], "sampler 'random' takes no option 'lr'"),
    (["--sampler-option", "n_startup_trial=3"], "takes no option 'n_startup_trial'; did you mean 'n_startup_trials'?"),
    (["--sampler-option", "n_startup_trials=abc"], "option n_startup_trials='abc' must be int (default 10)"),
    (["--sampler-option", "gamma=3"], "option gamma=3 must be a Python object"),
    (["--sampler", "reinforce", "--sampler-option", "lr=-1"], "sampler 'reinforce': hidden_size, lr and temperature must be positive"),
    (["--sampler", "reinforce", "--sampler-option", "avoid_duplicates=1"], "avoid_duplicates=1 must be bool"),
    (["--sampler-option", "n_startup_trials=3", "--sampler-option", "n-startup-trials=4"], "n_startup_trials is given twice (3 and 4)"),
])
def test_bad_search_arguments_are_one_line(tmp_path, monkeypatch, capsys, args, expect):
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--space", "nasbench201", "--n-trials", "2", "--storage", "sqlite:///s.db", "--quiet", *args]
    assert main(argv) == 2
    assert expect in _one_line(capsys)
    assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names("sqlite:///s.db")


def test_resuming_with_another_sampler_is_refused_unless_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["search", "--space", "nasbench201", "--storage", "sqlite:///s.db", "--study", "r", "--quiet"]
    assert main(base + ["--sampler", "random", "--n-trials", "2"]) == 0
    assert main(base + ["--sampler", "tpe", "--n-trials", "4"]) == 2
    err = _one_line(capsys)
    assert "made with the random sampler, not tpe" in err and "--switch-sampler" in err
    assert len(optuna.load_study(study_name="r", storage="sqlite:///s.db").trials) == 2  # nothing ran
    assert main(base + ["--sampler", "tpe", "--n-trials", "4", "--switch-sampler"]) == 0
    assert "4/4 finished" in capsys.readouterr().out


def test_sampler_options_reach_the_sampler_and_a_reinforce_study_keeps_its_own(tmp_path, monkeypatch, capsys):
    from archlab.search.samplers import ReinforceSampler

    made = []
    real_init = ReinforceSampler.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        made.append(self.config)

    monkeypatch.setattr(ReinforceSampler, "__init__", spy)
    monkeypatch.chdir(tmp_path)
    base = ["search", "--space", "nasbench201", "--storage", "sqlite:///s.db", "--study", "r", "--quiet",
            "--sampler", "reinforce"]
    assert main(base + ["--n-trials", "3", "--sampler-option", "lr=0.01", "--sampler-option", "avoid-duplicates=false",
                        "--sampler-option", "failure_reward=none"]) == 0
    assert made[-1].lr == 0.01 and made[-1].avoid_duplicates is False and made[-1].failure_reward is None
    capsys.readouterr()
    assert main(base + ["--n-trials", "5", "--sampler-option", "lr=0.02"]) == 2  # another controller: refused
    err = _one_line(capsys)
    assert "lr=0.01 (this worker: 0.02)" in err and "--sampler-option KEY=VALUE" in err
    assert main(base + ["--n-trials", "5", "--sampler-option", "lr=1e-2", "--sampler-option", "avoid_duplicates=False"]) == 0
    assert "5/5 finished" in capsys.readouterr().out


def test_best_to_an_unwritable_path_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--space", "nasbench201", "--n-trials", "2", "--storage", "sqlite:///s.db", "--study", "b",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["best", "--study", "b", "--storage", "sqlite:///s.db", "-o", str(tmp_path / "no" / "x.yaml")]) == 2
    err = _one_line(capsys)
    assert "cannot write" in err and "no/x.yaml" in err and "No such file or directory" in err


_RAISES_ON_IMPORT = '''
import json
json.loads("{")
def space(trial):
    pass
'''

_EVALUATOR_RAISES = '''
from search_spaces import get_space
_NB = get_space("nasbench201")
def space(trial):
    return _NB.fn(trial)
def evaluator(**options):
    def reward(trial, graph):
        return {"a": 1}["b"]
    return reward
'''


def test_a_space_file_raising_on_import_is_one_line_and_traceback_shows_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad_space.py").write_text(_RAISES_ON_IMPORT)
    argv = ["search", "--space", "bad_space.py", "--n-trials", "1", "--storage", "sqlite:///s.db", "--quiet"]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "search space file 'bad_space.py' raised JSONDecodeError on import" in err
    monkeypatch.setenv("ARCHLAB_TRACEBACK", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and 'bad_space.py", line 3' in err  # the user's own line


def test_an_evaluator_raising_is_one_line_naming_it_and_the_trial_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ev_space.py").write_text(_EVALUATOR_RAISES)
    argv = ["search", "--space", "ev_space.py", "--sampler", "random", "--n-trials", "3", "--storage",
            "sqlite:///s.db", "--study", "e", "--quiet"]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "trial 0 failed: the evaluator of search space 'ev_space.py' raised KeyError: 'b'" in err, err
    (t,) = optuna.load_study(study_name="e", storage="sqlite:///s.db").trials
    assert t.state == TrialState.FAIL and t.user_attrs["error"].startswith("UserCodeError")


def test_python_sampler_options_are_checked_too():
    from archlab.errors import ArchlabError
    from archlab.search.samplers import ReinforceConfig, make_sampler

    for bad in ({"lr": float("nan")}, {"temperature": float("inf")}, {"config": ReinforceConfig(), "lr": "x"}):
        with pytest.raises(ArchlabError, match="finite|must be float"):
            make_sampler("reinforce", seed=0, **bad)
    assert make_sampler("reinforce", seed=0, config=ReinforceConfig(hidden_size=8)).config.hidden_size == 8


def test_a_bad_sampler_option_on_a_training_space_is_refused_before_the_data_loads(tmp_path, monkeypatch, capsys):
    from archlab.search import trained

    def no_data(*a, **kw):
        raise AssertionError("the data were loaded before the sampler's options were checked")

    monkeypatch.setattr(trained.TrainedEvaluator, "start", no_data)
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--space", "seg", "--n-trials", "1", "--storage", "sqlite:///s.db", "--quiet",
                 "--sampler", "tpe", "--sampler-option", "n_startup_trials=x"]) == 2
    assert "n_startup_trials='x' must be int" in _one_line(capsys)
