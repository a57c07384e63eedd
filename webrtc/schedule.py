"""One viewer's playout schedule: when each frame leaves, and which frames do not.

Theory of operation
-------------------
A viewer's audio and video are released on one wallclock schedule so the
browser receives both tracks in step: the first frame released anchors the
schedule (its ``pts`` and the monotonic time ``now`` it was admitted), and a
frame with presentation time ``pts`` is due at::

    anchor_now + (pts - anchor_pts) + delay

``delay`` (:data:`PLAYOUT_DELAY`) is a small constant so a frame admitted a
little after its moment is still on time. The RTP timestamps of both tracks
derive from the same ``pts`` (:func:`rtp_timestamp`), and aiortc's RTCP sender
reports (RFC 3550 §6.4.1) pair the NTP time of sending with the RTP timestamp
sent, so with both tracks sent on this schedule the browser's lip-sync
(which maps each track's RTP time to NTP through its SR) lines them up.

A new viewer starts on the stream's cached GOP, whose first frame is a keyframe
that may be up to a GOP old: the viewer then plays that much behind live, paced
at the natural rate rather than bursting old frames the browser would have to
render late or drop.

Drops (each counted in :attr:`ViewerSchedule.dropped`):

* a frame whose codec is not the one negotiated for its kind (the call changed
  codec mid-way): the browser could not decode it;
* a frame without ``pts`` (the call clock is not synchronised yet);
* a frame more than :data:`MAX_LATE` past its due time (the viewer stalled, its
  queue held stale media): sending it would only add latency. A dropped video
  frame breaks the decoding chain, so video then waits for the next keyframe
  and :attr:`ViewerSchedule.keyframe_wanted` is raised for the caller to ask
  the stream for one;
* video frames while waiting for that keyframe.

A frame due more than :data:`MAX_AHEAD` in the future means the call clock
jumped forward: the schedule is re-anchored on it rather than stall the viewer.

Sans-IO: ``now`` is passed in; nothing here sleeps or touches sockets.
"""

from __future__ import annotations

from collections.abc import Mapping

from rtp.frame import MediaFrame, MediaKind

__all__ = ["MAX_AHEAD", "MAX_LATE", "PLAYOUT_DELAY", "ViewerSchedule", "rtp_timestamp"]

#: Seconds added to every due time (see the module docstring).
PLAYOUT_DELAY = 0.05
#: A frame this many seconds past its due time is dropped instead of sent.
MAX_LATE = 0.5
#: A frame due more than this many seconds ahead re-anchors the schedule.
MAX_AHEAD = 10.0


def rtp_timestamp(pts: float, clock_rate: int) -> int:
    """``pts`` seconds in units of ``clock_rate`` (aiortc adds its random 32-bit origin)."""
    return round(pts * clock_rate)


class ViewerSchedule:
    """Admits frames for one viewer and says when each is due (see the module docstring).

    ``codecs`` maps each kind sent to this viewer to its negotiated codec name;
    frames of other kinds are ignored (not counted as dropped).
    """

    def __init__(
        self,
        codecs: Mapping[MediaKind, str],
        *,
        delay: float = PLAYOUT_DELAY,
        max_late: float = MAX_LATE,
        max_ahead: float = MAX_AHEAD,
    ) -> None:
        self.codecs = {kind: name.lower() for kind, name in codecs.items()}
        self.delay = delay
        self.max_late = max_late
        self.max_ahead = max_ahead
        self.dropped = 0
        self.late = 0
        self.reanchors = 0
        #: Set when a video frame was dropped here; the caller clears it after asking
        #: the stream for a keyframe.
        self.keyframe_wanted = False
        self._anchor: tuple[float, float] | None = None  # (pts, now)
        self._video_gap = True

    @property
    def anchor(self) -> tuple[float, float] | None:
        """``(pts, now)`` of the frame the schedule is anchored on, or ``None`` yet."""
        return self._anchor

    def due(self, pts: float) -> float:
        """The monotonic time at which a frame with ``pts`` is due (needs an anchor)."""
        if self._anchor is None:
            raise RuntimeError("the schedule has no anchor yet")
        anchor_pts, anchor_now = self._anchor
        return anchor_now + (pts - anchor_pts) + self.delay

    def admit(self, frame: MediaFrame, now: float) -> float | None:
        """When to release ``frame`` (monotonic seconds), or ``None`` to drop it."""
        wanted = self.codecs.get(frame.kind)
        if wanted is None:
            return None
        video = frame.kind == "video"
        if frame.codec.lower() != wanted or frame.pts is None:
            # No keyframe request: a keyframe in the wrong codec would not help.
            self._drop(video, want_keyframe=False)
            return None
        if video and self._video_gap and not frame.keyframe:
            self.dropped += 1
            return None
        if self._anchor is None:
            self._anchor = (frame.pts, now)
        due = self.due(frame.pts)
        if due - now > self.max_ahead:
            self._anchor = (frame.pts, now)
            self.reanchors += 1
            due = self.due(frame.pts)
        elif now - due > self.max_late:
            self.late += 1
            self._drop(video, want_keyframe=True)
            return None
        if video:
            self._video_gap = False
        return due

    def _drop(self, video: bool, *, want_keyframe: bool) -> None:
        self.dropped += 1
        if video:
            self._video_gap = True
            self.keyframe_wanted = self.keyframe_wanted or want_keyframe
