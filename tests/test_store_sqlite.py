"""The SQLite state file when the disk misbehaves: deleted, read-only, junk, and who may read it.

Each failure is a 503 naming its cause (never a 500), and the store heals by itself once the
cause is gone; a file deleted while running is made again with the entries still held.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from helpers import chat

from kimi import create_app
from kimi.errors import StateStoreUnavailable
from kimi.store.sqlite import SQLiteStore

RACERS = 8
RACE_ROUNDS = 40
NOBODY = 65534
JUNK = b"this is not a database\n" * 200
COMPANIONS = ("-wal", "-shm")


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "state.db")


def state_files(path: str) -> list[str]:
    return [name for name in (path, *(path + s for s in COMPANIONS)) if os.path.exists(name)]


def delete_state(path: str, which: str) -> None:
    for name in state_files(path) if which == "all files" else [path]:
        os.unlink(name)


def mode(name: str) -> int:
    return stat.S_IMODE(os.stat(name).st_mode)


# Deleted while running (issue 14, row 6)


@pytest.mark.parametrize("which", ["the database file", "all files"])
def test_a_state_file_deleted_while_running_is_made_again_with_its_entries(path, which):
    store = SQLiteStore(path)
    store.put("refresh_token:a", "rotated")
    store.put("expired", "gone", ttl=0.001)
    delete_state(path, which)
    assert store.get("refresh_token:a") == "rotated"
    store.put("after", "written")
    restarted = SQLiteStore(path)  # a new process: reads the file on disk only
    assert restarted.get("refresh_token:a") == "rotated"
    assert restarted.get("after") == "written"
    assert restarted.get("expired") is None


def serve_store(path: str, conn) -> None:
    """Runs in a child process: a second worker doing what the parent asks, over a pipe."""
    store = SQLiteStore(path)
    for verb, key, value in iter(conn.recv, None):
        conn.send(store.put(key, value) if verb == "put" else store.get(key))


@pytest.mark.parametrize("which", ["the database file", "all files"])
def test_workers_still_share_one_state_after_the_file_is_deleted(path, which):
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    worker = context.Process(target=serve_store, args=(path, child_end))
    worker.start()

    def ask(*request):
        parent_end.send(request)
        return parent_end.recv()

    try:
        store = SQLiteStore(path)
        ask("put", "from-worker", "1")
        delete_state(path, which)
        store.put("from-parent", "2")
        ask("put", "from-worker-after", "3")
        assert ask("get", "from-parent", None) == "2"
        assert store.get("from-worker-after") == "3"
        assert store.get("from-worker") == "1"
    finally:
        parent_end.send(None)
        worker.join(30)
    restarted = SQLiteStore(path)
    assert [restarted.get(k) for k in ("from-worker", "from-parent", "from-worker-after")] == [
        "1",
        "2",
        "3",
    ]


def test_a_deleted_state_file_keeps_the_rotated_token_over_a_restart(make_settings, auth, emulator):
    emulator.state.configure(access_ttl=2)  # never cached: every turn refreshes
    settings = make_settings()
    client = create_app(settings).test_client()
    assert chat(client, auth).status_code == 200  # Kimi rotated the refresh token
    delete_state(settings.state_path, "all files")
    assert chat(client, auth).status_code == 200
    assert client.get("/healthz").status_code == 200
    restarted = create_app(settings).test_client()
    response = chat(restarted, auth)
    assert response.status_code == 200, response.get_json()


def test_a_state_file_replaced_by_an_empty_database_gets_its_table_back(path):
    store = SQLiteStore(path)
    store.put("k", "v")
    sqlite3.connect(path + ".new").close()
    os.replace(path + ".new", path)
    assert store.get("k") is None  # the new file is the truth, without a "no such table"
    store.put("k", "again")
    assert SQLiteStore(path).get("k") == "again"


def test_a_dropped_table_is_one_503_then_made_again(path):
    store = SQLiteStore(path)
    store.put("k", "v")
    with sqlite3.connect(path) as other:
        other.execute("DROP TABLE kv")
    with pytest.raises(StateStoreUnavailable, match="no such table"):
        store.get("k")
    store.put("k", "again")
    assert store.get("k") == "again"


# Junk (row 8)


def overwrite_in_place(path: str) -> None:
    for name in state_files(path):
        with open(name, "r+b") as file:
            file.write(JUNK)
            file.truncate()


def replace_with_junk(path: str) -> None:
    Path(path + ".new").write_bytes(JUNK)
    os.replace(path + ".new", path)


@pytest.mark.parametrize("spoil", [overwrite_in_place, replace_with_junk])
def test_a_state_file_turned_to_junk_is_a_503_naming_the_cause(path, spoil):
    store = SQLiteStore(path)
    store.put("k", "v")
    spoil(path)
    for _ in range(2):
        with pytest.raises(StateStoreUnavailable) as caught:
            store.get("k")
        assert caught.value.status == 503
        assert "file is not a database" in caught.value.message
    with pytest.raises(StateStoreUnavailable):
        store.ping()


def test_the_store_works_again_once_a_good_file_is_back(path, tmp_path):
    store = SQLiteStore(path)
    store.put("k", "v")
    backup = tmp_path / "backup.db"
    with sqlite3.connect(path) as source, sqlite3.connect(backup) as target:
        source.backup(target)
    replace_with_junk(path)
    with pytest.raises(StateStoreUnavailable):
        store.get("k")
    os.replace(backup, path)
    assert store.get("k") == "v"
    store.put("k2", "v2")
    assert SQLiteStore(path).get("k2") == "v2"


def test_a_junk_state_file_answers_503_in_openai_shape(make_settings, auth):
    settings = make_settings()
    client = create_app(settings).test_client()
    replace_with_junk(settings.state_path)
    response = chat(client, auth)
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["type"] == "service_unavailable"
    assert error["code"] == "state_store_unavailable"
    assert "file is not a database" in error["message"]
    assert settings.state_path not in error["message"]
    assert client.get("/healthz").status_code == 503


def test_a_state_file_that_is_junk_at_start_does_not_stop_the_service(make_settings, auth):
    settings = make_settings()
    Path(settings.state_path).write_bytes(JUNK)
    client = create_app(settings).test_client()
    assert chat(client, auth).status_code == 503
    os.unlink(settings.state_path)
    assert chat(client, auth).status_code == 200


# Read-only, then writable again (row 7)


def attempt(call) -> list:
    try:
        return ["ok", call()]
    except StateStoreUnavailable as exc:
        return [exc.status, exc.message]


def read_only_scenario(folder: str, report) -> None:
    """Runs in a forked child, as nobody when the tests run as root: permissions bind there."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    path = os.path.join(folder, "state.db")
    first = SQLiteStore(path)
    first.put("k", "v")
    del first
    gc.collect()  # the last connection closes: no -wal or -shm is left to write through
    os.chmod(folder, 0o500)
    store = SQLiteStore(path)  # a worker starting, or reconnecting, while the folder is read-only
    read_only = [attempt(lambda: store.get("k")), attempt(lambda: store.put("k2", "w"))]
    os.chmod(folder, 0o700)
    writable = [attempt(lambda: store.get("k")), attempt(lambda: store.put("k2", "w"))]
    report.send([store.path, read_only, writable, attempt(lambda: store.get("k2"))])


