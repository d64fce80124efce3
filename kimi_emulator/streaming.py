"""Writing a planned answer stream out: pauses, optional 3-byte splitting, and the moment the
reply is over (shared by the Connect frames of ``web`` and the SSE events of ``legacy``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .state import EmulatorConfig

SPLIT_PIECE_SIZE = 3  # bytes per write when split, so headers and UTF-8 characters split too


@dataclass(frozen=True)
class OutgoingChunk:
    """One encoded frame or event, written after ``pause`` seconds; ``ends_reply`` if it is the
    first the backend would consider the end of the reply."""

    data: bytes
    pause: float = 0.0
    ends_reply: bool = False


def nothing_to_do() -> None:
    """The default ``on_reply_over``: a reply with no turn to close."""


def write_chunks(
    chunks: Iterable[OutgoingChunk],
    config: EmulatorConfig,
    on_reply_over: Callable[[], None] = nothing_to_do,
) -> Iterator[bytes]:
    """Each chunk its own write, or 3-byte writes when ``split_frames`` is on.

    ``config.frame_delay`` is slept between chunks. ``on_reply_over`` runs before the first
    chunk that ends the reply is written (or when the chunks run out): a client that has read
    the end may continue the chat at once.
    """
    for index, chunk in enumerate(chunks):
        delay = chunk.pause + (config.frame_delay if index else 0.0)
        if delay > 0:
            time.sleep(delay)
        if chunk.ends_reply:
            on_reply_over()
        if not config.split_frames:
            yield chunk.data
            continue
        for start in range(0, len(chunk.data), SPLIT_PIECE_SIZE):
            yield chunk.data[start : start + SPLIT_PIECE_SIZE]
    on_reply_over()
