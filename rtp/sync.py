"""Audio/video synchronisation: one presentation clock per call.

Theory of operation
===================

RTP timestamps start at a random value per stream and tick at each stream's
own rate (RFC 3550 §5.1), so comparing them across tracks says nothing about
which audio sample goes with which video frame. The sender says it in its RTCP
Sender Reports: the NTP and the RTP timestamp of an SR name the same instant,
on a wallclock shared by all of the sender's streams (§6.4.1). A receiver
lines tracks up by mapping each one's RTP time onto that wallclock (§5.1, last
paragraphs). Behind an RTP translator SRs pass through unchanged (§7.2); behind
a mixer they describe the mixer's own timeline (§7.3), which is the one the
media then carries: the mapping holds either way.

Sender clock (one track)
------------------------
:class:`SenderClock` fits ``ntp = a + b * rtp`` over the last ``window``
accepted SRs. The nominal clock rate is a prior: one SR maps with it, and a
fitted rate may not leave ``±max_rate_deviation`` of it (crystals are off by
parts per million, not per cent; a steeper fit means bad pairs). Each new SR
is judged with the window by the median intercept under the previous slope
(a majority decides, not an average), residual threshold ``max(5 ms, 3 robust
sigmas)`` so that a sender whose pairs jitter is still followed; least squares
over the survivors gives rate and offset. An SR that does not fit is rejected.
Rejected SRs that agree with each other and either number three or outnumber
the window mean the sender's clock stepped: they become the new window. The
32-bit SR timestamp is unwrapped to the value nearest the track's newest
extended timestamp (or re-based when the first media timestamp is seen).

Call clock (all tracks)
-----------------------
Each track has a *media time* ``M(ts)``: the sender's wallclock of the frame
from the SR fit once synced, else ``ts / clock_rate``. Its *floor* ``F`` is
the earliest-arrival anchor, the minimum of ``arrival - M(ts)`` over its
frames: ``M(ts) + F`` is when the frame would have arrived had it travelled as
fast as the fastest frame seen, which jitter cannot move. The minimum leaks
upwards by ``drift_allowance`` seconds per second between samples so that a
sender clock slower than ours, or a path that got longer, is followed.

* A track without SRs (or while SR sync is refused) is aligned by arrival:
  ``src = M(ts) + F_track``. A track whose media starts 500 ms late is thus
  placed by when it arrived, not by its random RTP origin.
* SR-synced tracks share one offset from the sender's wallclock to ours,
  ``D = max(F)`` over them: ``src = M(ts) + D``. Events the sender stamped at
  the same instant get the same ``src``, and, because ``D`` is the largest
  floor, no track is presented before it can arrive: SR sync only *adds*
  delay, to the tracks that arrive early. If the SRs imply a correction larger
  than ``max_av_skew_correction`` they are deemed unrelated clocks and the
  tracks stay aligned by arrival.
* When a track's mapping changes (first SR, each new fit, fallback), its floor
  is re-based at the newest timestamp so that ``M + F`` does not move: the
  switch to SR mapping is seamless for the track itself, and joining the
  common ``D`` moves a track only forwards.

``pts = src - origin + delay``: ``origin`` is the first frame's ``src`` (so
the call's first frame has pts 0) and ``delay`` is what corrections added.

A track that stops sending keeps its last floor in ``D`` (the sender-to-local
offset it measured stays true up to clock drift); a track removed from the
call should be dropped with :meth:`CallClock.remove_track`.

Monotonic pts
-------------
A correction that moves a track backwards (its floor found a faster frame, a
new SR fit) is applied as is when it is at most ``slew_tolerance`` (and at
most half the frame spacing): the spacing of two frames shrinks a little and
never inverts. A larger one is turned into delay: ``delay`` grows by the
amount, so the track continues where it was and every other track moves
forward by as much; the A/V relation stays the corrected one. Finally pts is
clamped to the track's last pts (reordered frames, duplicates). H264 with
B-frames, whose timestamps go back in decoding order, therefore loses its
reordering: SIP video is Baseline/Constrained Baseline, which has none.

A frame whose ``arrival - M(ts)`` is off the floor by more than
``resync_threshold`` is provisional (a burst after a stall, a glitch): it is
paced by arrival. If that lasts ``resync_hold`` seconds (and three frames)
the RTP timeline itself jumped: the track drops its SR fit (its pairs belong
to the old timeline) and re-anchors on arrival.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Literal

from rtp.frame import MediaKind

__all__ = ["CallClock", "SenderClock", "SyncMode", "TrackClock"]

SyncMode = Literal["arrival", "sender-reports"]

_WRAP = 1 << 32
_HALF_WRAP = 1 << 31
# How far the previous fit's slope may be off when new points are judged with
# it: generous for a crystal, tiny next to a bad SR.
_SLOPE_SLACK = 1e-4
_MAD_TO_SIGMA = 1.4826
_RESYNC_MIN_FRAMES = 3


def _unwrap_near(value32: int, reference: int) -> int:
    """The integer congruent to ``value32`` modulo 2**32 nearest ``reference`` (§5.1 wrap)."""
    base = reference - _HALF_WRAP
    return base + (value32 - base) % _WRAP


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class _Fit:
    """``ntp = y_ref + slope * (rtp - x_ref)``; the reference keeps floats small."""

    slope: float
    x_ref: int
    y_ref: float

    def at(self, x: int) -> float:
        return self.y_ref + self.slope * (x - self.x_ref)


_Point = tuple[int, float]  # (extended RTP timestamp, NTP seconds)


class SenderClock:
    """Maps one track's extended RTP timestamps to the sender's NTP wallclock.

    RFC 3550 §6.4.1: an SR's NTP and RTP timestamps name the same instant.
    Several SRs are fitted robustly (see the module docstring): outliers are
    rejected, the rate may differ from ``clock_rate`` by ``max_rate_deviation``
    at most, and a consistent run of rejects is taken as a clock step.
    """

    def __init__(
        self,
        clock_rate: int,
        *,
        window: int = 8,
        outlier_threshold: float = 0.005,
        max_rate_deviation: float = 0.005,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        _check_positive("outlier_threshold", outlier_threshold)
        if not (math.isfinite(max_rate_deviation) and 0 <= max_rate_deviation < 1):
            raise ValueError(f"max_rate_deviation must be in [0, 1), got {max_rate_deviation!r}")
        self.clock_rate = clock_rate
        self._window = window
        self._threshold = outlier_threshold
        # The bound is on the rate (ticks per second); the fit's slope is its inverse.
        self._slope_min = 1.0 / (clock_rate * (1 + max_rate_deviation))
        self._slope_max = 1.0 / (clock_rate * (1 - max_rate_deviation))
        self._points: list[_Point] = []
        self._rejects: list[_Point] = []  # consecutive rejected SRs, newest last
        self._fit: _Fit | None = None
        self._last_ext: int | None = None
        self.version = 0
        """Bumped whenever the mapping changes; lets a user re-base what it derived."""
        self.accepted = 0
        self.rejected = 0
        self.last_report_at: float | None = None

    @property
    def synced(self) -> bool:
        """True once an SR gives a mapping (RFC 3550 §6.4.1)."""
        return self._fit is not None

    @property
    def rate(self) -> float | None:
        """The fitted RTP clock rate in Hz (``None`` before any SR)."""
        return None if self._fit is None else 1.0 / self._fit.slope

    def note_timestamp(self, extended_timestamp: int) -> None:
        """Tell the clock the track's newest extended timestamp (the unwrap reference).

        SRs received before any media were unwrapped against each other only;
        the first media timestamp moves them by whole 2**32 cycles next to it.
        """
        if self._last_ext is None:
            anchors = self._points or self._rejects
            if anchors:
                anchor = anchors[-1][0]
                shift = _unwrap_near(anchor % _WRAP, extended_timestamp) - anchor
                if shift:
                    self._shift(shift)
        self._last_ext = extended_timestamp

    def add_sender_report(self, ntp_seconds: float, rtp_timestamp: int, now: float) -> bool:
        """Add one SR's (NTP, 32-bit RTP) pair; False when rejected as an outlier."""
        _check_finite("ntp_seconds", ntp_seconds)
        _check_finite("now", now)
        if not 0 <= rtp_timestamp < _WRAP:
            raise ValueError(f"SR RTP timestamp {rtp_timestamp} does not fit in 32 bits")
        self.last_report_at = now
        reference = self._last_ext
        if reference is None and (self._points or self._rejects):
            reference = (self._points or self._rejects)[-1][0]
        ext = rtp_timestamp if reference is None else _unwrap_near(rtp_timestamp, reference)
        point = (ext, ntp_seconds)
        if self._accept(point):
            self.accepted += 1
            return True
        self.rejected += 1
        return False

    def to_sender_time(self, extended_timestamp: int) -> float | None:
        """The sender's NTP time (seconds) of an extended timestamp; None before any SR."""
        fit = self._fit
        if fit is None:
            return None
        if self._last_ext is None:
            # No media yet to anchor the SR cycles: read the query next to the fit.
            shift = _unwrap_near(fit.x_ref % _WRAP, extended_timestamp) - fit.x_ref
            return fit.at(extended_timestamp - shift)
        return fit.at(extended_timestamp)

    def reset(self) -> None:
        """Forget every SR: the RTP timeline they described is gone."""
        self._points.clear()
        self._rejects.clear()
        self._fit = None
        self.version += 1

    # -- internals --------------------------------------------------------

    def _shift(self, shift: int) -> None:
        self._points = [(x + shift, y) for x, y in self._points]
        self._rejects = [(x + shift, y) for x, y in self._rejects]
        if self._fit is not None:
            fit = self._fit
            self._fit = _Fit(fit.slope, fit.x_ref + shift, fit.y_ref)
        self.version += 1

    def _accept(self, point: _Point) -> bool:
        if not self._points:
            self._adopt([point], self._fit_line([point], None))
            return True
        candidate = [*self._points, point]
        fit, inliers = self._robust_fit(candidate)
        if fit is not None and len(candidate) - 1 in inliers:
            kept = [candidate[i] for i in inliers][-self._window :]
            self._adopt(kept, fit)
            return True
        self._rejects = [*self._rejects, point][-self._window :]
        tail = self._rejects[-_RESYNC_MIN_FRAMES:]
        if len(tail) >= 2 and (len(tail) >= _RESYNC_MIN_FRAMES or len(tail) > len(self._points)):
            fit, inliers = self._robust_fit(tail)
            if fit is not None and len(inliers) == len(tail):
                self._adopt(tail, fit)
                return True
        return False

    def _adopt(self, points: list[_Point], fit: _Fit) -> None:
        self._points = points
        self._rejects = []
        self._fit = fit
        self.version += 1

    def _limit(self, residuals: list[float]) -> float:
        if len(residuals) < 3:
            return self._threshold
        spread = _MAD_TO_SIGMA * median(abs(r) for r in residuals)
        return max(self._threshold, 3 * spread)

    def _robust_fit(self, points: list[_Point]) -> tuple[_Fit | None, list[int]]:
        prior = self._fit.slope if self._fit is not None else 1.0 / self.clock_rate
        x_ref, y_ref = points[-1]
        xs = [float(x - x_ref) for x, _ in points]
        ys = [y - y_ref for _, y in points]
        intercepts = [y - prior * x for x, y in zip(xs, ys, strict=True)]
        centre = median(intercepts)
        residuals = [b - centre for b in intercepts]
        limit = self._limit(residuals)
        x_mid = median(xs)
        inliers = [
            i
            for i, r in enumerate(residuals)
            if abs(r) <= limit + _SLOPE_SLACK * abs(xs[i] - x_mid) * prior
        ]
        if not inliers:
            return None, []
        fit = self._fit_line([points[i] for i in inliers], prior)
        # Second pass with the fitted line: strict threshold, slope errors gone.
        residuals = [y - fit.at(x) for x, y in points]
        limit = self._limit([residuals[i] for i in inliers])
        strict = [i for i, r in enumerate(residuals) if abs(r) <= limit]
        if not strict:
            return None, []
        if strict != inliers:
            fit = self._fit_line([points[i] for i in strict], prior)
        return fit, strict

    def _fit_line(self, points: list[_Point], prior: float | None) -> _Fit:
        """Least squares with the slope clamped to the allowed rate range."""
        x_ref, y_ref = points[-1]
        xs = [float(x - x_ref) for x, _ in points]
        ys = [y - y_ref for _, y in points]
        n = len(points)
        x_mean = sum(xs) / n
        y_mean = sum(ys) / n
        sxx = sum((x - x_mean) ** 2 for x in xs)
        slope = prior if prior is not None else 1.0 / self.clock_rate
        if sxx > 0:
            sxy = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
            slope = sxy / sxx
        slope = min(max(slope, self._slope_min), self._slope_max)
        return _Fit(slope, x_ref, y_ref + y_mean - slope * x_mean)


