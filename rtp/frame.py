"""The unit that leaves media ingest: one decodable frame of one track."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MediaFrame", "MediaKind"]

MediaKind = Literal["audio", "video"]


@dataclass(frozen=True, slots=True)
class MediaFrame:
    """One access unit (video) or one codec frame (audio).

    ``payload`` is, for H264, one access unit in Annex-B byte stream format,
    byte-identical to what ffmpeg's ``h264_mp4toannexb`` writes: 4-byte start
    codes before the first NAL unit and before SPS/PPS, 3-byte ones before the
    others, and the current SPS and PPS inserted before the first IDR slice of
    every IDR access unit that lacks them; for audio, the RTP payload of one
    packet (one Opus packet, or G.711 samples).

    ``rtp_timestamp`` is the extended (unwrapped, 64-bit) RTP timestamp of the
    frame; ``pts`` is the presentation time in seconds on the call's clock, set
    by :mod:`rtp.sync` (``None`` until then); ``arrival`` is the local
    monotonic time at which the last packet of the frame arrived.
    ``config`` carries the codec configuration when it changed with this frame
    (H264: SPS and PPS in Annex-B), else ``None``.
    """

    kind: MediaKind
    codec: str
    clock_rate: int
    rtp_timestamp: int
    payload: bytes
    keyframe: bool = False
    arrival: float = 0.0
    pts: float | None = None
    config: bytes | None = None
    ssrc: int = 0
    duration: float | None = None
