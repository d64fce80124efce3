"""The streaming stage: text flows at once, calls become ToolCall events, at any chunk split."""

from __future__ import annotations

import random
import re

import pytest
from test_tool_parse import CONFIG, NOT_CALLS, PARIS, REPLIES, TAGGED_NOW, TAGGED_PARIS, TIME

from kimi.events import (
    FINISH_LENGTH,
    FINISH_STOP,
    FINISH_TOOL_CALLS,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from kimi.tools.parse import ParsedCall, parse_tool_reply
from kimi.tools.spec import ToolChoice, ToolConfig
from kimi.tools.stream import extract_tool_calls

CALL_ID = re.compile(r"call_[A-Za-z0-9]{24}")
ALL_REPLIES = [*REPLIES, *NOT_CALLS.values()]


STOP = Finish(FINISH_STOP)


def run(chunks, config=CONFIG, finish=STOP, **options) -> list:
    events = [TextDelta(chunk) for chunk in chunks] + ([finish] if finish else [])
    return list(extract_tool_calls(events, config, **options))


def fold(events) -> tuple[str, list[ParsedCall]]:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [ParsedCall(e.name, e.arguments) for e in events if isinstance(e, ToolCall)]
    return text, calls


def check_stream(events, reply: str, config=CONFIG, **options) -> None:
    """The folded events equal the whole-reply parse, in a well-formed order."""
    expected = parse_tool_reply(reply, config, **options)
    assert fold(events) == (expected.content, expected.calls)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.index for c in calls] == list(range(len(calls)))
    assert all(CALL_ID.fullmatch(c.call_id) for c in calls)
    assert isinstance(events[-1], Finish)
    assert events[-1].reason == (FINISH_TOOL_CALLS if calls else FINISH_STOP)
    if calls:  # text only before the first call
        first = events.index(calls[0])
        assert not any(isinstance(e, TextDelta) for e in events[first:])
    assert not any(isinstance(e, TextDelta) and not e.text for e in events)


@pytest.mark.parametrize("reply", ALL_REPLIES)
def test_the_stream_agrees_with_the_whole_reply_at_every_split(reply):
    for split in range(len(reply) + 1):
        check_stream(run([reply[:split], reply[split:]]), reply)


@pytest.mark.parametrize("reply", ALL_REPLIES)
def test_the_stream_agrees_with_the_whole_reply_one_character_at_a_time(reply):
    check_stream(run(list(reply)), reply)


@pytest.mark.parametrize("seed", range(20))
def test_the_stream_agrees_with_the_whole_reply_in_random_chunks(seed):
    rng = random.Random(seed)
    for reply in ALL_REPLIES:
        cuts = sorted(rng.sample(range(len(reply) + 1), min(len(reply), rng.randint(2, 8))))
        chunks = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)], strict=True)]
        check_stream(run(chunks), reply)


def test_every_pair_of_splits_inside_a_fenced_call_agrees():
    reply = 'Ok.\n```json\n{"name": "get_time", "arguments": {},}\n```'
    for first in range(len(reply) + 1):
        for second in range(first, len(reply) + 1):
            chunks = [reply[:first], reply[first:second], reply[second:]]
            check_stream(run(chunks), reply)


@pytest.mark.parametrize("cap, fits", [(20, False), (40, False), (122, False), (123, True)])
def test_a_call_over_the_size_cap_is_text_at_every_split(cap, fits):
    big_call = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "' + "x" * 50 + '"}}</tool_call>'
    )
    assert len(big_call) == 123
    reply = f'Big: {big_call} ```json\n{{"name": "get_time"}}\n``` {{"name": "get_time"}}'
    expected = parse_tool_reply(reply, CONFIG, max_call_chars=cap)
    assert any(call.name == "get_weather" for call in expected.calls) is fits
    assert (big_call in expected.content) is not fits
    for split in range(len(reply) + 1):
        events = run([reply[:split], reply[split:]], max_call_chars=cap)
        check_stream(events, reply, max_call_chars=cap)


# --- what a client sees, event by event ---------------------------------------------------------


def test_plain_text_streams_through_before_the_answer_ends():
    log = []

    def upstream():
        for chunk in ["Hello ", "there, ", "friend."]:
            log.append(f"in:{chunk}")
            yield TextDelta(chunk)
        yield Finish(FINISH_STOP)

    for event in extract_tool_calls(upstream(), CONFIG):
        log.append(f"out:{event.text}" if isinstance(event, TextDelta) else event)
    assert log == [
        "in:Hello ",
        "out:Hello",
        "in:there, ",
        "out: there,",
        "in:friend.",
        "out: friend.",
        Finish(FINISH_STOP),
    ]


