"""Optuna samplers for architecture search, and :func:`make_sampler` to build one by name.

Every sampler is an :class:`optuna.samplers.BaseSampler`, so all of them share one
study, its storage, the CLI and the reports:

* ``random``, ``tpe``, ``nsga2``: Optuna's own (NSGA-II for multi-objective
  studies, e.g. reward against MACs).
* ``evolution``: :class:`RegularizedEvolutionSampler` (Real et al. 2019).
* ``reinforce``: :class:`ReinforceSampler`, an LSTM controller trained with
  REINFORCE (Zoph & Le 2017) whose state lives in the study.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable

import optuna

from archlab.errors import ArchlabError
from archlab.search.samplers.evolution import RegularizedEvolutionSampler
from archlab.search.samplers.reinforce import ReinforceConfig, ReinforceSampler

__all__ = [
    "make_sampler", "SAMPLER_NAMES", "ReinforceSampler", "ReinforceConfig",
    "RegularizedEvolutionSampler",
]

_FACTORIES: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "evolution": RegularizedEvolutionSampler,
    "reinforce": ReinforceSampler,
}
SAMPLER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def _accepted_options(name: str) -> set[str]:
    if name == "reinforce":
        return {f.name for f in dataclasses.fields(ReinforceConfig)} | {"config"}
    params = inspect.signature(_FACTORIES[name]).parameters
    return {p for p, v in params.items() if v.kind is not v.VAR_KEYWORD} - {"seed"}


def make_sampler(
    name: str, *, seed: int | None = None, **options: Any
) -> optuna.samplers.BaseSampler:
    """Build the sampler called ``name``.

    Args:
        name: One of :data:`SAMPLER_NAMES` (case-insensitive).
        seed: Seed of the sampler's draws; ``None`` draws one from the OS.
        **options: Constructor arguments of that sampler (for ``reinforce``, the
            fields of :class:`ReinforceConfig`, e.g. ``hidden_size=100``).

    Returns:
        A new sampler; nothing is shared with earlier calls.

    Raises:
        ArchlabError: ``name`` is unknown (the message suggests the closest
            names) or an option is not one that sampler takes.
    """
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = {"nsgaii": "nsga2", "rea": "evolution"}.get(key, key)
    if key not in _FACTORIES:
        close = difflib.get_close_matches(key, SAMPLER_NAMES, n=3, cutoff=0.4)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ArchlabError(f"unknown sampler {name!r}; {hint}known: {', '.join(SAMPLER_NAMES)}")
    unknown = sorted(set(options) - _accepted_options(key))
    if unknown:
        raise ArchlabError(
            f"sampler {key!r} takes no option {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(sorted(_accepted_options(key)))}")
    return _FACTORIES[key](seed=seed, **options)
