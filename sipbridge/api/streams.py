"""``/rest-api/stream/*``: WCS's stream methods (see the shared REST contract, ``/stream/*``).

Same shape as :mod:`sipbridge.api.calls`: each handler reads the bounded body,
decodes it with the endpoint's msgspec decoder, calls one
:class:`~sipbridge.api.protocol.StreamsAPI` method and encodes the answer: the
affected ``StreamInfo`` for ``terminate``, a JSON array for ``find*`` (404 when
it would be empty, as WCS does). Errors are mapped by
:func:`~sipbridge.api.endpoint.json_endpoint`.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from sipbridge.api.bodies import (
    EMPTY_DECODER,
    FIND_STREAMS_DECODER,
    STREAM_KEY_DECODER,
    EmptyBody,
    FindStreamsBody,
    StreamKeyBody,
    decode_body,
    to_stream_filter,
    to_stream_key,
)
from sipbridge.api.endpoint import (
    DEFAULT_MAX_BODY_BYTES,
    Handler,
    PostRoutes,
)
from sipbridge.api.errors import json_response
from sipbridge.api.protocol import StreamsAPI
from sipbridge.errors import NotFound
from sipbridge.registry import StreamInfo

__all__ = ["StreamRoutes"]

logger = logging.getLogger("sipbridge.api.streams")


class StreamRoutes(PostRoutes):
    """The ``/stream/*`` handlers bound to one registry; :meth:`routes` lists them for a Mount."""

    schemas = {
        "/stream/find": (FindStreamsBody, list[StreamInfo]),
        "/stream/find_all": (EmptyBody, list[StreamInfo]),
        "/stream/terminate": (StreamKeyBody, StreamInfo),
    }

    def __init__(
        self, streams: StreamsAPI, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes)
        self._streams = streams

    def handlers(self) -> dict[str, Handler]:
        return {
            "/stream/find": self.find,
            "/stream/find_all": self.find_all,
            "/stream/terminate": self.terminate,
        }

    async def find(self, request: Request) -> Response:
        """``/stream/find``: the streams matching every given filter; 404 when none does."""
        wanted = to_stream_filter(decode_body(FIND_STREAMS_DECODER, await self._body(request)))
        streams = self._streams.find_streams(
            name=wanted.name, status=wanted.status, media_session_id=wanted.media_session_id
        )
        return _found(streams)

    async def find_all(self, request: Request) -> Response:
        """``/stream/find_all``: every stream; 404 when there is none."""
        decode_body(EMPTY_DECODER, await self._body(request))
        return _found(self._streams.all_streams())

    async def terminate(self, request: Request) -> Response:
        """``/stream/terminate``: stop a stream by ``mediaSessionId`` or ``name``.

        Its subscribers (pushes, players, recordings) end and the call publishing
        it is hung up; an ended stream answers as it is.
        """
        name, media_session_id = to_stream_key(
            decode_body(STREAM_KEY_DECODER, await self._body(request))
        )
        info = await self._streams.terminate_stream(name=name, media_session_id=media_session_id)
        logger.info("stream %s (%s) terminated: %s", info.name, info.media_session_id, info.status)
        return json_response(info)


def _found(streams: list[StreamInfo]) -> Response:
    if not streams:
        raise NotFound("no stream matched")
    return json_response(streams)
