"""Audio RTP depacketizer: Opus (RFC 7587), PCMU and PCMA (RFC 3551 §4.5.14).

Each of these payload formats carries one codec frame per packet, so every
good packet becomes one :class:`~rtp.frame.MediaFrame` with the payload as is.
The frame duration comes from the payload: G.711 has one byte per sample and
channel; an Opus packet says its own duration in its TOC byte (RFC 6716 §3.1).

Not audio frames, and not accepted here: ``telephone-event`` (RFC 4733 DTMF)
and comfort noise (``CN``, RFC 3389, static payload type 13). They share the
audio SSRC but carry signalling and silence descriptions, so the caller routes
them by payload type before a depacketizer sees them.

Loss is only counted: Opus packet loss concealment belongs to the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from rtp.frame import MediaFrame
from rtp.packet import RtpPacket

__all__ = ["AudioCodec", "AudioDepacketizer", "AudioStats", "opus_packet_duration"]

AudioCodec = Literal["opus", "PCMU", "PCMA"]

# Opus frame sizes in units of 2.5 ms, by TOC config (RFC 6716 §3.1, Table 2):
# SILK 0-11 (10/20/40/60 ms), Hybrid 12-15 (10/20 ms), CELT 16-31 (2.5/5/10/20 ms).
_OPUS_FRAME_QUARTERS = (
    *(4, 8, 16, 24) * 3,
    *(4, 8) * 2,
    *(1, 2, 4, 8) * 4,
)
_OPUS_MAX_QUARTERS = 48  # 120 ms, the most one packet may hold (RFC 6716 §3.2.5)
_OPUS_MAX_FRAME_BYTES = 1275  # RFC 6716 §3.2.1


def _opus_frame_length(payload: bytes, pos: int) -> tuple[int, int]:
    """One frame length field (RFC 6716 §3.2.1): 1 or 2 bytes. Returns (length, next pos)."""
    if pos >= len(payload):
        raise ValueError("Opus packet truncated in a frame length")
    first = payload[pos]
    if first < 252:
        return first, pos + 1
    if pos + 1 >= len(payload):
        raise ValueError("Opus packet truncated in a frame length")
    return first + 4 * payload[pos + 1], pos + 2


def opus_packet_duration(payload: bytes) -> float:
    """The duration in seconds of one Opus packet, checked against RFC 6716 §3.4 (R1-R7).

    Raises ValueError naming the rule a malformed packet breaks.
    """
    if not payload:
        raise ValueError("Opus packet is empty")  # R1
    toc = payload[0]
    quarters = _OPUS_FRAME_QUARTERS[toc >> 3]
    code = toc & 0x03
    size = len(payload) - 1
    if code == 0:
        count = 1
        _check_frame_size(size)
    elif code == 1:
        if size % 2:
            raise ValueError("Opus code 1 packet has an odd payload length")  # R3
        count = 2
        _check_frame_size(size // 2)
    elif code == 2:
        first, pos = _opus_frame_length(payload, 1)
        if first > len(payload) - pos:
            raise ValueError("Opus code 2 packet's first frame overruns the packet")  # R4
        count = 2
        _check_frame_size(len(payload) - pos - first)
    else:
        if len(payload) < 2:
            raise ValueError("Opus code 3 packet has no frame count byte")  # R6/R7
        count = payload[1] & 0x3F
        if count == 0:
            raise ValueError("Opus code 3 packet holds zero frames")  # R5
        _check_opus_code3(payload, count)
    if count * quarters > _OPUS_MAX_QUARTERS:
        raise ValueError(f"Opus packet holds {count * quarters * 2.5:g} ms, more than 120 ms")
    return count * quarters * 0.0025


def _check_frame_size(size: int) -> None:
    if size > _OPUS_MAX_FRAME_BYTES:
        raise ValueError(f"Opus frame of {size} bytes is longer than 1275")  # R2


def _check_opus_code3(payload: bytes, count: int) -> None:
    # RFC 6716 §3.2.5: optional padding, then CBR frames of equal length or VBR lengths.
    vbr, padded = payload[1] & 0x80, payload[1] & 0x40
    pos = 2
    padding = 0
    if padded:
        while True:
            if pos >= len(payload):
                raise ValueError("Opus code 3 packet truncated in its padding length")
            byte = payload[pos]
            pos += 1
            padding += 254 if byte == 255 else byte
            if byte != 255:
                break
    available = len(payload) - pos - padding
    if available < 0:
        raise ValueError("Opus code 3 packet's padding overruns the packet")
    if vbr:
        total = 0
        for _ in range(count - 1):
            length, pos = _opus_frame_length(payload, pos)
            total += length
        last = len(payload) - pos - padding - total
        if last < 0:
            raise ValueError("Opus code 3 VBR frames overrun the packet")  # R7
        _check_frame_size(last)
    else:
        if available % count:
            raise ValueError("Opus code 3 CBR packet does not split into equal frames")  # R6
        _check_frame_size(available // count)


@dataclass(slots=True)
class AudioStats:
    """Counters of one audio depacketizer."""

    frames: int = 0
    bad_packets: int = 0
    """Empty payloads, malformed Opus packets, G.711 not a whole number of samples."""
    lost_packets: int = 0
    """Sum of ``lost_before`` reported by the jitter buffer."""
    discontinuities: int = 0


class AudioDepacketizer:
    """One RTP packet -> one audio MediaFrame, for Opus (RFC 7587) and G.711 (RFC 3551).

    ``clock_rate`` is the RTP clock from the SDP (48000 for Opus whatever its
    sampling rate, RFC 7587 §4.1; 8000 for G.711). ``channels`` matters only
    to G.711's duration.
    """

    def __init__(self, codec: AudioCodec, clock_rate: int, channels: int = 1) -> None:
        if codec not in get_args(AudioCodec):
            raise ValueError(f"unsupported audio codec {codec!r}")
        if clock_rate <= 0:
            raise ValueError(f"audio clock rate {clock_rate} is not positive")
        if channels <= 0:
            raise ValueError(f"audio channel count {channels} is not positive")
        self.codec: AudioCodec = codec
        self.clock_rate = clock_rate
        self.channels = channels
        self.stats = AudioStats()

    @property
    def needs_keyframe(self) -> bool:
        """Audio frames decode on their own: never."""
        return False

    def take_keyframe_request(self) -> bool:
        """Audio never asks for a keyframe."""
        return False

    def push(
        self,
        packet: RtpPacket,
        *,
        extended_timestamp: int,
        arrival: float,
        lost_before: int = 0,
        discontinuity: bool = False,
    ) -> list[MediaFrame]:
        """Take the next packet in sequence order; return its frame (or none if malformed)."""
        self.stats.lost_packets += max(lost_before, 0)
        if discontinuity:
            self.stats.discontinuities += 1
        payload = packet.payload
        duration = self._duration(payload)
        if duration is None:
            self.stats.bad_packets += 1
            return []
        self.stats.frames += 1
        return [
            MediaFrame(
                kind="audio",
                codec=self.codec,
                clock_rate=self.clock_rate,
                rtp_timestamp=extended_timestamp,
                payload=payload,
                keyframe=True,
                arrival=arrival,
                ssrc=packet.ssrc,
                duration=duration,
            )
        ]

    def flush(self) -> list[MediaFrame]:
        """Nothing is ever held back: always empty."""
        return []

    def _duration(self, payload: bytes) -> float | None:
        if not payload:
            return None
        if self.codec == "opus":
            try:
                return opus_packet_duration(payload)
            except ValueError:
                return None
        if len(payload) % self.channels:
            return None
        # G.711: one byte per sample per channel.
        return len(payload) / self.channels / self.clock_rate
