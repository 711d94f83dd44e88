"""Liveness of running trials: heartbeats, the stale check, and heartbeats on a journal file.

A trial is *live* while the process that runs it stamps it. The contract every
storage a search worker uses keeps (RDB through
:class:`~archlab.search.worker_storage.WorkerStorage`, journal through
:class:`JournalHeartbeatStorage`):

* a trial is stamped from the moment it becomes RUNNING in a process (created,
  or taken from the queue of waiting trials) -- in the same transaction on RDB
  storages -- and a daemon thread (:class:`_Beater`) stamps it every
  ``heartbeat_interval`` seconds until it finishes, through ``ask``, the
  sampler's own work and the evaluation;
* :func:`fail_stale_trials` fails a RUNNING trial whose last stamp is older than
  the grace period, and also one that never got a stamp (a worker killed
  between ``RUNNING`` and its first stamp, or one that ran without archlab's
  storages): such a trial is stamped once by the first checker that sees it, so
  it is stale one grace period later unless its owner stamps it. The retry
  callback then enqueues a copy (same parameters) for the next ``ask``.

So a killed worker's trial is always failed and retried within about two grace
periods, and no study waits for a dead trial.
"""
from __future__ import annotations

import threading
import time
import warnings
import weakref
from datetime import datetime
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

JOURNAL_BEAT_KEY = "archlab:heartbeat"
"""Trial system attr holding a journal trial's last stamp (seconds since the epoch, the owner's clock)."""


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether ``storage`` stamps running trials (RDB or journal storage with an interval)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def start_beating(storage: BaseStorage, trial_id: int) -> None:
    """Stamp ``trial_id`` (RUNNING in this process) every interval from now on."""
    if heartbeat_enabled(storage):
        _Beater.of(storage).add(trial_id)


def stop_beating(storage: BaseStorage, trial_id: int) -> None:
    """No further stamp of ``trial_id`` (a stamp in progress finishes first)."""
    beater = _Beater.existing(storage)
    if beater is not None:
        beater.remove(trial_id)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and, through the storage's callback, re-enqueue) the study's stale trials.

    Optuna's :func:`optuna.storages.fail_stale_trials`, with two differences:

    * a trial RUNNING with no stamp at all, which Optuna never counts as stale,
      gets its first stamp here (from the database's clock), so it goes stale one
      grace period later unless a live owner stamps it meanwhile;
    * on an RDB storage a trial is failed by one conditional ``UPDATE ... WHERE
      state = RUNNING``, so of several workers failing it at once exactly one
      succeeds and enqueues its retry (Optuna's read-then-write lets two of them
      succeed on SQLite, which ignores ``FOR UPDATE``: two retries of one trial).
    """
    import copy

    storage = study._storage
    if not heartbeat_enabled(storage):
        return
    # the RDB storage inside archlab's WorkerStorage or Optuna's cache wrapper
    backend = getattr(storage, "backend", None) or getattr(storage, "_backend", storage)
    rdb = isinstance(backend, optuna.storages.RDBStorage)
    if rdb:
        stamp_missing_heartbeats_sql(backend.engine, study._study_id)
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        try:
            if rdb:
                done = fail_if_running(backend.engine, trial_id)
            else:  # a journal applies its log in order: the second FAIL raises for its issuer
                done = storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            if done:
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            pass
    if not failed:
        return
    get = getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback
    callback = get()
    for trial_id in failed:
        if callback is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback(study, copy.deepcopy(storage.get_trial(trial_id)))


def fail_if_running(engine, trial_id: int) -> bool:
    """Set RDB trial ``trial_id`` FAIL (completed now) if it is RUNNING, atomically; whether it was."""
    from optuna.storages._rdb import models
    from sqlalchemy import update

    from archlab.search.optuna_tables import stored

    tr = models.TrialModel.__table__
    stmt = (update(tr).where((tr.c.trial_id == trial_id) & (tr.c.state == TrialState.RUNNING))
            .values(state=TrialState.FAIL, datetime_complete=stored(models, "datetime_complete", datetime.now())))
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def stamp_missing_heartbeats_sql(engine, study_id: int) -> None:
    """Give every RUNNING trial of the study with no heartbeat row its first one (now)."""
    from optuna.storages._rdb import models
    from sqlalchemy import exists, func, select
    from sqlalchemy.exc import IntegrityError

    tr, hb = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    unstamped = select(tr.c.trial_id).where(tr.c.study_id == study_id, tr.c.state == TrialState.RUNNING,
                                            ~exists().where(hb.c.trial_id == tr.c.trial_id))
    with engine.connect() as conn:  # a read first: the common case (none) takes no write lock
        if conn.execute(unstamped.limit(1)).first() is None:
            return
    try:
        with engine.begin() as conn:
            conn.execute(hb.insert().from_select(["trial_id", "heartbeat"],
                                                 unstamped.add_columns(func.current_timestamp())))
    except IntegrityError:  # its owner (or another checker) stamped it meanwhile: it has a stamp now
        pass


def stale_trial_retry(max_retry: int | None):
    """The callback that re-enqueues a stale trial (``RetryHeartbeatStaleTrialCallback``,
    ``RetryFailedTrialCallback`` before Optuna 4.9; both behave the same)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=max_retry)


class JournalHeartbeatStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """A :class:`~optuna.storages.JournalStorage` with heartbeats, so a killed
    worker's trial is failed and retried as on an RDB storage (Optuna's journal
    storage has none).

    A stamp is the trial system attr :data:`JOURNAL_BEAT_KEY` (the owner's
    ``time.time()``; the workers of a journal file share one machine's clock);
    a trial's liveness is its latest stamp or its start, whichever is later
    (a retry copies its original's attrs, stamp included). Each stamp appends one
    line to the file.
    """

    def __init__(self, backend, *, heartbeat_interval: int, grace_period: int | None,
                 max_retry: int | None) -> None:
        super().__init__(backend)
        self._interval = heartbeat_interval
        self._grace = grace_period if grace_period is not None else 2 * heartbeat_interval
        self._retry = stale_trial_retry(max_retry)

    def create_new_trial(self, study_id: int, template_trial=None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            start_beating(self, trial_id)  # its start is its first stamp
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        try:
            done = super().set_trial_state_values(trial_id, state, values)
        finally:
            if state.is_finished():
                stop_beating(self, trial_id)
        if done and state == TrialState.RUNNING:
            start_beating(self, trial_id)  # popped from the queue: its (new) start is its first stamp
        return done

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, JOURNAL_BEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            start = t.datetime_start.timestamp() if isinstance(t.datetime_start, datetime) else 0.0
            last = max(float(t.system_attrs.get(JOURNAL_BEAT_KEY, 0.0)), start)
            if now - last > self._grace:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._retry

    def get_failed_trial_callback(self):  # Optuna < 4.9
        return self._retry


class Heartbeat:
    """Context manager stamping one running trial every ``interval`` seconds from a
    daemon thread (what ``Study.optimize`` does, for the engine's ask/tell loop).

    A no-op when the storage has no heartbeats. The first stamp is written
    before ``__enter__`` returns (by the storage, when the trial became RUNNING,
    or here). The stamping thread is one per storage, shared by its trials and
    kept between them (starting and joining a thread per trial costs milliseconds
    on a busy machine); after ``__exit__`` the trial gets no further stamp.
    """

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._beater: _Beater | None = None

    def __enter__(self) -> "Heartbeat":
        if heartbeat_enabled(self._storage):
            stamped = getattr(self._storage, "stamped_at_creation", None)
            if stamped is None or not stamped(self._trial_id):
                self._storage.record_heartbeat(self._trial_id)
            self._beater = _Beater.of(self._storage)
            self._beater.add(self._trial_id)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._beater is not None:
            self._beater.remove(self._trial_id)


class _Beater:
    """The daemon thread stamping a storage's running trials (see :class:`Heartbeat`).
    It ends when its storage is gone or it has had no trial for :attr:`IDLE_S` seconds;
    the next trial starts another."""

    IDLE_S = 60.0
    _all: "weakref.WeakKeyDictionary[BaseStorage, _Beater]" = weakref.WeakKeyDictionary()
    _all_lock = threading.Lock()

    @classmethod
    def of(cls, storage: BaseStorage) -> "_Beater":
        with cls._all_lock:
            beater = cls._all.get(storage)
            if beater is None:
                beater = cls._all[storage] = cls(storage)
            return beater

    @classmethod
    def existing(cls, storage: BaseStorage) -> "_Beater | None":
        with cls._all_lock:
            return cls._all.get(storage)

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = weakref.ref(storage)
        self._interval = float(storage.get_heartbeat_interval())
        self._lock = threading.Lock()
        self._trials: set[int] = set()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trials.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="archlab-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, trial_id: int) -> None:
        with self._lock:  # a stamp in progress finishes first: none follows
            self._trials.discard(trial_id)

    def _run(self) -> None:
        idle = 0.0
        while True:
            time.sleep(self._interval)
            storage: Any = self._storage()
            with self._lock:
                if storage is None or (not self._trials and idle >= self.IDLE_S):
                    self._thread = None
                    return
                idle = 0.0 if self._trials else idle + self._interval
                for trial_id in sorted(self._trials):
                    try:
                        storage.record_heartbeat(trial_id)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        self._trials.discard(trial_id)  # failed as stale meanwhile: its owner finds out
                    except Exception:  # a lost connection must not kill the worker; the next beat retries
                        pass
            del storage


__all__ = ["heartbeat_enabled", "fail_stale_trials", "start_beating", "stop_beating", "Heartbeat",
           "JournalHeartbeatStorage", "JOURNAL_BEAT_KEY"]
