"""Two instances behind one address, sharing one Redis: what ``docker compose --scale`` runs.

Each instance is a real gunicorn (the shipped gunicorn.conf.py, gevent workers) started like the
Procfile, on its own loopback port; both use the same ``KIMI_TOKENS``, the same redis-server and
the emulator. Whichever instance answers, a caller must never see a 401 (a rotation the other
instance did not learn of) or a 404 (a conversation the other instance does not know). Redis
hung with SIGSTOP and an instance killed with SIGKILL must cost seconds, never the account.
Rotation is checked under the web protocol, whose refresh tokens are single-use (the legacy
ones stay valid); the rest runs under both where it is cheap. At the end, the compose files
that run such a deployment, and their gateway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from helpers import (
    ROOT,
    free_port,
    procfile_argv,
    sse_events,
    streamed_text,
    upstream_calls,
    wait_until,
    wait_until_serving,
)

from kimi import accounts as accounts_module
from kimi.errors import StateStoreUnavailable
from kimi.pool import BUSY_CODE
from kimi.service import KimiService
from kimi.settings import PROTOCOLS, Settings
from kimi.store import open_store, store_lock
from kimi.tokens import Credential

API_KEY = "sk-scale-out-test"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
REPLY_PREFIX = "Emulator reply to: "
REFRESH = {"web": "AuthService/RefreshToken", "legacy": "/api/auth/token/refresh"}
TURN = {"web": "ChatService/Chat", "legacy": "/completion/stream"}
# Under the service's 60 s safety margin, so no access token is cached: every turn refreshes.
# (2 s, not 1: expiry is whole seconds, so a 1 s token can be dead on arrival.)
SHORT_ACCESS_TTL = 2
# A second or so past that margin: cached, briefly, and shared by both instances.
CACHED_ACCESS_TTL = 62
CACHED_LIFETIMES = 3
# Seconds a Redis call may take before the request fails with a 503.
STATE_TIMEOUT = "0.5"
LOG_TAIL_CHARS = 4000
# Bounds that only catch a hang or a server that never starts; nothing is timed against them.
START_SECONDS = 30.0
HANG_SECONDS = 30.0
ROTATION_TURNS = 8
CONCURRENT_TURNS = 50
# Several times the state store's timeout: calls made meanwhile fail.
REDIS_HANG_SECONDS = 2.0
LEASE_SECONDS = 2.0
# Thirty words: a reply of many frames, each held back by the emulator's "slow" fault.
LONG_PROMPT = " ".join(f"word{n}" for n in range(30))
SLOW_FRAME_SECONDS = 0.5
# A reply of thirty frames this far apart outlasts the state store's timeout several times over.
SHORT_FRAME_SECONDS = 0.1


@dataclass
class Instance:
    """One gunicorn master and its workers, in a process group of their own."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: Path
    killed: bool = field(default=False)

    def chat(self, content: str = "hi", *, stream: bool = False, **body) -> requests.Response:
        body.setdefault("model", "kimi")
        body.setdefault("messages", [{"role": "user", "content": content}])
        return requests.post(
            self.url + "/v1/chat/completions",
            json={**body, "stream": stream},
            headers=HEADERS,
            stream=stream,
            timeout=HANG_SECONDS,
        )

    def healthz(self) -> requests.Response:
        return requests.get(self.url + "/healthz", headers=HEADERS, timeout=HANG_SECONDS)

    def wait_until_serving(self) -> None:
        wait_until_serving(self.url, self.process, START_SECONDS, output=self.output)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a host or container dies."""
        if not self.killed:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):  # every process of it already gone
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(HANG_SECONDS)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_instances(emulator, redis_server, tmp_path, protocol):
    """``start(tokens, redis=..., workers=(1, 1), **env)``: gunicorn instances sharing one Redis
    under a key prefix of this test's own; each is killed (by its process group) at the end."""
    started: list[Instance] = []
    argv = procfile_argv()  # gunicorn -c gunicorn.conf.py app:app

    def start(tokens, *, redis=None, workers=(1, 1), **env: str) -> list[Instance]:
        shared = {
            **os.environ,
            "HOST": "127.0.0.1",
            "KIMI_PROTOCOL": protocol,
            "KIMI_BASE_URL": emulator.url,
            "KIMI_AUTH_URL": emulator.url,
            "KIMI_TOKENS": ",".join(tokens),
            "API_KEYS": API_KEY,
            "KIMI_STATE_URL": (redis or redis_server).url,
            "KIMI_REDIS_PREFIX": f"scale-out-{uuid.uuid4().hex}:",
            "KIMI_STATE_TIMEOUT": STATE_TIMEOUT,
            "GRACEFUL_TIMEOUT": "1",
            **env,
        }
        instances = []
        for number, count in enumerate(workers, start=1):
            name, port = f"instance{number}", free_port()
            # Its own disk: a host of its own, whose only shared state is Redis.
            env_of_one = {**shared, "PORT": str(port), "WEB_CONCURRENCY": str(count)}
            env_of_one["KIMI_STATE_PATH"] = str(tmp_path / f"{name}.db")
            log_path = tmp_path / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env_of_one,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed as one
                )
            instance = Instance(name, f"http://127.0.0.1:{port}", process, log_path)
            started.append(instance)
            instances.append(instance)
        for instance in instances:
            instance.wait_until_serving()
        return instances

    yield start
    for instance in started:
        instance.kill()
        # Shown by pytest only when the test failed.
        print(f"--- {instance.name}'s log (tail) ---\n{instance.output()[-LOG_TAIL_CHARS:]}")


