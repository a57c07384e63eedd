"""RTCP packets (RFC 3550 §6.4-6.6, RFC 4585 §6.2.1/§6.3.1, RFC 5104 §4.3.1).

Theory of operation: a datagram is a compound packet (RFC 3550 §6.1), RTCP
packets back to back, each with a header ``V=2 P count(5) PT(8) length(16)``
whose length is the packet's size in 32-bit words minus one.
:func:`parse_compound` walks the headers checking the version, that the length
stays inside the datagram, and, when P is set, that the padding count is a
non-zero multiple of four that spares the header (§6.4.1). The body without
padding goes to its type's decoder, which checks the count field against the
body length exactly. Every rejection is a :class:`ValueError` with the reason.

Not enforced, because real peers break it and nothing here needs it: an SR
or RR first and padding only on the last packet (§6.1, Appendix A.2; RFC 5506
reduced-size RTCP sends a lone PLI). Types and feedback formats without a
class here (APP, XR, REMB, transport-cc, ...) become :class:`UnknownRtcp`
with their bytes, so the SR next to them is still read.

Serializing writes the canonical form: no padding, SDES chunks and BYE
reasons padded with the fewest zero octets, NACK FCIs packed greedily as
senders do; a parsed packet in that form serializes to identical bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Self, TypeAlias, get_args

__all__ = [
    "NTP_UNIX_OFFSET",
    "FullIntraRequest",
    "GenericNack",
    "Goodbye",
    "PictureLossIndication",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpType",
    "SdesChunk",
    "SdesType",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "dlsr_units",
    "ntp_from_unix",
    "ntp_middle_32",
    "parse_compound",
    "serialize_compound",
    "unix_from_ntp",
]


class RtcpType(IntEnum):
    """RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1)."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204
    RTPFB = 205
    PSFB = 206


class SdesType(IntEnum):
    """SDES item types (RFC 3550 §6.5); 0 is END and never appears in an item list."""

    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SENDER_INFO = struct.Struct("!IQIII")
_FEEDBACK = struct.Struct("!II")
_FIR_ENTRY = struct.Struct("!IB3x")
_NACK_ENTRY = struct.Struct("!HH")
_MAX_PACKET = 4 * 0x10000


