"""Reading the text out of documents attached to a chat message.

The Kimi "web" protocol has no documented upload flow, so documents are read here and their
text goes into the prompt, each in its own block (``format_for_prompt``). Supported:

- PDF, with ``pypdf``; text layer only, so a scanned PDF is refused (OCR needs the legacy
  protocol, which uploads the file to Kimi);
- DOCX, with ``zipfile`` and ``ElementTree``: body paragraphs and tables (not headers, footers,
  footnotes or comments);
- HTML, with ``html.parser``: script, style and head are dropped, block elements break lines;
- plain text: TXT, Markdown, CSV/TSV, JSON, XML, YAML and source code.

The format comes from the content type, else the file extension, else the first bytes.

Text is decoded with the encoding named by a byte-order mark, else the charset in the content
type, else UTF-8, else GB18030 (Chinese files saved by Windows tools), else latin-1, which never
fails. The choice is made on the first ``PROBE_BYTES``; bytes that do not decode after that
become U+FFFD. Line endings become ``\\n``.

Inputs may be large: pass a path or a seekable binary file and only what is needed is read
(PDF pages until ``max_chars`` is reached, DOCX and text in chunks).
"""

from __future__ import annotations

import codecs
import html
import io
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import BinaryIO, Literal, Union
from xml.etree import ElementTree

from pypdf import PdfReader
from pypdf.errors import DependencyError, PyPdfError

from kimi.errors import BadRequest

__all__ = ["ExtractedText", "detect_kind", "extract_text", "format_for_prompt"]

logger = logging.getLogger(__name__)

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]
Overflow = Literal["truncate", "error"]

PROBE_BYTES = 64 * 1024
READ_CHUNK_BYTES = 64 * 1024
# A non-seekable upload is copied here; past this size the copy moves to a temporary file.
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
# Zip-bomb guard: how much uncompressed word/document.xml is read before giving up.
DOCX_XML_BYTE_LIMIT = 64 * 1024 * 1024
DOCX_MAIN_PART = "word/document.xml"
# Share of control characters above which "text" is taken to be binary data.
BINARY_CONTROL_RATIO = 0.05
BINARY_SAMPLE_CHARS = 8192

PDF, DOCX, HTML, TEXT = "pdf", "docx", "html", "text"
TEXT_KINDS = frozenset({TEXT, "markdown", "csv", "tsv", "json", "xml", "yaml", "code"})
SUPPORTED = "PDF, DOCX, HTML or plain-text documents"
TRUNCATION_NOTE = "[Document truncated: only its beginning is included above.]"

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
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FALLBACK_ENCODINGS = ("utf-8", "gb18030")
_CONTROL_CHARS = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) - set("\t\n\r\f\v\b\x1b")

