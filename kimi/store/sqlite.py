"""The embedded state store: one SQLite file in WAL mode, safe across gunicorn workers."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
WAL_RETRY_SECONDS = 0.02
# Expired rows are swept now and then rather than on every write.
SWEEP_EVERY_WRITES = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
)
"""


class SQLiteStore:
    """``StateStore`` on SQLite; the file is shared by processes.

    One connection per process, used under a lock: every call is a short statement, and a
    connection per thread would mean one per request under gevent, where threads are greenlets.
    """

    def __init__(self, path: str) -> None:
        self.path = _writable_path(path)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._writes = 0
        with self._connection() as conn:
            conn.execute(_SCHEMA)

    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            ).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._connection() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, _expiry(ttl)),
            )
            self._after_write(conn)

    def delete(self, key: str) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    def compare_and_set(
        self, key: str, expected: str | None, value: str | None, ttl: float | None = None
    ) -> bool:
        with self._connection() as conn:
            return self._compare_and_set(conn, key, expected, value, ttl)

    def _compare_and_set(
        self,
        conn: sqlite3.Connection,
        key: str,
        expected: str | None,
        value: str | None,
        ttl: float | None,
    ) -> bool:
        # BEGIN IMMEDIATE takes the write lock first, so read-then-write is atomic across processes.
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            ).fetchone()
            current = row[0] if row else None
            if current != expected:
                conn.execute("ROLLBACK")
                return False
            if value is None:
                conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
                    (key, value, _expiry(ttl)),
                )
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def ping(self) -> bool:
        with self._connection() as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The process's connection, held under the lock (opened anew in a forked child)."""
        with self._lock:
            if self._db is None or self._pid != os.getpid():
                self._db = _open(self.path)
                self._pid = os.getpid()
            yield self._db

    def _after_write(self, conn: sqlite3.Connection) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY_WRITES == 0:
            conn.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
            )


def _open(path: str) -> sqlite3.Connection:
    # check_same_thread off: the one connection is used by every thread, one at a time.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
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


def _expiry(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl


def _writable_path(path: str) -> str:
    """The state file's path; where its folder cannot be written, one in the temp directory."""
    if path == ":memory:":
        raise ValueError("an in-memory SQLite store is not shared between threads; use a file")
    folder = os.path.dirname(os.path.abspath(path))
    if _is_writable_folder(folder):
        return path
    fallback = os.path.join(tempfile.gettempdir(), "kimi-free-api", os.path.basename(path))
    os.makedirs(os.path.dirname(fallback), exist_ok=True)
    log.warning("State folder %s is not writable; using %s (lost on restart)", folder, fallback)
    return fallback


def _is_writable_folder(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False  # read-only file system (Vercel, some containers): fall back
    return os.access(folder, os.W_OK)
