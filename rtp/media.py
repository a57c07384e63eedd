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
from dataclasses import dataclass, fields

from rtp.depacketize.h264 import H264Depacketizer
from rtp.dtmf import DtmfSender, TelephoneEvent
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

#: CallMedia._collect builds each published MediaFrame by position, with these fields.
_FRAME_FIELDS = (
    "kind", "codec", "clock_rate", "rtp_timestamp", "payload", "keyframe", "arrival", "pts",
    "config", "ssrc", "duration",
)  # fmt: skip
if tuple(f.name for f in fields(MediaFrame)) != _FRAME_FIELDS:
    raise RuntimeError("MediaFrame changed its fields: update CallMedia._collect")

#: RFC 4733 §2.5.1.2: one telephone-event packet per audio packet interval.
DTMF_INTERVAL = 0.02
#: Silence between two digits of one send_dtmf call (ITU-T Q.24 wants >= 40 ms).
DTMF_PAUSE = 0.1
#: Our offers say telephone-event/8000 (sipbridge.sip.sdp).
DTMF_CLOCK_RATE = 8000


@dataclass(frozen=True, slots=True)
class _QueuedDtmf:
    """One telephone-event packet waiting for its send time; numbered when sent."""

    send_at: float
    payload_type: int
    payload: bytes
    marker: bool
    timestamp: int


@dataclass(frozen=True, slots=True)
class FrameReady:
    """A frame with its pts on the call's clock, to publish."""

    frame: MediaFrame


@dataclass(frozen=True)
class DtmfDigit:
    """One key press received as RFC 4733 telephone-events."""

    digit: str


@dataclass(frozen=True)
class KeyframeRequested:
    """A PLI/FIR went out; phones that ignore RTCP also want SIP INFO."""


