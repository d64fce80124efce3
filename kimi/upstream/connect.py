"""Connect RPC envelope framing (``application/connect+json``), both directions.

A frame is one flag byte, a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
Pure code: no I/O, so it is tested with input split at every offset.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

END_STREAM_FLAG = 0x02
COMPRESSED_FLAG = 0x01
HEADER = struct.Struct(">BI")  # flags, payload length
HEADER_SIZE = HEADER.size
# A single state-sync frame is small; anything this large means we are not reading Connect.
MAX_FRAME_SIZE = 16 * 1024 * 1024


class FrameError(ValueError):
    """The byte stream is not a valid sequence of Connect frames."""


class Frame(NamedTuple):
    """One decoded frame: its flags and its JSON payload (a tuple: one is made per event)."""

    flags: int
    message: Any

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & END_STREAM_FLAG)


def encode_frame(message: Any, flags: int = 0) -> bytes:
    """Serialise one JSON message as a Connect frame."""
    payload = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(flags, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed it network reads, get whole frames back.

    Frames can split across reads (even inside the 5-byte header), so bytes are buffered
    until a whole frame has arrived.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        frames = []
        pos, end = 0, len(data)
        # Frames are read in place; only an unfinished one is kept for the next read.
        while end - pos >= HEADER_SIZE:
            flags, length = HEADER.unpack_from(data, pos)
            if length > MAX_FRAME_SIZE:
                raise FrameError(f"frame of {length} bytes exceeds the limit")
            if flags & COMPRESSED_FLAG:
                raise FrameError("compressed Connect frames are not supported")
            start = pos + HEADER_SIZE
            if end - start < length:
                break
            pos = start + length
            frames.append(Frame(flags, _parse_json(data[start:pos])))
        if pos < end:
            self._buffer += data[pos:]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)


def _parse_json(payload: bytes) -> Any:
    if not payload:
        return {}
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"frame payload is not JSON: {exc}") from exc
