"""A light asyncio load client: N concurrent streamed chat completions, measured per stream.

Raw asyncio streams and a small HTTP/1.1 reader (chunked or close-delimited bodies), so the
client costs little next to the service it measures. Per stream: the time to the first content
chunk, content chunks, and errors (a status other than 200, an in-stream ``error``, no
``[DONE]``, a broken connection, the deadline passed). Every prompt carries ``tag=<hex>`` so a
stand-in can match its own timings to each stream.

    python bench/loadclient.py http://127.0.0.1:8000 --streams 100 --prompt "events=500 interval=10"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

COMPLETIONS_PATH = "/v1/chat/completions"
DONE = b"[DONE]"
DATA_PREFIX = b"data: "
ERROR_TEXT_LIMIT = 120


@dataclass
class StreamResult:
    """What one stream did; times are ``time.monotonic()``."""

    tag: str
    started: float
    first_content: float | None = None
    ended: float | None = None
    chunks: int = 0  # chunks with non-empty delta.content
    done: bool = False
    error: str | None = None

    @property
    def first_token_seconds(self) -> float | None:
        return None if self.first_content is None else self.first_content - self.started


@dataclass(frozen=True)
class Target:
    """Where to send the streams, and as whom."""

    host: str
    port: int
    token: str = "bench-token"
    model: str = "kimi"

    @classmethod
    def from_url(cls, url: str, **kwargs: str) -> Target:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, **kwargs)


def tagged(prompt: str) -> tuple[str, str]:
    """A fresh tag, and the prompt that carries it."""
    tag = uuid.uuid4().hex
    return tag, f"{prompt} tag={tag}"


async def run_streams(target: Target, prompts: Iterable[str], timeout: float) -> list[StreamResult]:
    """Open one stream per prompt, all at once; each gets ``timeout`` seconds to finish."""
    return list(await asyncio.gather(*(stream(target, p, timeout) for p in prompts)))


async def stream(target: Target, prompt: str, timeout: float) -> StreamResult:
    """One streamed completion, read to its end (or its deadline)."""
    tag, text = tagged(prompt)
    result = StreamResult(tag, time.monotonic())
    try:
        await asyncio.wait_for(_read_stream(target, text, result), timeout)
    except asyncio.TimeoutError:
        result.error = "deadline passed"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]
    result.ended = time.monotonic()
    if result.error is None and not result.done:
        result.error = "no [DONE]"
    return result


async def _read_stream(target: Target, prompt: str, result: StreamResult) -> None:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(_request(target, prompt))
        status = int((await reader.readline()).split()[1])
        headers = await _headers(reader)
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        body = _chunked_body(reader) if chunked else _body_to_close(reader)
        if status != 200:
            text = b"".join([part async for part in body]).decode(errors="replace")
            result.error = f"HTTP {status}: {text}"[:ERROR_TEXT_LIMIT]
            return
        await _read_events(body, result)
    finally:
        writer.close()


def _request(target: Target, prompt: str) -> bytes:
    body = json.dumps(
        {
            "model": target.model,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()
    head = (
        f"POST {COMPLETIONS_PATH} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Authorization: Bearer {target.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _chunked_body(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        piece = await reader.readexactly(size + 2)  # the data, then CRLF
        yield piece[:-2]


async def _body_to_close(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while piece := await reader.read(65536):
        yield piece


async def _read_events(body: AsyncIterator[bytes], result: StreamResult) -> None:
    # Server-sent events end with a blank line; one read may hold several, or half of one.
    buffer = b""
    async for piece in body:
        buffer += piece
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(DATA_PREFIX):
                _on_data(event[len(DATA_PREFIX) :], result)


def _on_data(data: bytes, result: StreamResult) -> None:
    if data == DONE:
        result.done = True
        return
    message = json.loads(data)
    if "error" in message:
        result.error = f"in-stream error: {message['error'].get('message')}"[:ERROR_TEXT_LIMIT]
        return
    choices = message.get("choices") or [{}]
    if choices[0].get("delta", {}).get("content"):
        result.chunks += 1
        if result.first_content is None:
            result.first_content = time.monotonic()


def percentile(values: Iterable[float | None], share: float) -> float:
    """Nearest-rank percentile; a missing value (no first token) counts as infinitely late."""
    ordered = sorted(math.inf if v is None else v for v in values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def peak_open(results: Iterable[StreamResult]) -> int:
    """The most streams relaying content at the same moment (first content to end)."""
    moments = []
    for result in results:
        if result.first_content is not None and result.ended is not None:
            moments += [(result.first_content, 1), (result.ended, -1)]
    open_now = peak = 0
    for _, step in sorted(moments):
        open_now += step
        peak = max(peak, open_now)
    return peak


def error_counts(results: Iterable[StreamResult]) -> Counter:
    """Errors by kind: each message up to its first colon (``HTTP 429``, ``deadline passed``)."""
    return Counter(r.error.split(":")[0] for r in results if r.error)


def describe(results: list[StreamResult]) -> list[str]:
    """Summary lines: streams, errors by kind, first-token percentiles, chunks, peak open."""
    first = [r.first_token_seconds for r in results]
    errors = error_counts(results)
    kinds = ", ".join(f"{count} {kind}" for kind, count in errors.most_common())
    return [
        f"streams {len(results)}, errors {sum(errors.values())}" + (f" ({kinds})" if kinds else ""),
        f"first token p50 {_ms(percentile(first, 0.5))}, p95 {_ms(percentile(first, 0.95))}, "
        f"max {_ms(percentile(first, 1.0))}",
        f"content chunks {sum(r.chunks for r in results)}, peak open at once {peak_open(results)}",
    ]


def _ms(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--prompt", default="events=100 interval=10", help="the user message")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per stream")
    parser.add_argument("--token", default="bench-token", help="the Bearer token to send")
    args = parser.parse_args()
    target = Target.from_url(args.url, token=args.token)
    results = asyncio.run(run_streams(target, [args.prompt] * args.streams, args.timeout))
    print("\n".join(describe(results)))
    return 1 if error_counts(results) else 0


if __name__ == "__main__":
    sys.exit(main())
