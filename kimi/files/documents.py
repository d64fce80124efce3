"""Reading the documents attached to a message into text here (web, WEB_FILE_MODE=extract)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import BadRequest
from ..history import FileRef
from ..settings import Settings
from .extract import ExtractedText
from .sandbox import SandboxLimits, extract_in_sandbox
from .sources import FileSource


def read_documents(files: Sequence[FileRef], settings: Settings) -> list[ExtractedText]:
    """Fetch (or decode) every file and extract its text; any problem is a clear 400."""
    images = [f for f in files if f.kind == "image"]
    if images:
        raise BadRequest(
            f"Images ({images[0].name}) cannot be read with WEB_FILE_MODE=extract: only "
            "documents are read into the prompt here. Run the service with WEB_FILE_MODE=upload "
            "(the default) for Kimi to read images itself.",
            code="unsupported_file_type",
        )
    limits = SandboxLimits.from_settings(
        settings.file_extract_timeout,
        settings.file_extract_memory_mb,
        settings.file_extract_concurrency,
    )
    return [_read(ref, settings, limits) for ref in files]


def _read(ref: FileRef, settings: Settings, limits: SandboxLimits) -> ExtractedText:
    # Fetched (or decoded) here, under the fetch limits; read in a child, under its own.
    with FileSource(ref, settings) as source:
        return extract_in_sandbox(
            source.file(),
            filename=source.name,
            content_type=source.content_type,
            charset=source.charset,
            max_chars=settings.max_document_chars,
            on_overflow="error",
            limits=limits,
        )
