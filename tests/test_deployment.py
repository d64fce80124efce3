"""Every deployment path runs the same app the same way: Procfile, Vercel, Render, Zeabur, Docker.

The platform files are parsed and held to the Procfile's command; the Procfile itself is run
as a process, and the Vercel entry is imported and called the way Vercel does.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import runpy
import shlex
import signal
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from helpers import (
    ROOT,
    procfile_command,
    sse_events,
    stream_chat_over_http,
    streamed_text,
    wait_until,
)
from werkzeug.test import EnvironBuilder

from kimi.settings import PROTOCOLS

DEFAULT_STATE_PATH = "./data/kimi-state.db"
# The longest maxDuration Vercel's Hobby plan accepts (Pro and Enterprise go to 800 s).
VERCEL_MAX_DURATION = 300
CHAT = {"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
REPLY = "Emulator reply to: hi"
SIGTERM_STREAMS = 3  # streams running when the platform stops the service


# What each platform takes from the repository: the runtime, never the emulator or the tests.
VERCEL_RUNTIME = {"app.py", "kimi", "requirements.txt", "pyproject.toml", "vercel.json"}
DOCKER_RUNTIME = {"requirements.txt", "app.py", "gunicorn.conf.py", "kimi"}
NEVER_SHIPPED = {"kimi_emulator", "tests", "bench", "deploy", ".ci", ".git", ".venv"}


def gunicorn_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


@dataclass(frozen=True)
class IgnoreRule:
    """One line of an ignore file: what it matches and whether it lets the path back in."""

    regex: re.Pattern
    negated: bool
    folders_only: bool
    any_depth: bool


def glob_regex(glob: str) -> re.Pattern:
    """A path glob as a regex: ``*`` and ``?`` stay inside one segment, ``**`` crosses them."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", glob)
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def ignore_rules(text: str, flavour: str) -> list[IgnoreRule]:
    """The rules of an ignore file. ``git`` (.vercelignore): a pattern without an inner slash
    matches at any depth and a trailing slash means folders only. ``docker`` (.dockerignore):
    every pattern is anchored at the root."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern = line.removeprefix("!")
        folders_only = flavour == "git" and pattern.endswith("/")
        pattern = pattern.strip("/") if flavour == "docker" else pattern.rstrip("/")
        any_depth = flavour == "git" and "/" not in pattern
        regex = glob_regex(pattern.lstrip("/"))
        rules.append(IgnoreRule(regex, line.startswith("!"), folders_only, any_depth))
    return rules


def is_ignored(path: str, is_dir: bool, rules: list[IgnoreRule]) -> bool:
    """Whether ``path`` (relative, with ``/``) is left out, itself or by a left-out folder
    (neither Vercel nor these files let a path back in below a left-out folder)."""
    folders = path.split("/")[:-1]
    parents = ["/".join(folders[: depth + 1]) for depth in range(len(folders))]
    return any(last_rule_ignores(parent, True, rules) for parent in parents) or (
        last_rule_ignores(path, is_dir, rules)
    )


def last_rule_ignores(path: str, is_dir: bool, rules: list[IgnoreRule]) -> bool:
    """Whether the last rule matching ``path`` itself leaves it out."""
    ignored = False
    for rule in rules:
        target = path.rsplit("/", 1)[-1] if rule.any_depth else path
        if (is_dir or not rule.folders_only) and rule.regex.fullmatch(target):
            ignored = not rule.negated
    return ignored


def files_left_by(name: str, flavour: str) -> set[str]:
    """The files of this checkout a platform would take, by the ignore file ``name``."""
    rules = ignore_rules((ROOT / name).read_text(), flavour)
    kept = set()
    for folder, subfolders, files in os.walk(ROOT):
        base = Path(folder).relative_to(ROOT)
        # Not entering a left-out folder only saves time (.venv, .git): its files are left out.
        subfolders[:] = [
            d for d in subfolders if not is_ignored((base / d).as_posix(), True, rules)
        ]
        kept.update((base / f).as_posix() for f in files)
    return {path for path in kept if not is_ignored(path, False, rules)}


def test_the_ignore_matcher_follows_git_and_docker_rules():
    git = ignore_rules("/*\n!kimi/\n__pycache__/\n*.pyc\n", "git")
    assert not is_ignored("kimi/upstream/web.py", False, git)
    assert is_ignored("kimi_emulator", True, git)
    assert is_ignored("kimi_emulator/web.py", False, git)
    assert is_ignored("kimi/upstream/__pycache__/web.cpython-311.pyc", False, git)
    assert is_ignored("kimi/web.pyc", False, git)
    docker = ignore_rules("tests\n**/__pycache__\n", "docker")
    assert is_ignored("tests/test_routes.py", False, docker)
    assert not is_ignored("kimi/tests/data.txt", False, docker)
    assert is_ignored("kimi/upstream/__pycache__/web.cpython-311.pyc", False, docker)


# The Procfile, run as a process (its streamed answer: test_gunicorn.py)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sigterm_lets_running_streams_finish(gunicorn_server, account, emulator):
    url, process = gunicorn_server
    emulator.state.add_fault("slow", times=SIGTERM_STREAMS, seconds=0.2)
    prompts = [f"stream {n}" for n in range(SIGTERM_STREAMS)]
    with ThreadPoolExecutor(SIGTERM_STREAMS) as pool:  # opened together, all still running
        responses = list(
            pool.map(partial(stream_chat_over_http, url, account.refresh_token), prompts)
        )
    streams = [response.iter_content(chunk_size=None) for response in responses]
    heads = [next(pieces) for pieces in streams]
    assert not [head for head in heads if b"[DONE]" in head]  # none had finished yet
    process.send_signal(signal.SIGTERM)
    bodies = [head + b"".join(pieces) for head, pieces in zip(heads, streams, strict=True)]
    # requests holds a finished stream's socket until the response is dropped, and gunicorn's
    # stop waits out the keep-alive of a connection still open.
    del responses, streams
    for prompt, body in zip(prompts, bodies, strict=True):
        events = sse_events(body)
        assert streamed_text(events) == f"Emulator reply to: {prompt}"
        assert events[-1] == "[DONE]"
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0
    assert "Using worker: gevent" in output  # the shipped default, not threads


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "gunicorn_server", [{"GRACEFUL_TIMEOUT": "2"}], indirect=True, ids=["grace-2s"]
)
def test_streams_still_running_when_the_grace_ends_get_an_error_and_their_chats_go(
    gunicorn_server, account, emulator
):
    url, process = gunicorn_server
    # Each answer takes several seconds, frame by frame: far past the two seconds of grace.
    emulator.state.add_fault("slow", times=SIGTERM_STREAMS, seconds=0.3)
    prompts = [f"stream {n} " + "word " * 30 for n in range(SIGTERM_STREAMS)]
    with ThreadPoolExecutor(SIGTERM_STREAMS) as pool:
        responses = list(
            pool.map(partial(stream_chat_over_http, url, account.refresh_token), prompts)
        )
    streams = [response.iter_content(chunk_size=None) for response in responses]
    heads = [next(pieces) for pieces in streams]
    process.send_signal(signal.SIGTERM)
    # While the running streams have their grace, a new client is refused at once, so that a
    # load balancer or a retrying client goes to another instance instead of hanging here.
    port = int(url.rsplit(":", 1)[1])
    assert wait_until(lambda: refuses_connections(port), seconds=2)
    bodies = [head + b"".join(pieces) for head, pieces in zip(heads, streams, strict=True)]
    del responses, streams
    process.communicate(timeout=30)
    for body in bodies:
        events = sse_events(body)
        assert "[DONE]" not in events  # a cut answer is never passed off as a whole one
        assert events[-1]["error"]["code"] == "service_shutting_down"
    chats = emulator.state.chats().values()
    assert len(chats) == SIGTERM_STREAMS and all(chat["deleted"] for chat in chats)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# Vercel: app.py imported as a module, its ``app`` called as a WSGI application


def import_vercel_entry(entry: str):
    """Load ``entry`` from the repository root under a fresh name, as Vercel's runtime does."""
    spec = importlib.util.spec_from_file_location("vercel_entry", ROOT / entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vercel_config() -> dict:
    return json.loads((ROOT / "vercel.json").read_text())


@pytest.fixture
def vercel_app(vercel_config, emulator, tmp_path, monkeypatch):
    """The WSGI app Vercel would serve, configured through the environment like a deployment."""
    (entry,) = vercel_config["functions"]
    monkeypatch.setenv("KIMI_BASE_URL", emulator.url)
    monkeypatch.setenv("KIMI_AUTH_URL", emulator.url)
    monkeypatch.setenv("KIMI_STATE_PATH", str(tmp_path / "state.db"))
    return import_vercel_entry(entry).app


def call_wsgi(app, **request) -> tuple[str, dict[str, str], list[bytes]]:
    """Call a WSGI app directly; the body comes back as the chunks the app yielded."""
    environ = EnvironBuilder(**request).get_environ()
    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=dict(headers))

    result = app(environ, start_response)
    try:
        chunks = [chunk for chunk in result if chunk]
    finally:
        getattr(result, "close", lambda: None)()
    return started["status"], started["headers"], chunks


