"""Sampling fields of a chat body: the ones we enforce, refuse or knowingly ignore.

Kimi's web chat has no sampling controls, so ``max_tokens`` and ``stop`` are applied here, to
the answer stream, by two stages: ``limit_tokens`` and ``cut_at_stop``. A stage takes the
internal events and yields them again, passing through what it does not handle; when it ends
the answer early it yields its ``Finish`` and returns without reading further, so the caller
can close the upstream turn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .events import (
    FINISH_LENGTH,
    FINISH_STOP,
    ContentEvent,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from .usage import CHARS_PER_TOKEN, estimate_tokens

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")  # the first one set wins

# Fields OpenAI clients send that the web chat has no way to honour. They are accepted so that
# ordinary clients work, and ignored; only their JSON type is checked, loosely.
IGNORED_FIELDS: dict[str, str] = {
    "temperature": "number",
    "top_p": "number",
    "seed": "integer",
    "presence_penalty": "number",
    "frequency_penalty": "number",
    "logit_bias": "object",
    "user": "string",
    "metadata": "object",
    "store": "boolean",
    "service_tier": "string",
    "prediction": "object",
    "verbosity": "string",
    "prompt_cache_key": "string",
    "safety_identifier": "string",
}
_KIND_CHECKS = {
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


@dataclass(frozen=True)
class Sampling:
    """What the answer stream must respect: a completion-token budget and stop strings."""

    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


def parse_sampling(body: dict[str, Any]) -> Sampling:
    """Read the sampling fields of a chat body; every problem is a ``BadRequest`` naming it."""
    _refuse_logprobs(body)
    _check_ignored(body)
    return Sampling(max_tokens=_max_tokens(body), stop=_stop(body.get("stop")))


def _max_tokens(body: dict[str, Any]) -> int | None:
    chosen = None
    for name in MAX_TOKENS_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"'{name}' must be a positive integer; got {value!r}.", param=name)
        chosen = value if chosen is None else chosen
    return chosen


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(stops, list)
        or not 1 <= len(stops) <= MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise BadRequest(
            f"'stop' must be a non-empty string or an array of 1 to {MAX_STOP_SEQUENCES} "
            "non-empty strings.",
            param="stop",
        )
    return tuple(dict.fromkeys(stops))


def _refuse_logprobs(body: dict[str, Any]) -> None:
    for name, wanted in (
        ("logprobs", body.get("logprobs") is True),
        ("top_logprobs", body.get("top_logprobs") is not None),
    ):
        if wanted:
            raise BadRequest(
                "Log probabilities are not available: Kimi's web chat does not return them. "
                f"Remove '{name}' from the request.",
                param=name,
                code="unsupported_parameter",
            )
    if not isinstance(body.get("logprobs"), (bool, type(None))):
        raise BadRequest("'logprobs' must be a boolean.", param="logprobs")


def _check_ignored(body: dict[str, Any]) -> None:
    for name, kind in IGNORED_FIELDS.items():
        value = body.get(name)
        if value is not None and not _KIND_CHECKS[kind](value):
            article = "an" if kind[0] in "aeiou" else "a"
            raise BadRequest(
                f"'{name}' must be {article} {kind} (it is accepted and ignored: Kimi's web chat "
                "has no such setting).",
                param=name,
            )


# --- stages ----------------------------------------------------------------------------------


def limit_tokens(events: Iterable[ContentEvent], max_tokens: int | None) -> Iterator[ContentEvent]:
    """End the answer with ``Finish("length")`` once reasoning and text use up ``max_tokens``.

    The budget covers reasoning too, as OpenAI's completion tokens do. It is counted with the
    same estimate as the ``usage`` object, and the delta that overruns it is cut at the
    character where the budget runs out.
    """
    if max_tokens is None:
        return iter(events)  # no stage at all: nothing is added to each event's way
    return _limited(events, max_tokens)


def _limited(events: Iterable[ContentEvent], max_tokens: int) -> Iterator[ContentEvent]:
    budget = _TokenBudget(max_tokens)
    for event in events:
        if isinstance(event, (TextDelta, ReasoningDelta)):
            fitting = budget.take(event.text)
            if len(fitting) < len(event.text):
                if fitting:
                    yield type(event)(fitting)
                yield Finish(FINISH_LENGTH)
                return
        yield event


class _TokenBudget:
    """A running ``estimate_tokens`` of everything taken so far, one character at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.wide = 0  # characters that cost a token each
        self.narrow = 0  # characters that cost 1/CHARS_PER_TOKEN of a token

    def take(self, text: str) -> str:
        """The longest prefix of ``text`` that still fits; it is counted as spent."""
        for index, char in enumerate(text):
            wide, narrow = (1, 0) if _is_wide(char) else (0, 1)
            if self._cost(self.wide + wide, self.narrow + narrow) > self.limit:
                return text[:index]
            self.wide += wide
            self.narrow += narrow
        return text

    @staticmethod
    def _cost(wide: int, narrow: int) -> int:
        return wide + math.ceil(narrow / CHARS_PER_TOKEN)


def _is_wide(char: str) -> bool:
    # Ask the usage estimate itself, so the budget and the reported usage never disagree: a run
    # of narrow characters shares tokens, a run of wide ones costs a token per character.
    return estimate_tokens(char * CHARS_PER_TOKEN) == CHARS_PER_TOKEN


def cut_at_stop(events: Iterable[ContentEvent], stops: Iterable[str]) -> Iterator[ContentEvent]:
    """End the answer with ``Finish("stop")`` just before the first stop string in its text.

    Stop strings may span deltas: the longest tail that could still begin one is held back
    until it is decided. Reasoning is never cut. "First" means the first to be completed, as
    a model stops when it emits one; ties go to the one that started earlier.
    """
    stops = tuple(s for s in stops if s)
    if not stops:
        return iter(events)  # no stage at all: nothing is added to each event's way
    return _cut(events, stops)


def _cut(events: Iterable[ContentEvent], stops: tuple[str, ...]) -> Iterator[ContentEvent]:
    held = ""
    for event in events:
        if isinstance(event, TextDelta):
            text = held + event.text
            cut = _first_stop(text, stops)
            if cut is not None:
                if text[:cut]:
                    yield TextDelta(text[:cut])
                matched = min((s for s in stops if text.startswith(s, cut)), key=len)
                yield Finish(FINISH_STOP, stop_sequence=matched)
                return
            keep = _stop_prefix_length(text, stops)
            held = text[len(text) - keep :]
            if text[: len(text) - keep]:
                yield TextDelta(text[: len(text) - keep])
            continue
        if isinstance(event, (ToolCall, Finish)) and held:
            yield TextDelta(held)  # the text ended here, so the held tail is plain text
            held = ""
        yield event
    if held:
        yield TextDelta(held)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest-completed stop string in ``text`` starts, or None."""
    found = [(start + len(s), start) for s in stops if (start := text.find(s)) >= 0]
    return min(found)[1] if found else None


def _stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is the beginning of some stop string."""
    longest = min(max(len(s) for s in stops) - 1, len(text))
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(s.startswith(tail) for s in stops):
            return size
    return 0
