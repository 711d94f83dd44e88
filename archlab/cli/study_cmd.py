"""Reading a study back: ``archlab best``, ``trials``, ``studies`` and ``report``.

For a multi-objective study (``--objectives reward,macs``) ``--pareto`` gives
its Pareto front, which is exactly Optuna's ``study.best_trials``: ``trials
--pareto`` lists it, ``best --pareto -o DIR`` writes one description file per
member; plain ``best`` writes the highest-reward member and says so.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

STORAGE_HELP = ("Optuna storage: sqlite:///FILE.db, postgresql://USER:PW@HOST/DB, journal:FILE "
                "(default: sqlite:///runs/archlab.db)")
DEFAULT_STORAGE = "sqlite:///runs/archlab.db"
TABLE_COLUMNS = ("number", "state", "reward", "accuracy", "params", "macs", "memory", "rf", "epochs",
                 "stopped_epoch", "eval_s", "overhead_s", "pruned_reason", "fail_reason", "worker")
MAXIMIZED = ("reward", "accuracy", "values_0", "penalty")  # --sort puts their highest first


def add_parser(sub) -> None:
    """Register ``best``, ``trials`` and ``studies`` on an ``argparse`` subparsers object."""
    from archlab.cli.args import positive_int

    s = sub.add_parser("best", help="write the best trial's architecture file (and its trained weights)")
    s.add_argument("--study", required=True)
    s.add_argument("--storage", help=STORAGE_HELP)
    s.add_argument("-o", "--output", help="file to write (default: stdout); with --pareto, a folder")
    s.add_argument("--weights", metavar="FILE", help="also copy the trial's trained state_dict here "
                   "(a study searched with --save-weights)")
    s.add_argument("--pareto", action="store_true",
                   help="multi-objective studies: one file per Pareto-optimal trial in the folder -o")
    s.set_defaults(func=cmd_best)

    s = sub.add_parser("trials", help="print a study's trials as a table")
    s.add_argument("--study", required=True)
    s.add_argument("--storage", help=STORAGE_HELP)
    s.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    s.add_argument("--sort", metavar="COLUMN", help="sort by this column (reward and accuracy: highest first)")
    s.add_argument("--top", type=positive_int, metavar="N", help="only the first N rows (after --sort)")
    s.add_argument("--pareto", action="store_true", help="only the Pareto-optimal trials (multi-objective studies)")
    s.set_defaults(func=cmd_trials)

    s = sub.add_parser("report", help="write an HTML page with a study's figures and tables",
                       description="Write DIR/index.html and its PNGs: optimisation history, Pareto front, "
                       "decision importances, reward by choice, learning curves, reward against cost, settings, "
                       "timings and the best architecture's layers.")
    s.add_argument("--study", required=True)
    s.add_argument("--storage", help=STORAGE_HELP)
    s.add_argument("-o", "--output", default="report", metavar="DIR", help="folder to write (default: report)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("studies", help="list the studies of a storage")
    s.add_argument("--storage", help=STORAGE_HELP)
    s.set_defaults(func=cmd_studies)


def _open(args: argparse.Namespace):
    import optuna

    from archlab.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_storage(args.storage, heartbeat_interval=None, must_exist=True)


def _load(args: argparse.Namespace):
    import optuna

    from archlab.errors import ArchlabError

    storage = _open(args)
    names = optuna.get_all_study_names(storage)
    if args.study not in names:
        import difflib

        close = difflib.get_close_matches(args.study, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ArchlabError(f"no study '{args.study}' in {args.storage or DEFAULT_STORAGE}; {hint}"
                           f"studies there: {', '.join(sorted(names)) or '(none)'}")
    return optuna.load_study(study_name=args.study, storage=storage)


def _reading(fn):
    """``fn(args)``, with a storage failing while it is read (a corrupt file, a lost
    server) reported as one line naming the storage and the cause."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        from optuna.exceptions import StorageInternalError
        from sqlalchemy.exc import SQLAlchemyError

        from archlab.search.storage import storage_failure

        try:
            return fn(args)
        except (StorageInternalError, SQLAlchemyError) as e:
            raise storage_failure(args.storage or DEFAULT_STORAGE, e) from e
        except ValueError as e:  # a journal file with a damaged line
            if "log format" not in str(e) and "Expecting" not in str(e):
                raise
            raise storage_failure(args.storage or DEFAULT_STORAGE, e) from e

    return wrapper


def _pareto(study) -> list:
    """Optuna's ``best_trials`` of a multi-objective study (highest reward first).

    Raises:
        ArchlabError: a single-objective study, or one without a completed trial.
    """
    from archlab.errors import ArchlabError

    if len(study.directions) < 2:
        raise ArchlabError(f"study '{study.study_name}' has one objective, so no Pareto front; --pareto is for "
                           "studies searched with --objectives reward,macs (or params, memory)")
    front = study.best_trials
    if not front:
        raise ArchlabError(f"study '{study.study_name}' has no completed trial yet")
    return sorted(front, key=lambda t: (-t.user_attrs.get("reward", t.values[0]), t.number))


