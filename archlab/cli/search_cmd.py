"""``archlab search``, ``archlab best`` and ``archlab trials``: run a study, and
read one back (see :mod:`archlab.search.engine`)."""
from __future__ import annotations

import argparse
import math
import sys
import time

_STORAGE_HELP = ("Optuna storage: sqlite:///FILE.db, postgresql://USER:PW@HOST/DB, journal:FILE "
                 "(default: sqlite:///runs/archlab.db)")
_TABLE_COLUMNS = ("number", "state", "reward", "params", "macs", "memory", "rf", "eval_s", "overhead_s",
                  "pruned_reason", "worker")


def _count(text: str) -> int:
    """``1000000``, ``1e6``, ``5M``, ``600k``, ``2G`` -> int (for --max-*; a finite number)."""
    t = text.strip().replace("_", "").replace(",", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9}.get(t[-1:].lower(), 1)
    if mult != 1:
        t = t[:-1]
    try:
        value = float(t) * mult
        if not math.isfinite(value):
            raise ValueError
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a finite count: {text!r} (e.g. 500000, 5e5, 500k, 2M)") from None


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (for --timeout)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r} (e.g. 600, 1.5)")
    return value


def _seed(text: str) -> int:
    """A sampler seed: an integer in 0 .. 2**32-1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"not a seed: {text!r} (an integer from 0 to 4294967295)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def add_parser(sub) -> None:
    """Register ``search``, ``best`` and ``trials`` on an ``argparse`` subparsers object."""
    s = sub.add_parser("search", help="search a space with an Optuna sampler (resumable, many workers)",
                       description="Run trials until the study holds --n-trials finished (complete or pruned) "
                       "trials; start the same command on several processes or machines to share the study.")
    s.add_argument("--space", required=True, help="registered space (e.g. nasbench201) or path/to/space.py")
    s.add_argument("--sampler", default="tpe", help="reinforce | tpe | random | nsga2 | evolution (default tpe)")
    s.add_argument("--switch-sampler", action="store_true",
                   help="resume a study made with another sampler with this one (refused otherwise)")
    s.add_argument("--n-trials", type=int, default=100, help="finished trials the study holds at the end (default 100)")
    s.add_argument("--timeout", type=_seconds, help="seconds after which this worker starts no new trial")
    s.add_argument("--storage", help=_STORAGE_HELP)
    s.add_argument("--study", help="study name; an existing study is resumed (default SPACE-SAMPLER)")
    s.add_argument("--seed", type=_seed, help="sampler seed (give each worker its own)")
    s.add_argument("--max-params", type=_count, help="prune candidates with more parameters")
    s.add_argument("--max-macs", type=_count, help="prune candidates with more MACs (batch 1, torchvision convention)")
    s.add_argument("--max-memory", type=_count, metavar="BYTES", help="prune candidates with more peak activation bytes (batch 1, fp32)")
    s.add_argument("--objectives", default="reward", help="comma list of reward,params,macs,memory (two or more: multi-objective)")
    s.add_argument("--heartbeat-interval", type=_positive_int, default=10, help="seconds between heartbeats of a running trial (default 10)")
    s.add_argument("--grace-period", type=_positive_int, help="seconds without heartbeat before a running trial is failed and retried (default 2x interval)")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("best", help="write the best trial's architecture file")
    s.add_argument("--study", required=True)
    s.add_argument("--storage", help=_STORAGE_HELP)
    s.add_argument("-o", "--output", help="file to write (default: stdout)")
    s.set_defaults(func=cmd_best)

    s = sub.add_parser("trials", help="print a study's trials as a table")
    s.add_argument("--study", required=True)
    s.add_argument("--storage", help=_STORAGE_HELP)
    s.add_argument("--format", default="table", choices=["table", "csv"])
    s.set_defaults(func=cmd_trials)


def _progress_printer(stream):
    tty = stream.isatty()

    def show(p) -> None:
        best = "-" if p.best is None else f"{p.best:.4g}"
        line = (f"trial {p.finished}/{p.total}  best reward {best}  {p.rate:.1f} trials/s  "
                f"(#{p.last.number} {p.last.state.name.lower()})")
        stream.write(("\r" + line.ljust(78)) if tty else line + "\n")
        stream.flush()

    return show


def cmd_search(args: argparse.Namespace) -> int:
    """Run this worker's share of the study; print a summary line at the end."""
    import optuna

    from archlab.search.constraints import Constraints
    from archlab.search.engine import SearchConfig, Worker, best_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(
        space=args.space, sampler=args.sampler, n_trials=args.n_trials, timeout=args.timeout,
        storage=args.storage, study=args.study, seed=args.seed,
        constraints=Constraints(args.max_params, args.max_macs, args.max_memory),
        objectives=tuple(args.objectives.split(",")), heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period, switch_sampler=args.switch_sampler)
    worker = Worker.open(config)
    study = worker.study
    t0 = time.perf_counter()
    result = worker.run(None if args.quiet else _progress_printer(sys.stderr))
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
    msg = (f"study '{study.study_name}': {finished}/{args.n_trials} finished trials "
           f"({result.ran} run by this worker in {time.perf_counter() - t0:.1f} s)")
    if finished < args.n_trials:  # the timeout passed: say what the study still waits for
        running = worker.stuck()
        if running:
            shown = ", ".join(f"{t.number} ({t.user_attrs.get('worker', 'no worker recorded')})" for t in running[:5])
            msg += (f"; still running: trial{'s' if len(running) > 1 else ''} {shown}"
                    f"{' ...' if len(running) > 5 else ''} (a dead worker's trial is retried after the grace period: "
                    "run the command again to finish the study)")
        else:
            msg += "; run the command again to finish the study"
    try:
        best = best_trial(study)
        msg += f"; best reward {best.user_attrs['reward']:.4g} (trial {best.number}, {best.user_attrs['params']:,} params)"
    except Exception:
        pass
    print(msg)
    return 0


