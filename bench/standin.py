"""A light, paced Kimi stand-in for load benchmarks: both protocols, asyncio, stdlib only.

It answers just what the service needs for plain text turns, and paces the answer: ``events``
text pieces, one every ``interval`` milliseconds. Both come from the prompt when it says so
(``events=500 interval=10``), else from the command line. A prompt that carries ``tag=<hex>``
has the moment its first text piece was written recorded (``time.monotonic()``, one clock for
every process on Linux), so a load client can tell the latency the service adds.

    python bench/standin.py --port 8100 [--events 20] [--interval 10]

``GET /_bench/record`` answers what happened so far (first text times by tag, text pieces
sent, calls by route); ``POST /_bench/reset`` forgets it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

WEB_REFRESH = ("POST", "/api/account.gateway.v1.AuthService/RefreshToken")
WEB_CHAT = ("POST", "/apiv2/kimi.gateway.chat.v1.ChatService/Chat")
WEB_DELETE = ("POST", "/apiv2/kimi.chat.v1.ChatService/DeleteChat")
LEGACY_REFRESH = ("GET", "/api/auth/token/refresh")
LEGACY_USER = ("GET", "/api/user")
LEGACY_NEW_CHAT = ("POST", "/api/chat")
LEGACY_COMPLETION = re.compile(r"/api/chat/[0-9a-z]+/completion/stream")
LEGACY_CHAT = re.compile(r"/api/chat/[0-9a-z]+")
LEGACY_CHAT_ID = re.compile(r"^/api/chat/[0-9a-z]+")  # recorded as {id}: calls count by route
CONTROL_PREFIX = "/_bench/"
RECORD = ("GET", "/_bench/record")
RESET = ("POST", "/_bench/reset")

USER_ID = "benchuser0000000000a"
TOKEN_LIFETIME = 30 * 24 * 3600
WORD = "word "
END_STREAM_FLAG = 0x02
EVENTS = re.compile(rb"events=(\d+)")
INTERVAL = re.compile(rb"interval=(\d+(?:\.\d+)?)")
TAG = re.compile(rb"tag=([0-9a-f]+)")


@dataclass
class Pace:
    """How one answer is paced, and its tag when the prompt names one."""

    events: int
    interval: float  # seconds
    tag: str | None


@dataclass
class Record:
    """What the stand-in did: the benchmark reads it through ``/_bench/record``."""

    first_text_at: dict[str, float] = field(default_factory=dict)
    text_events: int = 0
    calls: Counter = field(default_factory=Counter)

    def as_json(self) -> dict:
        return {
            "first_text_at": self.first_text_at,
            "text_events": self.text_events,
            "calls": dict(self.calls),
        }


def chunk(data: bytes) -> bytes:
    """One piece of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def connect_frame(message: dict, flags: int = 0) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def sse_line(message: dict) -> bytes:
    return b"data: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


# The text piece never changes, so each protocol's is encoded once.
TEXT_BLOCK = {"id": "b2", "text": {"content": WORD}}
WEB_TEXT = chunk(connect_frame({"op": "append", "mask": "block.text.content", "block": TEXT_BLOCK}))
LEGACY_TEXT = chunk(sse_line({"event": "cmpl", "text": WORD}))


def access_token() -> str:
    """An unsigned JWT the service reads as an access token (it never checks signatures)."""
    claims = {"typ": "access", "sub": USER_ID, "exp": int(time.time()) + TOKEN_LIFETIME}
    parts = [{"alg": "none", "typ": "JWT"}, claims]
    encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=") for p in parts]
    return b".".join([*encoded, b"bench"]).decode()


