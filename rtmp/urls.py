"""RTMP URLs: split into what the protocol needs, and as they may appear in logs."""

from __future__ import annotations

import contextlib
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["RtmpUrl", "describe_error", "parse_rtmp_url", "redact_url", "url_secrets"]

#: Default ports (FFmpeg ``rtmp.h``: RTMP_DEFAULT_PORT, RTMPS_DEFAULT_PORT).
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}


@dataclass(frozen=True, slots=True)
class RtmpUrl:
    """An ``rtmp://``/``rtmps://`` target as the publish needs it: where to connect,
    the ``app`` and ``tcUrl`` of ``connect``, the ``playpath`` (stream key) of
    ``publish``."""

    scheme: str
    host: str
    port: int
    app: str
    playpath: str
    tc_url: str

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"


def parse_rtmp_url(url: str) -> RtmpUrl:
    """Split ``rtmp[s]://host[:port]/app[/instance]/playpath[?query]`` as FFmpeg's
    ``rtmp_open`` (``rtmpproto.c``) does, so URLs copied from YouTube or Facebook
    mean the same to us: the path's first segment is the app; with three or more
    segments the second joins the app (``app/instance``) unless the key part has a
    ``:`` before its next ``/``; the rest, query string included, is the playpath.
    ``?slist=`` takes the playpath from that parameter, ``/ondemand/`` is an app.
    A ``.flv`` suffix is dropped, ``.mp4``/``.f4v`` get an ``mp4:`` prefix. The
    ``tcUrl`` is ``scheme://host:port/app``. :class:`ValueError` for other URLs."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an rtmp:// or rtmps:// URL (scheme {scheme!r})")
    host = parts.hostname
    if not host:
        raise ValueError(f"RTMP URL without a host: {redact_url(url)}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"RTMP URL with an invalid port (host {host})") from None
    # FFmpeg's av_url_split: the path runs from the first '/' after the host, query included.
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    fname: str | None
    qmark = path.find("?")
    if qmark >= 0 and "slist=" in path[qmark:]:
        app = path[1:qmark]
        fname = path[path.index("slist=") + 6 :].split("&", 1)[0]
    elif path.startswith("/ondemand/"):
        app, fname = "ondemand", path[10:]
    else:
        rest = path[1:] if path else path
        slash = rest.find("/")
        if slash < 0:
            app, fname = rest, None
        else:
            after = rest[slash + 1 :]
            colon = after.find(":")
            second = after.find("/")
            if second < 0 or (0 <= colon < second):
                app, fname = rest[:slash], after
            else:
                app, fname = rest[: slash + 1 + second], after[second + 1 :]
    playpath = ""
    if fname:
        if ":" not in fname and fname.endswith((".f4v", ".mp4")):
            playpath = "mp4:" + fname
        else:
            playpath = fname[:-4] if fname.endswith(".flv") else fname
    shown_host = f"[{host}]" if ":" in host else host
    return RtmpUrl(
        scheme=scheme,
        host=host,
        port=port,
        app=app,
        playpath=playpath,
        tc_url=f"{scheme}://{shown_host}:{port}/{app}",
    )


def redact_url(url: str) -> str:
    """``url`` for a log line: the stream key (what follows the app) and any query are
    secrets on YouTube/Facebook-style ingest URLs."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rtmp", "rtmps"):
        return url
    segments = [s for s in parts.path.split("/") if s]
    app = f"/{segments[0]}" if segments else ""
    hidden = "/***" if len(segments) > 1 or parts.query else ""
    port = f":{parts.port}" if parts.port else ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets (RFC 3986 §3.2.2)
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{app}{hidden}"


def describe_error(exc: BaseException) -> str:
    """A write/connect error as users may see it: the reason, never the target.

    FFmpeg's errors (PyAV outputs, e.g. recordings) end with the file name it was
    given, which may hold a secret, so it is cut off; an OSError's
    ``strerror`` is the reason alone ("Connection refused", "Broken pipe"); asyncio's
    connect errors carry the address in it, so an errno gives the plain reason first.
    """
    number = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and number:
        with contextlib.suppress(ValueError):
            return os.strerror(number)
    reason = getattr(exc, "strerror", None)
    if isinstance(reason, str) and reason:
        return reason
    text = str(exc) or type(exc).__name__
    return text.split(": '", 1)[0].split(': "', 1)[0]


def url_secrets(url: str) -> list[str]:
    """The parts of an RTMP URL that are credentials: the stream key and the query."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rtmp", "rtmps"):
        return []
    segments = [s for s in parts.path.split("/") if s]
    secrets = ["/".join(segments[1:])] if len(segments) > 1 else []
    if parts.query:
        secrets.append(parts.query)
    if parts.password:
        secrets.append(parts.password)
    return secrets
