"""The state store contract, run against every backend: the SQLite file and a real Redis.

Values with expiry, compare-and-set (atomic across processes), delete, ping, and the lock built
on them. Backend-specific failure modes live in test_store_sqlite.py and test_store_redis.py.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from kimi.errors import StateStoreUnavailable
from kimi.store import DEFAULT_REDIS_PREFIX, LockTimeout, StateStore, open_store, store_lock
from kimi.upstream.base import Session
from kimi.upstream.web_upload import UploadedFiles

BACKENDS = ("sqlite", "redis")
PROCESSES = 4
INCREMENTS = 25
CAS_RACERS = 8
CAS_ROUNDS = 20


@dataclass(frozen=True)
class Backend:
    """Where a store lives, as plain strings a child process can take too."""

    name: str
    location: str
    prefix: str = DEFAULT_REDIS_PREFIX

    def open(self) -> StateStore:
        return open_store(self.location, redis_prefix=self.prefix)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "state.db"))
    server = request.getfixturevalue("redis_server")
    # One server for the session; each test keeps to its own prefix.
    return Backend("redis", server.url, prefix=f"test-{uuid.uuid4().hex}:")


@pytest.fixture
def store(backend) -> StateStore:
    return backend.open()


def increment_under_lock(backend: Backend, times: int) -> None:
    """Runs in a child process: read, pause, write back, under the shared lock."""
    store = backend.open()
    for _ in range(times):
        with store_lock(store, "counter", wait=60):
            value = int(store.get("counter") or "0")
            time.sleep(0.001)  # widen the read-modify-write window a lost update needs
            store.put("counter", str(value + 1))


def claim_at_once(backend: Backend, barrier, name: str, results) -> None:
    """Runs in a child process: each round, every racer claims the same absent key at once."""
    store = backend.open()
    for round_number in range(CAS_ROUNDS):
        barrier.wait(30)
        won = store.compare_and_set(f"claim-{round_number}", None, name)
        results.put((round_number, name, won))


def test_put_then_get_returns_the_value(store):
    store.put("account:a", "token-1")
    assert store.get("account:a") == "token-1"


def test_missing_key_is_none(store):
    assert store.get("nothing") is None


def test_put_replaces_the_value(store):
    store.put("k", "old")
    store.put("k", "new")
    assert store.get("k") == "new"


def test_values_keep_every_character(store):
    value = 'jwt.eyJ9.sig 中文 ✓ "quoted" \' -- ; DROP TABLE kv;' + "x" * 10_000
    store.put("k", value)
    assert store.get("k") == value


def test_delete_removes_the_value(store):
    store.put("k", "v")
    store.delete("k")
    assert store.get("k") is None


def test_delete_of_a_missing_key_is_harmless(store):
    store.delete("never-there")
    assert store.get("never-there") is None


def test_value_expires_after_its_ttl(store):
    store.put("short", "v", ttl=0.05)
    store.put("long", "v", ttl=60)
    store.put("forever", "v")
    time.sleep(0.15)
    assert store.get("short") is None
    assert store.get("long") == "v"
    assert store.get("forever") == "v"


def test_putting_without_ttl_keeps_a_value_that_had_one(store):
    store.put("k", "v", ttl=0.05)
    store.put("k", "v2")
    time.sleep(0.15)
    assert store.get("k") == "v2"


def test_values_are_shared_between_store_instances(backend):
    backend.open().put("k", "v")
    assert backend.open().get("k") == "v"


def test_compare_and_set_with_expected_none_creates_an_absent_key(store):
    assert store.compare_and_set("k", None, "v") is True
    assert store.get("k") == "v"


def test_compare_and_set_with_expected_none_fails_when_present(store):
    store.put("k", "v")
    assert store.compare_and_set("k", None, "other") is False
    assert store.get("k") == "v"


def test_compare_and_set_replaces_the_expected_value(store):
    store.put("k", "old")
    assert store.compare_and_set("k", "old", "new") is True
    assert store.get("k") == "new"


@pytest.mark.parametrize("current", [None, "someone-else"])
def test_compare_and_set_fails_when_the_value_differs(store, current):
    if current is not None:
        store.put("k", current)
    assert store.compare_and_set("k", "expected", "new") is False
    assert store.get("k") == current


def test_compare_and_set_with_an_empty_string_is_not_absence(store):
    assert store.compare_and_set("k", "", "v") is False
    store.put("k", "")
    assert store.compare_and_set("k", None, "v") is False
    assert store.compare_and_set("k", "", "v") is True
    assert store.get("k") == "v"


def test_compare_and_set_with_value_none_deletes(store):
    store.put("k", "v")
    assert store.compare_and_set("k", "v", None) is True
    assert store.get("k") is None


def test_compare_and_set_treats_an_expired_value_as_absent(store):
    store.put("k", "stale", ttl=0.05)
    time.sleep(0.15)
    assert store.compare_and_set("k", None, "fresh") is True
    assert store.get("k") == "fresh"


def test_compare_and_set_applies_its_ttl(store):
    assert store.compare_and_set("k", None, "v", ttl=0.05)
    time.sleep(0.15)
    assert store.get("k") is None


def test_compare_and_set_across_processes_lets_exactly_one_claim_win(backend):
    context = multiprocessing.get_context("spawn")
    backend.open()  # create the file (or check the server) before the racers start
    barrier, results = context.Barrier(CAS_RACERS), context.Queue()
    racers = [
        context.Process(target=claim_at_once, args=(backend, barrier, f"r{index}", results))
        for index in range(CAS_RACERS)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=120) for _ in range(CAS_RACERS * CAS_ROUNDS)]
    for racer in racers:
        racer.join(30)
    assert [racer.exitcode for racer in racers] == [0] * CAS_RACERS
    store = backend.open()
    for round_number in range(CAS_ROUNDS):
        winners = [name for r, name, won in outcomes if r == round_number and won]
        assert len(winners) == 1
        assert store.get(f"claim-{round_number}") == winners[0]


def test_ping_writes_and_reads_back(store):
    assert store.ping() is True


def test_describe_names_the_backend_but_no_password(store, backend):
    description = store.describe()
    assert description.startswith(backend.name)
    assert "password" not in description


def test_lock_excludes_another_thread_until_released(store):
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def holder():
        with store_lock(store, "refresh:a"):
            entered.set()
            release.wait(5)
            order.append("holder released")

    thread = threading.Thread(target=holder)
    thread.start()
    assert entered.wait(5)
    waiter_done = threading.Event()

    def waiter():
        with store_lock(store, "refresh:a"):
            order.append("waiter entered")
        waiter_done.set()

    other = threading.Thread(target=waiter)
    other.start()
    assert not waiter_done.wait(0.2)  # still excluded while the holder holds the lock
    release.set()
    thread.join(5)
    other.join(5)
    assert order == ["holder released", "waiter entered"]


def test_lock_wait_times_out_with_a_503(store):
    with store_lock(store, "busy"):
        with pytest.raises(LockTimeout) as caught:
            with store_lock(store, "busy", wait=0.1):
                pass
    assert isinstance(caught.value, StateStoreUnavailable)
    assert caught.value.status == 503


def test_lock_is_free_again_after_release(store):
    with store_lock(store, "x"):
        pass
    with store_lock(store, "x", wait=0.1):
        pass


def test_lock_of_a_dead_holder_frees_after_its_ttl(store):
    store.compare_and_set("lock:x", None, "dead-owner", ttl=0.05)
    with store_lock(store, "x", wait=2):
        pass


def test_lock_across_processes_loses_no_update(backend):
    backend.open()  # create the file and table before the workers race
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=increment_under_lock, args=(backend, INCREMENTS))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    assert backend.open().get("counter") == str(PROCESSES * INCREMENTS)


# What the web adapter keeps in the store: uploaded file ids by account and content hash.


def test_uploaded_file_ids_are_kept_per_account_and_shared_between_instances(backend):
    alice, bob = Session("a", user_id="alice"), Session("b", user_id="bob")
    UploadedFiles(backend.open(), ttl=60).put(alice, "sha-1", "file-1")
    files = UploadedFiles(backend.open(), ttl=60)
    assert files.get(alice, "sha-1") == "file-1"
    assert files.get(bob, "sha-1") is None
    assert files.get(alice, "sha-2") is None


def test_uploaded_file_ids_expire(store):
    files = UploadedFiles(store, ttl=0.05)
    files.put(Session("a", user_id="alice"), "sha-1", "file-1")
    time.sleep(0.15)
    assert files.get(Session("a", user_id="alice"), "sha-1") is None
