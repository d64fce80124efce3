"""What the stream benchmarks share: the stand-in and a real gunicorn as child processes, and
CPU and memory of a process tree read from /proc."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
STANDIN = BENCH / "standin.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 70.0  # gunicorn's graceful timeout is 60 s
DEFAULT_THREADS = "32"  # what the shipped config gives a gthread worker
# The service's own settings are set here, never inherited from the machine.
SERVICE_ENV_PREFIXES = ("KIMI_", "API_KEYS", "KEEPALIVE_", "MODELS_CACHE_", "GUNICORN_")
LOG_PROBLEM = re.compile(r"Traceback|ERROR|CRITICAL|WARNING|TIMEOUT|Error|Exception")
LOG_PREFIX = re.compile(r"^\[[^\]]*\] \[\d+\] ")  # gunicorn's "[date] [pid] "
WORKER_LINE = re.compile(r"Using worker: (\S+)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file soft limit (children inherit it); returns the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def wait_for_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:  # not listening yet
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def get_json(url: str, method: str = "GET") -> dict:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


# Process trees in /proc


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants that are alive now."""
    pids, index = [root], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*"):
            try:
                pids += [int(pid) for pid in (task / "children").read_text().split()]
            except FileNotFoundError:  # the thread ended while we looked
                continue
        index += 1
    return pids


def cpu_seconds(root: int) -> float:
    """User + system CPU of the tree, plus what its reaped children used (a restarted worker)."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def status_fields(pid: int, *names: str) -> list[int]:
    """Numeric fields of /proc/<pid>/status (VmRSS in kB, Threads, ...); zeros if it is gone."""
    values = dict.fromkeys(names, 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in values:
                values[name] = int(value.split()[0])
    except FileNotFoundError:
        pass  # the process ended between listing and reading
    return list(values.values())


class TreeSampler:
    """Samples the tree's resident memory and threads on a thread; keeps the peaks."""

    def __init__(self, root: int, period: float = 0.25) -> None:
        self.root = root
        self.period = period
        self.peak_rss_mb = 0.0
        self.peak_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def _sample(self) -> None:
        rss_kb = threads = 0
        for pid in tree_pids(self.root):
            rss, count = status_fields(pid, "VmRSS", "Threads")
            rss_kb, threads = rss_kb + rss, threads + count
        self.peak_rss_mb = max(self.peak_rss_mb, rss_kb / 1024)
        self.peak_threads = max(self.peak_threads, threads)


# The processes under test


class StandInProcess:
    """``bench/standin.py`` as a child process on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> StandInProcess:
        command = [sys.executable, str(STANDIN), "--port", str(self.port)]
        self.process = subprocess.Popen(command)
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()  # streams still open are cut; nothing to clean up
        self.process.wait(10)

    def record(self) -> dict:
        return get_json(self.url + "/_bench/record")

    def reset(self) -> None:
        get_json(self.url + "/_bench/reset", method="POST")


@dataclass(frozen=True)
class ServiceConfig:
    """How to run the service: which checkout, protocol, and (optionally) worker class."""

    protocol: str
    checkout: Path = ROOT
    worker: str | None = None  # None: what the shipped gunicorn.conf.py chooses
    workers: int | None = None  # None: WEB_CONCURRENCY as the machine has it (2 by default)
    app: str = "app:app"  # the WSGI app; "bare_relay:app" for the stack's own cost


class ServiceProcess:
    """``gunicorn -c gunicorn.conf.py app:app`` from a checkout, pointed at the stand-in.

    Its error log goes to a file, read back by ``worker_class`` and ``new_problems``.
    """

    def __init__(self, config: ServiceConfig, upstream_url: str, state_dir: str) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream_url = upstream_url
        self.state_dir = Path(state_dir)
        self.error_log = self.state_dir / "gunicorn-error.log"
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def command(self) -> list[str]:
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        command = [gunicorn, "-c", "gunicorn.conf.py"]
        if self.config.worker:
            # The command line beats the config file; a config older than GUNICORN_WORKER
            # would otherwise pick gevent whenever it is importable.
            command += ["-k", self.config.worker]
            if self.config.worker == "gthread":
                command += ["--threads", os.environ.get("GUNICORN_THREADS", DEFAULT_THREADS)]
        if self.config.app != ServiceConfig.app:  # a fixture of bench/, not the service
            command += ["--pythonpath", str(BENCH)]
        return [*command, self.config.app]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            KIMI_PROTOCOL=self.config.protocol,
            KIMI_BASE_URL=self.upstream_url,
            KIMI_AUTH_URL=self.upstream_url,
            KIMI_STATE_PATH=str(self.state_dir / "state.db"),
        )
        if self.config.worker:
            env["GUNICORN_WORKER"] = self.config.worker
        if self.config.workers:
            env["WEB_CONCURRENCY"] = str(self.config.workers)
        return env

    def __enter__(self) -> ServiceProcess:
        with open(self.error_log, "wb") as errors:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.config.checkout,
                env=self.environment(),
                stdout=subprocess.DEVNULL,  # the access log: a line per request
                stderr=errors,
            )
        self._wait_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_class(self) -> str:
        found = WORKER_LINE.search(self.error_log.read_text(errors="replace"))
        return found[1] if found else "unknown"

    def new_problems(self) -> Counter:
        """Problem lines the service logged since the last call, counted by text."""
        with open(self.error_log, "rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
            self._log_offset = log.tell()
        lines = (LOG_PREFIX.sub("", line).strip() for line in text.splitlines())
        return Counter(line for line in lines if LOG_PROBLEM.search(line))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.error_log.read_text()[-2000:]}")
            try:
                get_json(self.url + "/healthz")
                return
            except OSError:  # workers still loading the app
                time.sleep(0.1)
        raise RuntimeError("the service did not start")
