"""Shared by ``proxy_fidelity.py`` and ``search_trained.py``: train candidates of a
space with a study's budget, in parallel worker processes (several processes
keep one GPU busy with these small nets; each process loads the data once)."""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, replace
from functools import lru_cache

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


@lru_cache(maxsize=4)
def evaluator(space: str, budget_json: str):
    """The :class:`~archlab.search.trained.TrainedEvaluator` of ``space`` and a budget (cached per process)."""
    import optuna

    from archlab.search.trained import TrainedEvaluator
    from search_spaces import get_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return TrainedEvaluator.start(get_space(space), budget_from_json(budget_json), single_objective=True)


def budget_json(budget) -> str:
    return json.dumps(asdict(budget), sort_keys=True)


def budget_from_json(text: str, **changes):
    """The :class:`~archlab.search.trained.TrainBudget` of :func:`budget_json`'s text, with ``changes``."""
    from archlab.search.trained import TrainBudget

    b = {**json.loads(text), **changes}
    if b.get("input"):
        b["input"] = tuple(b["input"])
    return TrainBudget(**b)


def train_candidate(space: str, budget_js: str, params: dict, epochs: int, horizon: float | None = None,
                    seed: int | None = None) -> dict:
    """Train the candidate ``params`` of ``space`` for ``epochs`` with the budget's other
    settings (``horizon``: the schedule's, default the budget's; ``seed``: the
    initialisation and shuffling seed, default the budget's -- the data stay the
    budget's); its final metric, learning curve and times (a failure: metric NaN)."""
    import optuna
    import torch

    from archlab.search.trained import train_kwargs
    from archlab.train import TrainConfig, TrainError, train

    torch.set_num_threads(1)
    ev = evaluator(space, budget_js)
    graph = ev.space_fn(optuna.trial.FixedTrial(params))
    kw = train_kwargs(replace(ev.budget, epochs=epochs, steps=None,
                              horizon=ev.budget.horizon if horizon is None else horizon,
                              seed=ev.budget.seed if seed is None else seed))
    t0 = time.perf_counter()
    try:
        r = train(graph, ev.data, TrainConfig(**kw), progress=False)
    except TrainError as e:
        return {"params": params, "epochs": epochs, "metric": math.nan, "error": str(e)[:200],
                "wall_s": time.perf_counter() - t0}
    return {"params": params, "epochs": epochs, "seed": kw["seed"], "metric": r.final[ev.metric],
            "curve": [h.val[ev.metric] for h in r.history], "train_s": r.train_s,
            "wall_s": time.perf_counter() - t0, "num_params": graph.num_params(), "device": r.device}


def write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` whole or not at all (a run cut by a timeout keeps the last complete file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def pool(workers: int):
    """A process pool (spawn: CUDA cannot be forked)."""
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def kendall_spearman(a, b) -> tuple[float, float]:
    """Kendall's tau-b and Spearman's rho of two score lists (NaN = worst)."""
    from scipy.stats import kendalltau, spearmanr

    fa = [-1.0 if math.isnan(x) else x for x in a]
    fb = [-1.0 if math.isnan(x) else x for x in b]
    return float(kendalltau(fa, fb).statistic), float(spearmanr(fa, fb).statistic)


def default_workers(device: str) -> int:
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return min(12, os.cpu_count() or 1)
    return max(1, (os.cpu_count() or 1) // 2)
