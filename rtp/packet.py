"""RTP packets (RFC 3550 §5.1), parsed and serialized.

Parsing checks what a receiver must not trust: the version, the CSRC count
and extension length against the datagram size, and the padding count
(§5.1, §5.3.1). Every rejection is a :class:`ValueError` with the reason.

Serializing checks every field against its width, so a bad value is a
:class:`ValueError` naming the field rather than a ``struct.error`` or a
silently truncated number. Padding octets are written as zeros followed by
the count (§5.1 leaves their content open); a parsed packet whose padding was
zeros therefore serializes back to the identical datagram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["RTP_HEADER_SIZE", "RtpPacket", "is_rtcp"]

RTP_HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")


def is_rtcp(data: bytes) -> bool:
    """Demultiplex RTP and RTCP on one port (RFC 5761 §4): RTCP packet types 192-223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def _check_width(name: str, value: int, bits: int) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"RTP {name} {value} does not fit in {bits} bits")


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``extension_profile`` is ``None`` when the X bit is clear; otherwise it is
    the 16-bit "defined by profile" field (``0xBEDE`` for RFC 8285 one-byte
    header extensions) and ``extension`` holds the extension's words, without
    the 4-byte extension header. ``padding_size`` counts every padding octet
    including the final count octet (0 means no padding, P bit clear).
    """

    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    marker: bool = False
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; ValueError names what is wrong."""
        if len(data) < RTP_HEADER_SIZE:
            raise ValueError(f"RTP packet length is {len(data)}, less than {RTP_HEADER_SIZE}")
        first, second, sequence_number, timestamp, ssrc = _HEADER.unpack_from(data)
        if first == 0x80:
            # The common case (version 2; no padding, extension or CSRC): every
            # datagram comes here, so it skips the checks that cannot fail
            # (bench/ingest.py). Positional: the field order of the class.
            return cls(
                second & 0x7F, sequence_number, timestamp, ssrc, second > 0x7F,
                bytes(data[RTP_HEADER_SIZE:]), [], None, b"", 0,
            )  # fmt: skip
        version = first >> 6
        if version != 2:
            raise ValueError(f"RTP packet has version {version}, not 2")
        padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        cc = first & 0x0F
        offset = RTP_HEADER_SIZE + 4 * cc
        if len(data) < offset:
            raise ValueError(f"RTP packet truncated in its {cc} CSRC entries")
        csrc = list(struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)) if cc else []
        extension_profile: int | None = None
        extension = b""
        if has_extension:
            if len(data) < offset + 4:
                raise ValueError("RTP packet truncated in its extension header")
            extension_profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            end = offset + 4 * words
            if len(data) < end:
                raise ValueError("RTP packet truncated in its header extension")
            extension = bytes(data[offset:end])
            offset = end
        end = len(data)
        padding_size = 0
        if padding:
            # The count includes itself, so 0 is invalid; it may not reach into
            # the header (§5.1), but it may consume the whole payload.
            padding_size = data[-1]
            if padding_size == 0 or offset + padding_size > len(data):
                raise ValueError(f"RTP packet has a bad padding count {padding_size}")
            end -= padding_size
        return cls(
            payload_type=second & 0x7F,
            sequence_number=sequence_number,
            timestamp=timestamp,
            ssrc=ssrc,
            marker=bool(second & 0x80),
            payload=bytes(data[offset:end]),
            csrc=csrc,
            extension_profile=extension_profile,
            extension=extension,
            padding_size=padding_size,
        )

    def __bytes__(self) -> bytes:
        """Serialize (RFC 3550 §5.1); ValueError if a field does not fit its width."""
        if len(self.csrc) > 15:
            raise ValueError("an RTP packet holds at most 15 CSRCs")
        if len(self.extension) % 4:
            raise ValueError("an RTP header extension is a whole number of 32-bit words")
        _check_width("payload type", self.payload_type, 7)
        _check_width("sequence number", self.sequence_number, 16)
        _check_width("timestamp", self.timestamp, 32)
        _check_width("SSRC", self.ssrc, 32)
        for source in self.csrc:
            _check_width("CSRC", source, 32)
        _check_width("padding size", self.padding_size, 8)
        first = 0x80 | len(self.csrc)
        if self.padding_size:
            first |= 0x20
        if self.extension_profile is not None:
            _check_width("extension profile", self.extension_profile, 16)
            _check_width("extension length", len(self.extension) // 4, 16)
            first |= 0x10
        elif self.extension:
            raise ValueError("an RTP header extension needs an extension_profile")
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc),
            *(struct.pack("!I", c) for c in self.csrc),
        ]
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(parts)
