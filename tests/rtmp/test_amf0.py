"""AMF0 encode/decode: byte vectors, round trips, and garbage never raising untyped errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.amf0 import (
    MAX_DEPTH,
    UNDEFINED,
    AmfDate,
    AmfError,
    AmfValue,
    EcmaArray,
    decode,
    decode_all,
    encode,
    encode_all,
)


def test_byte_vectors() -> None:
    assert encode(1.0) == b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    assert encode(True) == b"\x01\x01"
    assert encode("ab") == b"\x02\x00\x02ab"
    assert encode(None) == b"\x05"
    assert encode(UNDEFINED) == b"\x06"
    assert encode({"a": 1}) == b"\x03\x00\x01a" + encode(1.0) + b"\x00\x00\x09"
    assert encode({"a": None}) == b"\x03\x00\x01a\x05\x00\x00\x09"
    assert encode(EcmaArray(x=False)) == b"\x08\x00\x00\x00\x01\x00\x01x\x01\x00\x00\x00\x09"
    assert encode([None, True]) == b"\x0a\x00\x00\x00\x02\x05\x01\x01"
    assert encode(AmfDate(0.0, 0)) == b"\x0b" + bytes(8) + b"\x00\x00"
    long = "x" * 70000
    assert encode(long)[:5] == b"\x0c\x00\x01\x11\x70"


def test_connect_command_as_ffmpeg_sends_it() -> None:
    body = encode_all("connect", 1.0, {"app": "live", "type": "nonprivate"})
    assert decode_all(body) == ["connect", 1.0, {"app": "live", "type": "nonprivate"}]


def test_decode_types() -> None:
    value, end = decode(encode(EcmaArray(a=1.0)))
    assert isinstance(value, EcmaArray) and value == {"a": 1.0}
    assert end == len(encode(EcmaArray(a=1.0)))
    assert decode(b"\x06")[0] is UNDEFINED
    assert decode(encode(3))[0] == 3.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x00\x00\x00\x00\x05\x02", "string length truncated at byte 7"),
        (b"\x00\x00", "number truncated"),
        (b"\x02\x00\x05ab", "string truncated"),
        (b"\x02\x00\x01\xff", "not valid UTF-8"),
        (b"\x07\x00\x01", "unsupported AMF0 type marker 0x07"),
        (b"\x11", "unsupported AMF0 type marker 0x11"),  # AMF3 switch
        (b"\x0a\xff\xff\xff\xff", "strict array count"),
        (b"\x03\x00\x01a", "type marker truncated"),
    ],
)
def test_errors_are_typed_and_exact(data: bytes, message: str) -> None:
    with pytest.raises(AmfError, match=message):
        decode_all(data)


def test_empty_input() -> None:
    assert decode_all(b"") == []
    with pytest.raises(AmfError, match="type marker truncated at byte 0"):
        decode(b"")


def test_depth_is_bounded() -> None:
    deep = b"\x0a\x00\x00\x00\x01" * (MAX_DEPTH + 5) + b"\x05"
    with pytest.raises(AmfError, match="nest deeper"):
        decode(deep)
    value: AmfValue = None
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(AmfError, match="nest deeper"):
        encode(value)


def test_unencodable() -> None:
    with pytest.raises(AmfError, match="no AMF0 type for bytes"):
        encode(b"x")  # type: ignore[arg-type]
    with pytest.raises(AmfError, match="object key of 70000 bytes"):
        encode({"k" * 70000: 1})


keys = st.text(max_size=8)
scalars = st.one_of(
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=20),
    st.none(),
    st.just(UNDEFINED),
    st.builds(AmfDate, st.floats(allow_nan=False), st.integers(-32768, 32767)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(keys, children, max_size=4).map(EcmaArray),
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: AmfValue) -> None:
    data = encode(value)
    decoded, end = decode(data)
    assert end == len(data)
    assert decoded == value
    assert type(decoded) is (float if type(value) is int else type(value))
    assert encode(decoded) == data


@given(st.binary(max_size=200))
def test_garbage_raises_only_amf_errors(data: bytes) -> None:
    try:
        decoded = decode_all(data)
    except AmfError:
        return
    assert encode_all(*decoded) is not None  # what decodes can be encoded again


def test_nan_round_trips_as_nan() -> None:
    value, _ = decode(encode(math.nan))
    assert isinstance(value, float) and math.isnan(value)
