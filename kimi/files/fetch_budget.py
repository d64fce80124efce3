"""How long a file's source may take, enforced from outside the read that waits on it.

A source that sends one byte a second never trips a socket timeout (each byte restarts it),
and a status line, a header or a chunk-size line can trickle just the same. So every fetch
gets a ``FetchBudget``: a total deadline, and once the body starts a minimum rate measured
over a window. A watcher thread (a greenlet under gevent's monkey-patching) checks it on a
timer; once it is spent, the watcher shuts the fetch's sockets down, so a read blocked on the
source returns at once, and the fetch reports which limit the source missed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ..errors import BadRequest

__all__ = ["FetchBudget", "FetchLimits", "watch_new_socket"]

log = logging.getLogger(__name__)

# The watcher never sleeps less than this between checks (a busy loop would cost CPU).
MIN_CHECK_SECONDS = 0.01
KB = 1024

# The budget of the fetch that is connecting in this thread or greenlet, if any: connections
# opened while it is set are shut down when it is spent.
_CONNECTING_FOR: ContextVar[FetchBudget | None] = ContextVar("connecting_for", default=None)


@dataclass(frozen=True)
class FetchLimits:
    """``total_seconds`` for the whole fetch (connecting, redirects, headers, body); the body
    must then arrive at ``min_bytes_per_second`` or more over every ``rate_window_seconds``."""

    total_seconds: float = 60.0
    min_bytes_per_second: float = 10 * KB
    rate_window_seconds: float = 10.0


class FetchBudget:
    """The time one fetch has left. ``name`` and ``host`` go into the error it reports."""

    def __init__(
        self,
        limits: FetchLimits,
        name: str,
        host: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.name = name
        self.host = host
        self.failure: BadRequest | None = None
        self._clock = clock
        self._started = clock()
        self._deadline = self._started + limits.total_seconds
        self._window_end: float | None = None  # the rate is checked once the body starts
        self._window_bytes = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="fetch-budget", daemon=True)
        self._watcher.start()

    def remaining(self) -> float:
        """Seconds left before the deadline (never below a tiny positive number)."""
        return max(self._deadline - self._clock(), MIN_CHECK_SECONDS)

    @contextmanager
    def connecting(self) -> Iterator[None]:
        """A context in which every connection opened is watched by this budget."""
        token = _CONNECTING_FOR.set(self)
        try:
            yield
        finally:
            _CONNECTING_FOR.reset(token)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down if the budget runs out. A duplicate of its descriptor is kept:
        shutting that down stops the connection too, and its number cannot be reused."""
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            if self._closed.is_set():
                duplicate.close()
                return
            self._sockets.append(duplicate)
        if self.failure is not None:
            self._shut_down()

    def body_started(self) -> None:
        """From now on the rate counts: the first window starts."""
        with self._lock:
            self._window_end = self._clock() + self.limits.rate_window_seconds
            self._window_bytes = 0

    def received(self, count: int) -> None:
        """Count ``count`` body bytes; raise if the budget is spent."""
        with self._lock:
            self._window_bytes += count
        self.check()

    def check(self) -> None:
        """Raise the budget's ``BadRequest`` if it is spent (by the clock or by the watcher)."""
        failure = self.failure or self._evaluate()
        if failure is not None:
            self._fail(failure)
            raise failure

    def close(self) -> None:
        """Stop watching and release the duplicated descriptors."""
        with self._lock:
            self._closed.set()
            sockets, self._sockets = self._sockets, []
        for duplicate in sockets:
            duplicate.close()

    def _watch(self) -> None:
        while not self._closed.wait(self._seconds_to_next_check()):
            failure = self._evaluate()
            if failure is not None:
                self._fail(failure)
                return

    def _seconds_to_next_check(self) -> float:
        now = self._clock()
        due = self._deadline
        if self._window_end is not None:
            due = min(due, self._window_end)
        return max(due - now, MIN_CHECK_SECONDS)

    def _evaluate(self) -> BadRequest | None:
        with self._lock:
            now = self._clock()
            if now >= self._deadline:
                return self._too_long()
            if self._window_end is None or now < self._window_end:
                return None
            needed = self.limits.min_bytes_per_second * self.limits.rate_window_seconds
            if self._window_bytes < needed:
                return self._too_slow(now)
            self._window_end = now + self.limits.rate_window_seconds
            self._window_bytes = 0
            return None

    def _fail(self, failure: BadRequest) -> None:
        if self.failure is None:
            self.failure = failure
            log.info("giving up on %r from %s: %s", self.name, self.host, failure.code)
        self._shut_down()

    def _shut_down(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for duplicate in sockets:
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the connection is already closed: nothing left to stop

    def _too_long(self) -> BadRequest:
        return BadRequest(
            f"Could not fetch the file {self.name!r}: {self.host} did not send it within "
            f"{self.limits.total_seconds:g} s (FILE_FETCH_TIMEOUT).",
            code="file_fetch_timeout",
        )

    def _too_slow(self, now: float) -> BadRequest:
        rate = self.limits.min_bytes_per_second / KB
        return BadRequest(
            f"Could not fetch the file {self.name!r}: {self.host} sent it slower than "
            f"{rate:g} KB/s (FILE_FETCH_MIN_KBPS); gave up after {now - self._started:.1f} s.",
            code="file_fetch_too_slow",
        )


def watch_new_socket(sock: socket.socket) -> None:
    """Put a just-connected socket under the budget of the fetch that opened it, if any."""
    budget = _CONNECTING_FOR.get()
    if budget is not None:
        budget.watch(sock)
