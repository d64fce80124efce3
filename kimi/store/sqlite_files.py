"""The SQLite state file on disk: where it lives, who may read it, and noticing it was replaced.

The file holds live Kimi tokens, so it and its ``-wal``/``-shm`` companions are the owner's alone
(0600), and the temp-directory fallback is a folder only this user can enter (0700).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import tempfile
from collections.abc import Iterator

from ..errors import StateStoreUnavailable

log = logging.getLogger(__name__)

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
FALLBACK_FOLDER_NAME = "kimi-free-api"
# SQLite's companions of a database in WAL mode; they belong to the file that made them.
COMPANION_SUFFIXES = ("-wal", "-shm")


def state_file_path(path: str) -> str:
    """The state file's path; where there is none and its folder cannot be written (a read-only
    deployment), one in a private temp folder.

    An existing file is always kept, even in a folder that is read-only for now: it holds the
    rotated refresh tokens, and a new empty file elsewhere would silently lose them. Calls then
    fail with a 503 until the folder is writable again.
    """
    if path == ":memory:":
        raise ValueError("an in-memory SQLite store is not shared between threads; use a file")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) or _is_writable_folder(folder):
        return path
    try:
        fallback = os.path.join(private_temp_folder(), os.path.basename(path))
    except OSError as exc:
        raise StateStoreUnavailable(
            f"Neither the state folder {folder} nor the temp directory can be written "
            f"({exc.strerror}). Set KIMI_STATE_PATH to a writable folder, or KIMI_STATE_URL."
        ) from exc
    log.warning("State folder %s is not writable; using %s (lost on restart)", folder, fallback)
    return fallback


def private_temp_folder() -> str:
    """``<tmp>/kimi-free-api``, made 0700; one another user made or can write is refused."""
    folder = os.path.join(tempfile.gettempdir(), FALLBACK_FOLDER_NAME)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, PRIVATE_FOLDER_MODE)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise StateStoreUnavailable(
            f"The fallback state folder {folder} belongs to another user (or is not a folder); "
            "refusing to keep tokens there. Set KIMI_STATE_PATH to a writable folder."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateStoreUnavailable(
            f"The fallback state folder {folder} is writable by other users; refusing to keep "
            "tokens there. Remove it or set KIMI_STATE_PATH to a writable folder."
        )
    if stat.S_IMODE(info.st_mode) != PRIVATE_FOLDER_MODE:
        os.chmod(folder, PRIVATE_FOLDER_MODE)
    return folder


def make_private_file(path: str) -> None:
    """Create ``path`` 0600 if it is missing (SQLite gives its companions the same mode).

    Never opens an existing file: closing any descriptor of a file drops every POSIX lock this
    process holds on it, including those of SQLite connections already open on it.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), PRIVATE_FOLDER_MODE, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))


def restrict_to_owner(path: str) -> None:
    """Take away group and other access from the file and its companions, where we own them.

    Files written by earlier versions were 0644; they are tightened as they are opened.
    """
    for name in (path, *(path + suffix for suffix in COMPANION_SUFFIXES)):
        try:
            info = os.stat(name)
        except FileNotFoundError:
            continue
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.chmod(name, PRIVATE_FILE_MODE)


def file_identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file now at ``path``, or None when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)


def companion_identities(path: str) -> dict[str, tuple[int, int] | None]:
    """The identity of each companion file now, by suffix."""
    return {suffix: file_identity(path + suffix) for suffix in COMPANION_SUFFIXES}


def remove_companions(path: str, only: dict[str, tuple[int, int] | None] | None = None) -> None:
    """Delete the ``-wal``/``-shm`` files of a database file that was deleted or replaced.

    A new file must not start with them: SQLite would read the old file's pages through them
    (a file replaced by junk would even look fine). With ``only``, a companion is deleted only
    while it is still the very file named there, the one the old connection used; companions a
    sibling process made for the new file since are left alone. Call under ``folder_lock``.
    """
    for suffix in COMPANION_SUFFIXES:
        name = path + suffix
        if only is not None and (only[suffix] is None or file_identity(name) != only[suffix]):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def folder_lock(path: str) -> Iterator[None]:
    """An exclusive lock between processes on the state file's folder, for (re)opening it.

    The folder, not a lock file beside the state file, so deleting every file in it cannot
    split the lock in two.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, PRIVATE_FOLDER_MODE, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _is_writable_folder(folder: str) -> bool:
    try:
        os.makedirs(folder, PRIVATE_FOLDER_MODE, exist_ok=True)
    except OSError:
        return False  # read-only file system (Vercel, some containers): fall back
    return os.access(folder, os.W_OK)
