"""Shared fixtures: a running Kimi emulator, settings pointing at it, the app, live servers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
import redis
from helpers import (
    ROOT,
    LiveServer,
    free_port,
    procfile_argv,
    refusing_route,
    wait_until_serving,
)

from kimi import create_app
from kimi.settings import Settings
from kimi_emulator import EmulatorServer
from kimi_emulator.app import create_emulator_app

SERVICE_ENV_PREFIXES = (
    "KIMI_",
    "API_KEYS",
    "KEEPALIVE_",
    "MODELS_CACHE_",
    "WEB_CONCURRENCY",
    "GUNICORN_",
    "WORKER_CONNECTIONS",
    "MAX_STREAMS_",
    "REASONING_OUTPUT",
    "MAX_REQUEST_",
    "MAX_TOKENS_PER_",
    "TOKEN_CHECKS_",
    "ALLOW_PUBLIC_POOL",
    "POOL_WAIT_",
    "REDIS_URL",
    "STATE_ENCRYPTION_KEY",
    "FILE_",
    "MAX_FILE",
    "MAX_DOCUMENT_",
    "ALLOW_PRIVATE_FILE_URLS",
    "ANTHROPIC_MODEL_MAP",
    "GRACEFUL_TIMEOUT",
    "ADMIN_KEY",
    "PROMETHEUS_MULTIPROC_DIR",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own settings never leak into a test."""
    for name in list(os.environ):
        if name.startswith(SERVICE_ENV_PREFIXES) or name == "PORT":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The emulator, reset: no users, chats, faults or recorded calls."""
    emulator_server.state.reset()
    return emulator_server


@pytest.fixture
def protocol() -> str:
    """The upstream protocol; a module runs both with ``parametrize("protocol", PROTOCOLS)``."""
    return "web"


@pytest.fixture
def make_settings(emulator: EmulatorServer, tmp_path, protocol: str):
    def build(**overrides) -> Settings:
        values = dict(
            protocol=protocol,
            base_url=emulator.url,
            auth_url=emulator.url,
            state_path=str(tmp_path / "state.db"),
            connect_timeout=5.0,
            read_timeout=10.0,
        )
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def new_account(emulator: EmulatorServer):
    """Create an emulator user; returns its ``IssuedTokens`` (user_id, refresh/access token)."""
    counter = iter(range(1000))

    def create(name: str | None = None):
        return emulator.state.create_user(name or f"user{next(counter)}")

    return create


@pytest.fixture
def account(new_account):
    return new_account("alice")


@pytest.fixture
def auth(account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.refresh_token}"}


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def oai(live_server, account) -> openai.OpenAI:
    """The openai SDK against the service in a live server, with the account's token as key."""
    return openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=account.refresh_token, max_retries=0, timeout=20
    )


@pytest.fixture
def claude(live_server, account) -> anthropic.Anthropic:
    """The anthropic SDK against the service in a live server, with the account's token."""
    return anthropic.Anthropic(
        base_url=live_server.url, api_key=account.refresh_token, max_retries=0, timeout=20
    )


@pytest.fixture
def kimi_refusing(emulator, make_settings):
    """``start(path, status, code, message, **settings)``: a client of the service whose Kimi
    answers one route with that error (the emulator answers every other route)."""
    servers = []

    def start(path: str, status: int, code: str, message: str, **overrides):
        app = create_emulator_app(emulator.state)
        refusing_route(app, path, status, code, message)
        server = EmulatorServer(emulator.state, app=app).start()
        servers.append(server)
        settings = make_settings(base_url=server.url, auth_url=server.url, **overrides)
        return create_app(settings).test_client()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def scenario(make_settings, new_account, emulator, monkeypatch):
    """Server-pool accounts driven into every state the status page shows (status_scenario)."""
    from status_scenario import drive_into_every_state

    scenario = drive_into_every_state(make_settings, new_account, emulator, monkeypatch)
    yield scenario
    scenario.close()


@pytest.fixture
def gunicorn_server(request: pytest.FixtureRequest, emulator: EmulatorServer, tmp_path, protocol):
    """The Procfile's command as a real process, as Render/Heroku/Zeabur run it: ``PORT`` set.

    Two workers, so that state shared through the SQLite file is exercised too. A test passes
    more environment (``KEEPALIVE_SECONDS``, ``WEB_CONCURRENCY``...) as a dict with
    ``parametrize("gunicorn_server", [{...}], indirect=True)``.
    """
    argv = procfile_argv()
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "KIMI_PROTOCOL": protocol,
        "KIMI_BASE_URL": emulator.url,
        "KIMI_AUTH_URL": emulator.url,
        "KIMI_STATE_PATH": str(tmp_path / "state.db"),
        **getattr(request, "param", {}),
    }
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
        if process.stdout.closed:  # a test already read the output to the end
            process.wait(30)
        else:
            process.communicate(timeout=30)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, with a password and no persistence.

    Never the machine's own Redis: started here, stopped by its PID. ``pause``/``resume`` stop
    and continue the process (SIGSTOP/SIGCONT), which is how a hung Redis looks to a client.
    """

    PASSWORD = "test-redis-password"
    START_SECONDS = 10.0

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (apt-get install redis-server)"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI installs it: a missing server is a broken run
            pytest.skip(message)
        self.port = free_port()
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.argv += ["--appendonly", "no", "--requirepass", self.PASSWORD, "--dir", str(workdir)]
        self.start()

    def start(self) -> None:
        """Start the server (again, after ``stop``: same port, empty)."""
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_ready()

    @property
    def url(self) -> str:
        return f"redis://:{self.PASSWORD}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()  # a stopped process would hold SIGTERM until continued
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.START_SECONDS
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, hang or kill it."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()
