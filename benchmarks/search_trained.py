"""Does a search with training beat random search, and does pruning pay?

Each (sampler, pruner, seed) runs one study of ``--trials`` trials on the ``seg``
space with the search's default training budget (``archlab search --space seg
--sampler S --pruner P --seed K``, in memory). Its best trial is then trained
again with ``--factor`` times the epochs (the "re-evaluated" reward). Prints,
per sampler and pruner, over the seeds: the best brief reward, the best
re-evaluated reward (the mean over ``--long-seeds`` fresh training seeds; mean +-
std over the studies) and the training time the study took
(the sum of its trials' evaluation seconds), and the one-sided Mann-Whitney p
that a row's seeds beat unpruned random's. Targets (issue 11): reinforce and
tpe above random; a pruned study needs <= 50 % of the unpruned one's training
time with a best reward within noise of it.

    python benchmarks/search_trained.py --device cuda --workers 12 --out runs/search_trained.json
    python benchmarks/search_trained.py --samplers random,tpe --seeds 1 --trials 6   # a smoke run
    python benchmarks/search_trained.py --table benchmarks/results/search_trained_h100.json
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _trials import budget_from_json, budget_json, default_workers, pool, train_candidate, write_json  # noqa: E402


def run_study(sampler: str, pruner: str, seed: int, trials: int, budget_js: str, factor: float,
              long_seeds: int = 1) -> dict:
    """One in-memory study; its trials, its training time and its best re-trained with
    ``long_seeds`` fresh training seeds: the ones after the budget's, which every trial
    was trained with (at ``horizon == factor`` a re-training with the budget's seed would
    continue the very run the study selected its best on). "long" is the mean of the
    finite ones (NaN if none)."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from archlab.search.engine import SearchConfig, best_trial, run_search

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = budget_from_json(budget_js, pruner=pruner)
    long_epochs = round(budget.epochs * factor)  # whole: main() checks
    t0 = time.perf_counter()
    cfg = SearchConfig(space="seg", sampler=sampler, n_trials=trials, seed=seed, storage=optuna.storages.InMemoryStorage(),
                       study=f"seg-{sampler}-{pruner}-{seed}", heartbeat_interval=None, training=budget)
    study = run_search(cfg).study
    wall = time.perf_counter() - t0
    ts = study.get_trials(deepcopy=False)
    best = best_trial(study)
    offsets = list(range(1, long_seeds + 1))
    again = [train_candidate("seg", budget_js, dict(best.params), long_epochs, 1.0, seed=budget.seed + k)
             ["metric"] for k in offsets]
    finite = [x for x in again if math.isfinite(x)]
    return {"sampler": sampler, "pruner": pruner, "seed": seed, "search_wall_s": wall,
            "train_s": sum(t.user_attrs.get("eval_s", 0.0) for t in ts),
            "states": {s.name: sum(t.state == s for t in ts) for s in TrialState},
            "rewards": [t.user_attrs.get("reward") for t in ts],
            "stopped_epochs": [t.user_attrs.get("stopped_epoch") for t in ts],
            "best": {"number": best.number, "reward": best.user_attrs["reward"], "params": dict(best.params),
                     "long": statistics.mean(finite) if finite else math.nan, "long_runs": again,
                     "long_seed_offsets": offsets, "long_epochs": long_epochs}}


