"""The per-connection half of :class:`rtmp.pusher.RtmpPusher`, on the event loop.

A :class:`ConnectionWriter` lives from one connection attempt to its end: it
chooses the FLV tracks from the frame the connection starts on, opens the sink
(:class:`RtmpSink`, our own RTMP publisher, or :class:`FileSink`, an FLV file),
sends ``onMetaData`` and the sequence headers, then converts every frame the
pusher's queue yields into FLV tag bodies (:mod:`rtmp.flv`) until the stream ends
or stop() drains it. Errors propagate (:class:`~rtmp.connection.RtmpError`,
:class:`OSError`, :class:`av.FFmpegError` from the AAC encoder): the pusher
decides about retrying.

AAC encoding runs inline on the loop: well under a millisecond per 20 ms call
frame, and the whole push costs about 1.2 % of a core per call
(docs/performance.md); a thread would add a hand-off per frame and save nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import IO, TYPE_CHECKING, Literal

from rtmp.amf0 import AmfValue
from rtmp.audio import DECODERS, AacTranscoder
from rtmp.connection import RtmpConnection
from rtmp.flv import (
    AudioSpec,
    AvcConfig,
    FlvFileWriter,
    aac_body,
    annexb_to_avcc,
    avc_config,
    convert_video,
    g711_body,
    has_avc_config,
    metadata,
    video_body,
    video_sequence_header,
)
from rtmp.still import StillPicture, still_picture
from rtmp.urls import parse_rtmp_url
from rtp.frame import MediaFrame

if TYPE_CHECKING:
    from rtmp.pusher import RtmpPusher, _Item, _Timeline

__all__ = [
    "STILL_INTERVAL",
    "ConnectionWriter",
    "FileSink",
    "RtmpSink",
    "avc_config",
    "convert_video",
    "has_avc_config",
    "is_network_url",
]

log = logging.getLogger(__name__)

_G711_FLV: dict[str, Literal["pcm_mulaw", "pcm_alaw"]] = {
    "PCMU": "pcm_mulaw",
    "PCMA": "pcm_alaw",
}
#: Seconds between two still pictures (``still_video``): 1 fps, every picture an IDR,
#: so a player joining gets a keyframe within 1 s.
STILL_INTERVAL = 1.0
_TAG_AUDIO = 8
_TAG_VIDEO = 9


def is_network_url(url: str) -> bool:
    return url[:8].lower().startswith(("rtmp://", "rtmps://"))


def _pts(frame: MediaFrame) -> float:
    # pts is set by the call's A/V sync; without it (no sync yet) arrival time is the best guess.
    return frame.pts if frame.pts is not None else frame.arrival


class RtmpSink:
    """FLV tag bodies to an RTMP server through :class:`~rtmp.connection.RtmpConnection`."""

    def __init__(self, pusher: RtmpPusher) -> None:
        self.pusher = pusher
        self.connection: RtmpConnection | None = None

    async def open(self) -> None:
        config = self.pusher.config
        self.connection = await RtmpConnection.open(
            parse_rtmp_url(config.url),
            connect_timeout=config.connect_timeout,
            rw_timeout=config.rw_timeout,
            send_buffer=config.send_buffer,
            tls=config.tls_options() if config.url[:8].lower() == "rtmps://" else None,
            on_connected=self.pusher._connected,
        )

    def _conn(self) -> RtmpConnection:
        if self.connection is None:
            raise RuntimeError("the RTMP connection is not open")
        return self.connection

    def metadata(self, values: dict[str, AmfValue]) -> None:
        self._conn().send_metadata(values)

    def video(self, ts: int, body: bytes) -> None:
        self._conn().send_video(ts, body)

    def audio(self, ts: int, body: bytes) -> None:
        self._conn().send_audio(ts, body)

    async def drain(self) -> None:
        await self._conn().drain()

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()

    def abort(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.abort()


class FileSink:
    """FLV tag bodies to an FLV file (a path or ``file:`` URL; tests and tools). Writes
    are buffered small appends to a local file."""

    def __init__(self, pusher: RtmpPusher, *, has_video: bool, has_audio: bool) -> None:
        self.pusher = pusher
        self.has_video = has_video
        self.has_audio = has_audio
        self._file: IO[bytes] | None = None
        self._flv: FlvFileWriter | None = None

    async def open(self) -> None:
        path = self.pusher.config.url.removeprefix("file:")
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()/abort()
        self._flv = FlvFileWriter(self._file, has_video=self.has_video, has_audio=self.has_audio)
        self.pusher._connected()

    def _writer(self) -> FlvFileWriter:
        if self._flv is None:
            raise RuntimeError("the FLV file is not open")
        return self._flv

    def metadata(self, values: dict[str, AmfValue]) -> None:
        self._writer().write_metadata(values)

    def video(self, ts: int, body: bytes) -> None:
        self._writer().write_tag(_TAG_VIDEO, ts, body)

    def audio(self, ts: int, body: bytes) -> None:
        self._writer().write_tag(_TAG_AUDIO, ts, body)

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        file, self._file = self._file, None
        self._flv = None
        if file is not None:
            file.close()


Sink = RtmpSink | FileSink


class ConnectionWriter:
    """One connection's sink and the conversions feeding it."""

    def __init__(self, pusher: RtmpPusher, timeline: _Timeline, first: _Item) -> None:
        self.pusher = pusher
        self.timeline = timeline
        self.first = first
        self.sink: Sink | None = None
        self.transcoder: AacTranscoder | None = None
        self.still: StillPicture | None = None
        self.video_config: AvcConfig | None = None
        self.audio: AudioSpec | None = None
        self._still_next: float | None = None
        self._still_count = 0
        self._warned: set[str] = set()
        # New parameter sets came alone: their sequence header goes before the next picture.
        self._pending_header = False

    async def open(self) -> None:
        """Choose the tracks, connect (publish), send onMetaData and sequence headers."""
        pusher = self.pusher
        config = pusher.config
        first = self.first
        if first.has_video:
            self.video_config = avc_config(first.frame)
            if self.video_config is None:
                raise ValueError("a connection must start on a keyframe with SPS and PPS")
        elif config.still_video:
            # Audio-only start: a generated picture for platforms that require video.
            # Encoded once per process, in a thread: libx264 must not stall the loop.
            self.still = await asyncio.to_thread(still_picture)
            self.video_config = self.still.config
        if first.has_audio:
            copy = _G711_FLV.get(first.audio_codec or "") if config.audio == "copy" else None
            if copy is not None:
                self.audio = AudioSpec(codec=copy, sample_rate=8000)
            else:
                self.transcoder = AacTranscoder(
                    bitrate=config.audio_bitrate, sample_rate=config.audio_sample_rate
                )
                self.audio = AudioSpec(
                    codec="aac",
                    sample_rate=config.audio_sample_rate,
                    extradata=self.transcoder.extradata,
                )
        if self.video_config is None and self.audio is None:
            raise ValueError("an FLV output needs a video or an audio track")
        if is_network_url(config.url):
            self.sink = RtmpSink(pusher)
        else:
            self.sink = FileSink(
                pusher, has_video=self.video_config is not None, has_audio=self.audio is not None
            )
        await self.sink.open()
        sink = self.sink
        bitrate = config.audio_bitrate if self.transcoder is not None else None
        sink.metadata(metadata(self.video_config, self.audio, audio_bitrate=bitrate))
        if self.video_config is not None:
            sink.video(0, video_sequence_header(self.video_config))
        if self.audio is not None and self.audio.extradata is not None:
            sink.audio(0, aac_body(self.audio.extradata, sequence_header=True))

    async def pump(self, first: _Item) -> None:
        """Write ``first`` and every following frame until the stream ends or stop()."""
        await self._write(first.frame)
        self.pusher._processed()
        while True:
            item = await self.pusher._next_item()
            if item is None:
                return
            await self._write(item.frame)

    async def finish(self) -> None:
        """Drain the AAC encoder, close the connection (``FCUnpublish``) or the file."""
        if self.transcoder is not None and self.audio is not None:
            for unit in self.transcoder.flush():
                self._send_audio(aac_body(unit.data), unit.pts, len(unit.data))
        sink, self.sink = self.sink, None
        if sink is not None:
            await sink.close()

    def abort(self) -> None:
        """Drop the connection after an error."""
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.abort()

    # -- internals ----------------------------------------------------------------------
    def _sink(self) -> Sink:
        if self.sink is None:
            raise RuntimeError("the connection is not open")
        return self.sink

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("push %s: " + message, self.pusher.log_url, *args)

    async def _write(self, frame: MediaFrame) -> None:
        if frame.kind == "video":
            self._write_video(frame)
        else:
            self._write_audio(frame)
        await self._sink().drain()

    def _write_video(self, frame: MediaFrame) -> None:
        sink = self._sink()
        if self.video_config is None or self.still is not None:
            self._warn_once("video", "video appeared after an audio-only start: ignored")
            return
        if frame.codec != "H264":
            self._warn_once("vcodec", "video codec %s cannot be passed through", frame.codec)
            return
        data, seen = convert_video(frame)
        new_config = None
        if seen is not None:
            merged = self.video_config.updated(list(seen.sps), list(seen.pps))
            if merged != self.video_config:
                log.info("push %s: new SPS/PPS: new sequence header", self.pusher.log_url)
                new_config = merged
        if not data:
            if new_config is not None:  # parameter sets only: they wait for their picture
                self.video_config = new_config
                self._pending_header = True
            return
        ts = self.timeline.ms("video", _pts(frame))
        if new_config is not None or self._pending_header:
            self.video_config = new_config or self.video_config
            self._pending_header = False
            sink.video(ts, video_sequence_header(self.video_config))
        sink.video(ts, video_body(data, keyframe=frame.keyframe))
        stats = self.pusher.stats
        stats.video_frames_sent += 1
        stats.bytes += len(data)
        if stats.first_video_sent_at is None:
            stats.first_video_sent_at = time.monotonic()

    def _write_still(self, until: float) -> None:
        """Send the still picture at every :data:`STILL_INTERVAL` up to ``until`` (call-clock
        seconds of the audio): the video follows the audio clock."""
        if self.still is None:
            return
        if self._still_next is None:
            self._still_next = until
        while self._still_next <= until:
            data = annexb_to_avcc(self.still.unit(self._still_count)).data
            ts = self.timeline.ms("video", self._still_next)
            self._sink().video(ts, video_body(data, keyframe=True))
            self._still_count += 1
            self._still_next += STILL_INTERVAL
            self.pusher.stats.bytes += len(data)

    def _write_audio(self, frame: MediaFrame) -> None:
        self._write_still(_pts(frame))
        spec = self.audio
        if spec is None:
            return  # an audio track appeared after the header: FLV cannot add one
        if spec.codec != "aac":
            if _G711_FLV.get(frame.codec) != spec.codec:
                self._warn_once("acodec", "audio codec changed to %s: dropped", frame.codec)
                return
            payload = self.pusher._silence_if_muted(frame)
            self._send_audio(g711_body(payload, spec.codec), _pts(frame), len(payload))
            return
        if self.transcoder is None or frame.codec not in DECODERS:
            self._warn_once("acodec", "audio codec %s cannot be transcoded", frame.codec)
            return
        units = self.transcoder.feed(
            frame.codec, frame.payload, _pts(frame), muted=self.pusher.muted
        )
        for unit in units:
            self._send_audio(aac_body(unit.data), unit.pts, len(unit.data))

    def _send_audio(self, body: bytes, pts: float, size: int) -> None:
        ts = self.timeline.ms("audio", pts)
        self._sink().audio(ts, body)
        stats = self.pusher.stats
        stats.audio_frames_sent += 1
        stats.bytes += size
