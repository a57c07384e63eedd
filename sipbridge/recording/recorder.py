"""Recorder: one registry stream written to files by a worker thread.

Theory of operation
-------------------
Same two halves as :class:`rtmp.pusher.RtmpPusher`, joined by a bounded
:class:`queue.Queue`:

* on the event loop, a task reads the stream's
  :class:`~sipbridge.registry.Subscription` and puts each frame into the queue
  without waiting. A full queue (the disk cannot keep up) drops the frame,
  counted in ``stats.dropped``; video is then dropped up to the next keyframe,
  which is asked for;
* the worker thread owns everything blocking: PyAV's muxer, the files, the
  optional AAC encoder, renames. It feeds a
  :class:`~sipbridge.recording.segments.FileSequence`, which decides where
  each frame goes (see there for cuts and timestamps).

Statuses: ``PENDING`` until the first file is open, ``RECORDING`` while files
are written, ``STOPPED`` once the stream ended or :meth:`Recorder.stop` was
called and every file was finished cleanly, ``FAILED`` when a file could not
be created or written (full disk, unwritable directory...): ``info`` then
says ``Failed by recorder error: <reason>``, what reached the disk stays
(playable up to its last complete cluster) and the subscription is closed;
the stream and its call are not affected.

:meth:`Recorder.rotate` ends the current file at the next keyframe and starts
a new one (optionally with a new configuration); the request travels in the
queue, so every frame queued before it lands in the old file.

Status changes and file events are applied on the event loop (``on_status``
and ``on_file`` run there); ``stats`` counters are written by the worker
thread and are approximate reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import av

from rtmp.urls import describe_error
from rtp.frame import MediaFrame
from sipbridge.recording.config import RecorderConfig
from sipbridge.recording.names import PathEscape
from sipbridge.recording.segments import FileSequence, RecordedFile, SequenceEvents
from sipbridge.registry import Stream, Subscription

__all__ = ["FAILED_INFO", "Recorder", "RecorderStats", "RecordingStatus"]

log = logging.getLogger(__name__)

FAILED_INFO = "Failed by recorder error"
#: How long stop() lets the worker write what is already queued before finishing.
DRAIN_TIMEOUT = 2.0
#: The longest stop() waits for the worker to finish its files.
JOIN_TIMEOUT = 10.0
_POLL = 0.1


class RecordingStatus(enum.StrEnum):
    """The life of a recording."""

    PENDING = "PENDING"
    RECORDING = "RECORDING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (RecordingStatus.STOPPED, RecordingStatus.FAILED)


@dataclass
class RecorderStats:
    """Counters of one recording (written by the worker thread)."""

    frames_written: int = 0
    bytes_written: int = 0
    dropped: int = 0
    files: int = 0
    cpu_seconds: float = 0.0
    """CPU time of the worker thread (muxing, optional AAC encoding, file writes)."""


@dataclass(frozen=True, slots=True)
class _Item:
    frame: MediaFrame
    has_video: bool
    has_audio: bool


@dataclass(frozen=True, slots=True)
class _Cut:
    config: RecorderConfig | None


class _End:
    """Queued after the last frame of an ended stream."""


_END = _End()
_QueueItem = _Item | _Cut | _End


class Recorder:
    """Records one :class:`~sipbridge.registry.Stream` (module doc).

    ``on_status(status, info)`` and ``on_file(file)`` (a file opened or finished:
    see ``file.finished``) run on the event loop.
    """

    def __init__(
        self,
        stream: Stream,
        config: RecorderConfig,
        *,
        recording_id: str | None = None,
        on_status: Callable[[RecordingStatus, str | None], None] | None = None,
        on_file: Callable[[RecordedFile], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.stream = stream
        self.config = config
        self.recording_id = recording_id or str(uuid.uuid4())
        self.on_status = on_status
        self.on_file = on_file
        self.status = RecordingStatus.PENDING
        self.info: str | None = None
        self.stats = RecorderStats()
        self.files: list[RecordedFile] = []
        self.current: RecordedFile | None = None
        self._wall_clock = wall_clock
        self._queue: queue.Queue[_QueueItem] = queue.Queue(maxsize=config.queue_frames)
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._video_gap = False
        self._stopped = False
        self._drain_deadline: float | None = None  # worker thread only

    def __repr__(self) -> str:
        return f"Recorder({self.stream.name!r}, {self.status.value})"

    async def start(self) -> None:
        """Subscribe (from the cached GOP), start the worker thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("this recorder was already started")
        self._loop = asyncio.get_running_loop()
        self._subscription = self.stream.subscribe(max_queue=max(300, self.config.queue_frames))
        self._thread = threading.Thread(
            target=self._run, name=f"record-{self.stream.name}", daemon=True
        )
        self._thread.start()
        self._reader = asyncio.create_task(self._read(), name=f"record-read-{self.stream.name}")

    def rotate(self, config: RecorderConfig | None = None) -> None:
        """End the current file at the next keyframe and start a new one (with ``config``)."""
        if config is not None:
            self.config = config
        if self._stopped or self.status.is_final:
            return
        try:
            self._queue.put_nowait(_Cut(config))
        except queue.Full:
            # The disk is behind anyway; the cut waits for room rather than being lost.
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, self._queue.put, _Cut(config))
        self.stream.request_keyframe()

    def fail(self, info: str) -> None:
        """Mark a recorder that could not start ``FAILED`` with ``info`` (nothing to release)."""
        self._set_status(RecordingStatus.FAILED, info)

    async def stop(self) -> None:
        """Finish every file cleanly (bounded), join the worker, unsubscribe. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._subscription is not None:
            while (frame := self._subscription.get_nowait()) is not None:
                self._offer(frame)
            self._subscription.close()
        # Only now: the worker takes "stopping and nothing queued" as the end of the drain.
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            # The worker's posted status/file events were queued on the loop before it
            # exited, so they have run by the time this join's result comes back.
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT)
            if thread.is_alive():
                log.error(
                    "recording %s: the writer did not finish within %.0f s",
                    self.stream.name,
                    JOIN_TIMEOUT,
                )
        if not self.status.is_final:
            self._set_status(RecordingStatus.STOPPED, self.info)

    # -- event loop side -------------------------------------------------------------------
    async def _read(self) -> None:
        assert self._subscription is not None
        try:
            async for frame in self._subscription:
                self._offer(frame)
        finally:
            # After stop() the end is its business: it queues what is left first.
            if not self._stopped:
                self._ended.set()
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(_END)

    def _offer(self, frame: MediaFrame) -> None:
        video = frame.kind == "video"
        if video and self._video_gap and not frame.keyframe:
            self.stats.dropped += 1
            return
        item = _Item(
            frame=frame,
            has_video=self.stream.has_video,
            has_audio="audio" in self.stream.tracks,
        )
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.stats.dropped += 1
            if video:
                self._video_gap = True
                self.stream.request_keyframe()
            return
        if video:
            self._video_gap = False

    def _set_status(self, status: RecordingStatus, info: str | None) -> None:
        if self.status.is_final:
            return
        if status is self.status and info == self.info:
            return
        self.status = status
        self.info = info
        level = logging.WARNING if status is RecordingStatus.FAILED else logging.INFO
        log.log(
            level,
            "recording %s of stream %s: %s%s",
            self.recording_id,
            self.stream.name,
            status.value,
            f" ({info})" if info else "",
            extra={"stream": self.stream.name},
        )
        if status is RecordingStatus.FAILED:
            if self._reader is not None:
                self._reader.cancel()
            if self._subscription is not None:
                self._subscription.close()
        if self.on_status is not None:
            try:
                self.on_status(status, info)
            except Exception:
                log.exception("recording %s: on_status failed", self.recording_id)

    def _file_event(self, record: RecordedFile, *, closed: bool) -> None:
        # ``record`` is shared with the worker thread, which may have closed the file
        # before this "opened" event runs here: the event kind decides, not its fields.
        if closed:
            if self.current is record:
                self.current = None
            self.files.append(record)
        else:
            if not (record.finished or record.error is not None):
                self.current = record
            self._set_status(RecordingStatus.RECORDING, None)
        if self.on_file is not None:
            try:
                self.on_file(record)
            except Exception:
                log.exception("recording %s: on_file failed", self.recording_id)

    # -- worker thread side ----------------------------------------------------------------
    def _post(self, fn: Callable[[], object]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(fn)

    def _run(self) -> None:
        events = SequenceEvents(
            file_opened=lambda record: self._post(lambda: self._file_event(record, closed=False)),
            file_closed=lambda record: self._post(lambda: self._file_event(record, closed=True)),
            request_keyframe=lambda: self._post(self.stream.request_keyframe),
        )
        sequence = FileSequence(
            self.config,
            stream_name=self.stream.name,
            media_session_id=self.stream.media_session_id,
            recording_id=self.recording_id,
            events=events,
            wall_clock=self._wall_clock,
        )
        try:
            self._pump(sequence)
            sequence.finish()
        except (av.FFmpegError, OSError, PathEscape) as exc:
            # PathEscape: a link in the output directory points outside it.
            reason = describe_error(exc)
            if isinstance(exc, OSError) and exc.filename and not isinstance(exc, av.FFmpegError):
                reason = f"{reason}: {exc.filename}"
            log.warning("recording %s: %s", self.stream.name, reason)
            sequence.abort(reason)
            self._post(lambda: self._set_status(RecordingStatus.FAILED, f"{FAILED_INFO}: {reason}"))
            return
        except Exception as exc:
            log.exception("recording %s: writer crashed", self.stream.name)
            sequence.abort(describe_error(exc))
            self._post(lambda: self._set_status(RecordingStatus.FAILED, FAILED_INFO))
            return
        finally:
            self._count(sequence)
        self._post(lambda: self._set_status(RecordingStatus.STOPPED, None))

    def _count(self, sequence: FileSequence) -> None:
        stats = self.stats
        stats.frames_written = sequence.frames_written
        stats.bytes_written = sequence.bytes_written
        stats.files = sequence.files_finished
        stats.cpu_seconds = time.thread_time()

    def _pump(self, sequence: FileSequence) -> None:
        count = 0
        while True:
            item = self._next_item()
            if item is None:
                return
            if isinstance(item, _Cut):
                sequence.cut(item.config)
                continue
            sequence.feed(item.frame, declares_video=item.has_video, declares_audio=item.has_audio)
            count += 1
            if count % 50 == 0:
                self._count(sequence)

    def _next_item(self) -> _Item | _Cut | None:
        """The next queued item; ``None`` at the end of the stream. After stop(), what is
        queued still comes for :data:`DRAIN_TIMEOUT` seconds, then ``None``."""
        while True:
            if self._stopping.is_set():
                if self._drain_deadline is None:
                    self._drain_deadline = time.monotonic() + DRAIN_TIMEOUT
                if time.monotonic() > self._drain_deadline:
                    return None
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return None
            else:
                try:
                    item = self._queue.get(timeout=_POLL)
                except queue.Empty:
                    if self._ended.is_set() and self._queue.empty():
                        return None
                    continue
            if isinstance(item, _End):
                return None
            return item
