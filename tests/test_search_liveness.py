"""Liveness of a search (issue 9): a trial RUNNING without a heartbeat, a slow ``ask``,
a live trial failed as stale under its owner, retries on a journal file, and the
storage's own failures (full disk, corrupt file) as one line."""
from __future__ import annotations

import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from archlab.cli.main import main
from archlab.search.engine import SearchConfig, Worker
from archlab.search.heartbeat import JOURNAL_BEAT_KEY, JournalHeartbeatStorage, fail_stale_trials
from archlab.search.storage import open_storage
from archlab.search.worker_storage import WorkerStorage, worker_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FIXED = {f"Op{k}": "nor_conv_3x3" for k in range(6)}


def _plain(url: str, study: str) -> optuna.Study:
    """The study through Optuna's own storage, no heartbeats (another program, or a dead worker)."""
    return optuna.load_study(study_name=study, storage=open_storage(url, heartbeat_interval=None))


def _exactly(url: str, study: str, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = _plain(url, study).get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in finished:
        assert {"arch", "params", "macs", "memory", "rf", "reward", "eval_s", "overhead_s", "worker"} <= set(t.user_attrs)
    return trials


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_left_running_without_any_heartbeat_is_failed_and_retried(tmp_path, monkeypatch, capsys, kind):
    # issue 9 (1): a worker died after ask() made a queued trial RUNNING, before its first heartbeat
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/a.db" if kind == "sqlite" else f"journal:{tmp_path}/a.log"
    args = ["search", "--space", "nasbench201", "--sampler", "random", "--storage", url, "--study", "a", "--quiet",
            "--heartbeat-interval", "1", "--grace-period", "2"]
    assert main(args + ["--n-trials", "2", "--seed", "0"]) == 0
    dead = _plain(url, "a")
    dead.enqueue_trial(FIXED)
    orphan = dead.ask()  # RUNNING, and no process will ever stamp or finish it
    assert dead.trials[orphan.number].system_attrs["fixed_params"] == FIXED
    start = time.monotonic()
    assert main(args + ["--n-trials", "3", "--seed", "1"]) == 0
    assert time.monotonic() - start < 20
    assert "3/3 finished" in capsys.readouterr().out
    trials = _exactly(url, "a", 3)
    assert trials[orphan.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state == TrialState.COMPLETE and retry.params == FIXED


def test_a_queued_trial_is_stamped_in_the_transaction_that_starts_it(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    storage = WorkerStorage(open_storage(url, heartbeat_interval=1, grace_period=2))
    study = optuna.create_study(storage=storage, study_name="q")
    study.enqueue_trial({"x": 0.5})
    calls = []
    real = storage.record_heartbeat
    storage.record_heartbeat = lambda tid: (calls.append(tid), real(tid))  # the beater thread's stamps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()
    from sqlalchemy import text

    with storage.engine.connect() as conn:
        stamp = conn.execute(text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"),
                             {"t": trial._trial_id}).scalar()
    assert stamp is not None and calls == []  # written with RUNNING, not by a later stamp
    time.sleep(1.5)
    assert trial._trial_id in calls  # and stamped from then on, before any Heartbeat block
    study.tell(trial, 1.0)


class _SlowStart(optuna.samplers.RandomSampler):
    """A sampler whose before_trial takes longer than the grace period (REINFORCE replaying updates)."""

    def __init__(self, seconds: float, during=None) -> None:
        super().__init__(seed=0)
        self.seconds, self.during = seconds, during

    def before_trial(self, study, trial) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if self.during is not None:
                self.during()
            time.sleep(0.25)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_slow_ask_keeps_its_trial_alive(tmp_path, kind):
    # issue 9 (3): with --heartbeat-interval 1 --grace-period 3 a slow ask let another worker fail it
    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"
    storage = worker_storage(open_storage(url, heartbeat_interval=1, grace_period=3))
    other = optuna.create_study(storage=open_storage(url, heartbeat_interval=1, grace_period=3), study_name="s")
    study = optuna.load_study(study_name="s", storage=storage, sampler=_SlowStart(5.0, lambda: fail_stale_trials(other)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    study.tell(trial, x)
    (t,) = _plain(url, "s").get_trials()
    assert t.state == TrialState.COMPLETE and t.value == x


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_owner_of_a_trial_failed_as_stale_warns_once_and_the_study_still_ends_at_exactly_n(tmp_path, kind):
    url = f"sqlite:///{tmp_path}/o.db" if kind == "sqlite" else f"journal:{tmp_path}/o.log"
    w = Worker.open(SearchConfig(space="nasbench201", sampler="random", n_trials=4, storage=url, study="o", seed=0,
                                 heartbeat_interval=1, grace_period=2))
    other = optuna.load_study(study_name="o", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    real, victims = w.evaluator, []

    def evaluator(trial, graph):  # the first evaluation stalls: another worker fails its trial as stale
        if not victims:
            victims.append(trial.number)
            other._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            other._storage.get_heartbeat_stale_trial_callback()(other, other._storage.get_trial(trial._trial_id))
        return real(trial, graph)

    w.evaluator = evaluator
    with pytest.warns(RuntimeWarning, match="was failed as stale by another worker") as record:
        r = w.run()
    lost = [str(m.message) for m in record if "stale" in str(m.message)]
    assert lost == [lost[0]] and f"trial {victims[0]} " in lost[0]  # one line, naming the trial
    trials = _exactly(url, "o", 4)
    assert r.ran == 4 - 1 + 1  # the lost trial is not counted; its retry is
    assert trials[victims[0]].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victims[0]]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[victims[0]].params


def test_journal_storage_has_heartbeats_and_read_only_use_has_none(tmp_path):
    url = f"journal:{tmp_path}/j.log"
    s = open_storage(url, heartbeat_interval=1, grace_period=3)
    assert isinstance(s, JournalHeartbeatStorage) and s.get_heartbeat_interval() == 1
    study = optuna.create_study(storage=s, study_name="j")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()
    time.sleep(1.6)
    reader = open_storage(url, heartbeat_interval=None, must_exist=True)
    assert not isinstance(reader, JournalHeartbeatStorage)
    (t,) = optuna.load_study(study_name="j", storage=reader).get_trials()
    assert t.system_attrs[JOURNAL_BEAT_KEY] > time.time() - 1.5  # stamped by the worker's thread
    study.tell(trial, 1.0)


def test_sqlite_url_without_a_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///", "sqlite://", "sqlite:///:memory:"):
        assert main(["search", "--space", "nasbench201", "--n-trials", "1", "--storage", url, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "names no SQLite file" in err and "sqlite:///FILE.db" in err, err


def test_postgresql_url_uses_the_installed_driver():
    import importlib.util

    from archlab.search.storage import _postgres_driver

    assert _postgres_driver("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    assert _postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        assert _postgres_driver("postgresql://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    with pytest.raises(Exception) as e:  # no server on port 9: the driver loads, the connection is refused
        open_storage("postgresql://u:secret@127.0.0.1:9/db")
    assert "driver is missing" not in str(e.value) and "secret" not in str(e.value)
    assert "OperationalError" in str(e.value) and "127.0.0.1" in str(e.value)


def _limited(url: str, pages: int):
    """``url`` opened with SQLite's page limit: the database is "full" after ``pages`` pages."""
    from sqlalchemy import event

    s = open_storage(url, heartbeat_interval=1)
    event.listen(s.engine, "connect", lambda conn, _r: conn.execute(f"PRAGMA max_page_count={pages}"))
    s.engine.dispose()
    return s


def test_a_full_disk_is_one_line_naming_the_storage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/full.db"
    import archlab.search.engine as engine

    monkeypatch.setattr(engine, "open_storage", lambda u, **kw: _limited(u, 40))
    assert main(["search", "--space", "nasbench201", "--sampler", "random", "--n-trials", "500", "--storage", url,
                 "--study", "f", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("archlab: error: storage sqlite:///"), err
    assert "full.db failed" in err and "database or disk is full" in err and "free disk space" in err, err


def test_a_corrupt_sqlite_file_is_one_line_naming_the_storage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///c.db"
    assert main(["search", "--space", "nasbench201", "--sampler", "random", "--n-trials", "30", "--storage", url,
                 "--study", "c", "--quiet"]) == 0
    capsys.readouterr()
    import gc
    import sqlite3

    gc.collect()  # the worker's connections
    with sqlite3.connect(tmp_path / "c.db") as conn:  # everything in the file, none in the write-ahead log
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "c.db"
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for p in range(2, len(data) // page):  # keep the header and the schema page; garble the rest
        data[p * page:(p + 1) * page] = bytes([0x5A]) * page
    path.write_bytes(bytes(data))
    for argv in (["trials", "--study", "c", "--storage", url],
                 ["search", "--space", "nasbench201", "--sampler", "random", "--n-trials", "40", "--storage", url,
                  "--study", "c", "--quiet"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "c.db" in err and "Traceback" not in err, err
        assert "malformed" in err or "not a database" in err, err


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_workers_failing_the_same_stale_trials_at_once_enqueue_one_retry_each(tmp_path, kind):
    # several workers' stale checks race on the same dead trials: each is failed, and retried, once
    import threading

    url = f"sqlite:///{tmp_path}/r.db" if kind == "sqlite" else f"journal:{tmp_path}/r.log"
    dead = optuna.create_study(storage=open_storage(url, heartbeat_interval=None), study_name="r")
    for _ in range(5):
        dead.ask().suggest_float("x", 0, 1)  # RUNNING, never stamped: stale after the grace period
    studies = [optuna.load_study(study_name="r", storage=worker_storage(open_storage(url, heartbeat_interval=1,
                                                                                       grace_period=2)))
               for _ in range(4)]
    for s in studies:
        fail_stale_trials(s)  # the first stamp of each unstamped trial
    time.sleep(3.2)
    barrier = threading.Barrier(len(studies))

    def check(s):
        barrier.wait()
        fail_stale_trials(s)

    threads = [threading.Thread(target=check, args=(s,)) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = _plain(url, "r").get_trials()
    assert [t.state for t in trials[:5]] == [TrialState.FAIL] * 5
    retries = sorted(t.system_attrs["failed_trial"] for t in trials[5:])
    assert retries == [0, 1, 2, 3, 4], [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in trials]
