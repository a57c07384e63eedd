"""Stream keys never reach the logs."""

from __future__ import annotations

import pytest

from rtmp.urls import describe_error, parse_rtmp_url, redact_url, url_secrets


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


@pytest.mark.parametrize(
    ("url", "host", "port", "app", "playpath", "tc_url"),
    [
        # YouTube: app "live2", key as the playpath.
        (
            "rtmp://a.rtmp.youtube.com/live2/abcd-efgh",
            "a.rtmp.youtube.com", 1935, "live2", "abcd-efgh",
            "rtmp://a.rtmp.youtube.com:1935/live2",
        ),
        # Facebook: rtmps default port 443, the query stays with the key.
        (
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=b",
            "live-api-s.facebook.com", 443, "rtmp", "FB-123?s_bl=1&a=b",
            "rtmps://live-api-s.facebook.com:443/rtmp",
        ),
        # Three segments: the second joins the app (app/instance), as in FFmpeg.
        ("rtmp://h/app/inst/key", "h", 1935, "app/inst", "key", "rtmp://h:1935/app/inst"),
        ("rtmp://h/app/a/b/c", "h", 1935, "app/a", "b/c", "rtmp://h:1935/app/a"),
        # ... unless a ':' comes before the next '/' (mp4:dir/file is one playpath).
        ("rtmp://h/vod/mp4:dir/f", "h", 1935, "vod", "mp4:dir/f", "rtmp://h:1935/vod"),
        ("rtmp://h/live", "h", 1935, "live", "", "rtmp://h:1935/live"),
        ("rtmp://h/live/k.flv", "h", 1935, "live", "k", "rtmp://h:1935/live"),
        ("rtmp://h/vod/k.mp4", "h", 1935, "vod", "mp4:k.mp4", "rtmp://h:1935/vod"),
        ("rtmp://h/ondemand/x/y", "h", 1935, "ondemand", "x/y", "rtmp://h:1935/ondemand"),
        ("rtmp://h/live?slist=key&t=1", "h", 1935, "live", "key", "rtmp://h:1935/live"),
        ("rtmp://[::1]:1940/live/k", "::1", 1940, "live", "k", "rtmp://[::1]:1940/live"),
    ],
)  # fmt: skip
def test_parse_rtmp_url_like_ffmpeg(
    url: str, host: str, port: int, app: str, playpath: str, tc_url: str
) -> None:
    parsed = parse_rtmp_url(url)
    assert (parsed.host, parsed.port, parsed.app, parsed.playpath, parsed.tc_url) == (
        host,
        port,
        app,
        playpath,
        tc_url,
    )
    assert parsed.tls == url.startswith("rtmps:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/live/k", "not an rtmp:// or rtmps:// URL"),
        ("rtmp:///live/k", "RTMP URL without a host"),
        ("rtmp://h:99999/live/k", "RTMP URL with an invalid port"),
    ],
)
def test_parse_rtmp_url_errors_hide_the_key(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_rtmp_url(url)
    assert "/k" not in str(info.value)


def test_describe_error_prefers_the_errno_reason() -> None:
    error = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1935)")
    assert describe_error(error) == "Connection refused"
