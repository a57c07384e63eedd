"""Request bodies of ``/rest-api/push/*``: msgspec Structs, decoders, checks.

Same rules as :mod:`sipbridge.api.bodies`: WCS's camelCase names, unknown fields
refused (400 naming them), ``""`` meaning "not given", and WCS's string booleans
accepted for ``rtmpTransponderFullUrl``. The URL itself is checked by the
gateway's :class:`~sipbridge.pushes.PushManager` (so library users get the same
400), not here.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from sipbridge.api.bodies import parse_flag
from sipbridge.errors import InvalidRequest

__all__ = [
    "FIND_PUSHES_DECODER",
    "PUSH_ID_DECODER",
    "START_PUSH_DECODER",
    "FindPushesBody",
    "PushFilter",
    "PushIdBody",
    "PushStart",
    "StartPushBody",
    "require_media_session_id",
    "to_push_filter",
    "to_push_start",
]

Id = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
Url = Annotated[str, msgspec.Meta(max_length=4096)]


class StartPushBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/push/startup``: ``streamName``, ``rtmpUrl``, ``rtmpTransponderFullUrl`` (loose bool)."""

    stream_name: Text | None = None
    rtmp_url: Url | None = None
    rtmp_transponder_full_url: object = None


class PushIdBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/push/terminate``, ``/push/mute``, ``/push/unmute``."""

    media_session_id: Id


class FindPushesBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/push/find``: every given (non-empty) filter must match."""

    stream_name: Text | None = None
    rtmp_url: Url | None = None


class PushStart(msgspec.Struct, kw_only=True, frozen=True):
    """A decoded ``/push/startup``."""

    stream_name: str
    rtmp_url: str
    full_url: bool = False


class PushFilter(msgspec.Struct, kw_only=True, frozen=True):
    """The decoded filters of ``/push/find`` (``None``: not filtered on)."""

    stream_name: str | None = None
    rtmp_url: str | None = None


START_PUSH_DECODER: Final = msgspec.json.Decoder(StartPushBody)
PUSH_ID_DECODER: Final = msgspec.json.Decoder(PushIdBody)
FIND_PUSHES_DECODER: Final = msgspec.json.Decoder(FindPushesBody)


def to_push_start(body: StartPushBody) -> PushStart:
    """The checked ``/push/startup`` request: both names present and not blank.

    ``rtmpUrl`` is checked before ``streamName``: the contract answers 400 for a
    missing URL whatever the stream.
    """
    if not body.rtmp_url or not body.rtmp_url.strip():
        raise InvalidRequest("rtmpUrl: required field is missing", field="rtmpUrl")
    if not body.stream_name or not body.stream_name.strip():
        raise InvalidRequest("streamName: required field is missing", field="streamName")
    return PushStart(
        stream_name=body.stream_name,
        rtmp_url=body.rtmp_url.strip(),
        full_url=parse_flag(
            body.rtmp_transponder_full_url, "rtmpTransponderFullUrl", default=False
        ),
    )


def to_push_filter(body: FindPushesBody) -> PushFilter:
    """The filters of a ``/push/find`` body; empty strings are no filter."""
    return PushFilter(stream_name=body.stream_name or None, rtmp_url=body.rtmp_url or None)


def require_media_session_id(body: PushIdBody) -> str:
    """A ``mediaSessionId`` that names a push: present and not empty."""
    if not body.media_session_id:
        raise InvalidRequest("mediaSessionId: must not be empty", field="mediaSessionId")
    return body.media_session_id
