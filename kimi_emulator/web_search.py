"""What a ``web`` answer with search on carries: the search tool's results, the message's
search references, and an answer text citing them in both inline forms.

The tool block reports results 1 to 4; the message's ``searchChunks`` add result 5; the text
cites 5 (an emoji marker), 2 (a private-use marker), 3 and 2 again (``[^N^]``), cut across frames
mid-marker; ``usedSearchChunks`` names 5, 2, 3 and 4 (used, never cited).
"""

from __future__ import annotations

from typing import Any

TOOL_RESULTS = 4
ALL_RESULTS = 5
USED_RESULTS = (5, 2, 3, 4)
# The answer's tail, cut mid-marker across frames so clients prove they handle split markers.
SEARCH_SUFFIX_PIECES = (
    " According to the web\U0001f6e0web_se",
    "arch:1#5\U0001f6e0 it is sunny\ue3a0cite",
    ":2\ue3a8 and mild[^",
    "3^][^2^].",
)


def search_result(ref_index: int) -> dict[str, Any]:
    """One result as Kimi describes it."""
    base = {
        "title": f"Weather report {ref_index}",
        "url": f"https://example.com/weather/{ref_index}",
        "siteName": "example.com",
        "snippet": f"Sunny and mild, says report {ref_index}.",
        "publishTime": "2026-01-01T00:00:00Z",
    }
    return {"id": f"result-{ref_index}", "refIndex": ref_index, "base": base}


def tool_blocks(block_id: str) -> list[dict[str, Any]]:
    """The search tool's operations: running with its query, then done with its results."""
    tool = {"toolCallId": "t1", "name": "web_search", "args": '{"queries": ["weather"]}'}
    contents = [{"searchResult": search_result(n)} for n in range(1, TOOL_RESULTS + 1)]
    return [
        _tool_op(block_id, {**tool, "status": "STATUS_RUNNING"}),
        _tool_op(block_id, {**tool, "status": "STATUS_DONE", "contents": contents}),
    ]


def search_chunks(message_id: str) -> dict[str, Any]:
    """The message's search references, before the answer text."""
    chunks = [search_result(n) for n in range(1, ALL_RESULTS + 1)]
    return _refs_op(message_id, "searchChunks", chunks)


def used_search_chunks(message_id: str) -> dict[str, Any]:
    """The results the answer drew on, after the answer text (by id only)."""
    used = [{"id": search_result(n)["id"]} for n in USED_RESULTS]
    return _refs_op(message_id, "usedSearchChunks", used)


def _tool_op(block_id: str, tool: dict[str, Any]) -> dict[str, Any]:
    return {"op": "set", "mask": "block.tool", "block": {"id": block_id, "tool": tool}}


def _refs_op(message_id: str, kind: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    message = {"id": message_id, "refs": {kind: chunks}}
    return {"op": "set", "mask": f"message.refs.{kind}", "message": message}
