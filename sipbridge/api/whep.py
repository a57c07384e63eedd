"""WHEP: WebRTC playback of a stream (RFC 9725, WebRTC-HTTP Egress Protocol).

Theory of operation
-------------------
A player ``POST``\\ s its SDP offer (``Content-Type: application/sdp``, recvonly
audio and video, every ICE candidate already gathered: we do not do trickle
ICE) to the *WHEP endpoint* ``/whep/{streamName}`` (RFC 9725 §4.2). The
:class:`~sipbridge.api.protocol.ViewersAPI` (``webrtc.whep.WhepSessions``)
answers it; we send that SDP answer back as ``201 Created`` with the *WHEP
session* URL in ``Location`` (``/whep/{streamName}/{sessionId}``, a relative
reference the client resolves against the endpoint URL). ``DELETE`` on the
session URL ends it (§4.3.3, answered ``200`` with the viewer's final
counters). ``PATCH`` (trickle ICE and ICE restarts, §4.3.1) is not implemented:
``405`` with ``Allow``, as the RFC requires of a server without them.

Players on other origins (a page on a web server, ``file://`` test pages) must
work, so every answer under ``/whep`` carries CORS headers (Fetch standard),
including the errors of routing and of the bearer-token check, and ``OPTIONS``
(the browser's preflight, never authenticated) answers ``204``:
:class:`WhepCorsMiddleware` adds the headers, the routes answer ``OPTIONS``.

Errors are the REST API's JSON bodies (``{"status": ..., "error": "..."}``);
WHEP clients show the response text, and the ``error`` reads well there.
The viewer limit is the session factory's ``Conflict``: ``409``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sipbridge.api.endpoint import DEFAULT_MAX_BODY_BYTES, json_endpoint, read_body
from sipbridge.api.errors import error_response, json_response
from sipbridge.api.protocol import ViewersAPI
from sipbridge.errors import InvalidRequest, NotFound

__all__ = [
    "CORS_HEADERS",
    "SDP_MEDIA_TYPE",
    "WHEP_PREFIX",
    "WhepCorsMiddleware",
    "WhepRoutes",
]

logger = logging.getLogger("sipbridge.api.whep")

WHEP_PREFIX: Final = "/whep"
SDP_MEDIA_TYPE: Final = "application/sdp"

ENDPOINT_METHODS: Final = "POST, OPTIONS"
SESSION_METHODS: Final = "DELETE, OPTIONS"
# Routed to the handlers, which answer those they do not serve (HEAD comes with GET).
_ANY: Final = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

#: On every answer under ``/whep``. ``*`` is safe here: the bearer token travels in a
#: header the page sets itself, never in ambient credentials (cookies) a foreign page
#: could borrow, and ``Authorization`` must be named: the ``*`` wildcard of
#: Access-Control-Allow-Headers never covers it (Fetch standard, CORS protocol).
CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, WWW-Authenticate",
    "Access-Control-Max-Age": "600",
}


class WhepCorsMiddleware:
    """ASGI middleware adding :data:`CORS_HEADERS` to every answer under ``prefixes``.

    It wraps the bearer-token check, so a 401 reaches a cross-origin player as a
    readable answer instead of an opaque network error.
    """

    def __init__(self, app: ASGIApp, *, prefixes: Iterable[str] = (WHEP_PREFIX,)) -> None:
        self._app = app
        self._prefixes = tuple(prefix.rstrip("/") for prefix in prefixes)

    def _applies(self, path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self._prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope["path"]):
            await self._app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in CORS_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self._app(scope, receive, send_with_cors)


class WhepRoutes:
    """The WHEP endpoint and session routes bound to one :class:`ViewersAPI`."""

    def __init__(
        self, viewers: ViewersAPI, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        self._viewers = viewers
        self._max_body_bytes = max_body_bytes

    def routes(self) -> list[BaseRoute]:
        """``/whep/{stream_name}`` (POST, OPTIONS) and ``.../{session_id}`` (DELETE,
        OPTIONS); the handlers answer every other method 405 with ``Allow`` themselves,
        so ``Allow`` lists what works, in a stable order."""
        return [
            Route(WHEP_PREFIX + "/{stream_name}", json_endpoint(self.endpoint), methods=_ANY),
            Route(
                WHEP_PREFIX + "/{stream_name}/{session_id}",
                json_endpoint(self.session),
                methods=_ANY,
            ),
        ]

    async def endpoint(self, request: Request) -> Response:
        """``POST /whep/{streamName}``: an SDP offer in, ``201`` + SDP answer + ``Location``."""
        if request.method == "OPTIONS":
            return Response(
                status_code=204,
                headers={"Allow": ENDPOINT_METHODS, "Accept-Post": SDP_MEDIA_TYPE},
            )
        if request.method != "POST":
            return _method_not_allowed(ENDPOINT_METHODS)
        stream_name = request.path_params["stream_name"]
        content_type = request.headers.get("content-type")
        if not _is_sdp(content_type):
            shown = content_type[:60] if content_type else "none"
            return error_response(
                415,
                f"the offer must be sent as Content-Type: {SDP_MEDIA_TYPE} (got {shown})",
                headers={"Accept-Post": SDP_MEDIA_TYPE},
            )
        offer = _offer_text(await read_body(request, self._max_body_bytes))
        answer = await self._viewers.create(stream_name, offer)
        location = (
            f"{request.scope.get('root_path', '')}{WHEP_PREFIX}/"
            f"{quote(answer.stream_name, safe='')}/{quote(answer.session_id, safe='')}"
        )
        logger.info("WHEP session %s plays stream %s", answer.session_id, answer.stream_name)
        return Response(
            content=answer.sdp,
            status_code=201,
            headers={"Location": location},
            media_type=SDP_MEDIA_TYPE,
        )

    async def session(self, request: Request) -> Response:
        """``DELETE /whep/{streamName}/{sessionId}``: end the session (200, its viewer info)."""
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": SESSION_METHODS})
        if request.method == "PATCH":
            return _method_not_allowed(
                SESSION_METHODS,
                "trickle ICE and ICE restarts are not supported: "
                "gather every candidate before POSTing the offer",
            )
        if request.method != "DELETE":
            return _method_not_allowed(SESSION_METHODS)
        stream_name = request.path_params["stream_name"]
        session_id = request.path_params["session_id"]
        info = self._viewers.get(session_id)
        if info is None or info.stream_name != stream_name:
            raise NotFound(f"no WHEP session {session_id!r} playing stream {stream_name!r}")
        final = await self._viewers.delete(session_id)
        logger.info("WHEP session %s of stream %s deleted", session_id, stream_name)
        return json_response(final)


def _method_not_allowed(allow: str, message: str = "method not allowed") -> Response:
    """405 with ``Allow`` (RFC 9110 §15.5.6)."""
    return error_response(405, message, headers={"Allow": allow})


def _is_sdp(content_type: str | None) -> bool:
    """True for ``application/sdp``, with parameters or not, in any case (RFC 9110 §8.3.1)."""
    return (content_type or "").partition(";")[0].strip().lower() == SDP_MEDIA_TYPE


def _offer_text(body: bytes) -> str:
    """The SDP offer in ``body``; :class:`InvalidRequest` (400) when it is not an SDP."""
    if not body.strip():
        raise InvalidRequest("empty SDP offer")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the SDP offer is not UTF-8 (byte {exc.start})") from None
    # RFC 8866 §5: the first line of a session description is "v=0".
    if not text.lstrip("\ufeff").startswith("v=0"):
        raise InvalidRequest("not an SDP offer: it must start with v=0 (RFC 8866 §5)")
    return text.lstrip("\ufeff")
