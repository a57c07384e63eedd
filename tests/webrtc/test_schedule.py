"""ViewerSchedule: one wallclock schedule for audio and video, drops, re-anchoring."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.frame import MediaFrame, MediaKind
from webrtc.schedule import (
    GIVE_BACK_MARGIN,
    GIVE_BACK_STEP,
    MAX_AHEAD,
    MAX_LATE,
    PLAYOUT_DELAY,
    REANCHOR_AFTER,
    SHORT_SLACK,
    ViewerSchedule,
    rtp_timestamp,
)

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


def test_stale_frames_are_dropped_at_release_and_video_waits_for_a_keyframe() -> None:
    """A viewer that stalled: frames taken more than MAX_LATE after their due time go."""
    schedule = ViewerSchedule(CODECS)
    assert schedule.admit(video(0.0, key=True), now=0.0) == pytest.approx(PLAYOUT_DELAY)
    due_v, due_a = schedule.admit(video(0.04), now=0.04), schedule.admit(audio(0.02), now=0.02)
    assert due_v is not None and due_a is not None
    stalled = due_v + MAX_LATE + 0.01
    assert not schedule.release("video", False, due_v, stalled)
    assert schedule.keyframe_wanted
    assert not schedule.release("audio", True, due_a, stalled)
    assert schedule.late == 2
    # Queued video after the drop waits for a keyframe even when on time; audio goes.
    assert not schedule.release("video", False, 0.75, 0.75)
    assert schedule.release("audio", True, 0.75, 0.75)
    assert schedule.release("video", True, 0.85, 0.85)
    assert schedule.release("video", False, 0.89, 0.89)
    assert schedule.dropped == 3
    # Admission never waited for a keyframe: its chain was not broken.
    assert schedule.admit(video(0.08), now=0.08) is not None


def test_a_full_queue_drops_and_video_admission_waits_for_a_keyframe() -> None:
    schedule = ViewerSchedule(CODECS)
    schedule.admit(video(0.0, key=True), now=0.0)
    schedule.overflow("video")
    assert schedule.keyframe_wanted and schedule.overflowed == 1
    assert schedule.admit(video(0.04), now=0.04) is None
    assert schedule.admit(audio(0.04), now=0.04) is not None
    assert schedule.admit(video(0.08, key=True), now=0.08) is not None
    assert schedule.dropped == 2
    # The release side has no gap: what was admitted before the overflow still goes.
    assert schedule.release("video", False, 0.09, 0.09)


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


# -- following the stream's ingest delay (virtual time) ---------------------------------------
Admitted = tuple[MediaKind, float, float, float]  # (kind, pts, admitted at, due)


def simulate(
    schedule: ViewerSchedule,
    ingest: Callable[[float], float],
    until: float,
    *,
    start: float = 0.0,
    moves: list[int] | None = None,
) -> list[Admitted]:
    """A call publishing audio every 20 ms and video every 40 ms (pts = its capture time),
    each frame published ``ingest(pts)`` seconds after capture, in pts order (the jitter
    buffer's output is a FIFO: a frame waits for the one before it)."""
    frames: list[tuple[float, MediaFrame]] = []
    last = -1.0
    for index in range(round((until - start) / 0.02)):
        pts = start + index * 0.02
        last = max(last, pts + ingest(pts))
        frames.append((last, audio(pts)))
        if index % 2 == 0:
            frames.append((last, video(pts, key=index == 0)))
    out: list[Admitted] = []
    for now, frame in frames:
        due = schedule.admit(frame, now)
        assert due is not None, (frame, now)
        assert frame.pts is not None
        out.append((frame.kind, frame.pts, now, due))
        if moves is not None:
            moves.append(schedule.reanchors)
    return out


def slack_after(rows: list[Admitted], t: float) -> list[float]:
    return [due - now for _, pts, now, due in rows if pts >= t]


def step(at: float, before: float, after: float) -> Callable[[float], float]:
    return lambda pts: before if pts < at else after


def assert_dues_follow_pts(rows: list[Admitted]) -> None:
    for kind in ("audio", "video"):
        dues = [
            due for k, _, _, due in sorted((r for r in rows if r[0] == kind), key=lambda r: r[1])
        ]
        assert dues == sorted(dues)


def test_a_grown_ingest_delay_reanchors_later_after_a_second_of_late_frames() -> None:
    schedule = ViewerSchedule(CODECS)
    rows = simulate(schedule, step(3.0, 0.02, 0.22), until=8.0)
    assert slack_after(rows, 0.0)[:100] == pytest.approx([PLAYOUT_DELAY] * 100)
    late = [s for _, pts, now, due in rows if 3.0 <= pts < 3.9 for s in [due - now]]
    assert late and max(late) == pytest.approx(PLAYOUT_DELAY - 0.2)
    # About REANCHOR_AFTER after the growth the anchor moved 200 ms later, in one move ...
    assert schedule.reanchors == 1
    assert schedule.shift == pytest.approx(0.2)
    # ... and every frame has its full playout margin again.
    assert slack_after(rows, 3.0 + REANCHOR_AFTER + 0.05) == pytest.approx(
        [PLAYOUT_DELAY] * len(slack_after(rows, 3.0 + REANCHOR_AFTER + 0.05))
    )
    # A late frame leaves when admitted: the time a frame leaves after its capture steps
    # by at most the playout delay at the move.
    leaves = [max(now, due) - pts for _, pts, now, due in sorted(rows, key=lambda r: r[1])]
    assert max(b - a for a, b in itertools.pairwise(leaves)) <= 0.2 + 1e-9  # the growth itself
    moved = [b - a for a, b in itertools.pairwise(leaves) if b - a > 1e-6]
    assert max(moved[1:], default=0.0) <= PLAYOUT_DELAY + 1e-9
    assert_dues_follow_pts(rows)
    assert schedule.dropped == 0


def test_growth_within_the_margin_does_not_move_the_anchor() -> None:
    schedule = ViewerSchedule(CODECS)
    simulate(schedule, step(2.0, 0.02, 0.02 + PLAYOUT_DELAY - SHORT_SLACK - 0.001), until=6.0)
    assert schedule.reanchors == 0


def test_late_frames_in_short_bursts_do_not_move_the_anchor() -> None:
    schedule = ViewerSchedule(CODECS)
    simulate(schedule, lambda pts: 0.2 if int(pts * 2) % 2 else 0.02, until=6.0)  # 0.5 s each
    assert schedule.reanchors == 0


def test_a_jump_past_max_late_reanchors_at_once() -> None:
    schedule = ViewerSchedule(CODECS)
    rows = simulate(schedule, step(2.0, 0.02, 0.02 + MAX_LATE + 0.3), until=4.0)
    assert schedule.reanchors == 1
    assert slack_after(rows, 2.0) == pytest.approx([PLAYOUT_DELAY] * len(slack_after(rows, 2.0)))
    assert schedule.dropped == 0


def test_a_shrinking_delay_gets_back_what_was_taken_in_small_steps() -> None:
    schedule = ViewerSchedule(CODECS)
    rows = simulate(schedule, lambda pts: 0.22 if 3.0 <= pts < 8.0 else 0.02, until=16.0)
    # 200 ms taken, then given back GIVE_BACK_STEP at a time: 1 + 4 moves.
    assert schedule.reanchors == 1 + round(0.2 / GIVE_BACK_STEP)
    assert schedule.shift == pytest.approx(0.0, abs=1e-9)
    assert slack_after(rows, 14.0) == pytest.approx([PLAYOUT_DELAY] * len(slack_after(rows, 14.0)))
    # No catch-up burst releases more than GIVE_BACK_STEP of media at once.
    ordered = sorted(rows, key=lambda r: r[3])
    for (_, pts_a, _, due_a), (_, pts_b, _, due_b) in itertools.pairwise(ordered):
        assert (pts_b - pts_a) - (due_b - due_a) <= GIVE_BACK_STEP + 0.02 + 1e-9
    assert_dues_follow_pts(rows)


def test_a_viewer_joined_on_an_old_gop_keeps_its_hold() -> None:
    """The hold from joining 1 s into a GOP absorbs delay growth and is never given back."""
    schedule = ViewerSchedule(CODECS)
    schedule.admit(video(0.0, key=True), now=1.0)  # the cached keyframe, 1 s old
    rows = simulate(
        schedule, lambda pts: 0.32 if 3.0 <= pts < 6.0 else 0.02, until=10.0, start=0.02
    )
    assert schedule.reanchors == 0
    assert slack_after(rows, 7.0) == pytest.approx(
        [1.0 - 0.02 + PLAYOUT_DELAY] * len(slack_after(rows, 7.0))
    )


@given(
    changes=st.lists(st.tuples(st.floats(0.0, 20.0), st.floats(0.0, 1.5)), min_size=0, max_size=8),
)
def test_the_schedule_follows_any_ingest_delay(changes: list[tuple[float, float]]) -> None:
    """Whatever the delay does: no frame dropped, due times follow pts within a kind, a run
    of short frames lasts at most about REANCHOR_AFTER before a move, and long after the last
    change the margin is at least SHORT_SLACK, and at most delay + GIVE_BACK_MARGIN unless
    nothing taken is left to give back."""

    def ingest(pts: float) -> float:
        value = 0.02
        for at, delay in sorted(changes):
            if pts >= at:
                value = 0.02 + delay
        return value

    schedule = ViewerSchedule(CODECS)
    moves: list[int] = []
    rows = simulate(
        schedule, ingest, until=20.0 + 10.0 + 0.2 / GIVE_BACK_STEP * 1.2 + 30.0, moves=moves
    )
    assert_dues_follow_pts(rows)
    assert schedule.shift >= 0.0
    # A run of short frames ends within about REANCHOR_AFTER: by a move (which may leave
    # the latest frame short still, when the delay kept growing: a new run starts).
    short_since: float | None = None
    previous_moves = 0
    for (_, _, now, due), moved in zip(rows, moves, strict=True):
        if moved != previous_moves:
            previous_moves, short_since = moved, None
        if due - now < SHORT_SLACK - 1e-9:
            short_since = now if short_since is None else short_since
            assert now - short_since <= REANCHOR_AFTER + 0.05
        else:
            short_since = None
    tail = slack_after(rows, rows[-1][1] - 1.0)
    assert all(s >= SHORT_SLACK - 1e-9 for s in tail)
    # What was taken is given back; a delay already high at the anchor is not (it may be
    # a GOP's age, the hold a viewer joining on it is meant to have).
    assert schedule.shift == pytest.approx(0.0, abs=1e-9) or all(
        s <= PLAYOUT_DELAY + GIVE_BACK_MARGIN + 1e-9 for s in tail
    )
