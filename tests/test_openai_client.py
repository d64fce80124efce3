"""The real ``openai`` package as a client: what every OpenAI-speaking tool will do."""

from __future__ import annotations

import openai
import pytest

from kimi.settings import PROTOCOLS

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)


@pytest.fixture
def sdk(live_server, account) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=account.refresh_token, max_retries=0, timeout=20
    )


def test_sdk_non_stream(sdk):
    completion = sdk.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "Emulator reply to: hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0


def test_sdk_stream(sdk):
    stream = sdk.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Emulator reply to: hi"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sdk_stream_include_usage(sdk):
    stream = sdk.chat.completions.create(
        model="kimi",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_sdk_reads_reasoning_content_as_an_extra_field(sdk, protocol):
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    completion = sdk.chat.completions.create(
        model="kimi-thinking", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.model_extra["reasoning_content"] == "Thinking about: hi"


def test_sdk_lists_models(sdk):
    assert "kimi" in [model.id for model in sdk.models.list()]


@pytest.mark.parametrize(
    "fault, exception",
    [
        ("limit", openai.RateLimitError),
        ("server_error", openai.InternalServerError),
        ("busy", openai.ConflictError),
    ],
)
def test_sdk_maps_upstream_errors_to_its_exceptions(sdk, emulator, fault, exception):
    emulator.state.add_fault(fault)
    with pytest.raises(exception) as info:
        sdk.chat.completions.create(model="kimi", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["message"]


def test_sdk_raises_authentication_error_for_a_dead_token(live_server):
    sdk = openai.OpenAI(base_url=live_server.url + "/v1", api_key="dead-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="kimi", messages=[{"role": "user", "content": "hi"}])


def test_sdk_raises_bad_request_for_n_greater_than_one(sdk):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="kimi", messages=[{"role": "user", "content": "hi"}], n=2)
    assert info.value.body["param"] == "n"


def test_sdk_stream_raises_when_the_answer_breaks_midway(sdk, emulator):
    emulator.state.add_fault("cut")
    stream = sdk.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)
