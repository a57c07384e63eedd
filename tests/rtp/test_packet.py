"""Tests for rtp.packet: RFC 3550 §5.1 RTP packets over hand-built vectors."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rtp.packet import RTP_HEADER_SIZE, RtpPacket, is_rtcp
from tests.rtp import read_hex, read_one

RTP_VECTORS = ["pcmu_20ms.hex", "h264_extension.hex", "csrc_mixer.hex", "opus_padded.hex"]
RTCP_VECTORS = ["chrome_sr_sdes.hex", "pli.hex", "nack.hex", "softphone_rr_sdes_bye.hex"]


@pytest.mark.parametrize("name", RTP_VECTORS)
def test_vector_round_trips_byte_exactly(name: str) -> None:
    data = read_one(name)
    packet = RtpPacket.parse(data)
    assert bytes(packet) == data
    assert RtpPacket.parse(bytes(packet)) == packet


def test_dtmf_stream_packets_round_trip() -> None:
    datagrams = read_hex("dtmf_digit_5.hex")
    assert len(datagrams) == 7
    for data in datagrams:
        assert bytes(RtpPacket.parse(data)) == data


def test_pcmu_fields() -> None:
    packet = RtpPacket.parse(read_one("pcmu_20ms.hex"))
    assert (packet.payload_type, packet.sequence_number, packet.timestamp) == (0, 1, 160)
    assert packet.ssrc == 0x12345678
    assert packet.marker is True
    assert packet.payload == b"\xff" * 160
    assert (packet.csrc, packet.extension_profile, packet.padding_size) == ([], None, 0)


def test_extension_and_extreme_sequence_and_timestamp() -> None:
    packet = RtpPacket.parse(read_one("h264_extension.hex"))
    assert packet == RtpPacket(
        payload_type=96,
        sequence_number=0xFFFF,
        timestamp=0xFFFF_FFFF,
        ssrc=0x5E1C3A9B,
        marker=True,
        payload=bytes.fromhex("7c45888400 33ff"),
        extension_profile=0xBEDE,
        extension=bytes.fromhex("321a2b3c"),
    )


def test_csrc_fields() -> None:
    packet = RtpPacket.parse(read_one("csrc_mixer.hex"))
    assert (packet.payload_type, packet.marker, packet.ssrc) == (8, False, 10)
    assert packet.csrc == [1, 2]
    assert packet.payload == b"\xd5" * 4


def test_padding_fields() -> None:
    packet = RtpPacket.parse(read_one("opus_padded.hex"))
    assert (packet.payload_type, packet.sequence_number, packet.timestamp) == (111, 7, 7680)
    assert packet.payload == b"\xf8\xff\xfe"
    assert packet.padding_size == 4


def test_padding_may_take_the_whole_payload() -> None:
    data = bytes.fromhex("a000 0001 00000000 00000001 000003")
    packet = RtpPacket.parse(data)
    assert (packet.payload, packet.padding_size) == (b"", 3)
    assert bytes(packet) == data


def test_non_zero_padding_octets_are_normalized_to_zeros() -> None:
    data = bytes.fromhex("a000 0001 00000000 00000001 aa ee ee 03")
    packet = RtpPacket.parse(data)
    assert (packet.payload, packet.padding_size) == (b"\xaa", 3)
    assert bytes(packet) == bytes.fromhex("a000 0001 00000000 00000001 aa 00 00 03")


def test_empty_extension_keeps_the_x_bit() -> None:
    packet = RtpPacket(payload_type=127, marker=True, extension_profile=0x1000, payload=b"x")
    data = bytes(packet)
    assert data == bytes.fromhex("90ff 0000 00000000 00000000 10000000 78")
    assert RtpPacket.parse(data) == packet


def test_fifteen_csrcs() -> None:
    packet = RtpPacket(csrc=list(range(15)), payload=b"\x01")
    data = bytes(packet)
    assert data[0] == 0x8F
    assert len(data) == RTP_HEADER_SIZE + 15 * 4 + 1
    assert RtpPacket.parse(data) == packet


def test_demultiplex_rtp_and_rtcp() -> None:
    for name in RTP_VECTORS:
        assert not is_rtcp(read_one(name))
    for name in RTCP_VECTORS:
        assert is_rtcp(read_one(name))
    assert not is_rtcp(b"\x80")


MALFORMED = [
    ("", "RTP packet length is 0, less than 12"),
    ("8000 0001 00000000 000000", "RTP packet length is 11, less than 12"),
    ("0000 0001 00000000 00000001", "RTP packet has version 0, not 2"),
    ("4000 0001 00000000 00000001", "RTP packet has version 1, not 2"),
    ("c000 0001 00000000 00000001", "RTP packet has version 3, not 2"),
    ("8200 0001 00000000 00000001 00000002", "RTP packet truncated in its 2 CSRC entries"),
    ("8f00 0001 00000000 00000001", "RTP packet truncated in its 15 CSRC entries"),
    ("9000 0001 00000000 00000001 bede", "RTP packet truncated in its extension header"),
    (
        "9000 0001 00000000 00000001 bede0002 00000000",
        "RTP packet truncated in its header extension",
    ),
    ("a000 0001 00000000 00000001 000000", "RTP packet has a bad padding count 0"),
    ("a000 0001 00000000 00000001 00000a", "RTP packet has a bad padding count 10"),
    ("a000 0001 00000000 00000001", "RTP packet has a bad padding count 1"),
]


@pytest.mark.parametrize(("hex_data", "message"), MALFORMED)
def test_malformed_packet_is_rejected_with_its_reason(hex_data: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RtpPacket.parse(bytes.fromhex(hex_data))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(csrc=list(range(16))), "an RTP packet holds at most 15 CSRCs"),
        (
            RtpPacket(extension_profile=1, extension=b"abc"),
            "an RTP header extension is a whole number of 32-bit words",
        ),
        (RtpPacket(extension=b"abcd"), "an RTP header extension needs an extension_profile"),
        (RtpPacket(payload_type=128), "RTP payload type 128 does not fit in 7 bits"),
        (RtpPacket(sequence_number=65536), "RTP sequence number 65536 does not fit in 16 bits"),
        (RtpPacket(sequence_number=-1), "RTP sequence number -1 does not fit in 16 bits"),
        (RtpPacket(timestamp=2**32), "RTP timestamp 4294967296 does not fit in 32 bits"),
        (RtpPacket(ssrc=-1), "RTP SSRC -1 does not fit in 32 bits"),
        (RtpPacket(csrc=[2**32]), "RTP CSRC 4294967296 does not fit in 32 bits"),
        (RtpPacket(padding_size=256), "RTP padding size 256 does not fit in 8 bits"),
        (
            RtpPacket(extension_profile=65536),
            "RTP extension profile 65536 does not fit in 16 bits",
        ),
        (
            RtpPacket(extension_profile=1, extension=bytes(4 * 65536)),
            "RTP extension length 65536 does not fit in 16 bits",
        ),
    ],
)
def test_out_of_range_fields_are_value_errors(packet: RtpPacket, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        bytes(packet)
    assert str(caught.value) == message


@st.composite
def packets(draw: st.DrawFn) -> RtpPacket:
    profile = draw(st.none() | st.integers(0, 2**16 - 1))
    words = draw(st.integers(0, 8)) if profile is not None else 0
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(st.integers(0, 2**16 - 1)),
        timestamp=draw(st.integers(0, 2**32 - 1)),
        ssrc=draw(st.integers(0, 2**32 - 1)),
        marker=draw(st.booleans()),
        payload=draw(st.binary(max_size=64)),
        csrc=draw(st.lists(st.integers(0, 2**32 - 1), max_size=15)),
        extension_profile=profile,
        extension=draw(st.binary(min_size=4 * words, max_size=4 * words)),
        padding_size=draw(st.integers(0, 255)),
    )


@given(packets())
def test_generated_packets_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data


@given(st.binary(max_size=80))
@example(bytes.fromhex("b000 0000 00000000 00000000 0000ffff"))
@example(bytes.fromhex("a000 0000 00000000 00000000 ff"))
def test_random_bytes_raise_only_value_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except ValueError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet
    assert len(bytes(packet)) == len(data)


@given(st.sampled_from(RTP_VECTORS), st.integers(0, 200), st.data())
def test_truncated_vectors_raise_only_value_error(name: str, cut: int, data: st.DataObject) -> None:
    datagram = bytearray(read_one(name))
    datagram[data.draw(st.integers(0, 11))] = data.draw(st.integers(0, 255))
    try:
        packet = RtpPacket.parse(bytes(datagram[:cut]))
    except ValueError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet
