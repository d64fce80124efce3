"""Documents built to exhaust their reader: caps in the DOCX reader, and every document read in
a child process under memory, CPU and time limits (``kimi.files.sandbox``).

The bombs are small versions of real ones: in-process, each would hold a worker for seconds
or grow it by a hundred megabytes and then answer 200; the limits here are set small so that
each is refused within about a second.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
import requests
from helpers import chat, pdf_file, upstream_calls, wait_until

from kimi import create_app
from kimi.errors import BadRequest
from kimi.files.extract import extract_text
from kimi.files.readers import docx as docx_reader
from kimi.files.sandbox import MB, SandboxLimits, extract_in_sandbox
from kimi.settings import Settings

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MAX_CHARS = 200_000
SANDBOX_MODULE = "kimi.files.sandbox"
GEVENT_WORKER_LOG = "Using worker: gevent"
SHORT = SandboxLimits(seconds=1.0, cpu_seconds=30, memory_bytes=512 * MB)
# A child's interpreter with the readers loaded takes about 67 MB of address space.
SMALL_MEMORY = SandboxLimits(seconds=30.0, cpu_seconds=30, memory_bytes=100 * MB)


# --- bombs ----------------------------------------------------------------------------------


def docx_with(body: bytes) -> bytes:
    """A DOCX whose document.xml is ``body`` inside <w:document><w:body>."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as part:
            part.write(f'<w:document xmlns:w="{W_NS}"><w:body>'.encode())
            part.write(body)
            part.write(b"</w:body></w:document>")
    return out.getvalue()


def one_huge_run_docx(characters: int) -> bytes:
    """A DOCX of about 60 KB whose one text run unpacks into ``characters`` CJK characters."""
    out = io.BytesIO()
    block = "中" * 100_000
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("word/document.xml", "w") as part:
            part.write(f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>'.encode())
            for _ in range(characters // len(block)):
                part.write(block.encode())
            part.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return out.getvalue()


def shared_stream_pdf(pages: int, stream_bytes: int) -> bytes:
    """A PDF of a few KB whose ``pages`` pages all draw one compressed content stream of
    ``stream_bytes`` bytes of text operators: each page makes the reader parse all of it."""
    operator = b"BT /F1 12 Tf 72 720 Td (x) Tj ET\n"
    stream = zlib.compress(operator * (stream_bytes // len(operator)), 9)
    font = 4 + pages
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % (4 + page) for page in range(pages)), pages),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream),
        *[
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R"
            b" /Resources << /Font << /F1 %d 0 R >> >> >>" % font
        ]
        * pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return pdf_file(objects, b"1.4")


NESTED_PARAGRAPHS = 100_000
NESTED_BOMB = docx_with(b"<w:p>" * NESTED_PARAGRAPHS + b"</w:p>" * NESTED_PARAGRAPHS)
# In-process its pages take about 9 s of CPU to read; the whole file is under 10 KB.
PDF_BOMB = shared_stream_pdf(pages=8, stream_bytes=MB)
HUGE_RUN_BOMB = one_huge_run_docx(20_000_000)
NOTES = docx_with(b"<w:p><w:r><w:t>Minutes: ship on Friday.</w:t></w:r></w:p>")


@contextmanager
def temporary_file(data: bytes) -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile() as document:
        document.write(data)
        document.seek(0)
        yield document


def sandboxed(data: bytes, name: str, limits: SandboxLimits, content_type: str | None = None):
    with temporary_file(data) as document:
        return extract_in_sandbox(
            document,
            filename=name,
            content_type=content_type,
            charset=None,
            max_chars=MAX_CHARS,
            on_overflow="error",
            limits=limits,
        )


def refused_in_sandbox(data: bytes, name: str, limits: SandboxLimits) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        sandboxed(data, name, limits)
    return caught.value


def sandbox_children(parent_pid: int) -> list[int]:
    """Processes running the sandbox whose parent, or parent's parent, is ``parent_pid``."""
    parents: dict[int, int] = {}
    readers: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # the process ended while we looked
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if SANDBOX_MODULE.encode() in command:
            readers.append(int(entry.name))
    return [
        pid
        for pid in readers
        if parent_pid in (parents.get(pid), parents.get(parents.get(pid, -1), -1))
    ]


# --- the DOCX reader's own caps ---------------------------------------------------------------


def test_a_docx_nested_deeper_than_the_cap_is_refused_at_once():
    with pytest.raises(BadRequest) as caught:
        extract_text(NESTED_BOMB, filename="nested.docx", max_chars=MAX_CHARS)
    assert caught.value.code == "document_too_complex"
    assert "'nested.docx'" in caught.value.message
    assert f"more than {docx_reader.MAX_XML_DEPTH} levels" in caught.value.message


def test_a_docx_nested_within_the_cap_is_read():
    depth = docx_reader.MAX_XML_DEPTH - 10
    body = b"<w:sdt>" * depth + b"<w:p><w:r><w:t>deep</w:t></w:r></w:p>" + b"</w:sdt>" * depth
    assert extract_text(docx_with(body), filename="deep.docx", max_chars=MAX_CHARS).text == "deep"


@pytest.mark.parametrize("runs, refused", [(900, False), (1100, True)])
def test_a_docx_with_more_elements_than_the_cap_is_refused(
    monkeypatch: pytest.MonkeyPatch, runs: int, refused: bool
):
    monkeypatch.setattr(docx_reader, "MAX_XML_ELEMENTS", 1000)
    document = docx_with(b"<w:p>" + b"<w:r/>" * runs + b"<w:r><w:t>end</w:t></w:r></w:p>")
    if refused:
        with pytest.raises(BadRequest) as caught:
            extract_text(document, filename="runs.docx", max_chars=MAX_CHARS)
        assert caught.value.code == "document_too_complex"
        assert "more than 1000 XML elements" in caught.value.message
    else:
        assert extract_text(document, filename="runs.docx", max_chars=MAX_CHARS).text == "end"


# --- the sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, name, text",
    [
        (NOTES, "notes.docx", "Minutes: ship on Friday."),
        (shared_stream_pdf(pages=2, stream_bytes=100), "small.pdf", "xxx\n\nxxx"),
        ("Grüße, 你好".encode(), "hello.txt", "Grüße, 你好"),
    ],
    ids=["docx", "pdf", "text"],
)
def test_the_sandbox_reads_what_the_reader_reads(data: bytes, name: str, text: str):
    in_process = extract_text(data, filename=name, max_chars=MAX_CHARS)
    assert sandboxed(data, name, SandboxLimits()) == in_process
    assert in_process.text == text


