"""A deadline on reading one request body from the client's socket.

gunicorn's workers bound the wait for a request's headers, but not for its body: a client that
sends ``Content-Length: 1000000`` and then one byte a minute would hold its greenlet (or, under
gthread, its thread) for as long as it likes. Under gunicorn the WSGI environ carries the
client's socket (``gunicorn.socket``), so each read of the body is given what is left of
``REQUEST_BODY_TIMEOUT`` as the socket's timeout. A body that does not arrive in time is a 408,
and the socket's reading side is shut so that gunicorn, which would otherwise try to drain the
rest of the body before the next request on the connection, closes it at once.

Without gunicorn (Vercel, the Flask test client) there is no socket in the environ and no
deadline: there the platform's proxy receives the whole body before the function runs.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, BinaryIO

from werkzeug.exceptions import ClientDisconnected

from .errors import RequestTimeout

log = logging.getLogger(__name__)

GUNICORN_SOCKET = "gunicorn.socket"


class DeadlineBody:
    """``stream`` read with a total deadline enforced on ``sock``; a file-like ``read(n)``."""

    def __init__(self, stream: BinaryIO, sock: socket.socket, seconds: float) -> None:
        self._stream = stream
        self._sock = sock
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def read(self, size: int = -1) -> bytes:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        saved = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._stream.read(size)
        except TimeoutError:
            raise self._timed_out() from None
        except ClientDisconnected as exc:
            # werkzeug's length-limited stream reports any OSError, a timeout too, as this.
            if isinstance(exc.__context__, TimeoutError):
                raise self._timed_out() from None
            raise
        finally:
            self._sock.settimeout(saved)

    def _timed_out(self) -> RequestTimeout:
        try:
            self._sock.shutdown(socket.SHUT_RD)  # nothing more is read from this client
        except OSError:
            pass  # already gone: nothing left to shut
        log.info("a request body did not arrive within %g s", self._seconds)
        return RequestTimeout(
            f"The request body did not arrive within {self._seconds:g} s "
            "(REQUEST_BODY_TIMEOUT); send it again on a faster connection.",
        )


def body_with_deadline(stream: BinaryIO, environ: dict[str, Any], seconds: float) -> BinaryIO:
    """``stream``, with each read bounded by the deadline when the client's socket is known."""
    sock = environ.get(GUNICORN_SOCKET)
    if sock is None or seconds <= 0:
        return stream
    return DeadlineBody(stream, sock, seconds)  # type: ignore[return-value]
