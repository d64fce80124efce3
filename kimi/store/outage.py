"""One log line when a store starts failing and one when it recovers, not one per request."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class OutageLog:
    """Remembers the cause of the current failure, if any, so each change is logged once."""

    def __init__(self, describe: str) -> None:
        self.describe = describe
        self._cause: str | None = None
        self._lock = threading.Lock()

    def failed(self, cause: str) -> None:
        with self._lock:
            changed, self._cause = cause != self._cause, cause
        if changed:
            log.warning("State store %s failed: %s", self.describe, cause)

    def succeeded(self) -> None:
        if self._cause is None:  # the common case: no lock taken
            return
        with self._lock:
            was, self._cause = self._cause, None
        if was is not None:
            log.warning("State store %s works again (it failed with: %s)", self.describe, was)

    @property
    def failing(self) -> bool:
        return self._cause is not None