# pypdf reports most damage as PyPdfError, but some malformed objects surface as plain errors.
_PDF_ERRORS = (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, zlib.error)
_ZIP_READ_ERRORS = (NotImplementedError, RuntimeError, EOFError, zlib.error)


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
    max_chars: int,
    on_overflow: Overflow = "truncate",
) -> ExtractedText:
    """Read the text of a document given as bytes, a path or a binary file object.

    Text beyond ``max_chars`` is cut off (``truncated=True``), or with ``on_overflow="error"``
    refused. Unsupported, damaged or text-less documents raise ``BadRequest`` naming the file.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    if on_overflow not in ("truncate", "error"):
        raise ValueError(f"on_overflow must be 'truncate' or 'error', not {on_overflow!r}")
    name = filename or _name_of(source)
    with _binary_stream(source) as stream:
        kind = detect_kind(stream, filename=name, content_type=content_type)
        text, truncated = _read(kind, stream, name, _charset_of(content_type), max_chars)
    if truncated and on_overflow == "error":
        raise BadRequest(
            f"file {name!r} has more than {max_chars} characters of text, "
            "the limit for an attached document"
        )
    logger.debug(
        "read %d characters of %s from %r (truncated=%s)", len(text), kind, name, truncated
    )
    return ExtractedText(name=name, kind=kind, text=text, truncated=truncated)


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


def format_for_prompt(files: Sequence[ExtractedText]) -> str:
    """The documents as ``<document name=".." type="..">`` blocks, one after the other.

    Anything in a document's text that looks like a ``<document`` or ``</document`` tag is
    escaped, so a document can neither close its own block nor forge another one.
    """
    return "\n\n".join(_document_block(document) for document in files)


# --- format detection -------------------------------------------------------------------------


def _kind_from_content_type(content_type: str | None, name: str) -> str | None:
    mime = _mime_of(content_type)
    if mime in _KIND_BY_CONTENT_TYPE:
        return _KIND_BY_CONTENT_TYPE[mime]
    media, _, subtype = mime.partition("/")
    if mime in _UNSUPPORTED_CONTENT_TYPES or media in _UNSUPPORTED_MEDIA:
        what = _UNSUPPORTED_CONTENT_TYPES.get(mime) or _UNSUPPORTED_MEDIA[media]
        raise _unsupported(name, f"{what} ({mime})")
    if subtype.endswith("+json"):
        return "json"
    if subtype.endswith("+xml"):
        return "xml"
    return TEXT if media == "text" else None


def _kind_from_extension(filename: str | None) -> str | None:
    extension = os.path.splitext(filename or "")[1].lower()
    return "code" if extension in _CODE_EXTENSIONS else _KIND_BY_EXTENSION.get(extension)


def _kind_from_magic(stream: BinaryIO, name: str) -> str:
    head = stream.read(1024)
    stream.seek(0)
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        if _is_docx(stream):
            return DOCX
        raise _unsupported(name, "a ZIP archive that is not a DOCX document")
    for signature, what in _BINARY_SIGNATURES:
        if head.startswith(signature):
            raise _unsupported(name, what)
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


def _mime_of(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def _charset_of(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return _known_codec(value.strip().strip("\"'"))
    return None


def _known_codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _unsupported(name: str, what: str) -> BadRequest:
    return BadRequest(f"file {name!r} is {what}, which cannot be read as text; attach {SUPPORTED}")


# --- input ------------------------------------------------------------------------------------


def _name_of(source: Source) -> str:
    path = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    if isinstance(path, (str, os.PathLike)):
        return os.path.basename(os.fspath(path)) or "document"
    return "document"


@contextmanager
def _binary_stream(source: Source) -> Iterator[BinaryIO]:
    """A seekable binary stream at the start of the document."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            yield stream
    elif _is_seekable(source):
        source.seek(0)
        yield source
    else:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            shutil.copyfileobj(source, spool)
            spool.seek(0)
            yield spool


def _is_seekable(stream: BinaryIO) -> bool:
    seekable = getattr(stream, "seekable", None)
    return callable(seekable) and bool(seekable())


def _read(
    kind: str, stream: BinaryIO, name: str, charset: str | None, max_chars: int
) -> tuple[str, bool]:
    if kind == PDF:
        return _read_pdf(stream, name, max_chars)
    if kind == DOCX:
        return _read_docx(stream, name, max_chars)
    chunks = _decoded_chunks(stream, name, charset)
    if kind == HTML:
        return _read_html(chunks, max_chars)
    return _collect(chunks, max_chars)


def _collect(parts: Iterable[str], max_chars: int, separator: str = "") -> tuple[str, bool]:
    """Join parts until there are more than ``max_chars`` characters, then cut at the limit."""
    kept: list[str] = []
    size = -len(separator)
    for part in parts:
        kept.append(part)
        size += len(separator) + len(part)
        if size > max_chars:
            break
    return _cap(separator.join(kept), max_chars)


def _cap(text: str, max_chars: int) -> tuple[str, bool]:
    return text[:max_chars], len(text) > max_chars


# --- PDF --------------------------------------------------------------------------------------


def _read_pdf(stream: BinaryIO, name: str, max_chars: int) -> tuple[str, bool]:
    try:
        reader = PdfReader(stream)
        _unlock_pdf(reader, name)
        pages = (page.extract_text().strip() for page in reader.pages)
        text, truncated = _collect((page for page in pages if page), max_chars, "\n\n")
    except DependencyError as exc:
        raise BadRequest(f"file {name!r} is an encrypted PDF this server cannot decrypt") from exc
    except _PDF_ERRORS as exc:
        logger.info("unreadable PDF %r: %s", name, exc)
        raise BadRequest(f"file {name!r} is not a valid PDF or is damaged") from exc
    if not text.strip():
        raise BadRequest(
            f"file {name!r} has no text layer (it is probably a scanned image); "
            "text can only be read from it with OCR, which the legacy protocol offers"
        )
    return text, truncated


