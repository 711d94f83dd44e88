"""Checks a search makes before it writes anything, and the kinds of error it tells apart:
objectives, a space's dry run, resuming a study, storage failures vs. a user's code."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna

from archlab.errors import ArchlabError, UserCodeError

OBJECTIVES = {"reward": "maximize", "params": "minimize", "macs": "minimize", "memory": "minimize"}
"""Values a trial can report, with their direction."""

MULTI_OBJECTIVE_SAMPLERS = ("nsga2", "tpe", "random")


def check_objectives(objectives: Sequence[str], sampler: str) -> tuple[str, ...]:
    """The objectives, normalized; an unknown, repeated or unsupported one is refused."""
    objs = tuple(o.strip().lower() for o in objectives if o.strip())
    bad = [o for o in objs if o not in OBJECTIVES]
    if bad or not objs:
        raise ArchlabError(f"unknown objective(s) {', '.join(bad) or '(none)'}; choose from {', '.join(OBJECTIVES)}")
    if len(set(objs)) != len(objs):
        raise ArchlabError(f"objective listed twice in {','.join(objs)}")
    if "reward" not in objs:
        raise ArchlabError("--objectives must include reward (e.g. reward,macs)")
    key = sampler.strip().lower()
    if key in ("nsga2", "nsgaii") and len(objs) < 2:
        raise ArchlabError("the nsga2 sampler needs two or more objectives, e.g. --objectives reward,macs")
    if len(objs) > 1 and key not in MULTI_OBJECTIVE_SAMPLERS + ("nsgaii",):
        raise ArchlabError(f"the {sampler} sampler optimizes one objective; for {','.join(objs)} "
                           f"use {' or '.join(MULTI_OBJECTIVE_SAMPLERS)}")
    return objs


def preflight(space) -> None:
    """Run the space once on a throw-away in-memory trial, so a space that raises
    or returns a non-graph is reported before the study is touched."""
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    try:
        space(probe.ask())
    except ArchlabError as e:
        if "returned a" in str(e):
            raise
    except Exception as e:
        raise UserCodeError(f"search space '{space.name}' raised {type(e).__name__}: {e}") from e


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a failing storage (Optuna's, SQLAlchemy's; a journal file's OSError, or
    its damaged line). The engine turns a user's code's exceptions into ``UserCodeError`` first."""
    import json

    from sqlalchemy.exc import SQLAlchemyError

    return (optuna.exceptions.StorageInternalError, SQLAlchemyError, OSError, json.JSONDecodeError)


def is_storage_error(e: BaseException) -> bool:
    """Whether ``e``, raised inside a user's space or evaluator, is the storage's (a suggest
    or attr write failed, or the trial was failed as stale) rather than the user's code's."""
    import errno

    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(e, (optuna.exceptions.StorageInternalError, SQLAlchemyError,
                          optuna.exceptions.UpdateFinishedTrialError)) \
        or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS))


def check_resume(study: optuna.Study, space_name: str, objectives: Sequence[str],
                 sampler: str | None = None) -> None:
    """Refuse to resume ``study`` for another space, other objectives or (unless
    ``sampler`` is None: ``--switch-sampler``) another sampler than it was made with."""
    made_for = study.user_attrs.get("space")
    if made_for is not None and made_for != space_name:
        raise ArchlabError(f"study '{study.study_name}' was made for search space '{made_for}', not "
                           f"'{space_name}'; pick another --study name")
    want = [OBJECTIVES[o] for o in objectives]
    have = [d.name.lower() for d in study.directions]
    had = study.user_attrs.get("objectives")
    if have != want or (had is not None and list(had) != list(objectives)):
        raise ArchlabError(f"study '{study.study_name}' optimizes {','.join(had or have)}, not "
                           f"{','.join(objectives)}; pick another --study name")
    made_with = study.user_attrs.get("sampler")
    if sampler is not None and made_with is not None and made_with != sampler_key(sampler):
        raise ArchlabError(f"study '{study.study_name}' was made with the {made_with} sampler, not "
                           f"{sampler_key(sampler)}; resume it with --sampler {made_with}, pass --switch-sampler "
                           "to continue it with the other sampler, or pick another --study name")


def sampler_key(name: str) -> str:
    """A sampler's canonical name (``NSGA-II`` -> ``nsga2``, ``rea`` -> ``evolution``)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    return {"nsgaii": "nsga2", "rea": "evolution"}.get(key, key)


def differing_settings(stored: Mapping[str, Any], mine: Mapping[str, Any],
                       defaults: Mapping[str, Any],
                       before_stored: Mapping[str, Any] | None = None) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, this worker's value)`` for each setting that differs, by key.

    A setting missing from either side (added to archlab after the study was made)
    counts as that field's value in ``before_stored`` when it is there (what every
    study made before the setting was stored ran with, which stays true when the
    default later changes), else as its value in ``defaults``.
    """
    before = {**defaults, **(before_stored or {})}
    out = []
    for key in sorted(set(stored) | set(mine)):
        have, want = stored.get(key, before.get(key)), mine.get(key, defaults.get(key))
        if have != want:
            out.append((key, have, want))
    return out
