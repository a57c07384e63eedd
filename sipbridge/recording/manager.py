"""RecordingManager: every recording of the gateway (``/stream/startRecording``, ``/recorder/*``).

Theory of operation
-------------------
A recording is one :class:`~sipbridge.recording.recorder.Recorder` on one
registry stream, identified by a ``recordingId`` (uuid4) and reported with
the *stream's* ``mediaSessionId`` and name (what WCS's ``/recorder/find_all``
answers: ``[{fileName, mediaSessionId}]``, plus our status and file list).

* :meth:`RecordingManager.start` finds the stream by ``media_session_id`` or
  ``stream_name``, checks the request's template and rotation (400), that
  the output directory exists or can be made and takes a write (a clear 500,
  or 507 when the disk is full), then starts a recorder. Starting a stream
  that is already recording ends its current file and starts a new one (at
  the next keyframe) with the request's configuration: same recording.
* :meth:`RecordingManager.stop` finishes the stream's live recording (every
  file closed cleanly, renamed, hooks run) and answers it; an ended one is
  answered as it is; 404 when the stream was never recorded.
* :meth:`RecordingManager.stream_published` is the gateway's hook for every
  stream a call publishes: with ``[record] auto = true`` it starts a
  recording; a failure (bad directory) becomes a ``FAILED`` recording visible
  in :meth:`find_all` and a log line, never an exception into the call.
* A recording ends by itself when its stream ends (the call hangs up).
  :meth:`RecordingManager.close` (SIGTERM) finishes every file, bounded.
* When a file is finished (or failed), the finish hooks
  (:mod:`sipbridge.recording.hooks`) run in background tasks.

Ended recordings stay visible for ``retention`` seconds, like calls and pushes.
Everything here runs on the event loop's thread; disk checks run in threads.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from sipbridge.errors import Conflict, GatewayError, InvalidRequest, NotFound
from sipbridge.recording.config import RecorderConfig, parse_rotation
from sipbridge.recording.hooks import FileEvent, FinishHooks
from sipbridge.recording.names import (
    PARTIAL,
    PathEscape,
    TemplateError,
    parse_template,
    resolve_inside,
)
from sipbridge.recording.recorder import FAILED_INFO, Recorder, RecordingStatus
from sipbridge.recording.segments import RecordedFile
from sipbridge.registry import Stream, StreamRegistry
from sipbridge.settings import RecordSettings

__all__ = [
    "RecordingFileInfo",
    "RecordingInfo",
    "RecordingManager",
    "RecordingStorageError",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: A directory with less free space than this refuses new recordings (507).
MIN_FREE_BYTES = 1024 * 1024
#: The longest close() waits for recorders, then for the hooks of their last files.
CLOSE_TIMEOUT = 15.0


class RecordingStorageError(GatewayError):
    """The output directory cannot take a recording: 507 when the disk is full, else 500.

    The message names the directory and the reason (never a traceback).
    """

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.status = 507 if full else 500


class RecordingFileInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """One file of a recording (times in Unix milliseconds, ``duration`` in seconds)."""

    file_name: str
    start_time: int
    end_time: int | None
    duration: float
    bytes: int
    finished: bool
    error: str | None


class RecordingInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """A recording as ``/recorder/find_all`` reports it (camelCase JSON).

    ``media_session_id`` and ``stream_name`` are the recorded stream's;
    ``file_name`` is the file being written, else the last one (relative to the
    output directory); ``files`` lists the finished ones.
    """

    recording_id: str
    media_session_id: str
    stream_name: str
    call_id: str | None
    status: RecordingStatus
    info: str | None
    file_name: str | None
    files: list[RecordingFileInfo]
    created_at: int
    frames_written: int
    bytes_written: int
    dropped: int


def _file_info(record: RecordedFile) -> RecordingFileInfo:
    return RecordingFileInfo(
        file_name=record.name,
        start_time=round(record.start_time * 1000),
        end_time=None if record.end_time is None else round(record.end_time * 1000),
        duration=round(record.duration, 3),
        bytes=record.bytes,
        finished=record.finished,
        error=record.error,
    )


class _Recording:
    """A recorder plus what the manager reports about it."""

    def __init__(self, recorder: Recorder, created_at: float) -> None:
        self.recorder = recorder
        self.created_at = created_at
        self.ended_at: float | None = None
        self.stopping = False

    @property
    def stream(self) -> Stream:
        return self.recorder.stream

    @property
    def is_final(self) -> bool:
        return self.recorder.status.is_final

    def snapshot(self) -> RecordingInfo:
        recorder = self.recorder
        current = recorder.current or (recorder.files[-1] if recorder.files else None)
        stats = recorder.stats
        return RecordingInfo(
            recording_id=recorder.recording_id,
            media_session_id=self.stream.media_session_id,
            stream_name=self.stream.name,
            call_id=self.stream.call_id,
            status=recorder.status,
            info=recorder.info,
            file_name=current.name if current is not None else None,
            files=[_file_info(record) for record in recorder.files],
            created_at=round(self.created_at * 1000),
            frames_written=stats.frames_written,
            bytes_written=stats.bytes_written,
            dropped=stats.dropped,
        )


class RecordingManager:
    """Every recording of the gateway (module doc); the REST layer's ``RecordingsAPI``."""

    def __init__(
        self,
        streams: StreamRegistry,
        settings: RecordSettings,
        *,
        clock: Clock = time.time,
        retention: float = 300.0,
    ) -> None:
        self.streams = streams
        self.settings = settings
        self.retention = retention
        self._clock = clock
        self._hooks = FinishHooks(
            settings.on_finish_command, settings.on_finish_url, timeout=settings.hook_timeout
        )
        self._recordings: dict[str, _Recording] = {}  # by recording id, in creation order
        self._background: set[asyncio.Task[None]] = set()
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def config(self) -> RecorderConfig:
        """The recorder configuration the ``[record]`` settings describe."""
        s = self.settings
        return RecorderConfig(
            directory=Path(s.directory),
            template=parse_template(s.file_template),
            format=s.format,
            audio=s.audio,
            aac_bitrate=s.aac_bitrate,
            aac_sample_rate=s.aac_sample_rate,
            rotate_seconds=s.rotate_duration,
            rotate_bytes=s.rotate_size,
            fragment=s.fragment_duration,
        )

    # -- the gateway-facing API ---------------------------------------------------------------
    async def start(
        self,
        stream_name: str | None = None,
        media_session_id: str | None = None,
        *,
        file_template: str | None = None,
        rotation: object = None,
    ) -> RecordingInfo:
        """Record a live stream, or cut a new file of its live recording (module doc).

        Raises :class:`InvalidRequest` (no key, bad template or rotation),
        :class:`NotFound` (no such live stream), :class:`Conflict` (shutting down),
        :class:`RecordingStorageError` (the directory cannot take files).
        """
        config = self._request_config(file_template, rotation)
        stream = self._find_stream(stream_name, media_session_id)
        if stream.status.is_final:
            raise NotFound(f"stream {stream.name!r} has ended", field=_key_field(media_session_id))
        if self._closing:
            raise Conflict("the recorder is shutting down")
        await asyncio.to_thread(_check_output, config, stream)
        live = self._live_of(stream)
        if live is not None:
            live.recorder.rotate(config)
            log.info("recording %s: new file requested", live.recorder.recording_id)
            return live.snapshot()
        recording = self._create(stream, config)
        await recording.recorder.start()
        return recording.snapshot()

    async def stop(
        self, stream_name: str | None = None, media_session_id: str | None = None
    ) -> RecordingInfo:
        """Finish the stream's live recording (every file closed cleanly); answer it.

        An ended recording answers as it is; :class:`NotFound` when none exists.
        """
        stream = self._find_stream(stream_name, media_session_id, live_only=False)
        recording = self._live_of(stream) or self._latest_of(stream)
        if recording is None:
            raise NotFound(
                f"stream {stream.name!r} is not being recorded", field=_key_field(media_session_id)
            )
        await self._stop(recording)
        return recording.snapshot()

    def find_all(self) -> list[RecordingInfo]:
        """Every recording kept (live and recently ended), oldest first."""
        self._reap()
        return [recording.snapshot() for recording in self._recordings.values()]

    def find(
        self, *, stream_name: str | None = None, media_session_id: str | None = None
    ) -> list[RecordingInfo]:
        """Recordings of the streams matching every given filter, oldest first."""
        self._reap()
        return [
            recording.snapshot()
            for recording in self._recordings.values()
            if (stream_name is None or recording.stream.name == stream_name)
            and (media_session_id is None or recording.stream.media_session_id == media_session_id)
        ]

    def stream_published(self, stream: Stream) -> None:
        """A call published ``stream``: record it when ``[record] auto`` is on. Never raises."""
        if not self.settings.auto or self._closing or stream.status.is_final:
            return
        if self._live_of(stream) is not None:
            return
        self._spawn(self._auto_start(stream), f"record-auto-{stream.name}")

    async def close(self) -> None:
        """Finish every recording cleanly (SIGTERM), then let the last hooks run; bounded."""
        self._closing = True
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)
        live = [r for r in self._recordings.values() if not r.is_final]
        if live:
            stops = asyncio.gather(*(self._stop(r) for r in live))
            try:
                await asyncio.wait_for(stops, CLOSE_TIMEOUT)
            except TimeoutError:
                log.error("recordings did not finish within %.0f s", CLOSE_TIMEOUT)
        if self._hook_tasks:
            _, pending = await asyncio.wait(
                list(self._hook_tasks), timeout=self.settings.hook_timeout + 2.0
            )
            for task in pending:
                task.cancel()

    # -- internals -------------------------------------------------------------------------
    def _request_config(self, file_template: str | None, rotation: object) -> RecorderConfig:
        config = self.config
        template = None
        if file_template:
            try:
                template = parse_template(file_template)
            except TemplateError as exc:
                raise InvalidRequest(str(exc), field="config.fileTemplate") from None
        parsed = None
        if rotation is not None:
            try:
                parsed = parse_rotation(rotation)
            except ValueError as exc:
                raise InvalidRequest(str(exc), field="config.rotation") from None
        return config.with_overrides(template=template, rotation=parsed)

    def _find_stream(
        self, stream_name: str | None, media_session_id: str | None, *, live_only: bool = True
    ) -> Stream:
        if not stream_name and not media_session_id:
            raise InvalidRequest("a mediaSessionId or a name is required", field="mediaSessionId")
        if media_session_id:
            stream = self.streams.by_media_session_id(media_session_id)
            if stream is None or (stream_name and stream.name != stream_name):
                raise NotFound(
                    f"no stream with mediaSessionId {media_session_id!r}", field="mediaSessionId"
                )
            return stream
        assert stream_name is not None
        stream = self.streams.get(stream_name)
        if stream is None:
            # A stream that ended and was forgotten may still have a recording kept here.
            kept = [r.stream for r in self._recordings.values() if r.stream.name == stream_name]
            if kept and not live_only:
                return kept[-1]
            raise NotFound(f"no stream named {stream_name!r}", field="name")
        return stream

    def _live_of(self, stream: Stream) -> _Recording | None:
        for recording in self._recordings.values():
            if recording.stream is stream and not recording.is_final and not recording.stopping:
                return recording
        return None

    def _latest_of(self, stream: Stream) -> _Recording | None:
        found = [r for r in self._recordings.values() if r.stream is stream]
        return found[-1] if found else None

    def _create(self, stream: Stream, config: RecorderConfig) -> _Recording:
        self._reap()
        holder: list[_Recording] = []

        def on_status(status: RecordingStatus, info: str | None) -> None:
            if status.is_final and holder:
                holder[0].ended_at = self._clock()

        recorder = Recorder(
            stream,
            config,
            on_status=on_status,
            on_file=self._file_event,
            wall_clock=self._clock,
        )
        recording = _Recording(recorder, self._clock())
        holder.append(recording)
        self._recordings[recorder.recording_id] = recording
        log.info(
            "recording %s: stream %s -> %s",
            recorder.recording_id,
            stream.name,
            config.directory,
            extra={"stream": stream.name, "callId": stream.call_id},
        )
        return recording

    async def _auto_start(self, stream: Stream) -> None:
        if self._live_of(stream) is not None or stream.status.is_final:
            return
        config = self.config
        try:
            await asyncio.to_thread(_check_output, config, stream)
        except GatewayError as exc:
            log.warning("automatic recording of stream %s: %s", stream.name, exc.message)
            recording = self._create(stream, config)
            recording.recorder.fail(f"{FAILED_INFO}: {exc.message}")
            return
        if self._live_of(stream) is not None or stream.status.is_final or self._closing:
            return  # a REST start or the end of the call won the race
        recording = self._create(stream, config)
        try:
            await recording.recorder.start()
        except Exception as exc:
            log.exception("automatic recording of stream %s failed to start", stream.name)
            recording.recorder.fail(f"{FAILED_INFO}: {exc}")

    async def _stop(self, recording: _Recording) -> None:
        if recording.is_final or recording.stopping:
            return
        recording.stopping = True
        try:
            await recording.recorder.stop()
        except Exception:
            log.exception("recording %s: failed to stop", recording.recorder.recording_id)
        if recording.ended_at is None:
            recording.ended_at = self._clock()

    def _file_event(self, record: RecordedFile) -> None:
        if not (record.finished or record.error is not None):
            return
        owners = self._recordings.values()
        recording = next((r for r in owners if any(f is record for f in r.recorder.files)), None)
        if recording is None or not self._hooks.enabled:
            return
        stream = recording.stream
        event = FileEvent(
            recording_id=recording.recorder.recording_id,
            media_session_id=stream.media_session_id,
            stream_name=stream.name,
            file_name=record.name,
            path=str(record.path),
            status="FINISHED" if record.error is None else "FAILED",
            error=record.error,
            start_time=round(record.start_time * 1000),
            end_time=None if record.end_time is None else round(record.end_time * 1000),
            duration=round(record.duration, 3),
            bytes=record.bytes,
            audio_codec=record.audio_codec,
            video_codec=record.video_codec,
        )
        task = asyncio.get_running_loop().create_task(
            self._hooks.run(event), name=f"record-hook-{record.name}"
        )
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _reap(self) -> None:
        cutoff = self._clock() - self.retention
        for key in [
            key
            for key, recording in self._recordings.items()
            if recording.ended_at is not None and recording.ended_at <= cutoff
        ]:
            del self._recordings[key]


