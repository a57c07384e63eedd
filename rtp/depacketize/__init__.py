"""RTP payload depacketizers: packets in sequence order -> :class:`~rtp.frame.MediaFrame`.

Every depacketizer takes the fields of the jitter buffer's release explicitly
(packet, extended timestamp, arrival time, packets lost before it, whether the
stream jumped), so this package does not depend on :mod:`rtp.jitter`.

- :class:`H264Depacketizer`: RFC 6184, Annex B access units out.
- :class:`AudioDepacketizer`: Opus (RFC 7587), PCMU and PCMA (RFC 3551).

``telephone-event`` (RFC 4733) and comfort noise (``CN``, RFC 3389, payload
type 13) are not media frames: route them by payload type before these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from rtp.depacketize.audio import AudioCodec, AudioDepacketizer, AudioStats, opus_packet_duration
from rtp.depacketize.h264 import H264Depacketizer, H264Stats, parse_sprop_parameter_sets
from rtp.frame import MediaFrame
from rtp.h264_bits import split_annexb
from rtp.packet import RtpPacket

__all__ = [
    "AudioCodec",
    "AudioDepacketizer",
    "AudioStats",
    "Depacketizer",
    "H264Depacketizer",
    "H264Stats",
    "create_depacketizer",
    "opus_packet_duration",
    "parse_sprop_parameter_sets",
    "split_annexb",
]


class Depacketizer(Protocol):
    """What a call's media path drives, whatever the codec."""

    def push(
        self,
        packet: RtpPacket,
        *,
        extended_timestamp: int,
        arrival: float,
        lost_before: int = 0,
        discontinuity: bool = False,
    ) -> list[MediaFrame]:
        """Take the next packet in sequence order; return the frames it completes."""
        ...

    def flush(self) -> list[MediaFrame]:
        """End of stream: return what is still whole."""
        ...

    @property
    def needs_keyframe(self) -> bool:
        """True while the decoder would need a keyframe to go on (video only)."""
        ...

    def take_keyframe_request(self) -> bool:
        """True once per episode in which a keyframe should be requested (PLI/FIR)."""
        ...


def create_depacketizer(
    encoding: str,
    *,
    clock_rate: int,
    channels: int = 1,
    fmtp: Mapping[str, str] | None = None,
) -> Depacketizer:
    """The depacketizer for an SDP ``rtpmap`` encoding name (case-insensitive) and its fmtp.

    Raises ValueError for encodings that are not media this package handles
    (``telephone-event``, ``CN`` and any other codec).
    """
    name = encoding.lower()
    if name == "h264":
        sprop = (fmtp or {}).get("sprop-parameter-sets")
        return H264Depacketizer(sprop_parameter_sets=sprop, clock_rate=clock_rate)
    if name == "opus":
        return AudioDepacketizer("opus", clock_rate, channels)
    if name == "pcmu":
        return AudioDepacketizer("PCMU", clock_rate, channels)
    if name == "pcma":
        return AudioDepacketizer("PCMA", clock_rate, channels)
    raise ValueError(f"no depacketizer for encoding {encoding!r}")
