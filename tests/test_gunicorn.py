"""The service under a real gunicorn, started with the Procfile's command and ``PORT``.

The shipped gunicorn.conf.py as it runs in production: the gevent worker, keep-alive comments,
clean-up when a client leaves, many slow streams at once, and the per-worker stream cap.
"""

from __future__ import annotations

import resource
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers import sse_events, stream_chat_over_http, streamed_text, wait_until

from kimi.settings import PROTOCOLS

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

REPLY_PREFIX = "Emulator reply to: "
KEEPALIVE_LINE = b": keep-alive\n\n"
GEVENT_WORKER_LOG = "Using worker: gevent"
CONCURRENT_STREAMS = 200
# Each of the concurrent streams lasts a few seconds: about ten frames this far apart.
CONCURRENT_FRAME_DELAY = 0.25
# The client and the emulator each hold a socket per stream in this process, plus files.
FD_LIMIT_WANTED = 4 * CONCURRENT_STREAMS + 1024
# A reply long enough that, frame by frame, it would still be running well after the service
# noticed the client left: its deletion then shows the clean-up, not the natural end.
LONG_PROMPT = " ".join(f"word{n}" for n in range(30))
LONG_FRAME_PAUSE = 0.5
LEFT_CLIENT_CLEANUP_SECONDS = 4.0


def stop_and_read_output(process: subprocess.Popen) -> str:
    """SIGTERM the server, wait for it, and return everything it printed."""
    process.terminate()
    return process.communicate(timeout=30)[0].decode()


def finished_stream(url: str, token: str) -> tuple[int, str, list[bytes]]:
    """Status, content type and the pieces of a stream read to its end, as they arrived.

    The response is dropped on return: requests keeps a finished stream's socket open until
    then, and an idle keep-alive connection holds a gevent worker's graceful stop for seconds.
    """
    response = stream_chat_over_http(url, token)
    pieces = list(response.iter_content(chunk_size=None))
    return response.status_code, response.headers["Content-Type"], pieces


def one_chat(emulator) -> dict:
    (chat,) = emulator.state.chats().values()
    return chat


def test_gunicorn_runs_the_gevent_worker_and_streams_chunk_by_chunk(
    gunicorn_server, account, emulator
):
    url, process = gunicorn_server
    emulator.state.add_fault("slow", seconds=0.05)
    status, content_type, pieces = finished_stream(url, account.refresh_token)
    assert status == 200
    assert content_type.startswith("text/event-stream")
    assert len(pieces) > 3  # delivered as it was produced, not buffered into one write
    events = sse_events(b"".join(pieces))
    text = streamed_text(events)
    assert text == REPLY_PREFIX + "hi"
    assert events[-1] == "[DONE]"
    assert GEVENT_WORKER_LOG in stop_and_read_output(process)


