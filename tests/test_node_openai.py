"""The Node ``openai`` package (tests/node, pinned by its package-lock.json) against the service.

tests/node/openai_client.mjs runs one case per call and prints JSON; these tests assert what a
Node user of the SDK would get. ``./run.sh test`` installs Node and the packages; a developer
machine without ``node`` skips them, CI (``CI`` set) fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from helpers import ROOT

from kimi.settings import PROTOCOLS

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = NODE_DIR / "openai_client.mjs"
NODE_TIMEOUT = 60  # seconds for one run of the script: a hung client fails instead of blocking


def _missing_node_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (./run.sh test installs it with apt-get)"
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        return "tests/node has no node_modules (./run.sh test runs npm ci there)"
    return None


@pytest.fixture
def run_cases(live_server, account):
    """Run the script's named cases against the live service; their results by name."""
    reason = _missing_node_reason()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the Node client tests, but {reason}")
    if reason:
        pytest.skip(reason)

    def run(*cases: str) -> dict:
        completed = subprocess.run(
            ["node", str(SCRIPT), "--base-url", live_server.url + "/v1", *cases],
            cwd=NODE_DIR,
            env={**os.environ, "OPENAI_API_KEY": account.refresh_token},
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
        )
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout)

    return run


def test_a_tool_call_round_trip_reaches_the_final_answer(run_cases):
    result = run_cases("tool_round_trip")["tool_round_trip"]
    assert result["first"]["finish_reason"] == "tool_calls"
    (call,) = result["first"]["tool_calls"]
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    assert call["id"]
    assert result["final"] == {"finish_reason": "stop", "content": "It is 21 degrees in Paris."}


def test_run_tools_calls_the_javascript_function_and_returns_the_answer(run_cases):
    result = run_cases("run_tools")["run_tools"]
    assert result == {"called_with": ["Paris"], "final_content": "It is 21 degrees in Paris."}


def test_the_stream_helper_reassembles_streamed_tool_calls(run_cases):
    result = run_cases("stream_tool_call")["stream_tool_call"]
    expected = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Rome"}},
    ]
    assert result["arguments_done"] == expected
    assert [{k: c[k] for k in ("name", "arguments")} for c in result["tool_calls"]] == expected
    assert result["finish_reason"] == "tool_calls"
    assert result["content"] == "Let me look that up for you."


def test_a_streamed_answer_arrives_in_chunks(run_cases):
    result = run_cases("stream_text")["stream_text"]
    assert result["text"] == "Emulator reply to: hi"
    assert result["chunks"] > 1
    assert result["finish_reason"] == "stop"


def test_parse_with_a_zod_schema_returns_the_object(run_cases):
    assert run_cases("parse_zod")["parse_zod"] == {"parsed": {"city": "Paris", "temp": 21}}


def test_parse_of_json_that_stays_invalid_raises_a_502_api_error(run_cases):
    error = run_cases("parse_invalid")["parse_invalid"]["error"]
    assert error["type"] == "InternalServerError"
    assert error["status"] == 502 and error["code"] == "invalid_json_output"
