"""FlvOutput: the tee target it builds and what it says has left for the connection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.output import (
    MAX_INTERLEAVE_MS,
    AudioSpec,
    FlvOutput,
    TlsOptions,
    _released_before,
    tee_url,
)
from rtmp.writer import avc_config, convert_video
from tests.rtmp.media import Clip, ffprobe_streams

PREFIX = "[f=flv:flvflags=no_duration_filesize:rw_timeout=2000000:max_interleave_delta=1000000"


def test_tee_url_options() -> None:
    assert tee_url("out.flv", rw_timeout=2.0, network=False) == (
        PREFIX + ":flush_packets=1]out.flv"
    )
    assert tee_url("rtmp://h/live/k", rw_timeout=2.0, network=True) == (
        PREFIX + ":flush_packets=1:tcp_nodelay=1]rtmp://h/live/k"
    )


def test_tee_url_keeps_ipv6_brackets_after_the_option_block() -> None:
    url = "rtmp://[::1]:1935/live/key"
    target = tee_url(url, rw_timeout=2.0, network=True)
    options, rest = target.split("]", 1)
    assert options.startswith("[f=flv:") and "[" not in options[1:]
    assert rest == url


def test_tee_url_escapes_the_slave_separator() -> None:
    assert tee_url("rtmp://h/live/a|b'c", rw_timeout=1.0, network=True).endswith(
        "]rtmp://h/live/a\\|b\\'c"
    )


def test_tee_url_tls_options_only_for_rtmps() -> None:
    tls = TlsOptions(verify=True, ca_file="/etc/ssl/ca.pem")
    rtmps = tee_url("rtmps://h/live/k", rw_timeout=1.0, network=True, tls=tls)
    assert ":tls_verify=1:ca_file=/etc/ssl/ca.pem]rtmps://" in rtmps
    # Plain RTMP has no TLS layer to take them (FFmpeg would fail on unknown options).
    rtmp = tee_url("rtmp://h/live/k", rw_timeout=1.0, network=True, tls=tls)
    assert "tls_verify" not in rtmp and "ca_file" not in rtmp
    off = tee_url("rtmps://h/live/k", rw_timeout=1.0, network=True, tls=TlsOptions())
    assert "tls_verify" not in off


@pytest.mark.parametrize("path", ["", "C:/ca.pem", "/a]b.pem", "/a|b", "/a=b"])
def test_tls_ca_file_must_fit_the_option_block(path: str) -> None:
    with pytest.raises(ValueError, match="TLS CA file path"):
        TlsOptions(verify=True, ca_file=path)


def test_released_before_one_queue() -> None:
    assert _released_before([None, None]) == float("-inf")
    # Both tracks have something: everything older than the most behind one's newest.
    assert _released_before([500, 480]) == 480
    # One track silent: only the delta releases.
    assert _released_before([500, None]) == 500 - MAX_INTERLEAVE_MS
    assert _released_before([3000, 200]) == 3000 - MAX_INTERLEAVE_MS


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=2))
def test_released_before_never_beyond_a_tracks_newest_unless_by_delta(
    newest: list[int],
) -> None:
    released = _released_before(list(newest))
    assert released <= max(min(newest), max(newest) - MAX_INTERLEAVE_MS)


def _open(clip: Clip, path: Path) -> FlvOutput:
    output = FlvOutput(
        str(path),
        video=avc_config(clip.video[0]),
        audio=AudioSpec(codec="pcm_mulaw", sample_rate=8000),
        rw_timeout=2.0,
    )
    output.open()
    return output


def test_delivered_before_is_what_reached_the_file(clip: Clip, tmp_path: Path) -> None:
    """Every packet delivered_before() claims is in the file (flush_packets=1), and the
    first keyframe is claimed after a few packets of each track."""
    path = tmp_path / "out.flv"
    output = _open(clip, path)
    header = os.path.getsize(path)
    muxed: list[tuple[int, int]] = []  # (ts, payload size)
    first_claimed_after: int | None = None
    frames = sorted(clip.frames[:200], key=lambda f: f.pts or 0.0)
    base = frames[0].pts or 0.0
    for frame in frames:
        ts = round(((frame.pts or 0.0) - base) * 1000)
        if frame.kind == "video":
            data, _ = convert_video(frame)
            output.write_video(data, ts, keyframe=frame.keyframe)
        else:
            data = frame.payload
            output.write_audio(data, ts)
        muxed.append((ts, len(data)))
        claimed = output.delivered_before()
        in_file = os.path.getsize(path) - header
        assert in_file >= sum(size for t, size in muxed if t < claimed), (ts, claimed)
        if first_claimed_after is None and claimed > 0:
            first_claimed_after = len(muxed)
    output.close()
    assert first_claimed_after is not None and first_claimed_after <= 8
    assert {s["codec_type"] for s in ffprobe_streams(path)} == {"video", "audio"}


def test_delivered_before_with_a_silent_track(clip: Clip, tmp_path: Path) -> None:
    """Video only into a video + audio output: FFmpeg holds it back up to the interleave
    delta per queue; the claim follows, never ahead of the file."""
    path = tmp_path / "out.flv"
    output = _open(clip, path)
    header = os.path.getsize(path)
    sizes: list[tuple[int, int]] = []
    for index, frame in enumerate(clip.video[:75]):
        data, _ = convert_video(frame)
        ts = index * 40
        output.write_video(data, ts, keyframe=frame.keyframe)
        sizes.append((ts, len(data)))
        claimed = output.delivered_before()
        in_file = os.path.getsize(path) - header
        assert in_file >= sum(size for t, size in sizes if t < claimed)
        if ts < 2 * MAX_INTERLEAVE_MS:
            assert claimed <= 0
    assert output.delivered_before() > 0  # 3 s in: the delta released the start
    output.close()


def test_delivered_before_single_track(audio_clip: Clip, tmp_path: Path) -> None:
    path = tmp_path / "out.flv"
    output = FlvOutput(str(path), video=None, audio=AudioSpec("pcm_alaw", 8000), rw_timeout=2.0)
    assert output.delivered_before() == float("-inf")
    output.open()
    output.write_audio(audio_clip.audio[0].payload, 0)
    assert output.delivered_before() == float("inf")
    output.close()
