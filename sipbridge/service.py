"""The REST service: the gateway and its Starlette app on uvicorn, with uvloop.

The gateway's lifetime is the ASGI lifespan: it starts before the first request
is served and, on SIGTERM/SIGINT (uvicorn's graceful shutdown), every recording
is finished (files complete, under their final names), then every call is hung
up and every WebRTC viewer and push closed before the process exits.

uvicorn waits for every open response before it runs the lifespan's shutdown,
and an ``/events`` feed never ends by itself: :class:`GatewayServer` ends the
feeds first (:meth:`~sipbridge.api.events.EventFeed.close`), so a console left open does not
hold a shutdown up for the whole graceful timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from sipbridge.api.app import create_app
from sipbridge.api.events import EventFeed
from sipbridge.gateway import Gateway
from sipbridge.logs import configure_logging, register_secret
from sipbridge.settings import Settings

__all__ = ["GatewayServer", "build_app", "run", "serve"]

log = logging.getLogger(__name__)


def build_app(gateway: Gateway, settings: Settings) -> Starlette:
    """The REST app whose lifespan starts and stops ``gateway``."""
    app = create_app(
        gateway,
        api_token=settings.http.api_token,
        streams=gateway.streams,
        pushes=gateway.pushes,
        viewers=gateway.webrtc,
        recordings=gateway.recordings,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        base = f"http://{settings.http.host}:{settings.http.port}"
        log.info(
            "sipbridge ready: REST %s/rest-api, console %s/, WHEP %s/whep/NAME, SIP port %d",
            base,
            base,
            base,
            gateway.sip_port,
        )
        try:
            yield
        finally:
            active = [c for c in gateway.all_calls() if not c.status.is_final]
            recording = [r for r in gateway.recordings.find_all() if not r.status.is_final]
            log.info(
                "stopping: finishing %d recording(s), hanging up %d call(s)",
                len(recording),
                len(active),
            )
            await gateway.stop()

    app.router.lifespan_context = lifespan
    return app


class GatewayServer(uvicorn.Server):
    """uvicorn's server, calling ``on_shutdown`` (e.g. ending ``/events`` feeds) as its
    shutdown begins, before it waits for the open responses."""

    def __init__(self, config: uvicorn.Config, *, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


async def serve(settings: Settings) -> None:
    """Run the service until a shutdown signal."""
    if settings.http.api_token:
        register_secret(settings.http.api_token)
    gateway = Gateway(settings)
    app = build_app(gateway, settings)
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    events: EventFeed = app.state.events
    await GatewayServer(config, on_shutdown=events.close).serve()


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    """Installed before uvicorn: it re-raises the stop signal once it has shut down
    gracefully, and this handler turns that into a normal exit with status 0."""
    del signum, frame


def run(settings: Settings) -> None:
    """Configure logging and run :func:`serve` on uvloop (the stock loop if missing)."""
    configure_logging(settings.log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_quietly)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
