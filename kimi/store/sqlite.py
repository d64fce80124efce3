"""The embedded state store: one SQLite file in WAL mode, safe across gunicorn workers."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StateStoreUnavailable
from .outage import OutageLog
from .sqlite_files import (
    companion_identities,
    file_identity,
    folder_lock,
    make_private_file,
    remove_companions,
    restrict_to_owner,
    state_file_path,
)

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
WAL_RETRY_SECONDS = 0.02
# Expired rows are swept now and then rather than on every write.
SWEEP_EVERY_WRITES = 200
# The value ping() writes lives this long, so health checks leave nothing behind for good.
PING_TTL = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
)
"""
_LIVE_VALUE = "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
_UPSERT = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)"


class SQLiteStore:
    """``StateStore`` on SQLite; the file is shared by processes.

    One connection per process, used under a lock: every call is a short statement, and a
    connection per thread would mean one per request under gevent, where threads are greenlets.
    Every call first checks that the file at ``path`` is still the one the connection has open:
    a file deleted while running is made again (with what this process still reads from the old
    one), a replaced one (a restored backup, or junk) is opened anew without the old file's
    ``-wal``/``-shm``. Any SQLite or file error becomes
    ``StateStoreUnavailable`` and drops the connection, so the next call starts afresh.
    """

    def __init__(self, path: str) -> None:
        self.path = state_file_path(path)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._identity: tuple[int, int] | None = None
        self._companions: dict[str, tuple[int, int] | None] = {}
        self._writes = 0
        self._ping_key = f"ping:{uuid.uuid4().hex}"
        self._outage = OutageLog(self.describe())
        try:
            with self._connection():
                pass
        except StateStoreUnavailable as exc:
            # Not fatal: requests answer 503 until the file is usable, then carry on.
            log.warning("The state file is not usable yet: %s", exc.message)

    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute(_LIVE_VALUE, (key, time.time())).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._connection() as conn:
            conn.execute(_UPSERT, (key, value, _expiry(ttl)))
            self._after_write(conn)

    def delete(self, key: str) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    def compare_and_set(
        self, key: str, expected: str | None, value: str | None, ttl: float | None = None
    ) -> bool:
        with self._connection() as conn:
            return _compare_and_set(conn, key, expected, value, ttl)

    def ping(self) -> bool:
        nonce = uuid.uuid4().hex
        self.put(self._ping_key, nonce, ttl=PING_TTL)
        return self.get(self._ping_key) == nonce

    def describe(self) -> str:
        return f"sqlite:{os.path.abspath(self.path)}"

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The process's connection, under the lock; errors leave as ``StateStoreUnavailable``."""
        with self._lock:
            try:
                yield self._current()
            except (sqlite3.Error, OSError) as exc:
                self._drop()
                cause = _cause(exc)
                self._outage.failed(cause)
                raise StateStoreUnavailable(
                    f"The state store is unavailable (SQLite: {cause})."
                ) from exc
            self._outage.succeeded()

    def _current(self) -> sqlite3.Connection:
        identity = file_identity(self.path)
        if self._db is not None and self._pid == os.getpid() and identity == self._identity:
            return self._db
        return self._reopen()

    def _reopen(self) -> sqlite3.Connection:
        """Open the file at ``path``, making it again (with what the old one held) if deleted."""
        # A connection inherited through fork is the parent's: let go of it without using it.
        old = self._db if self._pid == os.getpid() else None
        self._db = None
        with folder_lock(self.path):
            kept: list[tuple[str, str, float | None]] = []
            if file_identity(self.path) is None:
                kept = _salvage(old) if old is not None else []
                remove_companions(self.path)  # no database file: they are orphans
            elif old is not None:
                remove_companions(self.path, only=self._companions)
            if old is not None:
                old.close()
            conn = _open(self.path)
            if kept:
                _restore(conn, kept)
                log.warning(
                    "The state file %s was deleted while in use; made it again with the %d "
                    "entries this worker could still read",
                    self.path,
                    len(kept),
                )
            self._db, self._pid = conn, os.getpid()
            self._identity = file_identity(self.path)
            self._companions = companion_identities(self.path)
        return conn

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is None or self._pid != os.getpid():
            return
        try:
            db.close()
        except sqlite3.Error as exc:  # closing a broken connection: it is gone either way
            log.debug("Closing the failed SQLite connection: %s", exc)

    def _after_write(self, conn: sqlite3.Connection) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY_WRITES == 0:
            conn.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
            )


def _compare_and_set(
    conn: sqlite3.Connection, key: str, expected: str | None, value: str | None, ttl: float | None
) -> bool:
    # BEGIN IMMEDIATE takes the write lock first, so read-then-write is atomic across processes.
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(_LIVE_VALUE, (key, time.time())).fetchone()
        if (row[0] if row else None) != expected:
            conn.execute("ROLLBACK")
            return False
        if value is None:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            conn.execute(_UPSERT, (key, value, _expiry(ttl)))
        conn.execute("COMMIT")
        return True
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _open(path: str) -> sqlite3.Connection:
    make_private_file(path)
    restrict_to_owner(path)
    # check_same_thread off: the one connection is used by every thread, one at a time.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out other processes doing the same.

    gunicorn boots its workers together; on a new file they all switch the journal mode at
    once, and SQLite answers "database is locked" to the losers without waiting.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(WAL_RETRY_SECONDS)


def _salvage(old: sqlite3.Connection) -> list[tuple[str, str, float | None]]:
    """The live rows an open connection still reads from a file deleted under it."""
    try:
        return old.execute(
            "SELECT key, value, expires_at FROM kv WHERE expires_at IS NULL OR expires_at > ?",
            (time.time(),),
        ).fetchall()
    except sqlite3.Error as exc:
        log.warning("Could not read the deleted state file's entries back: %s", exc)
        return []


def _restore(conn: sqlite3.Connection, rows: list[tuple[str, str, float | None]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR IGNORE INTO kv (key, value, expires_at) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _cause(exc: BaseException) -> str:
    """What went wrong, for a client's error message: SQLite's words, or the OS error's name."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def _expiry(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl
