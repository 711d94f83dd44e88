"""The search worker's storage (archlab.search.worker_storage.WorkerStorage): batched trial
writes, the trial cache and the shared heartbeat thread, checked against what
Optuna's own RDBStorage reads back from the same database."""
from __future__ import annotations

import os
import threading
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from archlab.search import optuna_tables
from archlab.search.engine import STALE_CHECK_S, SearchConfig, Worker
from archlab.search.storage import Heartbeat, _Beater, open_storage
from archlab.search.worker_storage import WorkerStorage, worker_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
POSTGRES_URL = os.environ.get("ARCHLAB_TEST_POSTGRES_URL")


def _urls(tmp_path):
    yield f"sqlite:///{tmp_path}/s.db"
    if POSTGRES_URL:
        yield POSTGRES_URL


def _fresh(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as Optuna's own storage reads them."""
    return optuna.load_study(study_name=study, storage=open_storage(url, heartbeat_interval=None)).get_trials()


def _study(url: str, **kw) -> optuna.Study:
    storage = WorkerStorage(open_storage(url, heartbeat_interval=kw.pop("heartbeat_interval", None)))
    return optuna.create_study(storage=storage, study_name=f"t-{uuid.uuid4().hex[:8]}", **kw)


@pytest.fixture
def new_york_time():
    """Run in a time zone away from UTC (Optuna 5 stores trial datetimes as UTC)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize("sampler", ["random", "tpe", "reinforce", "nsga2"])
def test_worker_view_of_the_trials_equals_the_database(tmp_path, sampler, new_york_time):
    for url in _urls(tmp_path):
        study = f"v-{sampler}-{uuid.uuid4().hex[:8]}"
        w = Worker.open(SearchConfig(space="nasbench201", sampler=sampler, n_trials=12, storage=url, study=study,
                                     seed=0, objectives=("reward", "params") if sampler == "nsga2" else ("reward",)))
        assert isinstance(w.study._storage, WorkerStorage)
        r = w.run()
        mine = r.study.get_trials()
        assert mine == _fresh(url, study)  # every field: params, attrs, values, datetimes, ...
        assert len(mine) == 12 and all(t.state == TrialState.COMPLETE for t in mine)


def test_a_trial_costs_three_transactions(tmp_path):
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path}/c.db"
    w = Worker.open(SearchConfig(space="nasbench201", sampler="tpe", n_trials=20, storage=url, study="c", seed=0))
    commits = []
    event.listen(w.study._storage.engine, "commit", lambda conn: commits.append(1))
    t0 = time.monotonic()
    w.run()
    # create (+ first heartbeat), params and attrs before the evaluation, attrs + values + state;
    # plus a look for stale trials at most once a second. Optuna's own calls commit ~25 times a trial.
    assert len(commits) <= 3 * 20 + (time.monotonic() - t0) / STALE_CHECK_S + 1, len(commits)


def test_params_and_attrs_are_in_the_database_before_the_evaluation(tmp_path):
    url = f"sqlite:///{tmp_path}/e.db"
    w = Worker.open(SearchConfig(space="nasbench201", sampler="random", n_trials=3, storage=url, study="e", seed=0))
    seen = []
    inner = w.evaluator

    def evaluator(trial, graph):
        other = optuna.load_study(study_name="e", storage=open_storage(url, heartbeat_interval=None))
        t = other.get_trials()[trial.number]
        seen.append((t.state, dict(t.params), set(t.user_attrs)))
        return inner(trial, graph)

    w.evaluator = evaluator
    w.run()
    assert len(seen) == 3
    for state, params, attrs in seen:
        assert state == TrialState.RUNNING and len(params) == 6
        assert {"worker", "arch", "params", "macs", "memory", "rf"} <= attrs and "reward" not in attrs


def test_finishing_write_is_all_or_nothing(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/a.db"
    study = _study(url)
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    trial.set_user_attr("before", 1)
    study._storage.flush(trial._trial_id)
    trial.set_user_attr("reward", 0.5)
    from optuna.storages._rdb import models

    def boom(value):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(models.TrialValueModel, "value_to_stored_repr", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        study.tell(trial, 0.5)
    (t,) = _fresh(url, study.study_name)
    assert t.state == TrialState.RUNNING and t.values is None  # the state change was rolled back ...
    assert t.user_attrs == {"before": 1} and "x" in t.params  # ... with the attrs of that transaction
    monkeypatch.undo()
    study.tell(trial, 0.5)
    (t,) = _fresh(url, study.study_name)
    assert t.state == TrialState.COMPLETE and t.user_attrs == {"before": 1, "reward": 0.5} and t.value == 0.5


def test_a_trial_failed_by_another_worker_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path}/f.db"
    study = _study(url)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    other = open_storage(url, heartbeat_interval=None)
    other.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # e.g. stale: its heartbeat stopped
    trial.set_user_attr("reward", 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study.tell(trial, 1.0)
    (t,) = _fresh(url, study.study_name)
    assert t.state == TrialState.FAIL and t.values is None and t.user_attrs == {} and t.params == {}
    assert study.get_trials() == [t]  # the worker's view follows the database


def test_a_waiting_trial_is_run_with_its_params(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    cfg = SearchConfig(space="nasbench201", sampler="random", n_trials=1, storage=url, study="q", seed=0)
    w = Worker.open(cfg)
    fixed = {f"Op{k}": "nor_conv_3x3" for k in range(6)}
    optuna.load_study(study_name="q", storage=open_storage(url, heartbeat_interval=None)).enqueue_trial(fixed)
    r = w.run()
    (t,) = _fresh(url, "q")
    assert r.ran == 1 and t.state == TrialState.COMPLETE and t.params == fixed
    assert t.system_attrs["fixed_params"] == fixed and t.value == t.user_attrs["reward"]
    assert r.study.get_trials() == [t]


def test_reads_follow_other_workers_but_not_inside_pinned(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    study = _study(url)
    other = optuna.load_study(study_name=study.study_name, storage=open_storage(url, heartbeat_interval=None))
    running = other.ask()
    storage = study._storage
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    with storage.pinned():
        assert len(study.get_trials()) == 1
        other.tell(running, 1.0)
        other.enqueue_trial({"x": 1})
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]  # the snapshot
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.WAITING]
    assert study.get_trials() == other.get_trials()


def test_only_rdb_storages_are_wrapped(tmp_path):
    rdb = open_storage(f"sqlite:///{tmp_path}/w.db")
    assert isinstance(worker_storage(rdb), WorkerStorage)
    for other in (optuna.storages.InMemoryStorage(), open_storage(f"journal:{tmp_path}/j.log")):
        assert worker_storage(other) is other


def test_an_optuna_with_other_internals_falls_back_to_its_own_storage(tmp_path, monkeypatch):
    def get_trials_of_optuna_4_0(self, study_id, states, excluded_trial_ids):  # the reader before 4.1
        raise AssertionError("not to be called")

    url = f"sqlite:///{tmp_path}/o.db"
    rdb = open_storage(url)
    with monkeypatch.context() as m:
        m.setattr(optuna.storages.RDBStorage, "_get_trials", get_trials_of_optuna_4_0)
        with pytest.warns(RuntimeWarning, match=r"Optuna .*_get_trials takes .*excluded_trial_ids.*own storage"):
            assert worker_storage(rdb) is rdb
        m.delattr(optuna.exceptions, "UpdateFinishedTrialError")
        assert "optuna.exceptions lacks UpdateFinishedTrialError" in optuna_tables.unsupported_optuna()
    # Optuna's own storage uses those internals too: the search below only pretends they are missing
    monkeypatch.setattr(optuna_tables, "unsupported_optuna", lambda: "pretend")
    with pytest.warns(RuntimeWarning, match="pretend"):
        w = Worker.open(SearchConfig(space="nasbench201", sampler="tpe", n_trials=5, storage=url, study="o", seed=0))
    assert not isinstance(w.study._storage, WorkerStorage)
    r = w.run()  # a correct search, only slower
    assert len(r.study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in r.study.trials)
    assert all("arch" in t.user_attrs for t in _fresh(url, "o"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_heartbeats_share_one_thread_and_stop_at_exit(tmp_path):
    url = f"sqlite:///{tmp_path}/h.db"
    study = _study(url, heartbeat_interval=1)
    storage = study._storage

    def stamp(trial_id):
        from sqlalchemy import text

        with storage.engine.connect() as conn:
            return conn.execute(text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"),
                                {"t": trial_id}).scalar()

    a, b = study.ask(), study.ask()
    first = stamp(a._trial_id)
    assert first is not None  # the creation stamped it
    with Heartbeat(storage, a._trial_id), Heartbeat(storage, b._trial_id):
        thread = _Beater.of(storage)._thread
        assert thread is not None and thread.is_alive()
        time.sleep(2.5)
    assert stamp(a._trial_id) > first and stamp(b._trial_id) is not None
    last = stamp(a._trial_id)
    time.sleep(2.2)
    assert stamp(a._trial_id) == last  # no stamp after exit
    with Heartbeat(storage, a._trial_id):
        assert _Beater.of(storage)._thread is thread  # kept between trials


def test_trials_written_are_read_back_where_the_database_may_round(tmp_path):
    # MySQL drops a DATETIME's microseconds: there the worker reads its finished trials back
    url = f"sqlite:///{tmp_path}/m.db"
    w = Worker.open(SearchConfig(space="nasbench201", sampler="tpe", n_trials=8, storage=url, study="m", seed=0))
    w.study._storage._exact = False
    r = w.run()
    assert r.study.get_trials() == _fresh(url, "m") and len(r.study.trials) == 8


def test_a_deleted_study_leaves_nothing_behind(tmp_path):
    url = f"sqlite:///{tmp_path}/d.db"
    storage = WorkerStorage(open_storage(url, heartbeat_interval=None))
    for name in ("first", "second"):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        for k in range(3):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0, 1) + k)
        assert study.get_trials() == _fresh(url, name) and len(study.trials) == 3
        optuna.delete_study(study_name=name, storage=storage)  # SQLite reuses the ids


def test_a_storage_failure_names_the_drivers_error_not_optunas_wrapper():
    # Optuna wraps any SQLAlchemy error of its sessions in "An exception is raised during
    # the commit. This typically happens due to invalid data ..."; the line must show the cause
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from archlab.search.storage import storage_failure

    try:
        try:
            raise OperationalError("UPDATE trials SET state=?", {}, sqlite3.OperationalError("database is locked"))
        except OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. This "
                                                         "typically happens due to invalid data.") from e
    except optuna.exceptions.StorageInternalError as e:
        line = str(storage_failure("sqlite:///runs/x.db", e))
    assert line.startswith("storage sqlite:///runs/x.db failed: OperationalError: database is locked; "), line
    assert "during the commit" not in line and "PostgreSQL" in line


def test_a_new_sqlite_file_is_in_wal_mode_before_optunas_storage_connects(tmp_path, monkeypatch):
    # In rollback-journal mode (a new file's) workers started together met "database is locked"
    # at once, without waiting out the busy timeout; WAL is stored in the file, so it is set first.
    import sqlite3

    path = tmp_path / "new.db"
    modes = []
    init = optuna.storages.RDBStorage.__init__

    def spy(self, *args, **kwargs):
        conn = sqlite3.connect(path)
        modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
        conn.close()
        init(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", spy)
    open_storage(f"sqlite:///{path}", heartbeat_interval=None)
    assert modes == ["wal"]


def test_switching_a_busy_file_to_wal_waits_for_it(tmp_path):
    import sqlite3

    from archlab.search.storage import _wal_before_use

    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (a)")
    holder.execute("BEGIN EXCLUSIVE")  # another worker has the file to itself for a moment
    timer = threading.Timer(0.5, holder.execute, ("COMMIT",))
    timer.start()
    start = time.monotonic()
    _wal_before_use(str(path), wait_s=30)
    took = time.monotonic() - start
    timer.join()
    holder.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert 0.4 < took < 20


def test_a_file_that_is_not_a_database_is_left_to_the_storage_to_report(tmp_path):
    from archlab.errors import ArchlabError

    path = tmp_path / "text.db"
    path.write_text("not a database\n" * 100)
    with pytest.raises(ArchlabError, match="not a database"):
        open_storage(f"sqlite:///{path}", heartbeat_interval=None)
    assert path.read_text().startswith("not a database")


def test_a_worker_connecting_while_another_writes_waits_instead_of_failing(tmp_path):
    # Every new connection runs PRAGMA journal_mode=WAL; on a file still in rollback-journal mode
    # SQLite answers it "database is locked" at once, without the busy wait, while another
    # connection is mid-write. Workers started together on a new study file failed so (an
    # "archlab search" exit 2 in 2 of 300 starts of four workers); the file is now WAL before use.
    import sqlite3

    path = tmp_path / "join.db"
    storage = open_storage(f"sqlite:///{path}", heartbeat_interval=None)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another worker, mid-write
    writer.execute("INSERT INTO studies (study_name) VALUES ('other')")
    try:
        assert optuna.get_all_study_names(storage) == []  # a new connection, the write not committed
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_uri_filename_url_is_not_taken_for_a_path(tmp_path, monkeypatch):
    # sqlite:///file:NAME?uri=true names NAME through SQLite's URI syntax: no file "file:NAME" appears
    monkeypatch.chdir(tmp_path)
    storage = open_storage("sqlite:///file:u.db?uri=true", heartbeat_interval=None)
    optuna.create_study(storage=storage, study_name="u")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("file:")) == []
    assert (tmp_path / "u.db").is_file()
