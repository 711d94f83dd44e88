"""What would a pruner save, and what would it cost, on recorded learning curves?

Replays Optuna's pruners on the 40-epoch validation curves that
``proxy_fidelity.py`` recorded (20 random ``seg`` candidates): a study of
``--trials`` trials drawn from those candidates (with replacement; ``--trials
20`` without) reports each trial's first E epochs, exactly as ``archlab search
--epochs E --horizon 40/E`` would (the first E epochs of the 40-epoch run are
that budget, bit for bit: ``--horizon``; ``brief``: the recorded runs of the
default budget, 4 epochs at horizon 1), and stops it where the pruner says.
Prints, per budget and pruner, over ``--orders`` random trial orders: the
epochs trained (a share of the unpruned study's) and how much worse the
40-epoch mIoU of the study's best completed trial is than the unpruned study's
best. No training: seconds on a CPU. A replay of one worker; it cannot tell the
noise of real searches (seeds, samplers), which ``search_trained.py`` measures.

    python benchmarks/pruning_replay.py
    python benchmarks/pruning_replay.py --budgets 8 --trials 20 --orders 300
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
HERE = os.path.dirname(os.path.abspath(__file__))


def replay(curves: dict[int, list[float]], order: list[int], pruner, epochs: int,
           name: str = "replay") -> tuple[int, int]:
    """Run ``order`` through a study called ``name`` with ``pruner``; (epochs trained,
    the best completed candidate). Hyperband assigns brackets by a hash of the study's
    name and the trial number, so a fixed ``name`` makes the replay repeatable."""
    import optuna

    study = optuna.create_study(study_name=name, direction="maximize", pruner=pruner)
    used, done = 0, []
    for c in order:
        trial = study.ask()
        curve = curves[c][:epochs]
        stopped = None
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if epoch < epochs and trial.should_prune():  # as TrainedEvaluator: never after the last epoch
                stopped = epoch
                break
        used += stopped or epochs
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
            done.append(c)
    return used, max(done, key=lambda c: curves[c][epochs - 1])


def pruners(epochs: int):
    """archlab's pruners (``make_pruner``) and successive halving at other rungs and factors."""
    import optuna

    from archlab.search.trained import make_pruner

    out = [(name, lambda name=name: make_pruner(name, epochs)) for name in ("median", "halving", "hyperband")]
    for first in (1, 2, 3, 4):
        for eta in (2, 3):
            if first < epochs:
                out.append((f"halving first {first} eta {eta}", lambda f=first, e=eta:
                            optuna.pruners.SuccessiveHalvingPruner(min_resource=f, reduction_factor=e)))
    return out


def main() -> None:
    import optuna

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--curves", default=os.path.join(HERE, "results", "proxy_fidelity_h100.json"))
    p.add_argument("--budgets", default="brief,4,8",
                   help="E: the first E epochs of the long run (horizon 40/E); brief: the recorded runs of "
                        "the default budget (4 epochs, horizon 1)")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--orders", type=int, default=200)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with open(args.curves) as fh:
        runs = json.load(fh)
    long = {r["candidate"]: r for r in runs["runs"] if r["epochs"] == runs["long_epochs"]}
    brief = {r["candidate"]: r["curve"] for r in runs["runs"] if r["epochs"] == runs["args"]["epochs"]}
    final = {c: r["metric"] for c, r in long.items()}
    ids = sorted(long)
    print(f"{len(ids)} candidates' {runs['long_epochs']}-epoch curves ({os.path.basename(args.curves)}), "
          f"{args.trials} trials a study, {args.orders} orders")
    print(f"{'budget':>6} {'pruner':>24} {'epochs trained':>15} {'best 40-ep mIoU lost':>22} {'P(none lost)':>13}")
    for budget in args.budgets.split(","):
        curves = brief if budget == "brief" else {c: r["curve"] for c, r in long.items()}
        epochs = len(brief[ids[0]]) if budget == "brief" else int(budget)
        for name, make in pruners(epochs):
            share, lost = [], []
            for k in range(args.orders):
                rng = random.Random(k)
                order = ([rng.choice(ids) for _ in range(args.trials)] if args.trials != len(ids)
                         else rng.sample(ids, len(ids)))
                unpruned = max(set(order), key=lambda c: curves[c][epochs - 1])
                used, best = replay(curves, order, make(), epochs, name=f"replay-{k}")
                share.append(used / (len(order) * epochs))
                lost.append(final[unpruned] - final[best])
            print(f"{budget:>6} {name:>24} {statistics.mean(share):>15.0%} "
                  f"{statistics.mean(lost):>+13.4f} +- {statistics.stdev(lost):.3f} "
                  f"{sum(x <= 1e-12 for x in lost) / len(lost):>13.2f}", flush=True)


if __name__ == "__main__":
    main()
