"""RtmpPusher: one registry stream pushed to one RTMP (or FLV file) target.

Theory of operation
-------------------
Everything runs on the event loop, in two tasks joined by a bounded queue:

* a reader task takes the stream's :class:`~sipbridge.registry.Subscription` and
  puts each frame into the queue without ever waiting. When the queue is full the
  frame is dropped (counted in ``stats.dropped``); a dropped video frame breaks the
  decoding chain, so video is then dropped until the next keyframe, which is
  requested from the stream;
* a writer task owns the connection (:class:`rtmp.writer.ConnectionWriter`: our own
  RTMP publisher, :mod:`rtmp.connection`, or an FLV file) and the AAC encoder
  (:class:`rtmp.audio.AacTranscoder`, inline: tens of µs per frame).

No network wait blocks the loop or holds the GIL: the connection is asyncio
(docs/decisions.md, "RTMP publisher of our own").

The writer starts each connection on a video keyframe (on the first audio frame
for a stream without video), so the FLV opens with the sequence headers and an
IDR picture; frames before it are skipped. H.264 passes through: Annex-B access
units become AVCC (:mod:`rtmp.flv`), SPS/PPS go in the avcC sequence header,
and a changed SPS/PPS is sent as a new sequence header on the same connection.
Audio becomes AAC-LC, or with ``audio="copy"`` G.711 goes out as FLV
``SoundFormat`` 7 (A-law) / 8 (µ-law), 8 kHz mono (FLV spec v10.1, E.4.2.1);
Opus cannot go in FLV, so in ``copy`` mode it is still transcoded to AAC.

Timestamps: FLV milliseconds from the frames' ``pts`` (the call clock), relative to
the first frame written on the first connection (which is at 1024 / AAC sample rate,
room for the AAC priming packet before it), kept across reconnections so a
player that stays attached to the server sees one continuous timeline; per track
they are made strictly increasing (an equal or earlier value becomes last + 1 ms).

Failures: an error opening or writing (refused, dropped, a publish the server
rejects, ``connect_timeout`` or ``rw_timeout`` passed) closes the connection; the
status becomes ``PENDING`` with the error as ``info``, the writer waits
``retry_initial`` seconds (doubling up to ``retry_max``), discards what queued
meanwhile, asks the stream for a keyframe and reconnects on it. After
``max_retries`` consecutive failed attempts after the first one, the status is
``FAILED`` with ``info`` "Failed by RTMP writer error". The call is never affected.

Statuses (WCS transponder statuses), per connection:

* ``PENDING``: waiting for the frame to start on, connecting, or waiting to retry
  (``info`` then says why the last attempt failed);
* ``CONNECTED``: TCP (+ TLS) and the RTMP handshake are done and the server
  answered ``connect`` with NetConnection.Connect.Success (a file: opened);
* ``PROCESSED_REMOTE``: the server answered ``publish`` with
  ``onStatus NetStream.Publish.Start`` (it processes our stream) and the start
  keyframe (audio frame without video) has been handed to the connection, after
  ``onMetaData`` and the sequence headers. After a reconnection the push goes
  through ``CONNECTED`` and ``PROCESSED_REMOTE`` again;
* ``STOPPED`` / ``FAILED``: final.

What bounds a connection attempt: ``connect_timeout``, over TCP connect, TLS,
handshake, ``connect`` and ``publish`` together. A server that stops reading
(frozen, or a dead path without a reset) is noticed once the data in flight fills
the transport's buffer (``send_buffer`` bytes), our socket's send buffer (the same
``SO_SNDBUF``) and the server's receive window: the write then waits ``rw_timeout``
and fails; closing a healthy connection (``FCUnpublish``, ``deleteStream``) is
bounded by ``rw_timeout`` too. See ``tests/interop/test_rtmp_stall.py``.
With ``still_video``, a connection that starts without video gets a generated
still picture (:mod:`rtmp.still`) re-sent every second on the audio clock, for
platforms that refuse audio-only publishing. A stream "has no video" when it declares
no video track, or when it declares one but no video frame came within
:data:`STILL_WAIT` seconds (of pts) after its first audio frame; video that comes
later on that connection is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import av

from rtmp.audio import g711_silence
from rtmp.connection import RtmpError, TlsOptions
from rtmp.flv import has_avc_config
from rtmp.urls import describe_error, parse_rtmp_url, redact_url, url_secrets
from rtmp.writer import ConnectionWriter, is_network_url
from rtp.frame import MediaFrame
from sipbridge.logs import register_secret, unregister_secret
from sipbridge.registry import Stream, Subscription

__all__ = ["FAILED_INFO", "PushConfig", "PushStats", "PushStatus", "RtmpPusher"]

log = logging.getLogger(__name__)

FAILED_INFO = "Failed by RTMP writer error"
#: How long stop() lets the writer send what is already queued before finishing.
DRAIN_TIMEOUT = 2.0
#: While waiting for a keyframe, ask the stream again this often (seconds).
KEYFRAME_RETRY = 2.0
#: How far (seconds of pts) G.711 copy looks past the start frame for the audio codec.
AUDIO_LOOKAHEAD = 1.0
#: With ``still_video``: seconds of audio after which a declared but silent video track
#: is given up and the push starts audio-only, with the still picture.
STILL_WAIT = 1.0

#: What a connection attempt or a write may raise; any of them means "retry".
_CONNECTION_ERRORS = (RtmpError, OSError, ssl.SSLError, av.FFmpegError)


class PushStatus(enum.StrEnum):
    """WCS transponder (RTMP push) statuses."""

    PENDING = "PENDING"
    CONNECTED = "CONNECTED"
    PROCESSED_REMOTE = "PROCESSED_REMOTE"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (PushStatus.STOPPED, PushStatus.FAILED)


@dataclass(frozen=True)
class PushConfig:
    """Where and how to push. ``url``: ``rtmp://``/``rtmps://`` target (IPv6 literals in
    brackets allowed), or an FLV file path (``file:`` URL or plain path, for tests and
    recording-like uses). ``connect_timeout`` bounds a connection attempt (TCP, TLS,
    handshake, connect, publish); ``rw_timeout`` a write the server does not take.
    ``tls_verify``: for ``rtmps://``, require the server certificate to chain to
    ``tls_ca_file`` (PEM; ``None``: the system bundle, see :func:`system_ca_file`)
    and to match the host; off by default, as in FFmpeg. ``send_buffer``: bytes the
    transport and the TCP socket (``SO_SNDBUF``; Linux reserves twice that) may hold
    unsent, which bounds how long a frozen server goes unnoticed; 0 leaves the
    kernel's autotuning (megabytes) and asyncio's 64 KiB high-water mark."""

    url: str
    audio: Literal["aac", "copy"] = "aac"
    audio_bitrate: int = 128_000
    audio_sample_rate: int = 48_000
    still_video: bool = False
    connect_timeout: float = 10.0
    rw_timeout: float = 10.0
    send_buffer: int = 131072
    retry_initial: float = 1.0
    retry_max: float = 30.0
    max_retries: int | None = 10
    queue_frames: int = 1000
    tls_verify: bool = False
    tls_ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("push url must not be empty")
        if self.audio not in ("aac", "copy"):
            raise ValueError(f"push audio must be 'aac' or 'copy', got {self.audio!r}")
        if self.audio_sample_rate not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
            raise ValueError(f"unsupported AAC sample rate {self.audio_sample_rate}")
        if self.audio_bitrate <= 0 or self.rw_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("bitrate and timeouts must be positive")
        if self.retry_initial < 0 or self.retry_max < self.retry_initial:
            raise ValueError("retry_initial must be >= 0 and <= retry_max")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {self.max_retries}")
        if self.queue_frames < 1:
            raise ValueError(f"queue_frames must be at least 1, got {self.queue_frames}")
        if self.send_buffer < 0:
            raise ValueError(
                f"send_buffer must be >= 0 (0: the OS default), got {self.send_buffer}"
            )
        TlsOptions(verify=self.tls_verify, ca_file=self.tls_ca_file)  # checks the path
        if is_network_url(self.url):
            parse_rtmp_url(self.url)  # a malformed URL fails here, not at every retry

    def tls_options(self) -> TlsOptions:
        """The certificate checking ``rtmps://`` gets (:class:`rtmp.connection.TlsOptions`);
        :class:`FileNotFoundError` when verifying needs the system bundle and none exists
        (a failed connection attempt, reported in the push's ``info``)."""
        ca_file = self.tls_ca_file
        if self.tls_verify and ca_file is None:
            ca_file = system_ca_file()
        return TlsOptions(verify=self.tls_verify, ca_file=ca_file)


#: Where distributions keep the CA bundle.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/cert.pem",
)


