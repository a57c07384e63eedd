"""RtmpPusher: one registry stream pushed to one RTMP (or FLV file) target.

Theory of operation
-------------------
Two halves joined by a bounded :class:`queue.Queue`:

* on the event loop, a task reads the stream's :class:`~sipbridge.registry.Subscription`
  and puts each frame into the queue without ever waiting. When the queue is full
  the frame is dropped (counted in ``stats.dropped``); a dropped video frame breaks
  the decoding chain, so video is then dropped until the next keyframe, which is
  requested from the stream;
* a worker thread owns everything blocking: PyAV's FLV muxer and its connection
  (:class:`rtmp.output.FlvOutput`), the AAC encoder (:class:`rtmp.audio.AacTranscoder`).

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

Failures: an error opening or writing (refused, dropped, ``rw_timeout`` passed)
closes the connection; the status becomes ``PENDING`` with the error as ``info``,
the writer waits ``retry_initial`` seconds (doubling up to ``retry_max``), discards
what queued meanwhile, asks the stream for a keyframe and reconnects on it. After
``max_retries`` consecutive failed attempts after the first one, the status is
``FAILED`` with ``info`` "Failed by RTMP writer error". The call is never affected.

Statuses (WCS transponder statuses), per connection:

* ``PENDING``: waiting for the frame to start on, connecting, or waiting to retry
  (``info`` then says why the last attempt failed);
* ``CONNECTED``: the server accepted the publish. FFmpeg's RTMP client
  (``rtmpproto.c``, ``rtmp_open``) returns only once the server answered
  ``publish`` with ``onStatus NetStream.Publish.Start``; the FLV header is then
  written. A refused publish (bad key, stream name in use) fails the open;
* ``PROCESSED_REMOTE``: the connection's first video keyframe (the first audio
  packet when the connection has no video track) has been written to the
  connection: it left FFmpeg's interleaving queues
  (:meth:`rtmp.output.FlvOutput.delivered_before`) and was flushed to the socket.
  A player joining now gets a picture. After a reconnection the push goes through
  ``CONNECTED`` and ``PROCESSED_REMOTE`` again;
* ``STOPPED`` / ``FAILED``: final.

What bounds a connection attempt: FFmpeg's TCP connect gives up after its own
fixed 5 s per address (a refused connection fails at once); the TLS and RTMP
handshakes, the publish and every later write are bounded by ``rw_timeout``
(a write that cannot progress fails with ``ETIMEDOUT``). No separate connect
timeout exists: FFmpeg offers no option for it that the RTMP protocol passes
down (see docs/decisions.md).

A server that stops reading (frozen, or a dead path without a reset) is noticed
once the data in flight fills our socket's send buffer (``send_buffer``, so it is
bounded, not the kernel's autotuned megabytes) and the server's receive window,
and one write then waits ``rw_timeout``. Before the error reaches us, FFmpeg's
``tee`` closes the failed slave, and that close (FLV trailer, RTMP ``FCUnpublish``
and ``deleteStream``) blocks up to two more ``rw_timeout``. The push is therefore
``PENDING`` about ``(send buffer + server window) / bitrate + 3 x rw_timeout`` after
the server froze (measured: 9 s with a 2 s ``rw_timeout`` at 1.1 Mbit/s, see
``tests/interop/test_rtmp_stall.py``; 30 s without the bounded send buffer).
With ``still_video``, a connection that starts without video gets a generated
still picture (:mod:`rtmp.still`) re-sent every second on the audio clock, for
platforms that refuse audio-only publishing. A stream "has no video" when it declares
no video track, or when it declares one but no video frame came within
:data:`STILL_WAIT` seconds (of pts) after its first audio frame; video that comes
later on that connection is ignored.

Status changes are applied on the event loop (``on_status`` runs there); the
``stats`` counters are written by the worker thread and are approximate reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import av

from rtmp.audio import AacTranscoder, g711_silence
from rtmp.output import AudioSpec, TlsOptions
from rtmp.urls import describe_error, redact_url, url_secrets
from rtmp.writer import ConnectionWriter, has_avc_config
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
_POLL = 0.1

_G711_FLV: dict[str, Literal["pcm_mulaw", "pcm_alaw"]] = {
    "PCMU": "pcm_mulaw",
    "PCMA": "pcm_alaw",
}


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
    recording-like uses). ``tls_verify``: for ``rtmps://``, require the server
    certificate to chain to ``tls_ca_file`` (PEM; ``None``: the system bundle, see
    :func:`system_ca_file`) and to match the host; off by default, as in FFmpeg.
    ``send_buffer``: bytes asked for the TCP socket's send buffer (``SO_SNDBUF``; Linux
    reserves twice that), which bounds how long a frozen server goes unnoticed;
    0 leaves the kernel's autotuning (megabytes)."""

    url: str
    audio: Literal["aac", "copy"] = "aac"
    audio_bitrate: int = 128_000
    audio_sample_rate: int = 48_000
    still_video: bool = False
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
        if self.audio_bitrate <= 0 or self.rw_timeout <= 0:
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

    def tls_options(self) -> TlsOptions:
        """The certificate checking the output gets (:class:`rtmp.output.TlsOptions`);
        :class:`FileNotFoundError` when verifying needs the system bundle and none exists
        (a failed connection attempt, reported in the push's ``info``)."""
        ca_file = self.tls_ca_file
        if self.tls_verify and ca_file is None:
            ca_file = system_ca_file()
        return TlsOptions(verify=self.tls_verify, ca_file=ca_file)


