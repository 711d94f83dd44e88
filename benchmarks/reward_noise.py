"""How much of a reward is the architecture, and how much the training seed?

Takes an earlier ``search_trained.py --out`` file and trains each study's best
candidate again with ``--seeds`` training seeds (initialisation, shuffling and
augmentation; the data stay the study's), at the brief budget and at the
re-evaluation budget (``--factor`` times the epochs, horizon 1). The seeds are
the study's training seed and the next ones. The file's own re-evaluations
(``--long-seeds`` of them) are kept; the first seed's brief run is re-run and
must reproduce the study's reward (a determinism check).

Prints, for the brief and the long reward:

- the seed spread (pooled within-candidate std) against the architecture
  spread (between-candidate std of the seed means) and the intraclass
  correlation ICC(1) -- the share of a single run's variance that is the
  architecture's;
- Kendall's tau between the brief and the long ranking of these candidates,
  for seed 0 alone and for the seed means;
- the sampler table of ``search_trained.py`` again, with each best's long
  reward the mean over the seeds instead of seed 0 alone.

``--plot FILE`` draws brief against long reward, one point per candidate with
its seed range, coloured by the sampler that found it.

    python benchmarks/reward_noise.py benchmarks/results/search_trained_cpu_h10.json --seeds 3 \\
        --out benchmarks/results/reward_noise_cpu_h10.json --plot benchmarks/results/reward_noise_cpu_h10.png
    python benchmarks/reward_noise.py --table benchmarks/results/reward_noise_cpu_h10.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _trials import budget_json, default_workers, pool, train_candidate  # noqa: E402


def key_of(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def candidates(search: dict) -> list[dict]:
    """The distinct best candidates of a search_trained run, each with the studies that found it
    and its recorded seed-0 rewards."""
    found: dict[str, dict] = {}
    for r in search["runs"]:
        b = r["best"]
        c = found.setdefault(key_of(b["params"]), {"params": b["params"], "studies": [], "recorded": {}})
        c["studies"].append(f"{r['sampler']}/{r['pruner']}/{r['seed']}")
        c["recorded"] = {"brief": b["reward"], "long": b.get("long_runs", [b["long"]])}
    return list(found.values())


def resumed(path: str, cands: list[dict], seeds: int) -> list[dict]:
    """``cands`` with the rewards (and long curves) an earlier ``--out`` file holds for them."""
    with open(path) as fh:
        done = {key_of(c["params"]): c for c in json.load(fh)["candidates"]}
    for c in cands:
        old = done.get(key_of(c["params"]))
        for b in ("brief", "long", "long_curves"):
            for s, x in enumerate((old or {}).get(b, [])[:seeds]):
                if x is not None and (b == "long_curves" or not math.isnan(x)):
                    c[b][s] = x
    return cands


def budget_of(args: dict) -> str:
    """The budget JSON of a search_trained run's arguments (the study's training settings)."""
    from archlab.search.trained import TrainBudget

    return budget_json(TrainBudget(data=args["data"], epochs=args["epochs"], batch_size=args["batch_size"],
                                   device=args["device"], horizon=args["horizon"]))


def icc(groups: list[list[float]]) -> dict:
    """One-way random-effects ICC(1) of equal-sized groups, with the seed (within) and
    architecture (between, variance component) standard deviations (NaN: fewer than
    two groups or two seeds)."""
    k = len(groups[0])
    n = len(groups)
    if n < 2 or k < 2:
        return {"seed_std": math.nan, "arch_std": math.nan, "icc": math.nan}
    grand = statistics.mean(x for g in groups for x in g)
    msb = k * sum((statistics.mean(g) - grand) ** 2 for g in groups) / (n - 1)
    msw = sum((x - statistics.mean(g)) ** 2 for g in groups for x in g) / (n * (k - 1))
    between = max(0.0, (msb - msw) / k)
    return {"seed_std": math.sqrt(msw), "arch_std": math.sqrt(between),
            "icc": (msb - msw) / (msb + (k - 1) * msw) if msb + (k - 1) * msw > 0 else math.nan}


def _complete(c: dict, b: str) -> bool:
    return all(x is not None and not math.isnan(x) for x in c[b])


def _tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (NaN for fewer than three candidates)."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) >= 3 else math.nan


def _leading(cands: list[dict], b: str) -> int:
    """How many leading seeds every candidate has a finite ``b`` reward for (a cut run: the first ones)."""
    def n(xs):
        return next((i for i, x in enumerate(xs) if x is None or math.isnan(x)), len(xs))

    return min((n(c[b]) for c in cands), default=0)


def _spread(name: str, groups: list[list[float]]) -> str:
    s = icc(groups)
    return (f"{name}: seed std {s['seed_std']:.4f}, architecture std {s['arch_std']:.4f}, ICC {s['icc']:.2f} "
            f"({len(groups)} candidates x {len(groups[0]) if groups else 0} seeds)")


def analyse(result: dict) -> str:
    """The report of a ``--out`` file: spreads, ICC, tau, and the sampler table with seed-mean long rewards.

    Each candidate was *selected* on its first seed's brief reward (the best of its
    study), so that seed is optimistic; the other ("fresh") seeds are not, and the
    brief reward's spreads are given both ways.
    """

    from search_trained import table

    b = result["budget"]
    lines = [f"brief: {b['epochs']} epochs at horizon {b['horizon']:g}, data {b['data'] or 'the default'}, "
             f"batch {b['batch_size']}; long: {result['long_epochs']} epochs at horizon 1; seeds {result['seeds']}"]
    brief = [c for c in result["candidates"] if _complete(c, "brief")]
    if not brief:
        return "\n".join(lines + ["no candidate has all its brief runs yet"])
    if result.get("study_budget", True):
        worst = max(abs(c["brief"][0] - c["recorded"]["brief"]) for c in brief)
        lines.append(f"first seed's brief reward against the study's: largest difference {worst:.2e}"
                     + ("" if worst == 0 else " (not reproduced: another device or library?)"))
    else:
        lines.append("brief runs at another budget than the study's")
    lines.append(_spread("brief, all seeds  ", [c["brief"] for c in brief]))
    fresh = [c["brief"][1:] for c in brief]
    if len(fresh[0]) >= 2:
        lines.append(_spread("brief, fresh seeds", fresh))
    if result.get("study_budget", True) and worst == 0:
        optimism = statistics.mean(c["brief"][0] - statistics.mean(c["brief"][1:]) for c in brief)
        lines.append(f"the selected seed's brief reward exceeds the fresh seeds' mean by {optimism:.4f} on average "
                     "(the search's optimism about its bests)")
    k = _leading(brief, "long")
    if k < 2:
        if k == 1:
            tau = _tau([statistics.mean(c["brief"][1:]) for c in brief], [c["long"][0] for c in brief])
            lines.append(f"Kendall tau, fresh-seed mean brief vs the recorded long reward: {tau:.2f} "
                         f"({len(brief)} candidates; long runs: only the recorded ones)")
        return "\n".join(lines)
    full = [{**c, "long": c["long"][:k]} for c in brief]
    lines.append(_spread("long, all seeds   ", [c["long"] for c in full]))
    t0 = _tau([c["brief"][0] for c in full], [c["long"][0] for c in full])
    tf = _tau([statistics.mean(c["brief"][1:]) for c in full], [statistics.mean(c["long"]) for c in full])
    lines.append(f"Kendall tau, brief vs long among these candidates: first seed vs first seed {t0:.2f}; "
                 f"fresh-seed mean vs seed mean {tf:.2f}")
    lines.extend(by_budget(full, result["long_epochs"]))
    mean_long = {key_of(c["params"]): statistics.mean(c["long"]) for c in full}
    runs = [{**r, "best": {**r["best"], "long": mean_long[key_of(r["best"]["params"])]}}
            for r in result["search"]["runs"] if key_of(r["best"]["params"]) in mean_long]
    lines.append(f"\nsampler table, each best's long reward the mean of {k} seeds:")
    lines.append(table(runs))
    return "\n".join(lines)


def by_budget(cands: list[dict], long_epochs: int) -> list[str]:
    """How well the first E epochs of a long run (= the budget ``--epochs E --horizon long/E``)
    rank the candidates against the mean long reward of the *other* seeds, per seed whose
    curves were kept (independent seeds: no shared luck)."""

    nseeds = len(cands[0]["long"])
    have = {s: [c for c in cands if s < len(c.get("long_curves") or []) and c["long_curves"][s]]
            for s in range(nseeds)}
    seeds = [s for s in range(nseeds) if len(have[s]) >= 3]
    if not seeds or nseeds < 2:
        return []
    out = [f"budget --epochs E --horizon {long_epochs}/E (the long run's first E epochs), Kendall tau against the "
           f"other seeds' mean long reward ({', '.join(f'seed {s}: {len(have[s])} candidates' for s in seeds)}):"]
    for e in sorted({1, 2, 4, 8, 12, 16, 20, 30, long_epochs} & set(range(1, long_epochs + 1))):
        taus = []
        for s in seeds:
            others = [statistics.mean(x for j, x in enumerate(c["long"]) if j != s) for c in have[s]]
            taus.append(_tau([c["long_curves"][s][e - 1] for c in have[s]], others))
        out.append(f"  E={e:>2}: tau {statistics.mean(taus):.2f}")
    return out


def plot(result: dict, path: str) -> None:
    """Brief against long reward per candidate (seed mean, seed range as bars; a cross at
    the brief reward the search saw), by sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"random": "tab:gray", "tpe": "tab:blue", "evolution": "tab:green", "reinforce": "tab:red"}
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    seen = set()
    for c in result["candidates"]:
        long = [x for x in c["long"] if x is not None and not math.isnan(x)]
        if not _complete(c, "brief") or not long:
            continue
        sampler = c["studies"][0].split("/")[0]
        x, y = statistics.mean(c["brief"]), statistics.mean(long)
        ax.errorbar(x, y, xerr=[[x - min(c["brief"])], [max(c["brief"]) - x]],
                    yerr=[[y - min(long)], [max(long) - y]], fmt="o", capsize=2,
                    color=colours.get(sampler, "black"), label=None if sampler in seen else sampler)
        ax.plot(c["brief"][0], y, marker="x", color=colours.get(sampler, "black"), alpha=0.6)
        seen.add(sampler)
    b = result["budget"]
    ax.set_xlabel(f"brief reward: val mIoU after {b['epochs']} epochs (horizon {b['horizon']:g})")
    ax.set_ylabel(f"long reward: val mIoU after {result['long_epochs']} epochs")
    ax.set_title(f"Best candidate of each study: mean and range over {result['seeds']} training seeds\n"
                 "(x: the seed the search selected it on)", fontsize=10)
    ax.legend(title="found by", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("search", nargs="?", help="a search_trained.py --out file")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. seeds-1 per candidate (default 3)")
    p.add_argument("--device", default=None, help="(default: the search's)")
    p.add_argument("--brief-only", action="store_true", help="no long runs beyond the recorded ones")
    p.add_argument("--epochs", type=int, default=None, help="brief runs of this many epochs instead of the study's")
    p.add_argument("--horizon", type=float, default=None, help="brief runs at this horizon instead of the study's")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out, run only the missing ones")
    p.add_argument("--plot", default=None, help="draw brief against long reward into this PNG")
    p.add_argument("--table", metavar="JSON", help="only print the report of an earlier --out file")
    args = p.parse_args()
    if args.table:
        with open(args.table) as fh:
            result = json.load(fh)
        print(analyse(result))
        if args.plot:
            plot(result, args.plot)
        return
    if not args.search or args.seeds < 2:
        p.error("give a search_trained.py --out file and --seeds >= 2")
    with open(args.search) as fh:
        search = json.load(fh)
    from archlab.search.trained import TrainBudget

    d = TrainBudget()  # a results file written before --out kept its arguments: the search's defaults
    sargs = {"data": d.data, "epochs": d.epochs, "batch_size": d.batch_size, "horizon": d.horizon, "factor": 10,
             "device": "auto", **search.get("args", {})}
    sargs["device"] = args.device or sargs["device"]
    long_epochs = sargs["epochs"] * sargs["factor"]
    sargs["epochs"] = args.epochs or sargs["epochs"]  # another brief budget than the study's (long: unchanged)
    sargs["horizon"] = args.horizon or sargs["horizon"]
    js = budget_of(sargs)
    cands = candidates(search)
    for c in cands:
        c["brief"] = [None] * args.seeds
        c["long"] = (c["recorded"]["long"] + [None] * args.seeds)[:args.seeds]
        c["long_curves"] = [None] * args.seeds
    if args.resume and args.out and os.path.exists(args.out):
        cands = resumed(args.out, cands, args.seeds)
    jobs = [(i, "brief", s) for s in range(args.seeds) for i in range(len(cands)) if cands[i]["brief"][s] is None] + \
        [(i, "long", s) for s in range(args.seeds) for i in range(len(cands))
         if cands[i]["long"][s] is None and not args.brief_only]
    result = {"search_file": args.search, "search": search, "seeds": args.seeds, "budget": json.loads(js),
              "study_budget": args.epochs is None and args.horizon is None,
              "long_epochs": long_epochs, "candidates": cands}
    workers = args.workers or default_workers(sargs["device"])
    t0 = time.perf_counter()
    with pool(workers) as ex:
        futs = {ex.submit(train_candidate, "seg", js, cands[i]["params"],
                          sargs["epochs"] if b == "brief" else long_epochs,
                          None if b == "brief" else 1.0, json.loads(js)["seed"] + s): (i, b, s) for i, b, s in jobs}
        import concurrent.futures as cf

        for k, f in enumerate(cf.as_completed(futs), 1):
            i, b, s = futs[f]
            run = f.result()
            cands[i][b][s] = run["metric"]
            if b == "long":
                cands[i]["long_curves"][s] = run.get("curve")
            print(f"[{k}/{len(jobs)} {time.perf_counter() - t0:.0f}s] candidate {i} {b} seed {s}: "
                  f"{cands[i][b][s]:.4f}", flush=True)
            result["wall_s"] = time.perf_counter() - t0
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump(result, fh, indent=1)
    print(analyse(result))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