def _check(bits: int, **fields: int) -> None:
    for name, value in fields.items():
        if not 0 <= value < 1 << bits:
            raise ValueError(f"RTCP {name} {value} does not fit in {bits} bits")


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    """Header + body; the body is already a whole number of words."""
    if count > 31:  # the header's count field has 5 bits (RFC 3550 §6.4.1)
        raise ValueError(f"RTCP packet type {packet_type} counts at most 31 items, not {count}")
    size = 4 + len(body)
    if size > _MAX_PACKET:
        raise ValueError(f"an RTCP packet is at most {_MAX_PACKET} bytes, not {size}")
    return _HEADER.pack(0x80 | count, packet_type, size // 4 - 1) + body


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _split(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield (offset, packet type, count, body without padding) per packet (§6.1, §6.4.1)."""
    if not data:
        raise ValueError("RTCP datagram is empty")
    offset = 0
    while offset < len(data):
        left = len(data) - offset
        if left < 4:
            raise ValueError(f"RTCP header truncated at offset {offset}: {left} bytes left, need 4")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        version = first >> 6
        if version != 2:
            raise ValueError(f"RTCP packet at offset {offset} has version {version}, not 2")
        size = 4 * (words + 1)
        if size > left:
            raise ValueError(f"RTCP packet at offset {offset} is {size} bytes, only {left} left")
        end = offset + size
        padding = 0
        if first & 0x20:
            # The count includes itself and is a multiple of four (§6.4.1).
            padding = data[end - 1]
            if padding == 0 or padding % 4 or padding > size - 4:
                raise ValueError(f"RTCP packet at offset {offset} has bad padding count {padding}")
        yield offset, packet_type, first & 0x1F, bytes(data[offset + 4 : end - padding])
        offset = end


def _split_one(data: bytes) -> tuple[int, int, bytes]:
    (_, packet_type, count, body), *rest = _split(data)
    if rest:
        raise ValueError(f"RTCP data holds {1 + len(rest)} packets, not one")
    return packet_type, count, body


class _Rtcp:
    """What every RTCP packet class shares: a one-packet ``parse``."""

    __slots__ = ()
    _TYPE: ClassVar[int]
    _FMT: ClassVar[int | None] = None

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        raise NotImplementedError

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse exactly one RTCP packet of this class; ValueError names what is wrong."""
        packet_type, count, body = _split_one(data)
        if packet_type != cls._TYPE or cls._FMT not in (None, count):
            raise ValueError(f"RTCP packet type {packet_type} FMT {count} is not a {cls.__name__}")
        return cls._from_body(count, body)


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1), 24 bytes.

    ``packets_lost`` is the 24-bit *signed* cumulative loss (duplicates can
    make it negative); ``lsr`` is the middle 32 bits of the last SR's NTP
    timestamp and ``dlsr`` the delay since then in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    @classmethod
    def parse(cls, data: bytes) -> ReportBlock:
        """Parse one 24-byte report block."""
        if len(data) != _REPORT_BLOCK.size:
            raise ValueError(f"RTCP report block is {len(data)} bytes, expected 24")
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack(data)
        return cls(ssrc, fraction, int.from_bytes(lost, signed=True), highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        _check(8, fraction_lost=self.fraction_lost)
        _check(32, ssrc=self.ssrc, highest_sequence=self.highest_sequence, jitter=self.jitter)
        _check(32, lsr=self.lsr, dlsr=self.dlsr)
        if not -(1 << 23) <= self.packets_lost < 1 << 23:
            raise ValueError(
                f"RTCP packets_lost {self.packets_lost} does not fit in 24 signed bits"
            )
        lost = self.packets_lost.to_bytes(3, signed=True)
        head = (self.ssrc, self.fraction_lost, lost, self.highest_sequence)
        return _REPORT_BLOCK.pack(*head, self.jitter, self.lsr, self.dlsr)


def _report_blocks(name: str, count: int, body: bytes, start: int) -> list[ReportBlock]:
    """The ``count`` blocks from ``start`` to the end of the body, which they must fill."""
    if len(body) != start + 24 * count:
        size, expected = 4 + len(body), 4 + start + 24 * count
        raise ValueError(f"RTCP {name} with {count} report blocks is {size} bytes, not {expected}")
    return [ReportBlock.parse(body[pos : pos + 24]) for pos in range(start, len(body), 24)]


@dataclass(slots=True)
class SenderReport(_Rtcp):
    """SR: sender info and reception reports (RFC 3550 §6.4.1), packet type 200.

    ``ntp_timestamp`` is the 64-bit NTP fixed-point wallclock of the sender
    and ``rtp_timestamp`` the same instant on the stream's RTP clock: the
    pair that maps RTP time to a shared clock for A/V sync (§6.4.1).
    """

    _TYPE: ClassVar[int] = RtcpType.SR

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    @property
    def ntp_seconds(self) -> float:
        """The NTP timestamp as seconds since 1900-01-01 (era 0), fraction included."""
        return self.ntp_timestamp / (1 << 32)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        blocks = _report_blocks("SR", count, body, 24)
        ssrc, ntp, rtp, packets, octets = _SENDER_INFO.unpack_from(body)
        return cls(ssrc, ntp, rtp, packets, octets, blocks)

    def __bytes__(self) -> bytes:
        _check(64, ntp_timestamp=self.ntp_timestamp)
        _check(32, ssrc=self.ssrc, rtp_timestamp=self.rtp_timestamp)
        _check(32, packet_count=self.packet_count, octet_count=self.octet_count)
        info = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        blocks = b"".join(bytes(block) for block in self.reports)
        return _packet(RtcpType.SR, len(self.reports), info + blocks)


@dataclass(slots=True)
class ReceiverReport(_Rtcp):
    """RR: reception reports of a receiver (RFC 3550 §6.4.2), packet type 201."""

    _TYPE: ClassVar[int] = RtcpType.RR

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        blocks = _report_blocks("RR", count, body, 4)
        (ssrc,) = struct.unpack_from("!I", body)
        return cls(ssrc, blocks)

    def __bytes__(self) -> bytes:
        _check(32, ssrc=self.ssrc)
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(block) for block in self.reports)
        return _packet(RtcpType.RR, len(self.reports), body)


@dataclass(slots=True)
class SdesChunk:
    """One SDES chunk: a source and its (item type, value) list (RFC 3550 §6.5)."""

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> bytes | None:
        """The first CNAME item (§6.5.1), the source's persistent identifier."""
        return next((value for kind, value in self.items if kind == SdesType.CNAME), None)

    def __bytes__(self) -> bytes:
        _check(32, ssrc=self.ssrc)
        parts = [struct.pack("!I", self.ssrc)]
        for kind, value in self.items:
            if not 1 <= kind <= 255:
                raise ValueError(f"RTCP SDES item type {kind} is not 1-255 (0 ends the list)")
            if len(value) > 255:
                raise ValueError(f"an RTCP SDES item is at most 255 bytes, not {len(value)}")
            parts.append(bytes([kind, len(value)]) + value)
        # At least one null octet ends the item list, more pad to a word (§6.5).
        return _pad4(b"".join(parts) + b"\x00")


@dataclass(slots=True)
class SourceDescription(_Rtcp):
    """SDES: source description chunks (RFC 3550 §6.5), packet type 202."""

    _TYPE: ClassVar[int] = RtcpType.SDES

    chunks: list[SdesChunk] = field(default_factory=list)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        chunks = []
        pos = 0
        for index in range(count):
            if pos + 4 > len(body):
                raise ValueError(f"RTCP SDES chunk {index} is truncated")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise ValueError(f"RTCP SDES chunk {index} has no end item")
                kind = body[pos]
                if kind == 0:
                    pos += 1
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise ValueError(f"RTCP SDES item in chunk {index} is truncated")
                size = body[pos + 1]
                items.append((kind, body[pos + 2 : pos + 2 + size]))
                pos += 2 + size
            pos += -pos % 4
            chunks.append(SdesChunk(ssrc, items))
        if pos != len(body):
            raise ValueError(f"RTCP SDES has {len(body) - pos} bytes after its {count} chunks")
        return cls(chunks)

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(chunk) for chunk in self.chunks)
        return _packet(RtcpType.SDES, len(self.chunks), body)


