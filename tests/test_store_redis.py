"""The Redis state store against a real redis-server: prefix, expiry in Redis, configuration,
and outages (stopped, hung with SIGSTOP, wrong password) that fail fast with a 503 and heal.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid

import pytest
import yaml
from helpers import ROOT, chat, sse_events

from kimi import create_app
from kimi.errors import StateStoreUnavailable
from kimi.settings import Settings
from kimi.store import open_configured_store, open_store
from kimi.store.redis_store import RedisStore
from kimi.store.sqlite import SQLiteStore

# Short, so the outage tests run quickly; the default is a few seconds.
TIMEOUT = 0.5
# How long a call may take before the test calls it a hang (many times the timeout: no timing).
HANG = 30


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex}:"


def settle(call):
    """Run ``call`` in a thread: its result or error, and whether it returned at all."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except Exception as exc:  # handed to the test to assert on
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "the store call hung"
    return outcome


def test_every_key_lives_under_the_prefix(redis_server, prefix):
    store = open_store(redis_server.url, redis_prefix=prefix)
    store.put("refresh_token:a", "t")
    store.compare_and_set("lock:x", None, "owner", ttl=30)
    store.ping()
    with redis_server.client() as raw:
        keys = set(raw.scan_iter(match="*"))
    mine = {key for key in keys if key.startswith(prefix)}
    assert {prefix + "refresh_token:a", prefix + "lock:x"} <= mine
    assert not {key for key in keys if key.startswith("refresh_token") or key.startswith("lock")}


def test_two_prefixes_do_not_see_each_other(redis_server, prefix):
    open_store(redis_server.url, redis_prefix=prefix + "a:").put("k", "a")
    other = open_store(redis_server.url, redis_prefix=prefix + "b:")
    assert other.get("k") is None
    assert other.compare_and_set("k", None, "b") is True


def test_the_default_prefix_is_the_project_name(redis_server):
    store = open_store(redis_server.url)
    key = f"test-default-{uuid.uuid4().hex}"
    store.put(key, "v", ttl=60)
    with redis_server.client() as raw:
        assert raw.get("kimi-free-api:" + key) == "v"


def test_values_with_a_ttl_expire_in_redis_and_others_do_not(redis_server, prefix):
    store = open_store(redis_server.url, redis_prefix=prefix)
    store.put("access:a", "v", ttl=120)
    store.put("refresh_token:a", "v")
    store.compare_and_set("lock:a", None, "owner", ttl=30)
    with redis_server.client() as raw:
        assert 0 < raw.pttl(prefix + "access:a") <= 120_000
        assert raw.pttl(prefix + "refresh_token:a") == -1  # no expiry
        assert 0 < raw.pttl(prefix + "lock:a") <= 30_000


def test_health_checks_leave_only_expiring_keys(redis_server, prefix):
    store = open_store(redis_server.url, redis_prefix=prefix)
    store.ping()
    with redis_server.client() as raw:
        keys = list(raw.scan_iter(match=prefix + "*"))
        assert keys and all(raw.pttl(key) > 0 for key in keys)


def test_describe_shows_where_but_not_the_password(redis_server, prefix):
    store = open_store(redis_server.url, redis_prefix=prefix)
    assert store.describe() == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.PASSWORD not in store.describe()


# Configuration


@pytest.mark.parametrize(
    ("environ", "location"),
    [
        ({}, "./data/kimi-state.db"),
        ({"KIMI_STATE_PATH": "/srv/state.db"}, "/srv/state.db"),
        ({"REDIS_URL": "redis://:pw@host:6379/0"}, "redis://:pw@host:6379/0"),
        ({"KIMI_STATE_URL": "rediss://u:pw@host:6380/1"}, "rediss://u:pw@host:6380/1"),
        (
            {"KIMI_STATE_URL": "sqlite:///data/a.db", "REDIS_URL": "redis://host"},
            "sqlite:///data/a.db",
        ),
    ],
)
def test_the_state_location_comes_from_the_environment(environ, location):
    assert Settings.from_env(environ).state_location == location


@pytest.mark.parametrize("name", ["KIMI_STATE_URL", "REDIS_URL"])
def test_an_unknown_state_url_scheme_stops_the_start_without_echoing_it(name):
    with pytest.raises(ValueError, match=name) as caught:
        Settings.from_env({name: "postgres://user:hunter2@db/kimi"})
    assert "hunter2" not in str(caught.value)


def test_the_state_url_stays_out_of_the_settings_repr():
    settings = Settings.from_env({"REDIS_URL": "redis://:hunter2@host:6379/0"})
    assert "hunter2" not in repr(settings)


def test_prefix_and_timeout_come_from_the_environment(redis_server):
    settings = Settings.from_env(
        {
            "KIMI_STATE_URL": redis_server.url,
            "KIMI_REDIS_PREFIX": "mine:",
            "KIMI_STATE_TIMEOUT": "1.5",
        }
    )
    store = open_configured_store(settings)
    assert isinstance(store, RedisStore)
    assert (store.prefix, store.timeout) == ("mine:", 1.5)


