"""``archlab search``: run a study (see :mod:`archlab.search.engine`); reading one
back (``best``, ``trials``, ``studies``) is :mod:`archlab.cli.study_cmd`."""
from __future__ import annotations

import argparse
import sys
import time

from archlab.cli.args import option_value, positive_float, positive_int, seed
from archlab.cli.study_cmd import STORAGE_HELP as _STORAGE_HELP


def _count(text: str) -> int:
    """``1000000``, ``1e6``, ``5M``, ``600k``, ``2G`` -> int (for --max-*; a finite number)."""
    from archlab.search.constraints import parse_count

    try:
        return int(parse_count(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a finite count: {text!r} (e.g. 500000, 5e5, 500k, 2M)") from None


def add_parser(sub) -> None:
    """Register ``search``, ``best`` and ``trials`` on an ``argparse`` subparsers object."""
    s = sub.add_parser("search", allow_abbrev=False,  # --gpus restarts it with exact option names
                       help="search a space with an Optuna sampler (resumable, many workers)",
                       description="Run trials until the study holds --n-trials finished (complete or pruned) "
                       "trials; start the same command on several processes or machines to share the study.")
    s.add_argument("--space", required=True, help="registered space (e.g. nasbench201) or path/to/space.py")
    s.add_argument("--sampler", default="tpe", help="reinforce | tpe | random | nsga2 | evolution (default tpe)")
    s.add_argument("--sampler-option", type=option_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor option of the sampler, repeatable (e.g. lr=0.01 for reinforce, "
                        "n_startup_trials=5 for tpe); an unknown KEY or a VALUE of the wrong type is refused")
    s.add_argument("--switch-sampler", action="store_true",
                   help="resume a study made with another sampler with this one (refused otherwise)")
    s.add_argument("--n-trials", type=positive_int, default=100, help="finished trials the study holds at the end (default 100)")
    s.add_argument("--timeout", type=positive_float, help="seconds after which this worker starts no new trial")
    s.add_argument("--storage", help=_STORAGE_HELP)
    s.add_argument("--study", help="study name; an existing study is resumed (default SPACE-SAMPLER)")
    s.add_argument("--seed", type=seed, help="sampler seed (give each worker its own)")
    s.add_argument("--max-params", type=_count, help="prune candidates with more parameters")
    s.add_argument("--max-macs", type=_count, help="prune candidates with more MACs (batch 1, torchvision convention)")
    s.add_argument("--max-memory", type=_count, metavar="BYTES", help="prune candidates with more peak activation bytes (batch 1, fp32)")
    s.add_argument("--objectives", default="reward", help="comma list of reward,params,macs,memory (two or more: multi-objective)")
    s.add_argument("--heartbeat-interval", type=positive_int, default=10, help="seconds between heartbeats of a running trial (default 10)")
    s.add_argument("--grace-period", type=positive_int, help="seconds without heartbeat before a running trial is failed and retried (default 2x interval)")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    from archlab.cli.search_train import add_training_args

    add_training_args(s)
    s.set_defaults(func=cmd_search)

    from archlab.cli import study_cmd

    study_cmd.add_parser(sub)


def _progress_printer(stream):
    tty = stream.isatty()

    def show(p) -> None:
        best = "-" if p.best is None else f"{p.best:.4g}"
        rate = f"{p.rate:.1f} trials/s" if p.rate >= 1 else f"{1 / p.rate:.1f} s/trial" if p.rate > 0 else ""
        line = (f"trial {p.finished}/{p.total}  best reward {best}  {rate}  "
                f"(#{p.last.number} {p.last.state.name.lower()})")
        stream.write(("\r" + line.ljust(78)) if tty else line + "\n")
        stream.flush()

    return show


def _config(args: argparse.Namespace, budget, device: str | None = None):
    """The :class:`~archlab.search.engine.SearchConfig` of the options (``device`` overrides --device)."""
    from archlab.errors import ArchlabError
    from archlab.search.constraints import Constraints
    from archlab.search.engine import SearchConfig

    if budget is not None and device is not None:
        budget.device = device
    options: dict = {}
    for key, value in args.sampler_option:
        if key in options:
            raise ArchlabError(f"--sampler-option {key} is given twice ({options[key]!r} and {value!r}); give it once")
        options[key] = value
    return SearchConfig(sampler_options=options,
        space=args.space, sampler=args.sampler, n_trials=args.n_trials, timeout=args.timeout,
        storage=args.storage, study=args.study, seed=args.seed,
        constraints=Constraints(args.max_params, args.max_macs, args.max_memory),
        objectives=tuple(args.objectives.split(",")), heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period, switch_sampler=args.switch_sampler, training=budget)


def cmd_search(args: argparse.Namespace) -> int:
    """Run this worker's share of the study; print a summary line at the end."""
    import optuna

    from archlab.cli.search_train import TrainProgress, check_gpus, run_on_gpus, training_budget
    from archlab.search.engine import Worker, best_trial, decided

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.gpus is not None:
        gpus = check_gpus(args)
        # open (create) the study here first, so the workers join a study that holds its settings
        study = Worker.open(_config(args, training_budget(args), device="cpu")).study
        return run_on_gpus(args, args.argv, study, gpus)
    config = _config(args, training_budget(args))
    worker = Worker.open(config)
    study = worker.study
    trained = hasattr(worker.evaluator, "on_epoch")
    t0 = time.perf_counter()
    bar = None
    if args.quiet:
        show = None
    elif trained and sys.stderr.isatty():
        bar = TrainProgress(args.n_trials, sys.stderr)
        worker.evaluator.on_epoch, show = bar.epoch, bar.trial
    else:
        show = _progress_printer(sys.stderr)
    try:
        result = worker.run(show)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet and sys.stderr.isatty() and not trained:
        sys.stderr.write("\n")
    finished = sum(decided(t) for t in study.get_trials(deepcopy=False))
    failed = [t for t in study.get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.FAIL and "fail_reason" in t.user_attrs]
    msg = (f"study '{study.study_name}': {finished}/{args.n_trials} finished trials "
           f"({result.ran} run by this worker in {time.perf_counter() - t0:.1f} s)")
    if failed:
        msg += (f"; {len(failed)} failed (e.g. trial {failed[0].number}: "
                f"{failed[0].user_attrs['fail_reason'][:120]})")
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
        best = None
    print(msg)
    if best is None and failed and finished >= args.n_trials:
        print("archlab: every trial failed, so the study has no reward: the cause is likely the settings, not the "
              f"candidates ({failed[0].user_attrs['fail_reason'][:160]})", file=sys.stderr)
        return 1
    return 0