class StandIn:
    """The request handler: one coroutine per connection, keep-alive honoured."""

    def __init__(self, events: int, interval: float) -> None:
        self.default = Pace(events, interval, None)
        self.record = Record()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the service closed the connection (pooled and idle, or its client left)
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = dict(_header(line) for line in header_lines if line)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path = target.split("?", 1)[0]
        if not path.startswith(CONTROL_PREFIX):
            self.record.calls[f"{method} {LEGACY_CHAT_ID.sub('/api/chat/{id}', path)}"] += 1
        await self._route(method, path, headers, body, writer)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    async def _route(
        self, method: str, path: str, headers: dict, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        route = (method, path)
        if route == WEB_REFRESH:
            token = json.loads(body).get("refresh_token", "")
            _json(writer, {"accessToken": access_token(), "refreshToken": token})
        elif route == LEGACY_REFRESH:
            token = headers.get("authorization", "").removeprefix("Bearer ")
            _json(writer, {"access_token": access_token(), "refresh_token": token})
        elif route == LEGACY_USER:
            _json(writer, {"id": USER_ID})
        elif route == LEGACY_NEW_CHAT:
            _json(writer, {"id": secrets.token_hex(10)})
        elif route == WEB_CHAT:
            await self._web_answer(self._pace(body), writer)
        elif method == "POST" and LEGACY_COMPLETION.fullmatch(path):
            await self._legacy_answer(self._pace(body), writer)
        elif route == WEB_DELETE or (method == "DELETE" and LEGACY_CHAT.fullmatch(path)):
            _json(writer, {})
        elif route == RECORD:
            _json(writer, self.record.as_json())
        elif route == RESET:
            self.record = Record()
            _json(writer, {})
        else:
            _json(writer, {"code": "not_found", "message": f"no route {method} {path}"}, 404)

    def _pace(self, body: bytes) -> Pace:
        events, interval, tag = EVENTS.search(body), INTERVAL.search(body), TAG.search(body)
        return Pace(
            int(events[1]) if events else self.default.events,
            float(interval[1]) / 1000 if interval else self.default.interval,
            tag[1].decode() if tag else None,
        )

    async def _web_answer(self, pace: Pace, writer: asyncio.StreamWriter) -> None:
        reply_id = str(uuid.uuid4())
        _stream_head(writer, "application/connect+json")
        writer.write(chunk(connect_frame({"chat": {"id": str(uuid.uuid4()), "name": "bench"}})))
        started = {"id": reply_id, "role": "assistant", "status": "MESSAGE_STATUS_GENERATING"}
        writer.write(chunk(connect_frame({"op": "set", "mask": "message", "message": started})))
        await self._paced_text(pace, WEB_TEXT, writer)
        done = {"id": reply_id, "status": "MESSAGE_STATUS_COMPLETED"}
        writer.write(chunk(connect_frame({"op": "set", "mask": "message.status", "message": done})))
        writer.write(chunk(connect_frame({"eventOffset": pace.events + 3, "done": {}})))
        writer.write(chunk(connect_frame({}, END_STREAM_FLAG)) + b"0\r\n\r\n")

    async def _legacy_answer(self, pace: Pace, writer: asyncio.StreamWriter) -> None:
        _stream_head(writer, "text/event-stream")
        writer.write(chunk(sse_line({"event": "resp", "id": secrets.token_hex(10)})))
        await self._paced_text(pace, LEGACY_TEXT, writer)
        ending = sse_line({"event": "done"}) + sse_line({"event": "all_done"})
        writer.write(chunk(ending) + b"0\r\n\r\n")

    async def _paced_text(self, pace: Pace, piece: bytes, writer: asyncio.StreamWriter) -> None:
        # On a schedule from the start, so slow wake-ups do not stretch the whole answer.
        start = time.monotonic()
        for index in range(pace.events):
            delay = start + index * pace.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(piece)
            if index == 0 and pace.tag:
                self.record.first_text_at[pace.tag] = time.monotonic()
            self.record.text_events += 1
            await writer.drain()


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _json(writer: asyncio.StreamWriter, message: dict, status: int = 200) -> None:
    body = json.dumps(message).encode()
    reason = "OK" if status == 200 else "Not Found"
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _stream_head(writer: asyncio.StreamWriter, content_type: str) -> None:
    writer.write(
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )


async def serve(port: int, events: int, interval_ms: float) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled."""
    standin = StandIn(events, interval_ms / 1000)
    server = await asyncio.start_server(standin.serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, default=20, help="text pieces per answer")
    parser.add_argument("--interval", type=float, default=10.0, help="milliseconds between them")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.events, args.interval))


if __name__ == "__main__":
    main()
