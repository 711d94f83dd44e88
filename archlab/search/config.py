"""What one search worker is asked to do (:class:`SearchConfig`, the ``archlab
search`` options) and what it reports (:class:`Progress`, :class:`SearchResult`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from archlab.search.constraints import Constraints


@dataclass
class SearchConfig:
    """One worker's search (the ``archlab search`` options).

    Fields:
        space: registered space name or path of a ``.py`` space file.
        sampler: random | tpe | nsga2 | evolution | reinforce.
        n_trials: finished (COMPLETE + PRUNED) trials the study must hold at the end.
        timeout: seconds after which this worker starts no new trial.
        storage: storage URL (see :mod:`archlab.search.storage`), a storage object, or None (SQLite default).
        study: study name; default ``<space>-<sampler>``. An existing study is resumed.
        seed: sampler seed (give each worker its own).
        constraints: analytic limits checked before evaluation.
        objectives: names from :data:`~archlab.search.checks.OBJECTIVES`; two or more make a multi-objective study.
        heartbeat_interval: seconds between heartbeats (RDB storages); None: off.
        grace_period: seconds without heartbeat before a running trial is stale.
        max_retry: re-runs of a stale trial.
        sampler_options: extra constructor options for the sampler.
        evaluator_options: options for the space's evaluator factory.
        switch_sampler: resume a study made with another sampler (refused otherwise).
        training: how a space with a task (seg, cls) trains its candidates
            (:class:`~archlab.search.trained.TrainBudget`); None: the defaults.
            Refused for a space that looks its rewards up.
    """

    space: str
    sampler: str = "tpe"
    n_trials: int = 100
    timeout: float | None = None
    storage: Any = None
    study: str | None = None
    seed: int | None = None
    constraints: Constraints = field(default_factory=Constraints)
    objectives: Sequence[str] = ("reward",)
    heartbeat_interval: int | None = 10
    grace_period: int | None = None
    max_retry: int | None = 3
    sampler_options: dict = field(default_factory=dict)
    evaluator_options: dict = field(default_factory=dict)
    switch_sampler: bool = False
    training: Any = None


@dataclass
class Progress:
    """What a progress callback sees after each trial of this worker."""

    finished: int  # decided trials in the study (COMPLETE, PRUNED, FAIL with a fail_reason)
    total: int  # n_trials
    best: float | None  # best reward so far in the study
    rate: float  # this worker's trials per second
    last: FrozenTrial  # the trial just finished


@dataclass
class SearchResult:
    study: optuna.Study
    ran: int  # trials this worker ran to COMPLETE or PRUNED
    overhead_s: list[float]  # per trial of this worker: engine time excluding evaluation (incl. final tell)


__all__ = ["Progress", "SearchConfig", "SearchResult"]
