"""One received media track of a call, sans-IO: latching, jitter buffer, depacketizer, RTCP.

Theory of operation
-------------------
:class:`TrackReceiver` owns one negotiated m= line (RFC 3264): its RTP and
RTCP sockets (or one with rtcp-mux, RFC 5761), the callee's addresses from the
SDP answer, a :class:`~rtp.jitter.JitterBuffer` and one depacketizer per
payload type.

- **Latching (symmetric RTP, RFC 4961).** The first valid RTP packet (it
  parses and carries a negotiated payload type, telephone-event or comfort
  noise) fixes the source address; packets from any other address are counted
  and dropped, and so are packets of other payload types. RTCP latches the
  same way on its own socket. Our own RTP and RTCP go to the latched addresses
  once known, so a callee behind NAT gets them through its pinhole; before
  that, to the addresses in its SDP.
- **NAT keepalive.** From the answer on we send RTP (silence in the negotiated
  audio codec; video gets an RTCP RR on its RTP port, harmless to RTP
  receivers that demultiplex by payload type) and RTCP RR to the callee's
  ports, so pinholes in front of the gateway open before the callee sends;
  repeated every ``keepalive_interval``.
- **Playout.** Packets go through the jitter buffer; released packets go to
  their payload type's depacketizer; frames come out with their extended RTP
  timestamp and arrival time, for :class:`~rtp.sync.CallClock` to give them a
  PTS. telephone-event packets (RFC 4733) become digits as they arrive.
  They and comfort noise (RFC 3389) also pass the jitter buffer, so their
  sequence numbers are not counted lost, and are dropped on release.
- **RTCP.** SRs feed the call clock (A/V sync) and the LSR/DLSR of our RRs;
  RRs carry loss and jitter (RFC 3550 §6.4.2) every ~5 s. Keyframes are asked
  for with PLI (RFC 4585 §6.3.1) and FIR (RFC 5104 §4.3.1) in one compound,
  at most once per ``keyframe_interval``: at a loss, again each interval while
  the depacketizer still throws packets away for want of one, and on request
  (coalesced with a request that went out less than an interval ago).
- **End.** :meth:`TrackReceiver.goodbye` sends RR + SDES + BYE (RFC 3550
  §6.6); the track then ignores input and has no timer.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field, replace

from rtp.depacketize import Depacketizer, create_depacketizer
from rtp.dtmf import DtmfReceiver, TelephoneEvent
from rtp.frame import MediaFrame, MediaKind
from rtp.jitter import JitterBuffer, JitterConfig, Released
from rtp.packet import RtpPacket, is_rtcp
from rtp.rtcp import (
    FullIntraRequest,
    Goodbye,
    PictureLossIndication,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    dlsr_units,
    ntp_middle_32,
    parse_compound,
    serialize_compound,
)

__all__ = ["TrackConfig", "TrackReceiver", "TrackStats"]

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: 20 ms of silence per codec, for NAT keepalives (G.711: RFC 3551 §4.5.14;
#: Opus: a CELT silence frame, RFC 6716).
SILENCE: dict[str, bytes] = {
    "PCMU": b"\xff" * 160,
    "PCMA": b"\xd5" * 160,
    "OPUS": b"\xf8\xff\xfe",
    "G722": b"\x55" * 160,
}
COMFORT_NOISE_PT = 13
RTCP_INTERVAL = 5.0


@dataclass(frozen=True)
class TrackConfig:
    """One negotiated stream as the track receiver needs it."""

    kind: MediaKind
    remote_rtp: Address
    remote_rtcp: Address
    rtcp_mux: bool
    codecs: dict[int, tuple[str, int, int, dict[str, str]]]
    """payload type -> (encoding name, clock rate, channels, fmtp)"""
    telephone_event_pt: int | None = None
    jitter: JitterConfig | None = None
    keepalive: bool = True
    keepalive_interval: float = 5.0
    keyframe_interval: float = 1.0
    cname: bytes = b"sipbridge"


@dataclass
class TrackStats:
    """Counters of one track for ``/stream/find`` and RTCP."""

    packets: int = 0
    bytes: int = 0
    bad_packets: int = 0
    foreign_packets: int = 0
    unknown_payload: int = 0
    rtcp_received: int = 0
    sender_reports: int = 0
    keyframe_requests: int = 0
    keepalives_sent: int = 0
    latched: Address | None = None
    latched_rtcp: Address | None = None
    remote_ssrc: int | None = None
    last_packet_at: float | None = None
    extra: dict[str, int] = field(default_factory=dict)


class TrackReceiver:
    """The receiving side of one m= line (see the module docstring)."""

    def __init__(self, config: TrackConfig, *, now: float) -> None:
        self.config = config
        self.kind = config.kind
        self.rtp_socket = f"{self.kind}-rtp"
        self.rtcp_socket = self.rtp_socket if config.rtcp_mux else f"{self.kind}-rtcp"
        self.ssrc = random.getrandbits(32)
        self.stats = TrackStats()
        primary_rate = next(iter(config.codecs.values()))[1] if config.codecs else 8000
        self.clock_rate = primary_rate
        self.jitter = JitterBuffer(config.jitter or JitterConfig(clock_rate=primary_rate))
        self._depacketizers: dict[int, Depacketizer] = {}
        self._dtmf = DtmfReceiver()
        self._frames: list[MediaFrame] = []
        self._digits: list[str] = []
        self._outbox: list[tuple[str, bytes, Address]] = []
        self._started_at = now
        self._next_rtcp = now + RTCP_INTERVAL * random.uniform(0.5, 1.0)
        self._next_keepalive: float | None = now if config.keepalive else None
        self._last_keyframe_request = -1e9
        self._keyframe_wanted = False  # an explicit request waits for the rate limit
        self._keyframe_for_loss = False  # a depacketizer wants a keyframe after a loss
        self._undecodable: set[int] = set()
        self._dtmf_ssrc: int | None = None
        self._last_media: tuple[int, int, float] | None = None  # (SSRC, timestamp, arrival)
        self._stopped = False
        self._fir_seq = 0
        self._lsr = 0
        self._lsr_at: float | None = None
        self._seq = random.getrandbits(16)
        self._ts_base = random.getrandbits(32)
        self._sent_packets = 0
        self._sent_octets = 0
        self._keyframe_request_sent = False
        self.sender_reports: list[tuple[float, int, float]] = []
        """SRs received since the owner last took them: (NTP seconds, RTP timestamp, arrival)."""
        # get_timer() is asked for every track after every datagram of the call and
        # at every wakeup (2.3 times per packet in bench/ingest.py's profile): it is
        # cached until a method that can move it runs or the jitter buffer changes.
        self._deadline: float | None = None
        self._deadline_stale = True
        self._deadline_jitter = -1  # jitter.changes when _deadline was computed

    # -- input -----------------------------------------------------------------
    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None:
        """A datagram on one of this track's sockets."""
        self._deadline_stale = True
        if self._stopped:
            return
        if socket_name == self.rtcp_socket and (socket_name != self.rtp_socket or is_rtcp(data)):
            self._receive_rtcp(data, source, now)
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.stats.bad_packets += 1
            return
        pt = packet.payload_type
        # Comfort noise (RFC 3389, static PT 13) is the callee's stream too: it
        # latches and keeps the call active, though it becomes no frame.
        known = (
            pt in self.config.codecs
            or pt == self.config.telephone_event_pt
            or (pt == COMFORT_NOISE_PT and self.kind == "audio")
        )
        if not known:
            # Not the negotiated stream (after latching too: e.g. RTCP sent to
            # our RTP port without rtcp-mux); it must not set the remote SSRC.
            self.stats.unknown_payload += 1
            return
        latched = self.stats.latched
        if latched is None:
            self.stats.latched = source
            log.info("%s RTP latched to %s:%d", self.kind, source[0], source[1])
        elif source != latched:
            self.stats.foreign_packets += 1
            return
        self.stats.packets += 1
        self.stats.bytes += len(data)
        self.stats.last_packet_at = now
        self.stats.remote_ssrc = packet.ssrc
        if pt == self.config.telephone_event_pt:
            self._receive_dtmf(packet)
            self._push_placeholder(packet, now)
        else:
            # CN goes through the jitter buffer too (and is dropped on release),
            # so its sequence numbers do not count as lost in our RRs.
            self.jitter.push(packet, now)
            self._last_media = (packet.ssrc, packet.timestamp, now)

    def _push_placeholder(self, packet: RtpPacket, now: float) -> None:
        """Account a telephone-event packet in the jitter buffer (dropped on release).

        Events share the audio stream's SSRC and sequence numbers (RFC 4733),
        so leaving them out would report them lost in our RRs. Their timestamp
        is the event's start (§2.5.1), stale by the event's length, which
        would look like jitter: the packet goes in with the audio timestamp of
        its arrival instead, extrapolated from the last audio packet.
        """
        last = self._last_media
        timestamp = packet.timestamp
        if last is not None and last[0] == packet.ssrc:
            _, last_timestamp, last_at = last
            elapsed = round((now - last_at) * self.clock_rate)
            timestamp = (last_timestamp + elapsed) & 0xFFFF_FFFF
        self.jitter.push(dataclasses.replace(packet, timestamp=timestamp), now)

    def _receive_dtmf(self, packet: RtpPacket) -> None:
        try:
            event = TelephoneEvent.parse(packet.payload)
        except ValueError:
            self.stats.bad_packets += 1
            return
        if packet.ssrc != self._dtmf_ssrc:
            # A new source's timestamps say nothing about the old one's events.
            self._dtmf.reset()
            self._dtmf_ssrc = packet.ssrc
        digit = self._dtmf.feed(packet.timestamp, event)
        if digit is not None:
            self._digits.append(digit)

    def _receive_rtcp(self, data: bytes, source: Address, now: float) -> None:
        try:
            packets = parse_compound(data)
        except ValueError:
            self.stats.bad_packets += 1
            return
        # RTCP latches like RTP (RFC 4961): once its source is known, SRs and
        # BYEs from anyone else are not the callee's.
        if self.stats.latched_rtcp is None:
            self.stats.latched_rtcp = source
        elif source != self.stats.latched_rtcp:
            self.stats.foreign_packets += 1
            return
        self.stats.rtcp_received += 1
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.stats.sender_reports += 1
                self._lsr = ntp_middle_32(packet.ntp_timestamp)
                self._lsr_at = now
                self.sender_reports.append((packet.ntp_seconds, packet.rtp_timestamp, now))
            elif isinstance(packet, Goodbye):
                log.info("%s: RTCP BYE from %s", self.kind, source)

    # -- processing ------------------------------------------------------------
    def pump(self, now: float) -> None:
        """Release due packets from the jitter buffer into frames."""
        self._deadline_stale = True
        if self._stopped:
            return
        for released in self.jitter.pop(now):
            self._depacketize(released)
        self._maybe_request_keyframe(now)

    def flush(self) -> None:
        """The call ends: everything buffered becomes frames now."""
        self._deadline_stale = True
        for released in self.jitter.flush():
            self._depacketize(released)
        for depacketizer in self._depacketizers.values():
            self._frames.extend(depacketizer.flush())

    def _depacketize(self, released: Released) -> None:
        packet = released.packet
        pt = packet.payload_type
        depacketizer = self._depacketizers.get(pt)
        if depacketizer is None:
            codec = self.config.codecs.get(pt)
            if codec is None or pt in self._undecodable or pt == self.config.telephone_event_pt:
                return  # comfort noise, a DTMF placeholder, or a codec without a depacketizer
            name, rate, channels, fmtp = codec
            try:
                depacketizer = create_depacketizer(
                    name, clock_rate=rate, channels=channels, fmtp=fmtp
                )
            except ValueError as exc:
                # Remembered here rather than dropped from the config: the
                # packets still latch, count and keep the call active.
                log.warning("%s: cannot depacketize %s: %s", self.kind, name, exc)
                self._undecodable.add(pt)
                return
            self._depacketizers[pt] = depacketizer
        self._frames.extend(
            depacketizer.push(
                packet,
                extended_timestamp=released.extended_timestamp,
                arrival=released.arrival,
                lost_before=released.lost_before,
                discontinuity=released.discontinuity,
            )
        )
        # The edge of a loss episode, or a packet still thrown away for want of
        # a keyframe: ask again once per keyframe_interval until one comes (the
        # previous PLI/FIR or the keyframe itself may have been lost).
        if depacketizer.take_keyframe_request() or depacketizer.needs_keyframe:
            self._keyframe_for_loss = True

    def take_frames(self) -> list[MediaFrame]:
        """The frames completed since the last call, in order."""
        frames, self._frames = self._frames, []
        return frames

    def take_digits(self) -> list[str]:
        """The DTMF digits (RFC 4733) received since the last call, in order."""
        digits, self._digits = self._digits, []
        return digits

    @property
    def depacketizers(self) -> dict[int, Depacketizer]:
        """The depacketizers made so far, by payload type."""
        return self._depacketizers

    # -- keyframes -------------------------------------------------------------
    def retarget(self, remote_rtp: Address, remote_rtcp: Address) -> bool:
        """The callee moved its media (a re-INVITE with a new c=/m= address): send there
        and latch again to the first packet that comes. Returns whether anything changed."""
        if (remote_rtp, remote_rtcp) == (self.config.remote_rtp, self.config.remote_rtcp):
            return False
        self.config = replace(self.config, remote_rtp=remote_rtp, remote_rtcp=remote_rtcp)
        self.stats.latched = None
        self.stats.latched_rtcp = None
        log.info("%s media moved to %s:%d", self.kind, remote_rtp[0], remote_rtp[1])
        return True

    def request_keyframe(self, now: float | None = None) -> bool:
        """Ask the sender for a keyframe (PLI + FIR); False when coalesced or not video.

        With ``now``, the request goes out at once unless one went out less
        than ``keyframe_interval`` ago: the keyframe that one asked for serves
        this request too. Without ``now`` it waits for the next :meth:`pump`.
        """
        self._deadline_stale = True
        if self.kind != "video" or self._stopped:
            return False
        if now is not None and now < self._last_keyframe_request + self.config.keyframe_interval:
            return False
        self._keyframe_wanted = True
        if now is not None:
            self._maybe_request_keyframe(now)
        return True

    def take_keyframe_sent(self) -> bool:
        """True once after a keyframe request went out (the call adds SIP INFO)."""
        sent, self._keyframe_request_sent = self._keyframe_request_sent, False
        return sent

    def _needs_keyframe(self) -> bool:
        return any(d.needs_keyframe for d in self._depacketizers.values())

    def _maybe_request_keyframe(self, now: float) -> None:
        """RFC 4585 §6.3.1 PLI and RFC 5104 §4.3.1 FIR, at most once per keyframe_interval."""
        if self.kind != "video":
            self._keyframe_wanted = self._keyframe_for_loss = False
            return
        if self._keyframe_for_loss and not self._needs_keyframe():
            self._keyframe_for_loss = False  # a keyframe came while the request waited
        if not (self._keyframe_wanted or self._keyframe_for_loss):
            return
        if now < self._last_keyframe_request + self.config.keyframe_interval:
            return
        self._keyframe_wanted = self._keyframe_for_loss = False
        self._last_keyframe_request = now
        media_ssrc = self.stats.remote_ssrc or 0
        self._fir_seq = (self._fir_seq + 1) % 256
        # A full compound (RFC 4585 §3.1): RR and SDES CNAME first, then the feedback.
        packets: list[RtcpPacket] = [
            self._receiver_report(now),
            self._sdes(),
            PictureLossIndication(sender_ssrc=self.ssrc, media_ssrc=media_ssrc),
            FullIntraRequest(
                sender_ssrc=self.ssrc, media_ssrc=0, entries=[(media_ssrc, self._fir_seq)]
            ),
        ]
        self._send_rtcp(serialize_compound(packets))
        self.stats.keyframe_requests += 1
        self._keyframe_request_sent = True

    # -- output ----------------------------------------------------------------
    def _rtp_destination(self) -> Address:
        return self.stats.latched or self.config.remote_rtp

    def _rtcp_destination(self) -> Address:
        if self.config.rtcp_mux:
            return self._rtp_destination()
        return self.stats.latched_rtcp or self.config.remote_rtcp

    def _send_rtcp(self, data: bytes) -> None:
        self._outbox.append((self.rtcp_socket, data, self._rtcp_destination()))

    def _receiver_report(self, now: float) -> ReceiverReport:
        reports: list[ReportBlock] = []
        if self.stats.remote_ssrc is not None:
            fraction, lost, highest, jitter = self.jitter.report_block_values()
            dlsr = dlsr_units(now - self._lsr_at) if self._lsr_at is not None else 0
            reports.append(
                ReportBlock(
                    ssrc=self.stats.remote_ssrc,
                    fraction_lost=fraction,
                    packets_lost=lost,
                    highest_sequence=highest,
                    # A peer's wild timestamps must not overflow the 32-bit field
                    # (serializing would raise on every report from then on).
                    jitter=min(jitter, 0xFFFF_FFFF),
                    lsr=self._lsr,
                    dlsr=dlsr,
                )
            )
        return ReceiverReport(ssrc=self.ssrc, reports=reports)

    def _sdes(self) -> SourceDescription:
        return SourceDescription(chunks=[SdesChunk(self.ssrc, [(1, self.config.cname)])])

    def _rtcp_report(self, now: float) -> bytes:
        """RR + SDES CNAME: the compound every RTCP datagram starts with (RFC 3550 §6.1)."""
        return serialize_compound([self._receiver_report(now), self._sdes()])

    def _keepalive(self, now: float) -> None:
        """NAT keepalive (RFC 6263 §4.6 RTCP, §4.1-style RTP silence) to both remote ports."""
        report = self._rtcp_report(now)
        self._send_rtcp(report)
        packet = self._silence_packet(now) if self.kind == "audio" else None
        if packet is not None:
            self._outbox.append((self.rtp_socket, packet, self._rtp_destination()))
        elif not self.config.rtcp_mux:
            # Video, or audio without a codec whose silence we know: an RR opens
            # the RTP pinhole too and RTP receivers drop it by its payload type.
            self._outbox.append((self.rtp_socket, report, self._rtp_destination()))
        self.stats.keepalives_sent += 1

    def _silence_packet(self, now: float) -> bytes | None:
        for pt, (name, rate, _, _) in self.config.codecs.items():
            silence = SILENCE.get(name.upper())
            if silence is not None:
                return self.rtp_packet(pt, silence, now, rate=rate)
        return None

    def rtp_packet(
        self,
        payload_type: int,
        payload: bytes,
        now: float,
        *,
        rate: int | None = None,
        marker: bool = False,
        timestamp: int | None = None,
    ) -> bytes:
        """One RTP packet of our own stream (keepalives, RFC 4733 DTMF)."""
        self._seq = (self._seq + 1) & 0xFFFF
        if timestamp is None:
            elapsed = now - self._started_at
            timestamp = (self._ts_base + int(elapsed * (rate or self.clock_rate))) & 0xFFFFFFFF
        self._sent_packets += 1
        self._sent_octets += len(payload)
        return bytes(
            RtpPacket(
                payload_type=payload_type,
                sequence_number=self._seq,
                timestamp=timestamp,
                ssrc=self.ssrc,
                marker=marker,
                payload=payload,
            )
        )

    def current_timestamp(self, now: float, rate: int) -> int:
        return (self._ts_base + int((now - self._started_at) * rate)) & 0xFFFFFFFF

    def send_rtp(self, data: bytes) -> None:
        self._outbox.append((self.rtp_socket, data, self._rtp_destination()))

    def goodbye(self, now: float | None = None) -> None:
        """RTCP BYE at the end of the call (RFC 3550 §6.6); the track then stays silent.

        The BYE ends a compound that starts with an RR and an SDES CNAME
        (§6.1). Only the first call sends anything.
        """
        self._deadline_stale = True
        if self._stopped:
            return
        self._stopped = True
        self._keyframe_wanted = self._keyframe_for_loss = False
        report = self._receiver_report(self._started_at if now is None else now)
        bye = Goodbye(sources=[self.ssrc], reason=None)
        self._send_rtcp(serialize_compound([report, self._sdes(), bye]))

    @property
    def stopped(self) -> bool:
        """True once :meth:`goodbye` was sent: no more timers, input ignored."""
        return self._stopped

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    # -- timers ----------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The next deadline of this track, or None once stopped."""
        if not self._deadline_stale and self._deadline_jitter == self.jitter.changes:
            return self._deadline
        self._deadline_stale = False
        self._deadline_jitter = self.jitter.changes
        if self._stopped:
            self._deadline = None
            return None
        # Plain comparisons, no lists or min() (they were 2 of the top 20 lines of
        # bench/ingest.py's profile). Same value as the min.
        deadline = self._next_rtcp
        jitter = self.jitter.get_timer()
        if jitter is not None and jitter < deadline:
            deadline = jitter
        keepalive = self._next_keepalive
        if keepalive is not None and keepalive < deadline:
            deadline = keepalive
        if (self._keyframe_wanted or self._keyframe_for_loss) and self.kind == "video":
            keyframe = self._last_keyframe_request + self.config.keyframe_interval
            if keyframe < deadline:
                deadline = keyframe
        self._deadline = deadline
        return deadline

    def handle_timer(self, now: float) -> None:
        """Release due packets, send due RRs (RFC 3550 §6.2) and keepalives."""
        self._deadline_stale = True
        if self._stopped:
            return
        self.pump(now)
        if now >= self._next_rtcp:
            self._send_rtcp(self._rtcp_report(now))
            self._next_rtcp = now + RTCP_INTERVAL * random.uniform(0.5, 1.5)
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self._keepalive(now)
            self._next_keepalive = now + self.config.keepalive_interval
