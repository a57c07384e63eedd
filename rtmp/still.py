"""A generated still picture for audio-only pushes (``PushConfig.still_video``).

Some platforms refuse an RTMP publish without video. For an audio-only stream the
pusher then sends a dark grey 640x360 picture: encoded ONCE here with libx264
(Baseline, ``tune=stillimage``, every picture an IDR), and the same access units
re-sent at a low rate with advancing timestamps, so the cost is one encode per push.

Two IDR pictures are kept and alternated because consecutive IDR access units must
differ in ``idr_pic_id`` (ITU-T H.264 §7.4.3); x264 numbers them differently.
The access units are Annex-B, SPS/PPS out of band in :attr:`StillPicture.config`
(they go in the FLV sequence header, ISO/IEC 14496-15 §5.3.3.1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import av

from rtmp.flv import AvcConfig
from rtp.h264_bits import NAL_IDR, NAL_PPS, NAL_SPS, join_annexb, nal_type, split_annexb

__all__ = ["STILL_HEIGHT", "STILL_WIDTH", "StillPicture", "still_picture"]

STILL_WIDTH = 640
STILL_HEIGHT = 360
#: Luma of the picture: dark grey (pure black 16 looks like a broken stream on some players).
_LUMA = 32


@dataclass(frozen=True, slots=True)
class StillPicture:
    """The encoded still: IDR access units (Annex-B, no SPS/PPS) and their parameter sets."""

    units: tuple[bytes, ...]
    config: AvcConfig

    def unit(self, index: int) -> bytes:
        """The access unit to send as the ``index``-th picture (alternating IDRs)."""
        return self.units[index % len(self.units)]


@functools.cache
def still_picture() -> StillPicture:
    """Encode the still picture (once per process; later calls return the same object).

    Raises :class:`av.FFmpegError` when libx264 is unavailable or fails.
    """
    codec = av.CodecContext.create("libx264", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width = STILL_WIDTH
    codec.height = STILL_HEIGHT
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 1)
    codec.framerate = Fraction(1, 1)
    codec.options = {
        "preset": "veryfast",
        "tune": "stillimage",
        "profile": "baseline",
        # Every picture an IDR, parameter sets in band (we take them out ourselves).
        "x264-params": "keyint=1:min-keyint=1:scenecut=0:repeat-headers=1:annexb=1",
    }
    packets: list[bytes] = []
    for index in range(2):
        frame = av.VideoFrame(STILL_WIDTH, STILL_HEIGHT, "yuv420p")
        for number, plane in enumerate(frame.planes):
            # Plane rows may be padded: fill whole buffers (Y dark, U/V neutral).
            plane.update(bytes([_LUMA if number == 0 else 128]) * plane.buffer_size)
        frame.pts = index
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    sps: list[bytes] = []
    pps: list[bytes] = []
    units: list[bytes] = []
    for packet in packets:
        nals = split_annexb(packet)
        for nal in nals:
            if nal_type(nal) == NAL_SPS and nal not in sps:
                sps.append(nal)
            elif nal_type(nal) == NAL_PPS and nal not in pps:
                pps.append(nal)
        picture = [n for n in nals if nal_type(n) == NAL_IDR]
        if picture:
            units.append(join_annexb(picture))
    if not sps or not pps or len(units) < 2:
        raise RuntimeError("libx264 did not produce two IDR pictures with SPS/PPS")
    return StillPicture(units=tuple(units[:2]), config=AvcConfig(sps=tuple(sps), pps=tuple(pps)))
