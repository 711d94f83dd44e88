"""Optuna's RDB tables as archlab's search writes them directly (SQLAlchemy Core):
the statements of :class:`~archlab.search.worker_storage.WorkerStorage` and of the
heartbeat's stale-trial check, how Optuna stores a trial's datetimes, and whether
the installed Optuna still has the internals these rely on (tested with Optuna
4.3 to 5.0, ``bash .ci/optuna-versions``).
"""
from __future__ import annotations

from datetime import datetime

import optuna


class Statements:
    """The SQL of a :class:`~archlab.search.worker_storage.WorkerStorage`: SQLAlchemy Core over Optuna's tables, built
    once (executing a built statement skips most of SQLAlchemy's per-call work)."""

    def __init__(self, models, *, lock_study: bool) -> None:
        from sqlalchemy import bindparam as p, delete, func, or_, select, update

        tr, st, tp = models.TrialModel.__table__, models.StudyModel.__table__, models.TrialParamModel.__table__
        ua, sa = models.TrialUserAttributeModel.__table__, models.TrialSystemAttributeModel.__table__
        vt, hb = models.TrialValueModel.__table__, models.TrialHeartbeatModel.__table__
        self.find_study = select(st.c.study_id).where(st.c.study_id == p("sid"))
        if lock_study:
            self.find_study = self.find_study.with_for_update()
        self.insert_trial = tr.insert().values(study_id=p("sid"), number=None, state=p("state"),
                                               datetime_start=p("start"))
        self.count_before = select(func.count(tr.c.trial_id)).where(tr.c.study_id == p("sid"), tr.c.trial_id < p("tid"))
        self.set_number = update(tr).where(tr.c.trial_id == p("tid")).values(number=p("number"))
        self.insert_heartbeat = hb.insert().values(trial_id=p("tid"), heartbeat=func.current_timestamp())
        self.delete_heartbeat = delete(hb).where(hb.c.trial_id == p("tid"))
        self.start_waiting = (update(tr).where((tr.c.trial_id == p("tid")) & (tr.c.state == p("waiting")))
                              .values(state=p("new_state"), datetime_start=p("start")))
        running = (tr.c.trial_id == p("tid")) & (tr.c.state == p("running"))
        self.touch = update(tr).where(running).values(state=p("new_state"))
        self.finish = update(tr).where(running).values(state=p("new_state"), datetime_complete=p("complete"))
        self.insert_param = tp.insert()
        self.insert_user_attr, self.insert_system_attr = ua.insert(), sa.insert()
        self.delete_user_attrs = delete(ua).where(ua.c.trial_id == p("tid"), ua.c.key.in_(p("keys", expanding=True)))
        self.delete_system_attrs = delete(sa).where(sa.c.trial_id == p("tid"), sa.c.key.in_(p("keys", expanding=True)))
        self.insert_value = vt.insert()
        self.delete_values = delete(vt).where(vt.c.trial_id == p("tid"))
        ids = select(tr.c.trial_id)
        self.ids_after = ids.where(tr.c.study_id == p("sid"), tr.c.trial_id > p("last"))
        self.ids_after_or_in = ids.where(tr.c.study_id == p("sid"), or_(tr.c.trial_id > p("last"),
                                                                        tr.c.trial_id.in_(p("ids", expanding=True))))
        self.ids_from = ids.where(tr.c.study_id == p("sid"), or_(tr.c.trial_id > p("last"), tr.c.trial_id >= p("low")))
        self.param_distribution = (select(tp.c.distribution_json).join(tr, tp.c.trial_id == tr.c.trial_id)
                                   .where(tr.c.study_id == p("sid"), tp.c.param_name == p("name")).limit(1))
        self.study_of_trial = select(tr.c.study_id).where(tr.c.trial_id == p("tid"))


def _key(models, name: str) -> str:
    """The ORM attribute of ``TrialModel`` mapped to column ``name`` (Optuna 5 keeps the
    trial datetimes in ``_<name>_utc`` behind a local-time property; Optuna 4 in ``name``)."""
    column = models.TrialModel.__table__.c[name]
    return models.TrialModel.__mapper__.get_property_by_column(column).key


def stored(models, name: str, value: datetime) -> datetime:
    """What Optuna stores in column ``name`` of ``trials`` when a trial's ``name`` is set to ``value``."""
    t = models.TrialModel()
    setattr(t, name, value)
    return getattr(t, _key(models, name))


def loaded(models, name: str, stored: datetime) -> datetime:
    """What Optuna gives back for a trial's ``name`` when its column holds ``stored``."""
    t = models.TrialModel()
    setattr(t, _key(models, name), stored)
    return getattr(t, name)


def unsupported_optuna() -> str:
    """What of Optuna's internals :class:`~archlab.search.worker_storage.WorkerStorage` relies on is missing or
    changed in the installed Optuna ("" when nothing is)."""
    import inspect

    try:
        from optuna.storages._rdb import models
    except ImportError:
        return "no optuna.storages._rdb.models"
    rdb = optuna.storages.RDBStorage
    needs = {"models": [m for m in ("StudyModel", "TrialModel", "TrialParamModel", "TrialValueModel",
                                    "TrialUserAttributeModel", "TrialSystemAttributeModel",
                                    "TrialHeartbeatModel") if not hasattr(models, m)],
             "RDBStorage": [m for m in ("_get_trials", "_get_stale_trial_ids") if not hasattr(rdb, m)],
             "optuna.exceptions": [] if hasattr(optuna.exceptions, "UpdateFinishedTrialError")
             else ["UpdateFinishedTrialError"]}
    gone = "; ".join(f"{where} lacks {', '.join(names)}" for where, names in needs.items() if names)
    if gone:
        return gone
    params = list(inspect.signature(rdb._get_trials).parameters)
    if params != ["self", "study_id", "states", "included_trial_ids", "trial_id_greater_than"]:
        return f"RDBStorage._get_trials takes {params[1:]}"
    return ""


__all__ = ["Statements", "loaded", "stored", "unsupported_optuna"]
