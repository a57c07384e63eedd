"""The REST service: the gateway and its Starlette app on uvicorn, with uvloop.

The gateway's lifetime is the ASGI lifespan: it starts before the first request
is served and, on SIGTERM/SIGINT (uvicorn's graceful shutdown), every recording
is finished (files complete, under their final names), then every call is hung
up and every WebRTC viewer and push closed before the process exits.

uvicorn waits for every open response before it runs the lifespan's shutdown,
and an ``/events`` feed never ends by itself: :class:`GatewayServer` ends the
feeds first (:meth:`~sipbridge.api.events.EventFeed.close`), so a console left open does not
hold a shutdown up for the whole graceful timeout.

Under systemd (``Type=notify``, docs/operations.md) :func:`serve` tells the
service manager ``READY=1`` once the gateway runs *and* uvicorn listens,
``STOPPING=1`` as the shutdown begins, and ``WATCHDOG=1`` from the event loop
(:mod:`sipbridge.systemd`). A stop is bounded by ``[service] stop_timeout``
counted from the signal: the gateway's stop gets what remains of it (less
:data:`EXIT_RESERVE` for the last steps); if that runs out the service logs
it and exits with :data:`STOP_TIMEOUT_EXIT_STATUS`. A :class:`StopDeadline`
thread enforces the whole bound even when the event loop itself is stuck or a
worker thread holds the interpreter's exit up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from sipbridge.api.app import create_app
from sipbridge.api.events import EventFeed
from sipbridge.gateway import Gateway
from sipbridge.logs import configure_logging, register_secret
from sipbridge.metrics import GatewayMetrics
from sipbridge.settings import Settings
from sipbridge.systemd import SystemdNotifier, Watchdog

__all__ = [
    "EXIT_RESERVE",
    "STOP_TIMEOUT_EXIT_STATUS",
    "GatewayServer",
    "StopDeadline",
    "build_app",
    "run",
    "serve",
    "stop_within",
]

log = logging.getLogger(__name__)

#: The exit status of a stop that overran ``[service] stop_timeout``.
STOP_TIMEOUT_EXIT_STATUS = 1
#: Seconds of ``stop_timeout`` kept back from the gateway's stop for what follows it
#: (uvicorn's last steps, the loop's and the interpreter's exit).
EXIT_RESERVE = 1.0
#: uvicorn's wait for open responses (s): at most this, at most half the stop's bound.
GRACEFUL_HTTP_TIMEOUT = 10


class StopDeadline:
    """The bound on one stop: ``timeout`` seconds from :meth:`begin` (the signal).

    :meth:`remaining` tells the lifespan what is left for the gateway's stop.
    With ``on_expiry`` (the process's own run: :func:`run`), :meth:`begin` also
    starts a daemon timer thread that calls it when the time is up, whether or
    not the event loop still turns: the last resort against a stuck loop or a
    worker thread that holds the interpreter's exit up.
    """

    def __init__(
        self,
        timeout: float,
        *,
        on_expiry: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.started_at: float | None = None
        #: Set when the gateway's stop was cut short by the bound.
        self.missed = False
        self._on_expiry = on_expiry
        self._clock = clock
        self._timer: threading.Timer | None = None

    def begin(self, at: float | None = None) -> None:
        """Start counting (idempotent) from ``at`` (a reading of the clock) or now."""
        if self.started_at is not None:
            return
        self.started_at = self._clock() if at is None else at
        if self._on_expiry is not None:
            self._timer = threading.Timer(self.remaining(), self._on_expiry)
            self._timer.name = "sipbridge-stop-deadline"
            self._timer.daemon = True
            self._timer.start()

    def remaining(self) -> float:
        """Seconds left (the whole ``timeout`` before :meth:`begin`), never negative."""
        if self.started_at is None:
            return self.timeout
        return max(0.0, self.started_at + self.timeout - self._clock())

    def cancel(self) -> None:
        """Disarm the timer thread (in-process runs: tests, embedding)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def stop_within(gateway: Gateway, deadline: StopDeadline | None) -> None:
    """``gateway.stop()``, cut short when ``deadline`` leaves no more time for it
    (logged, and recorded in ``deadline.missed``)."""
    if deadline is None:
        await gateway.stop()
        return
    budget = max(0.0, deadline.remaining() - EXIT_RESERVE)
    scope = asyncio.timeout(budget)
    try:
        async with scope:
            await gateway.stop()
    except TimeoutError:
        if not scope.expired():
            raise
        deadline.missed = True
        log.error(
            "stop: the gateway did not stop within %.2f s ([service] stop_timeout = %g s); "
            "exiting with status %d",
            budget,
            deadline.timeout,
            STOP_TIMEOUT_EXIT_STATUS,
        )


def build_app(
    gateway: Gateway, settings: Settings, *, deadline: StopDeadline | None = None
) -> Starlette:
    """The REST app whose lifespan starts and stops ``gateway`` (the stop bounded by
    ``deadline`` when given)."""
    metrics = GatewayMetrics(gateway)
    app = create_app(
        gateway,
        api_token=settings.http.api_token,
        streams=gateway.streams,
        pushes=gateway.pushes,
        viewers=gateway.webrtc,
        recordings=gateway.recordings,
        metrics=metrics,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        await metrics.start()
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
            active, recording = _activity(gateway)
            log.info(
                "stopping: finishing %d recording(s), hanging up %d call(s)", recording, active
            )
            await metrics.stop()
            await stop_within(gateway, deadline)

    app.router.lifespan_context = lifespan
    return app


def _activity(gateway: Gateway) -> tuple[int, int]:
    """(calls not ended, recordings not finished)."""
    active = [c for c in gateway.all_calls() if not c.status.is_final]
    recording = [r for r in gateway.recordings.find_all() if not r.status.is_final]
    return len(active), len(recording)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once it listens (the lifespan's start-up
    done) and ``on_shutdown`` (e.g. ending ``/events`` feeds) as its shutdown begins,
    before it waits for the open responses.

    :attr:`exit_requested_at` is the :func:`time.monotonic` reading of the first stop
    signal, where the stop's bound counts from.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_shutdown: Callable[[], None],
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown
        self._on_started = on_started
        self.exit_requested_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_requested_at is None:
            self.exit_requested_at = time.monotonic()
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


async def serve(
    settings: Settings,
    *,
    notifier: SystemdNotifier | None = None,
    deadline: StopDeadline | None = None,
) -> int:
    """Run the service until a shutdown signal; returns the exit status: 0, or
    :data:`STOP_TIMEOUT_EXIT_STATUS` when the stop overran ``[service] stop_timeout``.

    ``notifier`` defaults to the one ``$NOTIFY_SOCKET`` names (none outside systemd).
    """
    if settings.http.api_token:
        register_secret(settings.http.api_token)
    notifier = notifier if notifier is not None else SystemdNotifier.from_environ()
    deadline = deadline if deadline is not None else StopDeadline(settings.service.stop_timeout)
    # Pinging starts before the gateway does: a slow start must not look like a hang.
    watchdog = Watchdog(notifier)
    watchdog.start()
    gateway = Gateway(settings)
    app = build_app(gateway, settings, deadline=deadline)
    # `kill -USR2 PID` (systemd: `systemctl kill -s USR2 sipbridge`) toggles the SIP trace.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR2, lambda: gateway.set_sip_trace(not gateway.sip_trace)
        )
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(
            1, min(GRACEFUL_HTTP_TIMEOUT, int(settings.service.stop_timeout // 2))
        ),
    )
    events: EventFeed = app.state.events

    def started() -> None:
        if settings.service.gc_freeze:
            freeze_startup_objects()
        notifier.ready(
            f"serving: REST http://{settings.http.host}:{settings.http.port}, "
            f"SIP port {gateway.sip_port}"
        )

    def stopping() -> None:
        deadline.begin(server.exit_requested_at)
        active, recording = _activity(gateway)
        notifier.stopping(f"stopping: {active} call(s), {recording} recording(s)")
        events.close()

    server = GatewayServer(config, on_shutdown=stopping, on_started=started)
    try:
        await server.serve()
    finally:
        await watchdog.stop()
        notifier.close()
    return STOP_TIMEOUT_EXIT_STATUS if deadline.missed else 0


def freeze_startup_objects() -> int:
    """Collect once, then move every object still alive out of the garbage collector's
    generations (:func:`gc.freeze`); returns how many were frozen.

    What start-up loaded (modules, settings, the app, the gateway's fixed parts)
    lives as long as the process, yet every full collection would walk it again.
    Frozen, it is never scanned: collections during calls see only the objects the
    calls make, so their pauses, which hold the event loop and with it every RTP
    socket, stay short (docs/performance.md, "Garbage collection").
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("gc: %d start-up objects frozen out of collections", frozen)
    return frozen


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    """Installed before uvicorn: it re-raises the stop signal once it has shut down
    gracefully, and this handler turns that into a normal exit with status 0."""
    del signum, frame


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(OSError, ValueError):
            handler.flush()


def _exit_now(status: int) -> None:
    """Exit at once: no waiting for worker threads a cut-short stop may have left."""
    _flush_logs()
    os._exit(status)


def _stop_overran(timeout: float) -> None:
    log.critical(
        "stop: still running %g s after the signal ([service] stop_timeout); "
        "exiting with status %d",
        timeout,
        STOP_TIMEOUT_EXIT_STATUS,
    )
    _exit_now(STOP_TIMEOUT_EXIT_STATUS)


def run(settings: Settings) -> int:
    """Configure logging and run :func:`serve` on uvloop (the stock loop if missing);
    returns the exit status, and never outlives ``[service] stop_timeout`` after SIGTERM."""
    configure_logging(settings.log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_quietly)
    timeout = settings.service.stop_timeout
    deadline = StopDeadline(timeout, on_expiry=lambda: _stop_overran(timeout))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        status = asyncio.run(serve(settings, deadline=deadline))
    else:
        status = uvloop.run(serve(settings, deadline=deadline))
    if status != 0:
        _exit_now(status)
    return status