def test_gunicorn_access_log_never_shows_the_token(gunicorn_server, account):
    url, process = gunicorn_server
    requests.post(
        url + "/v1/chat/completions",
        json={"model": "kimi", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {account.refresh_token}"},
        timeout=30,
    )
    output = stop_and_read_output(process)
    assert "POST /v1/chat/completions" in output
    assert account.refresh_token not in output
    assert account.refresh_token[:20] not in output


def test_a_client_leaving_mid_stream_gets_its_one_shot_chat_deleted(
    gunicorn_server, account, emulator
):
    url, _ = gunicorn_server
    emulator.state.add_fault("slow", seconds=LONG_FRAME_PAUSE)
    response = stream_chat_over_http(url, account.refresh_token, LONG_PROMPT)
    received = b""
    for piece in response.iter_content(chunk_size=None):
        received += piece
        if streamed_text(sse_events(received)):
            break
    response.close()  # the client is gone, most of the answer still to come
    assert not one_chat(emulator)["deleted"]
    assert wait_until(lambda: one_chat(emulator)["deleted"], LEFT_CLIENT_CLEANUP_SECONDS)


@pytest.mark.parametrize(
    "gunicorn_server", [{"KEEPALIVE_SECONDS": "0.2"}], indirect=True, ids=["keepalive-0.2s"]
)
def test_keepalive_comments_fill_an_upstream_silence(gunicorn_server, account, emulator):
    url, _ = gunicorn_server
    emulator.state.add_fault("silence", seconds=1.0)
    response = stream_chat_over_http(url, account.refresh_token)
    assert response.status_code == 200
    pieces = list(response.iter_content(chunk_size=None))
    first_keepalive = next(n for n, piece in enumerate(pieces) if KEEPALIVE_LINE in piece)
    first_text = next(n for n, piece in enumerate(pieces) if streamed_text(sse_events(piece)))
    assert first_keepalive < first_text  # written while Kimi was silent, before the answer
    events = sse_events(b"".join(pieces))  # comment lines are no events to a client
    assert streamed_text(events) == REPLY_PREFIX + "hi"
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize(
    "gunicorn_server", [{"KEEPALIVE_SECONDS": "0.2"}], indirect=True, ids=["keepalive-0.2s"]
)
def test_keepalives_fill_silences_in_the_middle_of_an_answer(gunicorn_server, account, emulator):
    """After the first text the gevent worker's response reads Kimi itself; the keep-alives
    of later silences are written beside the body, between its pieces, never inside one."""
    url, _ = gunicorn_server
    emulator.state.add_fault("slow", seconds=0.5)  # every frame after the first, 0.5 s apart
    response = stream_chat_over_http(url, account.refresh_token, "one two three")
    assert response.status_code == 200
    body = b"".join(response.iter_content(chunk_size=None))
    blocks = body.split(b"\n\n")[:-1]  # each SSE event or comment, in order
    assert set(blocks) <= {KEEPALIVE_LINE[:-2]} | {b for b in blocks if b.startswith(b"data: ")}
    texts = [n for n, block in enumerate(blocks) if streamed_text(sse_events(block + b"\n\n"))]
    between = blocks[texts[0] : texts[-1]]
    assert between.count(KEEPALIVE_LINE[:-2]) >= 2  # silences after the answer began
    events = sse_events(body)
    assert streamed_text(events) == REPLY_PREFIX + "one two three"
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize(
    "gunicorn_server", [{"KEEPALIVE_SECONDS": "0.2"}], indirect=True, ids=["keepalive-0.2s"]
)
def test_anthropic_streams_get_ping_events_in_their_silences(gunicorn_server, account, emulator):
    url, _ = gunicorn_server
    emulator.state.add_fault("slow", seconds=0.5)
    response = requests.post(
        url + "/v1/messages",
        json={
            "model": "kimi",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "one two three"}],
        },
        headers={"x-api-key": account.refresh_token, "anthropic-version": "2023-06-01"},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200
    body = b"".join(response.iter_content(chunk_size=None)).decode()
    kinds = [block.split("\n", 1)[0] for block in body.split("\n\n") if block]
    first_delta = kinds.index("event: content_block_delta")
    assert "event: ping" in kinds[first_delta:]  # written in a silence mid-answer
    assert kinds[-1] == "event: message_stop"


def test_an_answer_cut_after_the_hand_over_ends_with_an_error_and_its_chat_goes(
    gunicorn_server, account, emulator
):
    """The response's own greenlet reads Kimi after the first text: a connection cut there is
    still the client's in-stream error (never a [DONE]), and the one-shot chat still goes."""
    url, _ = gunicorn_server
    emulator.state.add_fault("cut")
    status, _, pieces = finished_stream(url, account.refresh_token)
    events = sse_events(b"".join(pieces))
    assert status == 200
    assert "[DONE]" not in events
    assert events[-1]["error"]["type"] == "upstream_error"
    assert wait_until(lambda: one_chat(emulator)["deleted"], LEFT_CLIENT_CLEANUP_SECONDS)


