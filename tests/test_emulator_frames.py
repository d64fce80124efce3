"""The emulator's own Connect codec: what it writes and what it refuses to read."""

from __future__ import annotations

import pytest

from kimi_emulator.frames import (
    COMPRESSED,
    END_OF_STREAM,
    MAX_PAYLOAD_SIZE,
    FrameReader,
    FramingError,
    read_body,
    write_frame,
)


def test_written_frame_is_flag_byte_big_endian_length_and_utf8_json():
    data = write_frame({"text": "你好"}, END_OF_STREAM)

    payload = '{"text": "你好"}'.encode()
    assert data[0] == END_OF_STREAM
    assert data[1:5] == len(payload).to_bytes(4, "big") == b"\x00\x00\x00\x12"
    assert data[5:] == payload


def test_several_frames_in_one_body_read_in_order():
    body = write_frame({"n": 1}) + write_frame({"n": 2}) + write_frame({}, END_OF_STREAM)

    envelopes = read_body(body)

    assert [(e.flags, e.message) for e in envelopes] == [(0, {"n": 1}), (0, {"n": 2}), (2, {})]
    assert [e.closes_stream for e in envelopes] == [False, False, True]


@pytest.mark.parametrize("missing", [1, 4, 6])
def test_a_body_that_stops_inside_a_frame_is_refused(missing):
    body = write_frame({"prompt": "a whole sentence"})

    with pytest.raises(FramingError, match="stops"):
        read_body(body[:-missing])


def test_the_reader_keeps_a_partial_frame_for_the_next_piece():
    data = write_frame({"n": 1})
    reader = FrameReader()

    assert reader.feed(data[:3]) == []
    assert reader.buffered == 3
    assert [e.message for e in reader.feed(data[3:])] == [{"n": 1}]
    assert reader.buffered == 0


def test_a_compressed_frame_is_refused():
    with pytest.raises(FramingError, match="compressed"):
        read_body(bytes([COMPRESSED]) + (2).to_bytes(4, "big") + b"{}")


def test_an_oversized_length_is_refused_before_its_payload_arrives():
    prefix = b"\x00" + (MAX_PAYLOAD_SIZE + 1).to_bytes(4, "big")

    with pytest.raises(FramingError, match="limit"):
        FrameReader().feed(prefix)


@pytest.mark.parametrize(
    "payload, reason", [(b"", "not JSON"), (b"{nope", "not JSON"), (b'"\xff"', "not UTF-8")]
)
def test_a_payload_that_is_not_utf8_json_is_refused(payload, reason):
    with pytest.raises(FramingError, match=reason):
        read_body(b"\x00" + len(payload).to_bytes(4, "big") + payload)
