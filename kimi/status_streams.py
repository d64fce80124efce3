"""Open streams of every worker, published through the state store so that any worker answering
``/status`` can list them all.

Each worker (``host:pid``) writes its count into one shared record every ``PUBLISH_SECONDS``
from a background thread (a greenlet under gevent), never on a request's path. An entry not
rewritten for ``STALE_SECONDS`` belongs to a worker that is gone and is left out; the record
itself expires when every worker has gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import metrics
from .errors import StateStoreUnavailable
from .store import StateStore
from .stream_slots import StreamSlots

log = logging.getLogger(__name__)

KEY = "streams:instances"
PUBLISH_SECONDS = 2.0
STALE_SECONDS = 5 * PUBLISH_SECONDS


@dataclass(frozen=True)
class InstanceStreams:
    """One worker's open streams, as it last published them."""

    instance: str  # host:pid
    open: int
    capacity: int
    seen_at: float  # epoch seconds of the last publication


class StreamCensus:
    """Publishes this worker's open streams and reads every worker's."""

    def __init__(
        self, store: StateStore, slots: StreamSlots, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.slots = slots
        self.clock = clock
        self._publisher_pid: int | None = None
        self._start_lock = threading.Lock()

    @property
    def instance(self) -> str:
        """This worker's name: host and process id (read each time: a fork changes it)."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def mine(self) -> InstanceStreams:
        """This worker's count now, which the open-streams gauge is set to as well."""
        mine = InstanceStreams(self.instance, self.slots.open, self.slots.capacity, self.clock())
        metrics.OPEN_STREAMS.set(mine.open)
        return mine

    def publish(self) -> None:
        """Write this worker's count now (raises ``StateStoreUnavailable`` when the store fails)."""
        mine = self.mine()
        while True:
            raw = self.store.get(KEY)
            entries = {e.instance: e for e in self._live(raw)}
            entries[mine.instance] = mine
            value = json.dumps([asdict(e) for e in entries.values()], separators=(",", ":"))
            if self.store.compare_and_set(KEY, raw, value, ttl=STALE_SECONDS):
                return

    def read(self) -> list[InstanceStreams]:
        """Every worker heard from lately, by name."""
        return sorted(self._live(self.store.get(KEY)), key=lambda e: e.instance)

    def start(self) -> None:
        """Publish in the background from now on (once per process; again after a fork)."""
        with self._start_lock:
            if self._publisher_pid == os.getpid():
                return
            self._publisher_pid = os.getpid()
        thread = threading.Thread(
            target=_publish_while_alive,
            args=(weakref.ref(self),),
            name="kimi-stream-census",
            daemon=True,
        )
        thread.start()

    def _live(self, raw: str | None) -> list[InstanceStreams]:
        oldest = self.clock() - STALE_SECONDS
        entries = [InstanceStreams(**item) for item in json.loads(raw)] if raw else []
        return [e for e in entries if e.seen_at >= oldest]


def _publish_while_alive(census_ref: weakref.ref) -> None:
    """The publisher thread: holds its census only weakly, and ends when the census is gone
    (an app built for a test and dropped)."""
    while True:
        census = census_ref()
        if census is None:
            return
        try:
            census.publish()
        except StateStoreUnavailable:
            # The store logs its own outage once; the next round publishes again.
            log.debug("Open streams not published: the state store is unavailable")
        del census
        time.sleep(PUBLISH_SECONDS)
