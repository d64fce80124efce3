"""Streaming a turn as server-sent events, whatever the surface's encoder writes.

Every streamed route does the same around its encoder: take a stream slot before anything
reaches Kimi, fill silences with keep-alives, wait past the chat's id for the first content
event (until then a failure is still a real HTTP error), and give everything back when the
body ends or the client goes away.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response

from .completions import TurnStream
from .events import ChatOpened
from .keepalive import KEEPALIVE_LINE, KeepAliveStream, SideWrites
from .service import KimiService

# No Connection header: hop-by-hop headers are the server's to set, not a WSGI app's (PEP 3333).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Encode = Callable[[Iterable[Any]], Iterator[bytes]]


def stream_turn(
    kimi: KimiService, turn: TurnStream, encode: Encode, keepalive: bytes = KEEPALIVE_LINE
) -> Response:
    """The turn's events, written by ``encode``, as a ``text/event-stream`` response;
    ``keepalive`` is what the encoder writes for ``KEEPALIVE`` (written directly mid-stream)."""
    slots = kimi.stream_slots
    slots.take()  # before anything reaches Kimi
    # Under gevent the turn is handed to the response's greenlet after its first content event,
    # and silences after that are filled with writes beside the body (keepalive.py).
    side = SideWrites(keepalive) if _green() else None
    events = KeepAliveStream(turn, kimi.settings.keepalive_seconds, side)
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
            if side is not None:
                side.end()  # before the server ends the body: no keep-alive after its end
            events.close()
            slots.give_back()

    def body() -> Iterator[bytes]:
        try:
            pieces = batched(encode(itertools.chain(head, iterator)), events.ready)
            yield from side.body(pieces) if side is not None else pieces
        finally:
            finish()

    response = _StreamResponse(body(), mimetype="text/event-stream", headers=STREAM_HEADERS)
    response.side = side
    # Also when the client is gone before the body started: a generator that never ran has no
    # finally to run.
    response.call_on_close(finish)
    return response


class _StreamResponse(Response):
    """werkzeug's response, but its body goes to the server as it is (every piece is bytes
    already): no wrapping iterators per piece. Closing it closes the response, which runs its
    ``call_on_close``. The server's ``write`` callable (PEP 3333, from ``start_response``) goes
    to the stream's side writes, the keep-alives written while the body waits for Kimi."""

    side: SideWrites | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "HEAD":  # no body: werkzeug's own way
            return super().__call__(environ, start_response)
        headers = self.get_wsgi_headers(environ)
        write = start_response(self.status, headers.to_wsgi_list())
        if self.side is not None:
            self.side.attach(write)
        return _Body(self.response, self.close)


class _Body:
    """The pieces for the server to iterate, and ``close`` for it to call at the end."""

    def __init__(self, pieces: Iterable[bytes], close: Callable[[], None]) -> None:
        self._pieces = pieces
        self.close = close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._pieces)


@functools.cache
def _green() -> bool:
    """Whether this process runs under gevent's monkey-patching (gunicorn's gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


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