def test_vercel_streams_through_the_wsgi_callable_chunk_by_chunk(vercel_app, account, emulator):
    # Paced, so that events arrive apart: a burst that is already waiting is written at once.
    emulator.state.add_fault("slow", seconds=0.05)
    status, headers, chunks = call_wsgi(
        vercel_app,
        path="/v1/chat/completions",
        method="POST",
        json=CHAT,
        headers={"Authorization": f"Bearer {account.refresh_token}"},
    )
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/event-stream")
    assert len(chunks) > 3
    assert all(chunk.endswith(b"\n\n") and sse_events(chunk) for chunk in chunks)
    events = sse_events(b"".join(chunks))
    assert streamed_text(events) == REPLY
    assert events[-1] == "[DONE]"


def test_vercel_answers_cors_preflight_from_the_app(vercel_app):
    status, headers, _ = call_wsgi(
        vercel_app,
        path="/v1/chat/completions",
        method="OPTIONS",
        headers={"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"},
    )
    assert status.startswith("204")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]


def test_vercel_config_runs_app_py_for_the_longest_allowed_duration(vercel_config):
    assert "builds" not in vercel_config  # "builds" would switch off the functions settings
    assert vercel_config["functions"] == {"app.py": {"maxDuration": VERCEL_MAX_DURATION}}
    assert "headers" not in vercel_config  # CORS comes from the app; a second copy would clash


