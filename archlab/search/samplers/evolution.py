"""``RegularizedEvolutionSampler``: aging evolution (Real et al., AAAI 2019) as an Optuna sampler.

Real et al.'s Algorithm 1 keeps a population of the P most recently born
models. Each cycle draws S members at random (with replacement), mutates the
best of them and adds the child while the *oldest* member dies, whatever its
accuracy. Here the population is derived from the study every time: it is the
last P COMPLETE trials in completion order. That is exactly the aging rule
(each completed child pushes the oldest member out), and it holds no state of
its own, so any number of workers and restarts share one population through the
study's storage. Until P trials have completed, trials are sampled at random.

A mutation changes one decision of the parent, chosen uniformly among its
parameters that can take another value, to a uniformly chosen *different*
value; every other parameter keeps the parent's value. In a define-by-run space
a parameter the parent never had (a branch the mutation opened) is sampled at
random. Each child records ``{"parent": number, "mutated": name}`` in its trial
system attr ``archlab:evolution:lineage``.
"""
from __future__ import annotations

import datetime
import math
import threading
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from archlab.errors import ArchlabError
from archlab.search.samplers._sequential import SequentialSampler

__all__ = ["RegularizedEvolutionSampler", "LINEAGE_KEY"]

LINEAGE_KEY = "archlab:evolution:lineage"
_EPOCH = datetime.datetime.min


class RegularizedEvolutionSampler(SequentialSampler):
    """Regularized (aging) evolution over a define-by-run space.

    Args:
        population_size: P, the number of most recent completed trials that form
            the population (10, as NAS-Bench-201 runs it).
        sample_size: S, how many members (with replacement) compete to be the
            parent (3, NAS-Bench-201's setting).
        seed: Seed of the draws; give each worker its own.

    Raises:
        ValueError: ``population_size < 1`` or ``sample_size < 1``.
    """

    def __init__(self, *, population_size: int = 10, sample_size: int = 3,
                 seed: int | None = None) -> None:
        if population_size < 1 or sample_size < 1:
            raise ValueError("population_size and sample_size must be at least 1")
        self._p, self._s = population_size, sample_size
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._lock = threading.Lock()
        self._plans: dict[int, tuple[FrozenTrial, str | None] | None] = {}

    def reseed_rng(self) -> None:
        with self._lock:
            self._rng.seed()
            self._random.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Choose the trial's parent and the decision to mutate; called as the trial starts.

        Reads the study's trials and writes the lineage attr of ``trial``.

        Raises:
            ArchlabError: The study has more than one objective.
        """
        if study._is_multi_objective():
            raise ArchlabError(
                "the evolution sampler ranks by one objective; use the nsga2 sampler "
                "for a multi-objective study")
        done = study._storage.get_all_trials(
            study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        by_age = sorted(done, key=lambda t: (t.datetime_complete or _EPOCH, t.number))
        population = by_age[-self._p:]
        plan = None
        if len(population) >= self._p:
            with self._lock:
                picks = [population[i] for i in self._rng.randint(len(population), size=self._s)]
                best = max if study.direction == StudyDirection.MAXIMIZE else min
                parent = best(picks, key=lambda t: t.value)
                names = [n for n, d in parent.distributions.items() if _size(d) > 1]
                mutated = names[self._rng.randint(len(names))] if names else None
            plan = (parent, mutated)
            study._storage.set_trial_system_attr(
                trial._trial_id, LINEAGE_KEY, {"parent": parent.number, "mutated": mutated})
        with self._lock:
            self._plans[trial._trial_id] = plan

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """The parent's value, a different value for the mutated decision, or a random one.

        Called on each ``suggest_*`` of the trial.
        """
        with self._lock:
            plan = self._plans.get(trial._trial_id)
            if plan is not None:
                parent, mutated = plan
                if param_name in parent.params:
                    value = parent.params[param_name]
                    if param_name == mutated:
                        return _other_value(param_distribution, value, self._rng)
                    if _contains(param_distribution, value):
                        return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        """Forget the trial's plan; called as the trial finishes."""
        with self._lock:
            self._plans.pop(trial._trial_id, None)


def _size(dist: BaseDistribution) -> float:
    """How many values ``dist`` can take (``inf`` for a continuous float)."""
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    if isinstance(dist, IntDistribution):
        return (dist.high - dist.low) // dist.step + 1
    if isinstance(dist, FloatDistribution):
        if dist.step is not None:
            return int(round((dist.high - dist.low) / dist.step)) + 1
        return math.inf if dist.high > dist.low else 1
    return 1


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _other_value(dist: BaseDistribution, value: Any, rng: np.random.RandomState) -> Any:
    """A value of ``dist`` other than ``value``, uniformly (log-uniformly for log floats)."""
    n = _size(dist)
    if isinstance(dist, CategoricalDistribution):
        others = [c for c in dist.choices if not _same(c, value)] or list(dist.choices)
        return others[rng.randint(len(others))]
    if isinstance(dist, FloatDistribution) and dist.step is None:
        lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
        x = rng.uniform(lo, hi)
        return float(min(max(math.exp(x) if dist.log else x, dist.low), dist.high))
    if n <= 1:
        return value
    step = dist.step
    current = int(round((value - dist.low) / step)) if _contains(dist, value) else -1
    k = rng.randint(n - 1) if 0 <= current < n else rng.randint(n)
    if 0 <= current <= k:
        k += 1
    out = dist.low + k * step
    return int(out) if isinstance(dist, IntDistribution) else float(min(out, dist.high))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
