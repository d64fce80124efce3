"""The client's Connect codec and the emulator's own codec agree, byte for byte, both ways.

The two are written apart so that a framing mistake cannot hide by being the same on both sides;
these tests are where they meet. Every stream is also cut at every byte offset: the header, the
payload and multi-byte UTF-8 characters all split across reads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import ROOT

from kimi.upstream.connect import END_STREAM_FLAG, FrameDecoder, encode_frame
from kimi_emulator.frames import END_OF_STREAM, FrameReader, read_body, write_frame

MESSAGES = [
    {"chat": {"id": "chat-1", "name": "你好，世界"}},
    {"heartbeat": {}},
    {"op": "append", "mask": "block.think.content", "block": {"think": {"content": "想一想 🤔"}}},
    {"op": "append", "mask": "block.text.content", "block": {"text": {"content": "答案：🛠 42 ✅"}}},
    {"op": "set", "mask": "message.status", "message": {"status": "MESSAGE_STATUS_COMPLETED"}},
]
LIMIT_ERROR = {"error": {"code": "resource_exhausted", "message": "请求太多，3 小时后再试 🚫"}}
# (flags, message) in order: the data, then an end of stream that carries an error.
EXPECTED = [(0, message) for message in MESSAGES] + [(END_STREAM_FLAG, LIMIT_ERROR)]


def emulator_stream() -> bytes:
    return b"".join(write_frame(message, flags) for flags, message in EXPECTED)


def client_stream() -> bytes:
    return b"".join(encode_frame(message, flags) for flags, message in EXPECTED)


def client_reads(pieces: list[bytes]) -> list[tuple[int, object]]:
    decoder = FrameDecoder()
    frames = [frame for piece in pieces for frame in decoder.feed(piece)]
    assert decoder.pending == 0
    return [(frame.flags, frame.message) for frame in frames]


def emulator_reads(pieces: list[bytes]) -> list[tuple[int, object]]:
    reader = FrameReader()
    envelopes = [envelope for piece in pieces for envelope in reader.feed(piece)]
    assert reader.buffered == 0
    return [(envelope.flags, envelope.message) for envelope in envelopes]


def cut_at(data: bytes, offset: int) -> list[bytes]:
    return [data[:offset], data[offset:]]


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


def test_both_sides_agree_on_the_end_of_stream_flag():
    assert END_OF_STREAM == END_STREAM_FLAG == 0x02


def test_client_reads_the_emulator_stream_cut_at_every_offset():
    data = emulator_stream()
    for offset in range(len(data) + 1):
        assert client_reads(cut_at(data, offset)) == EXPECTED, f"cut at byte {offset}"


def test_client_reads_the_emulator_stream_one_byte_at_a_time():
    assert client_reads(one_byte_at_a_time(emulator_stream())) == EXPECTED


def test_emulator_reads_the_client_stream_cut_at_every_offset():
    data = client_stream()
    for offset in range(len(data) + 1):
        assert emulator_reads(cut_at(data, offset)) == EXPECTED, f"cut at byte {offset}"


def test_emulator_reads_the_client_stream_one_byte_at_a_time():
    assert emulator_reads(one_byte_at_a_time(client_stream())) == EXPECTED


def test_only_the_last_frame_ends_the_stream_and_it_carries_the_error():
    frames = FrameDecoder().feed(emulator_stream())
    assert [frame.end_stream for frame in frames] == [False] * len(MESSAGES) + [True]
    assert frames[-1].message["error"]["message"] == "请求太多，3 小时后再试 🚫"


def test_emulator_reads_a_client_chat_request_as_one_plain_frame():
    request = {"message": {"role": "user", "blocks": [{"text": {"content": "讲个笑话 😄"}}]}}
    envelopes = read_body(encode_frame(request))
    assert [(envelope.flags, envelope.message) for envelope in envelopes] == [(0, request)]
    assert not envelopes[0].closes_stream


# -- the product and the emulator never import each other -------------------------------------


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of the modules ``source`` (the text of ``module``) imports.

    ``module`` is dotted as its path is (``kimi.__init__`` for ``kimi/__init__.py``), so its
    package is everything before the last part; a relative import climbs from there.
    """
    package = module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: max(0, len(package) - node.level + 1)] if node.level else []
            parts = [*base, *(node.module.split(".") if node.module else [])]
            names.add(".".join(parts))
            names.update(".".join([*parts, alias.name]) for alias in node.names)
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports_of_package(package: str) -> dict[str, set[str]]:
    return {
        module_name(path): imported_modules(path.read_text(encoding="utf-8"), module_name(path))
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def reaching_into(imports: dict[str, set[str]], package: str) -> dict[str, list[str]]:
    return {
        module: sorted(name for name in names if name.split(".")[0] == package)
        for module, names in imports.items()
        if any(name.split(".")[0] == package for name in names)
    }


@pytest.mark.parametrize(
    "source, module, expected",
    [
        ("from kimi.upstream.connect import encode_frame", "kimi_emulator.web", "kimi"),
        ("import kimi", "kimi_emulator.app", "kimi"),
        ("from ... import kimi_emulator", "kimi.upstream.web", "kimi_emulator"),
        ("from .frames import write_frame", "kimi_emulator.web", "kimi_emulator"),
        ("from . import web", "kimi_emulator.__init__", "kimi_emulator"),
    ],
)
def test_the_import_scan_sees_absolute_and_relative_imports(source, module, expected):
    assert expected in {name.split(".")[0] for name in imported_modules(source, module)}


def test_no_product_module_imports_the_emulator():
    assert reaching_into(imports_of_package("kimi"), "kimi_emulator") == {}


def test_no_emulator_module_imports_the_product():
    imports = imports_of_package("kimi_emulator")
    assert "kimi_emulator.web" in imports
    assert reaching_into(imports, "kimi") == {}
