"""Plain-text documents (TXT, Markdown, CSV/TSV, JSON, XML, YAML, source code), and the
decoding every text-based format shares.

The encoding is chosen on the first ``PROBE_BYTES`` (``encoding.choose_encoding``: byte-order
mark, declared charset, UTF-8, detection); the stream is then decoded in chunks, never whole,
and bytes that do not decode become U+FFFD. Line endings become ``\\n``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .base import READ_CHUNK_BYTES, collect, unsupported
from .encoding import charset_in_xml, choose_encoding

PROBE_BYTES = 64 * 1024
# Share of control characters above which "text" is taken to be binary data.
BINARY_CONTROL_RATIO = 0.05
BINARY_SAMPLE_BYTES = 8192

_CONTROL_CHARS = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) - set("\t\n\r\f\v\b\x1b")


def read(
    stream: BinaryIO, name: str, max_chars: int, *, charset: str | None = None
) -> tuple[str, bool]:
    """The decoded text, verbatim apart from line endings."""
    return collect(decoded_chunks(stream, name, charset), max_chars)


def decoded_chunks(
    stream: BinaryIO,
    name: str,
    charset: str | None,
    *,
    declared_in: Callable[[bytes], str | None] = charset_in_xml,
) -> Iterator[str]:
    """The stream's text in chunks, with ``\\r\\n`` and ``\\r`` turned into ``\\n``;
    ``BadRequest`` when the bytes look like binary data rather than text.

    ``charset`` is the source's declaration; ``declared_in`` finds one inside the document.
    """
    probe = stream.read(PROBE_BYTES)
    stream.seek(0)
    declared = (charset, declared_in(probe))
    encoding = choose_encoding(probe, declared, complete=len(probe) < PROBE_BYTES)
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


def _looks_binary(sample: str) -> bool:
    controls = sum(1 for char in sample if char in _CONTROL_CHARS)
    return "\x00" in sample or controls > BINARY_CONTROL_RATIO * len(sample)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
