"""Files under the web protocol when things go wrong, as a user meets them: the upload refused
(an expired token, a rate limit), a file that cannot be used, a turn failing after its chat
opened; and the upload cache (per account, expiring, off, in Redis). Every failure is a clear
OpenAI error naming the file where a file is the cause, and no one-shot chat stays on the
account (test_web_uploads_gunicorn.py checks that no spooled file stays open)."""

from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest
from flask import Flask, Response
from helpers import LiveServer, chat, pool_auth, sse_events, streamed_text, upstream_calls

from kimi import create_app
from kimi.files.sources import SPOOL_IN_MEMORY_BYTES
from kimi.settings import Settings

CHAT = "ChatService/Chat"
UPLOAD = "/apiv2-files/file/upload"
PROGRESS = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
REFRESH = "RefreshToken"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
BIG = SPOOL_IN_MEMORY_BYTES + 1024 * 1024  # spooled to a temporary file on disk
CACHE_SECONDS = 0.4


@pytest.fixture(autouse=True)
def quick_parse(emulator):
    emulator.state.configure(parse_seconds=0.0)


@pytest.fixture(scope="module")
def big_source():
    """A loopback server with a PDF larger than the in-memory spool."""
    files = Flask("big-source")
    block = b"%PDF-1.4\n" + bytes(BIG - 9)
    files.add_url_rule("/big.pdf", "big", lambda: Response(block, mimetype="application/pdf"))
    with LiveServer(files) as server:
        yield server.url + "/big.pdf"


@pytest.fixture
def files_client(make_settings):
    return create_app(make_settings(allow_private_file_urls=True)).test_client()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def named_file(url: str, filename: str) -> dict:
    return {"type": "file", "file": {"file_data": url, "filename": filename}}


def ask(client, headers, *parts, stream=False, **body):
    content = [{"type": "text", "text": "What is in it?"}, *parts]
    return chat(
        client, headers, messages=[{"role": "user", "content": content}], stream=stream, **body
    )


def reply(response, stream: bool) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    if stream:
        return streamed_text(sse_events(response.get_data()))
    return response.get_json()["choices"][0]["message"]["content"]


def statuses(emulator, path: str) -> list[int]:
    return [call["status"] for call in upstream_calls(emulator, path)]


def warm_up(client, headers, emulator) -> None:
    """One text turn, so the account's access token is cached (as on a running service)."""
    assert chat(client, headers).status_code == 200
    emulator.state.clear_calls()


# --- the upload call refused ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_token_expired_at_the_upload_is_refreshed_once_and_the_upload_sent_again(
    files_client, account, emulator, stream
):
    headers = pool_auth(account)
    warm_up(files_client, headers, emulator)
    emulator.state.add_fault("upload_unauthorized")
    text = reply(ask(files_client, headers, image(data_url(PNG)), stream=stream), stream)
    assert "image.png (2056 bytes" in text
    assert statuses(emulator, UPLOAD) == [401, 200]
    assert len(upstream_calls(emulator, REFRESH)) == 1
    assert statuses(emulator, CHAT) == [200]


def test_an_upload_refused_after_the_refresh_too_is_401_and_kimi_is_not_asked(
    files_client, account, emulator
):
    headers = pool_auth(account)
    warm_up(files_client, headers, emulator)
    emulator.state.add_fault("upload_unauthorized", times=2)
    response = ask(files_client, headers, image(data_url(PNG)))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "kimi_token_invalid"
    assert statuses(emulator, UPLOAD) == [401, 401]
    assert upstream_calls(emulator, CHAT) == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_rate_limited_upload_fails_over_to_another_account_before_any_byte(
    files_client, new_account, emulator, stream
):
    limited, spare = new_account("limited"), new_account("spare")
    emulator.state.add_fault("upload_limit", user_id=limited.user_id)
    # The pool starts with the first account of the header.
    text = reply(
        ask(files_client, pool_auth(limited, spare), image(data_url(PNG)), stream=stream), stream
    )
    assert "image.png (2056 bytes" in text
    assert statuses(emulator, UPLOAD) == [429, 200]
    (stored,) = emulator.state.web_files.snapshot()
    assert stored["user_id"] == spare.user_id
    (call,) = upstream_calls(emulator, CHAT)
    assert call["user_id"] == spare.user_id


def test_a_rate_limited_upload_with_no_account_left_is_429_with_retry_after(
    files_client, account, emulator
):
    emulator.state.add_fault("upload_limit")
    response = ask(files_client, pool_auth(account), image(data_url(PNG)), stream=True)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["type"] == "rate_limit_error"
    assert upstream_calls(emulator, CHAT) == []


@pytest.mark.parametrize(
    "path, status, code",
    [(UPLOAD, 404, "not_found"), (PROGRESS, 403, "permission_denied"), (UPLOAD, 500, "internal")],
    ids=["upload-route-gone", "progress-forbidden", "upload-server-error"],
)
def test_a_refused_file_call_is_a_502_naming_the_file_never_a_404_about_a_conversation(
    kimi_refusing, account, emulator, path, status, code
):
    client = kimi_refusing(path, status, code, "kimi says no")
    response = ask(client, pool_auth(account), named_file(data_url(PNG), "cat.png"))
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["param"] is None and "conversation" not in error["message"]
    assert "cat.png" in error["message"] and "kimi says no" in error["message"]
    assert upstream_calls(emulator, CHAT) == []


