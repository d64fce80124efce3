"""A cap on the streams one worker holds open: beyond it a 429, never an unbounded queue."""

from __future__ import annotations

import threading

from .errors import RateLimited

# What a client over the cap is told to wait: streams usually end within a minute.
RETRY_AFTER_SECONDS = 5.0


class StreamSlots:
    """Counts open streams in this process; ``take()`` raises ``RateLimited`` when all are used."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        return self._open

    def take(self) -> None:
        with self._lock:
            if self._open >= self.capacity:
                raise RateLimited(
                    f"This server is holding its limit of {self.capacity} open streams; "
                    "try again shortly.",
                    retry_after=RETRY_AFTER_SECONDS,
                    code="too_many_streams",
                )
            self._open += 1

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1
