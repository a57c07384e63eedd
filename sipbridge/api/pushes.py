"""``/rest-api/push/*``: WCS's RTMP transponder methods (shared REST contract, ``/push/*``).

Same shape as :mod:`sipbridge.api.streams`: each handler reads the bounded body,
decodes it with the endpoint's msgspec decoder, calls one
:class:`~sipbridge.api.protocol.PushesAPI` method and encodes the answer: the
affected ``PushInfo`` for actions, a JSON array for ``find*`` (404 when it would
be empty, as WCS does). Errors are mapped by
:func:`~sipbridge.api.endpoint.json_endpoint`.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from sipbridge.api.bodies import EMPTY_DECODER, EmptyBody, decode_body
from sipbridge.api.endpoint import (
    DEFAULT_MAX_BODY_BYTES,
    Handler,
    PostRoutes,
)
from sipbridge.api.errors import json_response
from sipbridge.api.protocol import PushesAPI
from sipbridge.api.push_bodies import (
    FIND_PUSHES_DECODER,
    PUSH_ID_DECODER,
    START_PUSH_DECODER,
    FindPushesBody,
    PushIdBody,
    StartPushBody,
    require_media_session_id,
    to_push_filter,
    to_push_start,
)
from sipbridge.errors import NotFound
from sipbridge.pushes import PushInfo

__all__ = ["PushRoutes"]

logger = logging.getLogger("sipbridge.api.pushes")


class PushRoutes(PostRoutes):
    """The ``/push/*`` handlers bound to one push manager; :meth:`routes` lists them."""

    schemas = {
        "/push/startup": (StartPushBody, PushInfo),
        "/push/find": (FindPushesBody, list[PushInfo]),
        "/push/find_all": (EmptyBody, list[PushInfo]),
        "/push/terminate": (PushIdBody, PushInfo),
        "/push/mute": (PushIdBody, PushInfo),
        "/push/unmute": (PushIdBody, PushInfo),
    }

    def __init__(self, pushes: PushesAPI, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        super().__init__(max_body_bytes=max_body_bytes)
        self._pushes = pushes

    def handlers(self) -> dict[str, Handler]:
        return {
            "/push/startup": self.startup,
            "/push/find": self.find,
            "/push/find_all": self.find_all,
            "/push/terminate": self.terminate,
            "/push/mute": self.mute,
            "/push/unmute": self.unmute,
        }

    async def startup(self, request: Request) -> Response:
        """``/push/startup``: push a stream to an RTMP URL (400 URL, 404 stream, 409 duplicate)."""
        start = to_push_start(decode_body(START_PUSH_DECODER, await self._body(request)))
        info = await self._pushes.start_push(
            start.stream_name, start.rtmp_url, full_url=start.full_url
        )
        logger.info(
            "push %s of stream %s started (%s)",
            info.media_session_id,
            info.stream_name,
            info.status.value,
        )
        return json_response(info)

    async def find(self, request: Request) -> Response:
        """``/push/find``: pushes matching ``streamName`` and ``rtmpUrl``; 404 when none does."""
        wanted = to_push_filter(decode_body(FIND_PUSHES_DECODER, await self._body(request)))
        return _found(
            self._pushes.find_pushes(stream_name=wanted.stream_name, rtmp_url=wanted.rtmp_url)
        )

    async def find_all(self, request: Request) -> Response:
        """``/push/find_all``: every push; 404 when there is none."""
        decode_body(EMPTY_DECODER, await self._body(request))
        return _found(self._pushes.all_pushes())

    async def terminate(self, request: Request) -> Response:
        """``/push/terminate``: stop a push (``STOPPED``); an ended push answers as it is."""
        media_session_id = await self._media_session_id(request)
        return json_response(await self._pushes.terminate_push(media_session_id))

    async def mute(self, request: Request) -> Response:
        """``/push/mute``: the push's audio is muted; 409 when the push has ended."""
        media_session_id = await self._media_session_id(request)
        return json_response(await self._pushes.mute_push(media_session_id))

    async def unmute(self, request: Request) -> Response:
        """``/push/unmute``: the push's audio is heard again; 409 when the push has ended."""
        media_session_id = await self._media_session_id(request)
        return json_response(await self._pushes.unmute_push(media_session_id))

    async def _media_session_id(self, request: Request) -> str:
        return require_media_session_id(decode_body(PUSH_ID_DECODER, await self._body(request)))


def _found(pushes: list[PushInfo]) -> Response:
    if not pushes:
        raise NotFound("no push matched")
    return json_response(pushes)
