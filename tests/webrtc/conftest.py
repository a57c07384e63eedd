"""Fixtures for the WebRTC egress tests: one real H.264 + PCMU clip per session."""

from __future__ import annotations

import pytest

from tests.webrtc.media import Clip, make_clip


@pytest.fixture(scope="session")
def clip() -> Clip:
    """2 s of 320x240 H.264 (25 fps, constrained baseline, IDR every 1 s) + PCMU."""
    return make_clip(width=320, height=240, fps=25, seconds=2.0, gop=25)
