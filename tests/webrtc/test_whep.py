"""WhepSessions: errors, limits, streams not published yet, shutdown."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCRtpReceiver

from sipbridge.errors import Conflict, InvalidRequest, NotFound
from sipbridge.registry import Stream, StreamRegistry
from tests.webrtc.client import Player, live_peer_connections, wait_until
from webrtc.config import WebRtcConfig
from webrtc.whep import WhepSessions


def declare(stream: Stream, **codecs: str) -> None:
    for kind, codec in codecs.items():
        stream.track(kind).codec = codec  # type: ignore[arg-type]


def config(**kwargs: object) -> WebRtcConfig:
    return WebRtcConfig(ice_addresses=("127.0.0.1",), **kwargs)  # type: ignore[arg-type]


async def test_unknown_or_ended_stream_is_not_found() -> None:
    registry = StreamRegistry()
    whep = WhepSessions(registry, config())
    player = Player()
    offer = await player.offer()
    with pytest.raises(NotFound, match="no live stream named 'nope'"):
        await whep.create("nope", offer)
    stream = registry.reserve("cam")
    stream.end()
    with pytest.raises(NotFound, match="no live stream named 'cam'"):
        await whep.create("cam", offer)
    with pytest.raises(NotFound, match="no WebRTC session 'x'"):
        await whep.delete("x")
    assert whep.get("x") is None
    await player.close()


async def test_bad_offers_are_invalid_requests() -> None:
    registry = StreamRegistry()
    declare(registry.reserve("cam"), video="H264", audio="PCMU")
    whep = WhepSessions(registry, config())
    with pytest.raises(InvalidRequest, match="the offer is empty"):
        await whep.create("cam", "")
    # A VP8-only player: no H264 in common.
    player = Player(audio=False)
    transceiver = player.pc.getTransceivers()[0]
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    vp8 = [c for c in capabilities.codecs if c.name == "VP8"]
    transceiver.setCodecPreferences(vp8)
    with pytest.raises(InvalidRequest, match="the stream sends H264, the offer accepts VP8"):
        await whep.create("cam", await player.offer())
    assert len(whep) == 0
    await player.close()
    assert await wait_until(lambda: live_peer_connections(besides=(player,)) == 0, 2.0)


async def test_viewer_limits_are_conflicts() -> None:
    registry = StreamRegistry()
    declare(registry.reserve("a"), audio="PCMU")
    declare(registry.reserve("b"), audio="PCMU")
    whep = WhepSessions(registry, config(max_viewers=2, max_viewers_per_stream=1))
    players = [Player(video=False) for _ in range(4)]
    try:
        first = await whep.create("a", await players[0].offer())
        with pytest.raises(Conflict, match="stream 'a' has 1 WebRTC viewers, the most allowed"):
            await whep.create("a", await players[1].offer())
        await whep.create("b", await players[2].offer())
        with pytest.raises(Conflict, match="the gateway serves at most 2"):
            await whep.create("b", await players[3].offer())
        assert {v.stream_name for v in whep.viewers()} == {"a", "b"}
        assert first.sdp.count("m=audio") == 1
        await whep.delete(first.session_id)
        assert len(whep) == 1
        await whep.create("a", await players[1].offer())
    finally:
        await whep.close()
        for player in players:
            await player.close()
    assert len(whep) == 0


async def test_pending_stream_is_waited_for_then_refused() -> None:
    registry = StreamRegistry()
    stream = registry.reserve("ringing")
    whep = WhepSessions(registry, config(media_wait=0.2))
    player = Player(video=False)
    offer = await player.offer()
    with pytest.raises(Conflict, match=r"stream 'ringing' has no media yet \(PENDING\)"):
        await whep.create("ringing", offer)

    # The call is answered while the viewer waits: its declared codec is used.
    whep = WhepSessions(registry, config(media_wait=5.0))
    asyncio.get_running_loop().call_later(0.1, lambda: declare(stream, audio="PCMA"))
    answer = await whep.create("ringing", offer)
    assert "PCMA/8000" in answer.sdp and "PCMU" not in answer.sdp
    info = whep.get(answer.session_id)
    assert info is not None and info.audio_codec == "PCMA" and info.video_codec is None
    await whep.close()
    await player.close()


async def test_stream_ending_while_waiting_is_not_found() -> None:
    registry = StreamRegistry()
    stream = registry.reserve("ringing")
    whep = WhepSessions(registry, config(media_wait=5.0))
    player = Player(video=False)
    asyncio.get_running_loop().call_later(0.1, stream.end)
    with pytest.raises(NotFound, match="stream 'ringing' has ended"):
        await whep.create("ringing", await player.offer())
    await player.close()


async def test_close_ends_every_session_and_refuses_new_ones() -> None:
    registry = StreamRegistry()
    declare(registry.reserve("cam"), audio="PCMU", video="H264")
    whep = WhepSessions(registry, config())
    players = [Player() for _ in range(3)]
    for player in players:
        await whep.create("cam", await player.offer())
    assert len(whep.viewers("cam")) == 3
    await whep.close()
    assert whep.viewers() == []
    with pytest.raises(Conflict, match="shutting down"):
        await whep.create("cam", await players[0].offer())
    for player in players:
        await player.close()
    # aiortc's own connect tasks let go of their peer connection within a few loop turns.
    assert await wait_until(lambda: live_peer_connections(besides=tuple(players)) == 0, 2.0)
