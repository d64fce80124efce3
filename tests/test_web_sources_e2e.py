"""Search sources end to end: a web answer's citations become numbered references and the list
after the answer looks as it does under legacy."""

from __future__ import annotations

import re

import pytest
from helpers import chat, sse_events, streamed_text

from kimi.settings import PROTOCOLS

MARKER_CODEPOINTS = ("\ue3a0", "\ue3a8", "\U0001f6e0", "\U0001f3a8")
CITED = "Emulator reply to: hi According to the web[1] it is sunny[2] and mild[3][2]."
# The emulator's tool block has results 1-4, its searchChunks add 5; the text cites 5, 2, 3, 2;
# usedSearchChunks names 5, 2, 3, 4.
SOURCES = "\n\nSources:\n" + "\n".join(
    f"{number}. [Weather report {ref}](https://example.com/weather/{ref})"
    for number, ref in enumerate((5, 2, 3, 4), 1)
)
SOURCE_LINE = re.compile(r"\d+\. \[[^\]]+\]\(https://\S+\)")


def answer_text(response, stream: bool) -> str:
    assert response.status_code == 200, response.data
    if stream:
        return streamed_text(sse_events(response.get_data()))
    return response.get_json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("split_frames", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_citations_become_numbered_references_and_a_source_list(
    client, auth, emulator, stream, split_frames
):
    emulator.state.configure(split_frames=split_frames)
    text = answer_text(chat(client, auth, model="kimi-search", stream=stream), stream)
    assert text == CITED + SOURCES
    assert "[^" not in text
    assert not any(code in text for code in MARKER_CODEPOINTS)


@pytest.mark.parametrize("stream", [False, True])
def test_a_silent_model_gets_neither_references_nor_a_list(client, auth, stream):
    text = answer_text(chat(client, auth, model="kimi-search-silent", stream=stream), stream)
    assert text == "Emulator reply to: hi According to the web it is sunny and mild."


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_both_protocols_list_sources_in_the_same_format_each_once(client, auth):
    text = answer_text(chat(client, auth, model="kimi-search"), stream=False)
    answer, _, listing = text.partition("\n\nSources:\n")
    lines = listing.split("\n")
    assert answer.startswith("Emulator reply to: hi")
    assert lines and all(SOURCE_LINE.fullmatch(line) for line in lines)
    assert [line.split(". ", 1)[0] for line in lines] == [str(n) for n in range(1, len(lines) + 1)]
    urls = [line.rsplit("(", 1)[1] for line in lines]
    assert len(urls) == len(set(urls))
