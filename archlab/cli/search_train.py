"""``archlab search``'s training options, its progress bar for trained spaces, and
``--gpus`` (one worker process per GPU on one study)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from archlab.cli.args import input_shape, positive_float, positive_int, seed

_TRAINING = ("data", "input", "epochs", "steps", "batch_size", "lr", "train_seed", "horizon", "device", "pruner",
             "trial_timeout", "save_weights", "keep", "penalty")


def add_training_args(s: argparse.ArgumentParser) -> None:
    """The options of spaces that train their candidates (seg, cls, a file with TASK)."""
    g = s.add_argument_group("training (spaces that train every candidate: seg, cls, a file setting TASK)")
    g.add_argument("--data", metavar="SPEC", help="data set spec (default: scenes for seg, shapes for cls; "
                   "see `archlab train --help`)")
    g.add_argument("--input", metavar="CxHxW", type=input_shape,
                   help="image size of data and candidates (default 3x32x32)")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_int, help="epochs each candidate trains (default 4)")
    budget.add_argument("--steps", type=positive_int, help="optimizer steps each candidate trains instead")
    g.add_argument("--batch-size", type=positive_int, help="images per step (default 32)")
    g.add_argument("--lr", type=positive_float, help="peak learning rate (default 3e-3, AdamW)")
    g.add_argument("--train-seed", type=seed, help="seed of every candidate's init, shuffling and data (default 0)")
    g.add_argument("--horizon", type=positive_float, metavar="K",
                   help="the LR schedule spans K x the budget: train the first 1/K of a K-times longer run (default 1)")
    g.add_argument("--device", help="this worker's device: auto (a GPU when there is one), cpu, cuda, cuda:K")
    g.add_argument("--gpus", metavar="all|0,1,...",
                   help="start one worker per listed GPU on this study (repeat an index for several on one GPU)")
    g.add_argument("--pruner", choices=("none", "median", "halving", "hyperband"),
                   help="stop weak candidates early by their per-epoch validation metric (default none)")
    g.add_argument("--trial-timeout", type=positive_float, metavar="S",
                   help="a trial training longer than S seconds FAILs and the search goes on")
    g.add_argument("--save-weights", metavar="DIR", help="keep the best trials' weights in DIR")
    g.add_argument("--keep", type=positive_int, help="how many trials' weights --save-weights keeps (default 3)")
    g.add_argument("--penalty", metavar="METRIC:TARGET[:W]",
                   help="hardware-aware reward (MnasNet): acc * (METRIC/TARGET)**W, METRIC params|macs|memory, "
                        "W default -0.07 (e.g. macs:50M)")


def training_budget(args: argparse.Namespace):
    """The :class:`~archlab.search.trained.TrainBudget` the options ask for, or None when none was given."""
    if all(getattr(args, k, None) is None for k in _TRAINING):
        return None
    from archlab.search.trained import TrainBudget, parse_penalty

    b = TrainBudget()
    given = {"data": args.data, "input": tuple(args.input) if args.input else None, "epochs": args.epochs,
             "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.train_seed,
             "horizon": args.horizon,
             "device": args.device, "pruner": args.pruner, "trial_timeout": args.trial_timeout,
             "save_weights": args.save_weights, "keep": args.keep,
             "penalty": parse_penalty(args.penalty) if args.penalty else None}
    for key, value in given.items():
        if value is not None:
            setattr(b, key, value)
    if args.input is not None and len(args.input) != 3:
        from archlab.errors import ArchlabError

        raise ArchlabError(f"--input {'x'.join(map(str, args.input))}: give an image size CxHxW, e.g. 3x32x32")
    return b


class TrainProgress:
    """One tqdm bar over the study's trials; its text names the trial being trained and its epoch."""

    def __init__(self, total: int, stream) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="trial", file=stream, dynamic_ncols=True, mininterval=0.2,
                        desc="search")
        self.best = None

    def epoch(self, number: int, rec, epochs: int) -> None:
        metric = " ".join(f"{k} {v:.3f}" for k, v in list(rec.val.items())[:1])
        best = "-" if self.best is None else f"{self.best:.4f}"
        self.bar.set_postfix_str(f"trial #{number} epoch {rec.epoch}/{epochs} {metric}, best {best}")

    def trial(self, p) -> None:
        self.best = p.best
        self.bar.n = min(p.finished, self.bar.total)
        state = p.last.state.name.lower()
        self.bar.set_postfix_str(f"#{p.last.number} {state}, best {'-' if p.best is None else f'{p.best:.4f}'}",
                                 refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------ --gpus
def gpu_list(text: str) -> list[int]:
    """``all`` -> every CUDA device; ``0,1,1`` -> [0, 1, 1].

    Raises:
        ArchlabError: no GPU, or an index this machine does not have.
    """
    from archlab.errors import ArchlabError

    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if text.strip().lower() == "all":
        if count == 0:
            raise ArchlabError("--gpus all: this machine has no CUDA GPU; run without --gpus (--device cpu)")
        return list(range(count))
    try:
        ids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        ids = []
    if not ids or any(i < 0 for i in ids):
        raise ArchlabError(f"--gpus {text!r}: write all or a comma list of GPU indices such as 0,1")
    bad = [i for i in ids if i >= count]
    if bad:
        raise ArchlabError(f"--gpus {text!r}: GPU {bad[0]} does not exist (this machine has {count} CUDA device(s))")
    return ids


def worker_argv(argv: list[str], gpu: int, k: int, seed: int | None) -> list[str]:
    """The ``archlab search`` arguments of worker ``k`` on GPU ``gpu``: ``argv`` without
    ``--gpus``, ``--device`` and ``--seed``, plus ``--device cuda:GPU``, ``--quiet`` and
    its own sampler seed (``seed + k``; none when no seed was given)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--gpus", "--device", "--seed"):
            skip = True
            continue
        if a.startswith(("--gpus=", "--device=", "--seed=")) or a == "--quiet":
            continue
        out.append(a)
    out += ["--device", f"cuda:{gpu}", "--quiet"]
    if seed is not None:
        out += ["--seed", str((seed + k) % 2**32)]
    return out


def check_gpus(args: argparse.Namespace) -> list[int]:
    """The GPUs of ``--gpus``, after checking the options suit several worker processes."""
    from archlab.errors import ArchlabError

    if args.device is not None:
        raise ArchlabError("--gpus starts one worker per GPU with its own --device; give one of them")
    if args.storage is not None and args.storage.startswith(":memory:"):
        raise ArchlabError("--gpus needs a storage the workers share; :memory: is one process's")
    from search_spaces import get_space

    if get_space(args.space).task is None:
        raise ArchlabError(f"--gpus runs workers that train candidates; search space '{args.space}' computes its "
                           "rewards without training (run several plain workers on one --storage instead)")
    return gpu_list(args.gpus)


def run_on_gpus(args: argparse.Namespace, argv: list[str], study, gpus: list[int]) -> int:
    """Start one ``archlab search`` worker per GPU of ``--gpus`` on ``study`` (opened
    by this process, so it holds its settings), show its progress, and return the
    worst exit status."""
    procs = [subprocess.Popen([sys.executable, "-m", "archlab", *worker_argv(argv, g, k, args.seed)])
             for k, g in enumerate(gpus)]
    print(f"started {len(procs)} workers on GPU {','.join(map(str, gpus))} (pids "
          f"{', '.join(str(p.pid) for p in procs)})", file=sys.stderr)
    try:
        _watch(procs, study, args.n_trials)
        codes = [p.wait() for p in procs]
    finally:  # interrupted, or the parent failed: no worker is left running on a GPU
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    return max(1 if c < 0 else c for c in codes)  # a worker killed by a signal is a failure


def _watch(procs, study, total: int) -> None:
    """A bar of the study's decided trials until every worker has exited (reads the storage every 2 s)."""
    from tqdm.auto import tqdm

    from archlab.search.trials import best_reward, decided

    with tqdm(total=total, unit="trial", file=sys.stderr, desc="search", disable=not sys.stderr.isatty()) as bar:
        while any(p.poll() is None for p in procs):
            time.sleep(2.0)
            try:
                trials = study.get_trials(deepcopy=False)
                best = best_reward(study)
            except Exception:  # the workers report storage failures themselves
                continue
            bar.n = min(total, sum(decided(t) for t in trials))
            bar.set_postfix_str(f"best {'-' if best is None else f'{best:.4f}'}")  # refreshes the bar
