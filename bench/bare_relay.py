"""What the server alone costs: a WSGI app with no service code, relaying the stand-in's text.

It answers ``POST /v1/chat/completions`` by opening a connection to the stand-in's web chat
route, and for every network read that carries text pieces it yields one SSE chunk per piece (a
constant chunk, like the service's for a plain text event). No Flask, no parsing, no encoder:
one read from Kimi's side and one write to the client per event, through gunicorn with the
shipped gunicorn.conf.py and its gevent worker. ``bench/streams.py`` runs its relay figure
through this app too, so the service's CPU per event can be read against the stack's own.

Reads ``KIMI_BASE_URL`` (the stand-in) as the service does. Not shipped; a benchmark fixture.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

UPSTREAM = urlsplit(os.environ.get("KIMI_BASE_URL", "http://127.0.0.1:8100"))
CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
TEXT_PIECE = b'"block.text.content"'  # the mask of every text piece in the stand-in's stream
CHUNKED_END = b"0\r\n\r\n"
READ_SIZE = 64 * 1024
CHUNK = (
    "data: "
    + json.dumps(
        {
            "id": "chatcmpl-bare",
            "object": "chat.completion.chunk",
            "created": 1767225600,
            "model": "kimi",
            "choices": [
                {"index": 0, "delta": {"content": "word "}, "logprobs": None, "finish_reason": None}
            ],
        },
        separators=(",", ":"),
    )
    + "\n\n"
).encode()


def app(environ: dict, start_response) -> Iterator[bytes] | list[bytes]:
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status":"ok"}']
    length = int(environ.get("CONTENT_LENGTH") or 0)
    prompt = json.loads(environ["wsgi.input"].read(length))["messages"][-1]["content"]
    upstream = socket.create_connection((UPSTREAM.hostname, UPSTREAM.port))
    payload = json.dumps({"message": prompt}).encode()
    upstream.sendall(
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {UPSTREAM.netloc}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    start_response("200 OK", [("Content-Type", "text/event-stream")])
    return relay(upstream)


def relay(upstream: socket.socket) -> Iterator[bytes]:
    try:
        while data := upstream.recv(READ_SIZE):
            if pieces := data.count(TEXT_PIECE):
                yield CHUNK * pieces
            if data.endswith(CHUNKED_END):
                break
        yield b"data: [DONE]\n\n"
    finally:
        upstream.close()