def _key_field(media_session_id: str | None) -> str:
    return "mediaSessionId" if media_session_id else "name"


def _check_output(config: RecorderConfig, stream: Stream) -> None:
    """Make the output directory, check it takes a write and has room, and that the
    template's names stay inside it for this stream. Blocking: run in a thread."""
    directory = config.directory
    if directory.exists() and not directory.is_dir():
        raise RecordingStorageError(f"recording directory {str(directory)!r} is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecordingStorageError(
            f"recording directory {str(directory)!r} cannot be created: {exc.strerror or exc}",
            full=exc.errno == errno.ENOSPC,
        ) from None
    values = {
        "streamName": stream.name,
        "mediaSessionId": stream.media_session_id,
        "startTime": "0",
        "endTime": PARTIAL,
        "audioCodec": "audio",
        "videoCodec": "video",
    }
    relative = config.template.render(values, extension=".x")
    try:
        resolve_inside(directory, relative)
    except PathEscape as exc:
        raise InvalidRequest(str(exc), field="config.fileTemplate") from None
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".sipbridge-probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise RecordingStorageError(
            f"recording directory {str(directory)!r} does not take files: {exc.strerror or exc}",
            full=exc.errno in (errno.ENOSPC, errno.EDQUOT),
        ) from None
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        raise RecordingStorageError(
            f"recording directory {str(directory)!r} is full ({free} bytes free)", full=True
        )