# --- a file that cannot be used -------------------------------------------------------------


@pytest.mark.parametrize(
    "part, code, named",
    [
        (image("data:image/png;base64,iVBORw0K@@@"), "invalid_request", "Attached image"),
        (
            named_file(data_url(b"MZ\x90\x00", "application/x-msdownload"), "setup.exe"),
            "unsupported_file_type",
            "'setup.exe'",
        ),
        (
            named_file(data_url(b"a" * 2048, "text/plain"), "notes.txt"),
            "file_too_large",
            "'notes.txt'",
        ),
    ],
    ids=["bad-base64", "unsupported-type", "over-max-file-mb"],
)
def test_a_file_that_cannot_be_used_is_a_400_naming_it(
    make_settings, account, emulator, part, code, named
):
    client = create_app(make_settings(max_file_mb=0.001)).test_client()
    response = ask(client, pool_auth(account), image(data_url(b"fine")), part)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    assert named in error["message"] and "number 2 of the 2 attached" in error["message"]
    assert upstream_calls(emulator, UPLOAD) == [] and upstream_calls(emulator, CHAT) == []


def test_a_fetched_file_over_max_file_mb_is_a_400_naming_it(make_settings, account, big_source):
    client = create_app(make_settings(allow_private_file_urls=True, max_file_mb=1)).test_client()
    response = ask(client, pool_auth(account), {"type": "file", "file_url": {"url": big_source}})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "file_too_large" and "'big.pdf'" in error["message"]


# --- nothing left behind --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "fault", ["error_end:unknown", "error_end:unknown:after_text", "exception:unknown:after_text"]
)
def test_a_one_shot_turn_with_a_file_that_fails_after_its_chat_opened_leaves_no_chat(
    files_client, account, emulator, fault, stream
):
    emulator.state.add_fault(fault)
    response = ask(files_client, pool_auth(account), image(data_url(PNG)), stream=stream)
    response.get_data()
    assert len(upstream_calls(emulator, UPLOAD)) == 1
    chats = emulator.state.chats()
    assert chats and all(chat["deleted"] for chat in chats.values())


# --- the upload cache -----------------------------------------------------------------------


def test_the_same_file_from_two_accounts_is_uploaded_once_per_account(
    files_client, new_account, emulator
):
    alice, bob = new_account("alice"), new_account("bob")
    for headers in (pool_auth(alice), pool_auth(bob), pool_auth(alice), pool_auth(bob)):
        assert ask(files_client, headers, image(data_url(PNG))).status_code == 200
    owners = sorted(record["user_id"] for record in emulator.state.web_files.snapshot())
    assert owners == sorted([alice.user_id, bob.user_id])


def test_an_expired_cache_entry_uploads_the_file_again(make_settings, account, emulator):
    client = create_app(make_settings(web_file_cache_seconds=CACHE_SECONDS)).test_client()
    assert ask(client, pool_auth(account), image(data_url(PNG))).status_code == 200
    assert ask(client, pool_auth(account), image(data_url(PNG))).status_code == 200
    assert len(upstream_calls(emulator, UPLOAD)) == 1
    time.sleep(CACHE_SECONDS + 0.1)
    assert ask(client, pool_auth(account), image(data_url(PNG))).status_code == 200
    assert len(upstream_calls(emulator, UPLOAD)) == 2


def test_web_file_cache_seconds_zero_uploads_every_time(make_settings, account, emulator):
    settings = Settings.from_env({"WEB_FILE_CACHE_SECONDS": "0"})
    assert settings.web_file_cache_seconds == 0
    client = create_app(make_settings(web_file_cache_seconds=0)).test_client()
    for _ in range(3):
        assert ask(client, pool_auth(account), image(data_url(PNG))).status_code == 200
    assert len(upstream_calls(emulator, UPLOAD)) == 3


def test_the_cache_lives_in_redis_with_its_expiry(
    make_settings, new_account, emulator, redis_server
):
    prefix = f"kimi-test-{os.getpid()}-{time.monotonic_ns()}:"
    settings = make_settings(
        state_url=redis_server.url, redis_prefix=prefix, web_file_cache_seconds=3600
    )
    alice, bob = new_account("alice"), new_account("bob")
    for headers in (pool_auth(alice), pool_auth(alice), pool_auth(bob)):
        # A new app each time: what is remembered lives in Redis, not in the process.
        client = create_app(settings).test_client()
        assert ask(client, headers, image(data_url(PNG))).status_code == 200
    assert len(upstream_calls(emulator, UPLOAD)) == 2
    digest = hashlib.sha256(PNG).hexdigest()
    with redis_server.client() as redis:
        keys = sorted(redis.scan_iter(f"{prefix}webfile:*"))
        assert keys == sorted(f"{prefix}webfile:{u.user_id}:{digest}" for u in (alice, bob))
        assert all(0 < redis.pttl(key) <= 3600 * 1000 for key in keys)
        stored = {record["id"] for record in emulator.state.web_files.snapshot()}
        assert {redis.get(key) for key in keys} == stored
