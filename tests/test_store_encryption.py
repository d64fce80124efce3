"""STATE_ENCRYPTION_KEY: values are Fernet-encrypted at rest in either store, read back in clear."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from cryptography.fernet import Fernet
from helpers import chat

from kimi import create_app
from kimi.errors import StateStoreUnavailable
from kimi.settings import Settings
from kimi.store import open_store, store_lock

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJyZWZyZXNoIn0.c2lnbmF0dXJl"


@pytest.fixture(params=["sqlite", "redis"])
def location(request, tmp_path) -> tuple[str, str]:
    """``(location, prefix)`` of an empty store of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db"), ""
    return request.getfixturevalue("redis_server").url, f"test-{uuid.uuid4().hex}:"


def open_with(location: tuple[str, str], key: str = ""):
    return open_store(location[0], redis_prefix=location[1] or "x:", encryption_key=key)


def test_values_are_stored_encrypted_and_read_back_in_clear(location):
    open_with(location, KEY).put("refresh_token:a", TOKEN)
    assert open_with(location, KEY).get("refresh_token:a") == TOKEN
    at_rest = open_with(location).get("refresh_token:a")
    assert TOKEN not in at_rest
    assert Fernet(KEY).decrypt(at_rest.encode()).decode() == TOKEN


def test_a_value_written_before_encryption_is_still_read(location):
    open_with(location).put("refresh_token:a", TOKEN)
    assert open_with(location, KEY).get("refresh_token:a") == TOKEN


def test_the_old_key_listed_second_still_decrypts_after_a_rotation(location):
    open_with(location, OTHER_KEY).put("k", "written with the old key")
    rotated = open_with(location, f"{KEY},{OTHER_KEY}")
    assert rotated.get("k") == "written with the old key"
    rotated.put("k2", "new")
    assert Fernet(KEY).decrypt(open_with(location).get("k2").encode()) == b"new"


def test_a_value_the_key_cannot_decrypt_is_a_503_naming_the_key(location):
    open_with(location, OTHER_KEY).put("k", "secret")
    with pytest.raises(StateStoreUnavailable) as caught:
        open_with(location, KEY).get("k")
    assert caught.value.status == 503
    assert "STATE_ENCRYPTION_KEY" in caught.value.message
    assert "secret" not in caught.value.message


def test_locks_work_on_an_encrypted_store(location):
    store = open_with(location, KEY)
    with store_lock(store, "x"):
        with pytest.raises(StateStoreUnavailable):
            with store_lock(store, "x", wait=0.1):
                pass
    with store_lock(store, "x", wait=0.1):
        pass


@pytest.mark.parametrize("key", ["not-a-key", ",", "c2hvcnQ="])
def test_a_malformed_key_is_refused_at_start(tmp_path, key):
    with pytest.raises(ValueError, match="STATE_ENCRYPTION_KEY"):
        open_store(str(tmp_path / "state.db"), encryption_key=key)


def test_the_key_is_read_from_the_environment_and_kept_out_of_the_settings_repr():
    settings = Settings.from_env({"STATE_ENCRYPTION_KEY": KEY})
    assert settings.state_encryption_key == KEY
    assert KEY not in repr(settings)


def test_no_kimi_token_is_readable_in_the_state_file(make_settings, auth, account, tmp_path):
    settings = make_settings(state_encryption_key=KEY)
    assert chat(create_app(settings).test_client(), auth).status_code == 200
    with sqlite3.connect(settings.state_path) as db:
        values = [value for (value,) in db.execute("SELECT value FROM kv")]
    assert not any(account.refresh_token in v or "eyJ" in v for v in values)
    assert any(v.startswith("gAAAAA") for v in values)
    restarted = create_app(settings)  # the rotated token is read back through the key
    assert chat(restarted.test_client(), auth).status_code == 200
