"""Stream keys never reach the logs."""

from __future__ import annotations

import pytest

from rtmp.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", "rtmp://a.rtmp.youtube.com/live2/***"),
        (
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1",
            "rtmps://live-api-s.facebook.com:443/rtmp/***",
        ),
        ("rtmp://127.0.0.1:1935/live", "rtmp://127.0.0.1:1935/live"),
        ("rtmp://host/app?token=secret", "rtmp://host/app/***"),
        ("/tmp/out.flv", "/tmp/out.flv"),
    ],
)
def test_redact_url_hides_the_stream_key(url: str, shown: str) -> None:
    assert redact_url(url) == shown