def _unlock_pdf(reader: PdfReader, name: str) -> None:
    """Open an encrypted PDF that needs no password to read (only an owner password)."""
    if reader.is_encrypted and not reader.decrypt(""):
        raise BadRequest(f"file {name!r} is a password-protected PDF; send it without a password")


# --- DOCX -------------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _read_docx(stream: BinaryIO, name: str, max_chars: int) -> tuple[str, bool]:
    try:
        with zipfile.ZipFile(stream) as archive, archive.open(DOCX_MAIN_PART) as part:
            return _parse_document_xml(part, name, max_chars)
    except zipfile.BadZipFile as exc:
        raise BadRequest(
            f"file {name!r} is not a valid DOCX document (not a readable ZIP archive)"
        ) from exc
    except KeyError as exc:
        raise BadRequest(f"file {name!r} is not a DOCX document: no {DOCX_MAIN_PART}") from exc
    except ElementTree.ParseError as exc:
        raise BadRequest(f"file {name!r} is a damaged DOCX document (invalid XML)") from exc
    except _ZIP_READ_ERRORS as exc:
        logger.info("unreadable DOCX %r: %s", name, exc)
        raise BadRequest(f"file {name!r} is a DOCX document this server cannot unpack") from exc


def _parse_document_xml(part: BinaryIO, name: str, max_chars: int) -> tuple[str, bool]:
    """Stream-parse document.xml, stopping once past ``max_chars`` or the byte limit."""
    parser = ElementTree.XMLPullParser(events=("start", "end"))
    collector = _DocxTextCollector()
    consumed = 0
    while collector.size <= max_chars:
        chunk = part.read(READ_CHUNK_BYTES)
        if not chunk:
            parser.close()
            collector.consume(parser.read_events())
            break
        consumed += len(chunk)
        if consumed > DOCX_XML_BYTE_LIMIT:
            raise BadRequest(
                f"file {name!r} expands to more than {DOCX_XML_BYTE_LIMIT} bytes of document XML; "
                "refusing to read it (it may be a zip bomb)"
            )
        parser.feed(chunk)
        collector.consume(parser.read_events())
    return _cap(collector.text(), max_chars)


class _DocxTextCollector:
    """Turns WordprocessingML parse events into lines: one per paragraph and per table row,
    " | " between a row's cells, a cell's paragraphs joined by spaces, no repeated blank lines."""

    def __init__(self) -> None:
        self.size = 0
        self._lines: list[str] = []
        self._runs: list[str] = []
        self._open: list[ElementTree.Element] = []
        self._rows: list[list[str]] = []  # cells of each open table row (tables nest)
        self._cells: list[list[str]] = []  # paragraphs of each open table cell

    def text(self) -> str:
        return "\n".join(self._lines)

    def consume(self, events: Iterable[tuple[str, ElementTree.Element]]) -> None:
        for event, element in events:
            if event == "start":
                self._start(element)
            else:
                self._end(element)

    def _start(self, element: ElementTree.Element) -> None:
        self._open.append(element)
        if element.tag == _W + "tr":
            self._rows.append([])
        elif element.tag == _W + "tc":
            self._cells.append([])

    def _end(self, element: ElementTree.Element) -> None:
        self._open.pop()
        parent = self._open[-1] if self._open else None
        in_run = parent is not None and parent.tag == _W + "r"
        tag = element.tag
        if tag == _W + "t":
            self._runs.append(element.text or "")
        elif tag == _W + "tab" and in_run:
            self._runs.append("\t")
        elif tag in (_W + "br", _W + "cr") and in_run:
            self._runs.append("\n")
        elif tag == _W + "p":
            self._emit("".join(self._runs))
            self._runs = []
        elif tag == _W + "tc" and self._cells:
            cell = " ".join(paragraph for paragraph in self._cells.pop() if paragraph.strip())
            if self._rows:
                self._rows[-1].append(cell)
        elif tag == _W + "tr" and self._rows:
            self._emit(" | ".join(self._rows.pop()))
        if parent is not None:
            parent.remove(element)  # finished elements are not kept: memory stays flat

    def _emit(self, line: str) -> None:
        if self._cells:
            self._cells[-1].append(line)
            return
        if not line.strip():
            if not self._lines or not self._lines[-1]:
                return  # runs of empty paragraphs (Word's spacing) become one blank line
            line = ""
        self.size += len(line) + (1 if self._lines else 0)
        self._lines.append(line)


