"""Analytic limits on a sampled graph, checked before any evaluation.

The analyzers (:mod:`archlab.analysis`) need no torch and take milliseconds, so
a candidate over budget is rejected before it costs a training run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from archlab.graph import Graph


@dataclass(frozen=True)
class Metrics:
    """What the analyzers say about one candidate.

    Fields:
        params: trainable parameters.
        macs: multiply-accumulates at batch 1, torchvision convention (conv + linear).
        memory: peak activation bytes of inference at batch 1, float32.
        rf: receptive field of the (first) output: ``"global"`` or ``"HxW"``
            (``"N"`` when square).
    """

    params: int
    macs: int
    memory: int
    rf: str


def parse_count(text: str) -> float:
    """``1000000``, ``1e6``, ``5M``, ``600k``, ``2G`` (``_`` and ``,`` ignored) -> a finite number.

    Raises:
        ValueError: not such a count.
    """
    t = str(text).strip().replace("_", "").replace(",", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9}.get(t[-1:].lower(), 1)
    value = float(t[:-1] if mult != 1 else t) * mult
    if not math.isfinite(value):
        raise ValueError(f"not a finite count: {text!r}")
    return value


def _rf_text(rf) -> str:
    if rf.is_global:
        return "global"
    h, w = rf.size
    return str(h) if h == w else f"{h}x{w}"


def measure(graph: Graph) -> Metrics:
    """Run the analyzers the constraints and trial records need on ``graph``."""
    from archlab.analysis import mac_counts, param_counts
    from archlab.analysis.memory import activation_memory
    from archlab.analysis.receptive_field import receptive_fields

    params = param_counts(graph)[0].total
    macs = mac_counts(graph, "torchvision").total
    memory = activation_memory(graph, batch=1, dtype="float32").peak_bytes
    out = next(iter(graph.outputs.values()))
    rf = _rf_text(receptive_fields(graph)[out])
    return Metrics(int(params), int(macs), int(memory), rf)


@dataclass(frozen=True)
class Constraints:
    """Upper limits on a candidate; ``None`` means no limit.

    Fields:
        max_params: trainable parameters.
        max_macs: MACs at batch 1 (torchvision convention).
        max_memory: peak activation bytes at batch 1, float32.
    """

    max_params: Optional[int] = None
    max_macs: Optional[int] = None
    max_memory: Optional[int] = None

    def __post_init__(self) -> None:
        from archlab.errors import ArchlabError

        for name in ("max_params", "max_macs", "max_memory"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ArchlabError(f"--{name.replace('_', '-')} must be positive, got {v}")

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return any(v is not None for v in (self.max_params, self.max_macs, self.max_memory))

    def violation(self, m: Metrics) -> str | None:
        """Why ``m`` is infeasible (every limit it breaks, ``"; "``-joined), or ``None``."""
        out = []
        for what, value, limit in (("params", m.params, self.max_params), ("MACs", m.macs, self.max_macs),
                                   ("peak memory bytes", m.memory, self.max_memory)):
            if limit is not None and value > limit:
                out.append(f"{what} {value:,} > max {limit:,}")
        return "; ".join(out) or None


__all__ = ["Metrics", "Constraints", "measure"]
