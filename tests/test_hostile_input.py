"""What an attacker sends: huge or endless bodies, bad text, deep nesting, token floods, and
other people's conversations and tokens. Limits are set small so every test stays cheap."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from helpers import LiveServer, chat, upstream_calls
from werkzeug.test import EnvironBuilder, run_wsgi_app

from kimi import create_app
from kimi.errors import BadRequest, RateLimited
from kimi.json_body import MAX_JSON_DEPTH, READ_CHUNK_BYTES, check_json_value
from kimi.rate_limit import SlidingWindowLimit
from kimi.settings import MAX_ACCOUNTS_TRIED, PROTOCOLS, Settings
from kimi.tokens import split_credentials

SMALL_LIMIT_MB = 0.01  # 10 KiB
SMALL_LIMIT = int(SMALL_LIMIT_MB * 1024 * 1024)
API_KEY = "sk-right"


class CountingBody(io.BytesIO):
    """A request body that remembers how many of its bytes the service read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readinto(self, buffer) -> int:
        count = super().readinto(buffer)
        self.bytes_read += count
        return count

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


def chat_body(content: str = "hi") -> bytes:
    body = {"model": "kimi", "messages": [{"role": "user", "content": content}]}
    return json.dumps(body).encode()


def padded_body(size: int) -> bytes:
    """A valid chat body of about ``size`` bytes: the padding is JSON whitespace."""
    body = chat_body()
    return body + b" " * max(0, size - len(body))


@pytest.fixture
def keyed_settings(make_settings, account) -> Settings:
    return make_settings(
        kimi_tokens=tuple(split_credentials(account.refresh_token)),
        api_keys=(API_KEY,),
        max_request_mb=SMALL_LIMIT_MB,
    )


@pytest.fixture
def keyed_client(keyed_settings):
    return create_app(keyed_settings).test_client()


def post_body(client, body: io.BytesIO, headers: dict | None = None, path="/v1/chat/completions"):
    return client.post(
        path, input_stream=body, content_type="application/json", headers=headers or {}
    )


