"""Audio depacketizer: Opus (RFC 7587, TOC of RFC 6716 §3.1) and G.711."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.depacketize import AudioDepacketizer, create_depacketizer, opus_packet_duration
from rtp.packet import RtpPacket


def pkt(payload: bytes, seq: int = 1, ssrc: int = 99) -> RtpPacket:
    return RtpPacket(
        payload_type=0, sequence_number=seq, timestamp=160 * seq, ssrc=ssrc, payload=payload
    )


def toc(config: int, stereo: bool = False, code: int = 0) -> int:
    return (config << 3) | (0x04 if stereo else 0) | code


# RFC 6716 Table 2: frame sizes in ms by config.
FRAME_MS = [10, 20, 40, 60] * 3 + [10, 20] * 2 + [2.5, 5, 10, 20] * 4


@pytest.mark.parametrize("config", range(32))
def test_opus_code0_duration_follows_rfc6716_table2(config: int) -> None:
    assert opus_packet_duration(bytes([toc(config), 1, 2, 3])) == pytest.approx(
        FRAME_MS[config] / 1000
    )
    assert opus_packet_duration(bytes([toc(config, stereo=True)])) == pytest.approx(
        FRAME_MS[config] / 1000
    )  # a TOC alone: DTX / lost frame, still one frame long


def test_opus_two_frame_codes() -> None:
    assert opus_packet_duration(bytes([toc(1, code=1), 5, 6])) == pytest.approx(0.040)
    # code 2: first frame length 1, then one byte for the second frame
    assert opus_packet_duration(bytes([toc(31, code=2), 1, 7, 8])) == pytest.approx(0.040)
    # two-byte length: 252 + 4 * 1 = 256 bytes of first frame
    payload = bytes([toc(16, code=2), 252, 1]) + bytes(256 + 3)
    assert opus_packet_duration(payload) == pytest.approx(0.005)


def test_opus_code3_counts_frames_with_padding_and_vbr() -> None:
    # CBR, 6 frames of 20 ms = 120 ms, 2 bytes each
    assert opus_packet_duration(bytes([toc(1, code=3), 6]) + bytes(12)) == pytest.approx(0.120)
    # CBR with padding: 255 -> 254 bytes, then 3 more: 257 padding bytes; 3 frames of 1 byte
    padded = bytes([toc(17, code=3), 0x40 | 3, 255, 3]) + bytes(3) + bytes(257)
    assert opus_packet_duration(padded) == pytest.approx(0.015)
    # VBR: 3 frames, lengths 1 and 2 given, the last takes the rest (4 bytes)
    vbr = bytes([toc(19, code=3), 0x80 | 3, 1, 2]) + bytes(1 + 2 + 4)
    assert opus_packet_duration(vbr) == pytest.approx(0.060)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "^Opus packet is empty$"),
        (bytes([toc(0)]) + bytes(1276), "^Opus frame of 1276 bytes is longer than 1275$"),
        (bytes([toc(0, code=1), 1, 2, 3]), "^Opus code 1 packet has an odd payload length$"),
        (bytes([toc(0, code=2), 5, 1]), "^Opus code 2 packet's first frame overruns the packet$"),
        (bytes([toc(0, code=2)]), "^Opus packet truncated in a frame length$"),
        (bytes([toc(0, code=2), 253]), "^Opus packet truncated in a frame length$"),
        (bytes([toc(0, code=3)]), "^Opus code 3 packet has no frame count byte$"),
        (bytes([toc(0, code=3), 0]), "^Opus code 3 packet holds zero frames$"),
        (bytes([toc(3, code=3), 3]), "^Opus packet holds 180 ms, more than 120 ms$"),
        (bytes([toc(0, code=3), 2, 1]), "^Opus code 3 CBR packet does not split into equal"),
        (bytes([toc(0, code=3), 0x42, 5, 1]), "^Opus code 3 packet's padding overruns"),
        (bytes([toc(0, code=3), 0x42, 255]), "^Opus code 3 packet truncated in its padding"),
        (bytes([toc(0, code=3), 0x83, 1, 9, 0]), "^Opus code 3 VBR frames overrun the packet$"),
    ],
)
def test_malformed_opus_packets_name_the_broken_rule(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        opus_packet_duration(payload)


def test_opus_frames_carry_payload_duration_and_timestamps() -> None:
    dep = AudioDepacketizer("opus", 48000, 2)
    payload = bytes([toc(31, stereo=True), 1, 2, 3])
    frames = dep.push(pkt(payload), extended_timestamp=(1 << 32) + 960, arrival=4.5)
    assert len(frames) == 1
    frame = frames[0]
    assert (frame.kind, frame.codec, frame.clock_rate) == ("audio", "opus", 48000)
    assert frame.payload == payload and frame.duration == pytest.approx(0.020)
    assert frame.rtp_timestamp == (1 << 32) + 960 and frame.arrival == 4.5
    assert frame.ssrc == 99 and frame.keyframe and frame.config is None and frame.pts is None
    assert dep.flush() == [] and not dep.needs_keyframe and not dep.take_keyframe_request()


@pytest.mark.parametrize(
    ("codec", "channels", "size", "seconds"),
    [("PCMU", 1, 160, 0.020), ("PCMA", 1, 80, 0.010), ("PCMA", 2, 320, 0.020)],
)
def test_g711_duration_is_one_byte_per_sample_per_channel(
    codec: str, channels: int, size: int, seconds: float
) -> None:
    dep = create_depacketizer(codec, clock_rate=8000, channels=channels)
    frames = dep.push(pkt(bytes(size)), extended_timestamp=160, arrival=0.0)
    assert [f.codec for f in frames] == [codec]
    assert frames[0].duration == pytest.approx(seconds)


def test_losses_and_bad_packets_are_counted() -> None:
    dep = AudioDepacketizer("PCMA", 8000, 2)
    assert dep.push(pkt(b""), extended_timestamp=0, arrival=0.0) == []
    assert dep.push(pkt(bytes(3)), extended_timestamp=0, arrival=0.0) == []  # half a sample
    frames = dep.push(pkt(bytes(4)), extended_timestamp=0, arrival=0.0, lost_before=3)
    dep.push(pkt(bytes(4)), extended_timestamp=0, arrival=0.0, discontinuity=True)
    assert len(frames) == 1
    assert (dep.stats.frames, dep.stats.bad_packets) == (2, 2)
    assert (dep.stats.lost_packets, dep.stats.discontinuities) == (3, 1)
    opus = AudioDepacketizer("opus", 48000)
    assert opus.push(pkt(bytes([toc(0, code=3), 0])), extended_timestamp=0, arrival=0.0) == []
    assert opus.stats.bad_packets == 1


def test_non_audio_encodings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^no depacketizer for encoding 'telephone-event'$"):
        create_depacketizer("telephone-event", clock_rate=8000)
    with pytest.raises(ValueError, match=r"^no depacketizer for encoding 'CN'$"):
        create_depacketizer("CN", clock_rate=8000)
    with pytest.raises(ValueError, match=r"^unsupported audio codec 'G729'$"):
        AudioDepacketizer("G729", 8000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^audio channel count 0 is not positive$"):
        AudioDepacketizer("PCMU", 8000, 0)
    assert isinstance(create_depacketizer("OPUS", clock_rate=48000, channels=2), AudioDepacketizer)


@given(st.binary(max_size=300))
def test_opus_duration_raises_only_value_error(payload: bytes) -> None:
    try:
        duration = opus_packet_duration(payload)
    except ValueError:
        return
    assert 0.0025 <= duration <= 0.120


@given(payload=st.binary(max_size=200), codec=st.sampled_from(["opus", "PCMU", "PCMA"]))
def test_random_payloads_never_raise(payload: bytes, codec: str) -> None:
    dep = create_depacketizer(codec, clock_rate=48000 if codec == "opus" else 8000, channels=2)
    frames = dep.push(pkt(payload), extended_timestamp=7, arrival=0.0, lost_before=1)
    assert len(frames) <= 1
    assert all(f.payload == payload and f.duration and f.duration > 0 for f in frames)
