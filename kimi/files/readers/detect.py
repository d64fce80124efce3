"""Which kind of document a file is: from its content type, else its extension, else its bytes.

Kinds are ``pdf``, ``docx``, ``html`` and the plain-text kinds (``text``, ``markdown``, ``csv``,
``tsv``, ``json``, ``xml``, ``yaml``, ``code``). Known binary formats are refused here, naming
what the file is.
"""

from __future__ import annotations

import codecs
import os
import zipfile
from typing import BinaryIO

from ..content_type import media_type
from .base import unsupported
from .docx import MAIN_PART as DOCX_MAIN_PART

__all__ = ["DOCX", "HTML", "PDF", "TEXT", "detect_kind"]

PDF, DOCX, HTML, TEXT = "pdf", "docx", "html", "text"
MAGIC_BYTES = 1024

_KIND_BY_CONTENT_TYPE = {
    "application/pdf": PDF,
    "application/x-pdf": PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DOCX,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
    "text/plain": TEXT,
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/json": "json",
    "text/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
    "application/javascript": "code",
    "application/x-sh": "code",
    "application/sql": "code",
    "application/toml": "code",
}
_UNSUPPORTED_CONTENT_TYPES = {
    "application/msword": "a legacy Word .doc file (save it as DOCX or PDF)",
    "application/zip": "a ZIP archive",
}
_UNSUPPORTED_MEDIA = {"image": "an image", "audio": "an audio file", "video": "a video"}

_KIND_BY_EXTENSION = {
    ".pdf": PDF,
    ".docx": DOCX,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".txt": TEXT,
    ".text": TEXT,
    ".log": TEXT,
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".xml": "xml",
    ".yaml": "yaml",
    ".yml": "yaml",
}
_CODE_EXTENSIONS = frozenset(
    ".py .js .mjs .ts .tsx .jsx .java .kt .c .h .cc .cpp .hpp .cs .go .rs .rb .php .swift"
    " .scala .sh .bash .sql .css .scss .lua .r .pl .toml .ini .cfg .conf .rst .tex .vue".split()
)

_BINARY_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office file (save it as DOCX or PDF)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
)


def detect_kind(
    stream: BinaryIO, *, filename: str | None = None, content_type: str | None = None
) -> str:
    """The document's kind ("pdf", "docx", "html", "text", "csv", ...) from its content type,
    else its file extension, else its first bytes; ``BadRequest`` for a known binary format.

    ``stream`` must be seekable; it is left at its start.
    """
    name = filename or "document"
    kind = _kind_from_content_type(content_type, name) or _kind_from_extension(filename)
    return kind or _kind_from_magic(stream, name)


def _kind_from_content_type(content_type: str | None, name: str) -> str | None:
    mime = media_type(content_type)
    if mime in _KIND_BY_CONTENT_TYPE:
        return _KIND_BY_CONTENT_TYPE[mime]
    media, _, subtype = mime.partition("/")
    if mime in _UNSUPPORTED_CONTENT_TYPES or media in _UNSUPPORTED_MEDIA:
        what = _UNSUPPORTED_CONTENT_TYPES.get(mime) or _UNSUPPORTED_MEDIA[media]
        raise unsupported(name, f"{what} ({mime})")
    if subtype.endswith("+json"):
        return "json"
    if subtype.endswith("+xml"):
        return "xml"
    return TEXT if media == "text" else None


def _kind_from_extension(filename: str | None) -> str | None:
    extension = os.path.splitext(filename or "")[1].lower()
    return "code" if extension in _CODE_EXTENSIONS else _KIND_BY_EXTENSION.get(extension)


def _kind_from_magic(stream: BinaryIO, name: str) -> str:
    head = stream.read(MAGIC_BYTES)
    stream.seek(0)
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        if _is_docx(stream):
            return DOCX
        raise unsupported(name, "a ZIP archive that is not a DOCX document")
    for signature, what in _BINARY_SIGNATURES:
        if head.startswith(signature):
            raise unsupported(name, what)
    start = head.removeprefix(codecs.BOM_UTF8).lstrip().lower()
    return HTML if start.startswith((b"<!doctype html", b"<html")) else TEXT


def _is_docx(stream: BinaryIO) -> bool:
    try:
        with zipfile.ZipFile(stream) as archive:
            return DOCX_MAIN_PART in archive.namelist()
    except zipfile.BadZipFile:
        return False
    finally:
        stream.seek(0)