def test_vercel_bundle_holds_only_what_app_py_runs():
    bundle = files_left_by(".vercelignore", flavour="git")
    assert {path.split("/")[0] for path in bundle} == VERCEL_RUNTIME
    assert {"app.py", "kimi/__init__.py", "kimi/upstream/connect.py"} <= bundle
    assert not [path for path in bundle if "__pycache__" in path or path.endswith(".pyc")]


@pytest.mark.parametrize(
    "ignore_file, flavour", [(".vercelignore", "git"), (".dockerignore", "docker")]
)
def test_the_emulator_is_never_shipped(ignore_file, flavour):
    rules = ignore_rules((ROOT / ignore_file).read_text(), flavour)
    assert is_ignored("kimi_emulator", True, rules)
    assert is_ignored("kimi_emulator/web.py", False, rules)
    assert not is_ignored("kimi", True, rules)


def test_read_only_working_dir_falls_back_to_the_temp_dir(emulator, tmp_path, monkeypatch, caplog):
    """Vercel's /var/task is read-only and /tmp is not: the default state path must not crash."""
    workdir = tmp_path / "task"
    workdir.mkdir()
    (workdir / "data").write_text("")  # ./data cannot become a folder, whoever runs the test
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("KIMI_BASE_URL", emulator.url)
    monkeypatch.setenv("KIMI_AUTH_URL", emulator.url)
    with caplog.at_level(logging.WARNING, logger="kimi.store.sqlite"):
        app = import_vercel_entry("app.py").app
    status, _, chunks = call_wsgi(app, path="/healthz")
    assert status.startswith("200")
    assert json.loads(b"".join(chunks))["status"] == "ok"  # ok only when the store answers
    assert (tmp_path / "tmp" / "kimi-free-api" / "kimi-state.db").is_file()
    assert "not writable" in caplog.text


# Render, Zeabur, Docker: parsed, and held to the Procfile


@pytest.fixture
def render_service() -> dict:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    (service,) = blueprint["services"]
    return service


def test_render_blueprint_runs_the_procfile_command(render_service):
    assert render_service["type"] == "web"
    assert render_service["runtime"] == "python"
    assert render_service["plan"] == "free"
    assert render_service["buildCommand"] == "pip install -r requirements.txt"
    assert render_service["startCommand"] == procfile_command()
    assert render_service["healthCheckPath"] == "/healthz"


def test_render_blueprint_asks_for_secrets_in_the_dashboard(render_service):
    env = {var["key"]: var for var in render_service["envVars"]}
    for secret in ("KIMI_TOKENS", "API_KEYS"):
        assert env[secret] == {"key": secret, "sync": False}


def test_render_waits_longer_than_the_graceful_timeout(render_service, monkeypatch):
    env = {var["key"]: var.get("value") for var in render_service["envVars"]}
    config = gunicorn_config(monkeypatch, GRACEFUL_TIMEOUT=env["GRACEFUL_TIMEOUT"])
    assert render_service["maxShutdownDelaySeconds"] > config["graceful_timeout"]


