"""Small helpers the tests share: SSE decoding, a chat call, emulator call filters."""

from __future__ import annotations

import json


def sse_events(body: bytes | str) -> list:
    """Decode an SSE body into its ``data:`` payloads (JSON, or the string ``[DONE]``)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    events = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def chat(client, headers: dict, content: str = "hi", **body):
    body.setdefault("model", "kimi")
    body.setdefault("messages", [{"role": "user", "content": content}])
    return client.post("/v1/chat/completions", json=body, headers=headers)


def upstream_calls(emulator, path_part: str) -> list[dict]:
    return [c for c in emulator.state.calls() if path_part in c["path"]]
