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
import math
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


def _accepted_options(name: str) -> dict[str, tuple[Any, str]]:
    """Option name -> (its default, its annotation as text) of sampler ``name``."""
    if name == "reinforce":
        return {f.name: (f.default, str(f.type)) for f in dataclasses.fields(ReinforceConfig)} | {"config": (None, "")}
    params = inspect.signature(_FACTORIES[name]).parameters
    return {p: (v.default, str(v.annotation)) for p, v in params.items()
            if v.kind is not v.VAR_KEYWORD and p != "seed"}


_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def _checked(sampler: str, key: str, value: Any, default: Any, annotation: str) -> Any:
    """``value`` for option ``key`` when its type is the default's (or one its
    annotation names when the default is None); an int where a float goes becomes
    a float. A scalar of another type (as the CLI's ``--sampler-option`` gives)
    raises here, not trials later inside the sampler; other objects (a callable
    from Python) are the sampler's to check."""
    if value is not None and not isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(default, (bool, int, float, str)):
        kinds = [type(default)]
    elif default is None and "Callable" not in annotation:
        kinds = [t for n, t in _SCALARS.items() if n in annotation]
    else:
        kinds = []
    if value is None and (default is None or "None" in annotation or "Optional" in annotation):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ArchlabError(f"sampler {sampler!r}: option {key}={value!r} must be a finite number")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 1e300:  # float() of a 300-digit int overflows
            raise ArchlabError(f"sampler {sampler!r}: option {key}={value} must be a finite float")
        return float(value)
    if any(isinstance(value, k) and (k is bool or not isinstance(value, bool)) for k in kinds):
        return value  # (True is an int to Python, not to an int option)
    wanted = " or ".join(k.__name__ for k in kinds) or f"a Python object ({annotation or 'no type given'}), " \
        "set from Python (SearchConfig.sampler_options)"
    raise ArchlabError(f"sampler {sampler!r}: option {key}={value!r} must be {wanted}"
                       f"{' or None' if 'None' in annotation and kinds else ''} (default {default!r})")


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
            names), an option is not one that sampler takes, its value is not
            of the option's type, or the sampler refuses it.
    """
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = {"nsgaii": "nsga2", "rea": "evolution"}.get(key, key)
    if key not in _FACTORIES:
        close = difflib.get_close_matches(key, SAMPLER_NAMES, n=3, cutoff=0.4)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ArchlabError(f"unknown sampler {name!r}; {hint}known: {', '.join(SAMPLER_NAMES)}")
    accepted = _accepted_options(key)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(accepted), n=1)
        raise ArchlabError(
            f"sampler {key!r} takes no option {', '.join(map(repr, unknown))}; "
            f"{f'did you mean {close[0]!r}? ' if close else ''}it takes: {', '.join(sorted(accepted))}")
    if key == "reinforce" and "config" in options and not isinstance(options["config"], ReinforceConfig):
        raise ArchlabError(f"sampler 'reinforce': option config must be a ReinforceConfig (from Python), got "
                           f"{options['config']!r}; set its fields as options instead (e.g. lr=0.01)")
    options = {k: v if k == "config" else _checked(key, k, v, *accepted[k]) for k, v in options.items()}
    try:
        return _FACTORIES[key](seed=seed, **options)
    except (TypeError, ValueError) as e:  # a value the sampler's own checks refuse (e.g. lr=-1)
        raise ArchlabError(f"sampler {key!r}: {e} (options {options})") from e
