"""``--capture FILE``: the walk's exchanges as masked JSON lines, for a bug report or a replay.

Line 1 is a header (``type: capture``: protocol, hosts, the masked claims of each token);
then one ``type: exchange`` line per request with its response (bodies decoded: JSON,
Connect frames, SSE lines), and last the doctor's ``type: result``. Tokens, cookies, ids,
personal fields and URL query values are masked (see ``masking``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..settings import Settings
from .masking import Masker
from .wire import CONNECT_TYPE, SSE_TYPE, Exchange, decode_frames

CAPTURE_VERSION = 1


def write_capture(
    path: str | Path,
    exchanges: Iterable[Exchange],
    settings: Settings,
    masker: Masker,
    result: dict[str, Any],
) -> None:
    """Write the capture file: header, exchanges, result, one JSON document a line.

    ``masker`` has learned the secrets of ``exchanges`` already (``learn``)."""
    lines = capture_lines(list(exchanges), settings, masker)
    lines.append({"type": "result", **masker.json(result)})
    with open(path, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


def capture_lines(
    exchanges: list[Exchange], settings: Settings, masker: Masker
) -> list[dict[str, Any]]:
    """The header and one masked record per exchange (``masker`` has learned them)."""
    records = [exchange_record(exchange, masker) for exchange in exchanges]
    header = {
        "type": "capture",
        "version": CAPTURE_VERSION,
        "protocol": settings.protocol,
        "base_url": settings.base_url,
        "auth_url": settings.auth_url,
        "tokens": masker.token_claims(),
    }
    return [header, *records]


def learn(exchanges: list[Exchange], masker: Masker) -> None:
    """Teach the masker every secret and id the exchanges hold: identity headers first, so a
    user id is named as one even where a body calls it plain ``id``."""
    for exchange in exchanges:
        masker.learn_headers(exchange.request_headers)
        masker.learn_headers(exchange.response_headers)
    for exchange in exchanges:
        masker.learn_text(exchange.url)
        masker.learn_json(_request_json(exchange))
        for message in exchange.messages():
            masker.learn_json(message)


def exchange_record(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "exchange",
        "step": exchange.step,
        "request": {
            "method": exchange.method,
            "url": masker.text(exchange.url),
            "path": masker.text(exchange.path),
            "headers": masker.headers(exchange.request_headers),
            "body": _request_body(exchange, masker),
        },
        "response": None,
    }
    if exchange.status is not None:
        record["response"] = {
            "status": exchange.status,
            "headers": masker.headers(exchange.response_headers),
            "body": _response_body(exchange, masker),
        }
    if exchange.error:
        record["error"] = masker.text(exchange.error)
    return record


def _request_json(exchange: Exchange) -> Any:
    body = exchange.request_body
    if not body:
        return None
    raw = body.encode("utf-8") if isinstance(body, str) else body
    content_type = exchange.request_headers.get("Content-Type", "")
    if content_type.startswith(CONNECT_TYPE):
        return [frame["message"] for frame in decode_frames(raw)]
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _request_body(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    body = exchange.request_body
    if body is None:
        return {"streamed": True}
    raw = body.encode("utf-8") if isinstance(body, str) else body
    content_type = exchange.request_headers.get("Content-Type", "")
    return _body(raw, content_type, masker)


def _response_body(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    return _body(bytes(exchange.body), exchange.content_type, masker)


def _body(raw: bytes, content_type: str, masker: Masker) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith(CONNECT_TYPE):
        frames = decode_frames(raw)
        if frames:
            return {"frames": masker.json(frames)}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}
    if content_type.startswith(SSE_TYPE):
        return {"sse": [masker.text(line) for line in text.split("\n")]}
    try:
        return {"json": masker.json(json.loads(text))}
    except ValueError:
        return {"text": masker.text(text)}