def test_a_call_becomes_text_then_a_tool_call_then_the_tool_calls_finish():
    events = run(
        [
            "Checking the ",
            "weather.\n<tool_",
            'call>{"name": "get_weather", ',
            '"arguments": {"city": "Paris"}}</tool_call>',
        ]
    )
    assert [type(e) for e in events] == [TextDelta, TextDelta, ToolCall, Finish]
    assert fold(events) == ("Checking the weather.", [PARIS])
    assert events[-1] == Finish(FINISH_TOOL_CALLS)


def test_parallel_calls_get_indexes_from_zero_and_distinct_ids():
    events = run([TAGGED_PARIS, "\n", TAGGED_NOW])
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.index, c.name) for c in calls] == [(0, "get_weather"), (1, "get_time")]
    assert calls[0].call_id != calls[1].call_id


def test_with_parallel_calls_off_only_the_first_call_is_emitted():
    config = ToolConfig(tools=CONFIG.tools, parallel=False)
    events = run([TAGGED_PARIS, TAGGED_NOW], config=config)
    assert fold(events) == ("", [PARIS])
    assert events[-1] == Finish(FINISH_TOOL_CALLS)


def test_a_held_back_candidate_is_released_when_it_is_not_a_call():
    chunks = ["See ", "<tool_call>", '{"name": "get_stock"}', "</tool_call>", " bye"]
    events = run(chunks)
    assert fold(events) == ("".join(chunks), [])
    assert events[-1] == Finish(FINISH_STOP)


def test_the_original_finish_reason_is_kept_without_calls():
    events = run(["Cut off in the middle of a <tool_call>{"], finish=Finish(FINISH_LENGTH))
    assert fold(events) == ("Cut off in the middle of a <tool_call>{", [])
    assert events[-1] == Finish(FINISH_LENGTH)


def test_a_complete_call_before_a_length_finish_still_finishes_with_tool_calls():
    events = run([TAGGED_PARIS], finish=Finish(FINISH_LENGTH))
    assert events[-1] == Finish(FINISH_TOOL_CALLS)


def test_reasoning_passes_through_in_order_while_text_is_held():
    upstream = [
        ReasoningDelta("think 1"),
        TextDelta("<tool_call>"),
        ReasoningDelta("think 2"),
        TextDelta('{"name": "get_time"}</tool_call>'),
        ReasoningDelta("think 3"),
        Finish(FINISH_STOP),
    ]
    events = list(extract_tool_calls(upstream, CONFIG))
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == [
        "think 1",
        "think 2",
        "think 3",
    ]
    assert events.index(ReasoningDelta("think 2")) < next(
        i for i, e in enumerate(events) if isinstance(e, ToolCall)
    )
    assert fold(events) == ("", [ParsedCall("get_time", "{}")])


def test_held_text_is_released_when_the_upstream_ends_without_a_finish():
    events = run(["Almost a tag <tool_c"], finish=None)
    assert events == [TextDelta("Almost a tag"), TextDelta(" <tool_c")]


def test_without_callable_functions_events_pass_unchanged():
    chunks = [TAGGED_PARIS[:20], TAGGED_PARIS[20:]]
    none = ToolConfig(tools=(TIME,), choice=ToolChoice("none"))
    for config in (None, none):
        events = run(chunks, config=config)
        assert events == [TextDelta(chunks[0]), TextDelta(chunks[1]), Finish(FINISH_STOP)]


FUZZ_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_",
    "</tool",
    "```",
    "```json\n",
    "```python\n",
    "`",
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    ",",
    ":",
    "//",
    "/*",
    "*/",
    "\n",
    " ",
    "word",
    '"name"',
    '"arguments"',
    '"get_time"',
    '"get_weather"',
    '"city"',
    '{"name": "get_time"}',
    TAGGED_NOW,
]


@pytest.mark.parametrize("seed", range(40))
def test_random_replies_never_crash_and_stream_like_the_whole_parse(seed):
    rng = random.Random(seed)
    for _ in range(25):
        reply = "".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randint(1, 30)))
        cap = rng.choice([16, 40, 1000])
        cuts = sorted(rng.sample(range(len(reply) + 1), min(len(reply), rng.randint(1, 6))))
        chunks = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)], strict=True)]
        check_stream(run(chunks, max_call_chars=cap), reply, max_call_chars=cap)
        check_stream(run(list(reply), max_call_chars=cap), reply, max_call_chars=cap)
        parsed = parse_tool_reply(reply, CONFIG, max_call_chars=cap)
        assert parsed.calls or parsed.content == reply  # no call: the text exactly as written
