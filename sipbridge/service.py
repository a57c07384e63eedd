"""The REST service: the gateway and its Starlette app on uvicorn, with uvloop.

The gateway's lifetime is the ASGI lifespan: it starts before the first request
is served and, on SIGTERM/SIGINT (uvicorn's graceful shutdown), every call is
hung up before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from sipbridge.api.app import create_app
from sipbridge.gateway import Gateway
from sipbridge.logs import configure_logging, register_secret
from sipbridge.settings import Settings

__all__ = ["build_app", "run", "serve"]

log = logging.getLogger(__name__)


def build_app(gateway: Gateway, settings: Settings) -> Starlette:
    """The REST app whose lifespan starts and stops ``gateway``."""
    app = create_app(
        gateway,
        api_token=settings.http.api_token,
        streams=gateway.streams,
        pushes=gateway.pushes,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        log.info(
            "sipbridge ready: REST http://%s:%d/rest-api, SIP port %d",
            settings.http.host,
            settings.http.port,
            gateway.sip_port,
        )
        try:
            yield
        finally:
            active = [c for c in gateway.all_calls() if not c.status.is_final]
            log.info("stopping: hanging up %d call(s)", len(active))
            await gateway.stop()

    app.router.lifespan_context = lifespan
    return app


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
    await uvicorn.Server(config).serve()


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
