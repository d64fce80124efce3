"""Reading a streamed upstream body under gevent without starting a gevent ``Timeout`` per read.

A gevent socket with a timeout (the read timeout, ``KIMI_READ_TIMEOUT``) first tries every
``recv`` (failing with ``EAGAIN`` when nothing has come yet: an exception raised and caught), then
waits under a new ``Timeout`` object. Kimi sends one small chunk per event, so that was a share
of every relayed event. Here the reader waits for the socket to be readable first, then reads,
and the read timeout is one timer per response, re-armed lazily: a silence longer than the read
timeout while waiting raises ``TimeoutError`` in the reader, as the socket would have.

Pure plumbing over gevent's hub; ``socket_reads`` answers None for anything else (a thread
worker, a socket that is not gevent's), and the caller reads the buffered file as before.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from greenlet import getcurrent


def socket_reads(fp: Any) -> GreenReads | None:
    """A reader for ``fp`` (the response's buffered reader over a gevent socket), or None."""
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    hub = getattr(sock, "hub", None)
    watcher = getattr(sock, "_read_event", None)
    if hub is None or watcher is None or not hasattr(fp, "read1"):
        return None
    timeout = sock.gettimeout()
    if timeout is not None and timeout <= 0:
        return None  # a non-blocking socket: not ours to wait on
    return GreenReads(fp, sock, hub, watcher, timeout)


class GreenReads:
    """``read(size)`` like the buffered reader's ``read1``; ``close()`` stops the timer."""

    def __init__(self, fp: Any, sock: Any, hub: Any, watcher: Any, timeout: float | None):
        self._fp = fp
        self._sock = sock
        self._hub = hub
        self._watcher = watcher
        self._timeout = timeout
        self._started = False
        self._waiting_since: float | None = None  # time.monotonic() of the wait under way
        self._reader: Any = None  # the greenlet waiting
        self._timer: Any = None

    def read(self, size: int) -> bytes:
        if not self._started:
            # What the buffered reader already holds (read with the headers), else one read;
            # either way its buffer is empty afterwards, and the socket is read directly.
            self._started = True
            return self._fp.read1(size)
        sock = self._sock
        # TLS may hold decrypted bytes already: waiting on the socket then would wait for more.
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            self._wait()
        return sock.recv(size)

    def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()

    def _wait(self) -> None:
        if self._timeout is None:
            self._hub.wait(self._watcher)
            return
        self._waiting_since = time.monotonic()
        self._reader = getcurrent()
        if self._timer is None:
            self._arm(self._timeout)
        try:
            self._hub.wait(self._watcher)
        finally:
            self._waiting_since = None

    def _arm(self, seconds: float) -> None:
        self._timer = self._hub.loop.timer(seconds)
        self._timer.start(self._check)

    def _check(self) -> None:
        """The timer fired: raise the timeout in a reader silent for too long, else re-arm
        for what is left (not while nobody waits: the next wait arms it again)."""
        self.close()
        since = self._waiting_since
        if since is None:
            return
        left = since + self._timeout - time.monotonic()
        if left > 0:
            self._arm(left)
            return
        self._reader.throw(TimeoutError("timed out"))
