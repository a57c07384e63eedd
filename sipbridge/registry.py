"""The stream registry: stream name -> :class:`Stream`; a Stream fans frames out to subscribers.

Theory of operation
-------------------
A producer (a call) reserves a name (:meth:`StreamRegistry.reserve`, ``PENDING``)
and calls :meth:`Stream.publish` for every :class:`~rtp.frame.MediaFrame` (the
first makes it ``PUBLISHING``). Consumers (RTMP pushers, WebRTC tracks, the
recorder) read a :class:`Subscription`, an async iterator over a bounded queue.

``publish`` is O(subscribers) and never blocks nor awaits: it appends to each
subscriber's queue. A full queue drops the frame for that subscriber only. A
dropped video frame breaks the decoding chain, so that subscriber then drops
video until the next keyframe (audio frames are dropped one by one), and the
stream asks the producer for a keyframe (RTCP PLI/FIR, RFC 4585 §6.3.1 /
RFC 5104 §4.3.1, or SIP INFO picture_fast_update), at most once per
``keyframe_interval`` while some subscriber waits for one.

The stream keeps the last GOP: the last video keyframe and every frame (video
and audio) published since, in order. A new subscriber gets it first, so it
starts decoding at once; those frames do not count against its queue bound.
Without a cached keyframe, the subscriber's video starts at the next keyframe
and a keyframe is requested.

``Stream.end`` (``UNPUBLISHED``, ``STOPPED`` or ``FAILED``) lets every subscriber
drain its queue, then its iterator stops. Ended streams stay visible in the
registry for ``retention`` seconds, as finished calls do in the gateway.

Whoever must know of status changes (the gateway's ``StreamStatusEvent``) adds a
listener with :meth:`StreamRegistry.add_status_listener`: it is called
synchronously by every change (reservation, first frame, end, terminate,
removal), once per change, never per frame: while the status stays
``PUBLISHING``, ``publish`` pays one comparison per frame for it.

Everything here runs on the event loop's thread; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from rtp.frame import MediaFrame, MediaKind
from sipbridge.errors import Conflict, InvalidRequest, NotFound

__all__ = [
    "StatusListener",
    "Stream",
    "StreamEnded",
    "StreamInfo",
    "StreamRegistry",
    "StreamStatus",
    "Subscription",
    "TrackInfo",
    "TrackStats",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: ``listener(stream, new_status)``, called right after ``stream.status`` changed.
StatusListener = Callable[["Stream", "StreamStatus"], None]


class StreamStatus(enum.StrEnum):
    """WCS stream statuses."""

    NEW = "NEW"
    PENDING = "PENDING"
    PUBLISHING = "PUBLISHING"
    PLAYING = "PLAYING"
    UNPUBLISHED = "UNPUBLISHED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (StreamStatus.UNPUBLISHED, StreamStatus.STOPPED, StreamStatus.FAILED)


class StreamEnded(Exception):
    """The stream has ended (or the subscription was closed): no frame will come."""


@dataclass(slots=True)
class TrackInfo:
    """One track of a stream and its counters.

    :meth:`Stream.publish` keeps ``codec``, ``clock_rate``, ``frames``,
    ``keyframes``, ``bytes`` and ``last_pts`` current; the producer sets the rest
    (RTP reception statistics, RFC 3550 §6.4.1, and its buffer's delay).
    """

    kind: MediaKind
    codec: str = ""
    clock_rate: int = 0
    channels: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter_ms: float = 0.0
    buffer_delay_ms: float = 0.0
    last_pts: float | None = None
    # Inbound SRTP packets dropped (RFC 3711 §3.3: authentication, §3.3.2: replay,
    # other: malformed or unknown); None while the track is not SRTP.
    srtp_auth_failures: int | None = None
    srtp_replay_drops: int | None = None
    srtp_other_drops: int | None = None
    srtp_short_drops: int | None = None


class TrackStats(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A track as ``/stream/find`` reports it (JSON names in camelCase: ``clockRate``...).

    The SRTP drop counters are there only for a track that uses SRTP (RFC 3711)."""

    kind: str
    codec: str
    clock_rate: int
    channels: int | None
    width: int | None
    height: int | None
    frames: int
    keyframes: int
    bytes: int
    packets_received: int
    packets_lost: int
    jitter_ms: float
    buffer_delay_ms: float
    #: SRTP packets dropped by kind of failure; left out when the track is plain RTP.
    srtp_auth_failures: int | None = None
    srtp_replay_drops: int | None = None
    srtp_other_drops: int | None = None
    srtp_short_drops: int | None = None


class StreamInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """A stream as ``/stream/find`` reports it; ``created_at`` in Unix milliseconds."""

    media_session_id: str
    name: str
    status: StreamStatus
    call_id: str | None
    published: bool
    created_at: int
    tracks: list[TrackStats]
    av_offset_ms: float | None
    subscribers: int


class Subscription:
    """A consumer's bounded queue of :class:`MediaFrame`: ``async for frame in sub``.

    One task reads it (with :meth:`get`, :meth:`get_nowait` or ``async for``).
    Iteration ends after the stream ended and the queue is drained, or at once
    after :meth:`close`. ``dropped`` counts frames this subscriber lost.
    """

    def __init__(self, stream: Stream, *, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.stream = stream
        self.max_queue = max_queue
        self.dropped = 0
        self._queue: deque[MediaFrame] = deque()
        # Frames of the initial GOP still queued: they do not count against max_queue.
        self._burst = 0
        # True while this subscriber's video waits for a keyframe (start, or after a drop).
        self._video_gap = True
        self._finished = False
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MediaFrame:
        try:
            return await self.get()
        except StreamEnded:
            raise StopAsyncIteration from None

    @property
    def waiting_for_keyframe(self) -> bool:
        """True while video frames are skipped until the next keyframe."""
        return self._video_gap

    def get_nowait(self) -> MediaFrame | None:
        """The next queued frame, or ``None`` when the queue is empty right now."""
        return self._pop() if self._queue else None

    async def get(self) -> MediaFrame:
        """The next frame; waits for one. Raises :class:`StreamEnded` once none will come."""
        while not self._queue:
            if self._finished:
                raise StreamEnded(f"stream {self.stream.name!r} has ended")
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
        """Stop receiving: drop what is queued, leave the stream; pending ``get`` ends."""
        self._queue.clear()
        self._burst = 0
        self.stream._unsubscribe(self)
        self._finish()

    # -- the stream's side -------------------------------------------------------------
    def _pop(self) -> MediaFrame:
        if self._burst:
            self._burst -= 1
        return self._queue.popleft()

    def _prime(self, frames: list[MediaFrame]) -> None:
        """Queue the cached GOP (it starts with a keyframe) ahead of live frames."""
        self._queue.extend(frames)
        self._burst = len(frames)
        self._video_gap = False
        self._wake()

    def _offer(self, frame: MediaFrame) -> bool:
        """Queue ``frame`` or drop it; True when a video frame was dropped (keyframe wanted)."""
        video = frame.kind == "video"
        if video and self._video_gap and not frame.keyframe:
            self.dropped += 1
            return True
        if len(self._queue) >= self.max_queue + self._burst:
            self.dropped += 1
            if video:
                self._video_gap = True
            return video
        if video:
            self._video_gap = False
        self._queue.append(frame)
        self._wake()
        return False

    def _finish(self) -> None:
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Stream:
    """One named live stream: a producer publishes frames, subscribers read them.

    ``tracks`` is keyed by kind (``"audio"``, ``"video"``). ``av_offset`` (seconds,
    video minus audio presentation time as measured by the producer) and the
    tracks' reception counters are set by the producer; :meth:`snapshot` reports them.
    """

    def __init__(
        self,
        name: str,
        *,
        call_id: str | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        keyframe_interval: float = 1.0,
        max_gop_frames: int = 3000,
        max_gop_bytes: int = 32 * 1024 * 1024,
        on_terminate: Callable[[Stream], None] | None = None,
        on_status: StatusListener | None = None,
    ) -> None:
        self.name = name
        self.media_session_id = str(uuid.uuid4())
        self.status = StreamStatus.NEW
        self.tracks: dict[str, TrackInfo] = {}
        self.call_id = call_id
        self.created_at = wall_clock()
        self.ended_at: float | None = None  # on ``clock``
        self.av_offset: float | None = None
        self.on_terminate = on_terminate
        #: Called synchronously after each status change (the registry's listeners).
        self.on_status = on_status
        self.keyframe_interval = keyframe_interval
        self.max_gop_frames = max_gop_frames
        self.max_gop_bytes = max_gop_bytes
        self._clock = clock
        self._subscribers: list[Subscription] = []
        # The last GOP: empty, or a video keyframe and every frame published since.
        self._gop: list[MediaFrame] = []
        self._gop_bytes = 0
        self._keyframe_requester: Callable[[], None] | None = None
        self._stats_source: Callable[[Stream], None] | None = None
        self._last_keyframe_request: float | None = None

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, {self.status.value}, {self.media_session_id})"

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    @property
    def has_video(self) -> bool:
        """True once a video track is declared or a video frame was published."""
        return "video" in self.tracks

    def track(self, kind: MediaKind) -> TrackInfo:
        """The track of ``kind``, created empty when absent (producers declare tracks early)."""
        info = self.tracks.get(kind)
        if info is None:
            info = self.tracks[kind] = TrackInfo(kind=kind)
        return info

    def set_status(self, status: StreamStatus) -> None:
        """Set a non-final status (use :meth:`end` to end the stream)."""
        if status.is_final:
            raise ValueError(f"use end() to make a stream {status.value}")
        if self.status.is_final or status is self.status:
            return
        self.status = status
        log.info("stream %s: %s", self.name, status.value, extra={"stream": self.name})
        self._status_changed(status)

    # -- producer side --------------------------------------------------------------------
    def publish(self, frame: MediaFrame) -> None:
        """Hand ``frame`` to every subscriber and the GOP cache; never blocks.

        Frames published after :meth:`end` are ignored (the producer may race the end).
        """
        # The per-frame path: one comparison while PUBLISHING; the first frame (or one
        # after end) goes the slow way, where set_status tells the listeners.
        if self.status is StreamStatus.PUBLISHING:
            self._count(frame)
        else:
            if self.status.is_final:
                return
            # Counted first: the listeners' PUBLISHING sees the first frame's track.
            self._count(frame)
            self.set_status(StreamStatus.PUBLISHING)
        self._cache(frame)
        wants_keyframe = False
        for subscription in self._subscribers:
            if subscription._offer(frame):
                wants_keyframe = True
        if wants_keyframe:
            self.request_keyframe()

    def set_stats_source(self, fn: Callable[[Stream], None] | None) -> None:
        """Called by :meth:`snapshot` to refresh the producer's counters first, so a
        reader sees them current without the producer updating them per packet."""
        self._stats_source = fn

    def set_keyframe_requester(self, fn: Callable[[], None] | None) -> None:
        """What :meth:`request_keyframe` calls (the call sends RTCP PLI/FIR or SIP INFO)."""
        self._keyframe_requester = fn

    def request_keyframe(self) -> bool:
        """Ask the producer for a keyframe, at most once per ``keyframe_interval``."""
        fn = self._keyframe_requester
        if fn is None:
            return False
        now = self._clock()
        last = self._last_keyframe_request
        if last is not None and now - last < self.keyframe_interval:
            return False
        self._last_keyframe_request = now
        try:
            fn()
        except Exception:
            # A failing requester must not break publish() for every subscriber.
            log.exception("stream %s: keyframe request failed", self.name)
        return True

    def end(self, status: StreamStatus = StreamStatus.UNPUBLISHED) -> None:
        """End the stream; subscribers' iterators stop once drained. Idempotent."""
        if not status.is_final:
            raise ValueError(f"a stream ends UNPUBLISHED, STOPPED or FAILED, not {status.value}")
        if self.status.is_final:
            return
        self.status = status
        self.ended_at = self._clock()
        self._gop.clear()
        self._gop_bytes = 0
        subscribers, self._subscribers = self._subscribers, []
        for subscription in subscribers:
            subscription._finish()
        log.info("stream %s: %s", self.name, status.value, extra={"stream": self.name})
        self._status_changed(status)

    # -- consumer side ----------------------------------------------------------------
    def subscribe(self, *, max_queue: int = 300, from_gop: bool = True) -> Subscription:
        """A new subscription; it starts with the cached GOP when ``from_gop``.

        Its video starts on a keyframe: the cached one, else the next one (which
        is then requested). Raises :class:`StreamEnded` on an ended stream.
        """
        if self.status.is_final:
            raise StreamEnded(f"stream {self.name!r} has ended ({self.status.value})")
        subscription = Subscription(self, max_queue=max_queue)
        if from_gop and self._gop:
            subscription._prime(list(self._gop))
        elif self.has_video:
            self.request_keyframe()
        self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    # -- reporting ------------------------------------------------------------------------
    def snapshot(self) -> StreamInfo:
        """The stream as ``/stream/find`` reports it."""
        if self._stats_source is not None:
            try:
                self._stats_source(self)
            except Exception:
                log.exception("stream %s: the statistics source failed", self.name)
        return StreamInfo(
            media_session_id=self.media_session_id,
            name=self.name,
            status=self.status,
            call_id=self.call_id,
            published=self.status is StreamStatus.PUBLISHING,
            created_at=round(self.created_at * 1000),
            tracks=[_track_stats(track) for track in self.tracks.values()],
            av_offset_ms=None if self.av_offset is None else self.av_offset * 1000.0,
            subscribers=len(self._subscribers),
        )

    # -- internals ----------------------------------------------------------------------
    def _status_changed(self, status: StreamStatus) -> None:
        on_status = self.on_status
        if on_status is None:
            return
        try:
            on_status(self, status)
        except Exception:
            # A listener's failure must not break publish() or end() for the producer.
            log.exception("stream %s: status listener failed", self.name)

    def _count(self, frame: MediaFrame) -> None:
        track = self.track(frame.kind)
        track.codec = frame.codec
        track.clock_rate = frame.clock_rate
        track.frames += 1
        track.bytes += len(frame.payload)
        if frame.keyframe and frame.kind == "video":  # every audio frame is "key" to a muxer
            track.keyframes += 1
        if frame.pts is not None:
            track.last_pts = frame.pts

    def _cache(self, frame: MediaFrame) -> None:
        if frame.kind == "video" and frame.keyframe:
            self._gop = [frame]
            self._gop_bytes = len(frame.payload)
            return
        if not self._gop:
            return  # nothing cached before the first keyframe: a GOP starts on one
        self._gop.append(frame)
        self._gop_bytes += len(frame.payload)
        if len(self._gop) > self.max_gop_frames or self._gop_bytes > self.max_gop_bytes:
            # An overlong GOP (a phone that sends keyframes only on request): keep no
            # cache rather than unbounded memory; late subscribers request a keyframe.
            self._gop = []
            self._gop_bytes = 0


def _track_stats(track: TrackInfo) -> TrackStats:
    return TrackStats(**{name: getattr(track, name) for name in TrackStats.__struct_fields__})


class StreamRegistry:
    """Name -> live :class:`Stream`, plus ended streams for ``retention`` seconds.

    At most one live stream has a given name; ended streams with that name may
    linger beside it until they are forgotten. Also implements the REST layer's
    ``StreamsAPI`` (``find_streams``, ``all_streams``, ``terminate_stream``).
    """

    def __init__(
        self,
        *,
        retention: float = 300.0,
        keyframe_interval: float = 1.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.retention = retention
        self.keyframe_interval = keyframe_interval
        self._clock = clock
        self._wall_clock = wall_clock
        # By media session id, in creation order.
        self._streams: dict[str, Stream] = {}
        self._status_listeners: list[StatusListener] = []

    def reserve(
        self,
        name: str,
        *,
        call_id: str | None = None,
        on_terminate: Callable[[Stream], None] | None = None,
    ) -> Stream:
        """A new ``PENDING`` stream named ``name``; :class:`Conflict` if a live one has it.

        ``on_terminate(stream)`` is called when :meth:`terminate` stops the stream,
        so its owner (a call) can hang up.
        """
        if not name:
            raise InvalidRequest("stream name must not be empty", field="name")
        self._forget_old()
        if self._live(name) is not None:
            raise Conflict(f"stream name {name!r} is in use")
        stream = Stream(
            name,
            call_id=call_id,
            clock=self._clock,
            wall_clock=self._wall_clock,
            keyframe_interval=self.keyframe_interval,
            on_terminate=on_terminate,
            on_status=self._notify_status,
        )
        # Registered first, so a listener told of PENDING finds the stream here.
        self._streams[stream.media_session_id] = stream
        stream.set_status(StreamStatus.PENDING)
        return stream

    def add_status_listener(self, listener: StatusListener) -> Callable[[], None]:
        """Call ``listener(stream, status)`` at every status change of this registry's
        streams, synchronously, right after the change; returns the unsubscribe function.

        Told once per change: ``PENDING`` at :meth:`reserve`, ``PUBLISHING`` at the
        first frame (or :meth:`Stream.set_status`), the final status at
        :meth:`Stream.end`, :meth:`terminate` (before ``on_terminate``) and
        :meth:`remove`. It runs inside ``publish`` on the producer's path: keep it
        short and non-blocking. An exception it raises is logged and swallowed.
        """
        self._status_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._status_listeners:
                self._status_listeners.remove(listener)

        return unsubscribe

    def get(self, name: str) -> Stream | None:
        """The live stream named ``name``, else the latest ended one still kept."""
        self._forget_old()
        live = self._live(name)
        if live is not None:
            return live
        named = [s for s in self._streams.values() if s.name == name]
        return named[-1] if named else None

    def by_media_session_id(self, media_session_id: str) -> Stream | None:
        self._forget_old()
        return self._streams.get(media_session_id)

    def find(
        self,
        name: str | None = None,
        status: StreamStatus | None = None,
        media_session_id: str | None = None,
    ) -> list[Stream]:
        """Streams matching every given filter, oldest first."""
        self._forget_old()
        return [
            stream
            for stream in self._streams.values()
            if (name is None or stream.name == name)
            and (status is None or stream.status is status)
            and (media_session_id is None or stream.media_session_id == media_session_id)
        ]

    def all(self) -> list[Stream]:
        """Every stream kept, oldest first."""
        self._forget_old()
        return list(self._streams.values())

    def remove(self, name: str) -> Stream | None:
        """Forget every stream named ``name`` now; a live one ends ``STOPPED`` (owner's side:
        no ``on_terminate``). Returns the live one, else the latest ended one, else ``None``.
        """
        named = [s for s in self._streams.values() if s.name == name]
        found = self._live(name) or (named[-1] if named else None)
        for stream in named:
            del self._streams[stream.media_session_id]
            stream.end(StreamStatus.STOPPED)
        return found

    def terminate(self, *, name: str | None = None, media_session_id: str | None = None) -> Stream:
        """Stop a stream from outside (REST): ``STOPPED``, subscribers end, owner told.

        By ``media_session_id`` or ``name`` (the live one, else the latest ended
        one), or both; an ended stream is returned as it is; else :class:`NotFound`.
        """
        if name is None and media_session_id is None:
            raise InvalidRequest("terminate needs a name or a media_session_id")
        stream = (
            self.by_media_session_id(media_session_id)
            if media_session_id is not None
            else self.get(name or "")
        )
        if stream is None or (name is not None and stream.name != name):
            if media_session_id is not None:
                raise NotFound(
                    f"no stream with mediaSessionId {media_session_id!r}", field="mediaSessionId"
                )
            raise NotFound(f"no stream named {name!r}", field="name")
        if stream.status.is_final:
            return stream
        stream.end(StreamStatus.STOPPED)
        if stream.on_terminate is not None:
            try:
                stream.on_terminate(stream)
            except Exception:
                # The stream is stopped either way; the owner's failure is its own to log.
                log.exception("stream %s: on_terminate failed", stream.name)
        return stream

    # -- the REST layer's StreamsAPI --------------------------------------------------
    def find_streams(
        self,
        *,
        name: str | None = None,
        status: StreamStatus | None = None,
        media_session_id: str | None = None,
    ) -> list[StreamInfo]:
        """Snapshots of :meth:`find` (``/stream/find``)."""
        return [s.snapshot() for s in self.find(name, status, media_session_id)]

    def all_streams(self) -> list[StreamInfo]:
        """Snapshots of :meth:`all` (``/stream/find_all``)."""
        return [s.snapshot() for s in self.all()]

    async def terminate_stream(
        self, *, name: str | None = None, media_session_id: str | None = None
    ) -> StreamInfo:
        """The snapshot of :meth:`terminate` (``/stream/terminate``)."""
        return self.terminate(name=name, media_session_id=media_session_id).snapshot()

    # -- internals ------------------------------------------------------------------------
    def _notify_status(self, stream: Stream, status: StreamStatus) -> None:
        # A copy: a listener may unsubscribe (itself or another) while being called.
        for listener in tuple(self._status_listeners):
            try:
                listener(stream, status)
            except Exception:
                # One failing listener neither breaks the producer nor silences the others.
                log.exception("stream %s: status listener %r failed", stream.name, listener)

    def _live(self, name: str) -> Stream | None:
        for stream in self._streams.values():
            if stream.name == name and not stream.status.is_final:
                return stream
        return None

    def _forget_old(self) -> None:
        cutoff = self._clock() - self.retention
        for key in [
            key
            for key, stream in self._streams.items()
            if stream.ended_at is not None and stream.ended_at <= cutoff
        ]:
            del self._streams[key]
