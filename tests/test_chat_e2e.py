"""End to end through the Flask app against the emulator: answers, thinking, search, usage."""

from __future__ import annotations

import pytest
from helpers import chat, sse_events, streamed_text, upstream_calls

REPLY = "Emulator reply to: hi"
MARKER_CODEPOINTS = ("\ue3a0", "\ue3a8", "\U0001f6e0", "\U0001f3a8")


def stream_body(response) -> list:
    assert response.status_code == 200, response.data
    return sse_events(response.get_data())


def test_non_stream_answer_is_a_chat_completion(client, auth):
    response = chat(client, auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "kimi"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": REPLY}
    assert choice["finish_reason"] == "stop"


def test_usage_is_estimated_from_the_text_not_fixed(client, auth):
    long_question = "why is the sky blue? " * 20
    usage = chat(client, auth, content=long_question).get_json()["usage"]
    assert usage["prompt_tokens"] >= len(long_question) // 4
    assert usage["completion_tokens"] > 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_follows_the_openai_chunk_contract(client, auth):
    response = chat(client, auth, stream=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = stream_body(response)
    chunks = events[:-1]
    assert events[-1] == "[DONE]"
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "kimi" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert streamed_text(events) == REPLY


def test_stream_include_usage_sends_a_usage_chunk_before_done(client, auth):
    events = stream_body(chat(client, auth, stream=True, stream_options={"include_usage": True}))
    usage_chunk = events[-2]
    assert events[-1] == "[DONE]"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0
    assert all(e["usage"] is None for e in events[:-2])


def test_stream_without_include_usage_has_no_usage_field(client, auth):
    events = stream_body(chat(client, auth, stream=True))
    assert all("usage" not in e for e in events[:-1])


@pytest.mark.parametrize("model", ["kimi-thinking", "kimi-k1", "kimi-reasoner"])
def test_thinking_models_return_reasoning_content(client, auth, model):
    body = chat(client, auth, model=model).get_json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking about: hi"
    assert message["content"] == REPLY


def test_thinking_streams_as_reasoning_content_deltas(client, auth):
    events = stream_body(chat(client, auth, model="kimi-thinking", stream=True))
    assert streamed_text(events, "reasoning_content") == "Thinking about: hi"
    assert streamed_text(events) == REPLY


def test_reasoning_effort_turns_thinking_on_upstream(client, auth, emulator):
    chat(client, auth, reasoning_effort="high")
    body = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]
    assert body["options"]["thinking"] is True
    assert body["options"]["reasoning_effort"] == "REASONING_EFFORT_HIGH"


@pytest.mark.parametrize("split_frames", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_search_citation_markers_never_reach_the_client(
    client, auth, emulator, stream, split_frames
):
    emulator.state.configure(split_frames=split_frames)
    response = chat(client, auth, model="kimi-search", stream=stream)
    if stream:
        text = streamed_text(stream_body(response))
    else:
        text = response.get_json()["choices"][0]["message"]["content"]
    assert text.startswith(REPLY + " According to the web[1] it is sunny[2] and mild[3][2].")
    assert not any(code in text for code in MARKER_CODEPOINTS)
    tools = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]["tools"]
    assert tools == [{"type": "TOOL_TYPE_SEARCH", "search": {}}]


def test_use_search_flag_enables_search_for_any_model(client, auth, emulator):
    chat(client, auth, model="gpt-4o", use_search=True)
    assert upstream_calls(emulator, "ChatService/Chat")[-1]["body"]["tools"]


def test_plain_model_sends_no_search_tool(client, auth, emulator):
    chat(client, auth, model="whatever-unknown-model")
    body = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]
    assert body["tools"] == []
    assert body["scenario"] == "SCENARIO_K2D5"


def test_agent_id_model_is_sent_as_kimiplus_id(client, auth, emulator):
    response = chat(client, auth, model="crm40ee9e5jvhsn7ptcg")
    assert response.status_code == 200
    assert upstream_calls(emulator, "ChatService/Chat")[-1]["body"]["kimiplusId"] == (
        "crm40ee9e5jvhsn7ptcg"
    )


def test_history_is_flattened_into_one_upstream_message(client, auth, emulator):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    body = chat(client, auth, messages=messages).get_json()
    assert body["choices"][0]["message"]["content"] == "Emulator reply to: user:And 3+3?"
    sent = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]["message"]
    prompt = sent["blocks"][0]["text"]["content"]
    lines = prompt.splitlines()
    assert lines[:3] == ["system:Be brief.", "user:What is 2+2?", "assistant:4"]
    assert lines[-1] == "user:And 3+3?"
    assert lines[-2].startswith("system:")  # the focus hint


def test_degrade_notice_is_not_an_error(client, auth, emulator):
    emulator.state.add_fault("degrade")
    body = chat(client, auth).get_json()
    assert body["choices"][0]["message"]["content"] == REPLY
