"""The figures of a study report, drawn with matplotlib (Optuna's
``optuna.visualization.matplotlib`` where it already draws what is needed).

Each ``fig_*`` takes the study (and its finished trials) and returns a
``matplotlib.figure.Figure``, or ``None`` when the study has nothing to draw
(no learning curves, a single objective for the Pareto front, ...). None of them
shows a window: the report saves them as PNGs, a notebook displays them (the
backend is the caller's; ``archlab report`` selects Agg).
"""
from __future__ import annotations

import math
import statistics
import warnings
from typing import Optional

import matplotlib.pyplot as plt
from optuna.trial import FrozenTrial, TrialState

COSTS = (("params", "parameters", True), ("macs", "MACs (batch 1)", True),
         ("memory", "peak activation bytes (batch 1)", True), ("rf", "receptive field (px, side)", False))
STYLE = "ggplot"  # Optuna's plots use it; every figure of a report does, for one look


class _quiet:
    """Around an Optuna plot: no "experimental" warning (it says nothing to a report
    reader), and the ``plt.style.use("ggplot")`` it makes is undone afterwards."""

    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._s = plt.style.context(STYLE)
        self._s.__enter__()
        return self

    def __exit__(self, *exc):
        self._s.__exit__(*exc)
        self._w.__exit__(*exc)
        return False


def _own_title(ax, title: str) -> None:
    """Replace whatever titles Optuna set (left, centre or right) with ``title``."""
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(title)