def test_a_bad_document_is_refused_by_the_sandbox_with_the_readers_own_error():
    with pytest.raises(BadRequest) as in_process:
        extract_text(b"\x89PNG\r\n\x1a\n" + bytes(64), filename="photo.bin", max_chars=MAX_CHARS)
    error = refused_in_sandbox(b"\x89PNG\r\n\x1a\n" + bytes(64), "photo.bin", SandboxLimits())
    assert (error.message, error.code) == (in_process.value.message, in_process.value.code)


def test_a_pdf_whose_pages_share_one_huge_stream_is_stopped_at_the_deadline():
    error = refused_in_sandbox(PDF_BOMB, "report.pdf", SHORT)
    assert error.code == "document_too_complex"
    assert "'report.pdf' took longer than 1 s" in error.message
    assert "FILE_EXTRACT_TIMEOUT" in error.message
    assert sandbox_children(os.getpid()) == []  # the reader was killed, not left running


def test_the_cpu_limit_stops_the_reader_even_without_a_deadline():
    limits = SandboxLimits(seconds=60.0, cpu_seconds=1, memory_bytes=512 * MB)
    error = refused_in_sandbox(PDF_BOMB, "report.pdf", limits)
    assert error.code == "document_too_complex"
    assert "more than 1 s of CPU" in error.message


def test_a_docx_unpacking_into_one_huge_run_is_stopped_by_the_memory_limit():
    error = refused_in_sandbox(HUGE_RUN_BOMB, "thesis.docx", SMALL_MEMORY)
    assert error.code == "document_too_complex"
    assert "'thesis.docx' needs more than 100 MB of memory" in error.message
    assert "FILE_EXTRACT_MEMORY_MB" in error.message
    # The same limit leaves room for an ordinary document.
    assert sandboxed(NOTES, "notes.docx", SMALL_MEMORY).text == "Minutes: ship on Friday."


def test_the_sandbox_limits_are_read_from_the_environment():
    settings = Settings.from_env(
        {
            "FILE_EXTRACT_TIMEOUT": "2.5",
            "FILE_EXTRACT_MEMORY_MB": "256",
            "FILE_EXTRACT_CONCURRENCY": "3",
        }
    )
    limits = SandboxLimits.from_settings(
        settings.file_extract_timeout,
        settings.file_extract_memory_mb,
        settings.file_extract_concurrency,
    )
    assert limits == SandboxLimits(seconds=2.5, cpu_seconds=3, memory_bytes=256 * MB, concurrency=3)
    defaults = Settings.from_env({})
    assert (defaults.file_extract_timeout, defaults.file_extract_memory_mb) == (30, 512)
    assert defaults.file_extract_concurrency == 2


