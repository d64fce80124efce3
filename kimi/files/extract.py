"""Reading the text out of documents attached to a chat message.

The Kimi "web" protocol has no documented upload flow, so documents are read here and their
text goes into the prompt. This front turns the input into a seekable stream, tells the format
(``readers.detect``) and hands the stream to that format's reader (``readers.pdf``, ``docx``,
``html``, ``text``). Inputs may be large: pass a path or a binary file and only what is needed
is read.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal, Union

from ..errors import BadRequest
from .content_type import charset_param
from .readers import docx, html, pdf, text
from .readers.base import Reader
from .readers.detect import DOCX, HTML, PDF, detect_kind
from .sources import SPOOL_IN_MEMORY_BYTES

__all__ = ["ExtractedText", "extract_text"]

log = logging.getLogger(__name__)

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]
Overflow = Literal["truncate", "error"]

_READERS: dict[str, Reader] = {PDF: pdf.read, DOCX: docx.read, HTML: html.read}


@dataclass(frozen=True)
class ExtractedText:
    """The text read from one attached document."""

    name: str
    kind: str
    text: str
    truncated: bool = False


def extract_text(
    source: Source,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    charset: str | None = None,
    max_chars: int,
    on_overflow: Overflow = "truncate",
) -> ExtractedText:
    """Read the text of a document given as bytes, a path or a binary file object.

    ``charset`` is the encoding the source declared, if it did (else the ``charset`` parameter
    of ``content_type`` counts). Text beyond ``max_chars`` is cut off (``truncated=True``), or
    with ``on_overflow="error"`` refused. Unsupported, damaged or text-less documents raise
    ``BadRequest`` naming the file.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if on_overflow not in ("truncate", "error"):
        raise ValueError(f"on_overflow must be 'truncate' or 'error', not {on_overflow!r}")
    name = filename or _name_of(source)
    with _binary_stream(source) as stream:
        kind = detect_kind(stream, filename=name, content_type=content_type)
        read = _READERS.get(kind, text.read)
        declared = charset or charset_param(content_type)
        body, truncated = read(stream, name, max_chars, charset=declared)
    if truncated and on_overflow == "error":
        raise BadRequest(
            f"file {name!r} has more than {max_chars} characters of text, "
            "the limit for an attached document"
        )
    log.debug("read %d characters of %s from %r (truncated=%s)", len(body), kind, name, truncated)
    return ExtractedText(name=name, kind=kind, text=body, truncated=truncated)


def _name_of(source: Source) -> str:
    path = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    if isinstance(path, (str, os.PathLike)):
        return os.path.basename(os.fspath(path)) or "document"
    return "document"


@contextmanager
def _binary_stream(source: Source) -> Iterator[BinaryIO]:
    """A seekable binary stream at the start of the document; a pipe is spooled first."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            yield stream
    elif _is_seekable(source):
        source.seek(0)
        yield source
    else:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
            shutil.copyfileobj(source, spool)
            spool.seek(0)
            yield spool


def _is_seekable(stream: BinaryIO) -> bool:
    seekable = getattr(stream, "seekable", None)
    return callable(seekable) and bool(seekable())
