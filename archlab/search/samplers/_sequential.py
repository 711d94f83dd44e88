"""Base of samplers that make every decision in ``sample_independent``."""
from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial


class SequentialSampler(BaseSampler):
    """A sampler with no relative search space: Optuna calls ``sample_independent``
    for each ``suggest_*`` in suggestion order, which is how define-by-run spaces
    are walked decision by decision (REINFORCE, regularized evolution)."""

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}
