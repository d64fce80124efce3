"""Plain-text documents (TXT, Markdown, CSV/TSV, JSON, XML, YAML, source code), and the
decoding every text-based format shares.

Text is decoded with the encoding named by a byte-order mark, else the declared charset, else
UTF-8, else GB18030 (Chinese files saved by Windows tools), else latin-1, which never fails. The
choice is made on the first ``PROBE_BYTES``; bytes that do not decode after that become U+FFFD.
Line endings become ``\\n``. The stream is read in chunks, never whole.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import BinaryIO

from .base import READ_CHUNK_BYTES, collect, unsupported

PROBE_BYTES = 64 * 1024
# Share of control characters above which "text" is taken to be binary data.
BINARY_CONTROL_RATIO = 0.05
BINARY_SAMPLE_BYTES = 8192

_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FALLBACK_ENCODINGS = ("utf-8", "gb18030")
_CONTROL_CHARS = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) - set("\t\n\r\f\v\b\x1b")


def read(
    stream: BinaryIO, name: str, max_chars: int, *, charset: str | None = None
) -> tuple[str, bool]:
    """The decoded text, verbatim apart from line endings."""
    return collect(decoded_chunks(stream, name, charset), max_chars)


def decoded_chunks(stream: BinaryIO, name: str, charset: str | None) -> Iterator[str]:
    """The stream's text in chunks, with ``\\r\\n`` and ``\\r`` turned into ``\\n``;
    ``BadRequest`` when the bytes look like binary data rather than text."""
    probe = stream.read(PROBE_BYTES)
    stream.seek(0)
    encoding = _choose_encoding(probe, _known_codec(charset), complete=len(probe) < PROBE_BYTES)
    if _looks_binary(probe[:BINARY_SAMPLE_BYTES].decode(encoding, errors="replace")):
        raise unsupported(name, "binary data")
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    pending = ""
    while chunk := stream.read(READ_CHUNK_BYTES):
        text = pending + decoder.decode(chunk)
        # A "\r" at the end may be the first half of a "\r\n" split across reads.
        text, pending = (text[:-1], "\r") if text.endswith("\r") else (text, "")
        yield _normalise_newlines(text)
    yield _normalise_newlines(pending + decoder.decode(b"", final=True))


def _known_codec(name: str | None) -> str | None:
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def _choose_encoding(probe: bytes, charset: str | None, *, complete: bool) -> str:
    for mark, encoding in _BYTE_ORDER_MARKS:
        if probe.startswith(mark):
            return encoding
    candidates = (charset, *_FALLBACK_ENCODINGS) if charset else _FALLBACK_ENCODINGS
    for encoding in candidates:
        try:
            codecs.getincrementaldecoder(encoding)().decode(probe, final=complete)
        except UnicodeDecodeError:
            continue
        return encoding
    return "latin-1"


def _looks_binary(sample: str) -> bool:
    controls = sum(1 for char in sample if char in _CONTROL_CHARS)
    return "\x00" in sample or controls > BINARY_CONTROL_RATIO * len(sample)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
