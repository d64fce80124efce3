"""Search sources of a ``web`` answer and the inline references to them. Pure: no I/O.

Kimi reports search results in two places: ``block.tool`` contents (``searchResult`` with a
``refIndex`` and ``base{title, url, siteName, ...}``) and the message's ``refs``
(``searchChunks``, and ``usedSearchChunks`` for those the answer drew on). The answer text refers
to them as ``[^N^]`` (N = ``refIndex``) or as private-use/emoji markers (``🛠web_search:1#5🛠``,
read as the last number: ``refIndex`` 5). Each reference becomes ``[k]``, k numbering the sources
in the order the answer first cites them; the list appended after the answer uses the same
numbers (``citations.render_citation_list``, as under ``legacy``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ..citations import CitationStripper

log = logging.getLogger(__name__)

REF_MARKER = re.compile(r"\[\^(\d{1,4})\^\]")  # [^3^]
# What a reference marker may look like before it is complete: held back until decided.
REF_MARKER_PREFIX = re.compile(r"\[(?:\^(?:\d{1,4}\^?)?)?")
MARKER_REF_INDEX = re.compile(r"(\d+)\D*$")  # the last number of "web_search:1#5"


@dataclass(frozen=True)
class Source:
    """One search result the answer may cite."""

    title: str
    url: str


class SearchSources:
    """Collects the turn's search results and numbers them as the answer cites them."""

    def __init__(self) -> None:
        self._urls_by_ref: dict[int, str] = {}
        self._urls_by_id: dict[str, str] = {}
        self._sources: dict[str, Source] = {}  # by url, in the order they were reported
        self._cited: list[str] = []  # urls, in the order of their first citation
        self._used: list[str] = []  # urls Kimi says the answer drew on

    def add_tool(self, tool: dict[str, Any]) -> None:
        """A ``block.tool``: its ``contents[].searchResult`` entries, when there are any."""
        contents = tool.get("contents")
        for item in contents if isinstance(contents, list) else []:
            result = item.get("searchResult") if isinstance(item, dict) else None
            if isinstance(result, dict):
                self._add(result)

    def add_refs(self, refs: dict[str, Any]) -> None:
        """A message's ``refs``: ``searchChunks`` and ``usedSearchChunks`` (lists of chunks)."""
        chunks = refs.get("searchChunks")
        for position, chunk in enumerate(chunks if isinstance(chunks, list) else [], 1):
            if isinstance(chunk, dict):
                self._add(chunk, default_ref=position)
        used = refs.get("usedSearchChunks")
        for chunk in used if isinstance(used, list) else []:
            url = self._add(chunk) if isinstance(chunk, dict) else None
            if url and url not in self._used:
                self._used.append(url)

    def number(self, ref_index: int) -> int | None:
        """The reference number of a cited ``refIndex``; None when no such result is known."""
        url = self._urls_by_ref.get(ref_index)
        if url is None:
            log.debug("The answer cites search result %d, which Kimi never listed", ref_index)
            return None
        if url not in self._cited:
            self._cited.append(url)
        return self._cited.index(url) + 1

    def listed(self) -> list[Source]:
        """The sources to list after the answer, numbered as cited: the cited ones, then those
        Kimi says were used; every result when the answer names none (as ``legacy`` lists)."""
        urls = self._cited + [url for url in self._used if url not in self._cited]
        return [self._sources[url] for url in urls or list(self._sources)]

    def _add(self, result: dict[str, Any], default_ref: int | None = None) -> str | None:
        base = result.get("base") if isinstance(result.get("base"), dict) else result
        url = str(base.get("url") or "").strip()
        if not url:
            return self._urls_by_id.get(str(result.get("id") or ""))
        title = str(base.get("title") or base.get("siteName") or "").strip()
        if url not in self._sources or (title and not self._sources[url].title):
            self._sources[url] = Source(title, url)
        ref_index = _ref_index(result.get("refIndex"), default_ref)
        if ref_index is not None:
            self._urls_by_ref.setdefault(ref_index, url)
        if result.get("id"):
            self._urls_by_id.setdefault(str(result["id"]), url)
        return url


class ReferenceRenderer:
    """Feed answer text pieces in order; markers come back as ``[k]`` (or dropped when the
    result is unknown or no references are wanted), across piece boundaries."""

    def __init__(self, sources: SearchSources, *, numbered: bool = True) -> None:
        self._sources = sources
        self._numbered = numbered
        self._markers = CitationStripper(render=self._render_marker)
        self._held = ""  # the start of what may be a [^N^] marker

    def feed(self, text: str) -> str:
        text = self._markers.feed(text)
        if not self._held and "[" not in text:
            return text  # most pieces: no reference begins or goes on here
        out: list[str] = []
        for char in text:
            self._take(char, out)
        return "".join(out)

    def flush(self) -> str:
        """End of text: what was held back was prose."""
        tail = self.feed(self._markers.flush())
        held, self._held = self._held, ""
        return tail + held

    def _take(self, char: str, out: list[str]) -> None:
        if not self._held and char != "[":
            out.append(char)
            return
        self._held += char
        whole = REF_MARKER.fullmatch(self._held)
        if whole:
            self._held = ""
            out.append(self._reference(int(whole.group(1))))
        elif not REF_MARKER_PREFIX.fullmatch(self._held):
            held, self._held = self._held, ""
            out.append(held[0])  # not a marker: the "[" is prose, the rest is looked at again
            for rest in held[1:]:
                self._take(rest, out)

    def _render_marker(self, body: str) -> str:
        found = MARKER_REF_INDEX.search(body)
        return self._reference(int(found.group(1))) if found else ""

    def _reference(self, ref_index: int) -> str:
        number = self._sources.number(ref_index) if self._numbered else None
        return f"[{number}]" if number is not None else ""


def _ref_index(value: Any, default: int | None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
