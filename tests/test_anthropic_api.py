"""The real ``anthropic`` SDK against ``/v1/messages``, under both protocols.

What a user of the SDK (or Claude Code) sees: messages as SDK objects, streams reassembled by
the SDK's own helpers, tool use round trips, stop reasons, token counts and errors as the
SDK's exception classes. The emulator plays the ``[[emulate: ...]]`` script in the prompt.
"""

from __future__ import annotations

import base64
import hashlib

import anthropic
import pytest
from helpers import LiveServer, sent_prompt

from kimi import create_app
from kimi.anthropic_request import map_model
from kimi.settings import PROTOCOLS, Settings
from kimi.usage import estimate_tokens

# Most tests run under both protocols; thinking ones only under web (the legacy emulator
# does not think), with the default "web" of the protocol fixture.
BOTH = pytest.mark.parametrize("protocol", PROTOCOLS)

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PARIS_CALL = '[[emulate: call get_weather {"city": "Paris"} ;; text It is 21 degrees in Paris.]]'


@pytest.fixture
def sdk(live_server, account) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=live_server.url, api_key=account.refresh_token, max_retries=0, timeout=20
    )


def ask(content) -> list:
    return [{"role": "user", "content": content}]


@BOTH
def test_a_message_comes_back_as_an_sdk_message(sdk):
    message = sdk.messages.create(model="claude-sonnet-4", max_tokens=200, messages=ask("hi"))
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-sonnet-4"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Emulator reply to: hi"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == estimate_tokens("hi")
    assert message.usage.output_tokens == estimate_tokens("Emulator reply to: hi")


@BOTH
def test_the_system_prompt_reaches_the_model(sdk, emulator, protocol):
    message = sdk.messages.create(
        model="claude-haiku-4",
        max_tokens=200,
        system=[{"type": "text", "text": "Answer like a pirate."}],
        messages=ask("hi"),
    )
    assert message.content[0].text == "Emulator reply to: user:hi"
    assert sent_prompt(emulator, protocol).splitlines() == [
        "system:Answer like a pirate.",
        "user:hi",
    ]


# --- streams -------------------------------------------------------------------------------


@BOTH
def test_a_stream_is_reassembled_by_the_sdk(sdk):
    with sdk.messages.stream(model="claude-sonnet-4", max_tokens=200, messages=ask("hi")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Emulator reply to: hi"
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == estimate_tokens(text)


@BOTH
def test_a_raw_stream_has_anthropics_event_order(sdk):
    events = sdk.messages.create(
        model="claude-sonnet-4", max_tokens=200, messages=ask("hi"), stream=True
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


# --- tools ---------------------------------------------------------------------------------


@BOTH
def test_a_tool_use_and_its_result_bring_the_final_answer(sdk, emulator, protocol):
    messages = ask(f"Weather in Paris? {PARIS_CALL}")
    first = sdk.messages.create(
        model="claude-sonnet-4", max_tokens=300, messages=messages, tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.id.startswith("toolu_")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}

    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}],
        },
    ]
    final = sdk.messages.create(
        model="claude-sonnet-4", max_tokens=300, messages=messages, tools=[WEATHER]
    )
    assert final.stop_reason == "end_turn"
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == "It is 21 degrees in Paris."
    prompt = sent_prompt(emulator, protocol)
    assert '"name": "get_weather"' in prompt and call.id in prompt and "21 C" in prompt


