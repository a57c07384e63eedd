"""ViewerSchedule: one wallclock schedule for audio and video, drops, re-anchoring."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.frame import MediaFrame, MediaKind
from webrtc.schedule import MAX_AHEAD, MAX_LATE, PLAYOUT_DELAY, ViewerSchedule, rtp_timestamp

CODECS: dict[MediaKind, str] = {"video": "H264", "audio": "PCMU"}


def video(pts: float, *, key: bool = False, codec: str = "H264") -> MediaFrame:
    return MediaFrame("video", codec, 90000, 0, b"\x00\x00\x00\x01\x65", keyframe=key, pts=pts)


def audio(pts: float | None, *, codec: str = "PCMU") -> MediaFrame:
    return MediaFrame("audio", codec, 8000, 0, b"\xff" * 160, keyframe=True, pts=pts)


def test_first_frame_anchors_and_both_kinds_share_the_schedule() -> None:
    schedule = ViewerSchedule(CODECS)
    assert schedule.admit(video(10.0, key=True), now=500.0) == pytest.approx(500.0 + PLAYOUT_DELAY)
    assert schedule.anchor == (10.0, 500.0)
    # A frame is due (pts - first pts) after the start, whatever its kind or arrival time.
    assert schedule.admit(audio(10.02), now=500.001) == pytest.approx(500.02 + PLAYOUT_DELAY)
    assert schedule.admit(video(10.04), now=500.0) == pytest.approx(500.04 + PLAYOUT_DELAY)
    assert schedule.admit(audio(11.0), now=500.5) == pytest.approx(501.0 + PLAYOUT_DELAY)
    assert schedule.dropped == 0


def test_audio_before_the_first_keyframe_plays_and_video_joins_the_same_timeline() -> None:
    schedule = ViewerSchedule(CODECS)
    assert schedule.admit(audio(5.0), now=0.0) == pytest.approx(PLAYOUT_DELAY)
    assert schedule.admit(video(5.5), now=0.5) is None  # not a keyframe: dropped
    assert schedule.admit(video(5.6, key=True), now=0.6) == pytest.approx(0.6 + PLAYOUT_DELAY)
    assert schedule.dropped == 1


def test_late_frames_are_dropped_and_video_waits_for_a_keyframe() -> None:
    schedule = ViewerSchedule(CODECS)
    schedule.admit(video(0.0, key=True), now=0.0)
    late = 0.04 + PLAYOUT_DELAY + MAX_LATE + 0.01
    assert schedule.admit(video(0.04), now=late) is None
    assert schedule.keyframe_wanted
    assert schedule.admit(audio(0.02), now=late) is None
    assert schedule.late == 2
    # Video frames after the drop wait for a keyframe even when on time.
    assert schedule.admit(video(0.7), now=0.7) is None
    assert schedule.admit(audio(0.7), now=0.7) == pytest.approx(0.7 + PLAYOUT_DELAY)
    assert schedule.admit(video(0.8, key=True), now=0.8) == pytest.approx(0.8 + PLAYOUT_DELAY)
    assert schedule.admit(video(0.84), now=0.84) == pytest.approx(0.84 + PLAYOUT_DELAY)
    assert schedule.dropped == 3


def test_slightly_late_frames_still_go() -> None:
    schedule = ViewerSchedule(CODECS)
    schedule.admit(audio(0.0), now=0.0)
    assert schedule.admit(audio(0.02), now=0.02 + PLAYOUT_DELAY + MAX_LATE - 0.01) is not None
    assert schedule.dropped == 0


def test_a_jump_ahead_of_the_call_clock_reanchors() -> None:
    schedule = ViewerSchedule(CODECS)
    schedule.admit(audio(0.0), now=0.0)
    jump = MAX_AHEAD + 5.0
    assert schedule.admit(audio(jump), now=0.02) == pytest.approx(0.02 + PLAYOUT_DELAY)
    assert schedule.reanchors == 1
    assert schedule.admit(audio(jump + 0.02), now=0.03) == pytest.approx(0.04 + PLAYOUT_DELAY)


def test_wrong_codec_and_missing_pts_are_dropped_without_keyframe_requests() -> None:
    schedule = ViewerSchedule(CODECS)
    schedule.admit(video(0.0, key=True), now=0.0)
    assert schedule.admit(audio(0.02, codec="PCMA"), now=0.02) is None
    assert schedule.admit(audio(None), now=0.02) is None
    assert schedule.admit(video(0.04, key=True, codec="VP8"), now=0.04) is None
    assert not schedule.keyframe_wanted
    assert schedule.dropped == 3


def test_kinds_not_negotiated_are_ignored_not_counted() -> None:
    schedule = ViewerSchedule({"audio": "opus"})
    assert schedule.admit(video(0.0, key=True), now=0.0) is None
    assert schedule.admit(audio(0.0, codec="OPUS"), now=0.0) == pytest.approx(PLAYOUT_DELAY)
    assert schedule.dropped == 0


def test_rtp_timestamps_use_each_codec_clock() -> None:
    assert rtp_timestamp(2.0, 90000) == 180000
    assert rtp_timestamp(2.0, 8000) == 16000
    assert rtp_timestamp(0.02, 48000) == 960


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.1), min_size=1, max_size=200),
    lags=st.lists(st.floats(min_value=0.0, max_value=MAX_LATE), min_size=1, max_size=200),
)
def test_on_time_frames_are_never_dropped_and_leave_in_pts_order(
    gaps: list[float], lags: list[float]
) -> None:
    """Frames admitted at most MAX_LATE after their due time all go, due times follow pts."""
    schedule = ViewerSchedule(CODECS)
    start, pts = 7.0, 100.0
    dues: list[float] = []
    for index, gap in enumerate(gaps):
        pts += gap
        lag = lags[index % len(lags)] * 0.999 if index else 0.0
        now = start + (pts - (100.0 + gaps[0])) + PLAYOUT_DELAY + lag
        due = schedule.admit(audio(pts), now=start if index == 0 else now)
        assert due is not None
        dues.append(due)
    assert dues == sorted(dues)
    assert schedule.dropped == 0
