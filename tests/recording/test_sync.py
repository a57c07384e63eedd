"""A/V sync in the recorded files: the flash-and-beep clip, measured on the decoded file.

The clip (:mod:`tests.interop.media_tools`: a white IDR picture every 1.2 s, a
1 kHz beep 5 ms after each) is cut into the frames a call publishes and
recorded. Each file is decoded (H.264 with the file's own decoder, G.711 by the
G.711 table, AAC with PyAV), flashes and beep onsets are found on the file's
timestamps (plus the file's ``SIPBRIDGE_START_OFFSET`` when rotated), and the
flash-to-beep offsets are compared with the clip's own (the truth). Figures go
to ``artifacts/<test>/figures.json``.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import av
import pytest

from tests.interop.media_tools import (
    AudioChunk,
    ClipSpec,
    VideoSample,
    beep_onsets,
    flash_onsets,
    make_clip,
    measure_alignment,
    read_container,
    source_truth,
)
from tests.interop.peers import require_binary
from tests.recording.media import config, record, start_offset
from tests.rtmp.media import clip_frames

SPEC = ClipSpec(pattern="flash", width=320, height=240, duration=10.0, flash_every=30)
TOLERANCE_MS = 5.0


@pytest.fixture(scope="module")
def flash_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ffmpeg = require_binary("ffmpeg")
    return make_clip(ffmpeg, SPEC, tmp_path_factory.mktemp("sync") / "clip.mkv")


def read_aac(path: Path) -> list[AudioChunk]:
    """The decoded AAC samples of ``path`` (first channel) with their file timestamps."""
    chunks: list[AudioChunk] = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            if frame.pts is None or frame.time_base is None or frame.format.name != "fltp":
                continue
            samples = array("f", bytes(frame.planes[0]))[: frame.samples]
            when = float(frame.pts * frame.time_base)
            chunks.append(AudioChunk(when, frame.sample_rate, list(samples)))
    return chunks


def read_file(path: Path, codec: str) -> tuple[list[VideoSample], list[AudioChunk]]:
    """Pictures and audio of one recorded file, on the file's timestamps."""
    pictures, chunks = read_container(path)  # H.264 by the file's decoder, G.711 by table
    if codec == "aac":
        chunks = read_aac(path)
    return pictures, chunks


@pytest.mark.parametrize(
    ("fmt", "audio", "codec", "rotate"),
    [
        ("mkv", "copy", "pcm_mulaw", 0.0),
        ("mkv", "copy", "pcm_mulaw", 2.0),
        ("mp4", "copy", "aac", 0.0),
        ("mp4", "copy", "aac", 3.0),
    ],
)
async def test_recorded_file_keeps_the_source_sync(
    flash_clip: Path,
    tmp_path: Path,
    artifacts_dir: Path,
    fmt: str,
    audio: str,
    codec: str,
    rotate: float,
) -> None:
    truth = source_truth(flash_clip, SPEC)
    frames = clip_frames(flash_clip)
    cfg = config(tmp_path, format=fmt, audio=audio, rotate_seconds=rotate)
    recorder = await record(frames, cfg)
    assert recorder.files, recorder.info
    pictures: list[VideoSample] = []
    chunks: list[AudioChunk] = []
    for file in recorder.files:
        offset = start_offset(file.path)
        file_pictures, file_chunks = read_file(file.path, codec)
        pictures += [VideoSample(p.pts + offset, p.luma, p.keyframe) for p in file_pictures]
        chunks += [AudioChunk(c.pts + offset, c.rate, c.samples) for c in file_chunks]
    report = measure_alignment(
        flash_onsets(pictures, 1 / SPEC.fps), beep_onsets(chunks), truth=truth, period=SPEC.period
    )
    figures = {"format": fmt, "audio": codec, "rotate_s": rotate, "files": len(recorder.files),
               **report.summary()}  # fmt: skip
    (artifacts_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(figures)
    assert report.events >= 6, figures
    assert report.max_abs_ms <= TOLERANCE_MS, figures