@_reading
def cmd_best(args: argparse.Namespace) -> int:
    """Write the description file of the best (highest-reward) completed trial, or
    with ``--pareto`` one file per Pareto-optimal trial."""
    from archlab.errors import ArchlabError
    from archlab.search.trials import arch_text, best_trial

    study = _load(args)
    if args.pareto:
        if not args.output:
            raise ArchlabError("--pareto writes one file per trial: give the folder with -o DIR")
        if args.weights:
            raise ArchlabError("--weights copies one trial's weights; use it without --pareto")
        return _write_front(study, args.output)
    trial = best_trial(study)
    text = arch_text(trial)
    if args.weights:
        _copy_weights(trial, args.weights)
    if len(study.directions) > 1:
        objectives = ",".join(study.user_attrs.get("objectives", ["reward", "..."]))
        print(f"study '{study.study_name}' optimizes {objectives}: this is its highest-reward trial, one of "
              f"{len(study.best_trials)} Pareto-optimal ones (--pareto -o DIR writes them all)", file=sys.stderr)
    if args.output:
        _write(args.output, text)
        print(f"wrote {args.output}: trial {trial.number}, reward {trial.user_attrs['reward']:.4g}, "
              f"{trial.user_attrs['params']:,} params, {trial.user_attrs['macs']:,} MACs", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _write(path: str, text: str) -> None:
    from archlab.errors import ArchlabError

    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise ArchlabError(f"cannot write {path!r}: {e.strerror or e}; give a writable path with -o") from None


def _write_front(study, folder: str) -> int:
    from archlab.errors import ArchlabError
    from archlab.search.trials import arch_text

    front = _pareto(study)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ArchlabError(f"cannot create the folder {folder!r}: {e.strerror or e}; give a writable -o DIR") from None
    objectives = study.user_attrs.get("objectives") or [f"values_{i}" for i in range(len(study.directions))]
    for t in front:
        path = os.path.join(folder, f"trial{t.number:05d}.yaml")
        _write(path, arch_text(t))
        values = ", ".join(f"{o} {v:.4g}" for o, v in zip(objectives, t.values))
        print(f"wrote {path}: {values}")
    print(f"{len(front)} Pareto-optimal trials of study '{study.study_name}' in {folder}", file=sys.stderr)
    return 0


def _copy_weights(trial, dest: str) -> None:
    """Copy the trained ``state_dict`` the trial kept (``--save-weights``) to ``dest``."""
    import shutil

    from archlab.errors import ArchlabError

    src = trial.user_attrs.get("weights")
    if src is None:
        raise ArchlabError(f"trial {trial.number} kept no weights: run the search with --save-weights DIR "
                           "(it keeps the best --keep trials' weights), or retrain it with `archlab train`")
    try:
        shutil.copyfile(src, dest)
    except FileNotFoundError:
        raise ArchlabError(f"trial {trial.number}'s weights {src!r} are gone (deleted, or saved on another machine); "
                           "retrain it with `archlab best -o best.yaml` and `archlab train best.yaml --save FILE`") from None
    except OSError as e:
        raise ArchlabError(f"cannot copy trial {trial.number}'s weights to {dest!r}: {e.strerror or e}") from None
    print(f"wrote {dest}: the trained state_dict of trial {trial.number}", file=sys.stderr)


@_reading
def cmd_trials(args: argparse.Namespace) -> int:
    """Print the trials (without the architecture text) as a table, CSV, JSON or Markdown."""
    import pandas as pd

    from archlab.errors import ArchlabError

    study = _load(args)
    df = study.trials_dataframe(attrs=("number", "state", "values", "user_attrs", "params"))
    df = df.rename(columns=lambda c: c.removeprefix("user_attrs_"))
    df = df[[c for c in df.columns if not (c == "arch" or c.startswith("arch_") or c == "surplus")]]
    first = [c for c in TABLE_COLUMNS if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    if args.pareto and len(df):
        df = df[df["number"].isin([t.number for t in _pareto(study)])]
    if args.sort:
        if args.sort not in df.columns:
            import difflib

            close = difflib.get_close_matches(args.sort, list(df.columns), n=3, cutoff=0.5)
            raise ArchlabError(f"--sort {args.sort!r}: no such column; {'did you mean ' + ', '.join(close) + '? ' if close else ''}"
                               f"columns: {', '.join(map(str, df.columns))}")
        df = df.sort_values(args.sort, ascending=args.sort not in MAXIMIZED, na_position="last", kind="stable")
    if args.top:
        df = df.head(args.top)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso", indent=1) + "\n")
    elif args.format == "markdown":
        print(df.to_markdown(index=False) if len(df) else "(no trials)")
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False) if len(df) else "(no trials)")
    return 0


@_reading
def cmd_studies(args: argparse.Namespace) -> int:
    """One line per study of the storage: name, space, sampler, objectives, trials, best reward."""
    import optuna

    from archlab.cli.table import render
    from archlab.search.trials import decided

    storage = _open(args)
    rows = []
    for summary in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False),
                          key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        rewards = [t.user_attrs["reward"] for t in trials if t.state.name == "COMPLETE" and "reward" in t.user_attrs]
        attrs = study.user_attrs
        rows.append([summary.study_name, attrs.get("space", "-"), attrs.get("sampler", "-"),
                     ",".join(attrs.get("objectives", ["-"])), f"{sum(decided(t) for t in trials)}/{len(trials)}",
                     f"{max(rewards):.4f}" if rewards else "-"])
    if not rows:
        print(f"(no studies in {args.storage or DEFAULT_STORAGE})")
        return 0
    print(render(["study", "space", "sampler", "objectives", "decided/all trials", "best reward"], rows,
                 align="llllrr"))
    return 0


@_reading
def cmd_report(args: argparse.Namespace) -> int:
    """Write the study's report page; print where, and which figures were left out."""
    from archlab.report import use_file_backend, write_report

    use_file_backend()

    report = write_report(_load(args), args.output)
    print(f"wrote {report.page} with {len(report.figures)} figures"
          + (f" ({', '.join(f'{k}: {v}' for k, v in report.skipped.items())} left out)" if report.skipped else ""))
    return 0
