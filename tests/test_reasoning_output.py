"""The model's thinking reaches the client in its own field, in <think> tags, or not at all."""

from __future__ import annotations

import pytest

from kimi.events import Finish, HiddenReasoning, ReasoningDelta, TextDelta, ToolCall
from kimi.reasoning import (
    DEFAULT_REASONING_MODE,
    REASONING_MODES,
    parse_reasoning_mode,
    present_reasoning,
)

CALL = ToolCall(index=0, call_id="call_1", name="lookup", arguments='{"q": "x"}')
TURN = [ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("Four."), Finish()]


def content(events) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def test_reasoning_content_mode_leaves_the_events_as_they_are():
    assert list(present_reasoning(TURN, "reasoning_content")) == TURN


def test_hidden_mode_hides_the_thinking_and_keeps_the_answer():
    shown = [e for e in present_reasoning(TURN, "hidden") if not isinstance(e, HiddenReasoning)]
    assert shown == [TextDelta("Four."), Finish()]


def test_think_tags_put_the_thinking_before_the_answer_in_content():
    events = list(present_reasoning(TURN, "think_tags"))
    assert not any(isinstance(event, ReasoningDelta) for event in events)
    assert content(events) == "<think>Let me think.</think>\n\nFour."
    assert events[-1] == Finish()


def test_think_tags_stream_the_thinking_as_it_arrives():
    events = list(present_reasoning(TURN, "think_tags"))
    assert events[:2] == [TextDelta("<think>Let me "), TextDelta("think.")]


def test_think_tags_close_before_a_tool_call():
    events = [ReasoningDelta("I should look it up."), CALL, Finish("tool_calls")]
    out = list(present_reasoning(events, "think_tags"))
    assert out == [
        TextDelta("<think>I should look it up."),
        TextDelta("</think>\n\n"),
        CALL,
        Finish("tool_calls"),
    ]


def test_think_tags_close_when_the_answer_ends_inside_the_thinking():
    out = list(present_reasoning([ReasoningDelta("hmm"), Finish("length")], "think_tags"))
    assert content(out) == "<think>hmm</think>\n\n"
    assert out[-1] == Finish("length")


def test_an_answer_without_thinking_gets_no_tags():
    events = [TextDelta("Just the answer."), Finish()]
    assert list(present_reasoning(events, "think_tags")) == events


def test_empty_thinking_opens_no_tag():
    events = [ReasoningDelta(""), TextDelta("Answer."), Finish()]
    assert content(present_reasoning(events, "think_tags")) == "Answer."


def test_thinking_that_resumes_after_text_gets_its_own_tags():
    events = [ReasoningDelta("a"), TextDelta("b"), ReasoningDelta("c"), TextDelta("d"), Finish()]
    out = content(present_reasoning(events, "think_tags"))
    assert out == "<think>a</think>\n\nb<think>c</think>\n\nd"


def test_events_the_stage_does_not_know_pass_through_in_place():
    marker = object()  # e.g. the keep-alive marker: it must not close the thinking
    events = [ReasoningDelta("a"), marker, ReasoningDelta("b"), TextDelta("c"), Finish()]
    out = list(present_reasoning(events, "think_tags"))
    assert out[1] is marker
    assert content(out) == "<think>ab</think>\n\nc"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_mode_means_the_default(value):
    assert parse_reasoning_mode(value) == DEFAULT_REASONING_MODE == "reasoning_content"


@pytest.mark.parametrize("mode", REASONING_MODES)
def test_every_mode_is_accepted_in_any_case(mode):
    assert parse_reasoning_mode(f" {mode.upper()} ") == mode


def test_an_unknown_mode_is_an_error_listing_the_modes():
    with pytest.raises(ValueError) as caught:
        parse_reasoning_mode("thinktags", name="REASONING_OUTPUT")
    message = str(caught.value)
    assert "REASONING_OUTPUT" in message and "'thinktags'" in message
    assert all(mode in message for mode in REASONING_MODES)


def test_the_stage_refuses_a_mode_it_does_not_know():
    with pytest.raises(ValueError, match="think-tags"):
        list(present_reasoning(TURN, "think-tags"))
