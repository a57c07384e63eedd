"""Fixtures for the recording tests: real clips made once per session by ffmpeg."""

from __future__ import annotations

import pytest

from tests.rtmp.media import Clip, load_clip, make_clip


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """6 s of 320x240 H.264 (25 fps, GOP 1 s, no B-frames) + PCMU."""
    return load_clip(make_clip(tmp_path_factory.mktemp("clip") / "clip.mkv", seconds=6.0))


@pytest.fixture(scope="session")
def clip_640(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """2 s of 640x480 High profile H.264 + PCMU: other SPS/PPS than ``clip``."""
    path = make_clip(
        tmp_path_factory.mktemp("clip640") / "clip.mkv", seconds=2.0, size="640x480",
        profile="high",
    )  # fmt: skip
    return load_clip(path)


@pytest.fixture(scope="session")
def audio_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """3 s of PCMA only."""
    path = make_clip(
        tmp_path_factory.mktemp("audio") / "clip.mkv", seconds=3.0, audio="pcm_alaw", video=False
    )
    return load_clip(path)