class TrackClock:
    """One track on a :class:`CallClock`: its SR mapping and its arrival floor.

    Made by :meth:`CallClock.add_track`; ``pts`` and ``on_sender_report`` are
    shortcuts to the call's methods for this track.
    """

    def __init__(
        self, call: CallClock, name: str, kind: MediaKind | None, clock_rate: int, window: int
    ) -> None:
        self.name = name
        self.kind = kind
        self.clock_rate = clock_rate
        self.sender = SenderClock(clock_rate, window=window)
        self._call = call
        # Arrival floor: min of arrival - M(ts), in the domain of mapping `_version`.
        self.floor: float | None = None
        self._floor_at = -math.inf
        self._version = self.sender.version
        self._ref_ts: int | None = None
        self._ref_media_time = 0.0
        # Timestamps that left the floor by more than resync_threshold.
        self._suspect_since: float | None = None
        self._suspect_count = 0
        # Output state.
        self.last_pts: float | None = None
        self._last_arrival = -math.inf
        self._normal_ts: int | None = None
        self._normal_pts = 0.0

    @property
    def synced(self) -> bool:
        """True when this track's RTP time maps to the sender's wallclock."""
        return self.sender.synced

    def pts(self, extended_timestamp: int, arrival: float) -> float:
        """Presentation time of a frame of this track (see :meth:`CallClock.pts`)."""
        return self._call.pts(self.name, extended_timestamp, arrival)

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int, now: float) -> bool:
        """Feed an SR of this track (see :meth:`CallClock.on_sender_report`)."""
        return self._call.on_sender_report(self.name, ntp_seconds, rtp_timestamp, now)

    def media_time(self, extended_timestamp: int) -> float:
        """``M(ts)``: sender wallclock when synced, else nominal RTP seconds."""
        sender_time = self.sender.to_sender_time(extended_timestamp)
        if sender_time is None:
            return extended_timestamp / self.clock_rate
        return sender_time

    def rebase(self) -> None:
        """Re-express the floor in the current mapping so ``M + F`` is kept at the newest ts."""
        if self._version == self.sender.version:
            return
        self._version = self.sender.version
        if self.floor is None or self._ref_ts is None:
            return
        now_media_time = self.media_time(self._ref_ts)
        self.floor += self._ref_media_time - now_media_time
        self._ref_media_time = now_media_time