def test_a_sqlite_url_with_three_slashes_names_a_relative_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/state.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "data/state.db"
    assert (tmp_path / "data" / "state.db").is_file()


def test_a_sqlite_url_with_four_slashes_names_an_absolute_file(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/state.db")  # tmp_path starts with the fourth
    assert store.path == f"{tmp_path}/state.db"


# Outages


@pytest.fixture
def outage_store(private_redis, prefix) -> RedisStore:
    return open_store(private_redis.url, redis_prefix=prefix, timeout=TIMEOUT)


def test_a_hung_redis_fails_the_call_with_a_503_instead_of_hanging(private_redis, outage_store):
    outage_store.put("k", "v")
    private_redis.pause()
    for call in (lambda: outage_store.get("k"), lambda: outage_store.put("k", "w")):
        error = settle(call).get("error")
        assert isinstance(error, StateStoreUnavailable)
        assert error.status == 503
        assert "no answer within 0.5 s" in error.message


def test_the_store_works_again_when_a_hung_redis_continues(private_redis, outage_store):
    outage_store.put("k", "v")
    private_redis.pause()
    assert "error" in settle(outage_store.ping)
    private_redis.resume()
    assert outage_store.get("k") == "v"
    assert outage_store.compare_and_set("k", "v", "w") is True


def test_a_stopped_redis_is_a_503_naming_the_cause(private_redis, outage_store):
    outage_store.put("k", "v")
    private_redis.stop()
    error = settle(lambda: outage_store.get("k")).get("error")
    assert isinstance(error, StateStoreUnavailable)
    assert "cannot connect" in error.message
    private_redis.start()
    outage_store.put("k", "again")
    assert outage_store.get("k") == "again"


def test_a_restarted_redis_costs_no_failed_call(private_redis, outage_store):
    outage_store.put("k", "v")
    private_redis.stop()
    private_redis.start()  # same port, empty: the pooled connection is dead
    assert outage_store.get("k") is None


def test_a_wrong_password_is_a_503_that_does_not_repeat_it(private_redis, prefix):
    url = private_redis.url.replace(private_redis.PASSWORD, "wrong-secret")
    store = open_store(url, redis_prefix=prefix, timeout=TIMEOUT)
    with pytest.raises(StateStoreUnavailable) as caught:
        store.get("k")
    assert "credentials" in caught.value.message
    assert "wrong-secret" not in caught.value.message


# Over HTTP


@pytest.fixture
def redis_settings(make_settings, private_redis, prefix) -> Settings:
    return make_settings(state_url=private_redis.url, redis_prefix=prefix, state_timeout=TIMEOUT)


def assert_store_503(response) -> None:
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "state_store_unavailable")
    assert "Redis" in error["message"]


def test_a_hung_redis_answers_503_json_then_recovers(redis_settings, private_redis, auth):
    client = create_app(redis_settings).test_client()
    assert chat(client, auth).status_code == 200
    private_redis.pause()
    assert_store_503(settle(lambda: chat(client, auth))["result"])
    stream = settle(lambda: chat(client, auth, stream=True))["result"]
    assert_store_503(stream)
    assert settle(lambda: client.get("/healthz"))["result"].status_code == 503
    private_redis.resume()
    assert chat(client, auth).status_code == 200
    streamed = chat(client, auth, stream=True)
    assert streamed.status_code == 200 and sse_events(streamed.data)[-1] == "[DONE]"
    assert client.get("/healthz").status_code == 200


def test_the_service_starts_while_redis_is_down_and_serves_once_it_is_up(
    redis_settings, private_redis, auth
):
    private_redis.stop()
    client = create_app(redis_settings).test_client()
    assert_store_503(chat(client, auth))
    private_redis.start()
    assert chat(client, auth).status_code == 200


def test_two_instances_share_the_rotated_refresh_token_through_redis(
    redis_settings, auth, emulator, tmp_path
):
    emulator.state.configure(access_ttl=2)  # never cached: every turn refreshes
    first = create_app(redis_settings).test_client()
    assert chat(first, auth).status_code == 200  # Kimi rotated the refresh token
    # Another host: its own disk, the same Redis.
    elsewhere = dataclasses.replace(redis_settings, state_path=str(tmp_path / "other.db"))
    response = chat(create_app(elsewhere).test_client(), auth)
    assert response.status_code == 200, response.get_json()


def test_compose_keeps_redis_opt_in_and_unpublished():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis_service = compose["services"]["redis"]
    assert redis_service["profiles"] == ["redis"]  # plain "docker compose up" leaves it out
    assert "ports" not in redis_service  # reachable by the service only, never the internet
    assert "--requirepass" in redis_service["command"]
    assert "KIMI_STATE_URL" in compose["services"]["kimi-free-api"]["environment"]
