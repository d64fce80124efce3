"""Upstream calls per turn (issue 10): what each kind of turn costs Kimi, per protocol.

Runs the real Kimi emulator on 127.0.0.1 and the app in this process. Per protocol, streamed and
not: N one-shot turns, then one kept conversation of 3 turns (``conversation_id`` "none", then
its id). Prints the calls per turn by route from the emulator's call record, next to the calls
the protocol cannot do without; token refreshes are counted apart (one account, so at most one
refresh per run while its access token lives).

    python bench/upstream_calls.py [--turns 10] [--protocol web|legacy|both]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kimi import create_app  # noqa: E402
from kimi.settings import Settings  # noqa: E402
from kimi_emulator import EmulatorServer  # noqa: E402

KEPT_TURNS = 3
CHAT_ID_IN_PATH = re.compile(r"^/api/chat/[0-9a-z]{20}")
AUTH_ROUTES = {
    "POST /api/account.gateway.v1.AuthService/RefreshToken",
    "GET /api/auth/token/refresh",
    "GET /api/user",
}
WEB_CHAT = "POST /apiv2/kimi.gateway.chat.v1.ChatService/Chat"
WEB_DELETE = "POST /apiv2/kimi.chat.v1.ChatService/DeleteChat"
LEGACY_NEW_CHAT = "POST /api/chat"
LEGACY_COMPLETION = "POST /api/chat/{id}/completion/stream"
LEGACY_DELETE = "DELETE /api/chat/{id}"


def needed_calls(protocol: str, kept: bool, turns: int) -> Counter:
    """The calls a scenario cannot do without: one chat call a turn, plus creating and deleting
    the chat where the protocol asks for it."""
    if protocol == "web":
        return Counter({WEB_CHAT: turns} if kept else {WEB_CHAT: turns, WEB_DELETE: turns})
    if kept:
        return Counter({LEGACY_NEW_CHAT: 1, LEGACY_COMPLETION: turns})
    return Counter({LEGACY_NEW_CHAT: turns, LEGACY_COMPLETION: turns, LEGACY_DELETE: turns})


def route(call: dict) -> str:
    return f"{call['method']} {CHAT_ID_IN_PATH.sub('/api/chat/{id}', call['path'])}"


class Turns:
    """Sends turns to the app as one account and reads back what the emulator saw."""

    def __init__(self, emulator: EmulatorServer, protocol: str, state_dir: str) -> None:
        settings = Settings(
            protocol=protocol,
            base_url=emulator.url,
            auth_url=emulator.url,
            state_path=str(Path(state_dir) / "state.db"),
        )
        self.client = create_app(settings).test_client()
        self.emulator = emulator
        self.token = emulator.state.create_user("bench").refresh_token

    def send(self, text: str, stream: bool, conversation_id: str | None = None) -> str:
        """One turn; returns the completion id (the Kimi chat id of a kept conversation)."""
        body = {"model": "kimi", "stream": stream, "messages": [{"role": "user", "content": text}]}
        if conversation_id:
            body["conversation_id"] = conversation_id
        response = self.client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        data = response.get_data(as_text=True)
        response.close()  # runs the stream's clean-up (deleting a one-shot chat) now
        if response.status_code != 200:
            raise RuntimeError(f"turn failed: {response.status_code} {data[:300]}")
        first = data.split("\n\n", 1)[0].removeprefix("data: ") if stream else data
        return json.loads(first)["id"]

    def calls(self) -> Counter:
        """Calls by route since the last time, and forget them."""
        calls = Counter(route(call) for call in self.emulator.state.calls())
        self.emulator.state.clear_calls()
        return calls


def one_shot(turns: Turns, count: int, stream: bool) -> int:
    for index in range(count):
        turns.send(f"one-shot question {index}", stream)
    return count


def kept(turns: Turns, count: int, stream: bool) -> int:
    chat_id = turns.send("first question of a kept chat", stream, conversation_id="none")
    for index in range(1, KEPT_TURNS):
        turns.send(f"follow-up {index}", stream, conversation_id=chat_id)
    return KEPT_TURNS


def report(label: str, calls: Counter, needed: Counter, count: int) -> bool:
    """Print calls per turn by route; PASS when turns make only the needed calls."""
    auth = Counter({r: n for r, n in calls.items() if r in AUTH_ROUTES})
    turn_calls = calls - auth
    print(f"  {label}, {count} turns: {sum(turn_calls.values()) / count:.2f} calls per turn")
    for name in sorted(turn_calls.keys() | needed.keys()):
        print(f"    {turn_calls[name] / count:5.2f}  {name}  (needed {needed[name] / count:.2f})")
    if auth:
        print("    token refresh: " + ", ".join(f"{n} x {r}" for r, n in sorted(auth.items())))
    ok = turn_calls == needed and all(n <= 1 for n in auth.values())
    print(f"    {'PASS' if ok else 'FAIL'}")
    return ok


def run_protocol(emulator: EmulatorServer, protocol: str, count: int) -> bool:
    print(f"== {protocol}")
    results = []
    with tempfile.TemporaryDirectory() as state_dir:
        turns = Turns(emulator, protocol, state_dir)
        for stream in (True, False):
            mode = "streamed" if stream else "not streamed"
            for name, scenario in (("one-shot", one_shot), ("kept conversation", kept)):
                done = scenario(turns, count, stream)
                needed = needed_calls(protocol, scenario is kept, done)
                results.append(report(f"{name}, {mode}", turns.calls(), needed, done))
    return all(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, help="one-shot turns per mode")
    parser.add_argument("--protocol", choices=("web", "legacy", "both"), default="both")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    protocols = ("web", "legacy") if args.protocol == "both" else (args.protocol,)
    with EmulatorServer() as emulator:
        passed = [run_protocol(emulator, protocol, args.turns) for protocol in protocols]
    print("PASS" if all(passed) else "FAIL")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