def rewarded(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The COMPLETE trials that recorded a reward."""
    return [t for t in trials if t.state == TrialState.COMPLETE and "reward" in t.user_attrs]


def fig_history(study, trials: list[FrozenTrial]):
    """Reward of every completed trial by number, and the best so far."""
    import optuna.visualization.matplotlib as ovm

    done = rewarded(trials)
    if not done:
        return None
    target = (lambda t: t.user_attrs["reward"]) if len(study.directions) > 1 else None
    with _quiet():
        ax = ovm.plot_optimization_history(study, target=target, target_name="reward")
        _own_title(ax, "reward of each trial and the best so far")
        if target is not None:  # Optuna draws no best-so-far line for a target: draw it
            xs, best, ys = [], -math.inf, []
            for t in sorted(done, key=lambda t: t.number):
                best = max(best, t.user_attrs["reward"])
                xs.append(t.number)
                ys.append(best)
            ax.step(xs, ys, where="post", color="tab:red", alpha=0.7, label="best so far")
            ax.legend(loc="lower right")
    return _sized(ax.figure)


def fig_pareto(study, objectives: list[str]):
    """The Pareto front of a two- or three-objective study, its trials labelled."""
    import optuna.visualization.matplotlib as ovm

    if len(study.directions) < 2 or not study.best_trials:
        return None
    with _quiet():
        ax = ovm.plot_pareto_front(study, target_names=objectives)
    if len(objectives) == 2:
        for t in study.best_trials:
            ax.annotate(f"#{t.number}", (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        if objectives[1] in ("params", "macs", "memory"):
            ax.set_yscale("log")
    _own_title(ax, f"Pareto front: {' vs '.join(objectives)} ({len(study.best_trials)} non-dominated, labelled)")
    return _sized(ax.figure)


def fig_importances(study, trials: list[FrozenTrial]):
    """Optuna's parameter importances (fANOVA) of the reward."""
    import optuna.visualization.matplotlib as ovm

    done = rewarded(trials)
    if len(done) < 4 or not any(t.params for t in done):
        return None
    target = (lambda t: t.user_attrs["reward"]) if len(study.directions) > 1 else None
    try:
        with _quiet():
            ax = ovm.plot_param_importances(study, target=target, target_name="reward")
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few distinct values to fit
        return None
    _own_title(ax, "which decisions the reward depends on (fANOVA importance)")
    ax.set_xlabel("importance (share of the reward's variance)")
    ax.set_ylabel("decision")
    return _sized(ax.figure)


def fig_choices(trials: list[FrozenTrial], max_params: int = 12):
    """Reward by chosen value, one box plot per decision: the ``max_params`` decisions whose
    choices' median rewards differ most."""
    done = rewarded(trials)
    names: dict[str, set] = {}
    for t in done:
        for k, v in t.params.items():
            names.setdefault(k, set()).add(repr(v))
    names = {k: v for k, v in names.items() if len(v) > 1}
    if not names:
        return None
    keys = sorted(names, key=lambda k: (-_spread(done, k), k))[:max_params]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        groups: dict[str, list[float]] = {}
        for t in done:
            if key in t.params:
                groups.setdefault(str(t.params[key]), []).append(t.user_attrs["reward"])
        labels = sorted(groups, key=_natural)
        ax.boxplot([groups[k] for k in labels], showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30 if len(labels) > 4 else 0, fontsize=8)
        ax.set_title(f"{key} ({sum(len(v) for v in groups.values())} trials)", fontsize=9)
        ax.set_ylabel("reward", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("reward by chosen value")
    fig.tight_layout()
    return fig


def fig_curves(trials: list[FrozenTrial], label: str):
    """Each trial's intermediate values by epoch (``label`` names them): completed trials in
    blue, pruned ones in red with an x where the pruner stopped them, failed or unfinished
    ones in grey."""
    curved = [t for t in trials if t.intermediate_values]
    if not curved:
        return None
    from matplotlib.ticker import MaxNLocator

    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    colours = {TrialState.COMPLETE: ("tab:blue", 0.6), TrialState.PRUNED: ("tab:red", 0.35)}
    for t in curved:
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        colour, alpha = colours.get(t.state, ("tab:gray", 0.5))
        ax.plot(steps, values, color=colour, alpha=alpha, lw=1)
        if t.state == TrialState.PRUNED:
            ax.plot(steps[-1], values[-1], "x", color="tab:red", ms=6)
    count = {s: sum(t.state == s for t in curved) for s in colours}
    ax.plot([], [], color="tab:blue", label=f"trained to the end ({count[TrialState.COMPLETE]})")
    ax.plot([], [], "x-", color="tab:red", label=f"stopped by the pruner ({count[TrialState.PRUNED]})")
    other = len(curved) - sum(count.values())
    if other:
        ax.plot([], [], color="tab:gray", label=f"failed or unfinished ({other})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title("learning curves (intermediate values)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def fig_costs(trials: list[FrozenTrial]):
    """Reward against params, MACs, peak memory and receptive field (archlab's per-trial analysis)."""
    done = rewarded(trials)
    if not done:
        return None
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    best = max(done, key=lambda t: t.user_attrs["reward"])
    for ax, (key, label, log) in zip(axes, COSTS):
        pts = [(_number(t.user_attrs.get(key)), t.user_attrs["reward"], t.number == best.number) for t in done]
        shown = [(x, y, b) for x, y, b in pts if x]
        if shown:
            ax.scatter([x for x, _, _ in shown], [y for _, y, _ in shown], s=14, alpha=0.7, color="tab:blue")
            ax.scatter([x for x, _, b in shown if b], [y for _, y, b in shown if b], s=70, facecolors="none",
                       edgecolors="tab:red", label=f"best (#{best.number})")
            ax.legend(fontsize=8, loc="lower right")
            if log:
                ax.set_xscale("log")
        left = len(pts) - len(shown)
        ax.set_xlabel(label + (f"; {left} global, not shown" if left and key == "rf" else ""))
    axes[0].set_ylabel("reward")
    fig.suptitle("reward against cost (archlab's analysis of every trial)")
    fig.tight_layout()
    return fig


def _spread(done: list[FrozenTrial], key: str) -> float:
    """How far apart the median rewards of ``key``'s choices lie."""
    groups: dict[str, list[float]] = {}
    for t in done:
        if key in t.params:
            groups.setdefault(repr(t.params[key]), []).append(t.user_attrs["reward"])
    medians = [statistics.median(v) for v in groups.values()]
    return max(medians) - min(medians) if len(medians) > 1 else 0.0


def _number(v) -> Optional[float]:
    """A cost as a number: counts as they are, a receptive field ``"HxW"`` as its larger
    side (``"84"`` or ``"84x96"``); ``"global"``, 0 and missing as None (not placeable on the axis)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) or None
    if isinstance(v, str) and v != "global":  # "84" or "84x96" (constraints._rf_text)
        try:
            return float(max(int(p) for p in v.split("x")))
        except ValueError:
            return None
    return None


def _natural(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _sized(fig, size: tuple[float, float] = (8, 4.5)):
    fig.set_size_inches(*size)
    fig.tight_layout()
    return fig


def save(fig, path: str) -> Optional[str]:
    """Write ``fig`` as a PNG (110 dpi) and close it; ``None`` for no figure."""
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
