"""One stream's frames to all its WebRTC viewers: one reader, one timer, one packet per frame.

Theory of operation
-------------------
A :class:`StreamFanout` exists while a stream has viewers. It holds the
stream's one :class:`~sipbridge.registry.Subscription` and one task that reads
it; for every frame published it:

1. builds the :class:`av.Packet` once (:func:`~webrtc.tracks.make_packet`,
   per codec clock rate), shared by every viewer (aiortc's ``pack()`` only
   reads it);
2. offers it to each viewer's :class:`ViewerFeed`, which admits it on the
   viewer's :class:`~webrtc.schedule.ViewerSchedule` (due time, drops) and
   pushes the due time and the shared packet to the viewer's track of that kind
   (no object per viewer and frame: fewer survivors for the garbage collector),
   or drops it
   when the viewer's queue is full.

Nothing waits in that loop: ``Stream.publish`` never waits either, so neither
the call nor the other viewers notice a slow viewer. The tracks' senders take
their frames when due, woken by the fan-out's one
:class:`~webrtc.tracks.ReleaseTimer`, a bounded slice of senders per turn of
the event loop (``webrtc/tracks.py``).

A viewer's bounded queue is what its two tracks hold: at most
``queue_frames`` frames (audio and video together) admitted and not yet taken
by its senders, plus the GOP it joined on. A viewer whose senders stop reading
fills it and then loses frames (video up to the next keyframe, which the
stream is asked for); when they read again, frames gone stale are dropped at
release (``ViewerSchedule.release``) and video resumes at a keyframe.

Joining (:meth:`StreamFanout.join`): the frames the fan-out's subscription
already holds are first handed to the current viewers, so the stream's cached
GOP (read through a short-lived subscription) is exactly what the new viewer
lacks: it starts on that keyframe, or, with none cached, the stream is asked
for one and its video waits for it (audio plays meanwhile).

When the stream ends, each viewer is told (:attr:`ViewerFeed.ended`) and may
play out what it holds; the fan-out closes (subscription, task, timer) when its
last viewer leaves. :class:`StreamFanouts` is the table of a gateway's
fan-outs, one per live stream with viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from rtp.frame import MediaFrame, MediaKind
from sipbridge.registry import Stream, StreamEnded, Subscription
from webrtc.schedule import ViewerSchedule
from webrtc.tracks import (
    SLICE_PACKETS,
    PassthroughTrack,
    ReleaseTimer,
    SharedFrame,
    make_packet,
)

__all__ = ["StreamFanout", "StreamFanouts", "ViewerFeed"]

log = logging.getLogger(__name__)


class ViewerFeed:
    """One viewer's side of a :class:`StreamFanout`: its schedule, tracks and bounded queue.

    ``tracks`` maps each kind sent to the viewer's track; ``max_queue`` bounds
    the frames they hold (GOP at join aside). ``request_keyframe`` is called when
    the viewer lost video (the stream rate-limits it). :attr:`ended` resolves to
    ``"closed"`` when the stream ended, ``"failed"`` when feeding it failed.
    """

    def __init__(
        self,
        schedule: ViewerSchedule,
        tracks: Mapping[MediaKind, PassthroughTrack],
        *,
        max_queue: int,
        request_keyframe: Callable[[], object],
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.schedule = schedule
        self.tracks = dict(tracks)
        self.max_queue = max_queue
        self.request_keyframe = request_keyframe
        self.fanout: StreamFanout | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Frames of the joining GOP not yet taken: they do not count against max_queue.
        self._burst = 0
        # Frames admitted and not yet taken by a sender (counted here: this is per frame).
        self._held = 0

    def __len__(self) -> int:
        """Frames held by the viewer's tracks."""
        return self._held

    @property
    def dropped(self) -> int:
        """Frames this viewer lost: queue overflow, stale at release, codec, no ``pts``."""
        return self.schedule.dropped

    def admit(self, frame: MediaFrame, now: float) -> tuple[PassthroughTrack, float] | None:
        """The track and due time for ``frame``, or ``None`` when this viewer drops it."""
        track = self.tracks.get(frame.kind)
        if track is None:
            return None
        schedule = self.schedule
        if self._held >= self.max_queue + self._burst:
            schedule.overflow(frame.kind)
            due = None
        else:
            due = schedule.admit(frame, now)
        if schedule.keyframe_wanted:
            schedule.keyframe_wanted = False
            self.request_keyframe()
        if due is None:
            return None
        self._held += 1  # the caller pushes it
        return track, due

    def releasable(self, kind: MediaKind, due: float, keyframe: bool, now: float) -> bool:
        """The tracks' :data:`~webrtc.tracks.ReleaseGate`: send the frame taken at ``now``?"""
        self._held -= 1
        if self._burst:
            self._burst -= 1
        schedule = self.schedule
        send = schedule.release(kind, keyframe, due, now)
        if schedule.keyframe_wanted:
            schedule.keyframe_wanted = False
            self.request_keyframe()
        return send

    def prime(self, frames: list[MediaFrame], now: float) -> None:
        """Queue the GOP the viewer joins on (it may exceed ``max_queue``)."""
        self._burst = len(frames)
        for frame in frames:
            admitted = self.admit(frame, now)
            if admitted is not None and frame.pts is not None:
                track, due = admitted
                packet = make_packet(frame, track.clock_rate)
                track.push(due, (packet, frame.keyframe, len(frame.payload)))

    def end(self, state: str) -> None:
        """The stream ended (``"closed"``) or feeding failed (``"failed"``)."""
        if not self.ended.done():
            self.ended.set_result(state)

    def leave(self) -> None:
        """Stop being fed (the viewer is closing). Idempotent."""
        fanout, self.fanout = self.fanout, None
        if fanout is not None:
            fanout.leave(self)


