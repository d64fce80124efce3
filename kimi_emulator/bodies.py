"""Reading request bodies: the JSON object a route needs, what the call log keeps, and the
uploads' bytes (measured and hashed, never kept)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import request

from .errors import EmulatorError
from .frames import FramingError, read_body

CONNECT_JSON = "application/connect+json"
READ_SIZE = 64 * 1024


def json_body() -> dict[str, Any]:
    """The body as a JSON object (``{}`` when empty); ``invalid_argument`` otherwise."""
    data = request.get_data()
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmulatorError("invalid_argument", "body is not JSON") from exc
    if not isinstance(body, dict):
        raise EmulatorError("invalid_argument", "body is not a JSON object")
    return body


def loggable_body() -> Any:
    """The body as JSON for the call log, or None; never raises (validation is the route's)."""
    data = request.get_data()
    if request.mimetype == CONNECT_JSON:
        try:
            frames = read_body(data)
        except FramingError:
            return None
        return frames[0].message if len(frames) == 1 else None
    try:
        return json.loads(data) if data.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def drain_body() -> None:
    """Read what is left of the body: a socket closed with unread data is reset, and the
    client may lose the answer (an error) with it."""
    while request.stream.read(READ_SIZE):
        pass


def sent_chunked() -> bool:
    """Whether the body came with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


class HashingSink:
    """A file-like sink for an upload's bytes: only their size and SHA-256 are kept."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # a form parser rewinds a finished part; there is nothing to rewind

    def read(self, size: int = -1) -> bytes:
        return b""
