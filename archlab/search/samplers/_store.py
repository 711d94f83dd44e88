"""Where the REINFORCE controller keeps its state in an Optuna study's storage.

Layout (every key starts with ``archlab:reinforce:``):

* trial system attr ``seed``: a worker's proposed controller seed, written into
  its first trial when no earlier trial carries one. The proposal of the
  lowest-numbered trial wins, so every worker converges on one seed without a
  compare-and-swap (storage has none).
* trial system attr ``settings``: written just before ``seed`` on the same trial,
  the proposing worker's ``ReinforceConfig.state_settings()``. The winning
  trial's settings are the study's: a worker with other settings would replay the
  same log to another controller, so it is refused (studies from before the
  settings were stored have none, and are taken as they are).
* trial system attr ``record``: the trial's update record, written by
  ``after_trial`` just before Optuna stores the trial's final state:
  ``{"v": 1, "s": state, "r": reward, "d": [[key, n_choices, index], ...]}``.
  Only the worker that runs a trial writes to it, so records never conflict.
* study system attrs ``snapshot:{slot}`` (meta) and ``snapshot:{slot}:{i}``
  (base64 chunks of ``Controller.to_bytes``) for two alternating slots. The meta
  is written last and carries the SHA-256 of the bytes, so a torn or concurrent
  write is detected and that slot ignored.

Values longer than ``chunk_chars`` are split over ``key:{i}`` attrs with the
meta ``{"chunks": n, ...}`` under ``key``, as ``CmaEsSampler`` does for its
pickled optimizer.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any, Callable, Mapping

from optuna.trial import FrozenTrial, TrialState

from archlab.search.checks import differing_settings
from archlab.search.samplers._config import ReinforceConfig
from archlab.search.samplers._controller import Controller, Decision

PREFIX = "archlab:reinforce:"
SEED_KEY = PREFIX + "seed"
SETTINGS_KEY = PREFIX + "settings"
RECORD_KEY = PREFIX + "record"
SNAPSHOT_KEY = PREFIX + "snapshot"

SetAttr = Callable[[str, Any], None]

_log = logging.getLogger("archlab.search.samplers.reinforce")


def put_chunked(set_attr: SetAttr, key: str, text: str, meta: dict, chunk_chars: int) -> None:
    """Write ``text`` as ``key:{i}`` chunks, then ``meta`` plus the chunk count under ``key``."""
    n = max(1, -(-len(text) // chunk_chars))
    for i in range(n):
        set_attr(f"{key}:{i}", text[i * chunk_chars:(i + 1) * chunk_chars])
    set_attr(key, {**meta, "chunks": n})


def get_chunked(attrs: Mapping[str, Any], key: str) -> tuple[dict, str] | None:
    """Read what :func:`put_chunked` wrote: ``(meta, text)``, or ``None`` if incomplete."""
    meta = attrs.get(key)
    if not isinstance(meta, dict) or not isinstance(meta.get("chunks"), int):
        return None
    parts = [attrs.get(f"{key}:{i}") for i in range(meta["chunks"])]
    if not all(isinstance(p, str) for p in parts):
        return None
    return meta, "".join(parts)


# ---------------------------------------------------------------- records
class Record:
    """One controller update: the trajectory a trial sampled and its reward."""

    __slots__ = ("state", "reward", "decisions")

    def __init__(self, state: TrialState, reward: float, decisions: list[Decision]) -> None:
        self.state, self.reward, self.decisions = state, float(reward), decisions

    def to_json(self) -> dict:
        return {"v": 1, "s": self.state.name, "r": self.reward,
                "d": [[k, n, i] for k, n, i in self.decisions]}

    @classmethod
    def from_json(cls, obj: Any) -> Record | None:
        try:
            decisions = [(str(k), int(n), int(i)) for k, n, i in obj["d"]]
            return cls(TrialState[obj["s"]], float(obj["r"]), decisions)
        except (KeyError, TypeError, ValueError):
            return None


def write_record(set_attr: SetAttr, record: Record, chunk_chars: int) -> None:
    """Store ``record`` in a running trial's system attrs (chunked if it is long)."""
    obj = record.to_json()
    text = json.dumps(obj, separators=(",", ":"))
    if len(text) <= chunk_chars:
        set_attr(RECORD_KEY, obj)
    else:
        encoded = base64.b64encode(text.encode()).decode()
        put_chunked(set_attr, RECORD_KEY, encoded, {"v": 1}, chunk_chars)


