"""One viewer's playout schedule: when each frame leaves, and which frames do not.

Theory of operation
-------------------
A viewer's audio and video are released on one wallclock schedule so the
browser receives both tracks in step: the first frame admitted anchors the
schedule (its ``pts`` and the monotonic time ``now`` it was admitted), and a
frame with presentation time ``pts`` is due at::

    anchor_now + (pts - anchor_pts) + delay

``delay`` (:data:`PLAYOUT_DELAY`) is a small margin so a frame admitted a
little after its moment is still on time. The RTP timestamps of both tracks
derive from the same ``pts`` (:func:`rtp_timestamp`), and aiortc's RTCP sender
reports (RFC 3550 §6.4.1) pair the NTP time of sending with the RTP timestamp
sent, so with both tracks sent on this schedule the browser's lip-sync
(which maps each track's RTP time to NTP through its SR) lines them up.

A new viewer starts on the stream's cached GOP, whose first frame is a keyframe
that may be up to a GOP old: the viewer then plays that much behind live, paced
at the natural rate rather than bursting old frames the browser would have to
render late or drop.

Two moments
-----------
:meth:`ViewerSchedule.admit` runs when the stream publishes a frame (the
stream's fan-out admits it for every viewer at once); it gives the due time.
Its *slack*, ``due - now``, is then what the viewer holds the frame for.
:meth:`ViewerSchedule.release` runs when the viewer's sender takes the frame;
only there can a viewer that stalled be told from a stream that got slower.

Following the stream's delay (re-anchoring)
-------------------------------------------
The slack of a live frame is the viewer's hold minus any growth of the
stream's ingest delay (the jitter buffer's adaptive playout delay) since the
anchor. So the schedule follows that delay:

* **Later, when frames arrive consistently late.** When every frame admitted
  for :data:`REANCHOR_AFTER` seconds had less than :data:`SHORT_SLACK` of
  slack (half the playout delay; late frames have negative slack), the anchor
  moves later by ``delay - best``, ``best`` being the largest slack of that
  run: the best frame gets the full playout margin back. A late frame leaves
  as soon as it is admitted, so the sending times move by at most ``delay``
  at that moment: a small step, not a freeze. One frame admitted more than
  :data:`MAX_LATE` past its due time (a jump of the delay, or the call clock
  stepping back) moves the anchor at once by the same rule.
* **Earlier again, when the delay shrinks back.** The schedule gives back
  what it took, never more: while the later moves add up to ``shift > 0`` and
  every frame admitted for :data:`REANCHOR_AFTER` seconds had more than
  ``delay + GIVE_BACK_MARGIN`` of slack, the anchor moves earlier by
  ``min(shift, worst - delay, GIVE_BACK_STEP)`` (``worst``: the smallest
  slack of that run). The hold a viewer got from joining on an old GOP is
  therefore never eaten into.
* **A jump ahead** of more than :data:`MAX_AHEAD` (the call clock stepped
  forward) re-anchors on that frame rather than stall the viewer.

Due times never go backwards within a kind (a give-back that would make a
frame due before its predecessor holds it to the predecessor's time), so each
track's queue stays in due order. Every move counts in
:attr:`ViewerSchedule.reanchors`.

Drops (each counted in :attr:`ViewerSchedule.dropped`):

* at admission, a frame whose codec is not the one negotiated for its kind
  (the call changed codec mid-way: the browser could not decode it), a frame
  without ``pts`` (the call clock is not synchronised yet), and a frame the
  viewer's full queue has no room for (:meth:`ViewerSchedule.overflow`);
* at release, a frame more than :data:`MAX_LATE` past its due time (the
  viewer stalled and its queue held stale media: sending it would only add
  latency), counted in :attr:`ViewerSchedule.late` too.

A dropped video frame breaks the decoding chain, so video then waits for the
next keyframe, at admission and at release separately (a keyframe already
queued may end a release gap), and :attr:`ViewerSchedule.keyframe_wanted` is
raised for the caller to ask the stream for one (not for codec or ``pts``
drops: a keyframe would not help).

Sans-IO: ``now`` is passed in; nothing here sleeps or touches sockets.
"""

from __future__ import annotations

from collections.abc import Mapping

from rtp.frame import MediaFrame, MediaKind

__all__ = [
    "GIVE_BACK_MARGIN",
    "GIVE_BACK_STEP",
    "MAX_AHEAD",
    "MAX_LATE",
    "PLAYOUT_DELAY",
    "REANCHOR_AFTER",
    "SHORT_SLACK",
    "ViewerSchedule",
    "rtp_timestamp",
]

