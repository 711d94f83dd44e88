"""What one search trial costs: seconds per trial of ``--n`` random ``seg``
candidates with the search's default budget, one process, after a warm-up.

    python benchmarks/trial_cost.py --device cuda

Measured on an H100 (2026-11-27, three candidates of 0.7-2.1 M params):
1.6-2.5 s a trial, 1,900-2,900 images/s (cuDNN autotuning on or off within
that spread; the runs were not repeated). On this project's 2-core CPU:
23 s for an 0.8 M-param candidate.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    import optuna

    from archlab.search.trained import TrainBudget, TrainedEvaluator, train_kwargs
    from archlab.train import TrainConfig, train
    from search_spaces import get_space

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=4)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ev = TrainedEvaluator.start(get_space("seg"), TrainBudget(device=args.device), single_objective=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    graphs = [ev.space_fn(study.ask()) for _ in range(args.n)]
    warm = TrainConfig(**train_kwargs(replace(ev.budget, steps=8)))
    train(graphs[0], ev.data, warm, progress=False)  # CUDA context, allocator, kernels' first load
    secs = []
    for g in graphs:
        t0 = time.perf_counter()
        r = train(g, ev.data, TrainConfig(**train_kwargs(ev.budget)), progress=False)
        secs.append(time.perf_counter() - t0)
        print(f"{g.num_params():>10,} params {secs[-1]:6.2f} s ({r.steps} steps, {r.images_per_s:,.0f} img/s, "
              f"miou {r.final['miou']:.3f})", flush=True)
    print(f"median {statistics.median(secs):.2f} s per trial on {r.device}")


if __name__ == "__main__":
    main()
