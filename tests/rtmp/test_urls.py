"""Stream keys never reach the logs."""

from __future__ import annotations

import pytest

from rtmp.urls import describe_error, redact_url, url_secrets


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
        ("rtmp://[::1]:1935/live/key", "rtmp://[::1]:1935/live/***"),
        ("rtmps://[2001:db8::7]/app/key?x=1", "rtmps://[2001:db8::7]/app/***"),
    ],
)
def test_redact_url_hides_the_stream_key(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_secrets_are_the_key_query_and_password() -> None:
    assert url_secrets("rtmp://user:pw@host/app/key/more?tok=1") == ["key/more", "tok=1", "pw"]
    assert url_secrets("rtmp://host/app") == []
    assert url_secrets("/tmp/out.flv") == []


def test_describe_error_never_shows_the_target() -> None:
    target = "[f=flv:rw_timeout=10]rtmp://127.0.0.1:1935/live/SECRET"
    assert describe_error(OSError(32, "Broken pipe", target)) == "Broken pipe"
    assert "SECRET" not in describe_error(ValueError(f"open failed: '{target}'"))
    assert describe_error(RuntimeError()) == "RuntimeError"
