"""PDF documents, read with ``pypdf``: the text layer only, page by page until the budget is spent.

A scanned PDF has no text layer and is refused here; uploaded (WEB_FILE_MODE=upload, the default,
or the legacy protocol), Kimi reads it itself.
"""

from __future__ import annotations

import logging
import zlib
from typing import BinaryIO

from pypdf import PdfReader
from pypdf.errors import DependencyError, PyPdfError

from ...errors import BadRequest
from .base import collect

log = logging.getLogger(__name__)

PAGE_SEPARATOR = "\n\n"
# pypdf reports most damage as PyPdfError, but some malformed objects surface as plain errors.
_PDF_ERRORS = (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, zlib.error)


def read(
    stream: BinaryIO, name: str, max_chars: int, *, charset: str | None = None
) -> tuple[str, bool]:
    """The text of every page with text, in order (``charset`` is unused: PDF names its own)."""
    try:
        reader = PdfReader(stream)
        _unlock(reader, name)
        pages = (page.extract_text().strip() for page in reader.pages)
        text, truncated = collect((page for page in pages if page), max_chars, PAGE_SEPARATOR)
    except DependencyError as exc:
        raise BadRequest(f"file {name!r} is an encrypted PDF this server cannot decrypt") from exc
    except _PDF_ERRORS as exc:
        log.info("unreadable PDF %r: %s", name, exc)
        raise BadRequest(f"file {name!r} is not a valid PDF or is damaged") from exc
    if not text.strip():
        raise BadRequest(
            f"file {name!r} has no text layer (it is probably a scanned image); "
            "Kimi reads such files itself when the service runs with WEB_FILE_MODE=upload"
        )
    return text, truncated


def _unlock(reader: PdfReader, name: str) -> None:
    """Open an encrypted PDF that needs no password to read (only an owner password)."""
    if reader.is_encrypted and not reader.decrypt(""):
        raise BadRequest(f"file {name!r} is a password-protected PDF; send it without a password")