def chunked_post(app, body: io.BytesIO, headers: dict) -> tuple[str, dict]:
    """A body with no Content-Length, as a server that decodes chunked transfer hands it on."""
    environ = EnvironBuilder(
        path="/v1/chat/completions",
        method="POST",
        content_type="application/json",
        headers=headers,
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = body
    environ["wsgi.input_terminated"] = True
    chunks, status, _ = run_wsgi_app(app, environ)
    return status, json.loads(b"".join(chunks))


# Size: the key before the body, and a body limit that holds for chunked bodies too


def test_without_an_api_key_the_body_is_never_read(keyed_client, emulator):
    body = CountingBody(padded_body(SMALL_LIMIT * 50))
    response = post_body(keyed_client, body)
    assert response.status_code == 401
    assert response.get_json()["error"]["type"] == "authentication_error"
    assert body.bytes_read == 0
    assert emulator.state.calls() == []


def test_a_body_over_max_request_mb_is_413_in_openai_shape_before_it_is_read(
    keyed_client, emulator
):
    body = CountingBody(padded_body(SMALL_LIMIT * 2))
    response = post_body(keyed_client, body, {"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large" and "MAX_REQUEST_MB" in error["message"]
    assert body.bytes_read == 0
    assert emulator.state.calls() == []


def test_a_body_within_max_request_mb_is_answered(keyed_client):
    body = CountingBody(padded_body(SMALL_LIMIT - 100))
    response = post_body(keyed_client, body, {"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"]


def test_a_chunked_body_is_read_only_up_to_the_limit_then_refused(keyed_settings, emulator):
    body = CountingBody(padded_body(SMALL_LIMIT * 100))
    status, answer = chunked_post(
        create_app(keyed_settings), body, {"Authorization": f"Bearer {API_KEY}"}
    )
    assert status.startswith("413")
    assert answer["error"]["code"] == "request_too_large"
    assert body.bytes_read <= SMALL_LIMIT + READ_CHUNK_BYTES
    assert emulator.state.calls() == []


def test_a_real_chunked_upload_over_the_limit_gets_413(keyed_settings):
    def pieces():
        for _ in range(40):
            yield b" " * 4096

    with LiveServer(create_app(keyed_settings)) as server:
        response = requests.post(
            server.url + "/v1/chat/completions",
            data=pieces(),  # a generator: requests sends Transfer-Encoding: chunked
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_max_request_mb_is_read_from_the_environment():
    assert Settings.from_env({"MAX_REQUEST_MB": "0.5"}).max_request_bytes == 512 * 1024
    with pytest.raises(ValueError, match="MAX_REQUEST_MB"):
        Settings.from_env({"MAX_REQUEST_MB": "lots"})


def test_a_chat_with_no_credentials_and_a_bad_body_is_401_without_reading_it(client, emulator):
    body = CountingBody(b"[" * 5000)
    response = post_body(client, body)
    assert response.status_code == 401
    assert body.bytes_read == 0
    assert upstream_calls(emulator, "") == []
    assert chat(client, {}).status_code == 401


# Text and shape: lone surrogates, deep nesting, numbers JSON cannot carry


def raw_chat(client, raw: bytes, headers: dict):
    return client.post(
        "/v1/chat/completions", data=raw, content_type="application/json", headers=headers
    )


def assert_clean_400(response, *, code: str | None = None, param: str | None = None) -> None:
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_lone_surrogate_in_message_content_is_400_naming_the_field(client, auth, emulator):
    raw = b'{"model": "kimi", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    assert_clean_400(
        raw_chat(client, raw, auth), code="invalid_unicode", param="messages[0].content"
    )
    assert emulator.state.calls() == []


def test_a_lone_surrogate_in_conversation_id_is_400_naming_it(client, auth, emulator):
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "conversation_id": "\\udc00x"}'
    assert_clean_400(raw_chat(client, raw, auth), code="invalid_unicode", param="conversation_id")
    assert emulator.state.calls() == []


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        # a surrogate in a content part, and in an object key
        (
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\uDBFF"}]}]}',
            "messages[0].content[0].text",
        ),
        (b'{"messages": [{"role": "user", "content": "hi", "\\ud800": 1}]}', "messages[0]"),
        # the UTF-8 bytes of a surrogate, which json decodes with surrogatepass
        (b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', "messages[0].content"),
        # a UTF-16 body carrying one
        (
            '{"messages": [{"role": "user", "content": "x"}], "user": "\ud800"}'.encode(
                "utf-16-le", "surrogatepass"
            ),
            "user",
        ),
    ],
)
def test_surrogates_anywhere_in_the_body_are_400_before_any_upstream_call(
    client, auth, emulator, raw, param
):
    response = raw_chat(client, raw, auth)
    assert_clean_400(response, code="invalid_unicode")
    assert response.get_json()["error"]["param"].startswith(param)
    assert emulator.state.calls() == []


def test_a_well_formed_surrogate_pair_is_text_and_answered(client, auth):
    raw = b'{"model": "kimi", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    assert raw_chat(client, raw, auth).status_code == 200


@pytest.mark.parametrize("depth", [2000, MAX_JSON_DEPTH + 1])
def test_deep_nesting_is_400_without_a_traceback(client, auth, emulator, depth):
    assert_clean_400(raw_chat(client, b"[" * depth + b"]" * depth, auth), code="json_too_deep")
    nested = b'{"messages": [{"role": "user", "content": "hi"}], "metadata": '
    raw = nested + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    assert_clean_400(raw_chat(client, raw, auth), code="json_too_deep")
    assert emulator.state.calls() == []


def test_deep_unclosed_nesting_is_400_without_a_traceback(client, auth, emulator):
    assert_clean_400(raw_chat(client, b"[" * 2000, auth), code="json_too_deep")
    assert emulator.state.calls() == []


def test_deep_nesting_without_a_key_is_refused_before_it_is_parsed(keyed_client, emulator):
    response = raw_chat(keyed_client, b"[" * 2000, {})
    assert response.status_code == 401
    assert "Traceback" not in response.get_data(as_text=True)
    assert emulator.state.calls() == []


def test_deep_nesting_at_token_check_is_400(client, emulator):
    response = client.post("/token/check", data=b"[" * 2000, content_type="application/json")
    assert_clean_400(response, code="json_too_deep")
    assert emulator.state.calls() == []


def test_nesting_up_to_the_limit_is_accepted_and_one_more_level_is_not():
    check_json_value(nested_lists(MAX_JSON_DEPTH))
    with pytest.raises(BadRequest):
        check_json_value(nested_lists(MAX_JSON_DEPTH + 1))


def nested_lists(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value, "x", {"k": 1}]
    return value


@pytest.mark.parametrize(
    "number", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"1" * 5000]
)
def test_numbers_json_cannot_carry_are_400(client, auth, emulator, number):
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": ' + number + b"}"
    assert_clean_400(raw_chat(client, raw, auth))
    assert emulator.state.calls() == []


