"""Streaming a turn as server-sent events, whatever the surface's encoder writes.

Every streamed route does the same around its encoder: take a stream slot before anything
reaches Kimi, fill silences with keep-alives, wait past the chat's id for the first content
event (until then a failure is still a real HTTP error), and give everything back when the
body ends or the client goes away.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response

from .completions import TurnStream
from .events import ChatOpened
from .keepalive import KeepAliveStream
from .service import KimiService

# No Connection header: hop-by-hop headers are the server's to set, not a WSGI app's (PEP 3333).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Encode = Callable[[Iterable[Any]], Iterator[bytes]]


def stream_turn(kimi: KimiService, turn: TurnStream, encode: Encode) -> Response:
    """The turn's events, written by ``encode``, as a ``text/event-stream`` response."""
    slots = kimi.stream_slots
    slots.take()  # before anything reaches Kimi
    events = KeepAliveStream(turn, kimi.settings.keepalive_seconds)
    iterator = iter(events)
    try:
        # Before the first byte a failure is still a real HTTP error: wait for content (or a
        # keep-alive), past the chat's id.
        head = until_content(iterator)
    except BaseException:
        events.close()
        slots.give_back()
        raise
    finished = False

    def finish() -> None:
        nonlocal finished
        if not finished:
            finished = True
            events.close()
            slots.give_back()

    def body() -> Iterator[bytes]:
        try:
            yield from batched(encode(itertools.chain(head, iterator)), events.ready)
        finally:
            finish()

    response = Response(body(), mimetype="text/event-stream", headers=STREAM_HEADERS)
    # Also when the client is gone before the body started: a generator that never ran has no
    # finally to run.
    response.call_on_close(finish)
    return response


def batched(pieces: Iterator[bytes], more_ready: Callable[[], bool]) -> Iterator[bytes]:
    """Join the pieces that are ready together: one socket write for a burst of events."""
    batch: list[bytes] = []
    for piece in pieces:
        batch.append(piece)
        if not more_ready():
            yield b"".join(batch)
            batch.clear()
    if batch:
        yield b"".join(batch)


def until_content(events: Iterator[Any]) -> list[Any]:
    """The items up to the first one that is not a ``ChatOpened``, that one included."""
    head = []
    for item in events:
        head.append(item)
        if not isinstance(item, ChatOpened):
            break
    return head
