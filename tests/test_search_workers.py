"""Several ``archlab search`` processes on one study: SQLite, Journal file and
PostgreSQL storages, and a worker killed with SIGKILL mid-trial.

The workers run a tiny space file (one conv, width 4/8/16/32, kernel 1/3/5)
whose evaluator sleeps ``ARCHLAB_TEST_SLEEP`` seconds, so trials overlap.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from archlab.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POSTGRES_URL = os.environ.get("ARCHLAB_TEST_POSTGRES_URL")

SPACE = '''"""tiny test space with a slow evaluator"""
import os, time
from archlab.lang import GraphBuilder

def space(trial):
    b = GraphBuilder("tiny")
    x = b.input((3, 16, 16))
    w = trial.suggest_categorical("width", [4, 8, 16, 32])
    k = trial.suggest_categorical("kernel", [1, 3, 5])
    b.conv2d(x, w, k, padding=k // 2)
    return b.build()

def evaluator(**options):
    barrier, workers = os.environ.get("ARCHLAB_TEST_BARRIER"), int(os.environ.get("ARCHLAB_TEST_WORKERS", "1"))

    def reward(trial, graph):
        nonlocal barrier
        if barrier:  # the first evaluation waits until every worker is in one (each takes part)
            open(os.path.join(barrier, str(os.getpid())), "w").close()
            deadline = time.time() + 60
            while len(os.listdir(barrier)) < workers and time.time() < deadline:
                time.sleep(0.02)
            barrier = None
        time.sleep(float(os.environ.get("ARCHLAB_TEST_SLEEP", "0")))
        return trial.params["width"] / 32 + trial.params["kernel"] / 50
    return reward
'''


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_space.py"
    path.write_text(SPACE)
    return path


def _worker(space: Path, storage: str, study: str, n: int, seed: int, *, sleep: float = 0.02,
            extra: tuple[str, ...] = (), env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "ARCHLAB_TEST_SLEEP": str(sleep), **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "archlab", "search", "--space", str(space), "--sampler", "random",
           "--n-trials", str(n), "--storage", storage, "--study", study, "--seed", str(seed), "--quiet", *extra]
    return subprocess.Popen(cmd, cwd=space.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_exactly_n(storage: str, study: str, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat_interval=None)).get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    assert len({t.number for t in trials}) == len(trials)  # no duplicates
    for t in finished:  # no lost results
        assert t.state == TrialState.COMPLETE and t.value == pytest.approx(t.user_attrs["reward"])
        assert {"arch", "params", "macs", "memory", "rf"} <= set(t.user_attrs)
    others = [t for t in trials if t.state not in FINISHED]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others), others
    return finished


def _run_three(tmp_path: Path, storage: str, study: str, n: int) -> None:
    space = _space(tmp_path)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {"ARCHLAB_TEST_BARRIER": str(barrier), "ARCHLAB_TEST_WORKERS": "3"}
    procs = [_worker(space, storage, study, n, seed, env=env) for seed in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    _check_exactly_n(storage, study, n)
    ran = [int(out.split("(")[1].split()[0]) for out, _ in outs]
    assert sum(ran) >= n and min(ran) >= 1, ran  # every worker took part


def test_three_workers_on_sqlite_complete_exactly_n(tmp_path):
    _run_three(tmp_path, f"sqlite:///{tmp_path}/w.db", "w", 24)


def test_three_workers_on_journal_file_complete_exactly_n(tmp_path):
    _run_three(tmp_path, f"journal:{tmp_path}/w.log", "w", 24)


def test_three_workers_on_postgresql_complete_exactly_n(tmp_path):
    if not POSTGRES_URL:
        message = ("set ARCHLAB_TEST_POSTGRES_URL (e.g. from .ci/postgres.sh) to run the workers against a "
                   "real PostgreSQL server")
        if os.environ.get("ARCHLAB_REQUIRE_POSTGRES"):
            pytest.fail(message)  # CI starts a server: a missing one is a failure, not a skip
        pytest.skip(message)
    _run_three(tmp_path, POSTGRES_URL, f"workers-{uuid.uuid4().hex[:8]}", 24)


def test_sigkilled_worker_trial_fails_after_grace_period_and_is_retried(tmp_path):
    space, storage, n = _space(tmp_path), f"sqlite:///{tmp_path}/k.db", 4
    hb = ("--heartbeat-interval", "1", "--grace-period", "3")
    victim = _worker(space, storage, "k", n, 0, sleep=60, extra=hb)
    deadline = time.time() + 60
    running = []
    while time.time() < deadline and not (running and running[0].params):
        time.sleep(0.2)
        try:  # wait until the trial has sampled its architecture and is in its (60 s) evaluation
            running = optuna.load_study(study_name="k", storage=storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the victim is still creating the schema or the study
            pass
    assert running and running[0].params, victim.communicate(timeout=5)
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = optuna.load_study(study_name="k", storage=storage).get_trials()[running[0].number]
    assert killed.state == TrialState.RUNNING and killed.params  # as the worker left it
    start = time.time()
    rescuer = _worker(space, storage, "k", n, 1, sleep=0.0, extra=hb)
    out, err = rescuer.communicate(timeout=120)
    assert rescuer.returncode == 0, err
    assert time.time() - start < 60
    trials = optuna.load_study(study_name="k", storage=storage).get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n and all(t.value == pytest.approx(t.user_attrs["reward"]) for t in finished)
