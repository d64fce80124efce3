"""Small helpers the tests share: SSE decoding, a chat call, emulator call filters, processes."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent


def procfile_command() -> str:
    """The ``web:`` command of the Procfile: the one every other path must agree with."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        kind, _, command = line.partition(":")
        if kind.strip() == "web":
            return command.strip()
    raise AssertionError("Procfile has no web: line")


def child_output(script: str, env: dict[str, str] | None = None) -> list[str]:
    """The lines a Python script printed, run in a child process from the repository root
    (a monkey-patched one, as a gevent worker is); its failure fails the test."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def error_of(response) -> dict:
    """The OpenAI error object of a test client's response, with its four fields and words."""
    body = response.get_json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def pool_auth(*accounts) -> dict[str, str]:
    """An Authorization header naming these accounts' tokens: the request's own pool."""
    return {"Authorization": "Bearer " + ",".join(a.refresh_token for a in accounts)}


def procfile_argv() -> list[str]:
    """The Procfile's web command as argv, its gunicorn the one of this Python's environment."""
    argv = shlex.split(procfile_command())
    argv[0] = str(Path(sys.executable).with_name(argv[0]))
    return argv


def sse_events(body: bytes | str) -> list:
    """Decode an SSE body into its ``data:`` payloads (JSON, or the string ``[DONE]``)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    events = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def streamed_text(events: list, field: str = "content") -> str:
    """The text a client assembles from the ``delta`` of every chunk (or ``reasoning_content``)."""
    return "".join(
        e["choices"][0]["delta"].get(field) or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def stream_chat_over_http(url: str, token: str, content: str = "hi") -> requests.Response:
    """A streamed chat request to a service running as a real server at ``url``."""
    return requests.post(
        url + "/v1/chat/completions",
        json={"model": "kimi", "stream": True, "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=30,
    )


def chat(client, headers: dict, content: str = "hi", **body):
    body.setdefault("model", "kimi")
    body.setdefault("messages", [{"role": "user", "content": content}])
    return client.post("/v1/chat/completions", json=body, headers=headers)


def upstream_calls(emulator, path_part: str) -> list[dict]:
    return [c for c in emulator.state.calls() if path_part in c["path"]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(
    url: str,
    process: subprocess.Popen,
    timeout: float = 30,
    output: Callable[[], str] | None = None,
) -> None:
    """Poll ``url``/ping until the server ``process`` answers; its output if it died instead
    (``output()`` when it writes elsewhere than its stdout pipe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(output() if output else process.stdout.read().decode())
        try:
            if requests.get(url + "/ping", timeout=2).ok:
                return
        # gunicorn's master listens before its workers have loaded the app: a connection can
        # be accepted and then sit unanswered, so a read timeout here means "not yet".
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start within {timeout} s")


def wait_until(predicate, seconds: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass (work finishing on another thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


# Two functions clients offer in the tool-calling tests.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


def pdf_file(objects: list[bytes], version: bytes = b"1.7") -> bytes:
    """A PDF file of the given objects (numbered from 1, the first the catalog), with its xref."""
    out = bytearray(b"%PDF-" + version + b"\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def self_signed_certificate(directory: Path, hostname: str) -> tuple[str, str]:
    """``(cert, key)`` files for ``hostname``, made with openssl (the test skips without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", key, "-out", cert, "-subj", f"/CN={hostname}"]
        + ["-addext", f"subjectAltName=DNS:{hostname}"],
        check=True,
        capture_output=True,
    )
    return cert, key


def sent_prompt(emulator, protocol: str) -> str:
    """The text the last turn sent to Kimi, under either protocol."""
    if protocol == "web":
        body = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]
        return body["message"]["blocks"][0]["text"]["content"]
    return upstream_calls(emulator, "/completion/stream")[-1]["body"]["messages"][0]["content"]


def refusing_route(app, path: str, status: int, code: str, message: str) -> None:
    """Make the emulator ``app`` answer ``path`` with a Connect error (``status``, ``code``,
    ``message``) after reading the request, as if Kimi's route had changed or failed; every
    other route is the emulator's."""
    from werkzeug.wrappers import Request, Response

    emulated = app.wsgi_app

    def refusing(environ, start_response):
        if environ["PATH_INFO"] != path:
            return emulated(environ, start_response)
        Request(environ).get_data()  # read the body, as a server does before answering
        answer = Response(json.dumps({"code": code, "message": message}), status)
        return answer(environ, start_response)

    app.wsgi_app = refusing


class LiveServer:
    """Our Flask app on a real loopback port, in a thread."""

    def __init__(self, app) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll interval: shutdown() waits up to one interval, for every test using it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(5)