@BOTH
def test_a_streamed_tool_use_is_reassembled_by_the_sdk(sdk):
    with sdk.messages.stream(
        model="claude-sonnet-4",
        max_tokens=300,
        messages=ask(f"Weather in Paris? {PARIS_CALL}"),
        tools=[WEATHER],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = [block for block in final.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}


@BOTH
def test_a_forced_tool_choice_gets_that_tool_called(sdk):
    message = sdk.messages.create(
        model="claude-sonnet-4",
        max_tokens=300,
        messages=ask(f"Weather in Paris? {PARIS_CALL}"),
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    assert [block.name for block in message.content if block.type == "tool_use"] == ["get_weather"]


# --- limits --------------------------------------------------------------------------------


@BOTH
def test_a_stop_sequence_cuts_the_text_and_is_named(sdk):
    message = sdk.messages.create(
        model="claude-sonnet-4",
        max_tokens=200,
        messages=ask("[[emulate: text one two STOP three]]"),
        stop_sequences=["NEVER", "STOP"],
    )
    assert message.content[0].text == "one two "
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "STOP"


@BOTH
def test_a_streamed_stop_sequence_is_named_in_the_final_message(sdk):
    with sdk.messages.stream(
        model="claude-sonnet-4",
        max_tokens=200,
        messages=ask("[[emulate: text one two STOP three]]"),
        stop_sequences=["STOP"],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "one two "
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")


@BOTH
def test_max_tokens_ends_the_answer_with_stop_reason_max_tokens(sdk):
    message = sdk.messages.create(model="claude-sonnet-4", max_tokens=2, messages=ask("hi"))
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "Emulator"
    assert message.usage.output_tokens == 2


@BOTH
def test_count_tokens_counts_the_prompt_the_turn_would_send(sdk):
    counted = sdk.messages.count_tokens(
        model="claude-sonnet-4",
        system="Be brief.",
        messages=ask("What is the capital of France?"),
    )
    assert counted.input_tokens == estimate_tokens(
        "system:Be brief.\nuser:What is the capital of France?"
    )


# --- errors --------------------------------------------------------------------------------


@BOTH
def test_a_bad_token_is_the_sdks_authentication_error(live_server):
    sdk = anthropic.Anthropic(base_url=live_server.url, api_key="not-a-token", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk.messages.create(model="claude-sonnet-4", max_tokens=10, messages=ask("hi"))
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"


@BOTH
def test_missing_max_tokens_is_a_bad_request(client, auth):
    response = client.post(
        "/v1/messages", json={"model": "claude-sonnet-4", "messages": ask("hi")}, headers=auth
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


@BOTH
def test_missing_max_tokens_is_the_sdks_bad_request_error(sdk, emulator):
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.create(
            model="claude-sonnet-4", messages=ask("hi"), extra_body={}, max_tokens=None
        )
    assert not [c for c in emulator.state.calls() if "chat" in c["path"].lower()]


@BOTH
def test_the_x_api_key_header_is_accepted(client, account):
    response = client.post(
        "/v1/messages",
        json={"model": "claude-sonnet-4", "max_tokens": 50, "messages": ask("hi")},
        headers={"x-api-key": account.refresh_token, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    assert response.get_json()["content"][0]["text"] == "Emulator reply to: hi"


@BOTH
def test_the_openai_routes_keep_openais_error_shape(client):
    response = client.post("/v1/chat/completions", json={"model": "kimi", "messages": ask("hi")})
    assert response.status_code == 401
    assert set(response.get_json()) == {"error"}


# --- thinking (the web protocol's emulator thinks) -----------------------------------------


@pytest.fixture
def thinking_sdk(make_settings, account):
    settings = make_settings(anthropic_model_map=(("claude-sonnet*", "kimi-thinking"),))
    with LiveServer(create_app(settings)) as server:
        yield anthropic.Anthropic(
            base_url=server.url, api_key=account.refresh_token, max_retries=0, timeout=20
        )


def test_a_mapped_thinking_model_streams_thinking_then_text(thinking_sdk):
    with thinking_sdk.messages.stream(
        model="claude-sonnet-4", max_tokens=500, messages=ask("hi")
    ) as stream:
        deltas = [(e.delta.type, e.index) for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Thinking about: hi"
    assert thinking.signature
    assert text.type == "text" and text.text == "Emulator reply to: hi"
    kinds = [kind for kind, _ in deltas]
    assert kinds.index("signature_delta") < kinds.index("text_delta")
    assert {index for kind, index in deltas if kind == "thinking_delta"} == {0}
    assert {index for kind, index in deltas if kind == "text_delta"} == {1}


def test_thinking_enabled_turns_thinking_on_for_any_model(sdk):
    message = sdk.messages.create(
        model="claude-haiku-4",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=ask("hi"),
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Thinking about: hi"


def test_thinking_disabled_turns_a_thinking_model_off(thinking_sdk):
    message = thinking_sdk.messages.create(
        model="claude-sonnet-4",
        max_tokens=500,
        thinking={"type": "disabled"},
        messages=ask("hi"),
    )
    assert [block.type for block in message.content] == ["text"]


def test_a_thinking_block_sent_back_is_accepted(thinking_sdk):
    first = thinking_sdk.messages.create(
        model="claude-sonnet-4", max_tokens=500, messages=ask("hi")
    )
    messages = [
        *ask("hi"),
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "and again"},
    ]
    again = thinking_sdk.messages.create(model="claude-sonnet-4", max_tokens=500, messages=messages)
    assert again.content[-1].text.endswith("user:and again")


# --- files ---------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def image_message() -> list:
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    return ask([{"type": "text", "text": "What is in it?"}, {"type": "image", "source": source}])


@BOTH
def test_a_base64_image_is_uploaded_for_kimi_to_read(sdk, emulator, protocol):
    message = sdk.messages.create(model="claude-sonnet-4", max_tokens=100, messages=image_message())
    assert message.content[0].text.startswith("Emulator reply to: What is in it? [files: ")
    if protocol == "web":
        (upload,) = emulator.state.web_files.snapshot()
        assert upload["content_type"] == "image/png"
    else:
        (upload,) = emulator.state.uploads()
        assert upload["action"] == "image"
    assert upload["sha256"] == hashlib.sha256(PNG).hexdigest()


# --- model names ---------------------------------------------------------------------------


def test_the_model_map_is_read_in_order_and_the_first_match_wins():
    env = {"ANTHROPIC_MODEL_MAP": "claude-sonnet*=kimi-thinking, claude-*=kimi-k2"}
    model_map = Settings.from_env(env).anthropic_model_map
    assert map_model("claude-sonnet-4-5", model_map) == "kimi-thinking"
    assert map_model("Claude-Opus-4", model_map) == "kimi-k2"
    assert map_model("kimi-search", model_map) == "kimi-search"


def test_by_default_every_claude_model_runs_as_kimi():
    assert map_model("claude-3-5-haiku-latest", Settings.from_env({}).anthropic_model_map) == "kimi"


@pytest.mark.parametrize("raw", ["claude-*", "=kimi", "claude-*=", "claude-*=kimi,oops"])
def test_a_malformed_model_map_refuses_to_start(raw):
    with pytest.raises(ValueError, match="ANTHROPIC_MODEL_MAP"):
        Settings.from_env({"ANTHROPIC_MODEL_MAP": raw})


# --- failures and silence ------------------------------------------------------------------


def raw_stream(client, auth, content: str = "hi") -> str:
    body = {"model": "claude-sonnet-4", "max_tokens": 200, "stream": True, "messages": ask(content)}
    response = client.post("/v1/messages", json=body, headers=auth)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def event_names(body: str) -> list[str]:
    return [line[len("event: ") :] for line in body.splitlines() if line.startswith("event: ")]


@pytest.mark.parametrize("fault", ["cut", "stream_error"])
def test_a_stream_that_breaks_after_starting_ends_with_an_error_event(
    client, auth, emulator, fault
):
    emulator.state.add_fault(fault)
    names = event_names(raw_stream(client, auth))
    assert names[0] == "message_start"
    assert names[-1] == "error" and "message_stop" not in names


@BOTH
def test_the_sdk_raises_when_a_stream_breaks_after_starting(sdk, emulator):
    emulator.state.add_fault("cut")
    with pytest.raises(anthropic.APIStatusError) as caught:
        with sdk.messages.stream(model="claude-sonnet-4", max_tokens=200, messages=ask("hi")) as s:
            s.get_final_message()
    assert caught.value.body["error"]["type"] == "api_error"


@BOTH
def test_a_rate_limit_before_the_first_byte_is_the_sdks_rate_limit_error(sdk, emulator):
    emulator.state.add_fault("limit")
    with pytest.raises(anthropic.RateLimitError) as caught:
        with sdk.messages.stream(model="claude-sonnet-4", max_tokens=200, messages=ask("hi")) as s:
            s.get_final_message()
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"]


@BOTH
def test_moderation_is_stop_reason_refusal(sdk, emulator):
    emulator.state.add_fault("moderation")
    message = sdk.messages.create(model="claude-sonnet-4", max_tokens=200, messages=ask("hi"))
    assert message.stop_reason == "refusal"


@BOTH
def test_silence_is_filled_with_ping_events(make_settings, auth, emulator):
    client = create_app(make_settings(keepalive_seconds=0.05)).test_client()
    emulator.state.add_fault("silence", seconds=0.4)
    names = event_names(raw_stream(client, auth))
    assert "ping" in names
    assert [name for name in names if name != "ping"][-1] == "message_stop"


def test_a_plain_text_document_reaches_the_model(sdk, emulator):
    notes = "The meeting moved to Thursday."
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": notes},
        "title": "notes.txt",
    }
    message = sdk.messages.create(
        model="claude-sonnet-4",
        max_tokens=200,
        messages=ask([document, {"type": "text", "text": "When is the meeting?"}]),
    )
    assert message.stop_reason == "end_turn"
    assert "notes.txt" in message.content[0].text
    (upload,) = emulator.state.web_files.snapshot()
    assert upload["sha256"] == hashlib.sha256(notes.encode()).hexdigest()


def test_a_body_that_is_not_json_is_an_anthropic_error(client, auth):
    response = client.post("/v1/messages", data="hi", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["type"] == "error"


def test_a_body_over_the_limit_is_anthropics_request_too_large(make_settings, auth):
    client = create_app(make_settings(max_request_mb=0.001)).test_client()
    body = {"model": "claude-sonnet-4", "max_tokens": 10, "messages": ask("x" * 5000)}
    response = client.post("/v1/messages", json=body, headers=auth)
    assert response.status_code == 413
    assert response.get_json()["type"] == "error"
    assert response.get_json()["error"]["type"] == "request_too_large"


def test_a_wrong_method_on_messages_answers_in_anthropics_shape(client):
    response = client.get("/v1/messages")
    assert response.status_code == 405
    body = response.get_json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
