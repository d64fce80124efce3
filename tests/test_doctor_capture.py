"""``doctor --capture FILE``: the walk's exchanges as masked JSON lines, and the emulator's replay
of such a file (unchanged it passes; a hand-edited protocol change is named as one)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from helpers import ROOT

from kimi.doctor import run_doctor
from kimi.doctor.masking import MASKED, REDACTED, Masker
from kimi.settings import Settings
from kimi.store import open_configured_store
from kimi.tokens import Credential
from kimi_emulator import EmulatorServer
from kimi_emulator.replay import Replay, create_replay_app

PROTOCOLS = ["web", "legacy"]
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
USER_NAME = "Zhang San 张三"  # the account's user, as Kimi names them: a personal field
CHAT_PATHS = {"web": "ChatService/Chat", "legacy": "/completion/stream"}


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def exchanges(lines: list[dict], path_part: str = "") -> list[dict]:
    return [x for x in lines if x["type"] == "exchange" and path_part in x["request"]["path"]]


@dataclass(frozen=True)
class Captured:
    """A capture of a healthy walk, and what the walk left: to look for in the file."""

    path: Path
    token: str
    calls: list[dict]
    secrets: list[str]


@pytest.fixture(scope="module")
def captures(emulator_server, tmp_path_factory) -> dict[str, Captured]:
    """One capture per protocol, made once for the module."""
    emulator_server.state.reset()
    made = {}
    for protocol in PROTOCOLS:
        directory = tmp_path_factory.mktemp(f"capture-{protocol}")
        account = emulator_server.state.create_user(USER_NAME)
        emulator_server.state.clear_calls()
        settings = Settings(
            protocol=protocol,
            base_url=emulator_server.url,
            auth_url=emulator_server.url,
            state_path=str(directory / "state.db"),
            read_timeout=5.0,
        )
        path = directory / "capture.jsonl"
        report, _ = run_doctor(settings, account.refresh_token, capture=str(path))
        assert report.ok, report.steps
        calls = emulator_server.state.calls()
        secrets = walk_secrets(settings, account) + [USER_NAME, *emulator_server.state.chats()]
        made[protocol] = Captured(path, account.refresh_token, calls, secrets)
    return made


@pytest.fixture
def capture(captures, protocol, tmp_path) -> Captured:
    """This protocol's capture, as a copy the test may edit."""
    captured = captures[protocol]
    copy = tmp_path / "capture.jsonl"
    shutil.copy(captured.path, copy)
    return replace(captured, path=copy)


def walk_secrets(settings: Settings, account) -> list[str]:
    """The tokens and ids of the account after a walk: given, rotated, issued, its identity."""
    store = open_configured_store(settings)
    account_id = Credential.parse(account.refresh_token).account_id
    access = json.loads(store.get(f"access:{account_id}"))["access_token"]
    claims = Credential.parse(account.refresh_token).claims
    found = [account.refresh_token, access, account.user_id, claims["device_id"], claims["ssid"]]
    return [*found, store.get(f"refresh_token:{account_id}") or ""]


def replay_settings(protocol: str, url: str, tmp_path) -> Settings:
    state_path = str(tmp_path / "replay.db")
    return Settings(protocol=protocol, base_url=url, auth_url=url, state_path=state_path)


def replay_walk(capture: Captured, protocol: str, tmp_path):
    """The doctor's walk against the emulator replaying ``capture``."""
    replay = Replay.from_file(capture.path)
    with EmulatorServer(app=create_replay_app(replay)) as server:
        report, _ = run_doctor(replay_settings(protocol, server.url, tmp_path), capture.token)
    return report


# Masking


def test_a_value_keeps_its_placeholder_across_bodies_and_paths():
    masker = Masker()
    masker.learn_json({"chat": {"id": "c0ffee-chat-1234"}, "userId": "u-123456789"})

    assert masker.text("/api/chat/c0ffee-chat-1234/completion/stream") == (
        "/api/chat/<chat-id-1>/completion/stream"
    )
    assert masker.json({"chat_id": "c0ffee-chat-1234", "sub": "u-123456789"}) == {
        "chat_id": "<chat-id-1>",
        "sub": "<user-id-1>",
    }


def test_tokens_are_named_for_their_type_and_their_claims_kept_masked(account):
    masker = Masker()

    masked = masker.text(f"Bearer {account.access_token} then {account.refresh_token}")

    assert masked == "Bearer <access-token-1> then <refresh-token-1>"
    claims = masker.token_claims()["<access-token-1>"]
    assert claims["typ"] == "access"
    assert claims["sub"] == "<user-id-1>"
    assert claims["lifetime"] > 0


