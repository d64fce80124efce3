"""A request's JSON body, read within a size limit and checked before any field is looked at.

Three things a hostile body can do that ``json.loads`` alone lets through: be endless (a chunked
body has no Content-Length to refuse up front), nest deep enough to exhaust the interpreter's
stack, and carry lone UTF-16 surrogates (``"\\ud800"``), valid JSON that no UTF-8 encoder, ours or
Kimi's, can write back out.
"""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

from .errors import BadRequest, RequestTooLarge

READ_CHUNK_BYTES = 64 * 1024


def read_limited(stream: BinaryIO, limit: int) -> bytes:
    """The whole of ``stream``, or ``RequestTooLarge`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(too_large_message(limit))
        chunks.append(chunk)


def too_large_message(limit: int) -> str:
    return (
        f"The request body is larger than {limit} bytes (MAX_REQUEST_MB); send large files "
        "as http(s) URLs instead of data: URLs."
    )


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of ``raw``; ``BadRequest`` when it is not JSON or has non-finite numbers."""
    if not raw.strip():
        raise BadRequest("The request body must be JSON (Content-Type: application/json).")
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number
