"""Failures inside Kimi's web answer as the real SDKs see them, through every front door.

Before the answer starts, each error frame or exception is the SDK's own exception class for its
status (openai for /v1/chat/completions and /v1/responses, anthropic for /v1/messages), with
Kimi's message. After it started, the stream raises (or, for Responses, ends with
``response.failed``), never a silent normal end. A refusal or moderation keeps the text sent and
ends as each surface says so: ``finish_reason: "content_filter"``, ``stop_reason: "refusal"``,
``status: "incomplete"`` with ``incomplete_details.reason: "content_filter"``.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from kimi_emulator.stream_failures import ERROR_KINDS, EXCEPTION_KINDS

HI = [{"role": "user", "content": "hi"}]
# fault -> (status, openai class, anthropic class, Kimi's localized message)
BEFORE_CONTENT = {
    "error_end:rate_limited": (429, openai.RateLimitError, anthropic.RateLimitError),
    "error_end:chat_busy": (409, openai.ConflictError, anthropic.ConflictError),
    "error_end:invalid_argument": (400, openai.BadRequestError, anthropic.BadRequestError),
    "error_end:unavailable": (503, openai.InternalServerError, anthropic.InternalServerError),
    "error_end:deadline_exceeded": (504, openai.InternalServerError, anthropic.InternalServerError),
    "error_end:unknown": (502, openai.InternalServerError, anthropic.InternalServerError),
    "exception:overload": (503, openai.InternalServerError, anthropic.InternalServerError),
    "exception:unknown": (502, openai.InternalServerError, anthropic.InternalServerError),
}
AFTER_CONTENT = ["error_end:unknown:after_text", "exception:overload:after_text"]
AFTER_CONTENT += ["error_end:rate_limited:after_text", "exception:unknown:after_text"]
DOORS = ["chat", "responses", "messages"]


def localized(fault: str) -> str:
    kind, name = fault.split(":")[:2]
    return (ERROR_KINDS if kind == "error_end" else EXCEPTION_KINDS)[name][2]


def ask(door: str, oai, claude, *, stream: bool, **extra):
    """One turn through ``door``; the text the SDK assembled and how it says the answer ended."""
    if door == "chat":
        if not stream:
            choice = oai.chat.completions.create(model="kimi", messages=HI, **extra).choices[0]
            return choice.message.content, choice.finish_reason
        chunks = list(oai.chat.completions.create(model="kimi", messages=HI, stream=True, **extra))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    if door == "responses":
        if not stream:
            response = oai.responses.create(model="kimi", input="hi", **extra)
            return response.output_text, (response.status, response.incomplete_details)
        events = list(oai.responses.create(model="kimi", input="hi", stream=True, **extra))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        return text, events[-1]
    request = {"model": "claude-sonnet-4", "max_tokens": 100, "messages": HI, **extra}
    if not stream:
        message = claude.messages.create(**request)
        return "".join(block.text for block in message.content), message.stop_reason
    with claude.messages.stream(**request) as events:
        message = events.get_final_message()
    return "".join(block.text for block in message.content), message.stop_reason


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("fault", sorted(BEFORE_CONTENT))
def test_a_failure_before_the_answer_is_the_sdks_exception_for_its_status(
    oai, claude, emulator, fault, door, stream
):
    status, openai_class, anthropic_class = BEFORE_CONTENT[fault]
    emulator.state.add_fault(fault)
    with pytest.raises(anthropic_class if door == "messages" else openai_class) as caught:
        ask(door, oai, claude, stream=stream)
    assert caught.value.status_code == status
    assert localized(fault) in caught.value.message
    if status == 429:
        assert int(caught.value.response.headers["retry-after"]) > 0


@pytest.mark.parametrize("door", DOORS)
def test_a_rejected_token_is_refreshed_once_then_the_sdks_authentication_error(
    oai, claude, emulator, door
):
    emulator.state.add_fault("error_end:unauthenticated", times=2)
    expected = anthropic.AuthenticationError if door == "messages" else openai.AuthenticationError
    with pytest.raises(expected) as caught:
        ask(door, oai, claude, stream=True)
    assert localized("error_end:unauthenticated") in caught.value.message


def test_a_kept_chat_kimi_no_longer_knows_is_the_sdks_not_found_error(oai, emulator):
    first = oai.chat.completions.create(
        model="kimi", messages=HI, extra_body={"conversation_id": "none"}
    )
    emulator.state.add_fault("error_end:not_found")
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(
            model="kimi", messages=HI, extra_body={"conversation_id": first.id}
        )


@pytest.mark.parametrize("stream", [False, True])
def test_a_stored_response_whose_chat_kimi_lost_is_not_found_naming_previous_response_id(
    oai, emulator, stream
):
    first = oai.responses.create(model="kimi", input="hi")
    emulator.state.add_fault("error_end:not_found")
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.create(
            model="kimi", input="again", previous_response_id=first.id, stream=stream
        )
    assert caught.value.body["param"] == "previous_response_id"
    assert localized("error_end:not_found") in caught.value.message


@pytest.mark.parametrize("fault", AFTER_CONTENT)
def test_a_chat_stream_failing_after_its_start_raises_in_the_openai_client(oai, emulator, fault):
    emulator.state.add_fault(fault)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in oai.chat.completions.create(model="kimi", messages=HI, stream=True):
            received += [c.delta.content or "" for c in chunk.choices]
    assert "".join(received).startswith("Emulator")  # the words before the failure
    assert localized(fault) in caught.value.message


@pytest.mark.parametrize("fault", AFTER_CONTENT)
def test_a_messages_stream_failing_after_its_start_raises_in_the_anthropic_client(
    claude, emulator, fault
):
    emulator.state.add_fault(fault)
    texts = []
    request = {"model": "claude-sonnet-4", "max_tokens": 100, "messages": HI}
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(**request) as events:
            for text in events.text_stream:
                texts.append(text)
    assert "".join(texts).startswith("Emulator")
    assert localized(fault) in caught.value.message


@pytest.mark.parametrize("fault", AFTER_CONTENT)
def test_a_responses_stream_failing_after_its_start_ends_with_response_failed(oai, emulator, fault):
    emulator.state.add_fault(fault)
    text, last = ask("responses", oai, None, stream=True)
    assert text.startswith("Emulator")
    assert last.type == "response.failed" and last.response.status == "failed"
    assert localized(fault) in last.response.error.message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("placement", ["", ":after_text"])
def test_a_moderated_answer_keeps_its_text_and_ends_as_each_surface_says(
    oai, claude, emulator, door, stream, placement
):
    emulator.state.add_fault(f"exception:moderation{placement}")
    text, ending = ask(door, oai, claude, stream=stream)
    assert text == ("Emulator reply to:" if placement else "")
    if door == "chat":
        assert ending == "content_filter"
    elif door == "messages":
        assert ending == "refusal"
    elif stream:
        assert ending.type == "response.incomplete"
        assert ending.response.incomplete_details.reason == "content_filter"
    else:
        status, details = ending
        assert status == "incomplete" and details.reason == "content_filter"