def test_query_values_personal_fields_and_secret_headers_are_masked():
    masker = Masker()
    masker.learn_headers({"X-Traffic-Id": "user-0123456789"})

    assert masker.text("http://h/_upload/obj?sig=abc&x=1") == (
        f"http://h/_upload/obj?sig={MASKED}&x={MASKED}"
    )
    assert masker.json({"id": "user-0123456789", "name": "Alice", "phone": "138"}) == {
        "id": "<user-id-1>",
        "name": REDACTED,
        "phone": REDACTED,
    }
    assert masker.json({"chat": {"name": "My chat"}}) == {"chat": {"name": "My chat"}}
    headers = masker.headers({"Cookie": "kimi-auth=secret", "Set-Cookie": "a=b"})
    assert set(headers.values()) == {MASKED}


def test_an_authorization_value_the_masker_never_saw_is_masked_all_the_same():
    headers = Masker().headers({"Authorization": "Bearer opaque-access-0123456789"})
    assert headers == {"Authorization": f"Bearer {MASKED}"}


def test_a_short_id_is_masked_only_where_a_whole_string_equals_it():
    masker = Masker()
    masker.learn_json({"id": "b2"})

    assert masker.json({"id": "b2", "text": "b2b2 stays"}) == {"id": "<id-1>", "text": "b2b2 stays"}


# The capture file


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_capture_holds_every_call_the_walk_made(capture):
    lines = read_lines(capture.path)

    assert lines[0]["type"] == "capture"
    assert lines[-1]["type"] == "result" and lines[-1]["ok"] is True
    recorded = [(x["request"]["method"], x["request"]["path"]) for x in exchanges(lines)]
    made = [(call["method"], call["path"]) for call in capture.calls]
    masked_made = [(method, path) for method, path in recorded if not path.startswith("/")]
    assert masked_made == []
    assert len(recorded) == len(made) + 1  # and the reach step's GET /, which no route logs
    assert [method for method, _ in recorded[1:]] == [method for method, _ in made]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_capture_decodes_the_answer_stream(capture, protocol):
    (chat_exchange,) = exchanges(read_lines(capture.path), CHAT_PATHS[protocol])
    body = chat_exchange["response"]["body"]

    if protocol == "web":
        assert body["frames"][-1]["flags"] == 2  # the end-of-stream frame
        assert any("block" in frame["message"] for frame in body["frames"])
    else:
        assert any(line.startswith("data: ") and '"cmpl"' in line for line in body["sse"])
    assert chat_exchange["request"]["headers"]["Authorization"] == "Bearer <access-token-1>"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_capture_holds_no_token_id_or_user_name(capture):
    text = capture.path.read_text()

    for secret in filter(None, capture.secrets):
        assert secret not in text
    assert not JWT.search(text)
    assert "sig=" not in text or f"sig={MASKED}" in text


# Replay


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_replayed_capture_passes_every_step(capture, protocol, tmp_path):
    report = replay_walk(capture, protocol, tmp_path)

    assert report.ok, report.steps


def _rename_models_field(lines: list[dict], protocol: str) -> None:
    for exchange in exchanges(lines, "GetAvailableModels"):
        body = exchange["response"]["body"]["json"]
        body["models"] = body.pop("availableModels")


def _chat_content_type(lines: list[dict], protocol: str) -> None:
    (exchange,) = exchanges(lines, CHAT_PATHS[protocol])
    exchange["response"]["headers"]["Content-Type"] = "application/json"


def _rename_text_field(lines: list[dict], protocol: str) -> None:
    (exchange,) = exchanges(lines, CHAT_PATHS[protocol])
    body = exchange["response"]["body"]
    if protocol == "web":
        for frame in body["frames"]:
            block = frame["message"].get("block") or {}
            if "text" in block:
                block["txt"] = block.pop("text")
    else:
        renamed = '"event":"completion"'
        body["sse"] = [line.replace('"event":"cmpl"', renamed) for line in body["sse"]]


EDITS = [
    ("web", _rename_models_field, "models"),
    ("web", _chat_content_type, "chat"),
    ("legacy", _chat_content_type, "stream"),
    ("web", _rename_text_field, "stream"),
    ("legacy", _rename_text_field, "stream"),
]


@pytest.mark.parametrize(
    "protocol, edit, step", EDITS, ids=[f"{p}-{e.__name__.strip('_')}" for p, e, _ in EDITS]
)
def test_a_hand_edited_capture_is_named_a_protocol_change(capture, tmp_path, protocol, edit, step):
    lines = read_lines(capture.path)
    edit(lines, protocol)
    write_lines(capture.path, lines)

    report = replay_walk(capture, protocol, tmp_path)

    failed = report.failed_step()
    assert failed is not None and failed.name == step, report.steps
    assert "protocol changed" in failed.hint
    assert report.exit_status == 1


@pytest.mark.parametrize("protocol", ["legacy"])
def test_python_dash_m_kimi_emulator_replays_a_capture(capture, protocol, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "kimi_emulator", "--port", "0", "--replay", str(capture.path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first).group(0)
        report, _ = run_doctor(replay_settings(protocol, url, tmp_path), capture.token)
    finally:
        process.terminate()
        process.communicate(timeout=10)

    assert report.ok, report.steps