# Token floods: a cap on tokens per header, and few accounts tried per request


def dead_tokens(count: int) -> dict[str, str]:
    return {"Authorization": "Bearer " + ",".join(f"dead-token-{i}" for i in range(count))}


def test_more_tokens_than_max_tokens_per_header_is_400_before_any_upstream_call(
    settings, client, emulator
):
    response = chat(client, dead_tokens(settings.max_tokens_per_header + 1))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "too_many_tokens" and "MAX_TOKENS_PER_HEADER" in error["message"]
    assert emulator.state.calls() == []
    assert client.get("/v1/models", headers=dead_tokens(1000)).status_code == 400
    assert emulator.state.calls() == []


def test_max_tokens_per_header_is_a_setting(make_settings, account, emulator):
    client = create_app(make_settings(max_tokens_per_header=2)).test_client()
    three = {"Authorization": f"Bearer {account.refresh_token},dead-1,dead-2"}
    assert chat(client, three).status_code == 400
    two = {"Authorization": f"Bearer {account.refresh_token},dead-1"}
    assert chat(client, two).status_code == 200
    assert Settings.from_env({"MAX_TOKENS_PER_HEADER": "2"}).max_tokens_per_header == 2


def test_a_chat_with_many_dead_tokens_tries_only_a_few_accounts(settings, client, emulator):
    response = chat(client, dead_tokens(settings.max_tokens_per_header))
    assert response.status_code == 401
    tried = {call["body"]["refresh_token"] for call in upstream_calls(emulator, "RefreshToken")}
    assert 0 < len(tried) <= MAX_ACCOUNTS_TRIED


def test_models_checks_only_the_first_few_of_many_dead_tokens(settings, client, emulator):
    response = client.get("/v1/models", headers=dead_tokens(settings.max_tokens_per_header))
    assert response.status_code == 401
    assert 0 < len(upstream_calls(emulator, "RefreshToken")) <= MAX_ACCOUNTS_TRIED


# /token/check: the API key, a rate limit per address, and never a rotation


def unsigned_jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_token_check_needs_the_api_key_when_api_keys_is_set(keyed_client, account, emulator):
    response = keyed_client.post("/token/check", json={"token": account.access_token})
    assert response.status_code == 401
    assert emulator.state.calls() == []
    keyed = {"Authorization": f"Bearer {API_KEY}"}
    response = keyed_client.post(
        "/token/check", json={"token": account.access_token}, headers=keyed
    )
    assert response.get_json()["live"] is True


def test_token_check_never_rotates_a_web_refresh_token(client, account, emulator):
    body = client.post("/token/check", json={"token": account.refresh_token}).get_json()
    assert body["live"] is None and body["checked"] is False
    assert "rotate" in body["message"]
    assert emulator.state.calls() == []
    emulator.state.refresh(account.refresh_token)  # its owner's copy still works with Kimi


@pytest.mark.parametrize("protocol", ["legacy"])
def test_token_check_of_a_legacy_refresh_token_keeps_nothing(client, auth, account, emulator):
    body = client.post("/token/check", json={"token": account.refresh_token}).get_json()
    assert body == {"live": True, "checked": True, "token_type": "refresh"}
    assert len(upstream_calls(emulator, "/token/refresh")) == 1
    assert chat(client, auth).status_code == 200  # the check kept no access token to reuse
    assert len(upstream_calls(emulator, "/token/refresh")) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_check_reads_an_expired_token_as_dead_without_asking(client, emulator):
    for typ in ("refresh", "access"):
        token = unsigned_jwt({"typ": typ, "sub": "u1", "exp": 1_000_000_000})
        body = client.post("/token/check", json={"token": token}).get_json()
        assert body["live"] is False and body["token_type"] == typ
    assert emulator.state.calls() == []


