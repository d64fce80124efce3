"""KeepAliveStream: silences filled with KEEPALIVE, order kept, errors and close() handed over."""

from __future__ import annotations

import textwrap
import threading

import pytest
from helpers import child_output

from kimi.errors import ServiceShuttingDown, UpstreamError
from kimi.keepalive import KEEPALIVE, QUEUE_SIZE, KeepAliveStream

INTERVAL = 0.01
JOIN_SECONDS = 10.0  # only a bound for a broken test; no assertion is about time


class GatedSource:
    """A source that yields ``before``, blocks until ``gate`` is set, then yields ``after``."""

    def __init__(self, before=("a",), after=("b",), error: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.finished = threading.Event()  # its finally ran
        self.produced: list = []
        self._events = self._run(before, after, error)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def _run(self, before, after, error):
        try:
            for item in before:
                self.produced.append(item)
                yield item
            self.gate.wait()
            for item in after:
                self.produced.append(item)
                yield item
            if error is not None:
                raise error
        finally:
            self.finished.set()


def first_event(stream: KeepAliveStream):
    """The first real event (a slow machine may fill the wait before it with KEEPALIVE)."""
    return next(item for item in stream if item is not KEEPALIVE)


def test_silences_of_the_source_are_filled_with_keepalive():
    source = GatedSource()
    seen = []
    for item in KeepAliveStream(source, INTERVAL):
        seen.append(item)
        if "a" in seen and seen[seen.index("a") :].count(KEEPALIVE) == 3:
            source.gate.set()
    silence = seen[seen.index("a") + 1 : seen.index("b")]
    assert len(silence) >= 3 and all(item is KEEPALIVE for item in silence)
    assert [item for item in seen if item is not KEEPALIVE] == ["a", "b"]


def test_events_pass_in_order_even_beyond_the_queue_size():
    items = list(range(QUEUE_SIZE * 3))
    source = GatedSource(before=items, after=())
    source.gate.set()
    received = [item for item in KeepAliveStream(source, INTERVAL) if item is not KEEPALIVE]
    assert received == items


def test_the_end_of_the_source_ends_the_stream_and_runs_its_clean_up():
    source = GatedSource()
    source.gate.set()
    stream = KeepAliveStream(source, INTERVAL)
    assert [item for item in stream if item is not KEEPALIVE] == ["a", "b"]
    assert source.finished.is_set()


def test_a_source_exception_is_raised_on_the_consumer_side():
    error = UpstreamError("connection reset")
    source = GatedSource(error=error)
    source.gate.set()
    received = []
    with pytest.raises(UpstreamError) as caught:
        for item in KeepAliveStream(source, INTERVAL):
            received.append(item)
    assert caught.value is error
    assert [item for item in received if item is not KEEPALIVE] == ["a", "b"]


def test_close_closes_a_blocked_source_as_soon_as_it_yields_again():
    source = GatedSource(after=("b", "c"))
    stream = KeepAliveStream(source, INTERVAL)
    assert first_event(stream) == "a"
    stream.close()
    source.gate.set()  # the source wakes up after the consumer left
    stream.join(JOIN_SECONDS)
    assert source.finished.is_set()
    assert source.produced == ["a", "b"]  # nothing was asked of it after close()


def test_close_stops_a_source_whose_output_fills_the_queue():
    source = GatedSource(before=range(QUEUE_SIZE * 10), after=())
    stream = KeepAliveStream(source, INTERVAL)
    assert first_event(stream) == 0
    stream.close()
    stream.join(JOIN_SECONDS)
    assert source.finished.is_set()
    assert len(source.produced) < QUEUE_SIZE * 10


def test_an_interrupted_stream_ends_with_the_shutdown_error_and_closes_its_source():
    source = GatedSource()
    stream = KeepAliveStream(source, 60.0)  # a long interval: only the interrupt wakes it
    events = iter(stream)
    assert first_event(events) == "a"
    stream.interrupt()  # what the shutdown watcher does near the end of the grace
    with pytest.raises(ServiceShuttingDown):
        next(events)
    stream.close()
    source.gate.set()
    assert source.finished.wait(JOIN_SECONDS)


GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import gevent
    from gevent.event import Event
    from greenlet import getcurrent

    from kimi.errors import ServiceShuttingDown
    from kimi.events import ChatOpened
    from kimi.keepalive import KeepAliveStream, SideWrites

    def source(gate, readers, closed):
        try:
            yield ChatOpened("chat1")
            yield "a"  # the first content: handed over after it
            readers.append(getcurrent())
            gate.wait()  # Kimi silent
            yield "b"
        finally:
            closed.append(True)

    # Hand-over, then keep-alives written beside the body while the consumer waits for Kimi.
    gate, readers, closed, written = Event(), [], [], []
    side = SideWrites(b": ka")
    side.attach(written.append)
    stream = KeepAliveStream(source(gate, readers, closed), 0.05, side)
    gevent.spawn_later(0.4, gate.set)
    received = [piece for piece in side.body(stream)]
    print("received", [r for r in received if isinstance(r, str)])
    print("read by the consumer", readers == [getcurrent()])
    print("keep-alives in the silence", len(written) >= 3, set(written))
    side.end()
    stream.close()
    count = len(written)
    gevent.sleep(0.2)
    print("none after the end", len(written) == count, "closed", closed)

    # An interrupt reaches a consumer blocked in the source's read.
    gate, readers, closed = Event(), [], []
    side = SideWrites(b": ka")
    stream = KeepAliveStream(source(gate, readers, closed), 60.0, side)
    events = iter(stream)
    print("first", next(e for e in events if e == "a"))
    print("nothing ready after it", not stream.ready())  # its write is not held back
    gevent.spawn_later(0.1, stream.interrupt)
    try:
        next(events)
    except ServiceShuttingDown:
        print("interrupted in the read", readers == [getcurrent()], "closed", closed)
    stream.close()
    """
)


def test_under_gevent_the_consumer_reads_after_the_first_content_and_keepalives_go_beside():
    assert child_output(GEVENT_SCRIPT) == [
        "received ['a', 'b']",
        "read by the consumer True",
        "keep-alives in the silence True {b': ka'}",
        "none after the end True closed [True]",
        "first a",
        "nothing ready after it True",
        "interrupted in the read True closed [True]",
    ]
