"""Test media for the RTMP pusher: a real H.264 + PCMU clip cut into MediaFrames."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import av
import av.bitstream

from rtp.frame import MediaFrame
from rtp.h264_bits import NAL_PPS, NAL_SPS, join_annexb, nal_type, split_annexb
from sipbridge.registry import Stream

#: Where the clip's frames sit on the call clock.
BASE_PTS = 100.0
G711_FRAME = 160  # 20 ms at 8 kHz


@dataclass(frozen=True)
class Clip:
    path: Path
    width: int
    height: int
    fps: int
    seconds: float
    frames: list[MediaFrame]

    @property
    def video(self) -> list[MediaFrame]:
        return [f for f in self.frames if f.kind == "video"]

    @property
    def audio(self) -> list[MediaFrame]:
        return [f for f in self.frames if f.kind == "audio"]


def make_clip(
    path: Path,
    *,
    seconds: float = 4.0,
    size: str = "320x240",
    fps: int = 25,
    gop: int = 25,
    profile: str = "baseline",
    audio: str | None = "pcm_mulaw",
    video: bool = True,
) -> Path:
    """An MKV made by ffmpeg: libx264 without B-frames, G.711 at 8 kHz mono."""
    argv = ["ffmpeg", "-v", "error", "-y"]
    if video:
        argv += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    if audio is not None:
        argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000"]
    argv += ["-t", str(seconds)]
    if video:
        argv += ["-c:v", "libx264", "-bf", "0", "-g", str(gop), "-profile:v", profile]
        argv += ["-pix_fmt", "yuv420p", "-x264-params", "scenecut=0"]
    if audio is not None:
        argv += ["-c:a", audio, "-ar", "8000", "-ac", "1"]
    argv.append(str(path))
    subprocess.run(argv, check=True, timeout=60)
    return path


def clip_frames(path: Path, *, base: float = BASE_PTS) -> list[MediaFrame]:
    """The clip as a call would publish it: Annex-B access units, 20 ms G.711 frames,
    in pts order on the call clock starting at ``base``."""
    frames: list[MediaFrame] = []
    with av.open(str(path)) as container:
        streams = list(container.streams)
        bsfs = {
            s.index: av.bitstream.BitStreamFilterContext("h264_mp4toannexb", in_stream=s)
            for s in streams
            if s.type == "video"
        }
        pending_audio = bytearray()
        audio_t: float | None = None
        audio_codec = "PCMU"
        for packet in container.demux():
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * packet.time_base)
            if packet.stream.type == "video":
                for out in bsfs[packet.stream.index].filter(packet):
                    payload = bytes(out)
                    nals = split_annexb(payload)
                    config = None
                    if out.is_keyframe:
                        config = join_annexb([n for n in nals if nal_type(n) in (NAL_SPS, NAL_PPS)])
                    frames.append(
                        MediaFrame(
                            kind="video",
                            codec="H264",
                            clock_rate=90000,
                            rtp_timestamp=round(t * 90000),
                            payload=payload,
                            keyframe=out.is_keyframe,
                            pts=base + t,
                            config=config,
                        )
                    )
            elif packet.stream.type == "audio":
                audio_codec = "PCMU" if packet.stream.codec_context.name == "pcm_mulaw" else "PCMA"
                if audio_t is None:
                    audio_t = t
                pending_audio += bytes(packet)
                while len(pending_audio) >= G711_FRAME:
                    chunk = bytes(pending_audio[:G711_FRAME])
                    del pending_audio[:G711_FRAME]
                    frames.append(
                        MediaFrame(
                            kind="audio",
                            codec=audio_codec,
                            clock_rate=8000,
                            rtp_timestamp=round(audio_t * 8000),
                            payload=chunk,
                            keyframe=True,
                            pts=base + audio_t,
                            duration=G711_FRAME / 8000,
                        )
                    )
                    audio_t += G711_FRAME / 8000
    frames.sort(key=lambda f: (f.pts or 0.0, f.kind != "video"))
    return frames


def load_clip(path: Path, *, base: float = BASE_PTS) -> Clip:
    info = ffprobe_streams(path)
    video = [s for s in info if s["codec_type"] == "video"]
    fps = 25
    if video:
        num, den = (int(x) for x in video[0]["r_frame_rate"].split("/"))
        fps = round(num / den)
    duration = float(ffprobe_format(path)["duration"])
    return Clip(
        path=path,
        width=int(video[0]["width"]) if video else 0,
        height=int(video[0]["height"]) if video else 0,
        fps=fps,
        seconds=duration,
        frames=clip_frames(path, base=base),
    )


def shifted(frames: list[MediaFrame], offset: float) -> list[MediaFrame]:
    """The frames ``offset`` seconds later on the call clock."""
    return [replace(f, pts=(f.pts or 0.0) + offset) for f in frames]


async def feed_realtime(stream: Stream, frames: list[MediaFrame], *, speed: float = 1.0) -> None:
    """Publish ``frames`` on their pts schedule (wall clock), as a live call would."""
    if not frames:
        return
    start = time.monotonic()
    first = frames[0].pts or 0.0
    for frame in frames:
        due = start + ((frame.pts or 0.0) - first) / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stream.publish(frame)


# -- ffprobe / ffmpeg --------------------------------------------------------------------------
def _run_json(argv: list[str], timeout: float = 30.0) -> dict[str, object]:
    result = subprocess.run(argv, capture_output=True, check=True, timeout=timeout, text=True)
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def ffprobe_streams(target: Path | str, *extra: str) -> list[dict[str, str]]:
    data = _run_json(
        ["ffprobe", "-v", "error", *extra, "-show_streams", "-of", "json", str(target)]
    )
    streams = data.get("streams", [])
    assert isinstance(streams, list)
    return [{k: str(v) for k, v in s.items()} for s in streams]


def ffprobe_format(target: Path | str) -> dict[str, str]:
    data = _run_json(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(target)])
    fmt = data["format"]
    assert isinstance(fmt, dict)
    return {k: str(v) for k, v in fmt.items()}


def ffprobe_packets(target: Path | str) -> list[tuple[str, float, float]]:
    """(codec_type, pts_time, duration_time) of every packet, in file order."""
    data = _run_json(
        [
            "ffprobe", "-v", "error", "-show_entries",
            "packet=codec_type,pts_time,duration_time", "-of", "json", str(target),
        ]
    )  # fmt: skip
    packets = data.get("packets", [])
    assert isinstance(packets, list)
    return [
        (str(p["codec_type"]), float(p["pts_time"]), float(p.get("duration_time", 0.0)))
        for p in packets
    ]


def decode_errors(target: Path | str, *extra: str, timeout: float = 60.0) -> str:
    """What ``ffmpeg -v error`` says while decoding everything (empty: no error)."""
    result = subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), "ffmpeg", "-v", "error", *extra,
         "-i", str(target), "-f", "null", "-"],
        capture_output=True, timeout=timeout + 5, text=True,
    )  # fmt: skip
    return result.stderr.strip() + (
        "" if result.returncode == 0 else f" (exit {result.returncode})"
    )
