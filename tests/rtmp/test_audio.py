"""AacTranscoder: call audio (G.711, Opus) to AAC-LC frames with the right timing."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import av
import pytest
from av.audio.codeccontext import AudioCodecContext

from rtmp.audio import AacTranscoder, EncodedAudio, g711_silence

RATE = 48000
FRAME = 1024


def pcmu_tone(index: int, samples: int = 160) -> bytes:
    """20 ms of a 440 Hz tone, µ-law, via PyAV's encoder."""
    encoder = av.CodecContext.create("pcm_mulaw", "w")
    assert isinstance(encoder, AudioCodecContext)
    encoder.sample_rate = 8000
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.open()
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    frame.sample_rate = 8000
    values = [
        round(8000 * math.sin(2 * math.pi * 440 * (index * samples + n) / 8000))
        for n in range(samples)
    ]
    frame.planes[0].update(b"".join(v.to_bytes(2, "little", signed=True) for v in values))
    return b"".join(bytes(p) for p in encoder.encode(frame))


def decode_aac(units: list[EncodedAudio], extradata: bytes) -> list[av.AudioFrame]:
    decoder = av.CodecContext.create("aac", "r")
    assert isinstance(decoder, AudioCodecContext)
    decoder.extradata = extradata
    decoder.open()
    frames: list[av.AudioFrame] = []
    for unit in units:
        frames += decoder.decode(av.Packet(unit.data))
    return frames


def rms(frame: av.AudioFrame) -> float:
    data = memoryview(bytes(frame.planes[0])).cast("f")
    return math.sqrt(sum(x * x for x in data) / max(1, len(data)))


def test_pcmu_to_aac_frames_and_pts() -> None:
    transcoder = AacTranscoder(bitrate=64_000)
    origin = 50.0
    units: list[EncodedAudio] = []
    for index in range(100):  # 2 s
        units += transcoder.feed("PCMU", pcmu_tone(index), origin + index * 0.02)
    units += transcoder.flush()
    # AAC-LC 48 kHz mono AudioSpecificConfig: object type 2, frequency index 3, 1 channel.
    assert transcoder.extradata[:2] == b"\x11\x88"
    # Priming packet first: 1024 samples before the first input sample.
    assert units[0].pts == pytest.approx(origin - FRAME / RATE)
    for previous, unit in itertools.pairwise(units):
        assert unit.pts - previous.pts == pytest.approx(FRAME / RATE)
    assert all(unit.duration == pytest.approx(FRAME / RATE) for unit in units[:-1])
    assert 0 < units[-1].duration <= FRAME / RATE
    total = (len(units) - 1) * FRAME  # minus the priming frame
    assert total == pytest.approx(2.0 * RATE, abs=FRAME)
    frames = decode_aac(units, transcoder.extradata)
    assert all(f.samples == FRAME and f.sample_rate == RATE for f in frames[:-1])
    assert all(f.layout.name == "mono" for f in frames)
    assert rms(frames[len(frames) // 2]) > 0.1  # the tone went through


def test_loss_becomes_silence_and_late_frames_drop() -> None:
    transcoder = AacTranscoder()
    for index in range(10):
        transcoder.feed("PCMU", pcmu_tone(index), 1.0 + index * 0.02)
    # three packets lost: 60 ms of silence fill the gap, the timeline stays on the pts
    transcoder.feed("PCMU", pcmu_tone(13), 1.0 + 13 * 0.02)
    assert transcoder.silence_inserted == pytest.approx(0.06)
    assert transcoder.expected_pts == pytest.approx(1.0 + 14 * 0.02)
    # a frame from the past (a duplicate) is dropped
    transcoder.feed("PCMU", pcmu_tone(5), 1.0 + 5 * 0.02)
    assert transcoder.frames_dropped == 1
    assert transcoder.expected_pts == pytest.approx(1.0 + 14 * 0.02)


def test_mute_encodes_silence() -> None:
    transcoder = AacTranscoder()
    units: list[EncodedAudio] = []
    for index in range(50):
        units += transcoder.feed("PCMU", pcmu_tone(index), index * 0.02, muted=True)
    frames = decode_aac(units, transcoder.extradata)
    assert frames and max(rms(f) for f in frames) < 1e-3


def test_opus_input() -> None:
    encoder = av.CodecContext.create("libopus", "w")
    assert isinstance(encoder, AudioCodecContext)
    encoder.sample_rate = 48000
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.time_base = Fraction(1, 48000)
    encoder.open()
    packets: list[bytes] = []
    for index in range(50):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.planes[0].update(bytes(960 * 4))
        packets += [bytes(p) for p in encoder.encode(frame)]
    transcoder = AacTranscoder()
    units: list[EncodedAudio] = []
    for index, payload in enumerate(packets):
        units += transcoder.feed("opus", payload, 7.0 + index * 0.02)
    assert transcoder.frames_in == len(packets)
    assert units and units[0].pts == pytest.approx(7.0 - FRAME / RATE)
    assert len(units) == pytest.approx(len(packets) * 960 / FRAME, abs=2)


def test_errors_and_g711_silence() -> None:
    with pytest.raises(ValueError, match="no AAC transcoding from audio codec 'G722'"):
        AacTranscoder().feed("G722", b"\x00" * 160, 0.0)
    assert g711_silence("PCMU", 3) == b"\xff\xff\xff"
    assert g711_silence("PCMA", 2) == b"\xd5\xd5"
    with pytest.raises(ValueError, match=r"not a G\.711 codec"):
        g711_silence("opus", 1)