def read_record(trial: FrozenTrial) -> Record | None:
    """The update record of a *finished* trial, or ``None``.

    A record counts only if the state it was written for is the state the trial
    ended in: a worker killed between writing a COMPLETE record and storing the
    state leaves a trial that heartbeats later mark FAIL, and that record is void.
    """
    value = trial.system_attrs.get(RECORD_KEY)
    if isinstance(value, dict) and "chunks" in value:
        got = get_chunked(trial.system_attrs, RECORD_KEY)
        if got is None:
            return None
        try:
            value = json.loads(base64.b64decode(got[1]))
        except ValueError:
            return None
    record = Record.from_json(value) if value is not None else None
    if record is None or record.state != trial.state:
        return None
    return record


def first_origin(trials: list[FrozenTrial]) -> tuple[int, dict | None] | None:
    """``(seed, settings)`` proposed by the lowest-numbered trial that carries a seed
    (trials sorted); ``settings`` is None for a study from before they were stored."""
    for trial in trials:
        seed = trial.system_attrs.get(SEED_KEY)
        if isinstance(seed, int):
            settings = trial.system_attrs.get(SETTINGS_KEY)
            return seed, settings if isinstance(settings, dict) else None
    return None


def settings_mismatch(stored: dict, mine: dict) -> str | None:
    """``"lr=0.01 (this worker: 0.005), ..."`` for each setting that differs, or None.

    A setting missing from ``stored`` (added to archlab after the study was made)
    is compared with that field's default (:func:`~archlab.search.checks.differing_settings`).
    """
    diffs = differing_settings(stored, mine, ReinforceConfig().state_settings())
    return ", ".join(f"{k}={have!r} (this worker: {want!r})" for k, have, want in diffs) or None


def settings_refusal(study_name: str, diff: str) -> str:
    """The one-line refusal of a worker whose settings differ (``diff`` from :func:`settings_mismatch`)."""
    return (f"study '{study_name}': its reinforce controller was built with {diff}; the same update "
            f"log would give this worker another controller: pass the study's values (--sampler-option KEY=VALUE) or "
            f"pick another --study name")


# -------------------------------------------------------------- snapshots
def write_snapshot(set_attr: SetAttr, slot: int, data: bytes, meta: dict, chunk_chars: int) -> None:
    """Store the controller bytes ``data`` in snapshot slot ``slot`` with ``meta``."""
    encoded = base64.b64encode(data).decode()
    meta = {**meta, "sha256": hashlib.sha256(data).hexdigest()}
    put_chunked(set_attr, f"{SNAPSHOT_KEY}:{slot}", encoded, meta, chunk_chars)


def read_snapshots(attrs: Mapping[str, Any], seed: int) -> list[tuple[dict, bytes]]:
    """Intact snapshots of controller ``seed`` as ``(meta, bytes)``, newest first."""
    found = []
    for slot in (0, 1):
        got = get_chunked(attrs, f"{SNAPSHOT_KEY}:{slot}")
        if got is None or got[0].get("seed") != seed:
            continue
        meta, encoded = got
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if hashlib.sha256(data).hexdigest() == meta.get("sha256"):
            found.append((meta, data))
    return sorted(found, key=lambda md: md[0].get("count", -1), reverse=True)


def load_controller(attrs: Mapping[str, Any], seed: int, config: ReinforceConfig) -> Controller | None:
    """The controller of the newest readable snapshot of ``seed``, or None (replay the log).

    A snapshot of another format or hidden size is skipped with a warning.
    """
    for _, data in read_snapshots(attrs, seed):
        try:
            return Controller.from_bytes(data, config)
        except (ValueError, RuntimeError, KeyError) as exc:
            _log.warning("ignoring an unreadable controller snapshot: %s", exc)
    return None


def snapshot(storage: Any, study_id: int, ctl: Controller, slot: int, chunk_chars: int) -> None:
    """Write ``ctl`` to snapshot ``slot`` unless that slot already holds its state or a newer one
    (another worker got there first)."""
    meta = snapshot_meta(storage.get_study_system_attrs(study_id), slot)
    if meta and meta.get("seed") == ctl.seed and meta.get("count", -1) >= ctl.count:
        return
    write_snapshot(lambda k, v: storage.set_study_system_attr(study_id, k, v), slot, ctl.to_bytes(),
                   {"seed": ctl.seed, "count": ctl.count, "upto": ctl.upto}, chunk_chars)


def snapshot_meta(attrs: Mapping[str, Any], slot: int) -> dict | None:
    """The meta of snapshot slot ``slot`` (not checked against its chunks)."""
    meta = attrs.get(f"{SNAPSHOT_KEY}:{slot}")
    return meta if isinstance(meta, dict) else None
