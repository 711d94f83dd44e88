"""How much of a reward is the architecture, and how much the training seed?

Takes an earlier ``search_trained.py --out`` file and trains each study's best
candidate again with ``--seeds`` training seeds (initialisation, shuffling and
augmentation; the data stay the study's), at the brief budget and at the
re-evaluation budget (``--factor`` times the epochs, horizon 1). Seed 0 is the
study's training seed, the one every trial was trained with, and seeds 1, 2, ...
the next ones. The file's own re-evaluations are kept at their seeds.

Seed 0 is the one the search *selected* each candidate on (the best of its
study), so its brief reward is optimistic, and at ``--horizon`` equal to
``--factor`` its long run is that very run continued (a brief run is
bitwise the first part of the long run with the same seed). The other seeds
are "fresh". Prints:

- seed 0's brief reward re-run against the study's (a determinism check) and
  the search's optimism: the study's reward minus the fresh seeds' mean;
- for the brief and the long reward, over all seeds and over the fresh ones:
  the seed spread (pooled within-candidate std), the architecture spread
  (the between-candidate variance component's std) and the intraclass
  correlation ICC(1), the share of one run's variance that is the
  architecture's;
- Kendall's tau between the brief and the long ranking of these candidates:
  a fresh seed's brief reward against the *other* fresh seeds' mean long
  reward (no shared luck), averaged over the fresh seeds;
- the same tau for the first E epochs of the long runs whose curves were kept,
  i.e. for the budgets ``--epochs E --horizon factor*epochs/E``;
- the sampler table of ``search_trained.py`` again, each best's long reward the
  mean over its fresh seeds.

``--plot FILE`` draws brief against long reward, one point per candidate with
its seed range (a cross at the brief reward the study saw), coloured by the
sampler that found it.

``--compare A.json B.json ...`` ranks the brief budgets of several ``--out``
files of one search (another ``--epochs``/``--horizon`` each) against the long
runs they hold between them, each brief seed against the other long seeds.

    python benchmarks/reward_noise.py benchmarks/results/search_trained_cpu_h10.json --seeds 3 \\
        --out benchmarks/results/reward_noise_cpu_h10.json --plot benchmarks/results/reward_noise_cpu_h10.png
    python benchmarks/reward_noise.py --table benchmarks/results/reward_noise_cpu_h10.json
    python benchmarks/reward_noise.py --compare benchmarks/results/reward_noise_h100_{default,h10,e8h5}.json
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
from _trials import budget_json, default_workers, pool, train_candidate, write_json  # noqa: E402


def key_of(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def candidates(search: dict) -> list[dict]:
    """The distinct best candidates of a search_trained run, each with the studies that found it
    and the rewards the first of them recorded: ``brief`` (the study's) and ``long``
    ({seed offset: reward}; a file without ``long_seeds`` re-trained with seed offset 0)."""
    found: dict[str, dict] = {}
    for r in search["runs"]:
        b = r["best"]
        c = found.setdefault(key_of(b["params"]), {"params": b["params"], "studies": [], "recorded": None})
        c["studies"].append(f"{r['sampler']}/{r['pruner']}/{r['seed']}")
        if c["recorded"] is None:
            offsets = b.get("long_seed_offsets", [0])
            c["recorded"] = {"brief": b["reward"], "long": dict(zip(offsets, b.get("long_runs", [b["long"]])))}
    return list(found.values())


def resumed(path: str, result: dict, cands: list[dict], seeds: int) -> list[dict]:
    """``cands`` with the rewards (and long curves) an earlier ``--out`` file holds for them.

    Raises:
        SystemExit: that file was made from another search file or with another budget.
    """
    with open(path) as fh:
        old_result = json.load(fh)
    for key in ("search_file", "budget", "long_epochs", "study_budget"):
        if old_result.get(key) != result[key]:
            raise SystemExit(f"--resume: {path} has {key}={old_result.get(key)!r}, this run {result[key]!r}; "
                             "give another --out or the same settings")
    done = {key_of(c["params"]): c for c in old_result["candidates"]}
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


def _mean(xs: list) -> float:
    return statistics.mean(xs) if xs else math.nan


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
    study_budget = result.get("study_budget", True)
    if study_budget:
        worst = max(abs(c["brief"][0] - c["recorded"]["brief"]) for c in brief)
        lines.append(f"seed 0's brief reward re-run against the study's: largest difference {worst:.2e}"
                     + ("" if worst == 0 else " (not bitwise: another device, or CUDA's nondeterminism)"))
    else:
        lines.append("brief runs at another budget than the study's")
    lines.append(_spread("brief, all seeds  ", [c["brief"] for c in brief]))
    if result["seeds"] >= 3:
        lines.append(_spread("brief, fresh seeds", [c["brief"][1:] for c in brief]))
    if study_budget:
        optimism = _mean([c["recorded"]["brief"] - _mean(c["brief"][1:]) for c in brief])
        lines.append(f"the study's brief reward exceeds the fresh seeds' mean by {optimism:.4f} on average "
                     "(the search's optimism about its bests)")
    k = _leading(brief, "long")
    if k < 2:
        if k == 1:
            tau = _tau([_mean(c["brief"][1:]) for c in brief], [c["long"][0] for c in brief])
            lines.append(f"Kendall tau, fresh-seed mean brief vs the recorded long reward: {tau:.2f} "
                         f"({len(brief)} candidates; long runs: only the recorded ones)")
        return "\n".join(lines)
    full = [{**c, "long": c["long"][:k]} for c in brief]
    lines.append(_spread("long, all seeds   ", [c["long"] for c in full]))
    if k >= 3:
        lines.append(_spread("long, fresh seeds ", [c["long"][1:] for c in full]))
    taus = [_tau([c["brief"][s] for c in full], [_mean([c["long"][j] for j in range(1, k) if j != s]) for c in full])
            for s in (range(1, k) if k >= 3 else ())]
    two = k == 2 and not seed0_long_continues(result)
    if taus:
        lines.append(f"Kendall tau, a fresh seed's brief reward vs the other fresh seeds' mean long reward: "
                     f"{_mean(taus):.2f}")
    elif two:
        lines.extend(two_seeds(full))
    else:
        lines.append("Kendall tau brief vs long: needs 3 long seeds (seed 0's long run continues the selected run)")
    lines.extend(by_budget(full, result["long_epochs"], with_seed0=two))
    mean_long = {key_of(c["params"]): _mean(c["long"][1:]) for c in full}
    runs = [{**r, "best": {**r["best"], "long": mean_long[key_of(r["best"]["params"])]}}
            for r in result["search"]["runs"] if key_of(r["best"]["params"]) in mean_long]
    lines.append(f"\nsampler table, each best's long reward the mean of its fresh seeds 1..{k - 1}:")
    lines.append(table(runs))
    return "\n".join(lines)


def seed0_long_continues(result: dict) -> bool:
    """Whether seed 0's long run is the run the study selected on, continued: the
    study's horizon equals its re-evaluation factor (a file without the search's
    arguments: the defaults, horizon 1)."""
    from archlab.search.trained import TrainBudget

    a = result["search"].get("args", {})
    return float(a.get("horizon", TrainBudget().horizon)) == float(a.get("factor", 10))


def two_seeds(cands: list[dict]) -> list[str]:
    """Brief against long across the two seeds 0 and 1, for a run with one fresh seed
    whose seed-0 long run is not the selected run continued (it shares that run's
    initialisation and data order, so some of the selection's luck)."""
    t10 = _tau([c["brief"][1] for c in cands], [c["long"][0] for c in cands])
    t01 = _tau([c["brief"][0] for c in cands], [c["long"][1] for c in cands])
    tll = _tau([c["long"][0] for c in cands], [c["long"][1] for c in cands])
    return [f"Kendall tau, brief seed 1 vs long seed 0: {t10:.2f}; brief seed 0 vs long seed 1: {t01:.2f}; "
            f"long seed 0 vs long seed 1 (one long run against another): {tll:.2f} ({len(cands)} candidates; "
            "seed 0 is the seed each best was selected on)"]


def by_budget(cands: list[dict], long_epochs: int, *, with_seed0: bool = False) -> list[str]:
    """How well the first E epochs of a long run (= the budget ``--epochs E --horizon long/E``)
    rank the candidates against the mean long reward of the *other* fresh seeds, per
    fresh seed whose curves were kept. Seed 0's long run counts among the others only
    ``with_seed0`` (it is not the selected run continued, and there is no other fresh seed)."""

    nseeds = len(cands[0]["long"])
    have = {s: [c for c in cands if s < len(c.get("long_curves") or []) and c["long_curves"][s]]
            for s in range(nseeds)}
    seeds = [s for s in range(1, nseeds) if len(have[s]) >= 3]
    if not seeds or (nseeds < 3 and not with_seed0):
        return []
    against = "seed 0's long reward" if with_seed0 else "the other fresh seeds' mean long reward"
    out = [f"budget --epochs E --horizon {long_epochs}/E (the long run's first E epochs), Kendall tau against "
           f"{against} ({', '.join(f'seed {s}: {len(have[s])} candidates' for s in seeds)}):"]
    for e in sorted({1, 2, 4, 8, 12, 16, 20, 30, long_epochs} & set(range(1, long_epochs + 1))):
        taus = []
        for s in seeds:
            skip = (s,) if with_seed0 else (0, s)
            others = [_mean([x for j, x in enumerate(c["long"]) if j not in skip]) for c in have[s]]
            taus.append(_tau([c["long_curves"][s][e - 1] for c in have[s]], others))
        out.append(f"  E={e:>2}: tau {statistics.mean(taus):.2f}")
    return out


def compare(results: list[dict]) -> str:
    """Several brief budgets over the same bests, ranked against the same long runs.

    ``results`` are ``--out`` files of one search file (other ``--epochs``/``--horizon``);
    their long runs are pooled by seed (the search file's own long runs first). For
    each budget: Kendall tau of each brief seed against each long seed *other* than it
    (the same seed shares initialisation and data order), over the candidates that
    have both, and their mean.

    Raises:
        SystemExit: the files come from different search files, or two of them hold
            different long rewards for one candidate and seed.
    """
    searches = {json.dumps(r["search"]["runs"], sort_keys=True) for r in results}
    if len(searches) != 1 or len({r["long_epochs"] for r in results}) != 1:
        raise SystemExit("--compare: the files must re-train the bests of one search file at one long budget")
    # the search file's own long runs as it records them now (a candidate several studies found
    # was re-trained by each; older --out files may hold another of those runs)
    long = {key_of(c["params"]): dict(c["recorded"]["long"]) for c in candidates(results[0]["search"])}
    recorded = {k: set(runs) for k, runs in long.items()}
    for r in results:
        for c in r["candidates"]:
            runs = long[key_of(c["params"])]
            for s, x in enumerate(c["long"]):
                if x is None or math.isnan(x) or s in recorded[key_of(c["params"])]:
                    continue
                if s in runs and abs(runs[s] - x) > 1e-9:
                    raise SystemExit(f"--compare: two long rewards for one candidate at seed {s} "
                                     f"({runs[s]:.4f}, {x:.4f})")
                runs[s] = x
    long_seeds = sorted({s for runs in long.values() for s in runs})
    lines = [f"brief budgets against the pooled long runs ({results[0]['long_epochs']} epochs, seeds "
             f"{', '.join(map(str, long_seeds))}); Kendall tau, brief seed b vs long seed l (b != l):"]
    for r in results:
        b = r["budget"]
        cells = []
        for bs in range(r["seeds"]):
            for ls in long_seeds:
                have = [c for c in r["candidates"] if ls != bs and ls in long[key_of(c["params"])]
                        and c["brief"][bs] is not None and not math.isnan(c["brief"][bs])]
                if len(have) >= 3:
                    cells.append((bs, ls, len(have), _tau([c["brief"][bs] for c in have],
                                                          [long[key_of(c["params"])][ls] for c in have])))
        text = "; ".join(f"b{bs}/l{ls} {t:.2f} ({n})" for bs, ls, n, t in cells)
        lines.append(f"  {b['epochs']} epochs, horizon {b['horizon']:g}: mean {_mean([t for *_, t in cells]):.2f}"
                     f"  [{text}]")
    return "\n".join(lines)


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
        ax.plot(c["recorded"]["brief"], y, marker="x", color=colours.get(sampler, "black"), alpha=0.6)
        seen.add(sampler)
    b = result["budget"]
    ax.set_xlabel(f"brief reward: val mIoU after {b['epochs']} epochs (horizon {b['horizon']:g})")
    ax.set_ylabel(f"long reward: val mIoU after {result['long_epochs']} epochs")
    ax.set_title(f"Best candidate of each study: mean and range over {result['seeds']} training seeds\n"
                 "(x: the brief reward the search selected it on)", fontsize=10)
    ax.legend(title="found by", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("search", nargs="?", help="a search_trained.py --out file")
    p.add_argument("--seeds", type=int, default=3,
                   help="training seeds per candidate: the study's (0) and the next seeds-1 (default 3)")
    p.add_argument("--device", default=None, help="(default: the search's)")
    p.add_argument("--brief-only", action="store_true", help="no long runs beyond the recorded ones")
    p.add_argument("--epochs", type=int, default=None, help="brief runs of this many epochs instead of the study's")
    p.add_argument("--horizon", type=float, default=None, help="brief runs at this horizon instead of the study's")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out, run only the missing ones")
    p.add_argument("--plot", default=None, help="draw brief against long reward into this PNG")
    p.add_argument("--table", metavar="JSON", help="only print the report of an earlier --out file")
    p.add_argument("--compare", metavar="JSON", nargs="+",
                   help="only rank the brief budgets of several --out files of one search against their pooled long runs")
    args = p.parse_args()

    def read(path: str, what: str) -> dict:
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError) as e:
            p.error(f"{path}: cannot read a {what} --out file ({e})")

    if args.compare:
        results = [read(path, "reward_noise.py") for path in args.compare]
        try:
            print(compare(results))
        except SystemExit as e:  # files that do not belong together: a usage error
            p.error(str(e))
        return
    if args.table:
        result = read(args.table, "reward_noise.py")
        print(analyse(result))
        if args.plot:
            plot(result, args.plot)
        return
    if not args.search or args.seeds < 2:
        p.error("give a search_trained.py --out file and --seeds >= 2")
    search = read(args.search, "search_trained.py")
    from archlab.search.trained import TrainBudget

    d = TrainBudget()  # a results file written before --out kept its arguments: the search's defaults
    sargs = {"data": d.data, "epochs": d.epochs, "batch_size": d.batch_size, "horizon": d.horizon, "factor": 10,
             "device": "auto", **search.get("args", {})}
    sargs["device"] = args.device or sargs["device"]
    long_epochs = round(sargs["epochs"] * sargs["factor"])
    sargs["epochs"] = args.epochs or sargs["epochs"]  # another brief budget than the study's (long: unchanged)
    sargs["horizon"] = args.horizon or sargs["horizon"]
    js = budget_of(sargs)
    cands = candidates(search)
    for c in cands:
        c["brief"] = [None] * args.seeds
        c["long"] = [c["recorded"]["long"].get(s) for s in range(args.seeds)]
        c["long_curves"] = [None] * args.seeds
    result = {"search_file": os.path.abspath(args.search), "search": search, "seeds": args.seeds,
              "budget": json.loads(js), "study_budget": args.epochs is None and args.horizon is None,
              "long_epochs": long_epochs, "candidates": cands}
    if args.resume and args.out and os.path.exists(args.out):
        resumed(args.out, result, cands, args.seeds)
    jobs = [(i, "brief", s) for s in range(args.seeds) for i in range(len(cands)) if cands[i]["brief"][s] is None] + \
        [(i, "long", s) for s in range(args.seeds) for i in range(len(cands))
         if cands[i]["long"][s] is None and not args.brief_only]
    workers = args.workers or default_workers(sargs["device"])
    seed0 = json.loads(js)["seed"]
    t0 = time.perf_counter()
    with pool(workers) as ex:
        futs = {ex.submit(train_candidate, "seg", js, cands[i]["params"],
                          sargs["epochs"] if b == "brief" else long_epochs,
                          None if b == "brief" else 1.0, seed0 + s): (i, b, s) for i, b, s in jobs}
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
                write_json(args.out, result)
    print(analyse(result))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
