"""The storage of one search worker: an Optuna RDB storage with the writes of the
trials it runs batched into three transactions a trial, and the study's trials
cached (see :class:`WorkerStorage`). :func:`worker_storage` wraps what
:func:`~archlab.search.storage.open_storage` opened; journal and in-memory
storages are used as they are. The transactions themselves are in
:mod:`~archlab.search.trial_transactions`, the cache of a study's trials in
:mod:`~archlab.search.study_cache`.

It works on Optuna's RDB tables with SQLAlchemy Core (Optuna's table models and
two of ``RDBStorage``'s private readers): tested with Optuna 4.3 to 5.0
(``bash .ci/optuna-versions``). Older releases lack the incremental
``_get_trials`` (before 4.1) and ``UpdateFinishedTrialError`` (before 4.3);
``pyproject.toml`` asks for ``optuna>=4.3``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from archlab.search import optuna_tables as tables
from archlab.search import trial_transactions as tx
from archlab.search.heartbeat import start_beating, stop_beating
from archlab.search.study_cache import StudyCache


def _to_backend(name: str):
    """A :class:`WorkerStorage` method that calls the backend's ``name`` with its arguments."""
    def method(self, *args, **kwargs):
        return getattr(self._backend, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The backend's ``{name}``."
    return method


class WorkerStorage(BaseStorage, BaseHeartbeat):
    """The storage of one search worker: an :class:`~optuna.storages.RDBStorage`
    with a cache of the study's trials, and the writes of the trials this worker
    runs batched into a few transactions.

    Optuna's own wrapper (``_CachedStorage``) commits every ``suggest_*`` and
    ``set_user_attr`` on its own, and re-reads every unfinished trial, with all
    its params and attrs, on every read of the study's trials: ~30 transactions
    and queries per trial of a search. Here:

    * A trial this worker creates (or takes from the queue of waiting trials) is
      *owned*: the worker keeps its up-to-date copy, and reading it never goes to
      the database. It is created (or made RUNNING) in one transaction, with its
      first heartbeat when heartbeats are on, and stamped from then on until it
      finishes (:func:`~archlab.search.heartbeat.start_beating`): a trial is
      never RUNNING without a stamp, however long ``ask`` takes. Its params, user attrs and system attrs are
      buffered, then written in one transaction by :meth:`flush` (the engine
      calls it before the evaluation, so a crashed evaluation's retry gets the
      params) or, at the latest, by the transaction that finishes it: buffered
      writes, values and end state commit together, so a finished trial always
      holds all its attrs. A transaction on an owned trial first checks that it
      is still RUNNING, and writes nothing if it is not (another worker failed
      it as stale): then it raises :class:`~optuna.exceptions.UpdateFinishedTrialError`,
      as Optuna does.
    * Reading the study's trials first asks which trials may have changed (one
      small query: the ids above the newest finished one, and the unfinished
      ones), then loads those that are neither owned nor finished by this worker
      (a finished trial no longer changes).
    * Inside :meth:`pinned` (the engine: from the stop check to the built graph)
      the study's trials are read from the database once; later reads in the
      block see that snapshot and this worker's own trials, as Optuna's samplers
      see a per-trial cache within a trial.

    Other workers see an owned trial's params and attrs from :meth:`flush` on (its
    RUNNING state and heartbeat at once). Study-level calls and heartbeats go to
    the backend as they are. The SQL is SQLAlchemy Core over Optuna's tables, in
    the same transactions Optuna's own calls would make one by one.
    """

    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        from optuna.storages._rdb import models

        self._backend = backend
        self._models = models
        self._lock = threading.RLock()
        self._local = threading.local()
        self._studies: dict[int, StudyCache] = {}
        self._trial_study: dict[int, int] = {}  # trial_id -> study_id, for the trials in a cache
        self._owned: dict[int, FrozenTrial] = {}  # running trials of this worker: their current copy
        self._pending: dict[int, tx.Pending] = {}  # their writes not yet in the database
        self._stamped: set[int] = set()  # owned trials whose creation wrote their first heartbeat
        self._directions: dict[int, list] = {}
        self._names: dict[int, str] = {}
        dialect = backend.engine.dialect.name
        # A finished trial this worker wrote is not read back where the database returns
        # exactly what was written (MySQL's DATETIME drops the microseconds).
        self._exact = dialect in ("sqlite", "postgresql")
        self._sql = tables.Statements(models, lock_study=dialect != "sqlite")

    # ------------------------------------------------------------ pass-through
    def __getattr__(self, name: str) -> Any:  # engine, url, scoped_session, ... of the backend
        if name.startswith("__") or name == "_backend":
            raise AttributeError(name)
        return getattr(self._backend, name)

    @property
    def backend(self) -> optuna.storages.RDBStorage:
        """The wrapped :class:`~optuna.storages.RDBStorage`."""
        return self._backend

    # study-level calls and heartbeats go to the backend as they are
    create_new_study = _to_backend("create_new_study")
    set_study_user_attr = _to_backend("set_study_user_attr")
    set_study_system_attr = _to_backend("set_study_system_attr")
    get_study_id_from_name = _to_backend("get_study_id_from_name")
    get_study_user_attrs = _to_backend("get_study_user_attrs")
    get_study_system_attrs = _to_backend("get_study_system_attrs")
    get_all_studies = _to_backend("get_all_studies")
    get_best_trial = _to_backend("get_best_trial")
    remove_session = _to_backend("remove_session")
    record_heartbeat = _to_backend("record_heartbeat")
    _get_stale_trial_ids = _to_backend("_get_stale_trial_ids")
    get_heartbeat_interval = _to_backend("get_heartbeat_interval")
    if hasattr(BaseHeartbeat, "get_heartbeat_stale_trial_callback"):
        get_heartbeat_stale_trial_callback = _to_backend("get_heartbeat_stale_trial_callback")
    else:  # Optuna < 4.9: the older name
        get_failed_trial_callback = _to_backend("get_failed_trial_callback")

    def delete_study(self, study_id: int) -> None:
        self._backend.delete_study(study_id)
        with self._lock:  # SQLite may give its ids to new studies and trials
            self._studies.pop(study_id, None)
            self._names.pop(study_id, None)
            self._directions.pop(study_id, None)
            for trial_id in [t for t, s in self._trial_study.items() if s == study_id]:
                del self._trial_study[trial_id]
                self._owned.pop(trial_id, None)
                self._pending.pop(trial_id, None)
                self._stamped.discard(trial_id)

    def get_study_name_from_id(self, study_id: int) -> str:
        if study_id not in self._names:
            self._names[study_id] = self._backend.get_study_name_from_id(study_id)
        return self._names[study_id]

    def get_study_directions(self, study_id: int) -> list:
        if study_id not in self._directions:  # fixed when the study is made
            self._directions[study_id] = self._backend.get_study_directions(study_id)
        return list(self._directions[study_id])

    def stamped_at_creation(self, trial_id: int) -> bool:
        """Whether owned trial ``trial_id`` got its first heartbeat when it was created
        (true once: the caller stamps it from then on)."""
        with self._lock:
            if trial_id in self._stamped:
                self._stamped.discard(trial_id)
                return True
            return False

    # ------------------------------------------------------------ trial writes
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:  # an enqueued or added trial: read like any other
            return self._backend.create_new_trial(study_id, template_trial)
        frozen = tx.insert_trial(self._backend.engine, self._sql, self._models, study_id,
                                 heartbeat=self._backend.heartbeat_interval is not None)
        with self._lock:
            self._own(study_id, frozen)
            if self._backend.heartbeat_interval is not None:
                self._stamped.add(frozen._trial_id)
                start_beating(self, frozen._trial_id)
        return frozen._trial_id

    def _own(self, study_id: int, frozen: FrozenTrial, stored: bool = False) -> None:
        cache = self._study(study_id)
        self._owned[frozen._trial_id] = frozen
        pending = self._pending[frozen._trial_id] = tx.Pending()
        if stored:  # taken from the queue: its attrs are in the database already
            pending.stored_user.update(frozen.user_attrs)
            pending.stored_system.update(frozen.system_attrs)
            pending.has_values = frozen.values is not None
        self._put(study_id, cache, frozen)
        cache.unfinished.add(frozen._trial_id)

    def _put(self, study_id: int, cache: StudyCache, t: FrozenTrial) -> None:
        cache.put(t)
        self._trial_study[t._trial_id] = study_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is None:
                self._backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)
                return
            study_id = self._trial_study[trial_id]
            cache = self._studies[study_id]
            known = cache.distributions.get(param_name)
            if known is None:
                known = self._stored_distribution(study_id, param_name)
            if known is not None:  # Optuna's rule: one parameter name, compatible distributions
                optuna.distributions.check_distribution_compatibility(known, distribution)
            if param_name in frozen.distributions:
                return  # Optuna's storage ignores a second value (the database keeps the first)
            cache.distributions.setdefault(param_name, distribution)
            self._pending[trial_id].params.append((param_name, float(param_value_internal), distribution))
            frozen.distributions[param_name] = distribution
            frozen.params[param_name] = distribution.to_external_repr(param_value_internal)

    def _stored_distribution(self, study_id: int, name: str) -> BaseDistribution | None:
        """The distribution of parameter ``name`` in some trial of the study, or None."""
        for t in self._studies[study_id].trials.values():
            if name in t.distributions:
                return t.distributions[name]
        with self._backend.engine.connect() as conn:
            row = conn.execute(self._sql.param_distribution, {"sid": study_id, "name": name}).first()
        return None if row is None else optuna.distributions.json_to_distribution(row[0])

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(trial_id, key, value, system=False)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(trial_id, key, value, system=True)

    def _set_attr(self, trial_id: int, key: str, value: Any, *, system: bool) -> None:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is None:
                (self._backend.set_trial_system_attr if system else self._backend.set_trial_user_attr)(
                    trial_id, key, value)
                return
            text = json.dumps(value)  # what the database holds; reading it back gives json.loads(text)
            pending = self._pending[trial_id]
            (pending.system if system else pending.user)[key] = text
            (frozen.system_attrs if system else frozen.user_attrs)[key] = json.loads(text)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        with self._lock:
            self.flush(trial_id)
            self._backend.set_trial_intermediate_value(trial_id, step, intermediate_value)
            frozen = self._owned.get(trial_id)
            if frozen is not None:
                frozen.intermediate_values[step] = float(intermediate_value)

    def flush(self, trial_id: int) -> None:
        """Write the buffered params and attrs of owned trial ``trial_id`` in one transaction.

        Raises:
            UpdateFinishedTrialError: the trial is no longer RUNNING (nothing is written).
        """
        with self._lock:
            pending = self._pending.get(trial_id)
            if pending is not None and pending:
                self._write(trial_id, pending, None, None)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is None and state == TrialState.RUNNING and self._backend.heartbeat_interval is not None:
                return self._start_waiting(trial_id)
            if frozen is None or not state.is_finished():
                if frozen is not None:
                    self.flush(trial_id)
                done = self._backend.set_trial_state_values(trial_id, state, values)
                if done and frozen is not None:
                    self._disown(trial_id)  # its state changed under the copy: read it again
                elif done and state == TrialState.RUNNING:
                    self._adopt(trial_id)  # a waiting trial (a retry) this worker now runs
                return done
            self._write(trial_id, self._pending[trial_id], state, values)
            return True

    def _start_waiting(self, trial_id: int) -> bool:
        """WAITING -> RUNNING with a heartbeat (:func:`~archlab.search.trial_transactions.start_waiting`);
        False when another worker took it."""
        started = tx.start_waiting(self._backend.engine, self._sql, self._models, trial_id)
        if started:
            self._adopt(trial_id)
            self._stamped.add(trial_id)
            start_beating(self, trial_id)
        return started

    def _adopt(self, trial_id: int) -> None:
        frozen = self._backend.get_trial(trial_id)
        study_id = self._trial_study.get(trial_id)
        if study_id is None:
            with self._backend.engine.connect() as conn:
                study_id = conn.execute(self._sql.study_of_trial, {"tid": trial_id}).scalar_one()
        self._own(study_id, frozen, stored=True)

    def _write(self, trial_id: int, pending: tx.Pending, state: TrialState | None, values) -> None:
        """Write owned trial ``trial_id``'s buffered params and attrs, and finish it when
        ``state`` is given (:func:`~archlab.search.trial_transactions.write_trial`)."""
        frozen = self._owned[trial_id]
        values = None if values is None else [float(v) for v in values]
        try:
            complete = tx.write_trial(self._backend.engine, self._sql, self._models, frozen, pending, state, values)
        except tx.NotRunning:  # another worker failed it as stale: the database is right, this copy is not
            self._disown(trial_id)
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{frozen.number} has already finished and can not be updated.") from None
        if state is not None:
            frozen.state, frozen.values, frozen.datetime_complete = state, values, complete
            study_id = self._trial_study[trial_id]
            del self._owned[trial_id], self._pending[trial_id]
            self._stamped.discard(trial_id)
            stop_beating(self, trial_id)
            cache = self._studies[study_id]
            if self._exact:
                cache.final.add(trial_id)  # the copy is what the database holds: it is not read back
            else:
                cache.drop(frozen)

    def _disown(self, trial_id: int) -> None:
        frozen = self._owned.pop(trial_id, None)
        self._pending.pop(trial_id, None)
        self._stamped.discard(trial_id)
        stop_beating(self, trial_id)
        if frozen is not None:  # read it again when next asked
            self._studies[self._trial_study[trial_id]].drop(frozen)

    # ------------------------------------------------------------ trial reads
    def _study(self, study_id: int) -> StudyCache:
        cache = self._studies.get(study_id)
        if cache is None:
            cache = self._studies[study_id] = StudyCache()
        return cache

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Within the block (in this thread), the study's trials are read from the
        database at most once: later reads see that snapshot and this worker's trials."""
        outer = getattr(self._local, "seen", None)
        self._local.seen = set() if outer is None else outer
        try:
            yield
        finally:
            self._local.seen = outer

    def unpin(self) -> None:
        """End this thread's :meth:`pinned` block early: later reads read the database again."""
        self._local.seen = None

    def _refresh(self, study_id: int) -> StudyCache:
        cache = self._study(study_id)
        seen = getattr(self._local, "seen", None)
        if seen is not None:
            if study_id in seen:
                return cache
            seen.add(study_id)
        with self._backend.engine.connect() as conn:
            load = cache.to_load(conn, self._sql, study_id, self._owned)
        if load:
            # Optuna's incremental read: these ids, and any made since (ids above them)
            for t in cache.take(self._backend._get_trials(study_id, None, set(load), max(load)), self._owned):
                self._trial_study[t._trial_id] = study_id
        return cache

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        with self._lock:
            cache = self._refresh(study_id)
            if states is None:
                trials = list(cache.ordered())
            else:
                trials = [t for t in cache.ordered() if t.state in states]
            if self._owned:  # an owned trial changes as the worker writes it: hand out a copy
                trials = [_copy(t) if t._trial_id in self._owned else t for t in trials]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is not None:
                return _copy(frozen)
            cache = self._studies.get(self._trial_study.get(trial_id, -1))
            t = cache.finished_trial(trial_id) if cache is not None else None
            if t is not None:
                return t  # finished: it no longer changes
        return self._backend.get_trial(trial_id)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            cache = self._studies.get(study_id)
            t = cache.trials.get(trial_number) if cache is not None else None
            if t is not None:
                return t._trial_id
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)


