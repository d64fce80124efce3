"""HTML documents, read with ``html.parser``: the visible text, a line per block element.

Script, style, head, template and noscript are dropped; table cells are joined with " | ".
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import BinaryIO

from .base import CELL_SEPARATOR, cap
from .encoding import charset_in_html
from .text import decoded_chunks


def read(
    stream: BinaryIO, name: str, max_chars: int, *, charset: str | None = None
) -> tuple[str, bool]:
    """The page's visible text, decoded as plain text is, minding a ``<meta charset>``."""
    parser = _TextParser()
    for chunk in decoded_chunks(stream, name, charset, declared_in=charset_in_html):
        parser.feed(chunk)
        # ``size`` counts whitespace that text() later strips: confirm before stopping.
        if parser.size > max_chars and len(parser.text()) > max_chars:
            break
    else:
        parser.close()
    return cap(parser.text(), max_chars)


class _TextParser(HTMLParser):
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
                self._write(CELL_SEPARATOR)
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
