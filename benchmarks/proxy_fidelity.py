"""Does the search's brief reward rank architectures as longer training does?

``--n`` random candidates of a space (distinct, from Optuna's RandomSampler) are
each trained twice with the search's default budget (the same data, seed and
schedule): once for its epochs, once for ``--factor`` times as many. Prints
Kendall's tau and Spearman's rho between the two rankings (target tau >= 0.6,
issue 11), and the same for the learning curve's first epochs of the long run.

    python benchmarks/proxy_fidelity.py                        # 20 seg candidates, 4 vs 40 epochs
    python benchmarks/proxy_fidelity.py --device cuda --workers 12 --out runs/proxy.json
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _trials import budget_json, default_workers, kendall_spearman, pool, train_candidate  # noqa: E402


def sample(space_name: str, budget_js: str, n: int, seed: int) -> list[dict]:
    import optuna

    from _trials import evaluator

    ev = evaluator(space_name, budget_js)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen, out = set(), []
    while len(out) < n:
        t = study.ask()
        ev.space_fn(t)
        key = tuple(sorted(t.params.items()))
        study.tell(t, 0.0)
        if key not in seen:
            seen.add(key)
            out.append(dict(t.params))
    return out


def main() -> None:
    from archlab.search.trained import TrainBudget

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="seg")
    p.add_argument("--n", type=int, default=20, help="candidates (default 20)")
    p.add_argument("--seed", type=int, default=0, help="which candidates (RandomSampler seed)")
    p.add_argument("--epochs", type=int, default=TrainBudget().epochs, help="the brief budget (default: the search's)")
    p.add_argument("--factor", type=int, default=10, help="the long budget is this many times the brief one")
    p.add_argument("--data", default=None, help="data spec (default: the search's)")
    p.add_argument("--horizon", type=float, default=1.0,
                   help="the brief runs' schedule spans this many times their epochs (the long runs': 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: 12 on a GPU, cores/2 on a CPU)")
    p.add_argument("--out", default=None, help="write every run as JSON here")
    args = p.parse_args()

    budget = TrainBudget(data=args.data, device=args.device, horizon=args.horizon)
    js = budget_json(budget)
    cands = sample(args.space, js, args.n, args.seed)
    long = args.epochs * args.factor
    jobs = [(i, e) for e in (long, args.epochs) for i in range(len(cands))]  # long ones first: they set the wall time
    workers = args.workers or default_workers(args.device)
    results: dict[tuple[int, int], dict] = {}
    t0 = time.perf_counter()
    with pool(workers) as ex:
        futs = {ex.submit(train_candidate, args.space, js, cands[i], e, None if e == args.epochs else 1.0): (i, e)
                for i, e in jobs}
        for k, f in enumerate(cf.as_completed(futs), 1):
            i, e = futs[f]
            results[i, e] = r = f.result()
            print(f"[{k}/{len(jobs)} {time.perf_counter() - t0:.0f}s] candidate {i} {e} epochs: "
                  f"{r['metric']:.4f} ({r['wall_s']:.1f} s)", flush=True)
            if args.out:
                _dump(args, cands, results, long, None, time.perf_counter() - t0)
    brief = [results[i, args.epochs]["metric"] for i in range(len(cands))]
    ref = [results[i, long]["metric"] for i in range(len(cands))]
    tau, rho = kendall_spearman(brief, ref)
    rows = {"brief_vs_long": {"tau": tau, "rho": rho}}
    for e in range(1, long):  # the long run's own curve after e epochs (a different schedule: cosine over `long`)
        early = [results[i, long]["curve"][e - 1] if "curve" in results[i, long] else math.nan for i in range(len(cands))]
        if e in (1, 2, args.epochs, 2 * args.epochs, long // 2):
            rows[f"long_curve_epoch{e}_vs_long"] = dict(zip(("tau", "rho"), kendall_spearman(early, ref)))
    print(f"\n{args.space}: {len(cands)} candidates, {args.epochs} vs {long} epochs, device "
          f"{results[0, long].get('device')}, {workers} workers, {time.perf_counter() - t0:.0f} s")
    print(f"{'candidate':>9} {'brief':>7} {'long':>7}  params")
    for i in sorted(range(len(cands)), key=lambda i: -ref[i] if not math.isnan(ref[i]) else 1):
        print(f"{i:>9} {brief[i]:7.4f} {ref[i]:7.4f}  {cands[i]}")
    for name, v in rows.items():
        print(f"{name:>32}: Kendall tau {v['tau']:.3f}, Spearman rho {v['rho']:.3f}")
    if args.out:
        _dump(args, cands, results, long, rows, time.perf_counter() - t0)


def _dump(args, cands, results, long, rows, wall) -> None:
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "long_epochs": long, "candidates": cands, "wall_s": wall,
                   "runs": [dict(r, candidate=i) for (i, _e), r in sorted(results.items())],
                   "correlations": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
