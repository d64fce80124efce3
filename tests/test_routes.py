"""The rest of the HTTP surface: models, token check, health, CORS, API keys."""

from __future__ import annotations

import pytest
from helpers import chat, upstream_calls

from kimi import create_app
from kimi.settings import PROTOCOLS
from kimi.tokens import split_credentials


def test_models_lists_static_ids_without_credentials(client, emulator):
    body = client.get("/v1/models").get_json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "kimi" in ids and "kimi-search" in ids and "kimi-thinking" in ids
    assert all(m["object"] == "model" and m["owned_by"] and m["created"] for m in body["data"])
    assert emulator.state.calls() == []


def test_models_adds_the_live_catalog_and_caches_it(client, auth, emulator):
    for _ in range(2):
        ids = [m["id"] for m in client.get("/v1/models", headers=auth).get_json()["data"]]
        assert "kimi-ok-computer" in ids and "kimi-k2.5-thinking" in ids
        assert len(ids) == len(set(ids))
    assert len(upstream_calls(emulator, "GetAvailableModels")) == 1


def test_models_with_a_dead_token_is_401_so_connection_checks_tell_the_truth(client, emulator):
    response = client.get("/v1/models", headers={"Authorization": "Bearer dead-token"})
    assert response.status_code == 401
    assert response.get_json()["error"]["type"] == "authentication_error"


def test_models_with_a_wrong_api_key_is_401(make_settings, account):
    settings = make_settings(api_keys=("sk-right",), kimi_tokens=tuple(split_credentials("t")))
    client = create_app(settings).test_client()
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-right"}).status_code == 200
    assert client.get("/v1/models").status_code == 200  # no header: the static list


def test_models_verifies_a_live_token_through_the_cached_session(client, auth, emulator):
    chat(client, auth)  # a turn refreshes once and caches the access token
    refreshes = len(upstream_calls(emulator, "RefreshToken"))
    for _ in range(3):
        assert client.get("/v1/models", headers=auth).status_code == 200
    assert len(upstream_calls(emulator, "RefreshToken")) == refreshes


def test_one_model_in_the_spec_shape(client):
    body = client.get("/v1/models/kimi-thinking").get_json()
    assert body["id"] == "kimi-thinking" and body["object"] == "model"
    assert body["owned_by"] and isinstance(body["created"], int)


def test_an_unknown_model_is_404_in_the_openai_shape(client):
    response = client.get("/v1/models/gpt-nothing")
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["param"] == "model" and "gpt-nothing" in error["message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_check_reports_a_live_access_token(client, account, emulator):
    response = client.post("/token/check", json={"token": account.access_token})
    assert response.get_json() == {"live": True, "checked": True, "token_type": "access"}
    assert upstream_calls(emulator, "efresh") == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_check_reports_a_dead_access_token(client, account, emulator):
    emulator.state.reset()  # the signing key changes: the account's tokens are now forged
    body = client.post("/token/check", json={"token": account.access_token}).get_json()
    assert body["live"] is False and body["checked"] is True


def test_token_check_reports_a_string_that_is_no_token_as_dead_without_asking(client, emulator):
    body = client.post("/token/check", json={"token": "dead-token"}).get_json()
    assert body["live"] is False and body["token_type"] == "unknown"
    assert emulator.state.calls() == []


def test_token_check_without_a_token_is_400(client):
    response = client.post("/token/check", json={})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "token"


def test_ping_and_health(client):
    assert client.get("/ping").get_data(as_text=True) == "pong"
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json() == {"status": "ok"}


def test_welcome_page_says_how_to_call(client):
    text = client.get("/").get_data(as_text=True)
    assert "/v1/chat/completions" in text and "Bearer" in text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/token/check", "/nope"])
def test_cors_preflight_is_answered_on_every_route(client, path):
    response = client.options(
        path,
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert 200 <= response.status_code < 300
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_headers_are_on_errors_too(client):
    response = chat(client, {})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.fixture
def keyed_client(make_settings, account):
    settings = make_settings(
        kimi_tokens=tuple(split_credentials(account.refresh_token)), api_keys=("sk-right",)
    )
    return create_app(settings).test_client()


def test_server_pool_with_api_keys_refuses_strangers(keyed_client, emulator):
    for header in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Bearer sk-righ"}):
        response = chat(keyed_client, header)
        assert response.status_code == 401
        assert response.get_json()["error"]["type"] == "authentication_error"
    assert emulator.state.calls() == []


def test_server_pool_with_the_right_api_key_answers(keyed_client):
    response = chat(keyed_client, {"Authorization": "Bearer sk-right"})
    assert response.status_code == 200


def test_a_public_server_pool_serves_any_caller(make_settings, account):
    settings = make_settings(
        kimi_tokens=tuple(split_credentials(account.refresh_token)), allow_public_pool=True
    )
    assert chat(create_app(settings).test_client(), {}).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_responses_obey_the_wsgi_contract(app, auth, stream):
    from wsgiref.util import is_hop_by_hop
    from wsgiref.validate import validator

    from werkzeug.test import Client

    strict = Client(validator(app.wsgi_app))
    response = strict.post(
        "/v1/chat/completions",
        json={"model": "kimi", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        headers=auth,
    )
    assert response.status_code == 200
    assert b"Emulator" in response.get_data()
    assert not [name for name in response.headers.keys() if is_hop_by_hop(name)]
    response.close()