# --- text and HTML ----------------------------------------------------------------------------


def _decoded_chunks(stream: BinaryIO, name: str, charset: str | None) -> Iterator[str]:
    """The stream's text in chunks, with ``\\r\\n`` and ``\\r`` turned into ``\\n``."""
    probe = stream.read(PROBE_BYTES)
    stream.seek(0)
    encoding = _choose_encoding(probe, charset, complete=len(probe) < PROBE_BYTES)
    if _looks_binary(probe[:BINARY_SAMPLE_CHARS].decode(encoding, errors="replace")):
        raise _unsupported(name, "binary data")
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    pending = ""
    while chunk := stream.read(READ_CHUNK_BYTES):
        text = pending + decoder.decode(chunk)
        # A "\r" at the end may be the first half of a "\r\n" split across reads.
        text, pending = (text[:-1], "\r") if text.endswith("\r") else (text, "")
        yield _normalise_newlines(text)
    yield _normalise_newlines(pending + decoder.decode(b"", final=True))


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


def _read_html(chunks: Iterable[str], max_chars: int) -> tuple[str, bool]:
    parser = _HTMLTextParser()
    for chunk in chunks:
        parser.feed(chunk)
        # ``size`` counts whitespace that text() later strips: confirm before stopping.
        if parser.size > max_chars and len(parser.text()) > max_chars:
            break
    else:
        parser.close()
    return _cap(parser.text(), max_chars)


class _HTMLTextParser(HTMLParser):
    """Collects an HTML page's visible text, one line per block element."""

    SKIPPED = frozenset({"script", "style", "head", "template", "noscript"})
    BLOCKS = frozenset(
        "address article aside blockquote dd div dl dt fieldset figcaption figure footer form"
        " h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tr ul".split()
    )
    CELLS = frozenset({"td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.size = 0
        self._pieces: list[str] = []
        self._skipping: list[str] = []
        self._preformatted = 0
        self._row_has_cell = False
        self._in_cell = False
        self._at_line_start = True

    def text(self) -> str:
        return "".join(self._pieces).strip()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skipping.clear()  # an unclosed <head> ends where the body starts
        if tag in self.SKIPPED:
            self._skipping.append(tag)
        if self._skipping:
            return
        if tag == "br":
            self._write("\n")
        elif tag in self.BLOCKS:
            if tag == "tr":
                self._row_has_cell = self._in_cell = False
            self._break_line()
        elif tag in self.CELLS:
            if self._row_has_cell:
                self._write(" | ")
            self._row_has_cell = self._in_cell = True
        if tag == "pre":
            self._preformatted += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            if tag in self._skipping:
                del self._skipping[self._skipping.index(tag) :]
            return
        if tag == "pre":
            self._preformatted = max(0, self._preformatted - 1)
        if tag in self.CELLS:
            self._in_cell = False
        elif tag in self.BLOCKS:
            self._break_line()

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if not self._preformatted:
            data = re.sub(r"\s+", " ", data)
            if self._last_char().isspace():
                data = data.lstrip(" ")
        self._write(data)

    def _break_line(self) -> None:
        if self._in_cell:
            if not self._last_char().isspace():
                self._write(" ")  # a table row stays on one line
        elif not self._at_line_start:
            self._write("\n")

    def _write(self, text: str) -> None:
        if not text:
            return
        if text[0] in " \n" and self._pieces:
            self._pieces[-1] = self._pieces[-1].rstrip(" ")
        self._pieces.append(text)
        self.size += len(text)
        self._at_line_start = text.endswith("\n")

    def _last_char(self) -> str:
        last = self._pieces[-1][-1:] if self._pieces else ""
        return last or "\n"


# --- prompt -----------------------------------------------------------------------------------

_TAG_LIKE = re.compile(r"<(?=\s*/?\s*document)", re.IGNORECASE)
_ATTRIBUTE_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _document_block(document: ExtractedText) -> str:
    attributes = f'name="{_attribute(document.name)}" type="{_attribute(document.kind)}"'
    note = ""
    if document.truncated:
        attributes += ' truncated="true"'
        note = "\n" + TRUNCATION_NOTE
    body = _TAG_LIKE.sub("&lt;", document.text)
    return f"<document {attributes}>\n{body}{note}\n</document>"


def _attribute(value: str) -> str:
    return html.escape(_ATTRIBUTE_UNSAFE.sub(" ", value), quote=True)