class StreamFanout:
    """Every viewer of one stream, fed by one subscription and one task (module docstring).

    Raises :class:`~sipbridge.registry.StreamEnded` when the stream has ended.
    ``on_empty`` is called once the fan-out closed because its last viewer left.
    """

    def __init__(
        self,
        stream: Stream,
        *,
        queue_frames: int,
        slice_packets: int = SLICE_PACKETS,
        on_empty: Callable[[StreamFanout], None] | None = None,
    ) -> None:
        self.stream = stream
        self.on_empty = on_empty
        self.timer = ReleaseTimer(slice_packets=slice_packets)
        self.frames = 0
        self._feeds: list[ViewerFeed] = []
        # from_gop=True: with a GOP cached its video has no gap to wait out. What it
        # queues now is handed to no one (the first viewer gets the GOP in join()).
        self._subscription: Subscription = stream.subscribe(max_queue=queue_frames, from_gop=True)
        self._seen_dropped = 0
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"whep-fanout-{stream.name}"
        )

    def __len__(self) -> int:
        return len(self._feeds)

    @property
    def closed(self) -> bool:
        return self._closed

    def join(self, feed: ViewerFeed) -> None:
        """Start feeding ``feed``, on the stream's cached GOP (see the module docstring).

        Raises :class:`~sipbridge.registry.StreamEnded` when the stream has ended.
        """
        if self._closed:
            raise RuntimeError("this fan-out is closed")
        now = asyncio.get_running_loop().time()
        self._drain(now)
        gop = self.stream.subscribe(max_queue=1, from_gop=True)  # asks for a keyframe if none
        try:
            frames = []
            while (frame := gop.get_nowait()) is not None:
                frames.append(frame)
        finally:
            gop.close()
        for track in feed.tracks.values():
            track.attach(self.timer, feed.releasable)
        feed.fanout = self
        feed.prime(frames, now)
        self._feeds.append(feed)

    def leave(self, feed: ViewerFeed) -> None:
        """Stop feeding ``feed``; the last one to leave closes the fan-out."""
        if feed in self._feeds:
            self._feeds.remove(feed)
        if not self._feeds and not self._closed:
            self.close()
            if self.on_empty is not None:
                self.on_empty(self)

    def close(self) -> None:
        """Leave the stream, stop the task and the timer. Idempotent; viewers still
        attached are told ``"closed"``."""
        if self._closed:
            return
        self._closed = True
        self._subscription.close()
        self._task.cancel()
        self.timer.close()
        for feed in self._feeds:
            feed.end("closed")

    async def wait_closed(self) -> None:
        """Wait for the task to end (after :meth:`close`)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # -- the task ---------------------------------------------------------------------
    async def _run(self) -> None:
        subscription = self._subscription
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame: MediaFrame | None = await subscription.get()
                now = loop.time()
                while frame is not None:  # one wakeup for whatever queued meanwhile
                    self._fan(frame, now)
                    frame = subscription.get_nowait()
        except StreamEnded:
            log.info("whep fan-out %s: stream ended", self.stream.name)
            for feed in list(self._feeds):
                feed.end("closed")

    def _drain(self, now: float) -> None:
        while (frame := self._subscription.get_nowait()) is not None:
            self._fan(frame, now)

    def _fan(self, frame: MediaFrame, now: float) -> None:
        self.frames += 1
        subscription = self._subscription
        if subscription.dropped != self._seen_dropped:
            # The fan-out itself lost frames (the loop starved it): every viewer's video
            # chain is broken; the subscription has asked for a keyframe already.
            self._seen_dropped = subscription.dropped
            for feed in self._feeds:
                feed.schedule.overflow("video")
                feed.schedule.keyframe_wanted = False
        # One shared item per clock rate (one in practice), whatever the number of viewers.
        shared: dict[int, SharedFrame] = {}
        failed: list[ViewerFeed] = []
        for feed in self._feeds:
            try:
                admitted = feed.admit(frame, now)
                if admitted is None:
                    continue
                track, due = admitted
                rate = track.clock_rate
                item = shared.get(rate)
                if item is None:
                    item = shared[rate] = (
                        make_packet(frame, rate),
                        frame.keyframe,
                        len(frame.payload),
                    )
                track.push(due, item)
            except Exception:
                # One viewer's failure must not stop the others: it ends, they go on.
                log.exception("whep fan-out %s: feeding a viewer failed", self.stream.name)
                failed.append(feed)
        for feed in failed:
            self._feeds.remove(feed)
            feed.end("failed")


class StreamFanouts:
    """The fan-outs of a gateway, one per stream that has viewers (created on demand)."""

    def __init__(self, *, queue_frames: int, slice_packets: int = SLICE_PACKETS) -> None:
        self.queue_frames = queue_frames
        self.slice_packets = slice_packets
        self._by_stream: dict[Stream, StreamFanout] = {}
        self._closing: set[StreamFanout] = set()

    def __len__(self) -> int:
        return len(self._by_stream)

    def get(self, stream: Stream) -> StreamFanout | None:
        return self._by_stream.get(stream)

    def join(self, stream: Stream, feed: ViewerFeed) -> StreamFanout:
        """Feed ``feed`` from ``stream``'s fan-out, made when it has none.

        Raises :class:`~sipbridge.registry.StreamEnded` when the stream has ended.
        """
        fanout = self._by_stream.get(stream)
        if fanout is None or fanout.closed:
            fanout = StreamFanout(
                stream,
                queue_frames=self.queue_frames,
                slice_packets=self.slice_packets,
                on_empty=self._forget,
            )
            self._by_stream[stream] = fanout
        try:
            fanout.join(feed)
        except BaseException:
            if not len(fanout):
                fanout.leave(feed)  # closes the fan-out made for nobody
            raise
        return fanout

    async def close(self) -> None:
        """Close every fan-out and wait for their tasks."""
        fanouts = [*self._by_stream.values(), *self._closing]
        self._by_stream.clear()
        for fanout in fanouts:
            fanout.close()
        for fanout in fanouts:
            await fanout.wait_closed()
        self._closing.clear()

    def _forget(self, fanout: StreamFanout) -> None:
        if self._by_stream.get(fanout.stream) is fanout:
            del self._by_stream[fanout.stream]
        # Its task ends on the next turn of the loop; keep it referenced until then.
        self._closing.add(fanout)
        fanout._task.add_done_callback(lambda _: self._closing.discard(fanout))