#: Seconds added to every due time (see the module docstring).
PLAYOUT_DELAY = 0.05
#: At release, a frame this many seconds past its due time is dropped instead of sent;
#: at admission, a frame this late moves the anchor at once.
MAX_LATE = 0.5
#: A frame due more than this many seconds ahead re-anchors the schedule.
MAX_AHEAD = 10.0
#: How long (seconds) frames must arrive short of slack (or with slack to spare)
#: before the anchor follows.
REANCHOR_AFTER = 1.0
#: A frame admitted with less slack than this (seconds) is short.
SHORT_SLACK = PLAYOUT_DELAY / 2
#: Slack above ``delay`` by more than this (seconds) lets the schedule give time back.
GIVE_BACK_MARGIN = PLAYOUT_DELAY
#: At most this much (seconds) is given back per move, so the catch-up is a small burst.
GIVE_BACK_STEP = PLAYOUT_DELAY


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
        reanchor_after: float = REANCHOR_AFTER,
    ) -> None:
        self.codecs = {kind: name.lower() for kind, name in codecs.items()}
        self.delay = delay
        self.max_late = max_late
        self.max_ahead = max_ahead
        self.reanchor_after = reanchor_after
        self.short_slack = delay / 2
        self.dropped = 0
        self.late = 0
        self.overflowed = 0
        self.reanchors = 0
        #: Seconds the anchor was moved later by lateness and not given back yet.
        self.shift = 0.0
        #: Set when a video frame was dropped here; the caller clears it after asking
        #: the stream for a keyframe.
        self.keyframe_wanted = False
        self._anchor: tuple[float, float] | None = None  # (pts, now)
        self._admit_gap = True  # video admission waits for a keyframe
        self._release_gap = False  # video release waits for a keyframe
        self._last_due: dict[MediaKind, float] = {}
        # The current run of short frames: (since, best slack); of roomy frames: (since, worst).
        self._short: tuple[float, float] | None = None
        self._roomy: tuple[float, float] | None = None

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

    # -- admission ----------------------------------------------------------------------
    def admit(self, frame: MediaFrame, now: float) -> float | None:
        """When to release ``frame`` (monotonic seconds), or ``None`` to drop it."""
        kind = frame.kind
        wanted = self.codecs.get(kind)
        if wanted is None:
            return None
        video = kind == "video"
        pts = frame.pts
        if pts is None or frame.codec.lower() != wanted:
            # No keyframe request: a keyframe in the wrong codec would not help.
            self.dropped += 1
            if video:
                self._admit_gap = True
            return None
        if video and self._admit_gap:
            if not frame.keyframe:
                self.dropped += 1
                return None
            self._admit_gap = False
        anchor = self._anchor
        if anchor is None:
            anchor = self._anchor = (pts, now)
        due = anchor[1] + (pts - anchor[0]) + self.delay
        slack = due - now
        if (
            self.short_slack <= slack <= self.max_ahead
            and self._short is None
            and self._roomy is None
            and (self.shift <= 0.0 or slack <= self.delay + GIVE_BACK_MARGIN)
        ):
            pass  # the common case: on time, nothing to follow
        elif slack > self.max_ahead:
            self._reanchor(pts, now)
            due = self.due(pts)
        elif slack < -self.max_late:
            due = self._move(self.delay - slack, now, pts)
        else:
            due = self._follow(slack, now, pts, due)
        last = self._last_due.get(kind)
        if last is not None and due < last:
            due = last
        self._last_due[kind] = due
        return due

    def overflow(self, kind: MediaKind) -> None:
        """Count a frame of ``kind`` lost because the viewer's queue was full."""
        self.dropped += 1
        self.overflowed += 1
        if kind == "video":
            self._admit_gap = True
            self.keyframe_wanted = True

    # -- release ------------------------------------------------------------------------
    def release(self, kind: MediaKind, keyframe: bool, due: float, now: float) -> bool:
        """True to send a frame the sender takes at ``now``; False when it is dropped."""
        video = kind == "video"
        if now - due > self.max_late:
            self.late += 1
            self.dropped += 1
            if video:
                self._release_gap = True
                self.keyframe_wanted = True
            return False
        if video and self._release_gap:
            if not keyframe:
                self.dropped += 1
                return False
            self._release_gap = False
        return True

    # -- following the stream's delay ------------------------------------------------------
    def _follow(self, slack: float, now: float, pts: float, due: float) -> float:
        if slack < self.short_slack:
            self._roomy = None
            if self._short is None:
                self._short = (now, slack)
                return due
            since, best = self._short
            best = max(best, slack)
            if now - since < self.reanchor_after:
                self._short = (since, best)
                return due
            return self._move(self.delay - best, now, pts)
        self._short = None
        if self.shift <= 0.0 or slack <= self.delay + GIVE_BACK_MARGIN:
            self._roomy = None
            return due
        if self._roomy is None:
            self._roomy = (now, slack)
            return due
        since, worst = self._roomy
        worst = min(worst, slack)
        if now - since < self.reanchor_after:
            self._roomy = (since, worst)
            return due
        back = min(self.shift, worst - self.delay, GIVE_BACK_STEP)
        return self._move(-back, now, pts)

    def _move(self, by: float, now: float, pts: float) -> float:
        """Move the anchor ``by`` seconds (later when positive); the new due time of ``pts``."""
        assert self._anchor is not None
        anchor_pts, anchor_now = self._anchor
        self._anchor = (anchor_pts, anchor_now + by)
        self.shift = max(0.0, self.shift + by)
        self.reanchors += 1
        self._short = self._roomy = None
        return self.due(pts)

    def _reanchor(self, pts: float, now: float) -> None:
        self._anchor = (pts, now)
        self._last_due.clear()
        self.shift = 0.0
        self.reanchors += 1
        self._short = self._roomy = None
