"""Reading the documents attached to a message into text, for a backend without uploads."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from ..errors import BadRequest
from ..history import FileRef
from ..settings import Settings
from .data_url import parse_data_url
from .extract import ExtractedText, extract_text
from .fetch import SafeFetcher

# Bodies up to this size are spooled in memory, larger ones to a temporary file.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024


def read_documents(files: Sequence[FileRef], settings: Settings) -> list[ExtractedText]:
    """Fetch (or decode) every file and extract its text; any problem is a clear 400."""
    images = [f for f in files if f.kind == "image"]
    if images:
        raise BadRequest(
            f"Images ({images[0].name}) cannot be read with KIMI_PROTOCOL=web: its upload flow "
            "is not publicly described. Run the service with KIMI_PROTOCOL=legacy for image OCR.",
            code="unsupported_file_type",
        )
    return [_read(ref, settings) for ref in files]


def _read(ref: FileRef, settings: Settings) -> ExtractedText:
    limits = {"max_chars": settings.max_document_chars, "on_overflow": "error"}
    if ref.url.startswith("data:"):
        data = parse_data_url(ref.url, settings.max_file_bytes)
        name = ref.filename or data.filename or ref.name
        return extract_text(data.data, filename=name, content_type=data.content_type, **limits)
    fetcher = SafeFetcher(
        settings.max_file_bytes,
        timeout=settings.timeout,
        allow_private=settings.allow_private_file_urls,
    )
    with fetcher, fetcher.open(ref.url) as fetched:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
            for chunk in fetched.iter_chunks():
                spool.write(chunk)
            spool.seek(0)
            name = ref.filename or fetched.filename or ref.name
            return extract_text(spool, filename=name, content_type=fetched.content_type, **limits)
