"""Memory benchmark: relaying a large file must not grow the worker's resident memory much.

Goal (issues 4 and 11): relaying a 100 MB document through an upload flow (legacy: pre-signed PUT;
web: a streamed multipart upload) raises the gunicorn worker's peak resident memory by at most
30 MB over a plain turn measured in the same run.

Runs everything on 127.0.0.1: the Kimi emulator and a file server in this process, the service
under gunicorn (one worker) as a child process, whose peak RSS (VmHWM) is read from /proc. Each
protocol gets its own service process. Under web the file-id cache is off, so both sends upload.

    python bench/upload_memory.py [--protocol both|web|legacy] [--mb 100] [--limit-mb 30]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from flask import Flask, Response
from harness import free_port
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kimi_emulator import EmulatorServer  # noqa: E402

CHUNK = 1024 * 1024
PROTOCOLS = ("web", "legacy")
SOURCES = (("known length", "/big.pdf"), ("unknown length", "/big-unknown.pdf"))


def pattern_chunks(total: int):
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < total:
        piece = block[: min(CHUNK, total - sent)]
        sent += len(piece)
        yield piece


def file_server(total: int) -> tuple[str, object]:
    app = Flask("bench-files")

    @app.get("/big.pdf")
    def known_length():
        return Response(
            pattern_chunks(total),
            mimetype="application/pdf",
            headers={"Content-Length": str(total)},
        )

    @app.get("/big-unknown.pdf")
    def unknown_length():
        return Response(pattern_chunks(total), mimetype="application/pdf")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def ask(url: str, token: str, file_url: str | None) -> None:
    content: list[dict] = [{"type": "text", "text": "What is in this file?"}]
    if file_url:
        content.append({"type": "file", "file_url": {"url": file_url}})
    response = requests.post(
        url + "/v1/chat/completions",
        json={"model": "kimi", "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    response.raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("both", *PROTOCOLS), default="both")
    parser.add_argument("--mb", type=int, default=100, help="size of the relayed file")
    parser.add_argument("--limit-mb", type=float, default=30.0, help="allowed peak RSS growth")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    total = args.mb * 1024 * 1024
    files_url, files = file_server(total)
    digest = hashlib.sha256()
    for chunk in pattern_chunks(total):
        digest.update(chunk)
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    try:
        passed = [measure(p, args, files_url, digest.hexdigest()) for p in protocols]
    finally:
        files.shutdown()
    return 0 if all(passed) else 1


def measure(protocol: str, args: argparse.Namespace, files_url: str, expected: str) -> bool:
    """Relay the file under ``protocol``, print the peaks, and say whether the goal is met."""
    total = args.mb * 1024 * 1024
    with EmulatorServer() as emulator, tempfile.TemporaryDirectory() as state_dir:
        token = emulator.state.create_user("bench").refresh_token
        port = free_port()
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "KIMI_PROTOCOL": protocol,
            "KIMI_BASE_URL": emulator.url,
            "KIMI_AUTH_URL": emulator.url,
            "KIMI_STATE_PATH": os.path.join(state_dir, "state.db"),
            "ALLOW_PRIVATE_FILE_URLS": "1",
            "MAX_FILE_MB": str(args.mb + 1),
            "WEB_FILE_CACHE_SECONDS": "0",  # the same bytes twice: upload both times
        }
        gunicorn = Path(sys.executable).with_name("gunicorn")
        master = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", "app:app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            pid = worker_pid(master.pid)
            _wait(url)
            ask(url, token, None)
            ask(url, token, None)
            baseline = peak_rss_mb(pid)
            results = {}
            for label, path in SOURCES:
                ask(url, token, files_url + path)
                results[label] = peak_rss_mb(pid)
            received = received_files(emulator, protocol)
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(60)
    ok = len(received) == len(SOURCES) and all(r == (total, expected) for r in received)
    print(f"[{protocol}] relayed file: {args.mb} MB, twice; uploads intact: {ok}")
    print(f"[{protocol}] baseline peak RSS (plain turns):      {baseline:7.1f} MB")
    worst = 0.0
    for label, peak in results.items():
        growth = peak - baseline
        worst = max(worst, growth)
        print(f"[{protocol}] peak RSS after {label:15s}       {peak:7.1f} MB  (+{growth:.1f} MB)")
    passed = ok and worst <= args.limit_mb
    verdict = "PASS" if passed else "FAIL"
    print(f"[{protocol}] {verdict}: peak growth {worst:.1f} MB, limit {args.limit_mb:g} MB")
    return passed


def received_files(emulator: EmulatorServer, protocol: str) -> list[tuple[int, str]]:
    """(size, sha256) of each file the emulated Kimi received, in order."""
    if protocol == "web":
        return [(f["size"], f["sha256"]) for f in emulator.state.web_files.snapshot()]
    return [(u["size"], u["sha256"]) for u in emulator.state.uploads()]


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/ping", timeout=2).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # workers still loading the app
            time.sleep(0.1)
    raise RuntimeError("the service did not start")


if __name__ == "__main__":
    sys.exit(main())