@dataclass(slots=True)
class Goodbye(_Rtcp):
    """BYE: sources leaving (RFC 3550 §6.6), packet type 203.

    ``reason`` is ``None`` without one; ``b""`` is an empty one (a zero length octet).
    """

    _TYPE: ClassVar[int] = RtcpType.BYE

    sources: list[int]
    reason: bytes | None = None

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        pos = 4 * count
        if pos > len(body):
            raise ValueError(f"RTCP BYE with {count} sources is {4 + len(body)} bytes, too short")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason: bytes | None = None
        if pos < len(body):
            size = body[pos]
            if pos + 1 + size > len(body):
                raise ValueError("RTCP BYE reason is truncated")
            reason = body[pos + 1 : pos + 1 + size]
            pos += 1 + size
            pos += -pos % 4
            if pos != len(body):
                raise ValueError(f"RTCP BYE has {len(body) - pos} bytes after its reason")
        return cls(sources, reason)

    def __bytes__(self) -> bytes:
        for source in self.sources:
            _check(32, source=source)
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason is not None:
            if len(self.reason) > 255:
                raise ValueError(f"an RTCP BYE reason is at most 255 bytes, not {len(self.reason)}")
            body += _pad4(bytes([len(self.reason)]) + self.reason)
        return _packet(RtcpType.BYE, len(self.sources), body)


