"""State shared by every worker: access tokens, rotated refresh tokens, conversations, cool-downs.

One narrow interface (get/put with expiry, compare-and-set, delete, a named lock) so the embedded
SQLite file and a shared Redis are interchangeable.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Protocol

from ..errors import KimiError

LOCK_POLL_SECONDS = 0.05


class StoreError(KimiError):
    """The state store failed or a lock could not be had in time."""

    code = "state_store_error"


class StateStore(Protocol):
    """String keys to string values, each with an optional time to live in seconds."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def compare_and_set(
        self, key: str, expected: str | None, value: str | None, ttl: float | None = None
    ) -> bool:
        """Set ``key`` to ``value`` (``None`` deletes) only if it now holds ``expected``."""
        ...

    def ping(self) -> bool: ...


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
            raise StoreError(f"Timed out waiting for the lock {name!r}.")
        time.sleep(LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        store.compare_and_set(key, owner, None)


def open_store(path: str) -> StateStore:
    """The store for a deployment: SQLite at ``path``."""
    from .sqlite import SQLiteStore

    return SQLiteStore(path)
