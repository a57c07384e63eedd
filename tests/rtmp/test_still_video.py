"""PushConfig.still_video: an audio-only push gets a generated still H.264 picture."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rtmp.flv import annexb_to_avcc
from rtmp.pusher import PushStatus
from rtmp.still import STILL_HEIGHT, STILL_WIDTH, still_picture
from rtmp.writer import STILL_INTERVAL
from rtp.h264_bits import NAL_IDR, nal_type, split_annexb
from tests.rtmp.media import Clip, decode_errors, ffprobe_packets, ffprobe_streams
from tests.rtmp.test_pusher_file import assert_monotonic, push_frames


def test_still_picture_is_two_alternating_idrs() -> None:
    still = still_picture()
    assert still_picture() is still  # encoded once
    info = still.config.sps_info
    assert (info.width, info.height) == (STILL_WIDTH, STILL_HEIGHT)
    assert info.profile_idc == 66  # Baseline
    assert len(still.units) == 2 and still.units[0] != still.units[1]
    for unit in still.units:
        kinds = {nal_type(n) for n in split_annexb(unit)}
        assert kinds == {NAL_IDR}  # slices of one IDR picture, no parameter sets
        assert annexb_to_avcc(unit).data
    assert still.unit(0) == still.unit(2) and still.unit(1) == still.unit(3)


def _check_still_file(out: Path, audio_seconds: float) -> None:
    streams = {s["codec_type"]: s for s in ffprobe_streams(out)}
    assert set(streams) == {"video", "audio"}
    assert streams["video"]["codec_name"] == "h264"
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (640, 360)
    assert streams["audio"]["codec_name"] == "aac"
    packets = ffprobe_packets(out)
    assert_monotonic(packets)
    video = [t for k, t, _ in packets if k == "video"]
    audio = [t + d for k, t, d in packets if k == "audio"]
    steps = {round(b - a, 3) for a, b in itertools.pairwise(video)}
    assert steps == {STILL_INTERVAL}
    # The pictures span the audio: from its start to within one interval of its end.
    assert video[0] == pytest.approx(1024 / 48000, abs=0.002)
    assert max(audio) - video[-1] <= STILL_INTERVAL + 0.1
    assert max(audio) == pytest.approx(audio_seconds, abs=0.1)
    assert decode_errors(out) == ""


async def test_audio_only_stream_gets_still_video(audio_clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    pusher = await push_frames(
        audio_clip.frames, out, declare=("audio",), config={"still_video": True}
    )
    assert pusher.status is PushStatus.STOPPED
    assert pusher.stats.video_frames_sent == 0  # counts the stream's own video only
    _check_still_file(out, len(audio_clip.audio) * 0.02)


async def test_declared_video_that_never_comes(audio_clip: Clip, tmp_path: Path) -> None:
    """A stream declaring video but sending none starts after 1 s of audio, with the still."""
    out = tmp_path / "out.flv"
    pusher = await push_frames(
        audio_clip.frames, out, declare=("video", "audio"), config={"still_video": True}
    )
    assert pusher.status is PushStatus.STOPPED
    # No audio frame was dropped while waiting: the file still covers the whole clip.
    _check_still_file(out, len(audio_clip.audio) * 0.02)


async def test_still_video_off_stays_audio_only(audio_clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    await push_frames(audio_clip.frames, out, declare=("audio",), config={"still_video": False})
    assert [s["codec_type"] for s in ffprobe_streams(out)] == ["audio"]


async def test_stream_with_video_ignores_still_video(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    pusher = await push_frames(clip.frames, out, config={"still_video": True})
    assert pusher.stats.video_frames_sent == len(clip.video)
    streams = {s["codec_type"]: s for s in ffprobe_streams(out)}
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (
        clip.width,
        clip.height,
    )
    assert decode_errors(out) == ""
