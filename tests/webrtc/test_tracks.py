"""Passthrough tracks through aiortc's own packers, and the PLI/FIR hook."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiortc import RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

from rtp.frame import MediaFrame
from tests.webrtc.media import Clip
from webrtc.tracks import (
    DUE_EPSILON,
    PassthroughTrack,
    ReleaseTimer,
    hook_keyframe_requests,
    make_packet,
)


def frame(kind: str, codec: str, rate: int, payload: bytes, pts: float) -> MediaFrame:
    return MediaFrame(kind, codec, rate, 0, payload, keyframe=True, pts=pts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mime", "rate", "pts", "expected"),
    [
        ("audio/PCMU", 8000, 12.34, 98720),  # 8 kHz clock (RFC 3551 §4.5.14)
        ("audio/PCMA", 8000, 0.02, 160),
        ("audio/opus", 48000, 12.34, 592320),  # 48 kHz whatever the audio bandwidth (RFC 7587)
    ],
)
async def test_audio_packets_pass_through_with_the_codec_clock(
    mime: str, rate: int, pts: float, expected: int
) -> None:
    track = PassthroughTrack("audio", rate)
    payload = bytes(range(160))
    await track.put(frame("audio", mime.split("/")[1], rate, payload, pts))
    packet = await track.recv()
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=rate, payloadType=0))
    payloads, timestamp = encoder.pack(packet)
    assert payloads == [payload]
    assert timestamp == expected
    assert track.frames_sent == 1


async def test_h264_access_unit_is_packetized_by_aiortc(clip: Clip) -> None:
    track = PassthroughTrack("video", 90000)
    keyframe = clip.video[0]
    await track.put(keyframe)
    packet = await track.recv()
    encoder = get_encoder(
        RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    )
    payloads, timestamp = encoder.pack(packet)
    assert timestamp == round((keyframe.pts or 0.0) * 90000)
    # SPS + PPS (+ SEI) aggregated in a STAP-A first (RFC 6184 §5.7.1), the IDR slice in FU-As.
    assert payloads[0][0] & 0x1F == 24
    fu_types = {p[1] & 0x1F for p in payloads if p[0] & 0x1F == 28}
    assert fu_types == {5} or all(p[0] & 0x1F in (5, 24) for p in payloads[1:])
    assert sum(len(p) for p in payloads) >= len(keyframe.payload) - 60


async def test_finish_ends_the_senders_recv() -> None:
    track = PassthroughTrack("audio", 8000, max_queue=2)
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.finish()
    with pytest.raises(MediaStreamError):
        await waiting
    with pytest.raises(MediaStreamError):
        await track.recv()
    # Frames put after the end go nowhere and never block.
    await track.put(frame("audio", "PCMU", 8000, b"\xff", 1.0))
    assert track.frames_sent == 0


async def test_put_waits_while_the_sender_does_not_read() -> None:
    track = PassthroughTrack("audio", 8000, max_queue=2)
    for index in range(2):
        await track.put(frame("audio", "PCMU", 8000, b"\xff", float(index)))
    blocked = asyncio.ensure_future(track.put(frame("audio", "PCMU", 8000, b"\xff", 2.0)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await track.recv()
    await asyncio.wait_for(blocked, 1.0)
    assert track.queued == 2


@pytest.mark.parametrize("fmt", [RTCP_PSFB_PLI, RTCP_PSFB_FIR])
async def test_pli_and_fir_reach_the_hook(fmt: int) -> None:
    transport = SimpleNamespace(state="new")  # RTCRtpSender only checks it is not closed
    sender = RTCRtpSender("video", transport)  # type: ignore[arg-type]
    requests: list[int] = []
    hook_keyframe_requests(sender, lambda: requests.append(fmt))
    await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=sender._ssrc))
    assert requests == [fmt]


async def test_recv_waits_for_the_due_time_and_a_gate_can_drop() -> None:
    loop = asyncio.get_running_loop()
    track = PassthroughTrack("audio", 8000)
    track.attach(ReleaseTimer(), lambda kind, due, key, now: key)  # drops non-"key" frames
    packets = [
        make_packet(frame("audio", "PCMU", 8000, b"\xff", 1.0 + i / 50), 8000) for i in range(3)
    ]
    start = loop.time()
    track.push(start + 0.03, (packets[0], False, 1))  # the gate drops this one
    track.push(start + 0.03, (packets[1], True, 1))
    track.push(start + 0.05, (packets[2], True, 1))
    assert track.last_due == pytest.approx(start + 0.05)
    assert await track.recv() is packets[1]
    assert loop.time() >= start + 0.03 - DUE_EPSILON
    assert await track.recv() is packets[2]
    assert loop.time() >= start + 0.05 - DUE_EPSILON
    assert (track.frames_sent, track.bytes_sent, track.queued) == (2, 2, 0)


async def test_the_timer_wakes_a_bounded_slice_of_senders_per_loop_turn() -> None:
    """Senders due at once are woken SLICE-wise, one slice per turn of the loop, so the
    loop polls its sockets between slices."""
    loop = asyncio.get_running_loop()
    timer = ReleaseTimer(slice_packets=3)
    tracks = [PassthroughTrack("audio", 8000) for _ in range(10)]
    turns = 0

    def count_turns() -> None:
        nonlocal turns
        turns += 1
        if len(taken) < len(tracks):
            loop.call_soon(count_turns)

    taken: list[int] = []  # the loop turn in which each sender got its packet

    async def sender(track: PassthroughTrack) -> None:
        await track.recv()
        taken.append(turns)

    for track in tracks:
        track.attach(timer)
    senders = [asyncio.create_task(sender(t)) for t in tracks]
    await asyncio.sleep(0)  # every sender waits in recv()
    packet = make_packet(frame("audio", "PCMU", 8000, b"\xff" * 160, 1.0), 8000)
    due = loop.time() + 0.01
    for track in tracks:
        track.push(due, (packet, True, 160))  # one shared packet
    loop.call_soon(count_turns)
    await asyncio.wait_for(asyncio.gather(*senders), 2.0)
    per_turn = [taken.count(t) for t in sorted(set(taken))]
    assert sum(per_turn) == 10 and max(per_turn) <= 3
    assert len(per_turn) >= 4
    assert timer.wakeups == 10 and timer.slices >= 3


async def test_a_shared_packet_is_left_intact_by_aiortcs_packers(clip: Clip) -> None:
    keyframe = clip.video[0]
    packet = make_packet(keyframe, 90000)
    params = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    first = get_encoder(params).pack(packet)
    second = get_encoder(params).pack(packet)
    assert first == second
    assert bytes(packet) == keyframe.payload
    assert packet.pts == round((keyframe.pts or 0.0) * 90000)
