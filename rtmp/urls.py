"""RTMP URLs as they may appear in logs."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["describe_error", "redact_url", "url_secrets"]


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

    FFmpeg's errors end with the file name it was given, which for us is the tee
    target (muxer options and the full URL with its stream key); an OSError's
    ``strerror`` is the reason alone ("Connection refused", "Broken pipe").
    """
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