@pytest.fixture
def accounts(new_account):
    """Three emulator users; the service gets their refresh tokens as ``KIMI_TOKENS``."""
    return [new_account(name) for name in ("alice", "bob", "carol")]


def assert_ok(response: requests.Response, stream: bool = False) -> str:
    """The answer's text, after checking it is a whole 200."""
    assert response.status_code == 200, response.text
    if not stream:
        return response.json()["choices"][0]["message"]["content"]
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    return streamed_text(events)


def refreshes(emulator, protocol: str) -> list[dict]:
    return upstream_calls(emulator, REFRESH[protocol])


def turn_users(emulator, protocol: str) -> list[str]:
    return [call["user_id"] for call in upstream_calls(emulator, TURN[protocol])]


# Rotation


def test_a_rotation_made_by_one_instance_is_used_by_the_other(start_instances, account, emulator):
    emulator.state.configure(access_ttl=SHORT_ACCESS_TTL)
    first, second = start_instances([account.refresh_token])
    for turn in range(ROTATION_TURNS):
        instance = (first, second)[turn % 2]
        assert assert_ok(instance.chat(f"turn {turn}")) == f"{REPLY_PREFIX}turn {turn}"
    calls = refreshes(emulator, "web")
    # Every turn refreshed, each with the refresh token the previous turn's refresh got back,
    # half of them on the other instance: each token was spent once, and none was refused.
    assert [c["status"] for c in calls] == [200] * ROTATION_TURNS
    spent = [c["body"]["refresh_token"] for c in calls]
    assert spent[0] == account.refresh_token
    assert len(set(spent)) == len(spent)


def test_an_access_token_cached_by_one_instance_serves_the_other_until_it_expires(
    start_instances, account, emulator
):
    emulator.state.configure(access_ttl=CACHED_ACCESS_TTL)
    first, second = start_instances([account.refresh_token])
    turns, deadline = 0, time.monotonic() + HANG_SECONDS
    while len(refreshes(emulator, "web")) < CACHED_LIFETIMES and time.monotonic() < deadline:
        assert_ok((first, second)[turns % 2].chat(f"turn {turns}"))
        turns += 1
        time.sleep(0.2)
    calls = refreshes(emulator, "web")
    assert len(calls) == CACHED_LIFETIMES  # each lifetime ended with one refresh, by either
    assert turns > len(calls)  # in between, both instances used the one cached access token
    assert {c["status"] for c in calls} == {200}
    spent = [c["body"]["refresh_token"] for c in calls]
    assert len(set(spent)) == len(spent)


