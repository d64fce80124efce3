"""Keep-alive for streams: upstream is read on a helper thread so silence can be filled.

Proxies and clients drop an idle HTTP stream; while Kimi is silent (long thinking, slow search)
the consumer gets a ``KEEPALIVE`` marker every ``interval`` seconds to write a comment line.
"""

from __future__ import annotations

import _thread
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from . import shutdown
from .errors import ServiceShuttingDown

KEEPALIVE = object()
QUEUE_SIZE = 256
PUT_POLL_SECONDS = 0.5
# How long close() waits for the reader to finish its clean-up (closing the upstream, deleting a
# one-shot chat). A reader stuck in a silent upstream read goes on alone after that.
CLOSE_WAIT_SECONDS = 2.0
_EVENT, _END, _ERROR = "event", "end", "error"


class KeepAliveStream:
    """Iterate ``events`` (an iterator with ``close()``) with ``KEEPALIVE`` during silences.

    ``close()`` stops the reader: the source is closed on the reader's thread as soon as it
    yields again, so its clean-up (deleting a one-shot chat) runs even after a disconnect.

    The hand-off is a deque and two events rather than a ``queue.Queue``: an item that is
    already waiting costs no lock, condition or timer, which is most of them under load.
    """

    def __init__(self, events: Any, interval: float) -> None:
        self._events = events
        self._interval = interval
        self._items: deque[tuple[str, Any]] = deque()
        self._arrived = threading.Event()  # set by the reader after it adds an item
        self._taken = threading.Event()  # set by the consumer after it takes one
        self._stopped = threading.Event()
        self._finished = threading.Event()  # set by the reader when its clean-up is done
        self._interrupted = False
        self._reader: int | None = None
        # The low-level start: a threading.Thread costs several times more (its own locks and
        # bookkeeping; under gevent, a Greenlet wrapped in all of it), once per turn.
        _thread.start_new_thread(self._pump, ())
        shutdown.register(self)

    def __iter__(self) -> Iterator[Any]:
        while True:
            if not self._items:
                self._arrived.clear()
                # Checked again after clear(): an item added in between has set the event.
                if not self._items and not self._wait():
                    yield KEEPALIVE
                    continue
            if self._interrupted:
                self._wait()  # raises
            kind, value = self._items.popleft()
            self._taken.set()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value

    def _wait(self) -> bool:
        """Wait for an item; a server shutting down is told to the client as an error."""
        # The flag is read after the event was cleared: an interrupt that came before still counts.
        arrived = self._interrupted or self._arrived.wait(self._interval)
        if self._interrupted:
            raise ServiceShuttingDown(
                "The server is restarting; this answer was cut short. Send it again."
            )
        return arrived

    def interrupt(self) -> None:
        """End the stream with ``ServiceShuttingDown`` (the server's grace is nearly over)."""
        self._interrupted = True
        self._arrived.set()

    def ready(self) -> bool:
        """Whether the next item is already waiting (so the consumer can batch its writes)."""
        return bool(self._items)

    def close(self) -> None:
        self._stopped.set()
        self._taken.set()  # a reader waiting for room gives up
        if self._reader != threading.get_ident():
            self._finished.wait(CLOSE_WAIT_SECONDS)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader to finish (its source closed)."""
        self._finished.wait(timeout)

    def _pump(self) -> None:
        self._reader = threading.get_ident()
        try:
            for event in self._events:
                if not self._put((_EVENT, event)):
                    return
            self._put((_END, None))
        except Exception as exc:  # handed to the consumer's thread, which raises it
            self._put((_ERROR, exc))
        finally:
            try:
                self._events.close()
            finally:
                self._finished.set()

    def _put(self, item: tuple[str, Any]) -> bool:
        """Add an item, waiting while ``QUEUE_SIZE`` are unread: a slow client slows the reading
        of Kimi's stream instead of growing memory. False once the consumer has gone."""
        while len(self._items) >= QUEUE_SIZE:
            self._taken.clear()
            if self._stopped.is_set():
                return False
            if len(self._items) >= QUEUE_SIZE:
                self._taken.wait(PUT_POLL_SECONDS)
        if self._stopped.is_set():
            return False
        self._items.append(item)
        self._arrived.set()
        return True
