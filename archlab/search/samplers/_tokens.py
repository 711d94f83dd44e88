"""Turn Optuna distributions into the controller's finite token sets.

A categorical distribution's tokens are its choices. An int or float
distribution is discretised: an int with at most ``max_int_choices`` values gets
one token per value; anything wider, and every float, gets ``numeric_bins``
points spread evenly (geometrically when ``log=True``) and snapped to ``step``.
Every token is a value the distribution contains, so Optuna accepts it.
"""
from __future__ import annotations

import math
import zlib
from typing import Any, Mapping

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from archlab.search.samplers._config import ReinforceConfig


def decision_key(name: str, dist: BaseDistribution) -> str:
    """The controller key of a decision: its name and a hash of its distribution.

    The same name with another choice set (a define-by-run space may do that) is
    another decision with its own head.
    """
    return f"{name}#{zlib.crc32(distribution_to_json(dist).encode()):08x}"


def tokens(dist: BaseDistribution, config: ReinforceConfig) -> list[Any] | None:
    """The values the controller chooses among, or ``None`` to use the fallback sampler."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if config.numeric != "discretize":
        return None
    if isinstance(dist, IntDistribution):
        count = (dist.high - dist.low) // dist.step + 1
        if count <= config.max_int_choices:
            return list(range(dist.low, dist.high + 1, dist.step))
        grid = _grid(dist.low, dist.high, dist.log, config.numeric_bins)
        snapped = dist.low + np.round((grid - dist.low) / dist.step) * dist.step
        return sorted({int(min(max(v, dist.low), dist.high)) for v in snapped})
    if isinstance(dist, FloatDistribution):
        if dist.step is not None:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            if count <= config.max_int_choices:
                return [_clip(dist.low + k * dist.step, dist) for k in range(count)]
            grid = _grid(dist.low, dist.high, False, config.numeric_bins)
            snapped = dist.low + np.round((grid - dist.low) / dist.step) * dist.step
            return sorted({_clip(float(v), dist) for v in snapped})
        grid = _grid(dist.low, dist.high, dist.log, config.numeric_bins)
        return [_clip(float(v), dist) for v in grid]
    return None


def index_of(dist: BaseDistribution, values: list[Any], value: Any) -> int:
    """The token index of ``value`` (the nearest grid point for a discretised number)."""
    if isinstance(dist, CategoricalDistribution):
        return int(dist.to_internal_repr(value))
    diffs = [abs(float(v) - float(value)) for v in values]
    return int(np.argmin(diffs))


def decisions(params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution],
              config: ReinforceConfig) -> list[tuple[str, int, int]]:
    """The controller's ``(key, n_choices, index)`` for each parameter it chooses, in order
    (parameters with one token, or left to the numeric fallback, are not decisions)."""
    out = []
    for name, value in params.items():
        dist = distributions[name]
        values = tokens(dist, config)
        if values is not None and len(values) > 1:
            out.append((decision_key(name, dist), len(values), index_of(dist, values, value)))
    return out


def on_grid(params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution],
            config: ReinforceConfig) -> bool:
    """Whether the controller could have proposed exactly ``params``: no parameter is left
    to the numeric fallback or off its token grid (e.g. an enqueued number)."""
    for name, dist in distributions.items():
        values = tokens(dist, config)
        if values is None:
            return False
        if len(values) > 1 and values[index_of(dist, values, params[name])] != params[name]:
            return False
    return True


def _grid(low: float, high: float, log: bool, n: int) -> np.ndarray:
    if log:
        return np.exp(np.linspace(math.log(low), math.log(high), n))
    return np.linspace(low, high, n)


def _clip(value: float, dist: FloatDistribution) -> float:
    return float(min(max(value, dist.low), dist.high))
