"""``python -m kimi doctor`` against the emulator: a healthy walk under both protocols, what it
leaves behind (the rotated token in the service's store, no chat), its output (lines, JSON,
exit status) and what it never prints (a token)."""

from __future__ import annotations

import http.server
import json
import re
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import ROOT, chat, free_port, self_signed_certificate

from kimi import create_app
from kimi.doctor import main, run_doctor
from kimi.store import open_configured_store
from kimi.tokens import Credential

PROTOCOLS = ["web", "legacy"]
STEPS = ["reach", "refresh", "identify", "models", "chat", "stream", "upload", "delete"]
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


@pytest.fixture
def doctor_settings(make_settings):
    return make_settings(read_timeout=5.0, file_parse_timeout=5.0)


def doctor_env(emulator, protocol: str, tmp_path, **more: str) -> dict[str, str]:
    return {
        "KIMI_PROTOCOL": protocol,
        "KIMI_BASE_URL": emulator.url,
        "KIMI_AUTH_URL": emulator.url,
        "KIMI_STATE_PATH": str(tmp_path / "state.db"),
        **more,
    }


def secrets_of(settings, token: str) -> list[str]:
    """The token given, and what the service's store now holds for it: the rotated refresh
    token and the access token the emulator issued."""
    store = open_configured_store(settings)
    account = Credential.parse(token).account_id
    found = [token, store.get(f"refresh_token:{account}") or ""]
    cached = store.get(f"access:{account}")
    if cached:
        found.append(json.loads(cached)["access_token"])
    return [secret for secret in found if secret]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_step_is_ok_against_a_healthy_backend(doctor_settings, account, emulator):
    report, _ = run_doctor(doctor_settings, account.refresh_token)

    assert [step.name for step in report.steps] == STEPS
    assert [step.status for step in report.steps] == ["ok"] * len(STEPS), report.steps
    assert report.exit_status == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_walk_leaves_no_chat_and_uploads_one_tiny_image(doctor_settings, account, emulator):
    run_doctor(doctor_settings, account.refresh_token)

    chats = emulator.state.chats()
    assert len(chats) == 1
    assert all(chat["deleted"] for chat in chats.values())
    uploads = [c for c in emulator.state.calls() if "upload" in c["path"] and c["status"] == 200]
    assert uploads, "the image was not uploaded"


@pytest.mark.parametrize("protocol", ["web"])
def test_the_rotated_refresh_token_is_kept_where_the_service_finds_it(
    doctor_settings, account, emulator
):
    report, _ = run_doctor(doctor_settings, account.refresh_token)
    assert "rotated" in report.steps[1].detail

    # The token given was spent by the doctor's refresh; the service still chats with it.
    client = create_app(doctor_settings).test_client()
    response = chat(client, {"Authorization": f"Bearer {account.refresh_token}"})
    assert response.status_code == 200, response.get_json()
    again, _ = run_doctor(doctor_settings, account.refresh_token)
    assert again.ok, again.steps
    assert "rotated token kept there" in again.steps[1].detail


@pytest.mark.parametrize("protocol", ["web"])
def test_a_token_rotated_elsewhere_fails_the_refresh_and_says_so(
    doctor_settings, make_settings, account, emulator, tmp_path
):
    run_doctor(make_settings(state_path=str(tmp_path / "elsewhere.db")), account.refresh_token)

    report, _ = run_doctor(doctor_settings, account.refresh_token)

    refresh = report.failed_step()
    assert refresh.name == "refresh"
    assert refresh.http_status == 401
    assert refresh.error_code == "unauthenticated"
    assert "revoked" in refresh.error_message
    assert "rotated elsewhere" in refresh.hint
    assert [step.status for step in report.steps[2:]] == ["skipped"] * 6
    assert report.exit_status == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_access_token_is_used_without_a_refresh(doctor_settings, account, emulator):
    report, _ = run_doctor(doctor_settings, account.access_token)

    assert report.ok, report.steps
    assert "no refresh" in report.steps[1].detail
    assert not [c for c in emulator.state.calls() if "refresh" in c["path"].lower()]


