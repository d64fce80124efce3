"""The streamed-body reader under gevent (kimi/upstream/green_reads.py): the socket is read
directly and the read timeout is one lazy timer per response. Run in a monkey-patched child
process, as gunicorn's gevent worker runs the service, against the loopback server of
tests/test_upstream_http.py."""

from __future__ import annotations

import textwrap

from helpers import child_output

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import gevent

    from kimi.errors import UpstreamCut, UpstreamTimeout
    from kimi.upstream import chunked
    from kimi.upstream.http import make_http_session
    from tests.test_upstream_http import BODY, HEAD, PAYLOAD, RawServer, stream

    used = []
    socket_reads = chunked.socket_reads
    chunked.socket_reads = lambda fp: used.append(socket_reads(fp)) or used[-1]

    def outcome(server, timeout=5.0):
        try:
            return stream(server.url, make_http_session(), timeout) == PAYLOAD
        except (UpstreamCut, UpstreamTimeout) as exc:
            return type(exc).__name__

    pieces = [HEAD]
    for offset in range(0, len(BODY), 7):
        pieces += [BODY[offset : offset + 7], 0.001]
    server = RawServer([pieces, [HEAD, BODY]])
    session = make_http_session()
    print("whole", stream(server.url, session) == PAYLOAD, stream(server.url, session) == PAYLOAD)
    print("connections", server.connections)
    print("silent", outcome(RawServer([[HEAD, BODY[:40], 1.0, BODY[40:]]]), timeout=0.2))
    print("slow", outcome(RawServer([[HEAD, BODY[:40], 0.1, BODY[40:70], 0.1, BODY[70:]]]), 0.3))
    print("cut", outcome(RawServer([[HEAD, BODY[:40]]])))
    # Two streams side by side on one hub: each reader is woken by its own socket.
    servers = [RawServer([[HEAD, BODY[:40], 0.05 * n, BODY[40:]]]) for n in range(1, 4)]
    jobs = [gevent.spawn(outcome, s) for s in servers]
    gevent.joinall(jobs, timeout=10)
    print("side by side", [job.value for job in jobs])
    print("gevent reader", all(type(r).__name__ == "GreenReads" for r in used), len(used))
    """
)


def test_streamed_bodies_under_gevent_arrive_whole_and_time_out_when_silent():
    lines = dict(line.split(" ", 1) for line in child_output(SCRIPT) if " " in line)
    assert lines["whole"] == "True True"
    assert lines["connections"] == "1"  # the connection went back to the pool after each body
    assert lines["silent"] == "UpstreamTimeout"  # 1 s of silence, a 0.2 s read timeout
    assert lines["slow"] == "True"  # pauses shorter than the read timeout are no timeout
    assert lines["cut"] == "UpstreamCut"
    assert lines["side"] == "by side [True, True, True]"
    assert lines["gevent"].startswith("reader True")
