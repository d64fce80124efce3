"""What every reader shares: its signature, the chunk size, the character budget, the refusal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, Protocol

from ...errors import BadRequest

READ_CHUNK_BYTES = 64 * 1024
SUPPORTED = "PDF, DOCX, HTML or plain-text documents"
# Between the cells of a table row, in every format that has tables.
CELL_SEPARATOR = " | "


class Reader(Protocol):
    """Reads a document's text from a seekable binary stream at its start.

    Returns at most ``max_chars`` characters and whether more text was cut off. ``charset`` is
    the encoding the source declared, for formats that are decoded as text. Damaged or
    unreadable input raises ``BadRequest`` naming the file.
    """

    def __call__(
        self, stream: BinaryIO, name: str, max_chars: int, *, charset: str | None = None
    ) -> tuple[str, bool]: ...


def collect(parts: Iterable[str], max_chars: int, separator: str = "") -> tuple[str, bool]:
    """Join parts until there are more than ``max_chars`` characters, then cut at the limit."""
    kept: list[str] = []
    size = -len(separator)
    for part in parts:
        kept.append(part)
        size += len(separator) + len(part)
        if size > max_chars:
            break
    return cap(separator.join(kept), max_chars)


def cap(text: str, max_chars: int) -> tuple[str, bool]:
    """The text cut to ``max_chars`` characters, and whether anything was cut."""
    return text[:max_chars], len(text) > max_chars


def unsupported(name: str, what: str) -> BadRequest:
    """The refusal of a file that is ``what`` (for example "a PNG image") instead of a document."""
    return BadRequest(f"file {name!r} is {what}, which cannot be read as text; attach {SUPPORTED}")
