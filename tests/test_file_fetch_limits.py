"""Slow file sources: a total deadline for the whole fetch and a minimum rate for its body.

A ``TrickleSource`` on loopback sends its response a piece at a time with pauses, which no
socket timeout catches (every piece restarts it). Without the limits each of these fetches
would finish, seconds later, with a 200; with them it is cut off and the source sees its
client go away. Limits are set small so every test stays short.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers import chat, self_signed_certificate, upstream_calls

from kimi import create_app
from kimi.errors import BadRequest
from kimi.files.fetch import SafeFetcher
from kimi.files.fetch_budget import FetchBudget, FetchLimits
from kimi.settings import Settings

GEVENT_WORKER_LOG = "Using worker: gevent"

LIMIT = 1024 * 1024
PAUSE = 0.02  # between trickled bytes: 50 bytes a second
TRICKLED_BYTES = 200  # four seconds of trickle: far past every deadline set here
GONE_WITHIN = 5.0  # seconds the source waits to see its client leave
ACCEPT_POLL_SECONDS = 0.05
SHORT_DEADLINE = FetchLimits(total_seconds=0.5, min_bytes_per_second=1, rate_window_seconds=60)
FAST_ONLY = FetchLimits(total_seconds=30, min_bytes_per_second=1024, rate_window_seconds=0.3)


class TrickleSource:
    """A raw HTTP/1.1 server that answers every request with ``script``: a list of byte strings,
    each sent ``pause`` seconds after the one before. ``requested`` is set when a request was
    read, ``gone`` when the client left before the end, ``finished`` when all was sent."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script: list[bytes] = []
        self.pause = PAUSE
        self.requested = threading.Event()
        self.gone = threading.Event()
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._ssl_context = ssl_context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL_SECONDS)  # so that close() ends the loop soon
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(GONE_WITHIN)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            connection.settimeout(None)
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                if self._ssl_context is not None:
                    connection = self._ssl_context.wrap_socket(connection, server_side=True)
                self._read_request(connection)
                self.requested.set()
                for index, piece in enumerate(self.script):
                    if index and self._stop.wait(self.pause):
                        return
                    connection.sendall(piece)
            except OSError:
                self.gone.set()
                return
            self.finished.set()

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(4096)
            if not chunk:
                raise ConnectionError("the client sent no request")
            received += chunk


def trickled(head: bytes, body: bytes) -> list[bytes]:
    """``head`` at once, then the body one byte at a time."""
    return [head] + [body[i : i + 1] for i in range(len(body))]


def head_with(*headers: str) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


BODY = b"x" * TRICKLED_BYTES
SIZED = head_with("Content-Type: text/plain", f"Content-Length: {TRICKLED_BYTES}")
CHUNKED = head_with("Content-Type: text/plain", "Transfer-Encoding: chunked")
UNTIL_CLOSE = head_with("Content-Type: text/plain", "Connection: close")


@pytest.fixture
def source() -> Iterator[TrickleSource]:
    server = TrickleSource()
    yield server
    server.close()


def fetch(url: str, limits: FetchLimits) -> bytes:
    with (
        SafeFetcher(LIMIT, timeout=(2, 5), allow_private=True, limits=limits) as fetcher,
        fetcher.open(url) as fetched,
    ):
        return b"".join(fetched.iter_chunks())


def refused(url: str, limits: FetchLimits) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        fetch(url, limits)
    return caught.value


# --- the total deadline --------------------------------------------------------------------


def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(source: TrickleSource):
    source.script = trickled(SIZED, BODY)
    error = refused(source.url("/slow.txt"), SHORT_DEADLINE)
    assert error.code == "file_fetch_timeout"
    assert "'slow.txt'" in error.message and "127.0.0.1" in error.message
    assert "0.5 s (FILE_FETCH_TIMEOUT)" in error.message
    assert source.gone.wait(GONE_WITHIN)  # nobody reads from the source any more
    assert not source.finished.is_set()


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline(source: TrickleSource):
    head = SIZED.replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"p" * TRICKLED_BYTES + b"\r\n\r\n")
    source.script = trickled(b"", head + BODY)
    error = refused(source.url("/report.pdf"), SHORT_DEADLINE)
    assert error.code == "file_fetch_timeout"
    assert "'report.pdf'" in error.message
    assert source.gone.wait(GONE_WITHIN)


@pytest.mark.parametrize("head", [CHUNKED, UNTIL_CLOSE], ids=["chunked", "until-close"])
def test_a_body_without_a_length_is_never_taken_whole_when_cut_off(
    source: TrickleSource, head: bytes
):
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY) if head is CHUNKED else BODY
    source.script = trickled(head, body)
    # Ended by the deadline, a body that runs until the connection closes looks complete.
    assert refused(source.url("/notes.txt"), SHORT_DEADLINE).code == "file_fetch_timeout"


# --- the minimum rate ----------------------------------------------------------------------


def test_a_body_below_the_minimum_rate_is_dropped_before_the_deadline(source: TrickleSource):
    source.script = trickled(SIZED, BODY)
    error = refused(source.url("/slow.txt"), FAST_ONLY)
    assert error.code == "file_fetch_too_slow"
    assert "'slow.txt'" in error.message and "1 KB/s (FILE_FETCH_MIN_KBPS)" in error.message
    assert source.gone.wait(GONE_WITHIN)


def test_a_steady_body_above_the_minimum_rate_arrives_whole(source: TrickleSource):
    piece = b"y" * 2048  # 2 KB every 20 ms: 100 KB/s against a minimum of 1 KB/s
    body = piece * 50
    source.script = [head_with(f"Content-Length: {len(body)}")] + [piece] * 50
    assert fetch(source.url("/steady.bin"), FAST_ONLY) == body


