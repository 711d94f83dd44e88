"""Training archlab graphs: data (``archlab.train.data``) and the trainer.

``train(graph, data, config) -> TrainResult``; ``load_data(spec, size=...)``.
Imports torch (lazily: ``archlab.train.config`` alone does not, so the CLI's
parser stays fast). The graph, ops and analysis layers never import this package.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "archlab.train.config",
    "DataError": "archlab.train.data.base", "TaskData": "archlab.train.data.base",
    "load_data": "archlab.train.data.spec",
    **{name: "archlab.train.trainer" for name in ("EpochRecord", "NonFiniteLossError", "TrainError",
                                                 "TrainOutOfMemoryError", "TrainResult", "TrainTimeoutError", "train")},
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'archlab.train' has no attribute {name!r}")
