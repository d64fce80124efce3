"""The upstream HTTP session (kimi/upstream/http.py): its lean request preparation and the
chunked-body reader of streamed answers (kimi/upstream/chunked.py), the decoder with input split
at every offset, both against a real loopback HTTP server."""

from __future__ import annotations

import gzip
import http.client
import re
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from kimi.errors import UpstreamCut, UpstreamTimeout
from kimi.upstream.chunked import ChunkedDecoder, ChunkedError
from kimi.upstream.http import (
    ONE_WRITE_BODY_LIMIT,
    make_http_session,
    translate_transport_errors,
)

PIECES = [b"data: one\n\n", b"x" * 300, "data: \u4f60\u597d\n\n".encode(), b"\r\n"]
BODY = (
    b"b\r\n" + PIECES[0] + b"\r\n"
    b"12C;name=value\r\n" + PIECES[1] + b"\r\n"
    + b"%x\r\n" % len(PIECES[2]) + PIECES[2] + b"\r\n"
    b"2\r\n\r\n\r\n"
    b"0\r\nTrailer: yes\r\n\r\n"
)  # fmt: skip
PAYLOAD = b"".join(PIECES)


def decode(parts: list[bytes]) -> tuple[bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    return b"".join(decoder.feed(part) for part in parts), decoder


def test_a_body_in_one_read():
    payload, decoder = decode([BODY])
    assert payload == PAYLOAD
    assert decoder.done and decoder.extra == 0


@pytest.mark.parametrize("offset", range(1, len(BODY)))
def test_a_body_split_at_every_offset(offset):
    payload, decoder = decode([BODY[:offset], BODY[offset:]])
    assert payload == PAYLOAD
    assert decoder.done


def test_a_body_byte_by_byte():
    payload, decoder = decode([BODY[i : i + 1] for i in range(len(BODY))])
    assert payload == PAYLOAD
    assert decoder.done


def test_not_done_before_the_last_chunk_and_its_blank_line():
    _, decoder = decode([BODY[:-2]])
    assert not decoder.done


def test_bytes_after_the_end_are_counted():
    _, decoder = decode([BODY + b"HTTP/1.1 200"])
    assert decoder.done and decoder.extra == len(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nab\r\n", b"-1\r\n", b"\r\n", b"2\r\nabXY", b"0x2\r\nab\r\n", b"9" * 5000],
    ids=["not-hex", "negative", "empty-size", "no-crlf-after-data", "prefix", "endless-line"],
)
def test_what_is_not_chunked_is_an_error(body):
    with pytest.raises(ChunkedError):
        decode([body])


class RawServer:
    """A loopback HTTP/1.1 server that answers each request with scripted raw bytes, keeping
    the connection open between requests (to see it reused)."""

    def __init__(self, answers: list[list[bytes | float]]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            connection, _ = self._listener.accept()
            self.connections += 1
            with connection:
                while self.answers and self._read_request(connection, self.requests):
                    for part in self.answers.pop(0):
                        if isinstance(part, float):
                            threading.Event().wait(part)
                        else:
                            connection.sendall(part)

    @staticmethod
    def _read_request(connection: socket.socket, seen: list[bytes]) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(4096)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        while length and len(body) < int(length[1]):
            body += connection.recv(4096)
        seen.append(head + b"\r\n\r\n" + body)
        return True

    def close(self) -> None:
        self._listener.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def serve() -> Iterator:
    servers: list[RawServer] = []

    def start(*answers: list[bytes | float]) -> RawServer:
        servers.append(RawServer(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def stream(url: str, session: requests.Session, timeout: float = 5.0) -> bytes:
    with translate_transport_errors("streaming the answer"):
        response = session.post(url, data=b"{}", stream=True, timeout=timeout)
        try:
            return b"".join(response.iter_content(chunk_size=None))
        finally:
            response.close()


def test_a_streamed_body_arrives_whole_and_its_connection_is_reused(serve):
    pieces: list[bytes | float] = [HEAD]
    for offset in range(0, len(BODY), 7):  # written in small pieces, with pauses
        pieces += [BODY[offset : offset + 7], 0.001]
    server = serve(pieces, [HEAD, BODY])
    session = make_http_session()
    assert stream(server.url, session) == PAYLOAD
    assert stream(server.url, session) == PAYLOAD
    assert server.connections == 1


def test_a_body_cut_before_its_end_is_upstream_cut(serve):
    server = serve([HEAD, BODY[:40]])
    with pytest.raises(UpstreamCut):
        stream(server.url, make_http_session())


def test_silence_longer_than_the_read_timeout_is_upstream_timeout(serve):
    server = serve([HEAD, BODY[:40], 1.0, BODY[40:]])
    with pytest.raises(UpstreamTimeout, match="silent"):
        stream(server.url, make_http_session(), timeout=0.2)


def test_an_invalid_chunk_is_upstream_cut(serve):
    server = serve([HEAD, b"zz\r\nhello\r\n"])
    with pytest.raises(UpstreamCut):
        stream(server.url, make_http_session())


def test_a_compressed_body_is_still_decoded(serve):
    packed = gzip.compress(PAYLOAD)
    head = HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
    server = serve([head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)])
    assert stream(server.url, make_http_session()) == PAYLOAD


def test_a_call_carries_the_session_and_call_headers_and_its_json_body(serve):
    server = serve([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"])
    response = make_http_session().post(
        server.url + "/api/chat?x=1", json={"chat_id": "c1"}, headers={"X-Msh-Platform": "web"}
    )
    assert response.json() == {}
    sent = server.requests[0]
    assert sent.startswith(b"POST /api/chat?x=1 HTTP/1.1\r\n")
    assert b"X-Msh-Platform: web\r\n" in sent and b"User-Agent: Mozilla/5.0" in sent
    assert sent.endswith(b'\r\n\r\n{"chat_id": "c1"}')


def test_cookies_kimi_sets_are_never_sent_back(serve):
    cookie = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n"
    server = serve([cookie], [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    session = make_http_session()
    session.get(server.url + "/a")
    session.get(server.url + "/b")
    assert b"Cookie" not in server.requests[1]


def test_a_ca_bundle_named_in_the_environment_is_used_without_reading_it_per_call(monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/bundle.pem")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    session = make_http_session()
    assert session.verify == "/etc/ssl/certs/bundle.pem"
    assert session.trust_env is False


def test_a_small_body_leaves_with_the_request_head_and_a_large_one_arrives_whole(
    serve, monkeypatch
):
    writes: list[bytes] = []
    send = http.client.HTTPConnection.send

    def recording_send(self, data):
        writes.append(bytes(data))
        return send(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recording_send)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    server = serve([ok], [ok])
    session = make_http_session()
    session.post(server.url + "/small", json={"chat_id": "c1"})
    assert len(writes) == 1 and writes[0].endswith(b'\r\n\r\n{"chat_id": "c1"}')
    large = b"x" * (ONE_WRITE_BODY_LIMIT + 1)
    session.post(server.url + "/large", data=large)
    assert server.requests[1].endswith(b"\r\n\r\n" + large)
