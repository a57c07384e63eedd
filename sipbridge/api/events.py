"""``GET /events``: the gateway's state as server-sent events (HTML Living Standard §9.2).

Theory of operation
-------------------
A client opens ``/events`` (``?interval=SECONDS``, default 1, between
:data:`MIN_INTERVAL` and :data:`MAX_INTERVAL`) and reads ``text/event-stream``:
a ``retry:`` hint, then at once and every ``interval`` one ``event: state``
whose ``data`` is one line of JSON::

    {"calls": [Call...], "streams": [Stream...], "pushes": [Push...],
     "viewers": [Viewer...], "recordings": [Recording...], "time": <Unix ms>}

encoded by msgspec exactly as the REST answers are (the same Structs).

Between the states, every status change goes out as it happens, from the
gateway's :class:`~sipbridge.events.EventBus`: ``event: callStatus`` with a
``CallStatusEvent`` and ``event: streamStatus`` with a ``StreamStatusEvent`` as
``data`` (the JSON the REST hooks POST). Each feed has its own bounded bus
subscription: a client that reads too slowly loses the oldest events, never
slows a call. When
``interval`` is longer than :data:`KEEPALIVE`, comment lines (``: keepalive``)
go out in between so proxies and the client's reader see the connection alive.

Each response is one coroutine: it writes, then waits for whichever comes first
of the next tick, the client's ``http.disconnect`` (one pending ``receive()``)
or :meth:`EventFeed.close` (server shutdown: uvicorn waits for open responses
before its lifespan ends, so an endless one must be ended first). It starts no
task that outlives it: the waits are cancelled and awaited on every exit.

Browsers' ``EventSource`` cannot send an ``Authorization`` header; when an API
token is configured the pages read this feed with ``fetch()`` and a streaming
reader instead (see ``sipbridge/web/api.js``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from sipbridge.api.endpoint import json_endpoint
from sipbridge.api.protocol import GatewayAPI, PushesAPI, StreamsAPI, ViewersAPI
from sipbridge.api.recordings import RecordingsAPI
from sipbridge.errors import InvalidRequest
from sipbridge.events import (
    CallStatusEvent,
    Event,
    EventBus,
    EventBusClosed,
    EventSubscription,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "EVENTS_PATH",
    "KEEPALIVE",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "EventFeed",
    "parse_interval",
]

logger = logging.getLogger("sipbridge.api.events")

EVENTS_PATH: Final = "/events"
DEFAULT_INTERVAL: Final = 1.0
MIN_INTERVAL: Final = 0.2
MAX_INTERVAL: Final = 300.0
#: Longest silence on an open feed: a comment line goes out at least this often.
KEEPALIVE: Final = 15.0
#: How long an ``EventSource`` waits before reconnecting (the ``retry:`` field, in ms).
RETRY_MS: Final = 2000
#: Status events a feed may hold for a slow client before it loses the oldest.
EVENT_QUEUE: Final = 1000

KEEPALIVE_CHUNK: Final = b": keepalive\n\n"
_encoder = msgspec.json.Encoder()

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def parse_interval(value: str | None) -> float:
    """The ``interval`` query parameter in seconds; :class:`InvalidRequest` when out of range."""
    if value is None or value == "":
        return DEFAULT_INTERVAL
    try:
        interval = float(value)
    except ValueError:
        interval = math.nan
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:  # NaN fails both comparisons
        raise InvalidRequest(
            f"interval: expected seconds between {MIN_INTERVAL:g} and {MAX_INTERVAL:g}, "
            f"got {value[:40]!r}",
            field="interval",
        )
    return interval


class EventFeed:
    """The ``/events`` route: snapshots of calls, streams, pushes, viewers and recordings,
    and the status events of ``bus`` as they come.

    ``streams``, ``pushes``, ``viewers`` and ``recordings`` may be ``None`` (their
    lists are then empty). ``bus`` defaults to the gateway's ``event_bus`` when it
    has one (:class:`~sipbridge.gateway.Gateway` does); without a bus only states
    are sent. ``sleep`` and ``clock`` are injected so tests need not wait.
    """

    def __init__(
        self,
        gateway: GatewayAPI,
        *,
        streams: StreamsAPI | None = None,
        pushes: PushesAPI | None = None,
        viewers: ViewersAPI | None = None,
        recordings: RecordingsAPI | None = None,
        bus: EventBus | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        self._gateway = gateway
        if bus is None:
            found = getattr(gateway, "event_bus", None)
            bus = found if isinstance(found, EventBus) else None
        self._bus = bus
        self._streams = streams
        self._pushes = pushes
        self._viewers = viewers
        self._recordings = recordings
        self._sleep = sleep
        self._clock = clock
        # One future per open feed, on that feed's loop (an asyncio.Event would bind
        # to the first loop that waits on it; test clients run a loop per request).
        self._closing: set[asyncio.Future[None]] = set()
        self._closed = False
        self.open_feeds = 0

    def routes(self) -> list[BaseRoute]:
        """``GET /events`` (HEAD too, as Starlette adds it to GET routes)."""
        return [Route(EVENTS_PATH, json_endpoint(self.endpoint), methods=["GET"])]

    def close(self) -> None:
        """End every open feed (server shutdown); feeds opened afterwards end at once."""
        self._closed = True
        for closing in self._closing:
            if not closing.done():
                closing.set_result(None)

    def state(self) -> bytes:
        """One ``event: state`` block, JSON on one ``data:`` line (msgspec emits no newline)."""
        payload = {
            "calls": self._gateway.all_calls(),
            "streams": self._streams.all_streams() if self._streams is not None else [],
            "pushes": self._pushes.all_pushes() if self._pushes is not None else [],
            "viewers": list(self._viewers.viewers()) if self._viewers is not None else [],
            "recordings": self._recordings.find_all() if self._recordings is not None else [],
            "time": round(self._clock() * 1000),
        }
        return b"event: state\ndata: " + _encoder.encode(payload) + b"\n\n"

    @staticmethod
    def status_event(event: Event) -> bytes:
        """One ``event: callStatus`` / ``event: streamStatus`` block (JSON on one line)."""
        kind = b"callStatus" if isinstance(event, CallStatusEvent) else b"streamStatus"
        return b"event: " + kind + b"\ndata: " + _encoder.encode(event) + b"\n\n"

    async def endpoint(self, request: Request) -> Response:
        """``GET /events?interval=SECONDS``: 400 for a bad interval, else the endless feed."""
        interval = parse_interval(request.query_params.get("interval"))
        return _EventStream(self, interval)

    async def run(self, interval: float, receive: Receive, send: Send) -> None:
        """Write the feed to ``send`` until the client leaves or :meth:`close` (module doc)."""
        # Sub-ticks of at most KEEPALIVE seconds; every `per_state`-th one carries a state.
        per_state = max(1, math.ceil(interval / KEEPALIVE))
        period = interval / per_state
        disconnect = asyncio.ensure_future(_disconnected(receive))
        closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            closing.set_result(None)
        self._closing.add(closing)
        tick: asyncio.Future[None] | None = None
        # Subscribed before the first state, so no change after it is missed.
        subscription: EventSubscription | None = None
        if self._bus is not None:
            subscription = self._bus.subscribe(max_queue=EVENT_QUEUE)
        next_event: asyncio.Future[Event] | None = None
        self.open_feeds += 1
        try:
            await _body(send, f"retry: {RETRY_MS}\n\n".encode())
            ticks = 0
            while True:
                if tick is None or tick.done():
                    if ticks % per_state == 0:
                        try:
                            chunk = self.state()
                        except Exception:
                            logger.exception("/events: cannot take a snapshot; feed closed")
                            await _body(send, b": internal error\n\n", more=False)
                            return
                    else:
                        chunk = KEEPALIVE_CHUNK
                    await _body(send, chunk)
                    ticks += 1
                    tick = asyncio.ensure_future(self._sleep(period))
                if next_event is None and subscription is not None and not subscription.closed:
                    next_event = asyncio.ensure_future(subscription.get())
                waits: set[asyncio.Future[Any]] = {disconnect, closing, tick}
                if next_event is not None:
                    waits.add(next_event)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if disconnect.done():
                    logger.debug("/events: client went away")
                    return
                if closing.done():
                    await _body(send, b"", more=False)
                    return
                if next_event is not None and next_event.done():
                    done, next_event = next_event, None
                    error = done.exception()
                    if error is None:
                        await _body(send, self.status_event(done.result()))
                    elif not isinstance(error, EventBusClosed):
                        raise error
        except OSError:
            # The server could not write: the client is gone (uvicorn's ClientDisconnected).
            logger.debug("/events: client went away while writing")
        finally:
            self.open_feeds -= 1
            self._closing.discard(closing)
            waiters: tuple[asyncio.Future[Any] | None, ...] = (
                disconnect,
                closing,
                tick,
                next_event,
            )
            for waiter in waiters:
                if waiter is not None and not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            if subscription is not None:
                subscription.close()


class _EventStream(Response):
    """The ``text/event-stream`` answer: headers, then :meth:`EventFeed.run`.

    ``Response.__init__`` is not called: it would declare ``Content-Length: 0``.
    """

    def __init__(self, feed: EventFeed, interval: float) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            # Proxies (nginx) must pass each event on at once, not buffer the feed.
            (b"x-accel-buffering", b"no"),
        ]
        self._feed = feed
        self._interval = interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if scope["method"] == "HEAD":
            await _body(send, b"", more=False)
            return
        await self._feed.run(self._interval, receive, send)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (``http.disconnect``); request bodies are ignored."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _body(send: Send, chunk: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": more})