def test_a_slow_start_counts_against_the_deadline_but_not_the_rate(source: TrickleSource):
    source.pause = 0.5  # the headers come after a pause longer than the rate window
    source.script = [b"", head_with("Content-Length: 5") + b"hello"]
    assert fetch(source.url("/late.txt"), FAST_ONLY) == b"hello"


# --- https: the same cut-off through TLS ---------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), "localhost")


def test_a_trickling_https_source_is_cut_off_at_the_deadline(certificate: tuple[str, str]):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = TrickleSource(ssl_context=context)
    server.script = trickled(SIZED, BODY)
    try:
        fetcher = SafeFetcher(LIMIT, allow_private=True, verify=cert, limits=SHORT_DEADLINE)
        with pytest.raises(BadRequest) as caught, fetcher:
            with fetcher.open(server.url("/secret.txt", host="localhost", scheme="https")) as f:
                b"".join(f.iter_chunks())
        assert caught.value.code == "file_fetch_timeout"
        assert server.gone.wait(GONE_WITHIN)
    finally:
        server.close()


# --- the budget's arithmetic, on a clock the test moves --------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def budget_on(clock: ManualClock, limits: FetchLimits) -> FetchBudget:
    return FetchBudget(limits, "data.csv", "files.example.com", clock=clock)


RATE = FetchLimits(total_seconds=100, min_bytes_per_second=1024, rate_window_seconds=10)


def test_every_window_at_the_minimum_rate_passes(clock: ManualClock):
    budget = budget_on(clock, RATE)
    budget.body_started()
    for _ in range(5):  # 50 s at exactly 1 KB/s
        clock.now += 10
        budget.received(10 * 1024)
    budget.close()


def test_a_window_below_the_minimum_rate_fails_even_after_fast_ones(clock: ManualClock):
    budget = budget_on(clock, RATE)
    budget.body_started()
    clock.now += 10
    budget.received(1024 * 1024)  # a fast first window earns no credit for the next
    clock.now += 10
    with pytest.raises(BadRequest) as caught:
        budget.received(10 * 1024 - 1)
    assert caught.value.code == "file_fetch_too_slow"
    assert "'data.csv'" in caught.value.message and "files.example.com" in caught.value.message
    assert "gave up after 20.0 s" in caught.value.message
    budget.close()


def test_the_deadline_holds_however_fast_the_bytes_come(clock: ManualClock):
    budget = budget_on(clock, RATE)
    budget.body_started()
    clock.now += 100
    with pytest.raises(BadRequest) as caught:
        budget.received(LIMIT)
    assert caught.value.code == "file_fetch_timeout"
    with pytest.raises(BadRequest):
        budget.check()  # and it stays spent
    budget.close()


def test_waiting_for_the_headers_is_bounded_only_by_the_deadline(clock: ManualClock):
    budget = budget_on(clock, RATE)
    clock.now += 99
    budget.check()  # no body yet: no rate to miss
    assert budget.remaining() == pytest.approx(1)
    budget.close()


# --- settings and the service --------------------------------------------------------------


def test_the_limits_are_read_from_the_environment():
    env = {"FILE_FETCH_TIMEOUT": "5", "FILE_FETCH_MIN_KBPS": "2.5", "FILE_FETCH_RATE_WINDOW": "3"}
    settings = Settings.from_env(env)
    assert settings.file_fetch_timeout == 5
    assert settings.file_fetch_min_kbps == 2.5
    assert settings.file_fetch_rate_window == 3
    defaults = Settings.from_env({})
    assert (defaults.file_fetch_timeout, defaults.file_fetch_min_kbps) == (60, 10)


@pytest.mark.parametrize("protocol", ["web", "legacy"])
def test_a_slow_file_url_is_a_400_naming_the_file_before_any_chat(
    make_settings, auth, emulator, source: TrickleSource
):
    source.script = trickled(SIZED, BODY)
    settings = make_settings(allow_private_file_urls=True, file_fetch_timeout=0.5)
    part = {"type": "file", "file_url": {"url": source.url("/minutes.txt")}}
    content = [{"type": "text", "text": "Summarise it"}, part]
    response = chat(
        create_app(settings).test_client(), auth, messages=[{"role": "user", "content": content}]
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "file_fetch_timeout"
    assert "'minutes.txt'" in error["message"]
    assert emulator.state.chats() == {}
    assert upstream_calls(emulator, "completion") == upstream_calls(emulator, "Chat") == []


@pytest.mark.parametrize(
    "gunicorn_server",
    [{"ALLOW_PRIVATE_FILE_URLS": "1", "FILE_FETCH_TIMEOUT": "1", "WEB_CONCURRENCY": "1"}],
    indirect=True,
)
def test_under_the_gevent_worker_a_slow_source_is_cut_off_without_blocking_the_worker(
    gunicorn_server, new_account, source: TrickleSource
):
    url, process = gunicorn_server
    source.script = trickled(SIZED, BODY)
    part = {"type": "file", "file_url": {"url": source.url("/minutes.txt")}}
    body = {"model": "kimi", "messages": [{"role": "user", "content": [part]}]}
    headers = {"Authorization": f"Bearer {new_account().refresh_token}"}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            requests.post, url + "/v1/chat/completions", json=body, headers=headers, timeout=30
        )
        assert source.requested.wait(GONE_WITHIN)
        # The one worker answers another request while the fetch waits on the source.
        assert requests.get(url + "/ping", timeout=5).ok
        assert not pending.done()
        response = pending.result()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "file_fetch_timeout" and "'minutes.txt'" in error["message"]
    assert source.gone.wait(GONE_WITHIN)
    process.terminate()
    assert GEVENT_WORKER_LOG in process.communicate(timeout=30)[0].decode()
