"""A call's received media, sans-IO: its tracks, one presentation clock, events out.

:class:`CallMedia` is the :class:`~rtp.session.MediaCore` of one call. It
routes datagrams to its :class:`~rtp.track.TrackReceiver` s, gives every frame
a PTS on the call's :class:`~rtp.sync.CallClock` (A/V sync), and turns what
happens into events for the gateway: frames to publish, DTMF digits, keyframe
requests to repeat over SIP INFO, and media inactivity (no RTP on any track for
``inactivity_timeout`` seconds after the answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from rtp.depacketize.h264 import H264Depacketizer
from rtp.dtmf import DtmfSender
from rtp.frame import MediaFrame, MediaKind
from rtp.sync import CallClock
from rtp.track import Address, TrackConfig, TrackReceiver

__all__ = [
    "CallMedia",
    "DtmfDigit",
    "FrameReady",
    "KeyframeRequested",
    "MediaEvent",
    "MediaInactive",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FrameReady:
    frame: MediaFrame


@dataclass(frozen=True)
class DtmfDigit:
    digit: str


@dataclass(frozen=True)
class KeyframeRequested:
    """A PLI/FIR went out; phones that ignore RTCP also want SIP INFO."""


@dataclass(frozen=True)
class MediaInactive:
    idle: float


MediaEvent = FrameReady | DtmfDigit | KeyframeRequested | MediaInactive


class CallMedia:
    """Every received track of one call (see the module docstring)."""

    def __init__(
        self,
        tracks: list[TrackConfig],
        *,
        now: float,
        inactivity_timeout: float = 30.0,
    ) -> None:
        self.clock = CallClock()
        self.tracks: dict[MediaKind, TrackReceiver] = {}
        self._by_socket: dict[str, TrackReceiver] = {}
        for config in tracks:
            self.add_track(config, now)
        self.inactivity_timeout = inactivity_timeout
        self.expect_media = True
        self._idle_since = now
        self._events: list[MediaEvent] = []
        self._outbox: list[tuple[str, bytes, Address]] = []
        self._dtmf_queue: list[tuple[float, bytes]] = []
        self._dtmf_free_at = now
        self._inactive_reported = False

    def add_track(self, config: TrackConfig, now: float) -> TrackReceiver:
        track = TrackReceiver(config, now=now)
        self.tracks[config.kind] = track
        self._by_socket[track.rtp_socket] = track
        self._by_socket[track.rtcp_socket] = track
        self.clock.add_track(config.kind, track.clock_rate, kind=config.kind)
        return track

    # -- MediaCore -------------------------------------------------------------
    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None:
        track = self._by_socket.get(socket_name)
        if track is None:
            return
        before = track.stats.packets
        track.receive(socket_name, data, source, now)
        if track.stats.packets != before:
            self._idle_since = now
            self._inactive_reported = False
        self._collect(track)

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]:
        out = self._outbox
        self._outbox = []
        for track in self.tracks.values():
            out.extend(track.datagrams_to_send())
        return out

    def get_timer(self) -> float | None:
        deadlines = [t.get_timer() for t in self.tracks.values()]
        if self._dtmf_queue:
            deadlines.append(self._dtmf_queue[0][0])
        if self.inactivity_timeout > 0 and self.expect_media and not self._inactive_reported:
            deadlines.append(self._idle_since + self.inactivity_timeout)
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        for track in self.tracks.values():
            deadline = track.get_timer()
            if deadline is not None and deadline <= now:
                track.handle_timer(now)
            self._collect(track)
        audio = self.tracks.get("audio")
        while self._dtmf_queue and self._dtmf_queue[0][0] <= now and audio is not None:
            audio.send_rtp(self._dtmf_queue.pop(0)[1])
        idle = now - self._idle_since
        if (
            self.inactivity_timeout > 0
            and self.expect_media
            and not self._inactive_reported
            and idle >= self.inactivity_timeout
        ):
            self._inactive_reported = True
            self._events.append(MediaInactive(idle))

    # -- control -----------------------------------------------------------------
    def set_expect_media(self, expect: bool, now: float) -> None:
        """Hold (the callee sends nothing) pauses the inactivity check."""
        self.expect_media = expect
        self._idle_since = now
        self._inactive_reported = False

    def request_keyframe(self, now: float) -> None:
        video = self.tracks.get("video")
        if video is not None:
            video.request_keyframe()
            video.pump(now)
            self._collect(video)

    def send_dtmf(self, digits: str, now: float, *, duration_ms: int = 160) -> bool:
        """Queue RFC 4733 telephone-events on the audio stream; False if not negotiated."""
        audio = self.tracks.get("audio")
        if audio is None or audio.config.telephone_event_pt is None:
            return False
        pt = audio.config.telephone_event_pt
        sender = DtmfSender(clock_rate=8000)
        start = max(now, self._dtmf_free_at)
        for digit in digits:
            base = audio.current_timestamp(start, 8000)
            packets = sender.packets_for(digit, base, duration_ms=duration_ms)
            for index, (marker, timestamp, event) in enumerate(packets):
                send_at = start + min(index, len(packets) - 3) * 0.02
                data = audio.rtp_packet(
                    pt, bytes(event), send_at, marker=marker, timestamp=timestamp
                )
                self._dtmf_queue.append((send_at, data))
            start += duration_ms / 1000 + 0.1  # inter-digit gap
        self._dtmf_queue.sort(key=lambda item: item[0])
        self._dtmf_free_at = start
        return True

    def stop(self, now: float) -> None:
        """The call ends: flush buffered media into frames and say RTCP BYE."""
        for track in self.tracks.values():
            track.flush()
            self._collect(track)
            track.goodbye()
        del now

    def next_event(self) -> MediaEvent | None:
        return self._events.pop(0) if self._events else None

    def take_events(self) -> list[MediaEvent]:
        events, self._events = self._events, []
        return events

    # -- internals -----------------------------------------------------------------
    def _collect(self, track: TrackReceiver) -> None:
        for ntp_seconds, rtp_timestamp, at in track.sender_reports:
            self.clock.on_sender_report(track.kind, ntp_seconds, rtp_timestamp, at)
        track.sender_reports.clear()
        for frame in track.take_frames():
            pts = self.clock.pts(track.kind, frame.rtp_timestamp, frame.arrival)
            self._events.append(FrameReady(replace(frame, pts=pts)))
        for digit in track.take_digits():
            self._events.append(DtmfDigit(digit))
        if track.take_keyframe_sent():
            self._events.append(KeyframeRequested())

    def video_dimensions(self) -> tuple[int | None, int | None]:
        video = self.tracks.get("video")
        if video is None:
            return None, None
        for depacketizer in video.depacketizers.values():
            if isinstance(depacketizer, H264Depacketizer) and depacketizer.width:
                return depacketizer.width, depacketizer.height
        return None, None