def _feedback_header(body: bytes, name: str) -> tuple[int, int]:
    if len(body) < _FEEDBACK.size:
        raise ValueError(f"RTCP {name} is {4 + len(body)} bytes, less than 12")
    return _FEEDBACK.unpack_from(body)


def _pack_feedback(packet_type: int, fmt: int, sender: int, media: int, fci: bytes) -> bytes:
    _check(32, sender_ssrc=sender, media_ssrc=media)
    return _packet(packet_type, fmt, _FEEDBACK.pack(sender, media) + fci)


@dataclass(slots=True)
class PictureLossIndication(_Rtcp):
    """PLI: ask the sender for a keyframe (RFC 4585 §6.3.1), PSFB (206) FMT 1, no FCI."""

    _TYPE: ClassVar[int] = RtcpType.PSFB
    _FMT: ClassVar[int | None] = 1

    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        if len(body) != 8:
            raise ValueError(f"RTCP PLI is {4 + len(body)} bytes, expected 12")
        return cls(*_feedback_header(body, "PLI"))

    def __bytes__(self) -> bytes:
        return _pack_feedback(RtcpType.PSFB, 1, self.sender_ssrc, self.media_ssrc, b"")


@dataclass(slots=True)
class FullIntraRequest(_Rtcp):
    """FIR (RFC 5104 §4.3.1), PSFB (206) FMT 4.

    ``entries`` are (media SSRC, command sequence number) pairs, one per source
    asked for a decoder refresh; the header's ``media_ssrc`` is unused (0). The
    sequence number grows by one per new request, so repeats can be told apart.
    """

    _TYPE: ClassVar[int] = RtcpType.PSFB
    _FMT: ClassVar[int | None] = 4

    sender_ssrc: int
    media_ssrc: int = 0
    entries: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        sender, media = _feedback_header(body, "FIR")
        if (len(body) - 8) % _FIR_ENTRY.size:
            raise ValueError(f"RTCP FIR is {4 + len(body)} bytes, not 12 + 8 per entry")
        entries = [_FIR_ENTRY.unpack_from(body, pos) for pos in range(8, len(body), 8)]
        return cls(sender, media, [(ssrc, sequence) for ssrc, sequence in entries])

    def __bytes__(self) -> bytes:
        fci = []
        for ssrc, sequence in self.entries:
            _check(32, ssrc=ssrc)
            _check(8, sequence=sequence)
            fci.append(_FIR_ENTRY.pack(ssrc, sequence))
        return _pack_feedback(RtcpType.PSFB, 4, self.sender_ssrc, self.media_ssrc, b"".join(fci))


@dataclass(slots=True)
class GenericNack(_Rtcp):
    """Generic NACK (RFC 4585 §6.2.1), RTPFB (205) FMT 1.

    ``lost`` lists the missing RTP sequence numbers. On the wire each FCI is a
    PID plus a bitmask of the 16 sequence numbers after it; parsing expands
    them in wire order, serializing packs them greedily in list order (a new
    FCI whenever a number is not 1-16 after the current PID, modulo 2**16).
    """

    _TYPE: ClassVar[int] = RtcpType.RTPFB
    _FMT: ClassVar[int | None] = 1

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Self:
        sender, media = _feedback_header(body, "NACK")
        lost = []
        for pos in range(8, len(body), _NACK_ENTRY.size):
            pid, mask = _NACK_ENTRY.unpack_from(body, pos)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if mask >> bit & 1)
        return cls(sender, media, lost)

    def __bytes__(self) -> bytes:
        entries: list[list[int]] = []
        for sequence in self.lost:
            _check(16, sequence=sequence)
            if entries:
                distance = (sequence - entries[-1][0]) & 0xFFFF
                if 1 <= distance <= 16:
                    entries[-1][1] |= 1 << (distance - 1)
                    continue
            entries.append([sequence, 0])
        fci = b"".join(_NACK_ENTRY.pack(pid, mask) for pid, mask in entries)
        return _pack_feedback(RtcpType.RTPFB, 1, self.sender_ssrc, self.media_ssrc, fci)


