"""Where a search keeps its study: storage URLs, heartbeats and one-line errors.

Spellings accepted by :func:`open_storage` (and ``--storage``):

* ``None``: the default, the SQLite file ``runs/archlab.db`` (the folder is made);
* any SQLAlchemy URL Optuna's :class:`~optuna.storages.RDBStorage` takes:
  ``sqlite:///path.db``, ``postgresql://user:pw@host/db`` (driver:
  ``psycopg2-binary``, archlab's ``dev`` extra, or psycopg 3: a bare
  ``postgresql://`` uses whichever is installed), ``mysql+pymysql://...``;
  a SQLite URL without a file (``sqlite://``, ``sqlite:///``,
  ``sqlite:///:memory:``) is refused: it would keep the study in memory;
* ``journal:PATH``: :class:`~optuna.storages.JournalStorage` over the append-only
  file ``PATH`` (safe for several processes on one machine, no database), with
  archlab's heartbeats (:class:`~archlab.search.heartbeat.JournalHeartbeatStorage`);
* ``:memory:``: an in-process study (tests; nothing persists).

A search worker wraps an RDB storage in
:class:`~archlab.search.worker_storage.WorkerStorage` (:func:`~archlab.search.worker_storage.worker_storage`),
which batches the writes of the trials it runs into three transactions a trial
and caches the study's trials; journal and in-memory storages are used as they are.

Heartbeats (RDB and journal storages, see :mod:`archlab.search.heartbeat`):
every running trial's worker stamps the trial each ``heartbeat_interval``
seconds from the moment it is RUNNING; a trial whose stamp is older than
``grace_period`` (or that has none) is marked FAIL by the next worker that
looks, and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
(``RetryFailedTrialCallback`` before Optuna 4.9) enqueues a WAITING copy of it
(same parameters) that the next ``ask`` runs.

A storage that fails while a search or a read runs (a full disk, a corrupt
SQLite page, a lost server) is reported by :func:`storage_failure` as one
:class:`StorageFailure` line naming the storage and the cause.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from archlab.errors import ArchlabError
from archlab.search.heartbeat import Heartbeat, _Beater, heartbeat_enabled, stale_trial_retry  # noqa: F401

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


class StorageFailure(ArchlabError):
    """The storage failed while in use (disk full, corrupt file, lost server); the
    original exception is ``__cause__``."""


def storage_failure(storage: Any, error: BaseException) -> StorageFailure:
    """One line naming ``storage`` (its URL, password hidden, or its file) and the cause of ``error``."""
    where = _describe(storage)
    cause = error
    while True:  # down to the driver's error: Optuna's wrapper only says "raised during the commit"
        inner = getattr(cause, "orig", None)
        if inner is None and cause.__cause__ is not None and (
                not str(cause).strip() or isinstance(cause, optuna.exceptions.StorageInternalError)):
            inner = cause.__cause__
        if inner is None:
            break
        cause = inner
    text = " ".join(str(cause).split()) or type(cause).__name__
    # SQLAlchemy appends the statement and a link; the driver's message comes first
    text = text.split(" [SQL: ")[0].split(" (Background on this error")[0]
    err = StorageFailure(f"storage {where} failed: {type(cause).__name__}: {text[:300]}{_hint(text)}")
    err.__cause__ = error
    return err


def _hint(text: str) -> str:
    """What to do about a storage error whose message is ``text`` ("" when unknown)."""
    low = text.lower()
    if ("disk" in low and "full" in low) or "no space" in low:
        return "; free disk space and run the command again (finished trials are kept)"
    if "malformed" in low or "not a database" in low or "corrupt" in low or "invalid log format" in low:
        return "; the file is damaged: restore it from a copy or start a new study in another file"
    if "database is locked" in low or "database is busy" in low:
        return ("; another process held the SQLite file's write lock too long: run the command again "
                "(finished trials are kept), and put many workers on PostgreSQL")
    return ""


def _describe(storage: Any) -> str:
    if isinstance(storage, str):
        return _redact(storage)
    backend = getattr(storage, "backend", storage)
    url = getattr(backend, "url", None)
    if isinstance(url, str):
        return _redact(url)
    path = getattr(getattr(backend, "_backend", None), "_file_path", None)
    if path is not None:
        return f"journal:{path}"
    return type(storage).__name__


def _postgres_driver(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 means psycopg 3 by it,
    archlab's ``dev`` extra (and the README) psycopg2; a URL naming its driver is kept."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql":
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


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
    if url.split("?", 1)[0] in ("sqlite://", "sqlite:///", "sqlite:///:memory:"):
        raise ArchlabError(f"storage {url!r} names no SQLite file (SQLAlchemy would keep the study in memory and "
                           "store nothing); use sqlite:///FILE.db (e.g. sqlite:///runs/archlab.db)")
    if url.startswith("journal:"):
        path = url[len("journal:"):].removeprefix("//")
        if not path:
            raise ArchlabError("journal storage needs a file: journal:PATH, e.g. journal:runs/study.log")
        if must_exist and not os.path.isfile(path):
            raise ArchlabError(f"journal file {path!r} does not exist (storage {shown})")
        parent = Path(path).parent
        if not parent.is_dir():
            raise ArchlabError(f"cannot open storage {shown}: folder {str(parent)!r} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

        from archlab.search.heartbeat import JournalHeartbeatStorage

        _check_heartbeat(heartbeat_interval, grace_period)
        try:
            # a worker killed while appending leaves the lock behind: others take it over after 10 s
            backend = JournalFileBackend(path, JournalFileSymlinkLock(path, grace_period=10))
            if heartbeat_interval is None:
                return JournalStorage(backend)
            return JournalHeartbeatStorage(backend, heartbeat_interval=heartbeat_interval,
                                           grace_period=grace_period, max_retry=max_retry)
        except (OSError, ValueError) as e:
            raise ArchlabError(f"cannot open storage {shown}: {type(e).__name__}: {e}") from None
    if "://" not in url:
        raise ArchlabError(
            f"storage {url!r} is not a URL; use sqlite:///FILE.db, postgresql://USER:PW@HOST/DB or journal:FILE")
    sqlite = _sqlite_path(url)
    if sqlite is not None:
        if must_exist and not os.path.isfile(sqlite):
            raise ArchlabError(f"SQLite file {sqlite!r} does not exist (storage {shown}); run `archlab search` first")
        if not Path(sqlite).parent.is_dir():
            raise ArchlabError(f"cannot open storage {shown}: folder {str(Path(sqlite).parent)!r} does not exist")
    if sqlite is not None:
        _wal_before_use(sqlite)
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        # Several processes share one file: wait for the write lock instead of failing after 5 s.
        engine_kwargs["connect_args"] = {"timeout": 120}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    _check_heartbeat(heartbeat_interval, grace_period)
    url = _postgres_driver(url)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = {}
            if heartbeat_interval is not None:
                key = ("heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
                       else "failed_trial_callback")
                retry = {key: stale_trial_retry(max_retry)}
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
        raise ArchlabError(f"cannot open storage {shown}: {type(e).__name__}: {first[:300]}{_hint(first)}") from None


def _check_heartbeat(heartbeat_interval: int | None, grace_period: int | None) -> None:
    if heartbeat_interval is not None and heartbeat_interval <= 0:
        raise ArchlabError(f"the heartbeat interval must be a positive number of seconds, got {heartbeat_interval}")
    if grace_period is not None and heartbeat_interval is None:
        raise ArchlabError("a grace period needs heartbeats: give a heartbeat interval too")
    if heartbeat_interval is not None and grace_period is not None and grace_period <= heartbeat_interval:
        raise ArchlabError(
            f"the grace period ({grace_period} s) must be longer than the heartbeat interval ({heartbeat_interval} s)")


def _wal_before_use(path: str, wait_s: float = 120.0) -> None:
    """Put the SQLite file ``path`` (created when missing) in write-ahead-log mode
    before Optuna's storage first connects to it (see :func:`_fast_sqlite` for why WAL).

    WAL is stored in the file: set once, it holds for every later connection.
    Setting it per connection, as archlab did before, failed: on a file still in
    rollback-journal mode (a new one) SQLite answers ``PRAGMA journal_mode=WAL``
    "database is locked" at once, without waiting out the busy timeout, while
    another connection is mid-write; so workers started together on a new study
    file could exit 2 with it (seen in 2 of 300 starts of four workers under
    load, and once in CI's chaos test; ``tests/test_search_storage.py`` makes
    the case deterministic). Here a busy file is tried again every 10-100 ms, up
    to ``wait_s``. A file that cannot be WAL (SQLite returns its old mode) is left
    as it is, and any other error to the storage's own connection, which reports
    it in one line.
    """
    import random
    import sqlite3

    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = sqlite3.connect(path, timeout=wait_s)
            try:
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            finally:
                conn.close()
        except sqlite3.OperationalError as e:
            text = str(e).lower()
            if "locked" not in text and "busy" not in text:
                return
            mode = "busy"
        except sqlite3.Error:
            return
        if mode != "busy" or time.monotonic() > deadline:  # a file that cannot be WAL stays as it is
            return
        time.sleep(random.uniform(0.01, 0.1))


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """``synchronous=NORMAL`` on every connection to the file, which
    :func:`_wal_before_use` has put in write-ahead-log mode.

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
        cur.execute("PRAGMA synchronous=NORMAL")  # not journal_mode: see _wal_before_use
        cur.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # the connection made while creating the schema predates the listener


__all__ = ["DEFAULT_STORAGE", "open_storage", "default_storage_url", "heartbeat_enabled", "Heartbeat",
           "StorageFailure", "storage_failure"]
