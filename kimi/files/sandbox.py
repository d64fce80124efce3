"""Reading a document's text in a child process with its own memory, CPU and time limits.

Documents can be built to exhaust whoever reads them: a DOCX whose few kilobytes unpack into
millions of nested elements, a PDF whose pages all share one huge content stream. The readers
have caps of their own (zip-bomb guard, XML depth and element count, character budget), but the
last word belongs to the operating system: each document is read by ``python -m
kimi.files.sandbox`` under ``RLIMIT_AS`` (address space) and ``RLIMIT_CPU``, and the parent
kills it at a wall-clock deadline. A document over a limit is a 400 naming the file and the
setting.

The child is started with ``subprocess``, which gevent's monkey-patching makes cooperative: the
worker's other requests go on while a document is read. It inherits the document as one open
file descriptor, reads the job as JSON on stdin, answers JSON on stdout, and gets an empty
environment (no tokens, no keys) and ``-E -s`` (no ``PYTHON*`` variables, no user site).
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import BadRequest, KimiError, RateLimited
from .extract import ExtractedText, Overflow, extract_text

__all__ = ["SandboxLimits", "extract_in_sandbox"]

log = logging.getLogger(__name__)

MB = 1024 * 1024
# The folder holding the ``kimi`` package: the child's working directory, so ``-m`` finds it.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
EXIT_OUT_OF_MEMORY = 3
# How much of the child's stderr goes into the log when it fails unexpectedly.
STDERR_LOG_CHARS = 2000
# A killed child is waited for this long at most (it cannot ignore SIGKILL; this is a backstop).
REAP_SECONDS = 5.0


@dataclass(frozen=True)
class SandboxLimits:
    """``seconds`` of wall time (the parent kills the child then), ``cpu_seconds`` of CPU
    (the kernel stops it then, even if the parent is gone), ``memory_bytes`` of address space."""

    seconds: float = 30.0
    cpu_seconds: int = 30
    memory_bytes: int = 512 * MB
    # Children one worker process runs at once: each may take ``memory_bytes``.
    concurrency: int = 2

    @classmethod
    def from_settings(cls, seconds: float, memory_mb: float, concurrency: int = 2) -> SandboxLimits:
        """The limits that ``FILE_EXTRACT_TIMEOUT``, ``FILE_EXTRACT_MEMORY_MB`` and
        ``FILE_EXTRACT_CONCURRENCY`` give."""
        return cls(seconds, max(1, math.ceil(seconds)), int(memory_mb * MB), max(1, concurrency))


def extract_in_sandbox(
    document: IO[bytes],
    *,
    filename: str,
    content_type: str | None,
    charset: str | None,
    max_chars: int,
    on_overflow: Overflow,
    limits: SandboxLimits,
) -> ExtractedText:
    """``extract_text`` of a real, open file (``fileno()``), run in a limited child process.

    Raises the reader's own ``BadRequest`` for a bad document, a ``BadRequest`` with code
    ``document_too_complex`` for one over a limit, and ``KimiError`` (500) when the child fails
    in a way no document should cause.
    """
    fd = document.fileno()
    job = {
        "fd": fd,
        "filename": filename,
        "content_type": content_type,
        "charset": charset,
        "max_chars": max_chars,
        "on_overflow": on_overflow,
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": limits.memory_bytes,
    }
    with _reader_slot(limits, filename):
        returncode, stdout, stderr = _run_child(json.dumps(job).encode(), fd, filename, limits)
    return _outcome(returncode, stdout, stderr, filename, limits)


@contextmanager
def _reader_slot(limits: SandboxLimits, name: str) -> Iterator[None]:
    """One of this process's ``concurrency`` reader slots, waited for as long as one read may
    take; a 429 after that. Without it, a burst of documents would start a child (and its
    ``memory_bytes``) per request at once."""
    slots = _slots(limits.concurrency)
    if not slots.acquire(timeout=limits.seconds):
        raise RateLimited(
            f"The server is busy reading other documents; file {name!r} was not read. Try "
            "again shortly (FILE_EXTRACT_CONCURRENCY).",
            retry_after=limits.seconds,
            code="documents_busy",
        )
    try:
        yield
    finally:
        slots.release()


_slots_by_process: dict[tuple[int, int], threading.BoundedSemaphore] = {}


def _slots(concurrency: int) -> threading.BoundedSemaphore:
    # Made on first use in each worker, after the fork and after gevent patched threading,
    # so that a wait for a slot lets the worker's other requests run.
    key = (os.getpid(), concurrency)
    if key not in _slots_by_process:
        _slots_by_process[key] = threading.BoundedSemaphore(concurrency)
    return _slots_by_process[key]


def _run_child(job: bytes, fd: int, name: str, limits: SandboxLimits) -> tuple[int, bytes, bytes]:
    argv = [sys.executable, "-E", "-s", "-m", __name__]
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(fd,),
            cwd=PACKAGE_ROOT,
            env={},
        )
    except OSError as exc:
        log.error("could not start the document reader: %s", exc)
        raise KimiError("The service could not start its document reader.") from exc
    try:
        stdout, stderr = child.communicate(job, timeout=limits.seconds)
    except subprocess.TimeoutExpired as exc:
        raise _too_complex(name, f"took longer than {limits.seconds:g} s to read") from exc
    finally:
        if child.poll() is None:  # over time, or this request itself was cut short
            child.kill()
            child.wait(REAP_SECONDS)
    return child.returncode, stdout, stderr


def _outcome(
    returncode: int, stdout: bytes, stderr: bytes, name: str, limits: SandboxLimits
) -> ExtractedText:
    if returncode == EXIT_OUT_OF_MEMORY:
        megabytes = limits.memory_bytes / MB
        raise _too_complex(name, f"needs more than {megabytes:g} MB of memory to read", "MEMORY_MB")
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise _too_complex(name, f"needs more than {limits.cpu_seconds} s of CPU to read")
    try:
        answer = json.loads(stdout) if returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        tail = stderr.decode("utf-8", "replace")[-STDERR_LOG_CHARS:]
        log.error("the document reader failed on %r (exit %s): %s", name, returncode, tail)
        raise KimiError(f"The service's document reader failed on file {name!r}.")
    error = answer.get("error")
    if error:
        raise BadRequest(error["message"], code=error.get("code"))
    return ExtractedText(answer["name"], answer["kind"], answer["text"], answer["truncated"])


def _too_complex(name: str, what: str, setting: str = "TIMEOUT") -> BadRequest:
    return BadRequest(
        f"file {name!r} {what} (FILE_EXTRACT_{setting}); refusing it: it is too large or "
        "complex to read here, or built to exhaust the server",
        code="document_too_complex",
    )


# --- the child ------------------------------------------------------------------------------


def main() -> int:
    """Read the job on stdin, apply the limits, extract, answer on stdout."""
    logging.basicConfig(level=logging.ERROR)  # readers' warnings about damaged files: noise
    job = json.loads(sys.stdin.buffer.read())
    _limit(resource.RLIMIT_CPU, job["cpu_seconds"], job["cpu_seconds"] + 1)
    _limit(resource.RLIMIT_AS, job["memory_bytes"], job["memory_bytes"])
    try:
        answer = _answer(job)
        sys.stdout.write(json.dumps(answer))
        sys.stdout.flush()
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)  # nothing that allocates can be trusted now
    return 0


def _answer(job: dict[str, Any]) -> dict[str, Any]:
    with os.fdopen(job["fd"], "rb") as document:
        try:
            extracted = extract_text(
                document,
                filename=job["filename"],
                content_type=job["content_type"],
                charset=job["charset"],
                max_chars=job["max_chars"],
                on_overflow=job["on_overflow"],
            )
        except BadRequest as exc:
            return {"error": {"message": exc.message, "code": exc.code}}
    return {
        "name": extracted.name,
        "kind": extracted.kind,
        "text": extracted.text,
        "truncated": extracted.truncated,
    }


def _limit(which: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


if __name__ == "__main__":
    sys.exit(main())
