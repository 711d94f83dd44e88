"""Where a search keeps its study: storage URLs, heartbeats and one-line errors.

Spellings accepted by :func:`open_storage` (and ``--storage``):

* ``None``: the default, the SQLite file ``runs/archlab.db`` (the folder is made);
* any SQLAlchemy URL Optuna's :class:`~optuna.storages.RDBStorage` takes:
  ``sqlite:///path.db``, ``postgresql://user:pw@host/db`` (driver:
  ``psycopg2-binary``), ``mysql+pymysql://...``;
* ``journal:PATH``: :class:`~optuna.storages.JournalStorage` over the append-only
  file ``PATH`` (safe for several processes on one machine, no database);
* ``:memory:``: an in-process study (tests; nothing persists).

A search worker wraps an RDB storage in
:class:`~archlab.search.worker_storage.WorkerStorage` (:func:`~archlab.search.worker_storage.worker_storage`),
which batches the writes of the trials it runs into three transactions a trial
and caches the study's trials; journal and in-memory storages are used as they are.

Heartbeats exist only for RDB storages (Optuna's ``BaseHeartbeat``): every
running trial's worker stamps the trial each ``heartbeat_interval`` seconds; a
trial whose stamp is older than ``grace_period`` is marked FAIL by the next
worker that looks, and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
(``RetryFailedTrialCallback`` before Optuna 4.9) enqueues a WAITING copy of it
(same parameters) that the next ``ask`` runs.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from archlab.errors import ArchlabError

DEFAULT_STORAGE = "sqlite:///runs/archlab.db"
"""The storage used when none is given (relative to the working directory)."""

_DRIVERS = {"postgresql": "psycopg2-binary", "mysql": "PyMySQL (mysql+pymysql://...)"}


def default_storage_url() -> str:
    """:data:`DEFAULT_STORAGE`, after creating its ``runs/`` folder."""
    Path("runs").mkdir(exist_ok=True)
    return DEFAULT_STORAGE


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else path


def _redact(url: str) -> str:
    """``url`` with a password replaced by ``***`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, at, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in cred else ''}@{host}"


def _stale_trial_retry(max_retry: int | None) -> dict:
    """``RDBStorage``'s keyword argument for the callback that re-enqueues a stale trial.

    Optuna 4.9 renamed ``RetryFailedTrialCallback`` / ``failed_trial_callback`` to
    ``RetryHeartbeatStaleTrialCallback`` / ``heartbeat_stale_trial_callback`` (the
    old names warn from 4.9 and go in 6.0); both behave the same.
    """
    new = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if new is not None:
        return {"heartbeat_stale_trial_callback": new(max_retry=max_retry)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}


def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    must_exist: bool = False,
) -> BaseStorage:
    """Open (or create) the storage ``url`` names.

    Args:
        url: A spelling listed in the module docstring, or ``None`` for the default.
        heartbeat_interval: Seconds between a running trial's heartbeats (RDB
            storages only; ``None`` turns heartbeats off).
        grace_period: Seconds without a heartbeat after which a running trial is
            stale (default: Optuna's, twice ``heartbeat_interval``).
        max_retry: How many times a stale trial is re-enqueued (``None``: forever).
        must_exist: Refuse a SQLite or journal file that does not exist yet
            (read-only commands: ``best``, ``trials``), instead of creating it.

    Returns:
        The storage; for RDB URLs a connection has been made (the schema exists).

    Raises:
        ArchlabError: unreachable server, missing driver, bad URL, missing file
            with ``must_exist``: one line, naming the URL (password hidden).
    """
    if url is None:
        url = DEFAULT_STORAGE if must_exist else default_storage_url()
    if url == ":memory:":
        return optuna.storages.InMemoryStorage()
    shown = _redact(url)
    if url.startswith("journal:"):
        path = url[len("journal:"):].removeprefix("//")
        if not path:
            raise ArchlabError("journal storage needs a file: journal:PATH, e.g. journal:runs/study.log")
        if must_exist and not os.path.isfile(path):
            raise ArchlabError(f"journal file {path!r} does not exist (storage {shown})")
        parent = Path(path).parent
        if not parent.is_dir():
            raise ArchlabError(f"cannot open storage {shown}: folder {str(parent)!r} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as e:
            raise ArchlabError(f"cannot open storage {shown}: {e}") from None
    if "://" not in url:
        raise ArchlabError(
            f"storage {url!r} is not a URL; use sqlite:///FILE.db, postgresql://USER:PW@HOST/DB or journal:FILE")
    sqlite = _sqlite_path(url)
    if sqlite is not None:
        if must_exist and not os.path.isfile(sqlite):
            raise ArchlabError(f"SQLite file {sqlite!r} does not exist (storage {shown}); run `archlab search` first")
        if not Path(sqlite).parent.is_dir():
            raise ArchlabError(f"cannot open storage {shown}: folder {str(Path(sqlite).parent)!r} does not exist")
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        # Several processes share one file: wait for the write lock instead of failing after 5 s.
        engine_kwargs["connect_args"] = {"timeout": 120}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    if grace_period is not None and heartbeat_interval is None:
        raise ArchlabError("a grace period needs heartbeats: give a heartbeat interval too")
    if heartbeat_interval is not None and grace_period is not None and grace_period <= heartbeat_interval:
        raise ArchlabError(
            f"the grace period ({grace_period} s) must be longer than the heartbeat interval ({heartbeat_interval} s)")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = _stale_trial_retry(max_retry) if heartbeat_interval is not None else {}
            for attempt in range(5):
                try:
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period, **retry)
                    break
                except Exception as e:
                    # Workers started together on a new database race to create its tables;
                    # the losers see "already exists" (or a duplicate key) and simply reconnect.
                    text = str(e).lower()
                    if attempt == 4 or not any(m in text for m in ("already exists", "duplicate key", "unique constraint")):
                        raise
                    time.sleep(0.2 * (attempt + 1))
        if sqlite is not None:
            _fast_sqlite(storage)
        return storage
    except ImportError as e:
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        hint = f"; install {_DRIVERS[scheme]}" if scheme in _DRIVERS else ""
        raise ArchlabError(f"cannot open storage {shown}: the database driver is missing ({e}){hint}") from None
    except Exception as e:  # SQLAlchemy's OperationalError, ArgumentError, NoSuchModuleError, ...
        first = " ".join(str(getattr(e, "orig", None) or e).split())
        raise ArchlabError(f"cannot open storage {shown}: {type(e).__name__}: {first[:300]}") from None


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead log and ``synchronous=NORMAL`` on every connection to the file.

    A search trial commits three times (:class:`~archlab.search.worker_storage.WorkerStorage`: create, params and
    attrs, end state), and Optuna's own calls commit once per param and attr;
    with SQLite's default rollback journal each commit waits for an fsync (~3 ms).
    In WAL mode a commit is an append, readers do not block the writer (several
    workers), and a crashed process loses no committed transaction (only a power
    loss can drop the last ones). WAL needs the file on a local disk, not a
    network share.
    """
    from sqlalchemy import event

    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # the connection made while creating the schema predates the listener


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether ``storage`` stamps running trials (an RDB storage with an interval)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


class Heartbeat:
    """Context manager stamping one running trial every ``interval`` seconds from a
    daemon thread (what ``Study.optimize`` does, for the engine's ask/tell loop).

    A no-op when the storage has no heartbeats. The first stamp is written
    before ``__enter__`` returns (by :class:`~archlab.search.worker_storage.WorkerStorage` when it creates the
    trial). The stamping thread is one per storage, shared by its trials and kept
    between them (starting and joining a thread per trial costs milliseconds on a
    busy machine); after ``__exit__`` the trial gets no further stamp.
    """

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._beater: _Beater | None = None

    def __enter__(self) -> "Heartbeat":
        if heartbeat_enabled(self._storage):
            stamped = getattr(self._storage, "stamped_at_creation", None)
            if stamped is None or not stamped(self._trial_id):
                self._storage.record_heartbeat(self._trial_id)
            self._beater = _Beater.of(self._storage)
            self._beater.add(self._trial_id)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._beater is not None:
            self._beater.remove(self._trial_id)


class _Beater:
    """The daemon thread stamping a storage's running trials (see :class:`Heartbeat`).
    It ends when its storage is gone or it has had no trial for :attr:`IDLE_S` seconds;
    the next trial starts another."""

    IDLE_S = 60.0
    _all: "weakref.WeakKeyDictionary[BaseStorage, _Beater]" = weakref.WeakKeyDictionary()
    _all_lock = threading.Lock()

    @classmethod
    def of(cls, storage: BaseStorage) -> "_Beater":
        with cls._all_lock:
            beater = cls._all.get(storage)
            if beater is None:
                beater = cls._all[storage] = cls(storage)
            return beater

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = weakref.ref(storage)
        self._interval = float(storage.get_heartbeat_interval())
        self._lock = threading.Lock()
        self._trials: set[int] = set()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trials.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="archlab-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, trial_id: int) -> None:
        with self._lock:  # a stamp in progress finishes first: none follows
            self._trials.discard(trial_id)

    def _run(self) -> None:
        idle = 0.0
        while True:
            time.sleep(self._interval)
            storage = self._storage()
            with self._lock:
                if storage is None or (not self._trials and idle >= self.IDLE_S):
                    self._thread = None
                    return
                idle = 0.0 if self._trials else idle + self._interval
                for trial_id in sorted(self._trials):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:  # a lost connection must not kill the worker; the next beat retries
                        pass
            del storage


__all__ = ["DEFAULT_STORAGE", "open_storage", "default_storage_url", "heartbeat_enabled", "Heartbeat"]