def test_zeabur_starts_the_procfile_command_not_the_dockerfile():
    config = json.loads((ROOT / "zbpack.json").read_text())
    assert config["start_command"] == procfile_command()
    assert config["ignore_dockerfile"] is True


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_a_pinned_slim_non_root_image():
    instructions = dockerfile_instructions()
    (base,) = [args for name, args in instructions if name == "FROM"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", base)
    (user,) = [args for name, args in instructions if name == "USER"]
    assert user not in ("root", "0")
    runs = " ".join(args for name, args in instructions if name == "RUN")
    assert "pip install -r requirements.txt" in runs
    assert ("EXPOSE", "8000") in instructions


def test_dockerfile_runs_the_procfile_command_and_checks_health():
    instructions = dict(dockerfile_instructions())
    assert json.loads(instructions["CMD"]) == shlex.split(procfile_command())
    assert "/healthz" in instructions["HEALTHCHECK"]


def dockerfile_copy_sources() -> list[str]:
    """The context paths every COPY and ADD takes (flags such as ``--chown`` dropped)."""
    sources = []
    for name, args in dockerfile_instructions():
        if name in ("COPY", "ADD"):
            *paths, _destination = [word for word in args.split() if not word.startswith("--")]
            sources += paths
    return sources


def test_dockerfile_copies_the_runtime_and_nothing_else():
    sources = dockerfile_copy_sources()
    assert set(sources) == DOCKER_RUNTIME
    assert "." not in sources and "kimi_emulator" not in sources


def test_docker_context_leaves_out_the_emulator_tests_and_tooling():
    context = files_left_by(".dockerignore", flavour="docker")
    assert not {path.split("/")[0] for path in context} & NEVER_SHIPPED
    for source in DOCKER_RUNTIME:
        assert any(path == source or path.startswith(source + "/") for path in context)


def test_compose_keeps_the_state_file_on_a_named_volume():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["kimi-free-api"]
    assert service["build"] == "."
    assert "command" not in service  # the Dockerfile's CMD, which is the Procfile's
    state_dir = str(Path(service["environment"]["KIMI_STATE_PATH"]).parent)
    volume, _, mount = service["volumes"][0].partition(":")
    assert mount == state_dir
    assert volume in compose["volumes"]
    assert "8000:8000" in service["ports"]


def test_compose_waits_longer_than_the_graceful_timeout(monkeypatch):
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    grace = service["kimi-free-api"]["stop_grace_period"]
    config = gunicorn_config(monkeypatch)
    assert int(grace.removesuffix("s")) > config["graceful_timeout"]


# gunicorn.conf.py, the one configuration every path reads


def test_gunicorn_config_reads_port_and_workers_from_the_environment(monkeypatch):
    config = gunicorn_config(monkeypatch, PORT="9321", WEB_CONCURRENCY="3")
    assert config["bind"] == "0.0.0.0:9321"
    assert config["workers"] == 3


def test_gunicorn_config_defaults_to_port_8000_and_the_cooperative_worker(monkeypatch):
    config = gunicorn_config(monkeypatch)
    assert config["bind"] == "0.0.0.0:8000"
    assert config["worker_class"] == "gevent"  # never sync: it kills long streams
    # Room above the stream cap, so clients over it still get their 429.
    assert config["worker_connections"] > 1000
    assert "{" not in config["access_log_format"]  # no request header in the access log


def test_gunicorn_config_keeps_threads_as_an_explicit_choice(monkeypatch):
    config = gunicorn_config(monkeypatch, GUNICORN_WORKER="gthread", GUNICORN_THREADS="8")
    assert config["worker_class"] == "gthread" and config["threads"] == 8


def test_gunicorn_config_refuses_a_worker_that_cuts_streams(monkeypatch):
    with pytest.raises(RuntimeError, match="GUNICORN_WORKER"):
        gunicorn_config(monkeypatch, GUNICORN_WORKER="sync")


def test_the_shipped_requirements_hold_what_the_gevent_worker_imports():
    pins = (ROOT / "requirements.txt").read_text()
    for package in ("gevent==", "greenlet==", "packaging==", "zope.event==", "zope.interface=="):
        assert package in pins


def test_readme_links_every_deployment_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in ("deploy/kimi-free-api.service", "deploy/nginx-kimi-free-api.conf"):
        assert path in readme
        assert (ROOT / path).is_file()
    assert "render.com/deploy" in readme


def test_pyproject_pins_the_same_runtime_dependencies_as_requirements():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(pyproject["project"]["dependencies"]) == sorted(requirements)
