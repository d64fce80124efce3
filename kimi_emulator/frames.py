"""The emulator's own Connect envelope codec (``application/connect+json``).

An envelope is a flag byte, the payload length as a 4-byte big-endian unsigned integer, then
that many bytes of UTF-8 JSON. Kept apart from the client's codec (``kimi.upstream.connect``) on
purpose: a framing mistake shared by both sides would pass every end-to-end test, so the tests
check each side's writer against the other side's reader instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

END_OF_STREAM = 0x02
COMPRESSED = 0x01  # the emulator never offers compression, so a client must not use it
PREFIX_SIZE = 5
# A Chat request is a few kilobytes; a length this large means the bytes are not Connect.
MAX_PAYLOAD_SIZE = 8 * 1024 * 1024


class FramingError(ValueError):
    """The bytes are not a well-formed sequence of Connect envelopes."""


@dataclass(frozen=True)
class Envelope:
    """One envelope read back: its flag byte and its JSON message."""

    flags: int
    message: Any

    @property
    def closes_stream(self) -> bool:
        """Whether this is the end-of-stream envelope."""
        return bool(self.flags & END_OF_STREAM)


def write_frame(message: Any, flags: int = 0) -> bytes:
    """One envelope holding ``message`` as UTF-8 JSON (non-ASCII written as is, not escaped)."""
    payload = json.dumps(message, ensure_ascii=False).encode("utf-8")
    return bytes([flags]) + len(payload).to_bytes(4, "big") + payload


class FrameReader:
    """Reads envelopes from bytes that arrive in pieces of any size.

    A piece may end anywhere, even inside the 5-byte prefix or a UTF-8 character, so what
    does not yet make a whole envelope is kept for the next piece.
    """

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, piece: bytes) -> list[Envelope]:
        """The envelopes completed by ``piece``, in order."""
        data = self._rest + piece
        envelopes, used = _whole_envelopes(data)
        self._rest = data[used:]
        return envelopes

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their envelope."""
        return len(self._rest)


def read_body(body: bytes) -> list[Envelope]:
    """Every envelope of a complete body; ``FramingError`` if it stops inside one."""
    reader = FrameReader()
    envelopes = reader.feed(body)
    if reader.buffered:
        raise FramingError(f"the body stops {reader.buffered} bytes into an envelope")
    return envelopes


def _whole_envelopes(data: bytes) -> tuple[list[Envelope], int]:
    """The whole envelopes at the start of ``data`` and how many bytes they take."""
    envelopes = []
    start = 0
    while len(data) - start >= PREFIX_SIZE:
        flags = data[start]
        size = int.from_bytes(data[start + 1 : start + PREFIX_SIZE], "big")
        _check_prefix(flags, size)
        end = start + PREFIX_SIZE + size
        if end > len(data):
            break
        envelopes.append(Envelope(flags, _json_payload(data[start + PREFIX_SIZE : end])))
        start = end
    return envelopes, start


def _check_prefix(flags: int, size: int) -> None:
    if flags & COMPRESSED:
        raise FramingError("compressed envelopes were not negotiated")
    if size > MAX_PAYLOAD_SIZE:
        raise FramingError(f"an envelope of {size} bytes is over the {MAX_PAYLOAD_SIZE} limit")


def _json_payload(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FramingError("the payload is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise FramingError(f"the payload is not JSON: {exc.msg}") from exc
