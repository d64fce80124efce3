"""Writes to a plain socket in the gevent worker: one ``send`` when the kernel takes it all.

gevent's ``socket.sendall`` asks the kernel for the send buffer's size (a ``getsockopt``) and
sets up a deadline on every call, before its first send. A stream writes a small piece per event
to a client whose socket buffer nearly always has room, so that was a syscall and a share of the
Python per relayed event. Here the first ``send`` goes straight to the non-blocking socket; only
what the kernel did not take goes through gevent's own ``sendall``, which waits as before, under
the socket's timeout.

TLS sockets (gevent's ``SSLSocket`` subclasses the plain one) keep gevent's method: their bytes
go through the TLS object. gunicorn.conf.py installs this in each gevent worker.
"""

from __future__ import annotations

from typing import Any

from gevent import socket as green_socket


def install() -> None:
    """Give gevent's plain socket class the one-send ``sendall`` (once per process)."""
    plain = green_socket.socket
    gevent_sendall = plain.sendall
    if getattr(gevent_sendall, "one_send_first", False):
        return

    def sendall(self: Any, data: Any, flags: int = 0) -> None:
        if type(self) is not plain:  # TLS, or anything else built on the plain socket
            return gevent_sendall(self, data, flags)
        try:
            sent = self._sock.send(data, flags)  # the real socket, non-blocking under gevent
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            return gevent_sendall(self, memoryview(data)[sent:], flags)
        return None

    sendall.one_send_first = True
    sendall.__doc__ = gevent_sendall.__doc__
    plain.sendall = sendall
