"""End to end on 127.0.0.1: an aiortc player (not our page) plays a stream through WHEP.

Real H.264 (libx264, Annex-B) and PCMU are published into a registry stream on
their wall-clock schedule; the player decodes what it receives.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator

import pytest

from sipbridge.registry import Stream, StreamRegistry
from tests.webrtc.client import (
    Player,
    executor_threads,
    foreign_threads,
    live_peer_connections,
    other_tasks,
    udp_sockets,
    wait_until,
)
from tests.webrtc.media import Clip, feed_realtime, looped
from webrtc.config import WebRtcConfig
from webrtc.session import ViewerSession
from webrtc.whep import WhepSessions

LOOPBACK_CONFIG = WebRtcConfig(ice_addresses=("127.0.0.1",))


class Publisher:
    """A stream fed in real time from a looped clip, with its keyframe requests counted."""

    def __init__(self, registry: StreamRegistry, clip: Clip, *, loops: int = 5) -> None:
        self.stream: Stream = registry.reserve("cam", call_id="call-1")
        self.keyframe_requests = 0
        self.stream.set_keyframe_requester(self._on_keyframe_request)
        self.frames = looped(clip, loops)
        self.started = time.monotonic()
        self.task = asyncio.create_task(feed_realtime(self.stream, self.frames))

    def _on_keyframe_request(self) -> None:
        self.keyframe_requests += 1

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
def registry() -> StreamRegistry:
    # No rate limit on keyframe requests, so each one is seen.
    return StreamRegistry(keyframe_interval=0.0)


@pytest.fixture
async def whep(registry: StreamRegistry) -> AsyncIterator[WhepSessions]:
    sessions = WhepSessions(registry, LOOPBACK_CONFIG)
    yield sessions
    await sessions.close()


def _session(whep: WhepSessions, session_id: str) -> ViewerSession:
    return whep._sessions[session_id]


async def test_player_decodes_h264_and_receives_pcmu(
    registry: StreamRegistry, whep: WhepSessions, clip: Clip
) -> None:
    publisher = Publisher(registry, clip)
    await asyncio.sleep(0.3)  # a GOP is cached: the player starts on it
    player = Player()
    try:
        answer = await player.play(whep, "cam")
        # The answer offers the stream's codecs only, and host candidates on loopback only.
        payload_lines = re.findall(r"a=rtpmap:\d+ ([^/\r\n]+)", answer.sdp)
        assert set(payload_lines) == {"H264", "rtx", "PCMU"}
        candidates = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ (\w+)", answer.sdp)
        assert candidates and all(c == ("127.0.0.1", "host") for c in candidates)
        assert "a=end-of-candidates" in answer.sdp

        assert await wait_until(lambda: len(player.video_frames) >= 25, timeout=10)
        assert await wait_until(lambda: len(player.audio_frames) >= 25, timeout=5)
        assert {(w, h) for w, h, _ in player.video_frames} == {(clip.width, clip.height)}
        assert {(n, rate) for n, rate, _ in player.audio_frames} == {(160, 8000)}

        before = len(player.video_frames), len(player.audio_frames)
        await asyncio.sleep(1.0)
        after = len(player.video_frames), len(player.audio_frames)
        # About 25 pictures and 50 audio frames a second arrive, decoded.
        assert after[0] - before[0] >= 15
        assert after[1] - before[1] >= 30

        info = whep.get(answer.session_id)
        assert info is not None
        assert info.state == "connected"
        assert (info.video_codec, info.audio_codec) == ("H264", "PCMU")
        assert info.video_frames_sent >= len(player.video_frames)
        assert info.audio_frames_sent >= len(player.audio_frames)
        assert info.dropped == 0
        assert [v.session_id for v in whep.viewers("cam")] == [answer.session_id]
        assert whep.viewers("other") == []
        assert publisher.stream.subscribers == 1

        final = await whep.delete(answer.session_id)
        assert final.state == "closed"
        assert whep.get(answer.session_id) is None
        assert publisher.stream.subscribers == 0
    finally:
        await player.close()
        await publisher.stop()


async def test_video_and_audio_leave_on_one_schedule(
    registry: StreamRegistry, whep: WhepSessions, clip: Clip
) -> None:
    """The RTP timestamps of both tracks follow the pts, released on one wallclock schedule."""
    publisher = Publisher(registry, clip)
    await asyncio.sleep(0.2)
    player = Player()
    sent: list[tuple[str, float, float]] = []  # (kind, pts, monotonic time aiortc took it)
    try:
        answer = await player.play(whep, "cam")
        session = _session(whep, answer.session_id)
        for track in session.tracks.values():
            original = track.recv

            # Hooked where aiortc's sender takes each packet (the moment it is released).
            async def recv(original=original, track=track):  # type: ignore[no-untyped-def]
                packet = await original()
                sent.append((track.kind, packet.pts / track.clock_rate, time.monotonic()))
                return packet

            track.recv = recv  # type: ignore[method-assign]
        assert await wait_until(lambda: len(sent) >= 150, timeout=10)
        # Every frame's release time minus its pts is the same for both kinds (the anchor).
        offsets = [at - pts for _, pts, at in sent]
        assert max(offsets) - min(offsets) < 0.05
        assert {kind for kind, _, _ in sent} == {"audio", "video"}
    finally:
        await player.close()
        await publisher.stop()


async def test_pli_from_the_player_reaches_the_stream(
    registry: StreamRegistry, whep: WhepSessions, clip: Clip
) -> None:
    publisher = Publisher(registry, clip)
    await asyncio.sleep(0.3)
    player = Player()
    try:
        answer = await player.play(whep, "cam")
        assert await wait_until(lambda: len(player.video_frames) >= 5)
        before = publisher.keyframe_requests
        session = _session(whep, answer.session_id)
        assert session.pc is not None
        video_sender = next(t.sender for t in session.pc.getTransceivers() if t.kind == "video")
        receiver = next(t.receiver for t in player.pc.getTransceivers() if t.kind == "video")
        await receiver._send_rtcp_pli(video_sender._ssrc)
        assert await wait_until(lambda: publisher.keyframe_requests > before, timeout=5)
        info = whep.get(answer.session_id)
        assert info is not None and info.keyframe_requests == 1
    finally:
        await player.close()
        await publisher.stop()


async def test_viewer_without_cached_gop_waits_for_a_keyframe(
    registry: StreamRegistry, whep: WhepSessions, clip: Clip
) -> None:
    stream = registry.reserve("cam")
    requests: list[float] = []
    stream.set_keyframe_requester(lambda: requests.append(time.monotonic()))
    # Publish only non-keyframes (and audio) first: no GOP is cached.
    frames = looped(clip, 3)
    first_key = next(i for i, f in enumerate(frames) if f.kind == "video" and f.keyframe)
    skip_to = next(i for i, f in enumerate(frames[first_key + 1 :]) if f.kind == "video") + 1
    feeder = asyncio.create_task(feed_realtime(stream, frames[first_key + skip_to :]))
    player = Player()
    try:
        await asyncio.sleep(0.2)
        await player.play(whep, "cam")
        assert await wait_until(lambda: len(player.video_frames) >= 5, timeout=10)
        assert requests, "the viewer asked the stream for a keyframe"
        assert {(w, h) for w, h, _ in player.video_frames} == {(clip.width, clip.height)}
    finally:
        await player.close()
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


async def test_stream_end_closes_its_viewers(
    registry: StreamRegistry, whep: WhepSessions, clip: Clip
) -> None:
    publisher = Publisher(registry, clip)
    await asyncio.sleep(0.2)
    players = [Player(), Player()]
    try:
        for player in players:
            await player.play(whep, "cam")
        assert await wait_until(lambda: all(len(p.video_frames) >= 3 for p in players))
        assert len(whep.viewers("cam")) == 2
        publisher.stream.end()
        assert await wait_until(lambda: not whep.viewers(), timeout=5)
        assert publisher.stream.subscribers == 0
        for player in players:
            await player.close()
        assert live_peer_connections(besides=tuple(players)) == 0
    finally:
        for player in players:
            await player.close()
        await publisher.stop()


async def test_unconnected_viewer_is_closed_after_connect_timeout(
    registry: StreamRegistry, clip: Clip
) -> None:
    publisher = Publisher(registry, clip)
    whep = WhepSessions(registry, WebRtcConfig(ice_addresses=("127.0.0.1",), connect_timeout=0.5))
    player = Player()
    try:
        # The player never applies the answer: ICE never completes.
        answer = await whep.create("cam", await player.offer())
        info = whep.get(answer.session_id)
        assert info is not None and info.state in ("new", "connecting")
        assert publisher.stream.subscribers == 0  # subscribed only once connected
        assert await wait_until(lambda: whep.get(answer.session_id) is None, timeout=3)
        assert publisher.keyframe_requests == 0
    finally:
        await player.close()
        await whep.close()
        await publisher.stop()


async def test_churn_leaks_nothing(
    registry: StreamRegistry, whep: WhepSessions, clip: Clip
) -> None:
    """20 viewers join and leave, three times, while the stream publishes: afterwards no
    task, socket, peer connection or thread is left of them."""
    publisher = Publisher(registry, clip, loops=10)
    await asyncio.sleep(0.2)

    async def round_of(count: int) -> None:
        players = [Player() for _ in range(count)]
        answers = [await p.play(whep, "cam") for p in players]
        assert await wait_until(lambda: all(len(p.video_frames) >= 1 for p in players), timeout=15)
        assert len(whep.viewers("cam")) == count
        # Half leave by DELETE, half by closing their side (ICE/DTLS closes ours).
        for index, (player, answer) in enumerate(zip(players, answers, strict=True)):
            if index % 2 == 0:
                await whep.delete(answer.session_id)
            await player.close()
        assert await wait_until(lambda: not whep.viewers(), timeout=40)

    await round_of(2)  # warm-up: the loop's default executor, codec contexts
    await asyncio.sleep(0.2)
    tasks, sockets, threads = other_tasks(), udp_sockets(), foreign_threads()
    for _ in range(3):
        await round_of(20)
    await asyncio.sleep(0.5)
    leaked = {t for t in other_tasks() - tasks}
    assert not leaked, leaked
    assert udp_sockets() == sockets
    assert foreign_threads() == threads
    assert executor_threads() <= min(32, (os.cpu_count() or 1) + 4)  # the pool's own bound
    assert live_peer_connections() == 0
    assert publisher.stream.subscribers == 0
    assert not publisher.task.done(), "the publisher kept publishing throughout"
    await publisher.stop()


async def test_stalled_viewer_does_not_slow_the_call_or_other_viewers(
    registry: StreamRegistry, clip: Clip
) -> None:
    whep = WhepSessions(
        registry, WebRtcConfig(ice_addresses=("127.0.0.1",), viewer_queue_frames=50)
    )
    publisher = Publisher(registry, clip, loops=4)  # 8 s
    await asyncio.sleep(0.2)
    fast, slow = Player(), Player()
    gate = asyncio.Event()
    try:
        await fast.play(whep, "cam")
        slow_answer = await slow.play(whep, "cam")
        # Stall the slow viewer's senders: their recv() waits on the gate.
        for track in _session(whep, slow_answer.session_id).tracks.values():
            original = track.recv

            async def recv(original=original):  # type: ignore[no-untyped-def]
                await gate.wait()
                return await original()

            track.recv = recv  # type: ignore[method-assign]
        assert await wait_until(lambda: len(fast.video_frames) >= 5)
        start_fast = len(fast.video_frames)
        await asyncio.sleep(3.0)
        # The fast viewer kept playing at full rate while the slow one is stalled.
        assert len(fast.video_frames) - start_fast >= 60
        slow_info = whep.get(slow_answer.session_id)
        assert slow_info is not None
        assert slow_info.dropped > 0
        assert slow.video_frames == []
        fast_info = whep.viewers()[0]
        assert fast_info.dropped == 0
        # The publisher was never held up: it is on its schedule.
        published = publisher.stream.tracks["video"].frames
        elapsed = time.monotonic() - publisher.started
        assert published >= (elapsed - 0.5) * clip.fps

        # Released, the slow viewer drops what went stale and resumes on a keyframe.
        gate.set()
        assert await wait_until(lambda: len(slow.video_frames) >= 10, timeout=5)
    finally:
        gate.set()
        await fast.close()
        await slow.close()
        await whep.close()
        await publisher.stop()