def system_ca_file() -> str:
    """The first CA bundle of :data:`SYSTEM_CA_FILES` that exists; :class:`FileNotFoundError`
    when there is none (then ``tls_ca_file`` must be given)."""
    for candidate in SYSTEM_CA_FILES:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        errno.ENOENT,
        "tls_verify needs a CA file (tls_ca_file): no system CA bundle found",
        SYSTEM_CA_FILES[0],
    )


@dataclass
class PushStats:
    """Counters of one push; times are ``time.monotonic()`` values."""

    video_frames_sent: int = 0
    audio_frames_sent: int = 0
    bytes: int = 0
    reconnects: int = 0
    dropped: int = 0
    connected_at: float | None = None
    processed_at: float | None = None
    first_video_sent_at: float | None = None
    last_error: str | None = None

    @property
    def frames_sent(self) -> int:
        return self.video_frames_sent + self.audio_frames_sent


@dataclass(frozen=True, slots=True)
class _Item:
    """A frame plus what the stream declared when it was queued (for the FLV header)."""

    frame: MediaFrame
    has_video: bool
    has_audio: bool
    audio_codec: str | None


@dataclass
class _Timeline:
    """Call-clock seconds -> FLV milliseconds, strictly increasing per track."""

    #: Time given to packets before the first frame: the AAC encoder's priming packet
    #: starts 1024 samples before its first input.
    lead: float = 0.0
    origin: float | None = None
    last: dict[str, int] = field(default_factory=dict)

    def ms(self, track: str, pts: float) -> int:
        if self.origin is None:
            self.origin = pts - self.lead
        value = max(0, round((pts - self.origin) * 1000))
        last = self.last.get(track)
        if last is not None and value <= last:
            value = last + 1
        self.last[track] = value
        return value