# --- through the service ----------------------------------------------------------------------


def data_url_part(data: bytes, filename: str, media_type: str) -> dict:
    encoded = base64.b64encode(data).decode()
    return {
        "type": "file",
        "file": {"file_data": f"data:{media_type};base64,{encoded}", "filename": filename},
    }


def ask_about(client, auth, part: dict):
    content = [{"type": "text", "text": "Summarise it"}, part]
    return chat(client, auth, messages=[{"role": "user", "content": content}])


@pytest.mark.parametrize(
    "part, message, deadline",
    [
        (
            data_url_part(PDF_BOMB, "report.pdf", "application/pdf"),
            "'report.pdf' took longer",
            1.0,
        ),
        # Refused by the reader's own cap, not the deadline: room for a loaded machine.
        (
            data_url_part(NESTED_BOMB, "nested.docx", DOCX_TYPE),
            "'nested.docx' has XML nested",
            30.0,
        ),
    ],
    ids=["pdf-shared-stream", "docx-nested"],
)
def test_a_document_bomb_is_a_400_naming_the_file_and_nothing_reaches_kimi(
    make_settings, auth, emulator, part: dict, message: str, deadline: float
):
    settings = make_settings(file_extract_timeout=deadline, web_file_mode="extract")
    response = ask_about(create_app(settings).test_client(), auth, part)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "document_too_complex"
    assert message in error["message"]
    assert upstream_calls(emulator, "ChatService/Chat") == []


@pytest.mark.parametrize(
    "gunicorn_server",
    [{"FILE_EXTRACT_TIMEOUT": "1", "WEB_CONCURRENCY": "1", "WEB_FILE_MODE": "extract"}],
    indirect=True,
)
def test_under_the_gevent_worker_a_bomb_is_stopped_while_the_worker_serves_others(
    gunicorn_server, new_account, emulator
):
    url, process = gunicorn_server
    headers = {"Authorization": f"Bearer {new_account().refresh_token}"}

    def ask(part: dict) -> requests.Response:
        body = {"model": "kimi", "messages": [{"role": "user", "content": [part]}]}
        return requests.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ask, data_url_part(PDF_BOMB, "report.pdf", "application/pdf"))
        assert wait_until(lambda: sandbox_children(process.pid), seconds=10)
        # While the one worker waits on its reader, it answers another request.
        assert requests.get(url + "/ping", timeout=5).ok
        assert not pending.done()
        response = pending.result()
    assert response.status_code == 400
    assert "'report.pdf' took longer than 1 s" in response.json()["error"]["message"]
    assert wait_until(lambda: not sandbox_children(process.pid))

    answered = ask(data_url_part(NOTES, "notes.docx", DOCX_TYPE))
    assert answered.status_code == 200, answered.text
    prompt = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]["message"]["blocks"][0]
    assert "Minutes: ship on Friday." in prompt["text"]["content"]
    process.send_signal(signal.SIGTERM)
    assert GEVENT_WORKER_LOG in process.communicate(timeout=30)[0].decode()


@pytest.mark.parametrize(
    "gunicorn_server",
    [
        {
            "FILE_EXTRACT_TIMEOUT": "1",
            "FILE_EXTRACT_CONCURRENCY": "1",
            "WEB_CONCURRENCY": "1",
            "WEB_FILE_MODE": "extract",
        }
    ],
    indirect=True,
)
def test_a_burst_of_bombs_runs_one_reader_at_a_time_and_the_overflow_gets_429(
    gunicorn_server, new_account
):
    url, process = gunicorn_server
    headers = {"Authorization": f"Bearer {new_account().refresh_token}"}
    part = data_url_part(PDF_BOMB, "report.pdf", "application/pdf")
    body = {"model": "kimi", "messages": [{"role": "user", "content": [part]}]}

    def ask(_: int) -> requests.Response:
        return requests.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)

    most_readers = 0
    with ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(ask, n) for n in range(3)]
        while not all(future.done() for future in pending):
            most_readers = max(most_readers, len(sandbox_children(process.pid)))
        responses = [future.result() for future in pending]
    assert most_readers == 1  # each child may take FILE_EXTRACT_MEMORY_MB: never two at once
    codes = sorted(r.json()["error"]["code"] for r in responses)
    assert codes[0] == "document_too_complex"  # the first one read until its deadline
    assert "documents_busy" in codes  # one that waited a reader's whole deadline in vain
    busy = next(r for r in responses if r.json()["error"]["code"] == "documents_busy")
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert "'report.pdf'" in busy.json()["error"]["message"]
