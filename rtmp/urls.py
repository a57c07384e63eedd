"""RTMP URLs as they may appear in logs."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["redact_url"]


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
    return f"{parts.scheme}://{parts.hostname}{port}{app}{hidden}"