def _load(args: argparse.Namespace):
    import optuna

    from archlab.errors import ArchlabError
    from archlab.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage, heartbeat_interval=None, must_exist=True)
    names = optuna.get_all_study_names(storage)
    if args.study not in names:
        import difflib

        close = difflib.get_close_matches(args.study, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ArchlabError(f"no study '{args.study}' in {args.storage or 'sqlite:///runs/archlab.db'}; {hint}"
                           f"studies there: {', '.join(sorted(names)) or '(none)'}")
    return optuna.load_study(study_name=args.study, storage=storage)


def _reading(fn):
    """``fn(args)``, with a storage failing while it is read (a corrupt file, a lost
    server) reported as one line naming the storage and the cause."""
    import functools

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        from optuna.exceptions import StorageInternalError
        from sqlalchemy.exc import SQLAlchemyError

        from archlab.search.storage import storage_failure

        try:
            return fn(args)
        except (StorageInternalError, SQLAlchemyError) as e:
            raise storage_failure(args.storage or "sqlite:///runs/archlab.db", e) from e
        except ValueError as e:  # a journal file with a damaged line
            if "log format" not in str(e) and "Expecting" not in str(e):
                raise
            raise storage_failure(args.storage or "sqlite:///runs/archlab.db", e) from e

    return wrapper


@_reading
def cmd_best(args: argparse.Namespace) -> int:
    """Write the description file of the best (highest-reward) completed trial."""
    from archlab.search.engine import arch_text, best_trial

    trial = best_trial(_load(args))
    text = arch_text(trial)
    if args.output:
        from archlab.errors import ArchlabError

        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as e:
            raise ArchlabError(f"cannot write {args.output!r}: {e.strerror or e}; give a writable path with -o") from None
        print(f"wrote {args.output}: trial {trial.number}, reward {trial.user_attrs['reward']:.4g}, "
              f"{trial.user_attrs['params']:,} params, {trial.user_attrs['macs']:,} MACs", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


@_reading
def cmd_trials(args: argparse.Namespace) -> int:
    """Print the trials (without the architecture text) as a pandas table or CSV."""
    import pandas as pd

    study = _load(args)
    df = study.trials_dataframe(attrs=("number", "state", "values", "user_attrs", "params"))
    df = df.rename(columns=lambda c: c.removeprefix("user_attrs_"))
    df = df[[c for c in df.columns if not (c == "arch" or c.startswith("arch_") or c == "surplus")]]
    first = [c for c in _TABLE_COLUMNS if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False) if len(df) else "(no trials)")
    return 0
