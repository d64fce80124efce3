"""Search sources of a web answer: collected from both places Kimi reports them, cited as
numbered references however the text is split, listed once each in the order cited."""

from __future__ import annotations

from itertools import pairwise

import pytest

from kimi.events import Citation, Finish, TextDelta
from kimi.upstream.connect import END_STREAM_FLAG, FrameDecoder, encode_frame
from kimi.upstream.web_sources import ReferenceRenderer, SearchSources, Source
from kimi.upstream.web_stream import WebStreamParser


def result(ref_index: int, *, url: str | None = None, title: str | None = None) -> dict:
    base = {"title": title or f"Report {ref_index}", "url": url or f"https://r.test/{ref_index}"}
    return {"id": f"id-{ref_index}", "refIndex": ref_index, "base": base}


def tool(*results: dict) -> dict:
    return {"name": "web_search", "contents": [{"searchResult": r} for r in results]}


def sources_with(*ref_indexes: int) -> SearchSources:
    sources = SearchSources()
    sources.add_tool(tool(*(result(n) for n in ref_indexes)))
    return sources


# text -> rendered, with results 1 to 5 known
CASES = [
    ("Sunny[^2^] today.", "Sunny[1] today."),
    ("a[^3^]b[^1^]c[^3^]", "a[1]b[2]c[1]"),
    ("web🛠web_search:1#5🛠 and \ue3a0cite:2\ue3a8.", "web[1] and [2]."),
    ("mixed[^4^]🛠web_search:0#4🛠", "mixed[1][1]"),
    ("unknown[^9^] and 🛠web_search:1#9🛠 gone", "unknown and  gone"),
    ("[link](https://x.test) [^x^] [^] [^12345^]", "[link](https://x.test) [^x^] [^] [^12345^]"),
    ("[[^1^]] and [^^2^]", "[[1]] and [^^2^]"),
    ("ends open [^3", "ends open [^3"),
    ("no markers, 中文 and emoji 😀", "no markers, 中文 and emoji 😀"),
    ("🛠🛠 empty marker", " empty marker"),
]


def render_in_pieces(text: str, cuts: list[int]) -> str:
    renderer = ReferenceRenderer(sources_with(1, 2, 3, 4, 5))
    bounds = [0, *cuts, len(text)]
    return "".join(renderer.feed(text[a:b]) for a, b in pairwise(bounds)) + renderer.flush()


@pytest.mark.parametrize("text, expected", CASES)
def test_references_render_the_same_split_at_any_offset(text, expected):
    for offset in range(len(text) + 1):
        assert render_in_pieces(text, [offset]) == expected, offset


@pytest.mark.parametrize("text, expected", CASES)
def test_references_render_the_same_one_character_at_a_time(text, expected):
    assert render_in_pieces(text, list(range(1, len(text)))) == expected


def test_without_numbering_references_are_dropped_and_nothing_is_cited():
    sources = sources_with(1, 2)
    renderer = ReferenceRenderer(sources, numbered=False)
    assert renderer.feed("a[^1^] b🛠web_search:1#2🛠.") + renderer.flush() == "a b."
    assert sources.listed() == [
        Source("Report 1", "https://r.test/1"),
        Source("Report 2", "https://r.test/2"),
    ]


def test_sources_are_listed_in_the_order_first_cited_then_the_used_ones():
    sources = sources_with(1, 2, 3, 4)
    sources.add_refs({"usedSearchChunks": [{"id": "id-4"}, {"id": "id-3"}, {"id": "id-1"}]})
    for ref_index in (3, 1, 3):
        sources.number(ref_index)
    assert [s.url for s in sources.listed()] == [
        "https://r.test/3",
        "https://r.test/1",
        "https://r.test/4",
    ]


def test_every_result_is_listed_when_the_answer_cites_none():
    assert [s.title for s in sources_with(2, 1).listed()] == ["Report 2", "Report 1"]
    assert SearchSources().listed() == []


def test_the_same_page_under_two_indexes_is_one_source_with_one_number():
    sources = SearchSources()
    sources.add_tool(tool(result(1, url="https://same.test"), result(2, url="https://same.test")))
    assert (sources.number(2), sources.number(1)) == (1, 1)
    assert sources.listed() == [Source("Report 1", "https://same.test")]


def test_search_chunks_without_a_ref_index_are_numbered_by_position():
    sources = SearchSources()
    chunks = [{"id": "a", "base": {"url": "https://a.test", "siteName": "A site"}}]
    chunks.append({"id": "b", "base": {"url": "https://b.test", "title": "B"}})
    sources.add_refs({"searchChunks": chunks})
    assert sources.number(2) == 1
    assert sources.listed() == [Source("B", "https://b.test")]
    assert sources.number(1) == 2
    assert sources.listed()[1] == Source("A site", "https://a.test")


@pytest.mark.parametrize(
    "refs",
    [
        {"searchChunks": "nope", "usedSearchChunks": None},
        {"searchChunks": [None, 3, {"base": "x"}, {"base": {"title": "no url"}}]},
        {"usedSearchChunks": [{"id": "unknown"}, "x"]},
    ],
)
def test_malformed_references_are_ignored(refs):
    sources = SearchSources()
    sources.add_refs(refs)
    sources.add_tool({"contents": [None, {"searchResult": "x"}, {"other": {}}]})
    assert sources.listed() == []


REPLY = {"op": "set", "mask": "message", "message": {"id": "r1", "role": "assistant"}}


def frames_with_sources() -> list[dict]:
    running = {"op": "set", "mask": "block.tool", "block": {"id": "t", "tool": {"name": "s"}}}
    done = {"op": "set", "mask": "block.tool", "block": {"id": "t", "tool": tool(result(1))}}
    chunks = {"searchChunks": [result(1), result(2, title="From refs")]}
    refs = {
        "op": "set",
        "mask": "message.refs.searchChunks",
        "message": {"id": "r1", "refs": chunks},
    }
    text = {"op": "set", "mask": "block.text", "block": {"id": "b", "text": {"content": "A[^2^]"}}}
    more = {
        "op": "append",
        "mask": "block.text.content",
        "block": {"id": "b", "text": {"content": "🛠s:1#1🛠."}},
    }
    return [REPLY, running, done, refs, text, more, {"done": {}}]


def test_the_parser_cites_sources_from_both_places_at_every_split():
    data = b"".join(encode_frame(m) for m in frames_with_sources()) + encode_frame(
        {}, END_STREAM_FLAG
    )
    expected = [
        Citation("From refs", "https://r.test/2"),
        Citation("Report 1", "https://r.test/1"),
        Finish("stop"),
    ]
    for offset in range(len(data) + 1):
        decoder, parser = FrameDecoder(), WebStreamParser()
        events = []
        for piece in (data[:offset], data[offset:]):
            for frame in decoder.feed(piece):
                events += parser.feed(frame)
        events += parser.close()
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "A[1][2].", offset
        assert events[-3:] == expected, offset
