"""Keep-alive for streams: silences of Kimi's stream are filled so that proxies and clients
keep it open.

Until the first content event the turn runs on a helper thread (a greenlet under gevent), and the
consumer waits for it with a timeout: a slow start (a refresh, an upload, Kimi slow to open the
chat) gets a ``KEEPALIVE`` marker every ``interval`` seconds, and a failure before any content is
still raised in the route, before the response has started.

Given ``side`` (the server's own ``write``, see ``SideWrites``), the helper hands the turn over
after the first content event: the consumer reads it directly, with no hand-off per event, and
the helper stays on only to watch for silences, writing the keep-alive bytes itself when nothing
was written for ``interval`` seconds. The route gives ``side`` under gevent, where a stream's
reader can be interrupted in its read at shutdown; under threads the helper reads to the end.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from . import shutdown
from .errors import ServiceShuttingDown
from .events import ChatOpened

KEEPALIVE = object()
KEEPALIVE_LINE = b": keep-alive\n\n"  # an SSE comment: no event to a client
QUEUE_SIZE = 256
PUT_POLL_SECONDS = 0.5
# How long close() waits for the reader to finish its clean-up (closing the upstream, deleting a
# one-shot chat). A reader stuck in a silent upstream read goes on alone after that.
CLOSE_WAIT_SECONDS = 2.0
_EVENT, _END, _ERROR, _HANDED_OVER = "event", "end", "error", "handed over"
SHUTTING_DOWN = "The server is restarting; this answer was cut short. Send it again."


class SideWrites:
    """The server's ``write`` (PEP 3333's, from ``start_response``) for bytes written beside the
    body: never during one of the body's own writes, never after its end.

    ``body`` wraps the response's pieces: the lock is held while the server writes each one.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data  # what one keep-alive writes: the surface's comment or ping event
        self.last_write = time.monotonic()
        self._lock = threading.Lock()
        self._write: Callable[[bytes], Any] | None = None
        self._ended = False

    def attach(self, write: Callable[[bytes], Any]) -> None:
        self._write = write

    def body(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        lock = self._lock
        for piece in pieces:
            with lock:  # held while the server writes the piece, until it asks for the next
                yield piece
            self.last_write = time.monotonic()

    def end(self) -> None:
        """No side write after this returns (one under way is finished first)."""
        with self._lock:
            self._ended = True

    def keepalive(self) -> bool:
        """Write a keep-alive unless the body is writing (then it is not silent); False once
        none can be written any more. Either way the next is due ``interval`` from now."""
        if not self._lock.acquire(blocking=False):
            self.last_write = time.monotonic()
            return True
        try:
            if self._ended:
                return False
            if self._write is not None:  # None: the response has not started yet
                self._write(self.data)
            self.last_write = time.monotonic()
            return True
        except OSError:  # the client is gone; the body finds out on its next write
            return False
        finally:
            self._lock.release()


class KeepAliveStream:
    """Iterate ``events`` (an iterator with ``close()``) with ``KEEPALIVE`` during silences.

    ``close()`` stops the reader: the source is closed on the reader's thread as soon as it
    yields again, so its clean-up (deleting a one-shot chat) runs even after a disconnect. After
    a hand-over the source is the consumer's, and ``close()`` closes it at once.

    The hand-off is a deque and two events rather than a ``queue.Queue``: an item that is
    already waiting costs no lock, condition or timer, which is most of them under load.
    """

    def __init__(self, events: Any, interval: float, side: SideWrites | None = None) -> None:
        self._events = events
        self._interval = interval
        self._side = side
        self._items: deque[tuple[str, Any]] = deque()
        self._arrived = threading.Event()  # set by the reader after it adds an item
        self._taken = threading.Event()  # set by the consumer after it takes one
        self._stopped = threading.Event()
        self._finished = threading.Event()  # set by the reader when its clean-up is done
        self._interrupted = False
        self._reader: int | None = None
        self._handed_over = False  # the consumer reads the source itself
        self._consumer: Any = None  # the consumer's greenlet, while it reads the source
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
            if kind == _EVENT:
                yield value
            elif kind == _END:
                return
            elif kind == _ERROR:
                raise value
            else:
                yield from self._read_directly()
                return

    def _read_directly(self) -> Iterator[Any]:
        """The source, read by the consumer after the hand-over."""
        from greenlet import getcurrent  # only handed over under gevent

        events = self._events
        while True:
            if self._interrupted:
                raise ServiceShuttingDown(SHUTTING_DOWN)
            self._consumer = getcurrent()
            try:
                event = next(events)
            except StopIteration:
                return
            finally:
                self._consumer = None
            yield event

    def _wait(self) -> bool:
        """Wait for an item; a server shutting down is told to the client as an error."""
        # The flag is read after the event was cleared: an interrupt that came before still counts.
        arrived = self._interrupted or self._arrived.wait(self._interval)
        if self._interrupted:
            raise ServiceShuttingDown(SHUTTING_DOWN)
        return arrived

    def interrupt(self) -> None:
        """End the stream with ``ServiceShuttingDown`` (the server's grace is nearly over)."""
        self._interrupted = True
        self._arrived.set()
        if self._handed_over:
            import gevent  # only handed over under gevent

            # Run by the hub, and only if the consumer is still waiting inside the source then.
            gevent.get_hub().loop.run_callback(self._throw_into_reader)

    def _throw_into_reader(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.throw(ServiceShuttingDown(SHUTTING_DOWN))

    def ready(self) -> bool:
        """Whether the next item is already waiting (so the consumer can batch its writes); not
        the hand-over's marker, after which the next event may be a long way off."""
        items = self._items
        return bool(items) and items[0][0] != _HANDED_OVER

    def close(self) -> None:
        self._stopped.set()
        self._taken.set()  # a reader waiting for room gives up
        if self._handed_over:
            try:
                self._events.close()
            finally:
                self._finished.set()
        elif self._reader != threading.get_ident():
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
                if self._side is not None and not isinstance(event, ChatOpened):
                    self._handed_over = True
                    self._put((_HANDED_OVER, None))
                    break
            else:
                self._put((_END, None))
        except Exception as exc:  # handed to the consumer's thread, which raises it
            self._put((_ERROR, exc))
        finally:
            if not self._handed_over:
                try:
                    self._events.close()
                finally:
                    self._finished.set()
        if self._handed_over:
            self._watch_silences(self._side)

    def _watch_silences(self, side: SideWrites) -> None:
        """After the hand-over: a keep-alive whenever nothing was written for ``interval``."""
        while not self._stopped.is_set():
            left = side.last_write + self._interval - time.monotonic()
            if left > 0:
                self._stopped.wait(left)
            elif not side.keepalive():
                return

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