class RtmpPusher:
    """Pushes one registry :class:`~sipbridge.registry.Stream` to ``config.url``.

    ``start`` subscribes and starts the writer task; ``stop`` finishes the push
    (``FCUnpublish`` or the file's end), awaits the task and unsubscribes.
    ``on_status(status, info)`` runs on the event loop at every status or info change.
    """

    def __init__(
        self,
        stream: Stream,
        config: PushConfig,
        *,
        on_status: Callable[[PushStatus, str | None], None] | None = None,
    ) -> None:
        self.log_url = redact_url(config.url)
        """The target for log lines, stream key hidden."""
        self._secrets = url_secrets(config.url)
        for secret in self._secrets:
            register_secret(secret)  # also masked in tracebacks
        self.stream = stream
        self.config = config
        self.on_status = on_status
        self.status = PushStatus.PENDING
        self.info: str | None = None
        self.stats = PushStats()
        self._muted = False
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=config.queue_frames)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ended = False
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._opening = False
        self._video_gap = False
        self._stopped = False
        # Writer task only: frames looked ahead at, and the end of stop()'s drain.
        self._pending: deque[_Item] = deque()
        self._drain_deadline: float | None = None

    @property
    def muted(self) -> bool:
        return self._muted

    def mute(self, muted: bool) -> None:
        """Replace the audio by silence while ``muted`` (timestamps continue)."""
        self._muted = muted

    async def start(self) -> None:
        """Subscribe, ask for a keyframe, start the writer task; returns at once."""
        if self._writer is not None:
            raise RuntimeError("this pusher was already started")
        # The pusher's own queue bounds memory; the subscription's only buffers bursts.
        self._subscription = self.stream.subscribe(max_queue=max(300, self.config.queue_frames))
        self.stream.request_keyframe()
        name = self.stream.name
        self._writer = asyncio.create_task(self._run(), name=f"rtmp-push-{name}")
        self._reader = asyncio.create_task(self._read(), name=f"rtmp-read-{name}")

    async def stop(self) -> None:
        """Finish the push, await the writer (bounded), unsubscribe. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._writer is None:
            self._release_secrets()  # never started: no writer will release them
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._subscription is not None:
            # What the reader had not moved yet is part of the drain.
            while (frame := self._subscription.get_nowait()) is not None:
                self._offer(frame)
            self._subscription.close()
        # Only now (as the recorder does): the writer takes "stopping and nothing
        # queued" as the end of the drain, so the tail must be queued first.
        self._stopping.set()
        self._wake.set()
        writer = self._writer
        if writer is not None:
            if self._opening:
                writer.cancel()  # nothing was sent yet: no reason to wait for the server
            # Drain, then FCUnpublish/deleteStream, each bounded by rw_timeout.
            bound = DRAIN_TIMEOUT + 2 * self.config.rw_timeout + 1.0
            done, _ = await asyncio.wait({writer}, timeout=bound)
            if not done:
                log.error("push %s: writer did not end within %.0f s", self.log_url, bound)
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        if not self.status.is_final:
            self._set_status(PushStatus.STOPPED, self.info)

    @property
    def dropped(self) -> int:
        """Frames this push lost: its own queue's overflow and the video it then skipped
        (``stats.dropped``), plus what its stream subscription dropped before the reader
        took it (the registry's per-subscriber queue, :class:`Subscription`)."""
        lost_upstream = self._subscription.dropped if self._subscription is not None else 0
        return self.stats.dropped + lost_upstream

    # -- reader task ------------------------------------------------------------------------
    async def _read(self) -> None:
        assert self._subscription is not None
        try:
            async for frame in self._subscription:
                self._offer(frame)
        finally:
            # After stop() the end is its business: it queues what is left first.
            if not self._stopped:
                self._ended = True
                self._wake.set()

    def _offer(self, frame: MediaFrame) -> None:
        video = frame.kind == "video"
        if video and self._video_gap and not frame.keyframe:
            self.stats.dropped += 1
            return
        audio_track = self.stream.tracks.get("audio")
        item = _Item(
            frame=frame,
            has_video=self.stream.has_video,
            has_audio=audio_track is not None,
            audio_codec=(audio_track.codec or None) if audio_track is not None else None,
        )
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            if video:
                self._video_gap = True
                self.stream.request_keyframe()
            return
        self._wake.set()
        if video:
            self._video_gap = False

    def _set_status(self, status: PushStatus, info: str | None) -> None:
        if self.status.is_final:
            return
        if status is self.status and info == self.info:
            return
        self.status = status
        self.info = info
        log.info("push %s: %s%s", self.log_url, status.value, f" ({info})" if info else "")
        if status is PushStatus.FAILED:
            if self._reader is not None:
                self._reader.cancel()
            if self._subscription is not None:
                self._subscription.close()
        if self.on_status is not None:
            try:
                self.on_status(status, info)
            except Exception:
                log.exception("push %s: on_status failed", self.log_url)

    def _release_secrets(self) -> None:
        """Stop masking the URL's secrets (once): nothing of this push logs them any more.
        Registrations are counted, so another push with the same key stays masked."""
        secrets, self._secrets = self._secrets, []
        for secret in secrets:
            unregister_secret(secret)

    # -- writer task ------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._run_writer()
        except Exception as exc:
            log.exception("push %s: writer crashed", self.log_url)
            self.stats.last_error = describe_error(exc)
            self._set_status(PushStatus.FAILED, FAILED_INFO)
        finally:
            self._release_secrets()

    def _connected(self) -> None:
        """The sink's connection is up (NetConnection.Connect.Success; a file: opened)."""
        self.stats.connected_at = time.monotonic()
        self._set_status(PushStatus.CONNECTED, None)

    def _processed(self) -> None:
        """Publishing, and the start frame went to the connection."""
        self.stats.processed_at = time.monotonic()
        self._set_status(PushStatus.PROCESSED_REMOTE, None)

    async def _run_writer(self) -> None:
        timeline = _Timeline(lead=1024 / self.config.audio_sample_rate)
        failures = 0
        after_failure = False
        while True:
            first = await self._wait_start(after_failure)
            if first is None:
                self._set_status(PushStatus.STOPPED, None)
                return
            writer = ConnectionWriter(self, timeline, first)
            self._opening = True
            try:
                await writer.open()
            except _CONNECTION_ERRORS as exc:
                writer.abort()
                failures += 1
                if not await self._retry_after(exc, failures):
                    return
                after_failure = True
                continue
            except BaseException:
                writer.abort()
                raise
            finally:
                self._opening = False
            if after_failure:
                self.stats.reconnects += 1
            failures = 0
            try:
                await writer.pump(first)
            except _CONNECTION_ERRORS as exc:
                writer.abort()
                failures = 1
                if not await self._retry_after(exc, failures):
                    return
                after_failure = True
                continue
            except BaseException:
                writer.abort()
                raise
            try:
                await writer.finish()
            except _CONNECTION_ERRORS as exc:
                writer.abort()
                self.stats.last_error = describe_error(exc)
                log.warning("push %s: finishing failed: %s", self.log_url, self.stats.last_error)
            self._set_status(PushStatus.STOPPED, None)
            return

    async def _retry_after(self, exc: BaseException, failures: int) -> bool:
        """Record a failed attempt; sleep the backoff. False when giving up (or stopping)."""
        message = describe_error(exc)
        self.stats.last_error = message
        limit = self.config.max_retries
        if limit is not None and failures > limit:
            log.warning("push %s: giving up after %d failures: %s", self.log_url, failures, message)
            self._set_status(PushStatus.FAILED, FAILED_INFO)
            return False
        delay = min(self.config.retry_initial * 2 ** (failures - 1), self.config.retry_max)
        log.info("push %s: %s; retrying in %.1f s", self.log_url, message, delay)
        self._set_status(PushStatus.PENDING, message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            self._set_status(PushStatus.STOPPED, None)
            return False
        return True

    async def _wait_start(self, after_failure: bool) -> _Item | None:
        """The frame a connection starts on: a video keyframe with SPS/PPS (audio when the
        stream has no video). ``None`` when the stream ended or stop() found no such frame."""
        if after_failure:
            self._discard_queued()
        self.stream.request_keyframe()
        asked = time.monotonic()
        # still_video: audio seen while no video frame at all has come (kept for the start).
        audio_wait: list[_Item] = []
        video_seen = False
        while True:
            item = await self._next_item()
            if item is None:
                return None
            if self.config.still_video and item.has_video and not video_seen:
                if item.frame.kind == "video":
                    video_seen = True
                    audio_wait.clear()
                else:
                    audio_wait.append(item)
                    waited = (item.frame.pts or 0.0) - (audio_wait[0].frame.pts or 0.0)
                    if waited >= STILL_WAIT:
                        log.info("push %s: no video: starting with a still picture", self.log_url)
                        self._pending.extendleft(reversed(audio_wait[1:]))
                        return await self._with_audio_codec(replace(audio_wait[0], has_video=False))
            if time.monotonic() - asked > KEYFRAME_RETRY:
                self.stream.request_keyframe()
                asked = time.monotonic()
            frame = item.frame
            if item.has_video:
                if frame.kind == "video" and frame.keyframe and has_avc_config(frame):
                    return await self._with_audio_codec(item)
            elif frame.kind == "audio":
                return await self._with_audio_codec(item)

    async def _with_audio_codec(self, item: _Item) -> _Item:
        """``item`` with the audio codec known, when G.711 copy needs it for the header:
        look ahead (up to :data:`AUDIO_LOOKAHEAD` s of frames) for the first audio frame."""
        if item.frame.kind == "audio":
            return replace(item, audio_codec=item.frame.codec)
        if self.config.audio != "copy" or not item.has_audio or item.audio_codec:
            return item
        limit = (item.frame.pts or 0.0) + AUDIO_LOOKAHEAD
        while True:
            ahead = await self._next_item()
            if ahead is None:
                return item
            self._pending.append(ahead)
            if ahead.frame.kind == "audio":
                return replace(item, audio_codec=ahead.frame.codec)
            if (ahead.frame.pts or 0.0) > limit:
                return item

    def _discard_queued(self) -> None:
        self._pending.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _next_item(self) -> _Item | None:
        """The next frame; ``None`` at the end of the stream. After stop(), what is queued
        still comes for :data:`DRAIN_TIMEOUT` seconds, then ``None``."""
        if self._pending:
            return self._pending.popleft()
        while True:
            if self._stopping.is_set():
                if self._drain_deadline is None:
                    self._drain_deadline = time.monotonic() + DRAIN_TIMEOUT
                if time.monotonic() > self._drain_deadline or self._queue.empty():
                    return None
                return self._queue.get_nowait()
            if not self._queue.empty():
                return self._queue.get_nowait()
            if self._ended:
                return None
            self._wake.clear()
            await self._wake.wait()

    def _silence_if_muted(self, frame: MediaFrame) -> bytes:
        if self._muted:
            return g711_silence(frame.codec, len(frame.payload))
        return frame.payload
