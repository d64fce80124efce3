"""Keep-alive for streams: upstream is read on a helper thread so silence can be filled.

Proxies and clients drop an idle HTTP stream; while Kimi is silent (long thinking, slow search)
the consumer gets a ``KEEPALIVE`` marker every ``interval`` seconds to write a comment line.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

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
    """

    def __init__(self, events: Any, interval: float) -> None:
        self._events = events
        self._interval = interval
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="kimi-upstream-reader", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                kind, value = self._queue.get(timeout=self._interval)
            except queue.Empty:
                yield KEEPALIVE
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value

    def ready(self) -> bool:
        """Whether the next item is already waiting (so the consumer can batch its writes)."""
        return not self._queue.empty()

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT_SECONDS)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _pump(self) -> None:
        try:
            for event in self._events:
                if not self._put((_EVENT, event)):
                    return
            self._put((_END, None))
        except Exception as exc:  # handed to the consumer's thread, which raises it
            self._put((_ERROR, exc))
        finally:
            self._events.close()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=PUT_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
