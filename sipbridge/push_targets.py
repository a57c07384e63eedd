"""Push targets: which RTMP URL a push of a stream publishes to (sans-IO, no asyncio).

Target URL (the ``rtmp_`` rule of WCS)
    ``rtmpUrl`` must be ``rtmp://`` or ``rtmps://`` with a host and an RTMP
    application (the first path segment). The URL *names a stream* when its path
    has a second non-empty segment, the stream key: ``rtmp://host/live/key``
    (YouTube ``rtmp://a.rtmp.youtube.com/live2/KEY``, Facebook
    ``rtmps://live-api-s.facebook.com:443/rtmp/KEY``). Such a URL, or any URL
    with ``rtmpTransponderFullUrl`` true, is published to as given. Otherwise
    (``rtmp://host/live``, ``rtmp://host/live/``) the name ``rtmp_<streamName>``
    (or the call's ``rtmpStream``) is appended to the path, before any query
    string, percent-encoded so a name with ``/`` or ``?`` stays one path segment.
    Applications with an instance (``app/instance/key``) therefore need the full
    URL.

IPv6 literals (``rtmp://[::1]:1935/live/key``) are accepted (see
:func:`rtmp.urls.parse_rtmp_url`).

``/call/startup`` may ask for a push in three fields; :func:`call_push_target`
picks the one that counts (:class:`CallPushTarget`). Errors are
:class:`~sipbridge.errors.InvalidRequest` naming the request field.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from sipbridge.callinfo import CallRequest
from sipbridge.errors import InvalidRequest

__all__ = [
    "RTMP_NAME_PREFIX",
    "CallPushTarget",
    "call_push_target",
    "is_rtmp_url",
    "rtmp_target_url",
]

#: WCS's prefix of the name a stream is published under on the RTMP server.
RTMP_NAME_PREFIX = "rtmp_"

_SCHEMES = ("rtmp", "rtmps")


def is_rtmp_url(value: str | None) -> bool:
    """True when ``value`` starts with ``rtmp://`` or ``rtmps://`` (any case)."""
    return value is not None and value[:8].lower().startswith(("rtmp://", "rtmps://"))


def _parse_rtmp_url(url: str, field: str) -> SplitResult:
    """``url`` split, or :class:`InvalidRequest` naming ``field`` and what is wrong."""
    if not url or not url.strip():
        raise InvalidRequest(f"{field}: must not be empty", field=field)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidRequest(f"{field}: must not contain spaces or control characters", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port outside 0..65535 or not a number
    except ValueError as exc:
        raise InvalidRequest(f"{field}: not a valid URL ({exc})", field=field) from None
    if parts.scheme.lower() not in _SCHEMES:
        raise InvalidRequest(
            f"{field}: expected an rtmp:// or rtmps:// URL, got scheme {parts.scheme!r}",
            field=field,
        )
    if not parts.hostname:
        raise InvalidRequest(f"{field}: the URL names no host", field=field)
    if port == 0:
        raise InvalidRequest(f"{field}: port must be 1-65535", field=field)
    if not _segments(parts.path):
        raise InvalidRequest(
            f"{field}: the URL names no RTMP application (rtmp://host[:port]/app[/stream])",
            field=field,
        )
    return parts


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def rtmp_target_url(
    rtmp_url: str,
    stream_name: str,
    *,
    full_url: bool = False,
    published_name: str | None = None,
    field: str = "rtmpUrl",
) -> tuple[str, str | None]:
    """``(target URL, appended name or None)`` for a push of ``stream_name`` (module doc).

    ``published_name`` replaces the default ``rtmp_<stream_name>``. Raises
    :class:`InvalidRequest` (naming ``field``) for a URL that is not a valid RTMP URL.
    """
    parts = _parse_rtmp_url(rtmp_url, field)
    if full_url or len(_segments(parts.path)) >= 2:
        return rtmp_url, None
    name = published_name or RTMP_NAME_PREFIX + stream_name
    path = parts.path.rstrip("/") + "/" + quote(name, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment)), name


@dataclass(frozen=True, slots=True)
class CallPushTarget:
    """Where ``/call/startup`` asks a call's stream to be pushed ("SIP as RTMP").

    ``field`` is the request field the URL came from (for error messages);
    ``published_name`` is the call's plain ``rtmpStream``, used instead of
    ``rtmp_<streamName>`` when the URL names no stream.
    """

    rtmp_url: str
    field: str
    published_name: str | None = None


def call_push_target(request: CallRequest) -> CallPushTarget | None:
    """The push a ``/call/startup`` request asks for, if any.

    ``rtmpUrl`` first (with a plain ``rtmpStream`` as the published name); else an
    ``rtmp://``/``rtmps://`` URL in ``rtmpStream``, else one in ``toStream``. The
    URL itself is checked when the push starts.
    """
    if request.rtmp_url:
        name = request.rtmp_stream if not is_rtmp_url(request.rtmp_stream) else None
        return CallPushTarget(request.rtmp_url, "rtmpUrl", name or None)
    if request.rtmp_stream and is_rtmp_url(request.rtmp_stream):
        return CallPushTarget(request.rtmp_stream, "rtmpStream")
    if request.to_stream and is_rtmp_url(request.to_stream):
        return CallPushTarget(request.to_stream, "toStream")
    return None
