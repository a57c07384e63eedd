"""Pushes: live streams republished to RTMP servers ("SIP as RTMP" and ``/push/*``).

Theory of operation
-------------------
A push is one :class:`~rtmp.pusher.RtmpPusher` reading one registry
:class:`~sipbridge.registry.Stream`, plus what the REST contract reports about
it: a ``mediaSessionId`` (uuid4), the stream's name, the ``rtmpUrl`` asked for
and the URL actually published to. :class:`PushManager` starts, finds, mutes and
stops them; it is the REST layer's ``PushesAPI`` and the gateway's
``gateway.pushes``. Several pushes of one stream run at once (each pusher has
its own subscription, so a slow RTMP server only slows its own push).

Target URL (the ``rtmp_`` rule of WCS)
    See :mod:`sipbridge.push_targets`: a URL that names a stream is published to
    as given, otherwise ``rtmp_<streamName>`` is appended. Those names are
    re-exported here.

Conflicts and errors
    400 (``InvalidRequest``, field ``rtmpUrl``) for a missing or malformed URL;
    404 (``NotFound``) when no live stream has the name (a stream reserved by
    ``/call/startup`` whose media has not arrived yet is live: its pusher waits
    for the first keyframe); 409 (``Conflict``) when a live push of the same
    stream already goes to the same target URL.

Lifetime
    A push ends ``STOPPED`` by :meth:`PushManager.terminate`, when its stream
    ends (the gateway calls :meth:`PushManager.stop_stream` as a call ends; any
    other ended stream is noticed at the next look-up), or at
    :meth:`PushManager.stop_all`. Ended pushes stay visible for ``retention``
    seconds, as ended calls and streams do.

A failing push never fails its call
    WCS ends a call whose RTMP transponder fails, with the call info ``Failed by
    RTMP writer error``. We do not: the RTMP server is a viewer of the call, and
    an outage there (a platform's hiccup, a key revoked, nginx restarted) must
    not hang up a phone call whose other consumers (recording, WebRTC players,
    other pushes) are fine. The pusher retries with backoff; when it gives up
    the *push* becomes ``FAILED`` with info ``Failed by RTMP writer error``,
    visible in ``/push/find``, and the call stays ``ESTABLISHED``. A client that
    wants WCS's behaviour terminates the call when it sees the push fail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import msgspec

from rtmp.pusher import PushConfig, PushStatus, RtmpPusher
from rtmp.urls import redact_url
from sipbridge.errors import Conflict, NotFound
from sipbridge.push_targets import (
    RTMP_NAME_PREFIX,
    CallPushTarget,
    call_push_target,
    is_rtmp_url,
    rtmp_target_url,
)
from sipbridge.registry import Stream, StreamRegistry
from sipbridge.settings import RtmpSettings

__all__ = [
    "RTMP_NAME_PREFIX",
    "RTMP_WRITER_ERROR",
    "CallPushTarget",
    "Push",
    "PushInfo",
    "PushManager",
    "Pusher",
    "PusherFactory",
    "PusherStats",
    "StatusCallback",
    "call_push_target",
    "is_rtmp_url",
    "rtmp_target_url",
]

log = logging.getLogger(__name__)

#: The info of a push whose pusher gave up (WCS's call info string for the same event).
RTMP_WRITER_ERROR = "Failed by RTMP writer error"

_FINAL = (PushStatus.STOPPED, PushStatus.FAILED)

StatusCallback = Callable[[PushStatus, "str | None"], None]
Clock = Callable[[], float]


class PusherStats(Protocol):
    """The counters :class:`PushInfo` reports (times on ``time.monotonic``)."""

    @property
    def frames_sent(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def connected_at(self) -> float | None: ...
    @property
    def first_video_sent_at(self) -> float | None: ...


class Pusher(Protocol):
    """What the manager needs of a pusher (:class:`~rtmp.pusher.RtmpPusher` is one)."""

    @property
    def status(self) -> PushStatus: ...
    @property
    def info(self) -> str | None: ...
    @property
    def stats(self) -> PusherStats: ...
    @property
    def dropped(self) -> int: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def mute(self, muted: bool) -> None: ...


#: Builds the pusher of a push: ``factory(stream, config, on_status)``.
PusherFactory = Callable[[Stream, PushConfig, StatusCallback], Pusher]


def _rtmp_pusher(stream: Stream, config: PushConfig, on_status: StatusCallback) -> Pusher:
    return RtmpPusher(stream, config, on_status=on_status)


class PushInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """A push as ``/push/find`` reports it (camelCase JSON; times in Unix milliseconds).

    ``rtmp_url`` is the URL as asked for, ``target_url`` the one published to
    (after the ``rtmp_`` rule) and ``published_name`` the name that rule
    appended (``None`` when the URL was used as given).
    """

    media_session_id: str
    stream_name: str
    stream_media_session_id: str
    rtmp_url: str
    rtmp_transponder_full_url: bool
    target_url: str
    published_name: str | None
    status: PushStatus
    info: str | None
    muted: bool
    call_id: str | None
    created_at: int
    connected_at: int | None
    first_video_at: int | None
    frames_sent: int
    bytes_sent: int
    reconnects: int
    dropped: int


class Push:
    """One stream pushed to one RTMP target (see the module doc)."""

    def __init__(
        self,
        manager: PushManager,
        stream: Stream,
        *,
        rtmp_url: str,
        full_url: bool,
        target_url: str,
        published_name: str | None,
        call_id: str | None,
        created_at: float,
        created_mono: float,
    ) -> None:
        self.media_session_id = str(uuid.uuid4())
        self.stream = stream
        self.rtmp_url = rtmp_url
        self.full_url = full_url
        self.target_url = target_url
        self.published_name = published_name
        self.call_id = call_id
        self.created_at = created_at
        self.created_mono = created_mono
        self.status = PushStatus.PENDING
        self.info: str | None = None
        self.muted = False
        self.ended_at: float | None = None
        self.stopping = False
        self.pusher: Pusher | None = None
        self.started: asyncio.Task[None] | None = None
        self._manager = manager

    def __repr__(self) -> str:
        return f"Push({self.stream.name!r} -> {redact_url(self.target_url)}, {self.status.value})"

    @property
    def is_final(self) -> bool:
        return self.status in _FINAL

    def snapshot(self) -> PushInfo:
        """The push as ``/push/find`` reports it."""
        stats = self.pusher.stats if self.pusher is not None else None
        to_wall = self._manager.to_wall_ms
        return PushInfo(
            media_session_id=self.media_session_id,
            stream_name=self.stream.name,
            stream_media_session_id=self.stream.media_session_id,
            rtmp_url=self.rtmp_url,
            rtmp_transponder_full_url=self.full_url,
            target_url=self.target_url,
            published_name=self.published_name,
            status=self.status,
            info=self.info,
            muted=self.muted,
            call_id=self.call_id,
            created_at=round(self.created_at * 1000),
            connected_at=to_wall(stats.connected_at) if stats else None,
            first_video_at=to_wall(stats.first_video_sent_at) if stats else None,
            frames_sent=stats.frames_sent if stats else 0,
            bytes_sent=stats.bytes if stats else 0,
            reconnects=stats.reconnects if stats else 0,
            dropped=self.pusher.dropped if self.pusher is not None else 0,
        )

    def _set_status(self, status: PushStatus, info: str | None) -> None:
        """Take a status from the pusher (or the manager); a final status is never left."""
        if self.is_final:
            return
        if status is PushStatus.FAILED and not info:
            info = RTMP_WRITER_ERROR
        if status is self.status and info == self.info:
            return
        self.status = status
        self.info = info
        if self.is_final:
            self.ended_at = self._manager.clock()
        level = logging.WARNING if status is PushStatus.FAILED else logging.INFO
        log.log(
            level,
            "push %s of stream %s to %s: %s%s",
            self.media_session_id,
            self.stream.name,
            redact_url(self.target_url),
            status.value,
            f" ({info})" if info else "",
            extra={"stream": self.stream.name, "callId": self.call_id},
        )


class PushManager:
    """Every push of the gateway; also the REST layer's ``PushesAPI`` (see module doc).

    ``pusher_factory`` builds each push's pusher (an :class:`~rtmp.pusher.RtmpPusher`
    by default; tests inject fakes). Everything runs on the event loop's thread;
    a pusher's status callback from another thread is moved onto it.
    """

    def __init__(
        self,
        registry: StreamRegistry,
        settings: RtmpSettings | None = None,
        *,
        pusher_factory: PusherFactory = _rtmp_pusher,
        retention: float = 300.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.registry = registry
        self.settings = settings or RtmpSettings()
        self.retention = retention
        self.clock = clock
        self._wall_clock = wall_clock
        self._factory = pusher_factory
        # By media session id, in creation order.
        self._pushes: dict[str, Push] = {}
        self._background: set[asyncio.Task[None]] = set()

    def config(self, url: str) -> PushConfig:
        """The pusher configuration for ``url`` from the ``[rtmp]`` settings."""
        s = self.settings
        return PushConfig(
            url=url,
            audio=s.audio,
            audio_bitrate=s.audio_bitrate,
            audio_sample_rate=s.audio_sample_rate,
            still_video=s.still_video,
            connect_timeout=s.connect_timeout,
            rw_timeout=s.rw_timeout,
            send_buffer=s.send_buffer,
            retry_initial=s.retry_initial,
            retry_max=s.retry_max,
            max_retries=s.retries,
            tls_verify=s.tls_verify,
            tls_ca_file=s.tls_ca_file or None,
        )

    def to_wall_ms(self, mono: float | None) -> int | None:
        """A ``clock`` time as Unix milliseconds (``None`` stays ``None``)."""
        if mono is None:
            return None
        return round((self._wall_clock() - (self.clock() - mono)) * 1000)

    # -- library API -------------------------------------------------------------------
    def start(
        self,
        stream: Stream,
        rtmp_url: str,
        *,
        full_url: bool = False,
        published_name: str | None = None,
        call_id: str | None = None,
        field: str = "rtmpUrl",
    ) -> Push:
        """Start pushing ``stream`` to ``rtmp_url``; the pusher starts in a task (``push.started``).

        Must be called on the event loop. Raises :class:`InvalidRequest` for a bad
        URL, :class:`NotFound` for an ended stream, :class:`Conflict` when the stream
        is already pushed to the same target URL.
        """
        target, name = rtmp_target_url(
            rtmp_url, stream.name, full_url=full_url, published_name=published_name, field=field
        )
        if stream.status.is_final:
            raise NotFound(f"stream {stream.name!r} has ended", field="streamName")
        self._reap()
        for other in self._pushes.values():
            if other.stream is stream and other.target_url == target and not other.is_final:
                raise Conflict(
                    f"stream {stream.name!r} is already pushed to {redact_url(target)}"
                    f" (mediaSessionId {other.media_session_id})",
                    field=field,
                )
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        push = Push(
            self,
            stream,
            rtmp_url=rtmp_url,
            full_url=full_url,
            target_url=target,
            published_name=name,
            call_id=call_id if call_id is not None else stream.call_id,
            created_at=self._wall_clock(),
            created_mono=self.clock(),
        )

        def on_status(status: PushStatus, info: str | None) -> None:
            if threading.get_ident() == loop_thread:
                push._set_status(status, info)
            else:
                loop.call_soon_threadsafe(push._set_status, status, info)

        push.pusher = self._factory(stream, self.config(target), on_status)
        self._pushes[push.media_session_id] = push
        push.started = self._spawn(self._start_pusher(push), f"push-start-{push.media_session_id}")
        log.info(
            "push %s: stream %s -> %s",
            push.media_session_id,
            stream.name,
            redact_url(target),
            extra={"stream": stream.name, "callId": push.call_id},
        )
        return push

    def get(self, media_session_id: str) -> Push:
        """The push with this id; :class:`NotFound` otherwise."""
        self._reap()
        push = self._pushes.get(media_session_id)
        if push is None:
            raise NotFound(
                f"no push with mediaSessionId {media_session_id!r}", field="mediaSessionId"
            )
        return push

    def find(self, *, stream_name: str | None = None, rtmp_url: str | None = None) -> list[Push]:
        """Pushes matching every given filter, oldest first; ``rtmp_url`` matches the URL
        asked for or the target URL."""
        self._reap()
        return [
            push
            for push in self._pushes.values()
            if (stream_name is None or push.stream.name == stream_name)
            and (rtmp_url is None or rtmp_url in (push.rtmp_url, push.target_url))
        ]

    def all(self) -> list[Push]:
        """Every push kept (live and recently ended), oldest first."""
        self._reap()
        return list(self._pushes.values())

    async def terminate(self, media_session_id: str) -> Push:
        """Stop a push (``STOPPED``); an ended push is returned as it is."""
        push = self.get(media_session_id)
        await self._stop(push)
        return push

    def set_muted(self, media_session_id: str, muted: bool) -> Push:
        """Mute (or unmute) the push's audio; :class:`Conflict` when the push has ended."""
        push = self.get(media_session_id)
        if push.is_final:
            raise Conflict(f"push is {push.status.value}", field="mediaSessionId")
        if push.pusher is not None:
            push.pusher.mute(muted)
        push.muted = muted
        return push

    async def stop_stream(self, stream: Stream) -> None:
        """Stop every live push of ``stream`` (its call ended)."""
        await self._stop_all([p for p in self._pushes.values() if p.stream is stream])

    async def stop_all(self) -> None:
        """Stop every live push (the gateway stops)."""
        await self._stop_all(list(self._pushes.values()))
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)

    # -- the REST layer's PushesAPI ------------------------------------------------
    async def start_push(
        self, stream_name: str, rtmp_url: str, *, full_url: bool = False
    ) -> PushInfo:
        """``/push/startup``: push the live stream named ``stream_name``.

        The URL is checked first (400), then the stream (404), then duplicates (409).
        """
        rtmp_target_url(rtmp_url, stream_name, full_url=full_url)
        stream = self.registry.get(stream_name)
        if stream is None or stream.status.is_final:
            raise NotFound(f"no live stream named {stream_name!r}", field="streamName")
        push = self.start(stream, rtmp_url, full_url=full_url)
        if push.started is not None:
            await asyncio.shield(push.started)
        return push.snapshot()

    def find_pushes(
        self, *, stream_name: str | None = None, rtmp_url: str | None = None
    ) -> list[PushInfo]:
        """Snapshots of :meth:`find` (``/push/find``)."""
        return [push.snapshot() for push in self.find(stream_name=stream_name, rtmp_url=rtmp_url)]

    def all_pushes(self) -> list[PushInfo]:
        """Snapshots of :meth:`all` (``/push/find_all``)."""
        return [push.snapshot() for push in self.all()]

    async def terminate_push(self, media_session_id: str) -> PushInfo:
        """The snapshot of :meth:`terminate` (``/push/terminate``)."""
        return (await self.terminate(media_session_id)).snapshot()

    async def mute_push(self, media_session_id: str) -> PushInfo:
        """``/push/mute``: the push's audio becomes silence (video goes on)."""
        return self.set_muted(media_session_id, True).snapshot()

    async def unmute_push(self, media_session_id: str) -> PushInfo:
        """``/push/unmute``."""
        return self.set_muted(media_session_id, False).snapshot()

    # -- internals -------------------------------------------------------------------------
    async def _start_pusher(self, push: Push) -> None:
        pusher = push.pusher
        if pusher is None:
            return
        try:
            await pusher.start()
        except Exception as exc:
            # A pusher that cannot even start fails its push, never the caller (a call).
            log.exception("push %s: the pusher failed to start", push.media_session_id)
            push._set_status(PushStatus.FAILED, f"{RTMP_WRITER_ERROR}: {exc}")

    async def _stop(self, push: Push) -> None:
        if push.is_final or push.stopping:
            return
        push.stopping = True
        pusher = push.pusher
        started = push.started
        try:
            if started is not None and not started.done():
                await asyncio.wait([started], timeout=5.0)
            if pusher is not None:
                await pusher.stop()
        except Exception:
            log.exception("push %s: the pusher failed to stop", push.media_session_id)
        # A pusher that already gave up stays FAILED (_set_status never leaves a final one).
        push._set_status(PushStatus.STOPPED, None)

    async def _stop_all(self, pushes: list[Push]) -> None:
        live = [push for push in pushes if not push.is_final]
        if live:
            await asyncio.gather(*(self._stop(push) for push in live))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _reap(self) -> None:
        """Stop pushes whose stream has ended; forget pushes ended ``retention`` ago."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a library user looking from outside the loop: nothing to await
            pass
        else:
            for push in self._pushes.values():
                if push.stream.status.is_final and not push.is_final and not push.stopping:
                    self._spawn(self._stop(push), f"push-stop-{push.media_session_id}")
        cutoff = self.clock() - self.retention
        for key in [
            key
            for key, push in self._pushes.items()
            if push.ended_at is not None and push.ended_at <= cutoff
        ]:
            del self._pushes[key]
