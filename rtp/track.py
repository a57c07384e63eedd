"""One received media track of a call, sans-IO: latching, jitter buffer, depacketizer, RTCP.

Theory of operation
-------------------
:class:`TrackReceiver` owns one negotiated m= line (RFC 3264): its RTP and
RTCP sockets (or one with rtcp-mux, RFC 5761), the callee's addresses from the
SDP answer, a :class:`~rtp.jitter.JitterBuffer` and one depacketizer per
payload type.

- **Latching (symmetric RTP, RFC 4961).** The first valid RTP packet (it
  parses and carries a negotiated payload type) fixes the source address;
  packets from any other address are counted and dropped. Our own RTP and
  RTCP go to the latched addresses once known, so a callee behind NAT gets
  them through its pinhole; before that, to the addresses in its SDP.
- **NAT keepalive.** From the answer on we send RTP (silence in the negotiated
  audio codec; video gets an RTCP RR on its RTP port, harmless to RTP
  receivers that demultiplex by payload type) and RTCP RR to the callee's
  ports, so pinholes in front of the gateway open before the callee sends;
  repeated every ``keepalive_interval``.
- **Playout.** Packets go through the jitter buffer; released packets go to
  their payload type's depacketizer; frames come out with their extended RTP
  timestamp and arrival time, for :class:`~rtp.sync.CallClock` to give them a
  PTS. telephone-event packets (RFC 4733) become digits; comfort noise is
  dropped.
- **RTCP.** SRs feed the call clock (A/V sync) and the LSR/DLSR of our RRs;
  RRs carry loss and jitter (RFC 3550 §6.4.2) every ~5 s. Keyframes are asked
  for with PLI (RFC 4585 §6.3.1) and FIR (RFC 5104 §4.3.1), rate-limited.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

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
        self._keyframe_wanted = False
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

    # -- input -----------------------------------------------------------------
    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None:
        """A datagram on one of this track's sockets."""
        if socket_name == self.rtcp_socket and (socket_name != self.rtp_socket or is_rtcp(data)):
            self._receive_rtcp(data, source, now)
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.stats.bad_packets += 1
            return
        pt = packet.payload_type
        known = pt in self.config.codecs or pt == self.config.telephone_event_pt
        latched = self.stats.latched
        if latched is None:
            if not known:
                self.stats.unknown_payload += 1
                return
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
        elif pt == COMFORT_NOISE_PT or not known:
            self.stats.unknown_payload += 0 if pt == COMFORT_NOISE_PT else 1
        else:
            self.jitter.push(packet, now)

    def _receive_dtmf(self, packet: RtpPacket) -> None:
        try:
            event = TelephoneEvent.parse(packet.payload)
        except ValueError:
            self.stats.bad_packets += 1
            return
        digit = self._dtmf.feed(packet.timestamp, event)
        if digit is not None:
            self._digits.append(digit)

    def _receive_rtcp(self, data: bytes, source: Address, now: float) -> None:
        try:
            packets = parse_compound(data)
        except ValueError:
            self.stats.bad_packets += 1
            return
        if self.stats.latched_rtcp is None:
            self.stats.latched_rtcp = source
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
        for released in self.jitter.pop(now):
            self._depacketize(released)
        self._maybe_request_keyframe(now)

    def flush(self) -> None:
        """The call ends: everything buffered becomes frames now."""
        for released in self.jitter.flush():
            self._depacketize(released)
        for depacketizer in self._depacketizers.values():
            self._frames.extend(depacketizer.flush())

    def _depacketize(self, released: Released) -> None:
        packet = released.packet
        depacketizer = self._depacketizers.get(packet.payload_type)
        if depacketizer is None:
            codec = self.config.codecs.get(packet.payload_type)
            if codec is None:
                return
            name, rate, channels, fmtp = codec
            try:
                depacketizer = create_depacketizer(
                    name, clock_rate=rate, channels=channels, fmtp=fmtp
                )
            except ValueError as exc:
                log.warning("%s: cannot depacketize %s: %s", self.kind, name, exc)
                self.config.codecs.pop(packet.payload_type, None)
                return
            self._depacketizers[packet.payload_type] = depacketizer
        self._frames.extend(
            depacketizer.push(
                packet,
                extended_timestamp=released.extended_timestamp,
                arrival=released.arrival,
                lost_before=released.lost_before,
                discontinuity=released.discontinuity,
            )
        )
        if depacketizer.take_keyframe_request():
            self._keyframe_wanted = True

    def take_frames(self) -> list[MediaFrame]:
        frames, self._frames = self._frames, []
        return frames

    def take_digits(self) -> list[str]:
        digits, self._digits = self._digits, []
        return digits

    @property
    def depacketizers(self) -> dict[int, Depacketizer]:
        return self._depacketizers

    # -- keyframes -------------------------------------------------------------
    def request_keyframe(self) -> None:
        """Ask the sender for a keyframe at the next chance (rate-limited)."""
        self._keyframe_wanted = True

    def take_keyframe_sent(self) -> bool:
        """True once after a keyframe request went out (the call adds SIP INFO)."""
        sent, self._keyframe_request_sent = self._keyframe_request_sent, False
        return sent

    def _maybe_request_keyframe(self, now: float) -> None:
        if self.kind != "video" or not self._keyframe_wanted:
            return
        if now - self._last_keyframe_request < self.config.keyframe_interval:
            return
        self._keyframe_wanted = False
        self._last_keyframe_request = now
        media_ssrc = self.stats.remote_ssrc or 0
        self._fir_seq = (self._fir_seq + 1) % 256
        packets: list[RtcpPacket] = [
            self._receiver_report(now),
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
                    jitter=jitter,
                    lsr=self._lsr,
                    dlsr=dlsr,
                )
            )
        return ReceiverReport(ssrc=self.ssrc, reports=reports)

    def _rtcp_report(self, now: float) -> bytes:
        sdes = SourceDescription(chunks=[SdesChunk(self.ssrc, [(1, self.config.cname)])])
        return serialize_compound([self._receiver_report(now), sdes])

    def _keepalive(self, now: float) -> None:
        report = self._rtcp_report(now)
        self._send_rtcp(report)
        if self.kind == "audio":
            packet = self._silence_packet(now)
            if packet is not None:
                self._outbox.append((self.rtp_socket, packet, self._rtp_destination()))
        elif not self.config.rtcp_mux:
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

    def goodbye(self) -> None:
        """RTCP BYE at the end of the call (RFC 3550 §6.6)."""
        self._send_rtcp(serialize_compound([Goodbye(sources=[self.ssrc], reason=None)]))

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    # -- timers ----------------------------------------------------------------
    def get_timer(self) -> float | None:
        deadlines = [self.jitter.get_timer(), self._next_rtcp, self._next_keepalive]
        if self._keyframe_wanted and self.kind == "video":
            deadlines.append(self._last_keyframe_request + self.config.keyframe_interval)
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self.pump(now)
        if now >= self._next_rtcp:
            self._send_rtcp(self._rtcp_report(now))
            self._next_rtcp = now + RTCP_INTERVAL * random.uniform(0.5, 1.5)
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self._keepalive(now)
            self._next_keepalive = now + self.config.keepalive_interval
