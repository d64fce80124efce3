"""Kimi's upload flow under the shipped server (gunicorn's gevent worker, the Procfile's command):
a file larger than the in-memory spool goes up whole, and turns whose upload fails give back
every temporary file they opened, in the worker itself."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
import requests
from flask import Flask, Response
from helpers import LiveServer

from kimi.files.sources import SPOOL_IN_MEMORY_BYTES

SIZE = SPOOL_IN_MEMORY_BYTES + 2 * 1024 * 1024
BODY = b"%PDF-1.4\n" + bytes(range(256)) * ((SIZE - 9) // 256)
SERVER_ENV = {"WEB_CONCURRENCY": "1", "ALLOW_PRIVATE_FILE_URLS": "1", "FILE_PARSE_TIMEOUT": "1"}
# fault -> the status of a turn meeting it (streamed, an error after the start is in the body)
FAILURES = {"parse_failed": 502, "parse_slow": 504, "upload_limit": 429}
FAILURES["error_end:unknown:after_text"] = 502


@pytest.fixture(scope="module")
def big_pdf_url():
    files = Flask("gunicorn-upload-source")
    files.add_url_rule("/big.pdf", "big", lambda: Response(BODY, mimetype="application/pdf"))
    with LiveServer(files) as server:
        yield server.url + "/big.pdf"


def worker_pid(master_pid: int) -> int:
    (child,) = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return int(child)


def spooled_files(pid: int) -> list[str]:
    """The process's open, unlinked files in the temporary folder: spools, heartbeat files."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:  # closed while we looked
            continue
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            found.append(target)
    return found


def ask(url: str, token: str, file_url: str, *, stream: bool = False) -> requests.Response:
    part = {"type": "file", "file_url": {"url": file_url}}
    content = [{"type": "text", "text": "Read it"}, part]
    return requests.post(
        url + "/v1/chat/completions",
        json={
            "model": "kimi",
            "stream": stream,
            "messages": [{"role": "user", "content": content}],
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


@pytest.mark.parametrize("gunicorn_server", [SERVER_ENV], indirect=True)
def test_uploads_under_the_gevent_worker_leave_no_temporary_file_open(
    gunicorn_server, new_account, emulator, big_pdf_url
):
    url, process = gunicorn_server
    emulator.state.configure(parse_seconds=0.0)
    response = ask(url, new_account().refresh_token, big_pdf_url)
    assert response.status_code == 200, response.text
    digest = hashlib.sha256(BODY).hexdigest()[:12]
    note = f"big.pdf ({len(BODY)} bytes, sha256 {digest})"
    assert note in response.json()["choices"][0]["message"]["content"]
    worker = worker_pid(process.pid)
    settled = spooled_files(worker)  # what the worker keeps open anyway (its heartbeat)

    for fault, status in FAILURES.items():
        for stream in (False, True):
            emulator.state.add_fault(fault, seconds=30)
            failed = ask(url, new_account().refresh_token, big_pdf_url, stream=stream)
            in_body = stream and fault.endswith("after_text")
            assert failed.status_code == (200 if in_body else status)
    assert len(emulator.state.web_files.snapshot()) == 1 + 2 * (len(FAILURES) - 1)
    assert spooled_files(worker) == settled