# Conversations


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_conversation_kept_on_one_instance_continues_on_the_other_with_its_account(
    start_instances, accounts, emulator, protocol
):
    first, second = start_instances([a.refresh_token for a in accounts])
    kept = first.chat("first question", conversation_id="none")
    assert kept.status_code == 200, kept.text
    chat_id = kept.json()["id"]
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": kept.json()["choices"][0]["message"]["content"]},
        {"role": "user", "content": "second question"},
    ]
    # The other instance's least recently used account is another one: only the kept
    # conversation's record, read from Redis, can send the turn to the owner.
    continued = second.chat(messages=messages, conversation_id=chat_id)
    assert assert_ok(continued) == REPLY_PREFIX + "second question"
    assert continued.json()["id"] == chat_id
    owner = emulator.state.chats()[chat_id]
    assert [m["text"] for m in owner["messages"] if m["role"] == "user"] == [
        "first question",
        "second question",
    ]
    assert turn_users(emulator, protocol) == [owner["user_id"]] * 2


# Many turns at once


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fifty_concurrent_turns_on_two_instances_refresh_each_account_one_at_a_time(
    start_instances, accounts, emulator, protocol
):
    emulator.state.configure(access_ttl=SHORT_ACCESS_TTL, frame_delay=0.01)
    instances = start_instances(
        [a.refresh_token for a in accounts], workers=(2, 2), POOL_WAIT_SECONDS="20"
    )

    def turn(number: int) -> tuple[int, str]:
        stream = number % 2 == 0
        response = instances[number % 2].chat(f"turn {number}", stream=stream)
        return number, assert_ok(response, stream)

    with ThreadPoolExecutor(CONCURRENT_TURNS) as pool:
        answers = dict(pool.map(turn, range(CONCURRENT_TURNS)))
    assert answers == {n: f"{REPLY_PREFIX}turn {n}" for n in range(CONCURRENT_TURNS)}

    calls = refreshes(emulator, protocol)
    assert {c["status"] for c in calls} == {200}  # no refresh token was spent twice
    by_account = defaultdict(list)
    for call in calls:
        by_account[call["user_id"]].append(call)
    assert set(by_account) == {a.user_id for a in accounts}
    for account_calls in by_account.values():
        account_calls.sort(key=lambda c: c["arrived_at"])
        for before, after in zip(account_calls, account_calls[1:], strict=False):
            assert after["arrived_at"] >= before["answered_at"], "two refreshes at once"

    # No rotation was lost: the least recently used order gives each account one more turn.
    emulator.state.clear_calls()
    for instance in instances:
        for _ in accounts:
            assert_ok(instance.chat("after"))
    assert sorted(turn_users(emulator, protocol)) == sorted(2 * [a.user_id for a in accounts])


# Redis hung


def assert_store_503(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "state_store_unavailable")
    assert "Redis" in error["message"]


def test_a_hung_redis_is_a_quick_503_on_both_instances_and_both_recover(
    start_instances, private_redis, account
):
    instances = start_instances([account.refresh_token], redis=private_redis)
    for instance in instances:
        assert_ok(instance.chat())
    private_redis.pause()
    try:
        for instance in instances:
            # requests gives up after HANG_SECONDS: a hang fails here, not a slow answer.
            assert_store_503(instance.chat())
            assert_store_503(instance.chat(stream=True))
            health = instance.healthz()
            assert health.status_code == 503
            assert health.json()["store"] == "unavailable"
    finally:
        private_redis.resume()
    for instance in instances:
        assert_ok(instance.chat())
        assert_ok(instance.chat(stream=True), stream=True)
        assert instance.healthz().json()["store"] == "ok"


# The default lease: a slot left taken would make the account busy for five minutes. A short
# one: the turn also tries to renew its lease while Redis hangs.
@pytest.mark.parametrize("lease", [{}, {"KIMI_LEASE_SECONDS": "5"}], ids=["default", "renewed"])
def test_a_turn_that_ends_while_redis_hangs_gives_its_slot_back_once_redis_is_back(
    start_instances, private_redis, account, emulator, lease
):
    first, second = start_instances(
        [account.refresh_token], redis=private_redis, KIMI_MAX_CONCURRENT_PER_ACCOUNT="1", **lease
    )
    emulator.state.add_fault("slow", seconds=SHORT_FRAME_SECONDS)
    stream = first.chat(LONG_PROMPT, stream=True)
    pieces = stream.iter_content(chunk_size=None)
    head = next(pieces)  # the turn holds the account's only slot
    private_redis.pause()
    try:
        # Kimi's answer does not need Redis: it reaches the client whole.
        body = head + b"".join(pieces)
    finally:
        private_redis.resume()
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == REPLY_PREFIX + LONG_PROMPT
    deadline = time.monotonic() + HANG_SECONDS  # far shorter than the default lease
    while (answer := second.chat()).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert assert_ok(answer) == REPLY_PREFIX + "hi"