@pytest.fixture
def many_sockets():
    """Room in this process's file-descriptor limit for a socket per stream, both ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(FD_LIMIT_WANTED, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_hundreds_of_concurrent_slow_streams_all_finish(
    many_sockets, gunicorn_server, account, emulator
):
    url, _ = gunicorn_server
    emulator.state.configure(frame_delay=CONCURRENT_FRAME_DELAY)

    def run(n: int) -> tuple[int, list]:
        response = stream_chat_over_http(url, account.refresh_token, f"stream {n}")
        return response.status_code, sse_events(response.content)

    with ThreadPoolExecutor(max_workers=CONCURRENT_STREAMS) as pool:
        results = list(pool.map(run, range(CONCURRENT_STREAMS), timeout=90))
    assert [status for status, _ in results] == [200] * CONCURRENT_STREAMS
    for n, (_, events) in enumerate(results):
        assert streamed_text(events) == f"{REPLY_PREFIX}stream {n}"
        assert events[-1] == "[DONE]"


def stream_accepted(url: str, token: str, content: str) -> bool:
    """Whether a stream request is taken (then read to its end, freeing its slot again)."""
    response = stream_chat_over_http(url, token, content)
    if response.status_code != 200:
        response.close()
        return False
    events = sse_events(response.content)
    assert streamed_text(events) == REPLY_PREFIX + content
    return events[-1] == "[DONE]"


@pytest.mark.parametrize(
    "gunicorn_server",
    [{"WEB_CONCURRENCY": "1", "MAX_STREAMS_PER_WORKER": "1"}],
    indirect=True,
    ids=["one-worker-one-stream"],
)
def test_a_stream_over_the_worker_cap_gets_429_until_a_slot_frees(
    gunicorn_server, account, emulator
):
    url, _ = gunicorn_server
    emulator.state.add_fault("slow", seconds=0.2)
    first = stream_chat_over_http(url, account.refresh_token, "first")
    pieces = first.iter_content(chunk_size=None)
    head = next(pieces)  # open: it holds the worker's one slot

    refused = stream_chat_over_http(url, account.refresh_token, "second")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "too_many_streams"
    assert error["param"] is None and error["message"]
    assert len(emulator.state.chats()) == 1  # refused before anything reached Kimi

    events = sse_events(head + b"".join(pieces))
    assert streamed_text(events) == REPLY_PREFIX + "first"
    assert events[-1] == "[DONE]"
    assert wait_until(lambda: stream_accepted(url, account.refresh_token, "third"))


STALLED_SOCKETS = 50


def test_sockets_that_stall_in_their_headers_are_dropped_and_health_still_answers(
    gunicorn_server, protocol
):
    if protocol == "legacy":
        pytest.skip("the same for both protocols: the worker reads headers before any route")
    url, _ = gunicorn_server
    port = int(url.rsplit(":", 1)[1])
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(STALLED_SOCKETS)]
    try:
        for sock in stalled:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and no more
        assert all(requests.get(url + "/healthz", timeout=5).ok for _ in range(10))
        # gunicorn's async workers give a request's headers `keepalive` seconds (5).
        for sock in stalled:
            sock.settimeout(30)
            assert sock.recv(1) == b""  # closed by the server, not by this test's timeout
    finally:
        for sock in stalled:
            sock.close()


BODY_TIMEOUT_SECONDS = 1
SLOW_BODIES = 20


def request_with_a_stalled_body(port: int, token: str, chunked: bool) -> socket.socket:
    """A chat request whose headers arrive whole and whose body stops after a few bytes."""
    sock = socket.create_connection(("127.0.0.1", port))
    length = "Transfer-Encoding: chunked" if chunked else "Content-Length: 100000"
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n{length}\r\n\r\n".encode()
    )
    sock.sendall(b'5\r\n{"mod\r\n' if chunked else b'{"model": "kimi", "mess')
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(30)  # a backstop only: the server closes long before
    received = b""
    while piece := sock.recv(65536):
        received += piece
    return received


@pytest.mark.parametrize(
    "gunicorn_server",
    [
        {"REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT_SECONDS)},
        {"REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT_SECONDS), "GUNICORN_WORKER": "gthread"},
    ],
    indirect=True,
    ids=["gevent", "gthread"],
)
def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    gunicorn_server, protocol, account
):
    if protocol == "legacy":
        pytest.skip("the same for both protocols: the body is read before any upstream call")
    url, _ = gunicorn_server
    port = int(url.rsplit(":", 1)[1])
    token = account.refresh_token
    stalled = [request_with_a_stalled_body(port, token, n % 2 == 1) for n in range(SLOW_BODIES)]
    try:
        # Health and real chats go on meanwhile (under gthread: while threads are free).
        assert requests.get(url + "/healthz", timeout=5).ok
        for sock in stalled:
            answer = read_until_closed(sock)  # closed by the server, not by a timeout here
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert b"REQUEST_BODY_TIMEOUT" in body and b"request_timeout" in body
    finally:
        for sock in stalled:
            sock.close()
    response = stream_chat_over_http(url, account.refresh_token, "after the slow bodies")
    assert streamed_text(sse_events(response.content)) == REPLY_PREFIX + "after the slow bodies"
