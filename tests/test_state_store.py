"""The SQLite state store: values with expiry, compare-and-set, and a lock across processes."""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time

import pytest

from kimi.store import StoreError, store_lock
from kimi.store.sqlite import SQLiteStore

PROCESSES = 4
RACERS = 8
RACE_ROUNDS = 40
INCREMENTS = 25


@pytest.fixture
def store(tmp_path) -> SQLiteStore:
    return SQLiteStore(str(tmp_path / "state.db"))


def increment_under_lock(path: str, times: int) -> None:
    """Runs in a child process: read, pause, write back, under the shared lock."""
    store = SQLiteStore(path)
    for _ in range(times):
        with store_lock(store, "counter", wait=60):
            value = int(store.get("counter") or "0")
            time.sleep(0.001)  # widen the read-modify-write window a lost update needs
            store.put("counter", str(value + 1))


def test_put_then_get_returns_the_value(store):
    store.put("account:a", "token-1")
    assert store.get("account:a") == "token-1"


def test_missing_key_is_none(store):
    assert store.get("nothing") is None


def test_put_replaces_the_value(store):
    store.put("k", "old")
    store.put("k", "new")
    assert store.get("k") == "new"


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


def test_values_are_shared_between_store_instances_on_one_file(tmp_path):
    path = str(tmp_path / "state.db")
    SQLiteStore(path).put("k", "v")
    assert SQLiteStore(path).get("k") == "v"


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


def test_lock_wait_times_out_with_store_error(store):
    with store_lock(store, "busy"):
        with pytest.raises(StoreError):
            with store_lock(store, "busy", wait=0.1):
                pass


def test_lock_is_free_again_after_release(store):
    with store_lock(store, "x"):
        pass
    with store_lock(store, "x", wait=0.1):
        pass


def test_lock_of_a_dead_holder_frees_after_its_ttl(store):
    store.compare_and_set("lock:x", None, "dead-owner", ttl=0.05)
    with store_lock(store, "x", wait=2):
        pass


def test_lock_across_processes_loses_no_update(tmp_path):
    path = str(tmp_path / "state.db")
    SQLiteStore(path)  # create the file and table before the workers race
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=increment_under_lock, args=(path, INCREMENTS))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    assert SQLiteStore(path).get("counter") == str(PROCESSES * INCREMENTS)


def open_and_write(path: str, barrier, name: str) -> None:
    barrier.wait(30)  # every process opens the brand-new file at the same moment
    SQLiteStore(path).put(name, "ok")


def test_workers_opening_a_new_state_file_at_once_all_start(tmp_path):
    # gunicorn boots its workers together, each creating the store on a file none has made yet.
    # fork starts them fast enough to collide; many rounds make a lost race near certain.
    context = multiprocessing.get_context("fork")
    failed = []
    for round_number in range(RACE_ROUNDS):
        path = str(tmp_path / f"state-{round_number}.db")
        barrier = context.Barrier(RACERS)
        workers = [
            context.Process(target=open_and_write, args=(path, barrier, f"w{index}"))
            for index in range(RACERS)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        failed += [w.exitcode for w in workers if w.exitcode != 0]
    assert failed == []
    assert SQLiteStore(path).get(f"w{RACERS - 1}") == "ok"


def test_unwritable_folder_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    store = SQLiteStore(str(not_a_folder / "state.db"))
    assert store.path.startswith(str(tmp_path / "tmp"))
    store.put("k", "v")
    assert store.get("k") == "v"


def test_memory_path_is_refused():
    with pytest.raises(ValueError):
        SQLiteStore(":memory:")
