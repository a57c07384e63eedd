"""Recorder: real clips recorded to Matroska and fragmented MP4, checked with ffprobe/ffmpeg."""

from __future__ import annotations

import asyncio
import errno
import itertools
import re
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest
from av.audio.codeccontext import AudioCodecContext

from rtmp.flv import annexb_to_avcc
from rtp.frame import MediaFrame
from sipbridge.recording import FAILED_INFO, Recorder, RecordingStatus
from sipbridge.recording.container import MediaFile
from sipbridge.registry import Stream, StreamStatus
from tests.recording.media import (
    config,
    decode_errors,
    packets,
    probe,
    record,
    start_offset,
    wait_for,
)
from tests.rtmp.media import BASE_PTS, Clip, shifted

NAME = re.compile(r"^call1-(\d{13})-(\d{13})\.(mkv|mp4)$")


def streams_by_kind(path: Path) -> dict[str, dict[str, object]]:
    return {s["codec_type"]: s for s in probe(path)["streams"]}


@pytest.mark.parametrize(
    ("fmt", "audio", "codec"),
    [("mkv", "copy", "pcm_mulaw"), ("mkv", "aac", "aac"), ("mp4", "copy", "aac")],
)
async def test_clip_recorded_whole(
    clip: Clip, tmp_path: Path, fmt: str, audio: str, codec: str
) -> None:
    recorder = await record(clip.frames, config(tmp_path, format=fmt, audio=audio))
    assert recorder.status is RecordingStatus.STOPPED, recorder.info
    assert len(recorder.files) == 1
    record_ = recorder.files[0]
    assert record_.finished and record_.error is None
    match = NAME.match(record_.name)
    assert match is not None, record_.name
    assert int(match[2]) - int(match[1]) == pytest.approx(clip.seconds * 1000, abs=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == [record_.name]
    streams = streams_by_kind(record_.path)
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (clip.width, clip.height)
    assert streams["video"]["r_frame_rate"] == "25/1"
    assert streams["audio"]["codec_name"] == codec
    assert streams["audio"]["channels"] == 1
    fmt_info = probe(record_.path)["format"]
    # A clean finish writes the duration (Matroska Segment Info / MP4 fragments).
    assert float(fmt_info["duration"]) == pytest.approx(clip.seconds, abs=0.1)
    found = packets(record_.path)
    assert len(found["video"]) == len(clip.video)
    assert found["video"][0][0] == pytest.approx(0.0, abs=0.03)
    video_times = [t for t, _ in found["video"]]
    steps = {round(b - a, 3) for a, b in itertools.pairwise(video_times)}
    assert steps == {0.04}
    assert decode_errors(record_.path) == ""


async def test_g711_and_h264_are_byte_exact_in_matroska(clip: Clip, tmp_path: Path) -> None:
    recorder = await record(clip.frames, config(tmp_path))
    path = recorder.files[0].path
    video: list[bytes] = []
    audio: list[bytes] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                (video if packet.stream.type == "video" else audio).append(bytes(packet))
    assert video == [annexb_to_avcc(f.payload).data for f in clip.video]
    assert b"".join(audio) == b"".join(f.payload for f in clip.audio)


def opus_frames(count: int, base: float) -> list[MediaFrame]:
    encoder = av.CodecContext.create("libopus", "w")
    assert isinstance(encoder, AudioCodecContext)
    encoder.sample_rate = 48000
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.time_base = Fraction(1, 48000)
    encoder.open()
    payloads: list[bytes] = []
    for index in range(count):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.planes[0].update(bytes(960 * 4))
        payloads += [bytes(p) for p in encoder.encode(frame)]
    return [
        MediaFrame(
            kind="audio",
            codec="opus",
            clock_rate=48000,
            rtp_timestamp=i * 960,
            payload=p,
            keyframe=True,
            pts=base + i * 0.02,
            duration=0.02,
        )
        for i, p in enumerate(payloads)
    ]


@pytest.mark.parametrize("fmt", ["mkv", "mp4"])
async def test_opus_is_copied(clip: Clip, tmp_path: Path, fmt: str) -> None:
    audio = opus_frames(len(clip.audio), BASE_PTS)
    frames = sorted(clip.video + audio, key=lambda f: (f.pts or 0.0, f.kind != "video"))
    recorder = await record(frames, config(tmp_path, format=fmt))
    path = recorder.files[0].path
    streams = streams_by_kind(path)
    assert streams["audio"]["codec_name"] == "opus"
    assert streams["audio"]["sample_rate"] == "48000"
    found = packets(path)
    assert len(found["audio"]) == len(audio)
    assert decode_errors(path) == ""


@pytest.mark.parametrize(("fmt", "audio"), [("mkv", "copy"), ("mp4", "copy")])
async def test_rotation_by_duration_is_continuous(
    clip: Clip, tmp_path: Path, fmt: str, audio: str
) -> None:
    """Consecutive files meet at the cut: file N's end (its offset + the end of its last
    video frame) is file N+1's offset, its audio ends within one audio frame of it."""
    recorder = await record(clip.frames, config(tmp_path, format=fmt, rotate_seconds=2.0))
    files = recorder.files
    assert len(files) == 3, [f.name for f in files]
    total_video = 0
    audio_frame = 0.021 if fmt == "mp4" else 0.020  # AAC at 48 kHz: 1024 samples
    for index, record_ in enumerate(files):
        found = packets(record_.path)
        offset = start_offset(record_.path)
        assert offset == pytest.approx(record_.start_offset, abs=1e-6)
        total_video += len(found["video"])
        with av.open(str(record_.path)) as container:
            first = next(p for p in container.demux(video=0) if p.size)
            assert first.is_keyframe
        assert decode_errors(record_.path) == ""
        if index + 1 == len(files):
            break
        following = files[index + 1]
        next_offset = start_offset(following.path)
        video_end = offset + found["video"][-1][0] + found["video"][-1][1]
        audio_end = offset + found["audio"][-1][0] + found["audio"][-1][1]
        assert video_end == pytest.approx(next_offset, abs=0.0015)
        assert abs(audio_end - next_offset) <= audio_frame + 0.0015
        # The names meet too: file N's endTime is file N+1's startTime.
        assert NAME.match(record_.name)[2] == NAME.match(following.name)[1]  # type: ignore[index]
    assert total_video == len(clip.video)
    if fmt == "mkv":
        audio_bytes = sum(
            len(p) for f in files for p in _audio_payloads(f.path)
        )  # nothing lost or doubled at the cuts
        assert audio_bytes == sum(len(f.payload) for f in clip.audio)


def _audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


async def test_rotation_by_size(clip: Clip, tmp_path: Path) -> None:
    recorder = await record(clip.frames, config(tmp_path, rotate_bytes=100_000))
    files = recorder.files
    assert len(files) >= 3
    for record_ in files[:-1]:
        # A file is cut at the first keyframe after reaching the size: at most one GOP more.
        assert 100_000 <= record_.bytes <= 100_000 + 80_000
    assert sum(len(packets(f.path)["video"]) for f in files) == len(clip.video)


async def test_sps_change_starts_a_new_file(clip: Clip, clip_640: Clip, tmp_path: Path) -> None:
    second = shifted(clip_640.frames, clip.seconds + 0.04)
    recorder = await record(clip.frames + second, config(tmp_path))
    assert len(recorder.files) == 2
    sizes = [streams_by_kind(f.path)["video"] for f in recorder.files]
    assert [(s["width"], s["height"]) for s in sizes] == [(320, 240), (640, 480)]
    assert len(packets(recorder.files[1].path)["video"]) == len(clip_640.video)


async def test_audio_only_stream(audio_clip: Clip, tmp_path: Path) -> None:
    recorder = await record(audio_clip.frames, config(tmp_path), declare=("audio",))
    assert len(recorder.files) == 1
    path = recorder.files[0].path
    streams = probe(path)["streams"]
    assert [s["codec_name"] for s in streams] == ["pcm_alaw"]
    assert float(probe(path)["format"]["duration"]) == pytest.approx(audio_clip.seconds, abs=0.05)
    assert recorder.files[0].video_codec is None
    assert recorder.files[0].audio_codec == "PCMA"


async def test_video_late_starts_audio_only_then_a_video_file(clip: Clip, tmp_path: Path) -> None:
    late = BASE_PTS + 3.0  # a keyframe (GOP 1 s)
    frames = [f for f in clip.frames if f.kind == "audio" or (f.pts or 0.0) >= late - 1e-6]
    recorder = await record(frames, config(tmp_path, video_wait=1.0))
    assert len(recorder.files) == 2
    first, second = (probe(f.path)["streams"] for f in recorder.files)
    assert [s["codec_type"] for s in first] == ["audio"]
    assert sorted(s["codec_type"] for s in second) == ["audio", "video"]
    assert recorder.files[1].start_offset == pytest.approx(3.0, abs=0.001)


async def test_audio_before_the_first_keyframe_is_kept(clip: Clip, tmp_path: Path) -> None:
    start = BASE_PTS + 1.0  # the second keyframe
    frames = [f for f in clip.frames if f.kind == "audio" or (f.pts or 0.0) >= start - 1e-6]
    recorder = await record(frames, config(tmp_path))
    assert len(recorder.files) == 1
    found = packets(recorder.files[0].path)
    # Audio from up to video_wait (2 s) before the keyframe starts the file.
    assert found["audio"][0][0] == pytest.approx(0.0)
    assert found["video"][0][0] == pytest.approx(1.0, abs=0.001)
    assert len(found["audio"]) == len(clip.audio)


async def test_rotate_request_cuts_at_the_next_keyframe(clip: Clip, tmp_path: Path) -> None:
    stream = Stream("call1")
    stream.track("video")
    stream.track("audio")
    recorder = Recorder(stream, config(tmp_path))
    await recorder.start()
    half = len(clip.frames) // 2
    for frame in clip.frames[:half]:
        stream.publish(frame)
    await asyncio.sleep(0)
    recorder.rotate()
    for frame in clip.frames[half:]:
        stream.publish(frame)
    stream.end(StreamStatus.UNPUBLISHED)
    await wait_for(lambda: recorder.status.is_final)
    await recorder.stop()
    assert len(recorder.files) == 2
    cut = recorder.files[1].start_offset
    assert cut == pytest.approx(round(cut), abs=0.001)  # a keyframe: whole seconds
    assert 2.0 <= cut <= 4.0
    assert sum(len(packets(f.path)["video"]) for f in recorder.files) == len(clip.video)


async def test_stop_finishes_the_file_cleanly(clip: Clip, tmp_path: Path) -> None:
    recorder = await record(clip.frames, config(tmp_path), end=False)
    assert recorder.status is RecordingStatus.STOPPED
    assert recorder.stream.status is StreamStatus.PUBLISHING  # the stream goes on
    assert recorder.stream.subscribers == 0
    [record_] = recorder.files
    assert "partial" not in record_.name
    assert float(probe(record_.path)["format"]["duration"]) == pytest.approx(clip.seconds, abs=0.1)


async def test_hostile_stream_name_stays_in_the_directory(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = config(out, "{streamName}/{startTime}")
    recorder = await record(clip.frames[:60], cfg, name="../../etc/passwd")
    [record_] = recorder.files
    assert record_.path.is_relative_to(out.resolve())
    assert record_.name.startswith(".._.._etc_passwd/")


async def test_write_error_fails_the_recording_not_the_stream(
    clip: Clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk mid-recording: FAILED with the reason, the file so far stays playable,
    the stream and its other subscribers go on."""
    original = MediaFile.write_video
    written = 0

    def failing(
        self: MediaFile, data: bytes, ts: float, *, keyframe: bool, duration: float
    ) -> None:
        nonlocal written
        written += 1
        if written > 60:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, data, ts, keyframe=keyframe, duration=duration)

    monkeypatch.setattr(MediaFile, "write_video", failing)
    stream = Stream("call1")
    stream.track("video")
    stream.track("audio")
    other = stream.subscribe(max_queue=1000)
    recorder = Recorder(stream, config(tmp_path))
    await recorder.start()
    for index, frame in enumerate(clip.frames):
        stream.publish(frame)
        if index % 20 == 0:
            await asyncio.sleep(0.005)
    await wait_for(lambda: recorder.status.is_final)
    assert recorder.status is RecordingStatus.FAILED
    assert recorder.info == f"{FAILED_INFO}: No space left on device"
    assert stream.status is StreamStatus.PUBLISHING
    assert len(other) == len(clip.frames)  # the other subscriber lost nothing
    assert stream.subscribers == 1  # the recorder left
    [record_] = recorder.files
    assert record_.error == "No space left on device"
    assert "partial" in record_.name  # not finished: keeps its in-progress name
    found = packets(record_.path)
    assert len(found["video"]) == 60
    assert decode_errors(record_.path) == ""
    await recorder.stop()
    assert recorder.status is RecordingStatus.FAILED


async def test_unwritable_directory_fails_with_the_reason(clip: Clip, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    recorder = await record(clip.frames[:60], config(blocker / "sub"))
    assert recorder.status is RecordingStatus.FAILED
    assert recorder.info is not None and recorder.info.startswith(FAILED_INFO)
    assert "Not a directory" in recorder.info


async def test_slow_disk_drops_frames_but_never_blocks_the_stream(
    clip: Clip, tmp_path: Path
) -> None:
    stream = Stream("call1")
    stream.track("video")
    stream.track("audio")
    recorder = Recorder(stream, replace(config(tmp_path), queue_frames=10))
    await recorder.start()
    for frame in clip.frames:  # no yield: the reader cannot move anything meanwhile
        stream.publish(frame)
    stream.end(StreamStatus.UNPUBLISHED)
    await wait_for(lambda: recorder.status.is_final)
    await recorder.stop()
    assert recorder.status is RecordingStatus.STOPPED
    assert recorder.stats.dropped > 0
    [record_] = recorder.files
    assert decode_errors(record_.path) == ""


async def test_rotation_asks_for_a_keyframe(clip: Clip, tmp_path: Path) -> None:
    """A phone that sends keyframes only on request is still cut: once a file is due,
    the stream is asked for one."""
    stream = Stream("call1", keyframe_interval=0.0)
    stream.track("video")
    stream.track("audio")
    asked: list[int] = []
    stream.set_keyframe_requester(lambda: asked.append(len(asked)))
    recorder = Recorder(stream, config(tmp_path, rotate_seconds=1.5))
    await recorder.start()
    initial = len(asked)  # the subscription's own request (no GOP cached yet)
    for index, frame in enumerate(clip.frames):
        stream.publish(frame)
        if index % 20 == 0:
            await asyncio.sleep(0)
    stream.end(StreamStatus.UNPUBLISHED)
    await wait_for(lambda: recorder.status.is_final)
    await recorder.stop()
    # Frames 1.5..2.0 s and 3.5..4.0 s of each file asked (the stream rate-limits asks).
    assert len(asked) - initial >= 20
    assert len(recorder.files) == 3  # cut at 2.0 and 4.0: the first keyframes after 1.5 s
    assert [round(f.start_offset, 3) for f in recorder.files] == [0.0, 2.0, 4.0]


async def test_long_first_frame_gap_does_not_set_the_frame_rate(clip: Clip, tmp_path: Path) -> None:
    """baresip leaves 80 ms after its first frame at 25 fps: one gap is not the rate."""
    second_video = clip.video[1]
    frames = [f for f in clip.frames if f is not second_video]
    recorder = await record(frames, config(tmp_path))
    assert recorder.status is RecordingStatus.STOPPED, recorder.info
    [record_] = recorder.files
    assert streams_by_kind(record_.path)["video"]["r_frame_rate"] == "25/1"
    assert decode_errors(record_.path) == ""