#: Where distributions keep the CA bundle. PyAV's bundled GnuTLS looks only at
#: /etc/pki/tls/cert.pem (its build's default), which Debian does not have.
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


class _End:
    """Queued after the last frame of an ended stream."""


_END = _End()


@dataclass
class _Timeline:
    """Call-clock seconds -> FLV milliseconds, strictly increasing per track."""

    #: Time given to packets before the first frame: the AAC encoder's priming packet
    #: starts 1024 samples before its first input (FFmpeg's FLV muxer shifts by the same
    #: amount when it sees a negative timestamp).
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

    ``start`` subscribes and starts the writer thread; ``stop`` finishes the FLV
    (trailer), joins the thread and unsubscribes. ``on_status(status, info)`` runs
    on the event loop at every status or info change.
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
        self._secrets_lock = threading.Lock()
        for secret in self._secrets:
            register_secret(secret)  # also masked in tracebacks and FFmpeg's messages
        self.stream = stream
        self.config = config
        self.on_status = on_status
        self.status = PushStatus.PENDING
        self.info: str | None = None
        self.stats = PushStats()
        self._muted = False
        self._queue: queue.Queue[_Item | _End] = queue.Queue(maxsize=config.queue_frames)
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._video_gap = False
        self._stopped = False
        # Writer thread only: frames looked ahead at, and the end of stop()'s drain.
        self._pending: deque[_Item] = deque()
        self._drain_deadline: float | None = None

    @property
    def muted(self) -> bool:
        return self._muted

    def mute(self, muted: bool) -> None:
        """Replace the audio by silence while ``muted`` (timestamps continue)."""
        self._muted = muted

    async def start(self) -> None:
        """Subscribe, ask for a keyframe, start the writer thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("this pusher was already started")
        self._loop = asyncio.get_running_loop()
        # The pusher's own queue bounds memory; the subscription's only buffers bursts.
        self._subscription = self.stream.subscribe(max_queue=max(300, self.config.queue_frames))
        self.stream.request_keyframe()
        self._thread = threading.Thread(
            target=self._run, name=f"rtmp-push-{self.stream.name}", daemon=True
        )
        self._thread.start()
        self._reader = asyncio.create_task(self._read(), name=f"rtmp-read-{self.stream.name}")

    async def stop(self) -> None:
        """Finish the FLV, join the writer (bounded), unsubscribe. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is None:
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
        thread = self._thread
        if thread is not None:
            # A dead connection's close may block three times: write, trailer, RTMP close.
            bound = DRAIN_TIMEOUT + 3 * self.config.rw_timeout + 5.0
            await asyncio.to_thread(thread.join, bound)
            if thread.is_alive():
                log.error(
                    "push %s: writer thread did not end within %.0f s",
                    self.log_url,
                    bound,
                )
        if not self.status.is_final:
            self._set_status(PushStatus.STOPPED, self.info)

    # -- event loop side --------------------------------------------------------------------
    async def _read(self) -> None:
        assert self._subscription is not None
        try:
            async for frame in self._subscription:
                self._offer(frame)
        finally:
            self._ended.set()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_END)

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
        except queue.Full:
            self.stats.dropped += 1
            if video:
                self._video_gap = True
                self.stream.request_keyframe()
            return
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

    # -- worker thread side -------------------------------------------------------------------
    def _post(self, fn: Callable[[], object]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(fn)

    def _post_status(self, status: PushStatus, info: str | None) -> None:
        self._post(lambda: self._set_status(status, info))

    def _request_keyframe(self) -> None:
        self._post(self.stream.request_keyframe)

    def _release_secrets(self) -> None:
        """Stop masking the URL's secrets (once): nothing of this push logs them any more.
        Registrations are counted, so another push with the same key stays masked."""
        with self._secrets_lock:
            secrets, self._secrets = self._secrets, []
        for secret in secrets:
            unregister_secret(secret)

    def _run(self) -> None:
        try:
            self._run_writer()
        except Exception as exc:
            log.exception("push %s: writer crashed", self.log_url)
            self.stats.last_error = describe_error(exc)
            self._post_status(PushStatus.FAILED, FAILED_INFO)
        finally:
            # The writer (FFmpeg's messages, tracebacks) was the last user of the URL.
            self._release_secrets()

    def _processed(self) -> None:
        """Called by the connection writer once the first keyframe left for the server."""
        self.stats.processed_at = time.monotonic()
        self._post_status(PushStatus.PROCESSED_REMOTE, None)

    def _run_writer(self) -> None:
        timeline = _Timeline(lead=1024 / self.config.audio_sample_rate)
        failures = 0
        after_failure = False
        while True:
            first = self._wait_start(after_failure)
            if first is None:
                self._post_status(PushStatus.STOPPED, None)
                return
            writer = ConnectionWriter(self, timeline, first)
            try:
                writer.open()
            except (av.FFmpegError, OSError) as exc:
                writer.abort()
                failures += 1
                if not self._retry_after(exc, failures):
                    return
                after_failure = True
                continue
            if after_failure:
                self.stats.reconnects += 1
            failures = 0
            self.stats.connected_at = time.monotonic()
            self._post_status(PushStatus.CONNECTED, None)
            try:
                writer.pump(first)
            except (av.FFmpegError, OSError) as exc:
                writer.abort()
                failures = 1
                if not self._retry_after(exc, failures):
                    return
                after_failure = True
                continue
            try:
                writer.finish()
            except (av.FFmpegError, OSError) as exc:
                writer.abort()
                self.stats.last_error = describe_error(exc)
                log.warning(
                    "push %s: finishing the FLV failed: %s", self.log_url, self.stats.last_error
                )
            self._post_status(PushStatus.STOPPED, None)
            return

    def _retry_after(self, exc: Exception, failures: int) -> bool:
        """Record a failed attempt; sleep the backoff. False when giving up (or stopping)."""
        message = describe_error(exc)
        self.stats.last_error = message
        limit = self.config.max_retries
        if limit is not None and failures > limit:
            log.warning(
                "push %s: giving up after %d failures: %s",
                self.log_url,
                failures,
                message,
            )
            self._post_status(PushStatus.FAILED, FAILED_INFO)
            return False
        delay = min(self.config.retry_initial * 2 ** (failures - 1), self.config.retry_max)
        log.info("push %s: %s; retrying in %.1f s", self.log_url, message, delay)
        self._post_status(PushStatus.PENDING, message)
        if self._stopping.wait(delay):
            self._post_status(PushStatus.STOPPED, None)
            return False
        return True

    def _wait_start(self, after_failure: bool) -> _Item | None:
        """The frame a connection starts on: a video keyframe with SPS/PPS (audio when the
        stream has no video). ``None`` when the stream ended or stop() found no such frame."""
        if after_failure:
            self._discard_queued()
        self._request_keyframe()
        asked = time.monotonic()
        # still_video: audio seen while no video frame at all has come (kept for the start).
        audio_wait: list[_Item] = []
        video_seen = False
        while True:
            item = self._next_item()
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
                        return self._with_audio_codec(replace(audio_wait[0], has_video=False))
            if time.monotonic() - asked > KEYFRAME_RETRY:
                self._request_keyframe()
                asked = time.monotonic()
            frame = item.frame
            if item.has_video:
                if frame.kind == "video" and frame.keyframe and has_avc_config(frame):
                    return self._with_audio_codec(item)
            elif frame.kind == "audio":
                return self._with_audio_codec(item)

    def _with_audio_codec(self, item: _Item) -> _Item:
        """``item`` with the audio codec known, when G.711 copy needs it for the header:
        look ahead (up to :data:`AUDIO_LOOKAHEAD` s of frames) for the first audio frame."""
        if item.frame.kind == "audio":
            return replace(item, audio_codec=item.frame.codec)
        if self.config.audio != "copy" or not item.has_audio or item.audio_codec:
            return item
        limit = (item.frame.pts or 0.0) + AUDIO_LOOKAHEAD
        while True:
            ahead = self._next_item()
            if ahead is None:
                return item
            self._pending.append(ahead)
            if ahead.frame.kind == "audio":
                return replace(item, audio_codec=ahead.frame.codec)
            if (ahead.frame.pts or 0.0) > limit:
                return item

    def _discard_queued(self) -> None:
        self._pending.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _End):
                self._queue.put_nowait(item)
                return

    def _next_item(self) -> _Item | None:
        """The next frame; ``None`` at the end of the stream. After stop(), what is queued
        still comes for :data:`DRAIN_TIMEOUT` seconds, then ``None``."""
        if self._pending:
            return self._pending.popleft()
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

    def _audio_spec(self, item: _Item, transcoder: AacTranscoder | None) -> AudioSpec | None:
        if not item.has_audio:
            return None
        if self.config.audio == "copy" and item.audio_codec in _G711_FLV:
            return AudioSpec(codec=_G711_FLV[item.audio_codec], sample_rate=8000)
        assert transcoder is not None
        return AudioSpec(
            codec="aac", sample_rate=self.config.audio_sample_rate, extradata=transcoder.extradata
        )

    def _silence_if_muted(self, frame: MediaFrame) -> bytes:
        if self._muted:
            return g711_silence(frame.codec, len(frame.payload))
        return frame.payload
