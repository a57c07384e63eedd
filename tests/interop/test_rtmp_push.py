"""RtmpPusher against a real nginx-rtmp, checked by a real ffmpeg pulling the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from rtmp.pusher import FAILED_INFO, PushConfig, PushStatus, RtmpPusher
from rtp.frame import MediaFrame
from sipbridge.registry import Stream, StreamStatus
from tests.interop.nginx import NginxRtmp
from tests.interop.peers import ManagedProcess, PeerSet, free_port
from tests.rtmp.media import (
    Clip,
    decode_errors,
    feed_realtime,
    ffprobe_packets,
    ffprobe_streams,
    load_clip,
    make_clip,
    shifted,
)

pytestmark = pytest.mark.interop

WIDTH, HEIGHT, FPS = 640, 360, 25


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """8 s of 640x360 H.264 (GOP 1 s, no B-frames) + PCMU."""
    path = make_clip(
        tmp_path_factory.mktemp("rtmp") / "clip.mkv", seconds=8.0, size=f"{WIDTH}x{HEIGHT}"
    )
    return load_clip(path)


@pytest.fixture
def nginx(peers: PeerSet) -> NginxRtmp:
    return NginxRtmp(peers).start()


def new_stream() -> Stream:
    stream = Stream("call")
    stream.track("video")
    stream.track("audio")
    return stream


def start_pull(
    peers: PeerSet, url: str, out: Path, *, name: str, seconds: int = 30
) -> ManagedProcess:
    """ffmpeg playing ``url`` into an FLV file (stream copy), bounded in time."""
    return peers.process(
        ["timeout", "-s", "KILL", str(seconds), "ffmpeg", "-v", "error", "-y",
         "-rw_timeout", "5000000", "-i", url, "-c", "copy", "-f", "flv", str(out)],
        name=name,
    )  # fmt: skip


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def check_pulled(out: Path, *, min_seconds: float) -> tuple[int, float]:
    """Asserts the pulled FLV is H.264 at the clip's size + AAC 48 kHz, decodes cleanly,
    and has as many video frames as its duration says. Returns (frames, seconds)."""
    streams = {s["codec_type"]: s for s in ffprobe_streams(out)}
    assert streams["video"]["codec_name"] == "h264"
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (WIDTH, HEIGHT)
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["audio"]["sample_rate"] == "48000"
    assert decode_errors(out) == ""
    packets = ffprobe_packets(out)
    video = [t for kind, t, _ in packets if kind == "video"]
    audio = [t for kind, t, _ in packets if kind == "audio"]
    seconds = video[-1] - video[0]
    assert seconds >= min_seconds
    assert len(video) == pytest.approx(seconds * FPS + 1, abs=2)
    assert audio[-1] - audio[0] == pytest.approx(seconds, abs=0.3)
    return len(video), seconds


async def test_push_to_nginx_and_pull(
    nginx: NginxRtmp, peers: PeerSet, live_clip: Clip, tmp_path: Path
) -> None:
    statuses: list[PushStatus] = []
    stream = new_stream()
    url = nginx.url("test")
    config = PushConfig(url=url, rw_timeout=5.0)
    pusher = RtmpPusher(stream, config, on_status=lambda s, _: statuses.append(s))
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, live_clip.frames))
    try:
        await wait_for(lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 10, "PROCESSED_REMOTE")
        assert statuses == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE]
        await asyncio.to_thread(nginx.wait_publishing, "test")
        pull = start_pull(peers, url, tmp_path / "pulled.flv", name="pull")
        async with asyncio.timeout(20):
            await feeder
        stream.end(StreamStatus.UNPUBLISHED)
        await wait_for(lambda: pusher.status is PushStatus.STOPPED, 10, "STOPPED")
        # The publisher left: nginx ends the play session, ffmpeg finishes its file.
        await asyncio.to_thread(pull.wait, 15)
    finally:
        feeder.cancel()
        await pusher.stop()
    assert pusher.stats.reconnects == 0
    assert statuses[-1] is PushStatus.STOPPED
    assert pusher.stats.video_frames_sent == len(live_clip.video)
    assert pusher.stats.first_video_sent_at is not None
    frames, _ = check_pulled(tmp_path / "pulled.flv", min_seconds=5.0)
    assert frames <= len(live_clip.video)


async def test_nginx_restart_mid_push(
    nginx: NginxRtmp, peers: PeerSet, live_clip: Clip, tmp_path: Path
) -> None:
    statuses: list[PushStatus] = []
    stream = new_stream()
    url = nginx.url("test")
    config = PushConfig(url=url, rw_timeout=3.0, retry_initial=0.2, retry_max=1.0)
    pusher = RtmpPusher(stream, config, on_status=lambda s, _: statuses.append(s))
    await pusher.start()
    frames: list[MediaFrame] = live_clip.frames + shifted(
        live_clip.frames, live_clip.seconds + 1 / FPS
    )
    feeder = asyncio.create_task(feed_realtime(stream, frames))
    try:
        await wait_for(lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 10, "PROCESSED_REMOTE")
        await asyncio.sleep(3.0)
        sent_before = pusher.stats.video_frames_sent
        await asyncio.to_thread(nginx.stop)
        await wait_for(lambda: pusher.status is PushStatus.PENDING, 10, "PENDING after the drop")
        assert pusher.info
        await asyncio.to_thread(nginx.start)
        await wait_for(
            lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 15, "PROCESSED_REMOTE again"
        )
        assert pusher.stats.reconnects >= 1
        await asyncio.to_thread(nginx.wait_publishing, "test")
        pull = start_pull(peers, url, tmp_path / "after.flv", name="pull-after")
        async with asyncio.timeout(30):
            await feeder
        stream.end(StreamStatus.UNPUBLISHED)
        await wait_for(lambda: pusher.status is PushStatus.STOPPED, 10, "STOPPED")
        await asyncio.to_thread(pull.wait, 15)
    finally:
        feeder.cancel()
        await pusher.stop()
    connected, processed = PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE
    assert statuses[:5] == [connected, processed, PushStatus.PENDING, connected, processed]
    assert pusher.stats.video_frames_sent > sent_before
    check_pulled(tmp_path / "after.flv", min_seconds=4.0)


async def test_refused_connection_fails_after_retries(live_clip: Clip) -> None:
    statuses: list[tuple[PushStatus, str | None]] = []
    stream = new_stream()
    config = PushConfig(
        url=f"rtmp://127.0.0.1:{free_port('tcp')}/live/test",
        retry_initial=0.05,
        retry_max=0.1,
        max_retries=3,
    )
    pusher = RtmpPusher(stream, config, on_status=lambda s, i: statuses.append((s, i)))
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, live_clip.frames, speed=4.0))
    try:
        await wait_for(lambda: pusher.status is PushStatus.FAILED, 15, "FAILED")
    finally:
        feeder.cancel()
        await pusher.stop()
    assert pusher.info == FAILED_INFO
    pending = [info for status, info in statuses if status is PushStatus.PENDING]
    assert pending and all(info and "refused" in info.lower() for info in pending)
    assert statuses[-1] == (PushStatus.FAILED, FAILED_INFO)
    assert pusher.stats.reconnects == 0
    assert stream.subscribers == 0
