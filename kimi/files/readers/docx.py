"""DOCX documents, read with ``zipfile`` and ``ElementTree``: body paragraphs and tables
(not headers, footers, footnotes or comments).

``word/document.xml`` is stream-parsed and dropped as it goes, so memory stays flat; reading
stops at the character budget or, for a zip bomb, at ``XML_BYTE_LIMIT`` bytes of XML. XML that
compresses well can still be built to hurt: millions of nested elements (each open one is kept)
or millions of empty ones (each costs time) are refused at ``MAX_XML_DEPTH`` and
``MAX_XML_ELEMENTS``.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Iterable
from typing import BinaryIO
from xml.etree import ElementTree

from ...errors import BadRequest
from .base import CELL_SEPARATOR, READ_CHUNK_BYTES, cap

log = logging.getLogger(__name__)

MAIN_PART = "word/document.xml"
# Zip-bomb guard: how much uncompressed word/document.xml is read before giving up.
XML_BYTE_LIMIT = 64 * 1024 * 1024
# Word nests a table in a table cell in 3 levels (tbl, tr, tc); real documents stay far below.
MAX_XML_DEPTH = 200
# Elements read before giving up: a long, richly formatted document has a few hundred thousand
# by the time its text passes the character budget.
MAX_XML_ELEMENTS = 1_000_000

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_ZIP_READ_ERRORS = (NotImplementedError, RuntimeError, EOFError, zlib.error)


def read(
    stream: BinaryIO, name: str, max_chars: int, *, charset: str | None = None
) -> tuple[str, bool]:
    """The body's text, a line per paragraph and per table row (``charset`` is unused)."""
    try:
        with zipfile.ZipFile(stream) as archive, archive.open(MAIN_PART) as part:
            return _parse_document_xml(part, name, max_chars)
    except zipfile.BadZipFile as exc:
        raise BadRequest(
            f"file {name!r} is not a valid DOCX document (not a readable ZIP archive)"
        ) from exc
    except KeyError as exc:
        raise BadRequest(f"file {name!r} is not a DOCX document: no {MAIN_PART}") from exc
    except ElementTree.ParseError as exc:
        raise BadRequest(f"file {name!r} is a damaged DOCX document (invalid XML)") from exc
    except _ZIP_READ_ERRORS as exc:
        log.info("unreadable DOCX %r: %s", name, exc)
        raise BadRequest(f"file {name!r} is a DOCX document this server cannot unpack") from exc


def _parse_document_xml(part: BinaryIO, name: str, max_chars: int) -> tuple[str, bool]:
    """Stream-parse document.xml, stopping once past ``max_chars`` or the byte limit."""
    parser = ElementTree.XMLPullParser(events=("start", "end"))
    collector = _TextCollector(name)
    consumed = 0
    while collector.size <= max_chars:
        chunk = part.read(READ_CHUNK_BYTES)
        if not chunk:
            parser.close()
            collector.consume(parser.read_events())
            break
        consumed += len(chunk)
        if consumed > XML_BYTE_LIMIT:
            raise BadRequest(
                f"file {name!r} expands to more than {XML_BYTE_LIMIT} bytes of document XML; "
                "refusing to read it (it may be a zip bomb)"
            )
        parser.feed(chunk)
        collector.consume(parser.read_events())
    return cap(collector.text(), max_chars)


class _TextCollector:
    """Turns WordprocessingML parse events into lines: one per paragraph and per table row,
    " | " between a row's cells, a cell's paragraphs joined by spaces, no repeated blank lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.size = 0
        self._elements = 0
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
        self._elements += 1
        if self._elements > MAX_XML_ELEMENTS:
            raise _too_complex(self.name, f"more than {MAX_XML_ELEMENTS} XML elements")
        if len(self._open) >= MAX_XML_DEPTH:
            raise _too_complex(self.name, f"XML nested more than {MAX_XML_DEPTH} levels deep")
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
            self._emit(CELL_SEPARATOR.join(self._rows.pop()))
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


def _too_complex(name: str, what: str) -> BadRequest:
    return BadRequest(
        f"file {name!r} has {what}; refusing to read it (it may be built to exhaust the server)",
        code="document_too_complex",
    )
