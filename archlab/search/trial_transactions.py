"""The three transactions a search worker's trial makes on Optuna's RDB tables
(:class:`~archlab.search.worker_storage.WorkerStorage`): create it (or start a
waiting one), write its buffered params and attrs, and finish it. Each is one
SQLAlchemy Core transaction over the statements of
:class:`~archlab.search.optuna_tables.Statements`, doing what Optuna's own calls
would do one by one; the worker storage keeps the copies and the bookkeeping.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import datetime

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from archlab.search import optuna_tables as tables


class NotRunning(Exception):
    """The trial is no longer RUNNING (another worker failed it as stale): nothing was written."""


class Pending:
    """Writes to an owned trial not yet in the database, and what of it is."""

    __slots__ = ("has_values", "params", "stored_system", "stored_user", "system", "user")

    def __init__(self) -> None:
        self.params: list[tuple[str, float, BaseDistribution]] = []
        self.user: dict[str, str] = {}  # key -> JSON text
        self.system: dict[str, str] = {}
        self.stored_user: set[str] = set()  # keys with a row in the database
        self.stored_system: set[str] = set()
        self.has_values = False

    def __bool__(self) -> bool:
        return bool(self.params or self.user or self.system)

    def written(self) -> None:
        self.stored_user.update(self.user)
        self.stored_system.update(self.system)
        self.params, self.user, self.system = [], {}, {}


def insert_trial(engine, sql: tables.Statements, models, study_id: int, *, heartbeat: bool) -> FrozenTrial:
    """Optuna's ``_create_new_trial`` (RUNNING, numbered by the trials before it) in one
    transaction, with the trial's first heartbeat when ``heartbeat``. A deadlock or lock
    timeout between workers is retried (up to 5 times), as Optuna does.

    Raises:
        KeyError: no study ``study_id``.
        StorageInternalError: the database refused.
    """
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    stored_start = tables.stored(models, "datetime_start", datetime.now())
    for attempt in range(1, 6):
        try:
            with engine.begin() as conn:
                # PostgreSQL, MySQL: lock the study row, as Optuna does, since the number counts
                # the trials before; SQLite: the insert takes the database's write lock
                if conn.execute(sql.find_study, {"sid": study_id}).first() is None:
                    raise KeyError(f"no study with id {study_id}")
                trial_id = conn.execute(sql.insert_trial, {"sid": study_id, "state": TrialState.RUNNING,
                                                           "start": stored_start}).inserted_primary_key[0]
                number = conn.execute(sql.count_before, {"sid": study_id, "tid": trial_id}).scalar_one()
                conn.execute(sql.set_number, {"tid": trial_id, "number": number})
                if heartbeat:
                    conn.execute(sql.insert_heartbeat, {"tid": trial_id})
            break
        except OperationalError as e:
            if attempt == 5:
                raise optuna.exceptions.StorageInternalError(f"creating a trial failed: {e}") from e
            time.sleep(random.random() * 2.0)
        except SQLAlchemyError as e:
            raise optuna.exceptions.StorageInternalError(f"creating a trial failed: {e}") from e
    return FrozenTrial(number=number, state=TrialState.RUNNING, value=None,
                       datetime_start=tables.loaded(models, "datetime_start", stored_start), datetime_complete=None,
                       params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                       trial_id=trial_id)


def start_waiting(engine, sql: tables.Statements, models, trial_id: int) -> bool:
    """Optuna's WAITING -> RUNNING (a new start time) and the trial's first heartbeat,
    in one transaction; False (nothing written) when it is not WAITING (another
    worker took it).

    Raises:
        StorageInternalError: the database refused.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.begin() as conn:
            started = conn.execute(sql.start_waiting, {
                "tid": trial_id, "waiting": TrialState.WAITING, "new_state": TrialState.RUNNING,
                "start": tables.stored(models, "datetime_start", datetime.now())}).rowcount == 1
            if started:
                conn.execute(sql.delete_heartbeat, {"tid": trial_id})
                conn.execute(sql.insert_heartbeat, {"tid": trial_id})
    except SQLAlchemyError as e:
        raise optuna.exceptions.StorageInternalError(f"starting a waiting trial failed: {e}") from e
    return started


def write_trial(engine, sql: tables.Statements, models, frozen: FrozenTrial, pending: Pending,
                state: TrialState | None, values: Sequence[float] | None) -> datetime | None:
    """One transaction on RUNNING trial ``frozen``: check it is still RUNNING (and finish it
    in ``state`` when given), then write ``pending``'s params and attrs, and ``values``.
    Marks ``pending`` written; ``frozen`` is left as it was.

    Returns:
        The finished trial's ``datetime_complete`` as Optuna loads it, or None when
        ``state`` is None.

    Raises:
        NotRunning: the trial is not RUNNING; nothing was written.
        StorageInternalError: the database refused; nothing was written.
    """
    from sqlalchemy.exc import SQLAlchemyError

    trial_id = frozen._trial_id
    check = {"tid": trial_id, "running": TrialState.RUNNING}
    if state is not None:
        stored_complete = tables.stored(models, "datetime_complete", datetime.now())
        change, params = sql.finish, {**check, "new_state": state, "complete": stored_complete}
    else:
        change, params = sql.touch, {**check, "new_state": TrialState.RUNNING}
    try:
        with engine.begin() as conn:
            # The state first: it takes the write lock (SQLite) or the row lock, and checks the trial.
            if conn.execute(change, params).rowcount != 1:
                raise NotRunning
            if pending.params:
                conn.execute(sql.insert_param, [
                    {"trial_id": trial_id, "param_name": name, "param_value": value,
                     "distribution_json": optuna.distributions.distribution_to_json(dist)}
                    for name, value, dist in pending.params])
            for attrs, stored, delete, insert in (
                    (pending.user, pending.stored_user, sql.delete_user_attrs, sql.insert_user_attr),
                    (pending.system, pending.stored_system, sql.delete_system_attrs, sql.insert_system_attr)):
                if not attrs:
                    continue
                again = [k for k in attrs if k in stored]  # set before: replace the row
                if again:
                    conn.execute(delete, {"tid": trial_id, "keys": again})
                conn.execute(insert, [{"trial_id": trial_id, "key": k, "value_json": v} for k, v in attrs.items()])
            if values is not None:
                if pending.has_values:
                    conn.execute(sql.delete_values, {"tid": trial_id})
                rows = []
                for objective, v in enumerate(values):
                    stored_v, kind = models.TrialValueModel.value_to_stored_repr(v)
                    rows.append({"trial_id": trial_id, "objective": objective, "value": stored_v,
                                 "value_type": kind})
                conn.execute(sql.insert_value, rows)
    except SQLAlchemyError as e:
        raise optuna.exceptions.StorageInternalError(
            f"writing trial {frozen.number} failed: {type(e).__name__}: {e}") from e
    pending.written()
    return None if state is None else tables.loaded(models, "datetime_complete", stored_complete)


__all__ = ["NotRunning", "Pending", "insert_trial", "start_waiting", "write_trial"]
