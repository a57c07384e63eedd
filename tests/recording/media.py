"""Helpers for the recording tests: record frames into files, read the files back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import av

from rtp.frame import MediaFrame
from sipbridge.recording import Recorder, RecorderConfig
from sipbridge.registry import Stream, StreamStatus


def config(
    directory: Path, template: str = "{streamName}-{startTime}-{endTime}", **fields: Any
) -> RecorderConfig:
    """A recorder configuration writing into ``directory``."""
    return dataclasses.replace(RecorderConfig.default(directory, template), **fields)


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def record(
    frames: list[MediaFrame],
    cfg: RecorderConfig,
    *,
    name: str = "call1",
    declare: tuple[str, ...] = ("video", "audio"),
    end: bool = True,
) -> Recorder:
    """Publish ``frames`` into a new stream recorded with ``cfg``; end the stream; wait."""
    stream = Stream(name)
    for kind in declare:
        stream.track(kind)  # type: ignore[arg-type]
    recorder = Recorder(stream, cfg)
    await recorder.start()
    for index, frame in enumerate(frames):
        stream.publish(frame)
        if index % 20 == 0:
            await asyncio.sleep(0)  # let the reader move frames to the worker
    if end:
        stream.end(StreamStatus.UNPUBLISHED)
        await wait_for(lambda: recorder.status.is_final)
    await recorder.stop()
    return recorder


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's streams and format of ``path``."""
    text = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


def packets(path: Path) -> dict[str, list[tuple[float, float]]]:
    """(pts, duration) in seconds of every packet per track kind, in file order (PyAV)."""
    out: dict[str, list[tuple[float, float]]] = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or packet.size == 0 or packet.time_base is None:
                continue
            kind = packet.stream.type
            duration = float((packet.duration or 0) * packet.time_base)
            out[kind].append((float(packet.pts * packet.time_base), duration))
    return out


def start_offset(path: Path) -> float:
    """The file's ``SIPBRIDGE_START_OFFSET`` tag (seconds on the recording's timeline)."""
    with av.open(str(path)) as container:
        tags = {key.upper(): value for key, value in container.metadata.items()}
    return float(tags["SIPBRIDGE_START_OFFSET"])


def decode_errors(path: Path, timeout: float = 60.0) -> str:
    """What ``ffmpeg -v error`` says while decoding every track (empty: no error)."""
    done = subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), "ffmpeg", "-v", "error", "-nostdin",
         "-i", str(path), "-map", "0", "-f", "null", "-"],
        capture_output=True, text=True, timeout=timeout + 5,
    )  # fmt: skip
    return done.stderr.strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})")
