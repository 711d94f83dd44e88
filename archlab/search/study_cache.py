"""What one search worker knows of a study's trials
(:class:`~archlab.search.worker_storage.WorkerStorage`), and how it learns which
of them changed: one small query for the ids above the newest finished trial and
the unfinished ones, then only those trials are loaded (a finished trial no
longer changes).
"""
from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from archlab.search import optuna_tables as tables

# Above this many unfinished trials of other workers, ask for every id from the
# lowest of them rather than for each (an IN list that long is slower).
_MAX_IN_LIST = 500


class StudyCache:
    """The trials of one study as a worker last read or wrote them.

    Invariant: every trial id up to :attr:`last_finished` is finished in
    :attr:`trials`, or in :attr:`unfinished`, or owned by the worker.
    """

    def __init__(self) -> None:
        self.trials: dict[int, FrozenTrial] = {}  # number -> trial
        self._ordered: list[FrozenTrial] | None = None  # the trials by number (None: to sort again)
        self.number_of: dict[int, int] = {}  # trial_id -> number
        self.unfinished: set[int] = set()  # trial ids last seen unfinished
        self.last_finished = -1  # each trial id up to this one is finished in the cache, or in unfinished
        self.final: set[int] = set()  # trials this worker finished, not yet seen by a read
        self.distributions: dict[str, BaseDistribution] = {}  # param name -> a distribution in the study

    def put(self, t: FrozenTrial) -> None:
        """Keep ``t`` (replacing the trial of its number)."""
        self.trials[t.number] = t
        self._ordered = None
        self.number_of[t._trial_id] = t.number

    def drop(self, t: FrozenTrial) -> None:
        """Forget ``t``: the next read loads it again."""
        self.trials.pop(t.number, None)
        self.number_of.pop(t._trial_id, None)
        self._ordered = None

    def ordered(self) -> list[FrozenTrial]:
        """The trials by number (the list is shared until the next change: do not mutate it)."""
        if self._ordered is None:
            self._ordered = [self.trials[n] for n in sorted(self.trials)]
        return self._ordered

    def finished_trial(self, trial_id: int) -> FrozenTrial | None:
        """The kept copy of trial ``trial_id`` when it is finished (it no longer changes), else None."""
        t = self.trials.get(self.number_of.get(trial_id, -1))
        return t if t is not None and t._trial_id == trial_id and t.state.is_finished() else None

    def to_load(self, conn, sql: tables.Statements, study_id: int, owned: Collection[int]) -> list[int]:
        """The ids of the study's trials that may have changed since the last read and
        are neither ``owned`` nor finished by this worker (one query on ``conn``).
        The trials this worker finished are marked seen on the way."""
        others = self.unfinished.difference(owned)
        args: dict[str, Any] = {"sid": study_id, "last": self.last_finished}
        if not others:
            stmt = sql.ids_after
        elif len(others) <= _MAX_IN_LIST:
            stmt, args["ids"] = sql.ids_after_or_in, sorted(others)
        else:
            stmt, args["low"] = sql.ids_from, min(others)
        load, last = [], self.last_finished
        for i in sorted(r[0] for r in conn.execute(stmt, args)):
            if i in owned or not (i > last or i in others):
                continue
            if i in self.final:  # finished by this worker: the cache has it as written
                self.final.discard(i)
                self.unfinished.discard(i)
                self.last_finished = max(self.last_finished, i)
            else:
                load.append(i)
        return load

    def take(self, loaded: Iterable[FrozenTrial], owned: Collection[int]) -> list[FrozenTrial]:
        """Keep the ``loaded`` trials that are not ``owned``; returns those kept."""
        kept = []
        for t in loaded:
            if t._trial_id in owned:
                continue
            self.put(t)
            kept.append(t)
            self.final.discard(t._trial_id)
            if t.state.is_finished():
                self.unfinished.discard(t._trial_id)
                self.last_finished = max(self.last_finished, t._trial_id)
            else:
                self.unfinished.add(t._trial_id)
        return kept


__all__ = ["StudyCache"]
