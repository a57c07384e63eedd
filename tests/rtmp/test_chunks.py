"""RTMP chunk stream: header vectors, fmt choice, extended timestamps, round trips, fuzz."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.chunks import (
    MSG_ABORT,
    MSG_AUDIO,
    MSG_SET_CHUNK_SIZE,
    MSG_VIDEO,
    ChunkError,
    ChunkReader,
    ChunkWriter,
    Message,
    basic_header,
)


def test_basic_header_sizes() -> None:
    assert basic_header(0, 2) == b"\x02"
    assert basic_header(3, 63) == b"\xff"
    assert basic_header(1, 64) == b"\x40\x00"
    assert basic_header(0, 319) == b"\x00\xff"
    assert basic_header(2, 320) == b"\x81\x00\x01"
    assert basic_header(0, 65599) == b"\x01\xff\xff"
    with pytest.raises(ValueError, match=r"chunk stream id 1 outside 2\.\.65599"):
        basic_header(0, 1)
    with pytest.raises(ValueError, match="chunk stream id 65600"):
        basic_header(0, 65600)


def test_fmt_choice_per_chunk_stream() -> None:
    writer = ChunkWriter()
    first = writer.write(6, MSG_VIDEO, 1, 1000, b"abc")
    # fmt 0: ts 1000, length 3, type 9, stream id 1 (little-endian)
    assert first == b"\x06" + b"\x00\x03\xe8" + b"\x00\x00\x03\x09" + b"\x01\x00\x00\x00" + b"abc"
    same = writer.write(6, MSG_VIDEO, 1, 1040, b"def")
    assert same == b"\x86" + b"\x00\x00\x28" + b"def"  # fmt 2: delta 40
    longer = writer.write(6, MSG_VIDEO, 1, 1080, b"ghij")
    assert longer == b"\x46" + b"\x00\x00\x28" + b"\x00\x00\x04\x09" + b"ghij"  # fmt 1
    back = writer.write(6, MSG_VIDEO, 1, 500, b"ghij")
    assert back[0] >> 6 == 0  # time went backwards: absolute again
    other_stream = writer.write(6, MSG_VIDEO, 2, 600, b"ghij")
    assert other_stream[0] >> 6 == 0
    # Another csid has its own state.
    assert writer.write(4, MSG_AUDIO, 1, 1100, b"x")[0] == 0x04


def test_continuation_chunks_are_fmt3() -> None:
    writer = ChunkWriter(chunk_size=4)
    data = writer.write(6, MSG_VIDEO, 1, 0, b"0123456789")
    assert data == (
        b"\x06\x00\x00\x00\x00\x00\x0a\x09\x01\x00\x00\x00"
        + b"0123"
        + b"\xc6"
        + b"4567"
        + b"\xc6"
        + b"89"
    )


def test_extended_timestamp_repeated_on_continuation_chunks() -> None:
    writer = ChunkWriter(chunk_size=4)
    ts = 0x01000000
    data = writer.write(6, MSG_VIDEO, 1, ts, b"01234567")
    ext = ts.to_bytes(4, "big")
    assert data == (
        b"\x06\xff\xff\xff\x00\x00\x08\x09\x01\x00\x00\x00"
        + ext
        + b"0123"
        + b"\xc6"
        + ext
        + b"4567"
    )
    reader = ChunkReader(chunk_size=4)
    assert reader.feed(data) == [Message(6, MSG_VIDEO, 1, ts, b"01234567")]


def test_reader_applies_set_chunk_size_and_abort() -> None:
    server = ChunkWriter()
    data = server.write(2, MSG_SET_CHUNK_SIZE, 0, 0, (8).to_bytes(4, "big"))
    server.set_chunk_size(8)
    data += server.write(3, 20, 0, 0, b"0123456789abcdef")
    reader = ChunkReader()
    messages = reader.feed(data)
    assert reader.chunk_size == 8
    assert messages[-1].payload == b"0123456789abcdef"
    # A message cut short by Abort: its csid starts over with the next message.
    partial = server.write(5, MSG_AUDIO, 1, 0, b"0123456789")[: 12 + 8]
    abort = server.write(2, MSG_ABORT, 0, 0, (5).to_bytes(4, "big"))
    fresh = server.write(5, MSG_AUDIO, 1, 20, b"xy")
    got = reader.feed(partial + abort + fresh)
    assert [m.type_id for m in got] == [MSG_ABORT, MSG_AUDIO]
    assert got[-1].payload == b"xy" and got[-1].timestamp == 20


def test_reader_fmt3_new_message_reuses_delta() -> None:
    data = b"\x04\x00\x00\x0a\x00\x00\x01\x08\x01\x00\x00\x00a"  # fmt 0, ts 10
    data += b"\x84\x00\x00\x14b"  # fmt 2, delta 20 -> 30
    data += b"\xc4c"  # fmt 3: same delta -> 50
    assert [(m.timestamp, m.payload) for m in ChunkReader().feed(data)] == [
        (10, b"a"),
        (30, b"b"),
        (50, b"c"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x46\x00\x00\x00\x00\x00\x01\x09", "chunk fmt 1 on chunk stream 6 before any fmt 0"),
        (b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x00\x00", "Set Chunk Size 0"),
        (b"\x02\x00\x00\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00\x00", "shorter than 4 bytes"),
    ],
)
def test_reader_errors(data: bytes, message: str) -> None:
    with pytest.raises(ChunkError, match=message):
        ChunkReader().feed(data)


messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 6, 8, 63, 64, 319, 320, 65599]),
        st.sampled_from([8, 9, 18, 20]),
        st.integers(0, 3),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=600),
    ),
    max_size=12,
)


@given(messages, st.integers(1, 700), st.integers(1, 97))
def test_round_trip_any_split(
    items: list[tuple[int, int, int, int, bytes]], chunk_size: int, piece: int
) -> None:
    writer = ChunkWriter(chunk_size=chunk_size)
    data = b"".join(writer.write(*item) for item in items)
    reader = ChunkReader(chunk_size=chunk_size)
    got: list[Message] = []
    for pos in range(0, len(data), piece):  # bytes arrive in arbitrary pieces
        got += reader.feed(data[pos : pos + piece])
    assert [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in got] == items


@given(st.binary(max_size=300))
def test_garbage_raises_only_chunk_errors(data: bytes) -> None:
    with contextlib.suppress(ChunkError):
        ChunkReader().feed(data)
