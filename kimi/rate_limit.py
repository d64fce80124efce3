"""A small in-memory rate limit per client address: a sliding window of recent hits.

Kept in the worker's memory on purpose: it guards endpoints that cost Kimi calls
(``/token/check``) against a flood from one address, and needs no store round trip. Each worker
process counts for itself, so the real limit is the configured one times the worker count.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .errors import RateLimited

MAX_TRACKED_CLIENTS = 10_000  # past this, the least recently seen address is forgotten


class SlidingWindowLimit:
    """At most ``limit`` hits per ``window`` seconds for each key."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        what: str = "requests",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.what = what
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        """Count one hit for ``key``; ``RateLimited`` (with Retry-After) when over the limit."""
        now = self._clock()
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            self._hits[key] = hits  # now the most recently seen
            if len(hits) >= self.limit:
                raise RateLimited(
                    f"Too many {self.what} from this address: at most {self.limit} in "
                    f"{self.window:.0f} s.",
                    retry_after=hits[0] + self.window - now,
                )
            hits.append(now)
            while len(self._hits) > MAX_TRACKED_CLIENTS:
                self._hits.popitem(last=False)
