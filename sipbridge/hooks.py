"""REST hooks: the gateway's events POSTed as JSON to the backend of each call's appKey.

Theory of operation
-------------------
WCS tells an application's backend about its calls and streams by POSTing
``CallStatusEvent`` and ``StreamStatusEvent`` JSON to ``<backend URL>/<event
name>``. :class:`HookSender` does the same from ``[hooks]``
(:class:`~sipbridge.settings.HooksSettings`): ``apps`` maps an ``appKey`` to its
backend URL, ``default_url`` takes the rest.

Nothing on a call's path waits for a backend::

    Call.set_status -> EventBus.publish (sync, never blocks)
        -> dispatcher task: route by appKey (no I/O)
            -> one bounded queue + one worker task per backend URL -> httpx POST

The dispatcher reads its own bus subscription and only appends to per-backend
queues. Each queue holds at most ``queue_size`` events; a full one drops its
oldest (``dropped`` counts them). Each backend's worker sends its events in
order, one at a time: a POST may take ``timeout`` seconds in all (connect,
send, answer); a 5xx answer, a timeout or a connection error is retried
``retries`` times, waiting ``retry_backoff`` seconds doubled each time (at most
``retry_backoff_max``). A 2xx delivers; any other answer (4xx, 3xx) is final.
One dead backend therefore delays only its own events, and only up to its bound.

``stop()`` lets the workers deliver what is queued for up to ``drain_timeout``
seconds (the calls' last FINISH events go out on shutdown), then cancels them
and closes the HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

import httpx
import msgspec

from sipbridge.events import Event, EventBus, EventBusClosed, EventSubscription
from sipbridge.settings import HooksSettings

__all__ = ["HookBackendStats", "HookSender", "hook_url"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

_encoder: Final = msgspec.json.Encoder()
_HEADERS: Final = {"content-type": "application/json", "user-agent": "sipbridge-hooks"}


def hook_url(backend_url: str, event: Event) -> str:
    """Where ``event`` is POSTed: WCS appends the event name to the backend URL."""
    return f"{backend_url.rstrip('/')}/{event.hook_method}"


class HookBackendStats(msgspec.Struct, kw_only=True):
    """Counters of one backend: events ``delivered`` (2xx), ``failed`` (given up),
    ``dropped`` (oldest out of a full queue), ``retries`` (POSTs repeated), ``queued``."""

    url: str
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


class _Backend:
    """One backend URL: its bounded queue, its worker task, its counters."""

    def __init__(self, url: str, max_queue: int) -> None:
        self.url = url
        self.max_queue = max_queue
        self.queue: deque[Event] = deque()
        self.stats = HookBackendStats(url=url)
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None

    def put(self, event: Event) -> None:
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:
                log.warning(
                    "hooks %s: queue full (%d), %d event(s) dropped so far",
                    self.url,
                    self.max_queue,
                    self.stats.dropped,
                )
        self.queue.append(event)
        self.idle.clear()
        self.ready.set()


class HookSender:
    """POSTs every event of ``bus`` to the backend of its appKey (module docstring).

    ``client`` (an ``httpx.AsyncClient``) may be injected; by default one is made
    at :meth:`start` and closed at :meth:`stop`. ``sleep`` waits between retries.
    """

    def __init__(
        self,
        bus: EventBus,
        settings: HooksSettings,
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self._client = client
        self._own_client = client is None
        self._sleep = sleep
        self._backends: dict[str, _Backend] = {}
        self._subscription: EventSubscription | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        #: Events whose appKey has no backend (nothing configured for it).
        self.unrouted = 0

    @property
    def enabled(self) -> bool:
        """Whether any backend is configured (else :meth:`start` does nothing)."""
        return bool(self.settings.apps) or self.settings.default_url is not None

    @property
    def running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    def stats(self) -> list[HookBackendStats]:
        """Counters of every backend an event was routed to."""
        result = []
        for backend in self._backends.values():
            backend.stats.queued = len(backend.queue)
            result.append(msgspec.structs.replace(backend.stats))
        return result

    async def start(self) -> None:
        """Subscribe to the bus and start routing; a no-op without any backend configured."""
        if self.running or not self.enabled:
            return
        if self._client is None:
            # trust_env=False: a proxy from the environment must not reroute the hooks.
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
            self._own_client = True
        # The dispatcher only routes: its own queue never fills faster than it empties.
        self._subscription = self.bus.subscribe(max_queue=max(self.settings.queue_size, 1000))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="hooks-dispatcher")

    async def stop(self, *, drain_timeout: float = 2.0) -> None:
        """Deliver what is queued for up to ``drain_timeout`` s, then cancel and close."""
        dispatcher, self._dispatcher = self._dispatcher, None
        subscription, self._subscription = self._subscription, None
        if dispatcher is not None:
            # Route what the bus still holds for us, then stop listening.
            if subscription is not None:
                while (event := subscription.get_nowait()) is not None:
                    self._route(event)
                subscription.close()
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        workers = [b for b in self._backends.values() if b.task is not None and not b.task.done()]
        if workers and drain_timeout > 0:
            await asyncio.wait(
                [asyncio.ensure_future(b.idle.wait()) for b in workers], timeout=drain_timeout
            )
        for backend in workers:
            assert backend.task is not None
            backend.task.cancel()
        for backend in workers:
            assert backend.task is not None
            with contextlib.suppress(asyncio.CancelledError):
                await backend.task
            backend.task = None
            if backend.queue:
                log.warning(
                    "hooks %s: %d event(s) not delivered at shutdown",
                    backend.url,
                    len(backend.queue),
                )
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    # -- internals ------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        with contextlib.suppress(EventBusClosed):
            while True:
                self._route(await subscription.get())

    def _route(self, event: Event) -> None:
        url = self.settings.url_for(event.appKey)
        if url is None:
            self.unrouted += 1
            return
        backend = self._backends.get(url)
        if backend is None:
            backend = self._backends[url] = _Backend(url, self.settings.queue_size)
        backend.put(event)
        if backend.task is None or backend.task.done():
            backend.task = asyncio.create_task(self._work(backend), name=f"hooks-{url}")

    async def _work(self, backend: _Backend) -> None:
        while True:
            if not backend.queue:
                backend.idle.set()
                backend.ready.clear()
                await backend.ready.wait()
                continue
            event = backend.queue[0]
            delivered = await self._deliver(backend, event)
            # The event may have been dropped from the front while it was being sent.
            if backend.queue and backend.queue[0] is event:
                backend.queue.popleft()
            if delivered:
                backend.stats.delivered += 1
            else:
                backend.stats.failed += 1

    async def _deliver(self, backend: _Backend, event: Event) -> bool:
        """POST ``event``, retrying as configured; True once a backend answered 2xx."""
        client = self._client
        assert client is not None
        url = hook_url(backend.url, event)
        body = _encoder.encode(event)
        settings = self.settings
        delay = settings.retry_backoff
        for attempt in range(settings.retries + 1):
            if attempt:
                backend.stats.retries += 1
                await self._sleep(delay)
                delay = min(delay * 2, settings.retry_backoff_max)
            try:
                # The overall deadline also bounds a server that trickles its answer
                # (httpx's own timeouts are per read).
                async with asyncio.timeout(settings.timeout):
                    response = await client.post(
                        url, content=body, headers=_HEADERS, timeout=settings.timeout
                    )
            except (TimeoutError, httpx.TimeoutException):
                reason = f"no answer within {settings.timeout:g} s"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status_code < 300:
                    return True
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    log.warning(
                        "hooks: %s answered %s to %s of call %s; not retried",
                        url,
                        reason,
                        event.hook_method,
                        event.callId,
                    )
                    return False
            log.info("hooks: %s: %s (attempt %d)", url, reason, attempt + 1)
        log.warning(
            "hooks: %s gave up on %s %s after %d attempt(s)",
            url,
            event.hook_method,
            event.callId,
            settings.retries + 1,
        )
        return False
