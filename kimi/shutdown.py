"""Draining at shutdown: a stream still running when the server's grace is nearly over ends with
an in-stream error (and its one-shot chat deleted) instead of being cut by the kill that follows.

gunicorn's master kills its workers ``graceful_timeout`` seconds after it asked them to stop;
gunicorn.conf.py calls ``begin`` from the worker's SIGTERM handler.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Protocol

# Time kept back from the grace for the streams to write their error and delete their chats.
MARGIN_SECONDS = 3.0


class Interruptible(Protocol):
    def interrupt(self) -> None: ...


_streams: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()
_requested = threading.Event()
_draining = threading.Event()
_grace_seconds = 0.0


def register(stream: Interruptible) -> None:
    """A stream to interrupt when the grace runs out (interrupted at once if it already has)."""
    with _lock:
        _streams.add(stream)
    if _draining.is_set():
        stream.interrupt()


def watch() -> None:
    """Start the watcher that ``begin`` wakes. Called once per worker, outside any signal
    handler: under gevent a signal handler runs in the event loop and may not block."""
    threading.Thread(target=_watch, name="kimi-shutdown-watch", daemon=True).start()


def begin(grace_seconds: float) -> None:
    """The server was asked to stop (safe to call from a signal handler)."""
    global _grace_seconds
    _grace_seconds = grace_seconds
    _requested.set()


def _watch() -> None:
    _requested.wait()
    grace = _grace_seconds
    time.sleep(max(0.0, grace - min(MARGIN_SECONDS, grace / 2)))
    _draining.set()
    with _lock:
        streams = list(_streams)
    for stream in streams:
        stream.interrupt()
