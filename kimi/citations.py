"""Removing Kimi's inline citation markers from answer text, across stream pieces.

With search on, the answer carries markers such as ``🛠web_search:1#5🛠`` or
``\\ue3a0cite:2\\ue3a8``: a delimiter code point, a short ASCII reference, a delimiter. They can
split across frames, so the stripper holds back an unfinished marker until it can decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MARKER_DELIMITERS = frozenset("\ue3a0\ue3a8\U0001f6e0\U0001f3a8")
# A marker body is a short reference like "web_search:1#5"; longer or other text is prose.
MAX_MARKER_BODY = 64
_MARKER_BODY = re.compile(r"[A-Za-z0-9_:#.,\-^\[\]]*")


class CitationStripper:
    """Feed text pieces in order; get back the same text without citation markers.

    ``render``, when given, turns a whole marker's body (``web_search:1#5``) into the text put
    in its place (a numbered reference); without it markers are dropped.
    """

    def __init__(self, render: Callable[[str], str] | None = None) -> None:
        self._held = ""  # an opening delimiter's body seen so far, not yet closed
        self._render = render

    def feed(self, text: str) -> str:
        if not self._held and MARKER_DELIMITERS.isdisjoint(text):
            return text  # most pieces: no marker begins or goes on here (one C-level scan)
        out: list[str] = []
        for char in text:
            self._take(char, out)
        return "".join(out)

    def flush(self) -> str:
        """End of text: an unclosed marker's body was prose after a stray delimiter."""
        held, self._held = self._held, ""
        return held[1:]

    def _take(self, char: str, out: list[str]) -> None:
        if not self._held:
            if char in MARKER_DELIMITERS:
                self._held = char
            else:
                out.append(char)
            return
        if char in MARKER_DELIMITERS:
            body, self._held = self._held[1:], ""  # a whole marker: drop or render it
            if self._render is not None:
                out.append(self._render(body))
            return
        self._held += char
        body = self._held[1:]
        if len(body) > MAX_MARKER_BODY or not _MARKER_BODY.fullmatch(body):
            # Not a marker after all: drop the stray delimiter, keep the text.
            out.append(body)
            self._held = ""


def strip_citations(text: str) -> str:
    """Remove every citation marker from a whole text."""
    stripper = CitationStripper()
    return stripper.feed(text) + stripper.flush()


def render_citation_list(citations: list[tuple[str, str]]) -> str:
    """The sources list appended after an answer: numbered Markdown links, no duplicates."""
    unique = list(dict.fromkeys(citations))
    lines = [f"{index}. [{title or url}]({url})" for index, (title, url) in enumerate(unique, 1)]
    return "\n\nSources:\n" + "\n".join(lines) if lines else ""
