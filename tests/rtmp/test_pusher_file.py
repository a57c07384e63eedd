"""RtmpPusher writing FLV files (no network): the produced file checked with ffprobe."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from rtmp.connection import TlsOptions
from rtmp.pusher import FAILED_INFO, PushConfig, PushStatus, RtmpPusher, system_ca_file
from rtp.frame import MediaFrame
from sipbridge.logs import MASK, redact
from sipbridge.registry import Stream, StreamStatus
from tests.rtmp.media import (
    Clip,
    decode_errors,
    ffprobe_packets,
    ffprobe_streams,
    shifted,
)


async def push_frames(
    frames: list[MediaFrame],
    out: Path,
    *,
    config: dict[str, object] | None = None,
    declare: tuple[str, ...] = ("video", "audio"),
    end: bool = True,
) -> RtmpPusher:
    """Publish ``frames`` into a new stream pushed to ``out``; end the stream; wait."""
    stream = Stream("test")
    for kind in declare:
        stream.track(kind)  # type: ignore[arg-type]
    pusher = RtmpPusher(stream, PushConfig(url=str(out), **config or {}))  # type: ignore[arg-type]
    await pusher.start()
    for index, frame in enumerate(frames):
        stream.publish(frame)
        if index % 50 == 0:
            await asyncio.sleep(0)  # let the reader task move frames to the writer
    if end:
        stream.end(StreamStatus.UNPUBLISHED)
        await wait_for(lambda: pusher.status.is_final, 20.0)
    await pusher.stop()
    return pusher


async def wait_for(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def assert_monotonic(packets: list[tuple[str, float, float]]) -> None:
    for kind in ("video", "audio"):
        times = [t for k, t, _ in packets if k == kind]
        assert all(b > a for a, b in itertools.pairwise(times)), kind


async def test_video_and_aac(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    pusher = await push_frames(clip.frames, out)
    assert pusher.status is PushStatus.STOPPED
    assert pusher.stats.video_frames_sent == len(clip.video)
    streams = {s["codec_type"]: s for s in ffprobe_streams(out)}
    assert streams["video"]["codec_name"] == "h264"
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (
        clip.width,
        clip.height,
    )
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["audio"]["sample_rate"] == "48000"
    assert streams["audio"]["channels"] == "1"
    packets = ffprobe_packets(out)
    assert_monotonic(packets)
    video = [t for k, t, _ in packets if k == "video"]
    audio = [(t, d) for k, t, d in packets if k == "audio"]
    assert len(video) == len(clip.video)
    lead = 1024 / 48000  # room for the AAC priming packet
    assert video[0] == pytest.approx(lead, abs=0.001)
    assert audio[0][0] == 0.0
    assert video[-1] - video[0] == pytest.approx((len(clip.video) - 1) / clip.fps, abs=0.002)
    # 1024-sample AAC frames at 48 kHz covering the clip's audio (plus priming and the tail)
    audio_seconds = len(clip.audio) * 0.02
    assert len(audio) == pytest.approx(audio_seconds * 48000 / 1024 + 2, abs=2)
    steps = {round(b[0] - a[0], 3) for a, b in itertools.pairwise(audio)}
    assert steps <= {0.021, 0.022}
    assert decode_errors(out) == ""


async def test_sps_change_sends_new_sequence_header(
    clip: Clip, clip_640: Clip, tmp_path: Path
) -> None:
    out = tmp_path / "out.flv"
    second = shifted(clip_640.frames, clip.seconds + 0.04)
    pusher = await push_frames(clip.frames + second, out)
    assert pusher.stats.reconnects == 0
    result = subprocess_frames(out)
    assert result.count((clip.width, clip.height)) == len(clip.video)
    assert result.count((clip_640.width, clip_640.height)) == len(clip_640.video)
    assert decode_errors(out) == ""


def subprocess_frames(out: Path) -> list[tuple[int, int]]:
    import json
    import subprocess

    text = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
         "frame=width,height", "-of", "json", str(out)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [(int(f["width"]), int(f["height"])) for f in json.loads(text)["frames"]]


async def test_g711_copy(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    pusher = await push_frames(clip.frames, out, config={"audio": "copy"})
    assert pusher.status is PushStatus.STOPPED
    streams = {s["codec_type"]: s for s in ffprobe_streams(out)}
    assert streams["audio"]["codec_name"] == "pcm_mulaw"
    assert streams["audio"]["sample_rate"] == "8000"
    packets = ffprobe_packets(out)
    assert_monotonic(packets)
    assert sum(1 for k, _, _ in packets if k == "audio") == pusher.stats.audio_frames_sent
    assert decode_errors(out) == ""


async def test_audio_only(audio_clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    pusher = await push_frames(audio_clip.frames, out, declare=("audio",))
    assert pusher.status is PushStatus.STOPPED
    streams = ffprobe_streams(out)
    assert [s["codec_name"] for s in streams] == ["aac"]
    packets = ffprobe_packets(out)
    assert_monotonic(packets)
    last_t, last_d = packets[-1][1], packets[-1][2]
    assert last_t + last_d == pytest.approx(len(audio_clip.audio) * 0.02, abs=0.05)
    assert decode_errors(out) == ""


async def test_starts_on_first_keyframe(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    # Drop the first keyframe: the push must start on the second one (1 s later).
    frames = clip.frames[1:]
    pusher = await push_frames(frames, out)
    video_after = [f for f in clip.video[1:] if (f.pts or 0) >= clip.video[25].pts]  # type: ignore[operator]
    assert pusher.stats.video_frames_sent == len(video_after)
    assert decode_errors(out) == ""


async def test_unwritable_target_fails_after_retries(clip: Clip, tmp_path: Path) -> None:
    statuses: list[tuple[PushStatus, str | None]] = []
    stream = Stream("test")
    stream.track("video")
    stream.track("audio")
    config = PushConfig(
        url=str(tmp_path / "missing-dir" / "out.flv"),
        retry_initial=0.01,
        retry_max=0.02,
        max_retries=2,
    )
    pusher = RtmpPusher(stream, config, on_status=lambda s, i: statuses.append((s, i)))
    await pusher.start()

    async def feed() -> None:
        for frame in clip.frames:
            stream.publish(frame)
            await asyncio.sleep(0.001)

    feeder = asyncio.create_task(feed())
    await wait_for(lambda: pusher.status is PushStatus.FAILED, 20.0)
    feeder.cancel()
    await pusher.stop()
    assert pusher.status is PushStatus.FAILED
    assert pusher.info == FAILED_INFO
    pending = [s for s in statuses if s[0] is PushStatus.PENDING]
    assert len(pending) >= 1 and all(i for _, i in pending)
    assert statuses[-1] == (PushStatus.FAILED, FAILED_INFO)
    assert pusher.stats.last_error
    assert stream.subscribers == 0


async def test_stop_is_idempotent_and_finishes_file(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    pusher = await push_frames(clip.frames[: len(clip.frames) // 2], out, end=False)
    await pusher.stop()
    assert pusher.status is PushStatus.STOPPED
    assert pusher.stats.video_frames_sent > 0
    assert decode_errors(out) == ""


async def test_mute_gives_silence(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    stream = Stream("test")
    stream.track("video")
    stream.track("audio")
    pusher = RtmpPusher(stream, PushConfig(url=str(out), audio="copy"))
    pusher.mute(True)
    await pusher.start()
    for frame in clip.frames:
        stream.publish(frame)
        await asyncio.sleep(0)
    stream.end()
    await wait_for(lambda: pusher.status.is_final, 20.0)
    await pusher.stop()
    import av

    with av.open(str(out)) as container:
        data = b"".join(bytes(p) for p in container.demux(audio=0) if p.size)
    assert data and set(data) == {0xFF}


def test_queue_overflow_drops_video_until_keyframe(clip: Clip) -> None:
    requests: list[int] = []
    stream = Stream("test")
    stream.track("video")
    stream.set_keyframe_requester(lambda: requests.append(1))
    stream.keyframe_interval = 0.0
    pusher = RtmpPusher(stream, PushConfig(url="unused.flv", queue_frames=3))
    video = clip.video
    audio = clip.audio
    for frame in video[:3]:  # keyframe + 2: the queue is full
        pusher._offer(frame)
    pusher._offer(video[3])  # dropped: overflow
    assert pusher.stats.dropped == 1 and requests
    pusher._queue.get_nowait()  # the writer takes one
    pusher._offer(video[4])  # dropped: the chain is broken until a keyframe
    assert pusher.stats.dropped == 2
    pusher._offer(audio[0])  # audio still goes in when there is room
    assert pusher._queue.qsize() == 3
    pusher._queue.get_nowait()
    pusher._offer(video[25])  # the next keyframe restarts video
    assert video[25].keyframe and pusher._queue.qsize() == 3
    assert pusher.stats.dropped == 2


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        PushConfig(url="")
    with pytest.raises(ValueError, match="'aac' or 'copy'"):
        PushConfig(url="x.flv", audio="mp3")  # type: ignore[arg-type]
    assert PushConfig(url="rtmp://[::1]:1935/live/x").url == "rtmp://[::1]:1935/live/x"
    with pytest.raises(ValueError, match="TLS CA file path"):
        PushConfig(url="rtmps://h/live/x", tls_verify=True, tls_ca_file="")
    # Our own TLS takes any path (FFmpeg's option syntax no longer applies).
    assert PushConfig(url="rtmps://h/live/x", tls_ca_file="/tmp/a:b.pem").tls_ca_file
    with pytest.raises(ValueError, match="timeouts must be positive"):
        PushConfig(url="x.flv", connect_timeout=0)
    with pytest.raises(ValueError, match="without a host"):
        PushConfig(url="rtmp:///live/x")
    with pytest.raises(ValueError, match="max_retries"):
        PushConfig(url="x.flv", max_retries=-1)
    with pytest.raises(ValueError, match="queue_frames"):
        PushConfig(url="x.flv", queue_frames=0)


def test_tls_options_default_to_the_system_bundle() -> None:
    assert PushConfig(url="rtmps://h/live/x").tls_options() == TlsOptions()
    options = PushConfig(url="rtmps://h/live/x", tls_verify=True).tls_options()
    assert options.verify and options.ca_file == system_ca_file()
    own = PushConfig(url="rtmps://h/live/x", tls_verify=True, tls_ca_file="/etc/ca.pem")
    assert own.tls_options() == TlsOptions(verify=True, ca_file="/etc/ca.pem")


async def test_statuses_connected_then_processed_remote(clip: Clip, tmp_path: Path) -> None:
    statuses: list[PushStatus] = []
    stream = Stream("test")
    stream.track("video")
    stream.track("audio")
    pusher = RtmpPusher(
        stream, PushConfig(url=str(tmp_path / "out.flv")), on_status=lambda s, _: statuses.append(s)
    )
    await pusher.start()
    for index, frame in enumerate(clip.frames):
        stream.publish(frame)
        if index % 20 == 0:
            await asyncio.sleep(0)
    stream.end(StreamStatus.UNPUBLISHED)
    await wait_for(lambda: pusher.status.is_final, 20.0)
    await pusher.stop()
    assert statuses == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE, PushStatus.STOPPED]
    stats = pusher.stats
    assert stats.connected_at is not None and stats.processed_at is not None
    assert stats.first_video_sent_at is not None
    assert stats.connected_at <= stats.first_video_sent_at <= stats.processed_at


async def test_audio_only_is_processed_after_its_first_packet(
    audio_clip: Clip, tmp_path: Path
) -> None:
    statuses: list[PushStatus] = []
    stream = Stream("test")
    stream.track("audio")
    config = PushConfig(url=str(tmp_path / "out.flv"), audio="copy")
    pusher = RtmpPusher(stream, config, on_status=lambda s, _: statuses.append(s))
    await pusher.start()
    stream.publish(audio_clip.audio[0])
    await wait_for(lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 10.0)
    assert pusher.stats.audio_frames_sent == 1
    await pusher.stop()
    assert statuses == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE, PushStatus.STOPPED]


async def test_stream_key_is_masked_only_while_pushes_use_it(clip: Clip, tmp_path: Path) -> None:
    key = "live-key-4711"
    url = f"rtmp://127.0.0.1:{unused_port()}/live/{key}"
    config = PushConfig(url=url, retry_initial=5.0, retry_max=5.0)
    first = RtmpPusher(Stream("a"), config)
    second = RtmpPusher(Stream("b"), config)
    assert redact(f"url {url}") == f"url {url[: -len(key)]}{MASK}"
    await first.start()
    await first.stop()
    assert key not in redact(key) and MASK in redact(key)  # the second push still uses it
    await second.stop()  # never started: released by stop()
    assert redact(key) == key


def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_dropped_counts_what_the_stream_subscription_dropped(clip: Clip) -> None:
    """A frame the registry dropped for this push's subscription is lost to the push
    too: ``dropped`` (what /push/find and /metrics report) includes it."""
    stream = Stream("test")
    stream.track("video")
    stream.keyframe_interval = 0.0
    pusher = RtmpPusher(stream, PushConfig(url="unused.flv", queue_frames=3))
    pusher._subscription = stream.subscribe(max_queue=2)
    for frame in clip.video[:3]:  # nobody reads: the third overflows the subscription
        stream.publish(frame)
    assert pusher._subscription.dropped >= 1
    assert pusher.stats.dropped == 0
    assert pusher.dropped == pusher._subscription.dropped
    pusher._subscription.close()
