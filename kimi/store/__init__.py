"""State shared by every worker: access tokens, rotated refresh tokens, conversations, cool-downs.

One narrow interface (get/put with expiry, compare-and-set, delete, a named lock) so the embedded
SQLite file and a shared Redis are interchangeable. Each store translates its driver's errors
once, at its boundary, into ``StateStoreUnavailable`` (503), and after a failure drops its
connection and opens a new one on the next call: an outage ends without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from ..errors import StateStoreUnavailable

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "StateStore",
    "StateStoreUnavailable",
    "LockTimeout",
    "store_lock",
    "retry_in_background",
    "open_store",
    "open_configured_store",
    "DEFAULT_REDIS_PREFIX",
    "DEFAULT_STATE_TIMEOUT",
]

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 0.05
# A lock whose release failed (the store was down or hung) is released again this often, until
# that lands or its ttl frees it anyway.
LOCK_RELEASE_RETRY_SECONDS = 0.5
DEFAULT_REDIS_PREFIX = "kimi-free-api:"
# Seconds a store call may take before it fails with a 503: an outage fails fast, not by hanging.
DEFAULT_STATE_TIMEOUT = 3.0
SQLITE_SCHEME = "sqlite:///"
REDIS_SCHEMES = ("redis://", "rediss://")


class LockTimeout(StateStoreUnavailable):
    """A named lock stayed taken for longer than the caller would wait."""

    code = "state_lock_timeout"


class StateStore(Protocol):
    """String keys to string values, each with an optional time to live in seconds.

    Every method raises ``StateStoreUnavailable`` when the backend fails, never a driver error.
    """

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def compare_and_set(
        self, key: str, expected: str | None, value: str | None, ttl: float | None = None
    ) -> bool:
        """Set ``key`` to ``value`` (``None`` deletes) only if it now holds ``expected``."""
        ...

    def ping(self) -> bool:
        """Write a value and read it back: True when the store is usable for real."""
        ...

    def describe(self) -> str:
        """Which backend and where, for operators' logs (never a password)."""
        ...


@contextlib.contextmanager
def store_lock(
    store: StateStore, name: str, *, ttl: float = 30.0, wait: float = 30.0
) -> Iterator[None]:
    """A lock across threads and processes, built on compare-and-set.

    The ttl frees the lock if its holder dies; holders must finish well within it.
    """
    key = f"lock:{name}"
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while not store.compare_and_set(key, None, owner, ttl=ttl):
        if time.monotonic() > deadline:
            raise LockTimeout(f"Timed out waiting for the lock {name!r}.")
        time.sleep(LOCK_POLL_SECONDS)
    expires = time.monotonic() + ttl
    try:
        yield
    finally:
        try:
            store.compare_and_set(key, owner, None)
        except StateStoreUnavailable:
            # The holder's work is done. Left taken, the lock would keep every other holder
            # waiting until its ttl ran out, long after the store is back.
            _release_later(store, key, owner, expires)


def _release_later(store: StateStore, key: str, owner: str, expires: float) -> None:
    """Release the lock in the background once the store answers, until its ttl frees it."""

    def release() -> bool:
        store.compare_and_set(key, owner, None)
        return True

    retry_in_background(
        release,
        every=LOCK_RELEASE_RETRY_SECONDS,
        until=expires,
        name="kimi-lock-release",
        done=f"Released {key} after the state store came back",
    )


def retry_in_background(
    write: Callable[[], bool],
    *,
    every: float,
    until: float,
    name: str,
    done: str,
    level: int = logging.INFO,
) -> None:
    """Try ``write`` every ``every`` seconds on a background thread (a greenlet under gevent)
    while it raises ``StateStoreUnavailable`` and ``time.monotonic()`` is short of ``until``.

    ``write`` returns True when it did the work (``done`` is logged then, at ``level``), False
    when it found nothing left to do.
    """

    def retry() -> None:
        while time.monotonic() + every < until:
            time.sleep(every)
            try:
                landed = write()
            except StateStoreUnavailable:
                continue
            if landed:
                log.log(level, "%s", done)
            return

    threading.Thread(target=retry, name=name, daemon=True).start()


def open_store(
    location: str,
    *,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
    timeout: float = DEFAULT_STATE_TIMEOUT,
    encryption_key: str = "",
) -> StateStore:
    """The store at ``location``: ``redis://``/``rediss://`` URL, ``sqlite:///`` URL or a path.

    ``encryption_key`` (Fernet keys, comma-separated) encrypts the values written with ``put``.
    """
    store: StateStore
    if location.startswith(REDIS_SCHEMES):
        from .redis_store import RedisStore

        store = RedisStore(location, prefix=redis_prefix, timeout=timeout)
    else:
        from .sqlite import SQLiteStore

        store = SQLiteStore(sqlite_path(location))
    if encryption_key:
        from .encrypted import EncryptedStore

        store = EncryptedStore(store, encryption_key)
    return store


def open_configured_store(settings: Settings) -> StateStore:
    """The store the settings name (``KIMI_STATE_URL``, ``REDIS_URL`` or ``KIMI_STATE_PATH``)."""
    return open_store(
        settings.state_location,
        redis_prefix=settings.redis_prefix,
        timeout=settings.state_timeout,
        encryption_key=settings.state_encryption_key,
    )


def sqlite_path(location: str) -> str:
    """The file path in ``sqlite:///relative.db`` or ``sqlite:////absolute.db``, or a bare path."""
    return location[len(SQLITE_SCHEME) :] if location.startswith(SQLITE_SCHEME) else location


def is_state_location(location: str) -> bool:
    """Whether ``location`` names a backend this package knows."""
    return location.startswith((SQLITE_SCHEME, *REDIS_SCHEMES))
