"""Architecture search on Optuna: samplers (random, TPE, NSGA-II, regularized evolution, REINFORCE).

A search space is a function of an Optuna trial that returns an archlab graph;
every sampler is an :class:`optuna.samplers.BaseSampler`, so all of them run in
one study with one storage. Build a sampler by name with :func:`make_sampler`.
"""
from archlab.search.samplers import (
    SAMPLER_NAMES,
    RegularizedEvolutionSampler,
    ReinforceConfig,
    ReinforceSampler,
    make_sampler,
)

__all__ = [
    "make_sampler", "SAMPLER_NAMES", "ReinforceSampler", "ReinforceConfig",
    "RegularizedEvolutionSampler",
]
