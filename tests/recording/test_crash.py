"""Crash safety: a separate process records a live stream and is killed, or stopped.

``kill -9`` mid-recording must leave a file that ffprobe reads and ffmpeg decodes
without an error, holding the stream up to at most a couple of seconds before the
kill (the cluster/fragment being filled, ``fragment_duration`` = 1 s, plus what
was queued). SIGTERM must finish the file: trailer written (duration known),
renamed from its ``partial`` name, nothing lost. Figures go to
``artifacts/<test>/figures.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.recording.media import decode_errors, packets, probe
from tests.rtmp.media import make_clip

ROOT = Path(__file__).resolve().parents[2]
RUN_SECONDS = 6.0
#: What a crash may lose: one 1 s cluster/fragment, the last GOP (MP4 cuts on keyframes
#: too), and what the queues held.
MAX_LOST = 2.5


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("crash") / "clip.mkv", seconds=4.0)


class Child:
    def __init__(self, clip: Path, out: Path, fmt: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.recording.crash_child", str(clip), str(out), fmt,
             *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.started = 0.0

    def expect(self, word: str, timeout: float = 20.0) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith(word):
                return line.strip()
        self.kill()
        raise AssertionError(f"child never said {word}: {self.process.stderr.read()[-2000:]}")  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def recorded_seconds(path: Path) -> float:
    found = packets(path)
    return max(t + d for kind in ("video", "audio") for t, d in found[kind])


@pytest.mark.parametrize("fmt", ["mkv", "mp4"])
def test_kill_9_leaves_a_playable_file(
    long_clip: Path, tmp_path: Path, artifacts_dir: Path, fmt: str
) -> None:
    child = Child(long_clip, tmp_path, fmt)
    try:
        child.expect("START")
        started = time.monotonic()
        child.expect("OPEN")
        time.sleep(max(0.0, RUN_SECONDS - (time.monotonic() - started)))
        ran = time.monotonic() - started
        os.kill(child.process.pid, signal.SIGKILL)
        assert child.process.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
    [path] = list(tmp_path.iterdir())
    assert "partial" in path.name  # never finished: it keeps its in-progress name
    streams = {s["codec_type"]: s["codec_name"] for s in probe(path)["streams"]}
    assert streams == {"video": "h264", "audio": "pcm_mulaw" if fmt == "mkv" else "aac"}
    assert decode_errors(path) == ""
    seconds = recorded_seconds(path)
    lost = ran - seconds
    figures = {"format": fmt, "ran_s": round(ran, 3), "recorded_s": round(seconds, 3),
               "lost_s": round(lost, 3), "bytes": path.stat().st_size}  # fmt: skip
    (artifacts_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(figures)
    assert 0.0 <= lost <= MAX_LOST, figures
    # Every video packet that made it decodes in order (no hole inside the file).
    video = [t for t, _ in packets(path)["video"]]
    assert len(video) >= (seconds - 0.1) * 25


@pytest.mark.parametrize("fmt", ["mkv", "mp4"])
def test_sigterm_finishes_the_file(
    long_clip: Path, tmp_path: Path, artifacts_dir: Path, fmt: str
) -> None:
    child = Child(long_clip, tmp_path, fmt)
    try:
        child.expect("START")
        started = time.monotonic()
        child.expect("OPEN")
        time.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
        ran = time.monotonic() - started
        child.process.send_signal(signal.SIGTERM)
        child.expect("CLOSED")
        assert child.process.wait(10) == 0
    finally:
        child.kill()
    [path] = list(tmp_path.iterdir())
    assert "partial" not in path.name
    duration = float(probe(path)["format"]["duration"])  # the trailer was written
    seconds = recorded_seconds(path)
    figures = {"format": fmt, "ran_s": round(ran, 3), "recorded_s": round(seconds, 3),
               "duration_s": duration}  # fmt: skip
    (artifacts_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    assert duration == pytest.approx(seconds, abs=0.1)
    assert abs(ran - seconds) <= 0.3, figures
    assert decode_errors(path) == ""


def test_a_refused_write_fails_the_recording_not_the_stream(
    long_clip: Path, tmp_path: Path
) -> None:
    """The kernel refuses a write (file size limit, as a full disk does): the recording
    is FAILED with the reason, the stream goes on, the file so far plays."""
    child = Child(long_clip, tmp_path, "mkv", str(150_000))
    try:
        child.expect("START")
        failed = child.expect("FAILED")
        stream = child.expect("STREAM")
        assert child.process.wait(20) == 0
    finally:
        child.kill()
    assert failed == "FAILED Failed by recorder error: File too large"
    assert stream == "STREAM PUBLISHING 0"  # still published; the recorder left it
    [path] = list(tmp_path.iterdir())
    assert "partial" in path.name
    assert path.stat().st_size <= 150_000
    assert decode_errors(path) == ""
    assert recorded_seconds(path) > 1.0