def test_a_string_that_is_no_token_fails_the_refresh_without_a_call(doctor_settings, emulator):
    report, _ = run_doctor(doctor_settings, "not-a-token")

    assert report.failed_step().name == "refresh"
    assert "not a Kimi token" in report.failed_step().detail
    assert not [c for c in emulator.state.calls() if "refresh" in c["path"].lower()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unreachable_host_fails_the_first_step_and_skips_the_rest(make_settings, account):
    closed = f"http://127.0.0.1:{free_port()}"
    report, _ = run_doctor(make_settings(base_url=closed, auth_url=closed), account.refresh_token)

    reach = report.failed_step()
    assert reach.name == "reach"
    assert reach.http_status is None
    assert "host unreachable" in reach.hint
    assert all(step.status == "skipped" for step in report.steps[1:])


def test_a_certificate_that_is_not_trusted_is_named_a_tls_failure(make_settings, tmp_path):
    cert, key = self_signed_certificate(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://localhost:{server.server_address[1]}"
        report, _ = run_doctor(make_settings(base_url=url, auth_url=url), "a.b.c")
    finally:
        server.shutdown()
        server.server_close()

    reach = report.failed_step()
    assert reach.name == "reach"
    assert "TLS failed" in reach.hint


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_json_output_for_machines(account, emulator, protocol, tmp_path, monkeypatch, capsys):
    for name, value in doctor_env(emulator, protocol, tmp_path).items():
        monkeypatch.setenv(name, value)

    status = main([account.refresh_token, "--json"])

    document = json.loads(capsys.readouterr().out)
    assert status == 0
    assert document["ok"] is True
    assert document["protocol"] == protocol
    assert document["account"] == Credential.parse(account.refresh_token).label
    assert [step["name"] for step in document["steps"]] == STEPS
    for step in document["steps"]:
        assert set(step) >= {"status", "detail", "http_status", "error_code", "hint"}


def test_a_failed_step_in_json_carries_status_code_message_and_hint(
    account, emulator, tmp_path, monkeypatch, capsys
):
    for name, value in doctor_env(emulator, "web", tmp_path).items():
        monkeypatch.setenv(name, value)
    emulator.state.add_fault("limit")

    status = main([account.refresh_token, "--json"])

    steps = {step["name"]: step for step in json.loads(capsys.readouterr().out)["steps"]}
    assert status == 1
    assert steps["chat"]["status"] == "failed"
    assert steps["chat"]["http_status"] == 429
    assert steps["chat"]["error_code"] == "resource_exhausted"
    assert "too many requests" in steps["chat"]["error_message"]
    assert "rate limited" in steps["chat"]["hint"]
    assert steps["stream"]["status"] == "skipped"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_token_comes_from_kimi_tokens_and_is_never_printed(
    account, emulator, protocol, tmp_path, monkeypatch, capsys
):
    env = doctor_env(emulator, protocol, tmp_path, KIMI_TOKENS=f"{account.refresh_token},other")
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main([]) == 0
    assert main(["--json"]) == 0

    output = capsys.readouterr().out
    assert "all steps ok" in output
    from kimi.doctor.cli import doctor_settings as settings_from_env

    for secret in secrets_of(settings_from_env(env), account.refresh_token):
        assert secret not in output
    assert not JWT.search(output)


def test_usage_errors_exit_with_2(monkeypatch, capsys):
    assert main([]) == 2  # no token and no KIMI_TOKENS
    assert "KIMI_TOKENS" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--no-such-option"])
    assert exit_info.value.code == 2
    assert main(["token", "--capture", str(ROOT)]) == 2  # a directory: nothing walked
    monkeypatch.setenv("KIMI_PROTOCOL", "carrier-pigeon")
    assert main(["token"]) == 2


def test_python_dash_m_kimi_runs_the_doctor(account, emulator, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        **doctor_env(emulator, "legacy", tmp_path),
        "KIMI_TOKENS": account.refresh_token,
    }
    done = subprocess.run(
        [sys.executable, "-m", "kimi", "doctor"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "all steps ok" in done.stdout
    assert account.refresh_token not in done.stdout + done.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "kimi"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2
    assert "doctor" in usage.stderr


def test_run_sh_doctor_installs_and_runs_the_doctor(account, emulator, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "VENV": str(Path(sys.executable).parent.parent),
        **doctor_env(emulator, "legacy", tmp_path),
    }
    done = subprocess.run(
        ["./run.sh", "doctor", "-", "--json"],
        cwd=ROOT,
        env=env,
        input=account.refresh_token + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True