@dataclass(frozen=True)
class MediaInactive:
    """No RTP on any track for ``idle`` seconds (reported once per silence)."""

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
        self._dtmf_queue: list[_QueuedDtmf] = []
        self._dtmf_free_at = now
        self._inactive_reported = False
        self._stopped = False

    def add_track(self, config: TrackConfig, now: float) -> TrackReceiver:
        """Add the receiver of one negotiated stream (one per kind)."""
        track = TrackReceiver(config, now=now)
        self.tracks[config.kind] = track
        self._by_socket[track.rtp_socket] = track
        self._by_socket[track.rtcp_socket] = track
        self.clock.add_track(config.kind, track.clock_rate, kind=config.kind)
        return track

    # -- MediaCore -------------------------------------------------------------
    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None:
        """A datagram on one of the call's sockets (``audio-rtp``, ``video-rtcp``...)."""
        track = self._by_socket.get(socket_name)
        if track is None or self._stopped:
            return
        before = track.stats.packets
        track.receive(socket_name, data, source, now)
        if track.stats.packets != before:
            self._idle_since = now
            self._inactive_reported = False
        self._collect(track)

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]:
        """(socket name, datagram, destination) of everything due, in order."""
        out = self._outbox
        if out:
            self._outbox = []
        else:
            out = []
        for track in self.tracks.values():
            # Asked after every datagram, and almost always empty (bench/ingest.py).
            if track._outbox:
                out.extend(track.datagrams_to_send())
        return out

    def _inactivity_deadline(self) -> float | None:
        if self.inactivity_timeout > 0 and self.expect_media and not self._inactive_reported:
            return self._idle_since + self.inactivity_timeout
        return None

    def get_timer(self) -> float | None:
        """The next deadline (tracks, DTMF, inactivity), or None."""
        if self._stopped:
            return None
        # Asked after every datagram: plain comparisons rather than lists and min()
        # (bench/ingest.py's profile); the value is the same minimum.
        deadline = self._inactivity_deadline()
        for track in self.tracks.values():
            due = track.get_timer()
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        if self._dtmf_queue:
            due = self._dtmf_queue[0].send_at
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``."""
        if self._stopped:
            return
        for track in self.tracks.values():
            deadline = track.get_timer()
            if deadline is not None and deadline <= now:
                track.handle_timer(now)
            self._collect(track)
        self._send_due_dtmf(now)
        # The same sum as the deadline get_timer gave: a subtraction could round
        # below the timeout and leave the timer due forever.
        deadline = self._inactivity_deadline()
        if deadline is not None and now >= deadline:
            self._inactive_reported = True
            self._events.append(MediaInactive(now - self._idle_since))

    # -- control -----------------------------------------------------------------
    def retarget(self, kind: MediaKind, remote_rtp: Address, remote_rtcp: Address) -> None:
        """A re-INVITE moved the callee's media for ``kind`` (see TrackReceiver.retarget)."""
        track = self.tracks.get(kind)
        if track is not None:
            track.retarget(remote_rtp, remote_rtcp)

    def set_expect_media(self, expect: bool, now: float) -> None:
        """Hold (the callee sends nothing) pauses the inactivity check."""
        self.expect_media = expect
        self._idle_since = now
        self._inactive_reported = False

    def request_keyframe(self, now: float) -> None:
        """Ask the video sender for a keyframe: RTCP PLI + FIR now, unless one went out
        less than ``keyframe_interval`` ago (RFC 4585 §6.3.1, RFC 5104 §4.3.1).

        A :class:`KeyframeRequested` event follows when a request went out.
        """
        video = self.tracks.get("video")
        if video is not None and not self._stopped:
            video.request_keyframe(now)
            self._collect(video)

    def send_dtmf(self, digits: str, now: float, *, duration_ms: int = 160) -> bool:
        """Send RFC 4733 telephone-events on the audio stream; False if not negotiated.

        Each digit is one event (§2.5.1): a first packet with the marker bit,
        updates every 20 ms, then three end packets 20 ms apart; digits follow
        one another after a pause, and after digits still being sent.
        ValueError for a character that is not a DTMF digit (nothing is sent).
        """
        audio = self.tracks.get("audio")
        if audio is None or audio.config.telephone_event_pt is None or self._stopped:
            return False
        for digit in digits:
            TelephoneEvent.from_digit(digit)  # all or nothing
        pt = audio.config.telephone_event_pt
        sender = DtmfSender(clock_rate=DTMF_CLOCK_RATE)
        start = max(now, self._dtmf_free_at)
        for digit in digits:
            base = audio.current_timestamp(start, DTMF_CLOCK_RATE)
            packets = sender.packets_for(
                digit, base, duration_ms=duration_ms, interval_ms=round(DTMF_INTERVAL * 1000)
            )
            send_at = start
            for index, (marker, timestamp, event) in enumerate(packets):
                send_at = start + index * DTMF_INTERVAL
                self._dtmf_queue.append(_QueuedDtmf(send_at, pt, bytes(event), marker, timestamp))
            start = max(start + duration_ms / 1000, send_at + DTMF_INTERVAL) + DTMF_PAUSE
        self._dtmf_queue.sort(key=lambda item: item.send_at)
        self._dtmf_free_at = start
        self._send_due_dtmf(now)
        return True

    def _send_due_dtmf(self, now: float) -> None:
        audio = self.tracks.get("audio")
        if audio is None:
            return
        while self._dtmf_queue and self._dtmf_queue[0].send_at <= now:
            item = self._dtmf_queue.pop(0)
            # Numbered as it leaves, so keepalives sent between two DTMF packets
            # keep the sequence numbers in sending order.
            audio.send_rtp(
                audio.rtp_packet(
                    item.payload_type,
                    item.payload,
                    item.send_at,
                    marker=item.marker,
                    timestamp=item.timestamp,
                )
            )

    def stop(self, now: float) -> None:
        """The call ends: flush buffered media into frames and say RTCP BYE (RFC 3550 §6.6).

        Afterwards the core is silent: no timers, input ignored. Idempotent.
        """
        if self._stopped:
            return
        for track in self.tracks.values():
            track.flush()
            self._collect(track)
            track.goodbye(now)
        self._dtmf_queue.clear()
        self._stopped = True

    def next_event(self) -> MediaEvent | None:
        """The oldest pending event, or None."""
        return self._events.pop(0) if self._events else None

    def take_events(self) -> list[MediaEvent]:
        """Every pending event, oldest first."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    # -- internals -----------------------------------------------------------------
    def _collect(self, track: TrackReceiver) -> None:
        # Runs after every datagram and every wakeup, and usually finds nothing: each
        # queue is looked at before it is taken (bench/ingest.py's profile).
        if track.sender_reports:
            for ntp_seconds, rtp_timestamp, at in track.sender_reports:
                self.clock.on_sender_report(track.kind, ntp_seconds, rtp_timestamp, at)
            track.sender_reports.clear()
        if track._frames:
            events = self._events
            pts_of = self.clock.pts
            kind = track.kind
            for f in track.take_frames():
                pts = pts_of(kind, f.rtp_timestamp, f.arrival)
                # A new frame rather than dataclasses.replace(), which copies field by
                # field through introspection (4.5 % of the ingest CPU).
                frame = MediaFrame(
                    f.kind, f.codec, f.clock_rate, f.rtp_timestamp, f.payload, f.keyframe,
                    f.arrival, pts, f.config, f.ssrc, f.duration,
                )  # fmt: skip
                events.append(FrameReady(frame))
        if track._digits:
            for digit in track.take_digits():
                self._events.append(DtmfDigit(digit))
        if track._keyframe_request_sent and track.take_keyframe_sent():
            self._events.append(KeyframeRequested())

    def video_dimensions(self) -> tuple[int | None, int | None]:
        """Width and height from the video's SPS (RFC 6184), when known."""
        video = self.tracks.get("video")
        if video is None:
            return None, None
        for depacketizer in video.depacketizers.values():
            if isinstance(depacketizer, H264Depacketizer) and depacketizer.width:
                return depacketizer.width, depacketizer.height
        return None, None