def _copy(t: FrozenTrial) -> FrozenTrial:
    c = copy.copy(t)
    c._params, c._distributions = dict(t._params), dict(t._distributions)
    c._user_attrs, c._system_attrs = dict(t._user_attrs), dict(t._system_attrs)
    c.intermediate_values = dict(t.intermediate_values)
    if t._values is not None:
        c._values = list(t._values)
    return c


def worker_storage(storage: Any) -> Any:
    """``storage`` for one search worker: an :class:`~optuna.storages.RDBStorage`
    (also inside Optuna's cache wrapper) as a :class:`WorkerStorage`; any other
    storage (journal, in-memory) as it is."""
    if isinstance(storage, WorkerStorage):
        return storage
    cached = getattr(optuna.storages, "_CachedStorage", ())
    backend = storage._backend if cached and isinstance(storage, cached) else storage
    if not isinstance(backend, optuna.storages.RDBStorage):
        return storage
    missing = tables.unsupported_optuna()
    if missing:  # a correct search still runs on Optuna's own storage, only with more database round trips
        warnings.warn(f"the batched worker storage does not support Optuna {optuna.__version__} "
                      f"({missing}); using Optuna's own storage (slower per trial). Tested: Optuna 4.3 to 5.0.",
                      RuntimeWarning, stacklevel=2)
        return storage
    return WorkerStorage(backend)
