"""FFmpeg starts no threads of its own for the pushes' audio (rtmp/ffmpeg_threads.py)."""

from __future__ import annotations

import os

from rtmp.audio import AacTranscoder
from rtmp.ffmpeg_threads import limit_ffmpeg_threads
from tests.rtmp.test_audio import pcmu_tone


def native_threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def test_transcoders_start_no_ffmpeg_threads() -> None:
    assert limit_ffmpeg_threads()  # done at import by rtmp.audio; idempotent
    before = native_threads()
    transcoders = [AacTranscoder() for _ in range(5)]
    units = 0
    for transcoder in transcoders:
        for index in range(20):  # decode, resample to 48 kHz, encode: every filter graph
            units += len(transcoder.feed("PCMU", pcmu_tone(index), index * 0.02))
    assert units > 5 * 10
    # Without the limit each transcoder's resampler and encoder graph start one
    # worker per core: 4 threads per transcoder on two cores.
    assert native_threads() == before
