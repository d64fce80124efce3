"""Replaying a capture made by ``python -m kimi doctor --capture FILE``.

Each recorded route (method and path) is answered with its recorded responses in order (the
last one again once they run out), so a protocol change someone captured against the real
Kimi becomes a regression test. The capture is masked: each placeholder (``<chat-id-1>``,
``<access-token-2>``) gets a value that works — a token becomes an unsigned JWT with the
recorded (masked) claims and a fresh expiry, an id a stable string — and the same value is
turned back into its placeholder when a later request carries it in its path. The recorded
host is replaced by the replay's own.

Run it with ``python -m kimi_emulator --replay FILE``; tests build ``create_replay_app``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from .frames import write_frame

PLACEHOLDER = re.compile(r"<(?:[a-z]+-)*[a-z]+-\d+>|<masked>|<redacted>")
TOKEN_PLACEHOLDER = re.compile(r"<(?:access-token|refresh-token|jwt|token)-\d+>")
MASKED_VALUE = "replayed"
DEFAULT_TOKEN_LIFETIME = 3600
ID_LENGTH = 20
# Not replayed: the body is re-encoded here (decoded, unzipped, re-framed), so its length and
# encoding are the replay's own, as are the connection's headers.
DROPPED_HEADERS = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "date", "server"}
)
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class RecordedAnswer:
    """One recorded response: status, headers, and the body as the capture decoded it."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class Replay:
    """The answers of one capture by route, and the values its placeholders stand for."""

    def __init__(self, lines: Iterable[dict[str, Any]]) -> None:
        lines = list(lines)
        if not lines or lines[0].get("type") != "capture":
            raise ValueError("not a doctor capture: the first line is no capture header")
        header = lines[0]
        self.recorded_hosts = [
            url for url in (header.get("base_url"), header.get("auth_url")) if url
        ]
        self._claims: dict[str, dict[str, Any]] = header.get("tokens") or {}
        self._values: dict[str, str] = {}
        self._answers: dict[tuple[str, str], list[RecordedAnswer]] = {}
        self._served: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # the server answers from several threads
        for line in lines[1:]:
            if line.get("type") == "exchange" and line.get("response"):
                self._add(line)

    @classmethod
    def from_file(cls, path: str | Path) -> Replay:
        with open(path, encoding="utf-8") as lines:
            return cls(json.loads(line) for line in lines if line.strip())

    def routes(self) -> list[tuple[str, str]]:
        """The recorded routes, as ``(method, masked path)``."""
        return list(self._answers)

    def answer(self, method: str, path: str, own_url: str) -> Response:
        """The next recorded answer to this route, made live; a 404 when none was recorded."""
        with self._lock:
            key = (method.upper(), self._masked_path(path))
            answers = self._answers.get(key)
            if not answers:
                body = {"code": "not_found", "message": f"no recorded answer for {key[0]} {key[1]}"}
                return Response(json.dumps(body), status=404, content_type="application/json")
            index = self._served.get(key, 0)
            self._served[key] = index + 1
            recorded = answers[min(index, len(answers) - 1)]
            headers = {
                name: self._live(value, own_url)
                for name, value in recorded.headers.items()
                if name.lower() not in DROPPED_HEADERS
            }
            body = self._body(recorded.body, own_url)
        return Response(body, recorded.status, headers)

    def value(self, placeholder: str) -> str:
        """The working value a placeholder stands for (made once, then the same)."""
        if placeholder not in self._values:
            self._values[placeholder] = self._make_value(placeholder)
        return self._values[placeholder]

    def _add(self, line: dict[str, Any]) -> None:
        recorded = line["request"]
        key = (str(recorded["method"]).upper(), str(recorded["path"]).split("?", 1)[0])
        response = line["response"]
        answer = RecordedAnswer(
            int(response["status"]), dict(response.get("headers") or {}), response.get("body") or {}
        )
        self._answers.setdefault(key, []).append(answer)

    def _make_value(self, placeholder: str) -> str:
        if placeholder in ("<masked>", "<redacted>"):
            return MASKED_VALUE
        if TOKEN_PLACEHOLDER.fullmatch(placeholder):
            return self._token(placeholder)
        return hashlib.sha256(placeholder.encode()).hexdigest()[:ID_LENGTH]

    def _token(self, placeholder: str) -> str:
        claims = self._claims.get(placeholder, {})
        now = int(time.time())
        payload = {name: self._live_json(value, "") for name, value in claims.items()}
        lifetime = payload.pop("lifetime", DEFAULT_TOKEN_LIFETIME)
        payload.update(iat=now, exp=now + int(lifetime), iss="kimi-emulator-replay")
        parts = [{"alg": "none", "typ": "JWT"}, payload]
        encoded = [_b64(json.dumps(part, separators=(",", ":")).encode()) for part in parts]
        return ".".join([*encoded, _b64(placeholder.encode())])

    def _masked_path(self, path: str) -> str:
        for placeholder, value in self._values.items():
            path = path.replace(value, placeholder)
        return path

    def _live(self, text: str, own_url: str) -> str:
        for host in self.recorded_hosts:
            text = text.replace(host, own_url)
        return PLACEHOLDER.sub(lambda match: self.value(match.group(0)), text)

    def _live_json(self, value: Any, own_url: str) -> Any:
        if isinstance(value, dict):
            return {name: self._live_json(item, own_url) for name, item in value.items()}
        if isinstance(value, list):
            return [self._live_json(item, own_url) for item in value]
        return self._live(value, own_url) if isinstance(value, str) else value

    def _body(self, body: dict[str, Any], own_url: str) -> bytes:
        if "frames" in body:
            frames = body["frames"]
            return b"".join(
                write_frame(self._live_json(f["message"], own_url), int(f["flags"])) for f in frames
            )
        if "sse" in body:
            return "\n".join(self._live(line, own_url) for line in body["sse"]).encode("utf-8")
        if "json" in body:
            return json.dumps(self._live_json(body["json"], own_url), ensure_ascii=False).encode()
        if "text" in body:
            return self._live(body["text"], own_url).encode("utf-8")
        if "base64" in body:
            return base64.b64decode(body["base64"])
        return b""


def create_replay_app(replay: Replay) -> Flask:
    """A Flask app answering every recorded route from ``replay``."""
    app = Flask(__name__)

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def replay_route(path: str) -> Response:
        return replay.answer(request.method, request.path, request.host_url.rstrip("/"))

    return app


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
