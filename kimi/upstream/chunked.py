"""Reading a streamed, chunked upstream body with one buffered read per network read.

urllib3 reads a chunked body a chunk at a time: a ``readline`` for the size, a read for the
data, another for its CRLF, each through several layers of Python. Kimi sends one small chunk
per event, so that was a large share of a relayed event's CPU. Here whatever the socket has is
read at once (``read1``) and its chunks are taken apart in one pass (``ChunkedDecoder``, pure,
tested with input split at every offset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import requests
from urllib3.exceptions import ReadTimeoutError

from .green_reads import socket_reads

READ_SIZE = 64 * 1024
MAX_LINE = 4096  # a chunk-size or trailer line longer than this is not HTTP
CRLF = b"\r\n"
HEX_DIGITS = b"0123456789abcdefABCDEF"
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedError(ValueError):
    """The bytes are not a valid chunked body."""


class ChunkedDecoder:
    """Incremental decoder of a ``Transfer-Encoding: chunked`` body: feed it network reads, get
    the payload bytes they complete. ``done`` once the last chunk and its trailers have come."""

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # payload bytes still due in the current chunk
        self._pending = b""  # the start of a size line, trailer line or CRLF cut by a read
        self.extra = 0  # bytes received after the end of the body

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            data, self._pending = self._pending + data, b""
        pieces = []
        pos, end = 0, len(data)
        # The common read: whole chunks, one after another; anything else goes the long way.
        while self._state == _SIZE:
            line_end = data.find(CRLF, pos)
            if line_end < 0:
                break
            line = data[pos:line_end]
            start = line_end + 2
            if not line or line.strip(HEX_DIGITS) or line[0] == 48:  # not plain, or "0..."
                self._line(line)
                pos = start
                break
            stop = start + int(line, 16)
            if data[stop : stop + 2] != CRLF:
                self._line(line)
                pos = start
                break
            pieces.append(data[start:stop])
            pos = stop + 2
        while pos < end and self._state != _DONE:
            if self._state == _DATA:
                take = min(self._left, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif self._state == _DATA_END:
                if end - pos < len(CRLF):
                    self._pending = data[pos:]
                    break
                if data[pos : pos + 2] != CRLF:
                    raise ChunkedError("a chunk's data is not followed by CRLF")
                pos += 2
                self._state = _SIZE
            else:
                line_end = data.find(CRLF, pos)
                if line_end < 0:
                    self._pending = self._keep_line(data[pos:])
                    break
                self._line(data[pos:line_end])
                pos = line_end + 2
        self.extra += end - pos if self._state == _DONE else 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _line(self, line: bytes) -> None:
        if len(line) > MAX_LINE:
            raise ChunkedError("a chunk-size or trailer line is too long")
        if self._state == _TRAILER:
            if not line:
                self._state = _DONE
            return  # trailer fields carry nothing we use
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(HEX_DIGITS):
            raise ChunkedError(f"invalid chunk size {line[:40]!r}")
        size = int(size_text, 16)
        if size:
            self._left, self._state = size, _DATA
        else:
            self._state = _TRAILER

    @staticmethod
    def _keep_line(partial: bytes) -> bytes:
        if len(partial) > MAX_LINE + 1:
            raise ChunkedError("a chunk-size or trailer line is too long")
        return partial


def can_read_chunked(response: requests.Response) -> bool:
    """Whether the body is chunked, not content-encoded, and read straight from the connection."""
    raw = response.raw
    encoding = raw.headers.get("Content-Encoding", "").strip().lower()
    return (
        getattr(raw, "chunked", False)
        and encoding in ("", "identity")
        and getattr(getattr(raw, "_fp", None), "fp", None) is not None
    )


def iter_chunked(response: requests.Response) -> Iterator[bytes]:
    """The payload of a chunked body as it arrives; failures are raised as ``requests`` would
    raise them from ``iter_content``, so that one translation serves both. The connection goes
    back to the pool when the body was read to its end."""
    raw = response.raw
    fp = raw._fp.fp  # the connection's buffered reader, as urllib3's read_chunked uses it
    # Under gevent the socket is read directly, without a gevent Timeout per read.
    reads = socket_reads(fp)
    read = reads.read if reads else fp.read1
    decoder = ChunkedDecoder()
    try:
        while not decoder.done:
            data = _read(read, raw)
            try:
                payload = decoder.feed(data)
            except ChunkedError as exc:
                raise requests.exceptions.ChunkedEncodingError(str(exc)) from exc
            if payload:
                yield payload
    finally:
        if reads:
            reads.close()
    response._content_consumed = True  # requests then releases the connection instead of closing
    if decoder.extra:
        raw.close()  # bytes after the end: the connection is in no state to be reused
        return
    raw._original_response.close()  # what urllib3 does after the last chunk
    raw.release_conn()


def _read(read: Callable[[int], bytes], raw) -> bytes:
    try:
        data = read(READ_SIZE)
    except TimeoutError as exc:
        raise requests.exceptions.ConnectionError(
            ReadTimeoutError(raw._pool, None, "Read timed out.")
        ) from exc
    except OSError as exc:
        raise requests.exceptions.ChunkedEncodingError(f"connection broken: {exc!r}") from exc
    if not data:
        raise requests.exceptions.ChunkedEncodingError("Response ended prematurely")
    return data