def test_token_checks_are_rate_limited_per_client_address(make_settings, emulator):
    client = create_app(make_settings(token_checks_per_minute=2)).test_client()

    def check(address: str):
        return client.post(
            "/token/check", json={"token": "no-jwt"}, environ_base={"REMOTE_ADDR": address}
        )

    assert [check("192.0.2.1").status_code for _ in range(2)] == [200, 200]
    limited = check("192.0.2.1")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.get_json()["error"]["type"] == "rate_limit_error"
    assert check("192.0.2.2").status_code == 200
    assert Settings.from_env({"TOKEN_CHECKS_PER_MINUTE": "3"}).token_checks_per_minute == 3


def test_the_rate_limit_window_slides():
    now = [1000.0]
    limit = SlidingWindowLimit(2, 60.0, clock=lambda: now[0])
    limit.hit("a")
    now[0] += 30
    limit.hit("a")
    with pytest.raises(RateLimited) as refused:
        limit.hit("a")
    assert refused.value.retry_after == 30
    now[0] += 30.5  # the first hit has left the window
    limit.hit("a")
    with pytest.raises(RateLimited):
        limit.hit("a")


# A public pool must be meant, and /healthz tells strangers nothing about the configuration


def test_kimi_tokens_without_api_keys_refuse_to_start(monkeypatch):
    with pytest.raises(ValueError, match="ALLOW_PUBLIC_POOL"):
        Settings.from_env({"KIMI_TOKENS": "t1,t2"})
    monkeypatch.setenv("KIMI_TOKENS", "t1")
    with pytest.raises(ValueError, match="API_KEYS"):
        create_app()


def test_a_public_pool_starts_when_allowed_and_a_keyed_pool_always():
    public = Settings.from_env({"KIMI_TOKENS": "t1", "ALLOW_PUBLIC_POOL": "1"})
    assert public.allow_public_pool and len(public.kimi_tokens) == 1
    keyed = Settings.from_env({"KIMI_TOKENS": "t1", "API_KEYS": "k1"})
    assert not keyed.allow_public_pool and keyed.api_keys == ("k1",)


@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer sk-wrong"}])
def test_healthz_shows_strangers_only_the_status(keyed_client, header):
    response = keyed_client.get("/healthz", headers=header)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_shows_the_configuration_to_a_caller_with_an_api_key(keyed_client):
    body = keyed_client.get("/healthz", headers={"Authorization": f"Bearer {API_KEY}"}).get_json()
    assert body == {"status": "ok", "protocol": "web", "store": "ok", "server_accounts": 1}


def test_healthz_without_api_keys_shows_only_the_status_even_to_a_token_holder(client, auth):
    assert client.get("/healthz", headers=auth).get_json() == {"status": "ok"}


# Kept conversations belong to the API key that made them


@pytest.fixture
def two_keys_client(make_settings, account):
    settings = make_settings(
        kimi_tokens=tuple(split_credentials(account.refresh_token)), api_keys=("alpha", "beta")
    )
    return create_app(settings).test_client()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
def test_another_api_key_cannot_continue_a_kept_conversation(two_keys_client, emulator, stream):
    alpha, beta = {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer beta"}
    chat_id = chat(two_keys_client, alpha, "keep 7", conversation_id="none").get_json()["id"]
    calls = len(emulator.state.calls())
    stolen = chat(two_keys_client, beta, "and?", conversation_id=chat_id, stream=stream)
    assert stolen.status_code == 404
    error = stolen.get_json()["error"]
    assert error["param"] == "conversation_id" and "Unknown conversation_id" in error["message"]
    assert len(emulator.state.calls()) == calls  # nothing of it reached Kimi
    assert chat(two_keys_client, alpha, "and?", conversation_id=chat_id).status_code == 200


def test_kept_conversations_record_a_hash_of_the_key_never_the_key(two_keys_client, emulator):
    chat_id = chat(
        two_keys_client, {"Authorization": "Bearer alpha"}, conversation_id="none"
    ).get_json()["id"]
    kept = two_keys_client.application.extensions["kimi"].conversations.get(chat_id)
    assert kept.owner and "alpha" not in kept.owner


def test_a_callers_own_tokens_continue_only_conversations_of_their_accounts(
    client, auth, new_account, emulator
):
    chat_id = chat(client, auth, conversation_id="none").get_json()["id"]
    stranger = {"Authorization": f"Bearer {new_account('mallory').refresh_token}"}
    assert chat(client, stranger, conversation_id=chat_id).status_code == 404
    assert chat(client, auth, conversation_id=chat_id).status_code == 200