def main() -> None:
    from archlab.search.trained import TrainBudget

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samplers", default="reinforce,tpe,evolution,random")
    p.add_argument("--pruned", default="tpe,random", help="samplers also run with --pruned-by (default tpe,random)")
    p.add_argument("--pruned-by", default="halving", help="the pruner of those runs (halving or hyperband)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--factor", type=float, default=10,
                   help="re-train each best for factor x --epochs epochs, a whole number (default 10)")
    p.add_argument("--long-seeds", type=int, default=3,
                   help="re-train each study's best with this many fresh training seeds and take the mean (default 3: "
                        "one seed's 40-epoch mIoU varied by 0.013 on the CPU run, as much as the samplers' means "
                        "differed; benchmarks/reward_noise.py)")
    p.add_argument("--data", default=None, help="data spec (default: the search's)")
    p.add_argument("--epochs", type=int, default=TrainBudget().epochs, help="the brief budget (default: the search's)")
    p.add_argument("--batch-size", type=int, default=TrainBudget().batch_size, help="(default: the search's)")
    p.add_argument("--horizon", type=float, default=1.0, help="the studies' schedule horizon (re-training: 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--table", metavar="JSON", help="only print the table of an earlier run's --out file")
    args = p.parse_args()
    if args.long_seeds < 1:
        p.error(f"--long-seeds must be at least 1, got {args.long_seeds}")
    if args.factor <= 0 or args.epochs * args.factor != round(args.epochs * args.factor):
        p.error(f"--factor {args.factor:g} x --epochs {args.epochs} must be a whole number of epochs")
    if args.table:
        print(table_of(args.table))
        return

    js = budget_json(TrainBudget(data=args.data, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                                 horizon=args.horizon))
    runs = [(s, "none") for s in args.samplers.split(",")] + \
        [(s, args.pruned_by) for s in args.pruned.split(",") if s]
    jobs = [(s, pr, seed) for seed in range(args.first_seed, args.first_seed + args.seeds)
            for s, pr in runs]  # seed-major: a cut run keeps whole seeds
    workers = args.workers or default_workers(args.device)
    out: list[dict] = []
    t0 = time.perf_counter()
    with pool(workers) as ex:
        futs = {ex.submit(run_study, s, pr, seed, args.trials, js, args.factor, args.long_seeds): (s, pr, seed)
                for s, pr, seed in jobs}
        for k, f in enumerate(cf.as_completed(futs), 1):
            r = f.result()
            out.append(r)
            print(f"[{k}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {r['sampler']}/{r['pruner']} seed {r['seed']}: "
                  f"best {r['best']['reward']:.4f}, re-trained {r['best']['long']:.4f}, training "
                  f"{r['train_s']:.0f} s, {r['states']}", flush=True)
            if args.out:
                write_json(args.out, {"args": vars(args), "wall_s": time.perf_counter() - t0, "runs": out})
    print(f"\nseg space, {args.trials} trials per study, {workers} workers, {time.perf_counter() - t0:.0f} s")
    print(table(out))


def table(out: list[dict]) -> str:
    """Mean +- std over seeds, per (sampler, pruner)."""
    def ms(xs):
        xs = [x for x in xs if x is not None and not math.isnan(x)]
        if not xs:
            return "-"
        return f"{statistics.mean(xs):.4f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"

    def above_random(rs, key):
        """One-sided Mann-Whitney p that this row's values exceed unpruned random's."""
        base = [pick(r, key) for r in out if r["sampler"] == "random" and r["pruner"] == "none"]
        mine = [pick(r, key) for r in rs]
        if rs[0]["sampler"] == "random" and rs[0]["pruner"] == "none" or len(base) < 2 or len(mine) < 2:
            return "-"
        from scipy.stats import mannwhitneyu

        return f"{mannwhitneyu(mine, base, alternative='greater').pvalue:.3f}"

    def pick(r, key):
        return r["best"][key]

    epochs = sorted({r["best"]["long_epochs"] for r in out if "long_epochs" in r["best"]})
    long = f"{'/'.join(map(str, epochs))} ep." if epochs else "10x"  # older files: --factor 10
    lines = [f"{'sampler':>10} {'pruner':>9} {'seeds':>5} {'best brief reward':>20} {'p>random':>8} "
             f"{'best re-trained (' + long + ')':>24} {'p>random':>8} {'training s':>18}"]
    keys = sorted({(r["sampler"], r["pruner"]) for r in out}, key=lambda k: (k[1] != "none", k[0]))
    for s, pr in keys:
        rs = [r for r in out if r["sampler"] == s and r["pruner"] == pr]
        lines.append(f"{s:>10} {pr:>9} {len(rs):>5} {ms([pick(r, 'reward') for r in rs]):>20} "
                     f"{above_random(rs, 'reward'):>8} {ms([pick(r, 'long') for r in rs]):>24} "
                     f"{above_random(rs, 'long'):>8} {ms([r['train_s'] for r in rs]):>18}")
    return "\n".join(lines)


def table_of(path: str) -> str:
    """The table of a results JSON written with ``--out``."""
    with open(path) as fh:
        return table(json.load(fh)["runs"])


if __name__ == "__main__":
    main()
