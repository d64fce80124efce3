"""Connect envelope framing: encode, and decode from reads split anywhere."""

from __future__ import annotations

import struct
from itertools import pairwise

import pytest

from kimi.upstream.connect import (
    END_STREAM_FLAG,
    MAX_FRAME_SIZE,
    Frame,
    FrameDecoder,
    FrameError,
    encode_frame,
)

MESSAGES = [
    {"heartbeat": {}},
    {
        "op": "append",
        "mask": "block.text.content",
        "block": {"id": "b2", "text": {"content": "Hi"}},
    },
    {"op": "set", "mask": "block.text", "block": {"id": "b3", "text": {"content": "你好 🛠 ok"}}},
]
STREAM = b"".join(encode_frame(m) for m in MESSAGES) + encode_frame({}, flags=END_STREAM_FLAG)
EXPECTED = [Frame(0, m) for m in MESSAGES] + [Frame(END_STREAM_FLAG, {})]


def decode_in_pieces(data: bytes, cuts: list[int]) -> list[Frame]:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    bounds = [0, *cuts, len(data)]
    for start, end in pairwise(bounds):
        frames += decoder.feed(data[start:end])
    assert decoder.pending == 0
    return frames


@pytest.mark.parametrize("message", MESSAGES)
def test_encoded_frame_decodes_to_the_same_message(message):
    assert FrameDecoder().feed(encode_frame(message)) == [Frame(0, message)]


def test_frame_header_is_flag_byte_and_big_endian_length():
    data = encode_frame({"a": 1}, flags=END_STREAM_FLAG)
    assert data[0] == END_STREAM_FLAG
    assert struct.unpack(">I", data[1:5])[0] == len(data) - 5 == len(b'{"a":1}')


def test_several_frames_in_one_read_all_decode_in_order():
    assert FrameDecoder().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("offset", range(1, len(STREAM)))
def test_frame_split_at_any_offset_decodes_whole_frames(offset):
    assert decode_in_pieces(STREAM, [offset]) == EXPECTED


def test_stream_fed_one_byte_at_a_time_decodes_whole_frames():
    assert decode_in_pieces(STREAM, list(range(1, len(STREAM)))) == EXPECTED


@pytest.mark.parametrize("offset", range(1, 5))
def test_partial_header_yields_nothing_until_the_rest_arrives(offset):
    data = encode_frame({"done": {}})
    decoder = FrameDecoder()
    assert decoder.feed(data[:offset]) == []
    assert decoder.pending == offset
    assert decoder.feed(data[offset:]) == [Frame(0, {"done": {}})]


@pytest.mark.parametrize("flags, end", [(0, False), (END_STREAM_FLAG, True)])
def test_end_stream_flag_is_reported(flags, end):
    [frame] = FrameDecoder().feed(encode_frame({}, flags=flags))
    assert frame.end_stream is end


def test_utf8_payload_split_inside_a_multibyte_character_decodes_intact():
    text = "中文🛠é"
    data = encode_frame({"t": text})
    for offset in range(5, len(data)):
        assert decode_in_pieces(data, [offset]) == [Frame(0, {"t": text})]


def test_encoded_payload_keeps_non_ascii_as_utf8():
    assert "中文".encode() in encode_frame({"t": "中文"})


def test_oversized_length_raises_frame_error_before_the_payload_arrives():
    header = struct.pack(">BI", 0, MAX_FRAME_SIZE + 1)
    with pytest.raises(FrameError):
        FrameDecoder().feed(header)


def test_compressed_flag_raises_frame_error():
    with pytest.raises(FrameError):
        FrameDecoder().feed(encode_frame({"a": 1}, flags=0x01))


@pytest.mark.parametrize("payload", [b"<html>oops</html>", b"{not json", b"\xff\xfe\x00"])
def test_non_json_payload_raises_frame_error(payload):
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">BI", 0, len(payload)) + payload)


def test_empty_payload_decodes_to_empty_object():
    assert FrameDecoder().feed(struct.pack(">BI", END_STREAM_FLAG, 0)) == [
        Frame(END_STREAM_FLAG, {})
    ]
