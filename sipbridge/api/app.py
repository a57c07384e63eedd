"""The Starlette application of the REST API, WHEP, the event feed and the pages.

:func:`create_app` mounts each route module under ``/rest-api`` (WCS's prefix;
clients build ``restUrl + "/call/startup"``). Route modules stay small and sit
side by side: ``calls.py``, ``streams.py`` (mounted when a stream registry is
given), ``pushes.py`` (when a push manager is given), ``recordings.py``
(``/stream/startRecording``, ``/stream/stopRecording``, ``/recorder/*``, when a
recording manager is given). Beside the mount: ``whep.py`` (``/whep/*``, when the WebRTC viewers are
given), ``events.py`` (``GET /events``) and ``pages.py`` (``GET /``,
``/player``, ``/web/*``).

The application owns no resources: the gateway's lifetime belongs to whoever
created it (the service's lifespan). Its one piece of state is the event feed
(``app.state.events``), whose :meth:`~sipbridge.api.events.EventFeed.close`
the server calls before shutting down so open feeds do not hold it up.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from sipbridge.api.auth import EXEMPT_PATHS, PAGE_PATHS, PROTECTED_PREFIXES, BearerAuthMiddleware
from sipbridge.api.calls import CallRoutes
from sipbridge.api.endpoint import DEFAULT_MAX_BODY_BYTES
from sipbridge.api.errors import (
    INTERNAL_ERROR,
    error_response,
    http_exception_handler,
    json_response,
)
from sipbridge.api.events import EventFeed
from sipbridge.api.login import LoginRoutes, SessionCookie
from sipbridge.api.openapi import OPENAPI_PATH, openapi_route
from sipbridge.api.pages import ASSET_PREFIX, PageRoutes
from sipbridge.api.protocol import GatewayAPI, PushesAPI, StreamsAPI, ViewersAPI
from sipbridge.api.pushes import PushRoutes
from sipbridge.api.recordings import RecordingRoutes, RecordingsAPI
from sipbridge.api.streams import StreamRoutes
from sipbridge.api.whep import WhepCorsMiddleware, WhepRoutes
from sipbridge.metrics import GatewayMetrics

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/rest-api"
#: Prometheus scrapes here (``metrics=``); behind the API token like ``/rest-api``.
METRICS_PATH = "/metrics"


async def health(request: Request) -> Response:
    """``GET /rest-api/health``: ``{"status": "ok"}`` while the app serves (readiness check)."""
    return json_response({"status": "ok"})


def _metrics_routes(metrics: GatewayMetrics | None) -> list[BaseRoute]:
    if metrics is None:
        return []

    async def scrape(request: Request) -> Response:
        # On the loop: the collector reads the gateway, which is not thread-safe.
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return [Route(METRICS_PATH, scrape, methods=["GET"])]


async def _server_error(request: Request, exc: Exception) -> Response:
    # Last resort for errors outside the endpoints (e.g. in a middleware); Starlette
    # logs the traceback and re-raises it to the server after sending this.
    return error_response(500, INTERNAL_ERROR)


def create_app(
    gateway: GatewayAPI,
    *,
    api_token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    streams: StreamsAPI | None = None,
    pushes: PushesAPI | None = None,
    viewers: ViewersAPI | None = None,
    recordings: RecordingsAPI | None = None,
    pages: bool = True,
    metrics: GatewayMetrics | None = None,
) -> Starlette:
    """The REST API for ``gateway``, with WHEP, ``/events`` and the pages.

    ``api_token``: when set (not ``None``, not ``""``), requests under ``/rest-api``
    (but the health check and ``/rest-api/openapi.json``), ``/whep`` and ``/events``
    (but ``OPTIONS``), and the pages, need ``Authorization: Bearer <api_token>`` or
    the session cookie of ``POST /login`` (``sipbridge.api.login``).
    ``max_body_bytes``: larger request bodies are answered 413.
    ``streams``: the stream registry behind ``/stream/*`` (e.g. a
    :class:`~sipbridge.registry.StreamRegistry`); without it those paths are 404.
    ``pushes``: the push manager behind ``/push/*`` (e.g. a
    :class:`~sipbridge.pushes.PushManager`); without it those paths are 404.
    ``viewers``: the WebRTC viewers behind ``/whep/*`` (``webrtc.whep.WhepSessions``);
    without it those paths are 404 and ``/events`` lists no viewers.
    ``recordings``: the recording manager behind ``/stream/startRecording``,
    ``/stream/stopRecording`` and ``/recorder/*`` (the gateway's
    :class:`~sipbridge.recording.RecordingManager`); without it those paths are 404
    and ``/events`` lists no recordings.
    ``pages``: serve the console (``/``), the player (``/player``) and their files.
    ``metrics``: the gateway's Prometheus metrics, served as ``GET /metrics``
    (:class:`~sipbridge.metrics.GatewayMetrics`; docs/metrics.md), which then needs
    the token too; without it that path is 404.
    """
    # First listed is outermost: the CORS headers go on the token check's 401s too.
    middleware: list[Middleware] = [Middleware(WhepCorsMiddleware)]
    stream_routes: list[BaseRoute] = []
    if streams is not None:
        stream_routes = StreamRoutes(streams, max_body_bytes=max_body_bytes).routes()
    push_routes: list[BaseRoute] = []
    if pushes is not None:
        push_routes = PushRoutes(pushes, max_body_bytes=max_body_bytes).routes()
    recording_routes: list[BaseRoute] = []
    if recordings is not None:
        recording_routes = RecordingRoutes(recordings, max_body_bytes=max_body_bytes).routes()
    whep_routes: list[BaseRoute] = []
    if viewers is not None:
        whep_routes = WhepRoutes(viewers, max_body_bytes=max_body_bytes).routes()
    events = EventFeed(
        gateway, streams=streams, pushes=pushes, viewers=viewers, recordings=recordings
    )
    page_routes = PageRoutes().routes() if pages else []
    if api_token:
        # The OpenAPI document holds no secret: tools fetch it before they hold a token.
        exempt = (*EXEMPT_PATHS, API_PREFIX + OPENAPI_PATH)
        protected: tuple[str, ...] = (*PROTECTED_PREFIXES, METRICS_PATH)
        session = SessionCookie(api_token)
        if pages:
            # The pages sit behind the token too; browsers log in by form (login.py).
            protected = (*protected, ASSET_PREFIX)
            page_routes = [*LoginRoutes(session).routes(), *page_routes]
        middleware.append(
            Middleware(
                BearerAuthMiddleware,
                token=api_token,
                protected_prefixes=protected,
                exempt_paths=exempt,
                page_paths=PAGE_PATHS if pages else (),
                session=session,
            )
        )
    app = Starlette(
        routes=[
            Mount(
                API_PREFIX,
                routes=[
                    Route("/health", health, methods=["GET"]),
                    openapi_route(),
                    *CallRoutes(gateway, max_body_bytes=max_body_bytes).routes(),
                    *stream_routes,
                    *push_routes,
                    *recording_routes,
                ],
            ),
            *whep_routes,
            *events.routes(),
            *_metrics_routes(metrics),
            *page_routes,
        ],
        middleware=middleware,
        exception_handlers={
            HTTPException: http_exception_handler,
            Exception: _server_error,
        },
    )
    app.state.gateway = gateway
    app.state.streams = streams
    app.state.pushes = pushes
    app.state.viewers = viewers
    app.state.recordings = recordings
    app.state.events = events
    return app
