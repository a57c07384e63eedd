"""Test media for the WebRTC egress: H.264 (PyAV libx264, Annex-B) + PCMU as MediaFrames."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, replace

import av
from av.video.frame import VideoFrame

from rtp.frame import MediaFrame
from sipbridge.registry import Stream

#: Where the clip starts on the call clock.
BASE_PTS = 50.0
G711_FRAME = 160  # 20 ms at 8 kHz


@dataclass(frozen=True)
class Clip:
    width: int
    height: int
    fps: int
    frames: list[MediaFrame]

    @property
    def video(self) -> list[MediaFrame]:
        return [f for f in self.frames if f.kind == "video"]

    @property
    def audio(self) -> list[MediaFrame]:
        return [f for f in self.frames if f.kind == "audio"]

    @property
    def seconds(self) -> float:
        return len(self.video) / self.fps


def _picture(width: int, height: int, index: int) -> VideoFrame:
    """A grey picture with a bright bar moving across it (something for x264 to code)."""
    frame = VideoFrame(width, height, "yuv420p")
    bar = (index * 8) % width
    row = bytes(235 if bar <= x < bar + 16 else 60 + (x * 100) // width for x in range(width))
    y_plane = frame.planes[0]
    y_plane.update(row * height if y_plane.line_size == width else _padded(row, y_plane, height))
    for plane in frame.planes[1:]:
        plane.update(bytes([128]) * (plane.line_size * plane.height))
    return frame


def _padded(row: bytes, plane: av.video.plane.VideoPlane, height: int) -> bytes:
    return (row + bytes(plane.line_size - len(row))) * height


def encode_h264(
    *, width: int = 320, height: int = 240, fps: int = 25, seconds: float = 2.0, gop: int = 25
) -> list[bytes]:
    """Annex-B access units, constrained baseline, a keyframe (IDR) every ``gop`` frames.

    libx264 writes Annex-B with SPS/PPS before every IDR when no global header is
    asked for (``repeat-headers``): each packet is one access unit.
    """
    codec = av.CodecContext.create("libx264", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.gop_size = gop
    codec.max_b_frames = 0
    codec.profile = "Constrained Baseline"
    codec.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1",
    }
    units: list[bytes] = []
    count = round(seconds * fps)
    for index in range(count):
        picture = _picture(width, height, index)
        picture.pts = index
        units.extend(bytes(p) for p in codec.encode(picture))
    units.extend(bytes(p) for p in codec.encode(None))
    assert len(units) == count, (len(units), count)
    return units


def pcmu_tone(seconds: float, frequency: float = 440.0) -> list[bytes]:
    """20 ms PCMU payloads of a sine tone (G.711 µ-law, ITU-T G.711 via PyAV)."""
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate = 8000
    codec.format = "s16"
    codec.layout = "mono"
    total = round(seconds * 8000)
    samples = b"".join(
        int(8000 * math.sin(2 * math.pi * frequency * n / 8000)).to_bytes(2, "little", signed=True)
        for n in range(total)
    )
    frame = av.AudioFrame(format="s16", layout="mono", samples=total)
    frame.sample_rate = 8000
    frame.planes[0].update(samples)
    data = b"".join(bytes(p) for p in codec.encode(frame)) + b"".join(
        bytes(p) for p in codec.encode(None)
    )
    return [data[i : i + G711_FRAME] for i in range(0, len(data) - G711_FRAME + 1, G711_FRAME)]


def make_clip(
    *, width: int = 320, height: int = 240, fps: int = 25, seconds: float = 2.0, gop: int = 25
) -> Clip:
    """``seconds`` of video and PCMU audio as a call publishes them, in pts order."""
    frames: list[MediaFrame] = []
    for index, unit in enumerate(
        encode_h264(width=width, height=height, fps=fps, seconds=seconds, gop=gop)
    ):
        t = index / fps
        frames.append(
            MediaFrame(
                kind="video",
                codec="H264",
                clock_rate=90000,
                rtp_timestamp=round(t * 90000),
                payload=unit,
                keyframe=index % gop == 0,
                pts=BASE_PTS + t,
            )
        )
    for index, chunk in enumerate(pcmu_tone(seconds)):
        t = index * G711_FRAME / 8000
        frames.append(
            MediaFrame(
                kind="audio",
                codec="PCMU",
                clock_rate=8000,
                rtp_timestamp=index * G711_FRAME,
                payload=chunk,
                keyframe=True,
                pts=BASE_PTS + t,
                duration=G711_FRAME / 8000,
            )
        )
    frames.sort(key=lambda f: (f.pts or 0.0, f.kind != "video"))
    return Clip(width=width, height=height, fps=fps, frames=frames)


def looped(clip: Clip, loops: int) -> list[MediaFrame]:
    """The clip repeated ``loops`` times on a continuous timeline."""
    out: list[MediaFrame] = []
    for loop in range(loops):
        offset = loop * clip.seconds
        out.extend(replace(f, pts=(f.pts or 0.0) + offset) for f in clip.frames)
    return out


async def feed_realtime(stream: Stream, frames: list[MediaFrame]) -> None:
    """Publish ``frames`` on their pts schedule (wall clock), as a live call would."""
    if not frames:
        return
    start = time.monotonic()
    first = frames[0].pts or 0.0
    for frame in frames:
        delay = start + ((frame.pts or 0.0) - first) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stream.publish(frame)
