"""Typed gateway events and the bus that fans them out to library users, hooks and SSE.

Theory of operation
-------------------
The gateway publishes one event per status change: a :class:`CallStatusEvent`
when a call's status (or its ``info``) changes, a :class:`StreamStatusEvent`
when a stream's does. Both are msgspec Structs whose JSON field names are
WCS's (``callId``, ``sipStatus``, ``mediaSessionId``...), so the very bytes a
WCS backend expects from its REST hooks (``/CallStatusEvent``,
``/StreamStatusEvent``) are ``msgspec.json.encode(event)``.

:class:`EventBus` hands every published event to every open
:class:`EventSubscription`. :meth:`EventBus.publish` is synchronous, O(subscribers)
and never blocks: each subscription has a bounded queue, and a full queue drops
its *oldest* event (counted in ``dropped``), so a consumer that stops reading
costs memory up to its bound and never slows a call. A subscription is an async
iterator (``async for event in bus.subscribe()``) that ends when it is closed,
when the bus is closed (gateway stop), or after an event its ``stop_when``
accepts (a call's own events end with the call).

Everything runs on the event loop's thread, but for a waiter parked on another
loop (Starlette's test client runs one loop per request): it is woken with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar, TypeAlias

import msgspec

from sipbridge.callinfo import CallInfo, CallStatus
from sipbridge.registry import Stream, StreamStatus

__all__ = [
    "DEFAULT_SUBSCRIBER_QUEUE",
    "CallStatusEvent",
    "Event",
    "EventBus",
    "EventBusClosed",
    "EventSubscription",
    "StreamStatusEvent",
    "call_status_event",
    "stream_status_event",
]

log = logging.getLogger(__name__)

#: Events a subscriber may have waiting before the oldest is dropped.
DEFAULT_SUBSCRIBER_QUEUE = 1000


class CallStatusEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A call changed status (WCS ``CallStatusEvent``; JSON names as WCS's).

    The call's fields are those of ``/call/find`` (never the password); ``nodeId``
    names this gateway; ``timestamp`` is Unix milliseconds.
    """

    nodeId: str
    appKey: str | None
    callId: str
    callee: str
    caller: str
    status: CallStatus
    sipStatus: int | None = None
    info: str | None = None
    streamName: str | None = None
    rtmpUrl: str | None = None
    hasAudio: bool = True
    hasVideo: bool = True
    visibleName: str | None = None
    incoming: bool = False
    timestamp: int = 0

    #: What WCS appends to an application's backend URL for this event (not a field).
    hook_method: ClassVar[str] = "CallStatusEvent"


class StreamStatusEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A stream changed status (WCS ``StreamStatusEvent``; JSON names as WCS's).

    ``published`` is true while the call publishes frames; ``mediaType`` is always
    ``"publish"`` and ``mediaProvider`` ``"SIP"`` (the stream comes from a call);
    ``createDate`` and ``timestamp`` are Unix milliseconds.
    """

    nodeId: str
    appKey: str | None
    mediaSessionId: str
    name: str
    status: StreamStatus
    published: bool
    callId: str | None = None
    hasAudio: bool = False
    hasVideo: bool = False
    audioCodec: str = ""
    videoCodec: str = ""
    width: int = 0
    height: int = 0
    info: str | None = None
    createDate: int = 0
    mediaType: str = "publish"
    mediaProvider: str = "SIP"
    timestamp: int = 0

    hook_method: ClassVar[str] = "StreamStatusEvent"


Event: TypeAlias = CallStatusEvent | StreamStatusEvent


def call_status_event(info: CallInfo, *, node_id: str, now: float | None = None) -> CallStatusEvent:
    """The event for a call as ``info`` reports it; ``now`` is Unix seconds."""
    return CallStatusEvent(
        nodeId=node_id,
        appKey=info.appKey,
        callId=info.callId,
        callee=info.callee,
        caller=info.caller,
        status=info.status,
        sipStatus=info.sipStatus,
        info=info.info,
        streamName=info.streamName,
        rtmpUrl=info.rtmpUrl,
        hasAudio=info.hasAudio,
        hasVideo=info.hasVideo,
        visibleName=info.visibleName,
        incoming=info.incoming,
        timestamp=round((time.time() if now is None else now) * 1000),
    )


def stream_status_event(
    stream: Stream,
    *,
    node_id: str,
    app_key: str | None,
    status: StreamStatus | None = None,
    info: str | None = None,
    now: float | None = None,
) -> StreamStatusEvent:
    """The event for ``stream`` in ``status`` (default: its current one)."""
    audio = stream.tracks.get("audio")
    video = stream.tracks.get("video")
    state = stream.status if status is None else status
    return StreamStatusEvent(
        nodeId=node_id,
        appKey=app_key,
        mediaSessionId=stream.media_session_id,
        name=stream.name,
        status=state,
        published=state is StreamStatus.PUBLISHING,
        callId=stream.call_id,
        hasAudio=audio is not None,
        hasVideo=video is not None,
        audioCodec=audio.codec if audio is not None else "",
        videoCodec=video.codec if video is not None else "",
        width=(video.width or 0) if video is not None else 0,
        height=(video.height or 0) if video is not None else 0,
        info=info,
        createDate=round(stream.created_at * 1000),
        timestamp=round((time.time() if now is None else now) * 1000),
    )


class EventBusClosed(Exception):
    """The subscription was closed (or the bus was): no event will come."""


class EventSubscription:
    """One consumer's bounded queue of events: ``async for event in subscription``.

    One task reads it. ``dropped`` counts events lost to a full queue (oldest first).
    ``call_id`` keeps only that call's events (its stream's too); ``stop_when``
    ends the iteration after the first event it accepts.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        max_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
        call_id: str | None = None,
        stop_when: Callable[[Event], bool] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.max_queue = max_queue
        self.call_id = call_id
        self.dropped = 0
        self._bus = bus
        self._stop_when = stop_when
        self._queue: deque[Event] = deque()
        self._finished = False
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except EventBusClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once no further event will be queued (queued ones may still be read)."""
        return self._finished

    def get_nowait(self) -> Event | None:
        """The next queued event, or ``None`` when none is queued right now."""
        return self._pop() if self._queue else None

    async def get(self) -> Event:
        """The next event; waits for one. Raises :class:`EventBusClosed` once none will come."""
        while not self._queue:
            if self._finished:
                raise EventBusClosed("the event subscription is closed")
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting on this subscription")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._pop()

    def close(self) -> None:
        """Stop receiving: drop what is queued, leave the bus; a pending ``get`` ends."""
        self._queue.clear()
        self._bus._unsubscribe(self)
        self._finish()

    # -- the bus's side ---------------------------------------------------------------
    def _wants(self, event: Event) -> bool:
        return self.call_id is None or event.callId == self.call_id

    def _offer(self, event: Event) -> None:
        if self._finished or not self._wants(event):
            return
        if len(self._queue) >= self.max_queue:
            # Oldest first: the newest status is the one a late reader needs most.
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        if self._stop_when is not None and self._stop_when(event):
            self._bus._unsubscribe(self)
            self._finished = True
        self._wake()

    def _prime(self, events: list[Event]) -> None:
        for event in events:
            self._offer(event)

    def _pop(self) -> Event:
        return self._queue.popleft()

    def _finish(self) -> None:
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            waiter.set_result(None)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EventBus:
    """Fans :data:`Event` values out to subscriptions (see the module docstring).

    ``node_id`` is this gateway's name in the events it builds; ``max_queue`` is the
    default bound of a subscription's queue.
    """

    def __init__(self, *, node_id: str = "", max_queue: int = DEFAULT_SUBSCRIBER_QUEUE) -> None:
        self.node_id = node_id
        self.max_queue = max_queue
        self.published = 0
        self._subscriptions: list[EventSubscription] = []
        self._closed = False

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(
        self,
        *,
        max_queue: int | None = None,
        call_id: str | None = None,
        stop_when: Callable[[Event], bool] | None = None,
        initial: list[Event] | None = None,
    ) -> EventSubscription:
        """A new subscription receiving every event published from now on.

        ``initial`` events are queued first (a call's current status, so a reader
        never misses where it starts). On a closed bus the subscription holds only
        those and then ends.
        """
        subscription = EventSubscription(
            self,
            max_queue=self.max_queue if max_queue is None else max_queue,
            call_id=call_id,
            stop_when=stop_when,
        )
        if initial:
            subscription._prime(initial)
        if self._closed:
            subscription._finish()
        elif not subscription.closed:
            self._subscriptions.append(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscription; never blocks, never raises for a consumer."""
        if self._closed:
            return
        self.published += 1
        for subscription in list(self._subscriptions):
            try:
                subscription._offer(event)
            except Exception:
                # A failing stop_when must not cost the other subscribers their event.
                log.exception("event subscription failed; closed")
                with contextlib.suppress(Exception):
                    subscription.close()

    def open(self) -> None:
        """Accept subscriptions and events again after :meth:`close` (a gateway restarted)."""
        self._closed = False

    def close(self) -> None:
        """End every subscription once drained; later publishes are ignored. Idempotent."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription._finish()

    def _unsubscribe(self, subscription: EventSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
