"""Client writes in the gevent worker (kimi/green_writes.py): one send when the kernel takes it
all, gevent's own sendall for what it does not (a full buffer waits, in order, under the
timeout), and TLS sockets untouched. Run in a monkey-patched child process, as a worker is."""

from __future__ import annotations

import textwrap

from helpers import child_output

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import socket

    import gevent

    from kimi import green_writes

    gevent_sendall = socket.socket.sendall
    waited = []  # calls that went on to gevent's own sendall

    def counted(self, data, flags=0):
        waited.append(len(data))
        return gevent_sendall(self, data, flags)

    socket.socket.sendall = counted
    green_writes.install()
    green_writes.install()  # twice is once

    left, right = socket.socketpair()
    left.sendall(b"data: one")
    print("small", right.recv(100), "by gevent", waited)

    # Far more than the socket buffers hold: the rest waits for the reader, in order.
    big = bytes(range(256)) * 40_000
    received = bytearray()

    def read_slowly():
        while len(received) < len(big):
            gevent.sleep(0.001)
            received.extend(right.recv(65536))

    reader = gevent.spawn(read_slowly)
    left.sendall(big)
    reader.join(timeout=30)
    print("big", received == big, "rest by gevent", 0 < sum(waited) < len(big))

    # A reader that never reads: the socket's timeout still applies to the rest.
    left.settimeout(0.2)
    try:
        left.sendall(big)
    except socket.timeout:
        print("timed out")

    class Wrapped(socket.socket):  # what gevent's SSLSocket is to the plain socket
        def send(self, data, flags=0, timeout=None):
            sends.append(bytes(data))
            return len(data)

    sends = []
    a, b = socket.socketpair()
    wrapped = Wrapped(fileno=a.detach())
    wrapped.sendall(b"through the subclass")
    print("subclass", sends)
    """
)


def test_client_writes_are_one_send_and_fall_back_to_gevent_when_the_buffer_is_full():
    assert child_output(SCRIPT) == [
        "small b'data: one' by gevent []",
        "big True rest by gevent True",
        "timed out",
        "subclass [b'through the subclass']",
    ]