def test_a_rotation_that_redis_cannot_take_at_once_is_not_lost(
    start_instances, private_redis, account, emulator, monkeypatch
):
    first, second = start_instances([account.refresh_token], redis=private_redis)
    hang = hang_redis_after(emulator.state.refresh, private_redis, resume_after=REDIS_HANG_SECONDS)
    monkeypatch.setattr(emulator.state, "refresh", hang)
    try:
        first.chat()  # refreshes; its answer depends on how long Redis hangs
    finally:
        private_redis.resume()
    monkeypatch.undo()
    for instance in (first, second, first):
        assert assert_ok(instance.chat()) == REPLY_PREFIX + "hi"
    assert {c["status"] for c in refreshes(emulator, "web")} == {200}


def test_a_rotation_redis_takes_only_after_a_long_outage_is_kept_and_written_then(
    make_settings, private_redis, account, emulator, monkeypatch
):
    monkeypatch.setattr(accounts_module, "ROTATION_SAVE_SECONDS", 0.0)  # at once to memory
    settings = make_settings(state_url=private_redis.url, state_timeout=float(STATE_TIMEOUT))
    accounts = KimiService(settings).accounts
    credential = Credential.parse(account.refresh_token)
    spend = emulator.state.refresh
    monkeypatch.setattr(emulator.state, "refresh", hang_redis_after(spend, private_redis))
    with pytest.raises(StateStoreUnavailable):
        accounts.session(credential)  # Kimi rotated the token; Redis could not take it
    monkeypatch.setattr(emulator.state, "refresh", spend)
    private_redis.resume()
    stored = f"refresh_token:{credential.account_id}"
    assert wait_until(lambda: accounts.store.get(stored) is not None, HANG_SECONDS)
    # The token written is the live one: another process refreshes with it.
    other = KimiService(settings).accounts
    other.invalidate(credential)
    assert other.session(credential)[1] is True
    assert {c["status"] for c in refreshes(emulator, "web")} == {200}


def hang_redis_after(spend, redis_server, resume_after: float | None = None):
    """The emulator's refresh, after which Redis stops answering: Kimi has rotated the token
    (the old one is dead) when the service comes to store it."""

    def spend_then_hang(token: str, revoke: bool = True):
        issued = spend(token, revoke)
        redis_server.pause()
        if resume_after is not None:
            threading.Timer(resume_after, redis_server.resume).start()
        return issued

    return spend_then_hang


def test_a_lock_whose_release_redis_missed_is_free_once_redis_is_back(private_redis):
    store = open_store(private_redis.url, redis_prefix=f"lock-{uuid.uuid4().hex}:", timeout=0.5)
    with store_lock(store, "refresh:a", ttl=HANG_SECONDS):
        private_redis.pause()  # the release at the end of the block fails
    time.sleep(REDIS_HANG_SECONDS)
    private_redis.resume()
    # Well within the ttl: the lock was given back when Redis answered again.
    with store_lock(store, "refresh:a", wait=HANG_SECONDS / 2):
        pass


# A killed instance