# CallClock drives its TrackClocks' private state directly: one module, one owner.
class CallClock:
    """One presentation clock for all tracks of a call (RFC 3550 §5.1, §6.4.1).

    ``pts`` gives seconds on one timeline for every track (0 is the call's
    first frame), never decreasing per track. Tracks are aligned as the sender
    meant once SRs arrive for them, by arrival before that (see the module
    docstring for the model).

    ``max_av_skew_correction`` bounds the SR-based correction between tracks:
    SRs implying more are taken for unrelated clocks and ignored for A/V.
    ``slew_tolerance`` is the largest backward correction applied to a frame
    directly; larger ones add delay to the call instead. ``drift_allowance``
    is how fast (s/s) an arrival floor may rise. ``resync_threshold`` and
    ``resync_hold`` detect an RTP timeline jump.
    """

    def __init__(
        self,
        *,
        max_av_skew_correction: float = 1.0,
        slew_tolerance: float = 0.005,
        drift_allowance: float = 1e-4,
        resync_threshold: float = 1.0,
        resync_hold: float = 0.5,
        sr_window: int = 8,
    ) -> None:
        _check_positive("max_av_skew_correction", max_av_skew_correction)
        _check_positive("slew_tolerance", slew_tolerance)
        _check_positive("drift_allowance", drift_allowance)
        _check_positive("resync_threshold", resync_threshold)
        _check_positive("resync_hold", resync_hold)
        self.max_av_skew_correction = max_av_skew_correction
        self.slew_tolerance = slew_tolerance
        self.drift_allowance = drift_allowance
        self.resync_threshold = resync_threshold
        self.resync_hold = resync_hold
        self._sr_window = sr_window
        self._tracks: dict[str, TrackClock] = {}
        self._origin: float | None = None
        self.delay = 0.0
        """Seconds added to every track by backward corrections turned into delay."""

    def add_track(self, name: str, clock_rate: int, *, kind: MediaKind | None = None) -> TrackClock:
        """Register a track; ``kind`` defaults to the name when it is audio or video."""
        if name in self._tracks:
            raise ValueError(f"track {name!r} already added")
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        if kind is None and name in ("audio", "video"):
            kind = "audio" if name == "audio" else "video"
        track = TrackClock(self, name, kind, clock_rate, self._sr_window)
        self._tracks[name] = track
        return track

    def remove_track(self, name: str) -> None:
        """Forget a track (removed from the call): its floor no longer holds the others."""
        self.track(name)
        del self._tracks[name]

    def track(self, name: str) -> TrackClock:
        """The track called ``name``."""
        try:
            return self._tracks[name]
        except KeyError:
            raise ValueError(f"unknown track {name!r}") from None

    def on_sender_report(
        self, track: str, ntp_seconds: float, rtp_timestamp: int, now: float
    ) -> bool:
        """Feed one SR of ``track`` (RFC 3550 §6.4.1); False when rejected as an outlier."""
        return self.track(track).sender.add_sender_report(ntp_seconds, rtp_timestamp, now)

    @property
    def sync_mode(self) -> SyncMode:
        """``sender-reports`` while two or more tracks are aligned by SRs."""
        floors = self._sr_floors()
        if len(floors) >= 2 and max(floors) - min(floors) <= self.max_av_skew_correction:
            return "sender-reports"
        return "arrival"

    @property
    def av_offset(self) -> float | None:
        """Delay SR sync adds to video minus that added to audio (s); None when not applied.

        Negative means audio is held back relative to arrival alignment (video
        arrives late for its capture time, e.g. encoder latency).
        """
        if self.sync_mode != "sender-reports":
            return None
        audio = self._first_synced("audio")
        video = self._first_synced("video")
        if audio is None or video is None:
            return None
        return audio - video  # (D - F_video) - (D - F_audio)

    def pts(self, track: str, extended_timestamp: int, arrival: float) -> float:
        """Presentation time (s) of a frame: one timeline for all tracks, monotonic per track.

        ``extended_timestamp`` is the frame's unwrapped RTP timestamp and
        ``arrival`` the local time its last packet arrived.
        """
        # Once per frame of every call (bench/ingest.py's profile): a plain dict
        # lookup, and the checks inlined; track() still gives the error.
        clock = self._tracks.get(track) or self.track(track)
        if not math.isfinite(arrival):
            _check_finite("arrival", arrival)
        clock.sender.note_timestamp(extended_timestamp)
        clock.rebase()
        media_time = clock.media_time(extended_timestamp)
        status = self._observe(clock, arrival - media_time, arrival)
        if status == "resync":
            clock.sender.reset()
            clock.rebase()
            media_time = clock.media_time(extended_timestamp)
            clock.floor = arrival - media_time
        if status in ("normal", "resync"):
            # The floor is re-based at this timestamp when the mapping changes.
            clock._ref_ts = extended_timestamp
            clock._ref_media_time = media_time

        assert clock.floor is not None
        common = self._sr_offset() if clock.synced else None
        source = media_time + (clock.floor if common is None else common)
        if self._origin is None:
            self._origin = source
        pts = source - self._origin + self.delay
        pts = self._keep_monotonic(clock, pts, status, extended_timestamp, arrival)
        clock.last_pts = pts
        clock._last_arrival = max(clock._last_arrival, arrival)
        return pts

    # -- internals --------------------------------------------------------

    def _observe(self, clock: TrackClock, sample: float, arrival: float) -> str:
        """Update the track's leaky arrival floor; classify the frame."""
        if clock.floor is None:
            clock.floor = sample
            clock._floor_at = arrival
            return "normal"
        leaked = clock.floor + self.drift_allowance * max(0.0, arrival - clock._floor_at)
        if abs(sample - leaked) <= self.resync_threshold:
            clock._suspect_since = None
            clock._suspect_count = 0
            clock.floor = min(leaked, sample)
            clock._floor_at = max(clock._floor_at, arrival)
            return "normal"
        if clock._suspect_since is None:
            clock._suspect_since = arrival
        clock._suspect_count += 1
        if (
            clock._suspect_count >= _RESYNC_MIN_FRAMES
            and arrival - clock._suspect_since >= self.resync_hold
        ):
            clock._suspect_since = None
            clock._suspect_count = 0
            clock._floor_at = max(clock._floor_at, arrival)
            return "resync"
        return "late" if sample > leaked else "early"

    def _keep_monotonic(
        self,
        clock: TrackClock,
        pts: float,
        status: str,
        extended_timestamp: int,
        arrival: float,
    ) -> float:
        last = clock.last_pts
        if last is None:
            if pts < 0:
                self.delay -= pts
                pts = 0.0
            clock._normal_ts = extended_timestamp
            clock._normal_pts = pts
            return pts
        paced = last + max(0.0, arrival - clock._last_arrival)
        if status == "early":
            # Claims to be far ahead of its arrival: pace by arrival until confirmed.
            return paced
        if status == "late":
            return max(pts, paced)
        if status == "resync":
            if pts < paced:
                self.delay += paced - pts
                pts = paced
            clock._normal_ts = extended_timestamp
            clock._normal_pts = pts
            return pts
        normal_ts = clock._normal_ts
        if normal_ts is None or extended_timestamp > normal_ts:
            if normal_ts is not None:
                spacing = (extended_timestamp - normal_ts) / clock.clock_rate
                expected = clock._normal_pts + spacing
                if pts < expected - min(self.slew_tolerance, spacing / 2):
                    # Too far back to slew: add delay to the call instead.
                    self.delay += expected - pts
                    pts = expected
            pts = max(pts, last)
            clock._normal_ts = extended_timestamp
            clock._normal_pts = pts
            return pts
        return max(pts, last)

    def _sr_floors(self) -> list[float]:
        """Floors of the SR-synced tracks that have media, each in its current mapping."""
        floors: list[float] = []
        for clock in self._tracks.values():
            if clock.synced:
                clock.rebase()
                if clock.floor is not None:
                    floors.append(clock.floor)
        return floors

    def _sr_offset(self) -> float | None:
        """``D``: the common sender-to-local offset of SR-synced tracks, when applied."""
        # Once per frame of a synced track: the max and min of _sr_floors() without
        # building the list (bench/ingest.py's profile).
        high: float | None = None
        low = 0.0
        for clock in self._tracks.values():
            if clock.sender._fit is not None:  # clock.synced
                clock.rebase()
                floor = clock.floor
                if floor is not None:
                    if high is None:
                        high = low = floor
                    elif floor > high:
                        high = floor
                    elif floor < low:
                        low = floor
        if high is None or high - low > self.max_av_skew_correction:
            return None
        return high

    def _first_synced(self, kind: MediaKind) -> float | None:
        for clock in self._tracks.values():
            if clock.kind == kind and clock.synced and clock.floor is not None:
                return clock.floor
        return None
