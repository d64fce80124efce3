"""Reading request bodies: the JSON object a route needs, and what the call log keeps."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .errors import EmulatorError
from .frames import FramingError, read_body

CONNECT_JSON = "application/connect+json"


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
