"""``archlab report``: one self-contained HTML page (and its PNGs) for a study.

:func:`write_report` draws the figures of :mod:`archlab.report.figures` --
optimisation history, Pareto front (multi-objective), parameter importances,
reward by chosen value, learning curves with the pruner's stops, reward against
cost -- and writes ``index.html`` with the study's settings, counts, timings,
the Pareto table, the best trials and the best architecture's per-layer table.
A figure the study has no data for is left out with one line saying why.
Imports matplotlib and pandas; never torch.
"""
from __future__ import annotations

import html
import os
import statistics
from dataclasses import dataclass, field

from archlab.errors import ArchlabError


@dataclass
class Report:
    """What :func:`write_report` wrote: the page, the PNGs by name, the figures left out (name -> why)."""

    page: str
    figures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    pareto: list[int] = field(default_factory=list)  # trial numbers on the page's Pareto table


def write_report(study, folder: str) -> Report:
    """Write ``folder/index.html`` and its PNGs for ``study``.

    Raises:
        ArchlabError: the study has no finished trial, or the folder cannot be written.
    """
    from archlab.report import figures as F
    from archlab.report.page import page

    trials = study.get_trials(deepcopy=False)
    if not F.rewarded(trials):
        states = ", ".join(f"{n} {s}" for s, n in _counts(trials).items()) or "no trials"
        raise ArchlabError(f"study '{study.study_name}' has no completed trial yet ({states}); "
                           "run `archlab search` on it first")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ArchlabError(f"cannot write the report to {folder!r}: {e.strerror or e}; give a writable -o DIR") from None
    objectives = list(study.user_attrs.get("objectives") or ["reward"])
    training = study.user_attrs.get("training") or {}
    metric = f"validation {training.get('metric', 'metric')}"
    if training.get("penalty"):
        metric = f"reward so far ({metric} x penalty)"
    drawn = {
        "history": (F.fig_history(study, trials), "no completed trial with a reward"),
        "pareto": (F.fig_pareto(study, objectives), "one objective: no Pareto front"),
        "importances": (F.fig_importances(study, trials), "fewer than 4 completed trials, or no decisions"),
        "choices": (F.fig_choices(trials), "no decision took two values"),
        "curves": (F.fig_curves(trials, metric), "no learning curves (the rewards were not trained for)"),
        "costs": (F.fig_costs(trials), "no completed trial"),
    }
    report = Report(page=os.path.join(folder, "index.html"))
    for name, (fig, why) in drawn.items():
        path = F.save(fig, os.path.join(folder, f"{name}.png"))
        if path is None:
            report.skipped[name] = why
        else:
            report.figures[name] = path
    report.pareto = sorted(t.number for t in study.best_trials) if len(study.directions) > 1 else []
    with open(report.page, "w") as f:
        f.write(page(study, trials, objectives, report))
    return report


def use_file_backend() -> None:
    """Agg for a command that only writes files -- unless this process already draws
    inline (``main([...])`` called from a notebook keeps the notebook's backend)."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    if "inline" not in backend and backend != "agg":
        matplotlib.use("Agg")


def _counts(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def timings(trials) -> dict[str, str]:
    """Total and median evaluation seconds and engine overhead of the study's trials."""
    ev = [t.user_attrs["eval_s"] for t in trials if "eval_s" in t.user_attrs]
    ov = [t.user_attrs["overhead_s"] for t in trials if "overhead_s" in t.user_attrs]
    out = {}
    if ev:
        out["evaluation"] = f"{sum(ev):.1f} s in all, median {statistics.median(ev):.3g} s a trial"
    if ov:
        out["engine overhead"] = f"median {1000 * statistics.median(ov):.1f} ms a trial"
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if starts and ends:
        out["wall"] = f"{(max(ends) - min(starts)).total_seconds():.1f} s from the first start to the last end"
    return out


def esc(x) -> str:
    return html.escape(str(x))


__all__ = ["Report", "write_report", "use_file_backend"]
