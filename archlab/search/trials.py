"""Reading a study's trials: which count towards ``n_trials``, the architecture a
trial recorded, and the best trial (used by the engine, ``archlab study``,
``archlab best``, the reports and the benchmarks).
"""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from archlab.errors import ArchlabError

ARCH_CHUNK = 60_000
"""Characters per ``arch`` attr (MySQL's TEXT holds 65,535 bytes; SQLite/PostgreSQL have no limit)."""

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def decided(t: FrozenTrial) -> bool:
    """Whether ``t`` counts towards ``n_trials``: COMPLETE, PRUNED, or FAIL for a reason of
    the candidate's own (user attr ``fail_reason``: diverged, out of memory, timed out)."""
    return t.state in FINISHED or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs)


def live(t: FrozenTrial) -> bool:
    """Whether ``t`` holds a place among the ``n_trials``: decided, running or waiting."""
    return decided(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)


def arch_text(trial: FrozenTrial) -> str:
    """The description-file text a trial recorded (its ``arch`` chunks joined)."""
    attrs = trial.user_attrs
    if "arch" not in attrs:
        raise ArchlabError(f"trial {trial.number} recorded no architecture (state {trial.state.name})")
    parts, k = [attrs["arch"]], 1
    while f"arch_{k}" in attrs:
        parts.append(attrs[f"arch_{k}"])
        k += 1
    return "".join(parts)


def best_reward(study: optuna.Study) -> float | None:
    """The highest reward among the study's completed trials (None before the first)."""
    rewards = [t.user_attrs["reward"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if "reward" in t.user_attrs]
    return max(rewards) if rewards else None


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The completed trial with the highest reward (for a multi-objective study:
    the highest-reward trial of the Pareto front, which is the same trial).

    Raises:
        ArchlabError: the study has no completed trial.
    """
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "reward" in t.user_attrs]
    if not done:
        raise ArchlabError(f"study '{study.study_name}' has no completed trial yet")
    return max(done, key=lambda t: (t.user_attrs["reward"], -t.number))


__all__ = ["ARCH_CHUNK", "FINISHED", "arch_text", "best_reward", "best_trial", "decided", "live"]
