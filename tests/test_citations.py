"""Citation markers are removed from answer text, however the text is split."""

from __future__ import annotations

from itertools import pairwise

import pytest

from kimi.citations import (
    MARKER_DELIMITERS,
    CitationStripper,
    render_citation_list,
    strip_citations,
)

CASES = [
    ("Sunny today🛠web_search:1#5🛠.", "Sunny today."),
    ("Rain\ue3a0cite:2\ue3a8 later", "Rain later"),
    ("A picture 🎨image:3🎨 here", "A picture  here"),
    ("a🛠web_search:1🛠b\ue3a0cite:2\ue3a8c🎨x🎨d", "abcd"),
    ("no markers at all", "no markers at all"),
    ("emoji 😀 and 中文 stay", "emoji 😀 and 中文 stay"),
    ("stray 🛠 delimiter then prose", "stray  delimiter then prose"),
    ("stray\ue3a0, and more prose", "stray, and more prose"),
    ("ends with a stray🛠", "ends with a stray"),
    ("unclosed 🛠web_search:1", "unclosed web_search:1"),
    ("🛠🛠", ""),
    ("x🛠" + "a" * 80 + " y", "x" + "a" * 80 + " y"),
]
INPUTS = [text for text, _ in CASES] + [
    "🛠\ue3a0\ue3a8🎨",
    "🛠a🛠b🛠c",
    "\ue3a0\ue3a0\ue3a0 text",
    "🎨 🛠 \ue3a8 🛠web:1",
    "🛠" + "b" * 64 + "🛠 after",
]


def strip_in_pieces(text: str, cuts: list[int]) -> str:
    stripper = CitationStripper()
    bounds = [0, *cuts, len(text)]
    out = "".join(stripper.feed(text[a:b]) for a, b in pairwise(bounds))
    return out + stripper.flush()


@pytest.mark.parametrize("text, expected", CASES)
def test_markers_are_removed_and_prose_is_kept(text, expected):
    assert strip_citations(text) == expected


@pytest.mark.parametrize("text, expected", CASES)
def test_text_split_at_any_offset_strips_the_same_as_whole(text, expected):
    for offset in range(len(text) + 1):
        assert strip_in_pieces(text, [offset]) == expected, offset


@pytest.mark.parametrize("text, expected", CASES)
def test_text_fed_one_character_at_a_time_strips_the_same_as_whole(text, expected):
    assert strip_in_pieces(text, list(range(1, len(text)))) == expected


@pytest.mark.parametrize("text", INPUTS)
def test_no_delimiter_code_point_ever_reaches_the_output(text):
    for offset in range(len(text) + 1):
        assert not MARKER_DELIMITERS & set(strip_in_pieces(text, [offset]))


def test_split_marker_is_held_back_until_it_closes():
    stripper = CitationStripper()
    assert stripper.feed("see 🛠web_sea") == "see "
    assert stripper.feed("rch:1#5🛠 done") == " done"
    assert stripper.flush() == ""


def test_flush_after_complete_text_returns_nothing():
    stripper = CitationStripper()
    stripper.feed("plain")
    assert stripper.flush() == ""


def test_citation_list_is_numbered_markdown_links():
    listed = render_citation_list([("Weather", "https://a.test/1"), ("News", "https://b.test/2")])
    assert listed == ("\n\nSources:\n1. [Weather](https://a.test/1)\n2. [News](https://b.test/2)")


def test_citation_list_drops_duplicates_and_keeps_first_order():
    listed = render_citation_list(
        [("A", "https://a.test"), ("B", "https://b.test"), ("A", "https://a.test")]
    )
    assert listed == "\n\nSources:\n1. [A](https://a.test)\n2. [B](https://b.test)"


def test_citation_without_title_shows_its_url():
    assert render_citation_list([("", "https://a.test")]) == (
        "\n\nSources:\n1. [https://a.test](https://a.test)"
    )


def test_no_citations_render_nothing():
    assert render_citation_list([]) == ""