@pytest.fixture
def shared_folder():
    """A folder the unprivileged child owns (pytest's own tmp_path is root's alone)."""
    folder = tempfile.mkdtemp(prefix="kimi-store-test-")
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    yield folder
    os.chmod(folder, 0o700)
    shutil.rmtree(folder)


def test_a_read_only_state_folder_is_a_503_until_writable_again(shared_folder):
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=read_only_scenario, args=(shared_folder, child_end))
    child.start()
    assert parent_end.poll(60)
    path, read_only, writable, then = parent_end.recv()
    child.join(30)
    assert path == os.path.join(shared_folder, "state.db")  # not a fallback in /tmp
    for status, message in read_only:
        assert status == 503
        assert "readonly" in message
    assert writable == [["ok", "v"], ["ok", None]]
    assert then == ["ok", "w"]


# Permissions and the temp fallback (row 14)


def test_state_files_are_readable_by_their_owner_only(path):
    SQLiteStore(path).put("k", "v")
    assert len(state_files(path)) == 3
    assert {name: mode(name) for name in state_files(path)} == {
        name: 0o600 for name in state_files(path)
    }


def test_world_readable_state_files_of_an_older_version_are_tightened(path):
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)")
        held_open = sqlite3.connect(path)  # keeps -wal and -shm in place
        held_open.execute("SELECT 1 FROM kv").fetchall()
    for name in state_files(path):
        os.chmod(name, 0o644)
    SQLiteStore(path).put("k", "v")
    assert [mode(name) for name in state_files(path)] == [0o600] * 3
    held_open.close()


@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """The temp directory the fallback goes to, and a state path whose folder cannot exist."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "a-file").write_text("")
    return tmp_path / "tmp"


@pytest.fixture
def unusable_path(tmp_path) -> str:
    return str(tmp_path / "a-file" / "state.db")


def test_unwritable_folder_falls_back_to_a_private_temp_folder(temp_dir, unusable_path):
    store = SQLiteStore(unusable_path)
    assert store.path == str(temp_dir / "kimi-free-api" / "state.db")
    store.put("k", "v")
    assert store.get("k") == "v"
    assert mode(str(temp_dir / "kimi-free-api")) == 0o700
    assert mode(store.path) == 0o600


def test_a_fallback_folder_of_ours_left_open_is_tightened(temp_dir, unusable_path):
    (temp_dir / "kimi-free-api").mkdir(parents=True, mode=0o755)
    os.chmod(temp_dir / "kimi-free-api", 0o755)
    SQLiteStore(unusable_path)
    assert mode(str(temp_dir / "kimi-free-api")) == 0o700


def test_a_fallback_folder_others_can_write_is_refused(temp_dir, unusable_path):
    (temp_dir / "kimi-free-api").mkdir(parents=True)
    os.chmod(temp_dir / "kimi-free-api", 0o777)
    with pytest.raises(StateStoreUnavailable, match="writable by other users"):
        SQLiteStore(unusable_path)


def test_a_symlink_in_place_of_the_fallback_folder_is_refused(temp_dir, unusable_path, tmp_path):
    temp_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (temp_dir / "kimi-free-api").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateStoreUnavailable, match="another user"):
        SQLiteStore(unusable_path)
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")
def test_a_fallback_folder_another_user_made_is_refused(temp_dir, unusable_path):
    (temp_dir / "kimi-free-api").mkdir(parents=True, mode=0o700)
    os.chown(temp_dir / "kimi-free-api", NOBODY, NOBODY)
    with pytest.raises(StateStoreUnavailable, match="another user"):
        SQLiteStore(unusable_path)
    assert list((temp_dir / "kimi-free-api").iterdir()) == []


def test_memory_path_is_refused():
    with pytest.raises(ValueError):
        SQLiteStore(":memory:")


# Many workers at once


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


def test_no_writable_folder_at_all_is_a_clear_error(tmp_path, monkeypatch, unusable_path):
    (tmp_path / "a-file").write_text("")  # the state folder cannot be made
    (tmp_path / "not-a-dir").write_text("")  # nor the temp directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-a-dir"))
    with pytest.raises(StateStoreUnavailable, match="KIMI_STATE_PATH"):
        SQLiteStore(unusable_path)
