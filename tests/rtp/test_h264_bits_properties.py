"""Property tests for the small H264 bitstream helpers the fuzz harness also covers.

Gaps left by tests/rtp/test_h264.py (which has properties for the depacketizer
and parse_sps): the Annex B splitter, emulation prevention removal, the cheap
id readers and the SDP sprop-parameter-sets decoder (RFC 6184 §8.1).
"""

from __future__ import annotations

import base64
import contextlib

from hypothesis import given
from hypothesis import strategies as st

from rtp.depacketize.h264 import parse_sprop_parameter_sets
from rtp.h264_bits import (
    first_mb_in_slice,
    join_annexb,
    pps_id,
    split_annexb,
    sps_id,
    unescape_rbsp,
)

# NAL units as an encoder writes them: a header byte, then a payload in which
# emulation prevention leaves no 00 00 0x (x <= 3) and no trailing zero byte.
_nal = st.tuples(st.integers(1, 0x7F), st.binary(max_size=40)).map(
    lambda t: bytes([t[0]]) + t[1].replace(b"\x00\x00", b"\x00\x01") + b"\x80"
)


@given(st.lists(_nal, max_size=8), st.binary(max_size=6).map(lambda b: b.replace(b"\x00", b"")))
def test_annexb_split_inverts_join(nals: list[bytes], junk: bytes) -> None:
    # Bytes before the first start code belong to no NAL unit.
    assert split_annexb(junk + join_annexb(nals)) == nals


@given(st.binary(max_size=200))
def test_split_annexb_never_raises_and_yields_nonempty_units(data: bytes) -> None:
    nals = split_annexb(data)
    assert all(nals)
    assert sum(len(n) for n in nals) <= len(data)


def _escape_rbsp(rbsp: bytes) -> bytes:
    """What an encoder writes (H.264 §7.4.1): 03 after 00 00 when 00-03 would follow."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


@given(st.binary(max_size=100))
def test_unescape_rbsp_inverts_emulation_prevention(rbsp: bytes) -> None:
    escaped = _escape_rbsp(rbsp)
    assert unescape_rbsp(escaped) == rbsp
    assert len(unescape_rbsp(rbsp)) <= len(rbsp)


@given(st.binary(max_size=16))
def test_id_readers_raise_only_value_error(data: bytes) -> None:
    for reader, header, limit in ((pps_id, 0x68, 255), (sps_id, 0x67, 31)):
        try:
            value = reader(bytes([header]) + data)
        except ValueError:
            continue
        assert 0 <= value <= limit
    for header in (0x65, 0x41):
        with contextlib.suppress(ValueError):
            assert first_mb_in_slice(bytes([header]) + data) >= 0


@given(st.lists(st.binary(min_size=1, max_size=30), max_size=4))
def test_sprop_parameter_sets_round_trip(nals: list[bytes]) -> None:
    # Senders pad (or not): RFC 6184 §8.1 carries plain base64 joined with commas.
    unpadded = ",".join(base64.b64encode(n).decode().rstrip("=") for n in nals)
    padded = ",".join(base64.b64encode(n).decode() for n in nals)
    assert parse_sprop_parameter_sets(unpadded) == nals
    assert parse_sprop_parameter_sets(padded) == nals


@given(st.text(max_size=60))
def test_sprop_parameter_sets_raise_only_value_error(text: str) -> None:
    try:
        nals = parse_sprop_parameter_sets(text)
    except ValueError:
        return
    assert all(nals)