@dataclass(slots=True)
class UnknownRtcp(_Rtcp):
    """An RTCP packet kept as bytes: a type or feedback format not decoded here.

    ``fmt`` is the header's 5-bit count field (RC, SC or FMT by type) and
    ``data`` the body after the 4-byte header, padding removed.
    """

    packet_type: int
    fmt: int
    data: bytes

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse exactly one RTCP packet of any type, without decoding its body."""
        packet_type, count, body = _split_one(data)
        return cls(packet_type, count, body)

    def __bytes__(self) -> bytes:
        _check(8, packet_type=self.packet_type)
        _check(5, fmt=self.fmt)
        if len(self.data) % 4:
            raise ValueError("RTCP packet data is a whole number of 32-bit words")
        return _packet(self.packet_type, self.fmt, self.data)


RtcpPacket: TypeAlias = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Goodbye
    | PictureLossIndication
    | FullIntraRequest
    | GenericNack
    | UnknownRtcp
)


# Decoders by (packet type, FMT); FMT is None for types whose count is RC/SC.
_DECODERS: dict[tuple[int, int | None], Callable[[int, bytes], RtcpPacket]] = {
    (cls._TYPE, cls._FMT): cls._from_body for cls in get_args(RtcpPacket) if cls is not UnknownRtcp
}


def _decode(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    fmt = count if packet_type in (RtcpType.RTPFB, RtcpType.PSFB) else None
    decoder = _DECODERS.get((packet_type, fmt))
    return UnknownRtcp(packet_type, count, body) if decoder is None else decoder(count, body)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse an RTCP compound packet (RFC 3550 §6.1) into its packets, in order.

    A malformed packet rejects the whole datagram with a ValueError: the length
    fields chain the packets, so nothing after a bad one can be trusted. An
    unknown packet type is an :class:`UnknownRtcp`, not an error.
    """
    return [_decode(packet_type, count, body) for _, packet_type, count, body in _split(data)]


def serialize_compound(packets: Sequence[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram (RFC 3550 §6.1).

    The caller chooses the order; a full compound starts with an SR or RR and
    carries an SDES CNAME, a reduced-size one (RFC 5506) may be a lone PLI.
    """
    if not packets:
        raise ValueError("an RTCP compound packet holds at least one packet")
    return b"".join(bytes(packet) for packet in packets)


def ntp_from_unix(t: float) -> int:
    """The 64-bit NTP timestamp (RFC 5905 §6) of Unix time ``t`` seconds.

    After 2036-02-07 the seconds wrap into NTP era 1 (RFC 4330 §3), as on the wire.
    """
    if not math.isfinite(t):
        raise ValueError(f"time {t} is not a finite number")
    whole = math.floor(t)
    seconds = whole + NTP_UNIX_OFFSET
    fraction = round((t - whole) * (1 << 32))
    if fraction == 1 << 32:
        seconds, fraction = seconds + 1, 0
    if seconds < 0:
        raise ValueError(f"time {t} is before the NTP epoch (1900)")
    return ((seconds << 32) | fraction) & 0xFFFF_FFFF_FFFF_FFFF


def unix_from_ntp(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp, for 1968-2104 (RFC 4330 §3).

    A clear top bit of the seconds means era 1 (from 2036-02-07 06:28:16 UTC).
    """
    _check(64, ntp_timestamp=ntp)
    seconds = ntp >> 32
    if not seconds & 0x8000_0000:
        seconds += 1 << 32
    return seconds - NTP_UNIX_OFFSET + (ntp & 0xFFFF_FFFF) / (1 << 32)


def ntp_middle_32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of a report (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFF_FFFF


def dlsr_units(seconds: float) -> int:
    """A delay in the DLSR field's units of 1/65536 s (RFC 3550 §6.4.1).

    Clamped to the field: a negative delay (a clock step) reports 0, an
    overlong one the maximum, rather than failing a live session.
    """
    if math.isnan(seconds):
        raise ValueError("delay is not a number")
    return round(min(max(seconds, 0.0) * 65536, 0xFFFF_FFFF))