def test_a_killed_instances_slot_on_an_account_runs_out_after_the_lease(
    start_instances, account, emulator
):
    first, second = start_instances(
        [account.refresh_token],
        KIMI_MAX_CONCURRENT_PER_ACCOUNT="1",
        KIMI_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    emulator.state.add_fault("slow", seconds=SLOW_FRAME_SECONDS)
    stream = first.chat(LONG_PROMPT, stream=True)
    assert stream.status_code == 200
    pieces = stream.iter_content(chunk_size=None)
    next(pieces)  # the turn runs, holding the account's only slot
    time.sleep(LEASE_SECONDS * 1.5)  # longer than a lease: a live turn keeps renewing its own
    next(pieces)
    busy = second.chat()
    assert busy.status_code == 429, busy.text
    assert busy.json()["error"]["code"] == BUSY_CODE

    first.kill()  # mid-stream, with the slot taken and never given back
    stream.close()
    deadline = time.monotonic() + HANG_SECONDS
    while (answer := second.chat()).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert assert_ok(answer) == REPLY_PREFIX + "hi"


# The compose files: docker compose -f docker-compose.yml -f docker-compose.scale.yml ... --scale

RESET = object()  # Compose's !reset: the key is emptied, not merged


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it, with ``!reset``."""


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def merged_compose(*names: str) -> dict:
    """The compose files merged as Compose merges the keys they use: mappings key by key, lists
    appended, ``!reset`` emptying the key."""
    services: dict[str, dict] = {}
    for name in names:
        text = (ROOT / name).read_text()
        for service, keys in yaml.load(text, Loader=ComposeLoader)["services"].items():
            merged = services.setdefault(service, {})
            for key, value in keys.items():
                if value is RESET:
                    merged.pop(key, None)
                elif isinstance(value, dict):
                    merged[key] = {**merged.get(key, {}), **value}
                elif isinstance(value, list):
                    merged[key] = merged.get(key, []) + [
                        v for v in value if v not in merged.get(key, [])
                    ]
                else:
                    merged[key] = value
    return services


def host_port(mapping: str) -> str | None:
    """The host side of ``[ip:]host:container``; None when only the container port is given."""
    parts = str(mapping).split(":")
    return parts[-2] if len(parts) > 1 else None


@pytest.fixture
def scaled() -> dict:
    return merged_compose("docker-compose.yml", "docker-compose.scale.yml")


def test_scaled_replicas_publish_no_host_port_and_one_gateway_does(scaled):
    app = scaled["kimi-free-api"]
    assert not app.get("ports")  # --scale kimi-free-api=2 would clash on a fixed host port
    assert "container_name" not in app  # a fixed name cannot be scaled either
    published = [host_port(p) for s in scaled.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    assert [host_port(p) for p in scaled["gateway"]["ports"]] == ["8000"]
    assert "kimi-free-api" in scaled["gateway"]["depends_on"]


def test_scaled_replicas_share_the_compose_redis_with_its_password(scaled):
    app, redis_service = scaled["kimi-free-api"], scaled["redis"]
    assert "profiles" not in redis_service  # started without --profile
    assert "ports" not in redis_service  # reachable by the replicas only
    url = app["environment"]["KIMI_STATE_URL"]
    assert url.startswith("redis://:${REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")
    assert any("${REDIS_PASSWORD" in part for part in redis_service["command"])
    assert "redis" in app["depends_on"]


def gateway_directives() -> dict[str, list[str]]:
    """Each directive of the gateway's nginx file and the values it is given, in order."""
    directives: dict[str, list[str]] = defaultdict(list)
    for line in (ROOT / "deploy" / "compose-gateway.conf").read_text().splitlines():
        line = line.split("#", 1)[0].strip().rstrip(";")
        if line and not line.endswith(("{", "}")):
            name, _, value = line.partition(" ")
            directives[name].append(value.strip())
    return directives


def test_every_setting_in_the_env_file_reaches_the_replicas(scaled):
    # Not only the ones compose substitutes: KIMI_REDIS_PREFIX, KIMI_LEASE_SECONDS, ...
    assert {"path": ".env", "required": False} in scaled["kimi-free-api"]["env_file"]
    env_example = (ROOT / ".env.example").read_text()
    assert "KIMI_LEASE_SECONDS=" in env_example and "REDIS_PASSWORD=" in env_example


def test_the_gateway_spreads_requests_over_every_replica_and_streams(scaled):
    mount = next(v for v in scaled["gateway"]["volumes"] if "compose-gateway.conf" in v)
    assert mount.startswith("./deploy/compose-gateway.conf:/etc/nginx/conf.d/")
    conf = gateway_directives()
    container_port = scaled["gateway"]["ports"][0].split(":")[-1]
    assert conf["listen"] == [container_port]
    # Resolved per request through Docker's DNS: every replica, including later ones.
    assert conf["resolver"][0].startswith("127.0.0.11 ")
    assert conf["set"] == ["$kimi_free_api http://kimi-free-api:8000"]
    assert set(conf["proxy_pass"]) == {"$kimi_free_api"}
    assert conf["proxy_buffering"] == ["off"]
    defaults = Settings()
    read_timeout = int(conf["proxy_read_timeout"][0].removesuffix("s"))
    assert read_timeout > max(defaults.read_timeout, defaults.keepalive_seconds)
    assert conf["client_max_body_size"] == [f"{defaults.max_request_mb:g}m"]
