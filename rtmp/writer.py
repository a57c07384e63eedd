"""The per-connection half of :class:`rtmp.pusher.RtmpPusher`'s writer thread.

A :class:`ConnectionWriter` lives from one connection attempt to its end: it
chooses the FLV tracks from the frame the connection starts on, opens the
:class:`~rtmp.output.FlvOutput`, then converts and muxes every frame the pusher's
queue yields until the stream ends or stop() drains it. Errors propagate (any
:class:`av.FFmpegError` or :class:`OSError`): the pusher decides about retrying.
Runs in the writer thread only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from rtmp.audio import DECODERS, AacTranscoder
from rtmp.flv import AvcConfig, annexb_to_avcc
from rtmp.output import FlvOutput
from rtmp.still import StillPicture, still_picture
from rtp.frame import MediaFrame
from rtp.h264_bits import split_annexb

if TYPE_CHECKING:
    from rtmp.pusher import RtmpPusher, _Item, _Timeline

__all__ = ["ConnectionWriter", "avc_config", "convert_video", "has_avc_config"]

log = logging.getLogger(__name__)

_G711_FLV = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}
#: Seconds between two still pictures (``still_video``): 1 fps, every picture an IDR,
#: so a player joining gets a keyframe within 1 s. (At 2 fps FFmpeg guesses a 1 fps
#: rate from the first pictures and its decoders then see equal timestamps.)
STILL_INTERVAL = 1.0


def _pts(frame: MediaFrame) -> float:
    # pts is set by the call's A/V sync; without it (no sync yet) arrival time is the best guess.
    return frame.pts if frame.pts is not None else frame.arrival


def has_avc_config(frame: MediaFrame) -> bool:
    """Whether a video frame brings SPS and PPS (in ``config`` or in band)."""
    if frame.config is not None:
        return True
    return AvcConfig.from_nals(split_annexb(frame.payload)) is not None


def avc_config(frame: MediaFrame) -> AvcConfig | None:
    """The parameter sets a video frame brings (``config`` first, then in band)."""
    nals = split_annexb(frame.config) if frame.config is not None else []
    nals += split_annexb(frame.payload)
    return AvcConfig.from_nals(nals)


def convert_video(frame: MediaFrame) -> tuple[bytes, AvcConfig | None]:
    """The AVCC sample of a video frame and the parameter sets it brings, if any."""
    unit = annexb_to_avcc(frame.payload)
    config = None
    if frame.config is not None or unit.sps or unit.pps:
        config = avc_config(frame)
    return unit.data, config


class ConnectionWriter:
    """One connection's FLV output and the conversions feeding it."""

    def __init__(self, pusher: RtmpPusher, timeline: _Timeline, first: _Item) -> None:
        self.pusher = pusher
        self.timeline = timeline
        self.first = first
        self.output: FlvOutput | None = None
        self.transcoder: AacTranscoder | None = None
        self.still: StillPicture | None = None
        self._still_next: float | None = None
        self._still_count = 0
        self._warned: set[str] = set()
        # FLV ms of the packet whose delivery makes the push PROCESSED_REMOTE (the first
        # video keyframe; the first audio packet without a video track), once muxed.
        self._marker: int | None = None
        self._processed = False

    def open(self) -> None:
        """Choose the tracks, connect and write the FLV header."""
        pusher = self.pusher
        config = pusher.config
        first = self.first
        video: AvcConfig | None = None
        if first.has_video:
            video = avc_config(first.frame)
            if video is None:
                raise ValueError("a connection must start on a keyframe with SPS and PPS")
        elif config.still_video:
            # Audio-only start: a generated picture for platforms that require video.
            self.still = still_picture()
            video = self.still.config
        if first.has_audio and not (config.audio == "copy" and first.audio_codec in _G711_FLV):
            self.transcoder = AacTranscoder(
                bitrate=config.audio_bitrate, sample_rate=config.audio_sample_rate
            )
        audio = pusher._audio_spec(first, self.transcoder)
        self.output = FlvOutput(
            config.url,
            video=video,
            audio=audio,
            rw_timeout=config.rw_timeout,
            tls=config.tls_options(),
            send_buffer=config.send_buffer,
        )
        self.output.open()

    def pump(self, first: _Item) -> None:
        """Write ``first`` and every following frame until the stream ends or stop()."""
        self._write(first.frame)
        while True:
            item = self.pusher._next_item()
            if item is None:
                return
            self._write(item.frame)

    def finish(self) -> None:
        """Drain the AAC encoder and write the FLV trailer."""
        output = self._output()
        if self.transcoder is not None and output.has_audio:
            for unit in self.transcoder.flush():
                self._mux_audio(unit.data, unit.pts)
        output.close()
        self.output = None

    def abort(self) -> None:
        """Drop the connection after an error."""
        if self.output is not None:
            self.output.abort()
            self.output = None

    # -- internals ----------------------------------------------------------------------
    def _output(self) -> FlvOutput:
        if self.output is None:
            raise RuntimeError("the connection is not open")
        return self.output

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("push %s: " + message, self.pusher.log_url, *args)

    def _muxed(self, ts: int, *, start: bool) -> None:
        """After each mux: note the marker packet (``start``), report its delivery."""
        if self._processed:
            return
        if start and self._marker is None:
            self._marker = ts
        if self._marker is not None and self._output().delivered_before() > self._marker:
            self._processed = True
            self.pusher._processed()

    def _write(self, frame: MediaFrame) -> None:
        if frame.kind == "video":
            self._write_video(frame)
        else:
            self._write_audio(frame)

    def _write_video(self, frame: MediaFrame) -> None:
        output = self._output()
        if not output.has_video or self.still is not None:
            self._warn_once("video", "video appeared after an audio-only start: ignored")
            return
        if frame.codec != "H264":
            self._warn_once("vcodec", "video codec %s cannot be passed through", frame.codec)
            return
        data, seen = convert_video(frame)
        new_config = None
        current = output.video_config
        if seen is not None and current is not None:
            merged = current.updated(list(seen.sps), list(seen.pps))
            if merged != current:
                log.info("push %s: new SPS/PPS: new sequence header", self.pusher.log_url)
                new_config = merged
        if not data:
            return  # parameter sets only: they went into the sequence header
        ts = self.timeline.ms("video", _pts(frame))
        output.write_video(data, ts, keyframe=frame.keyframe, new_config=new_config)
        self._muxed(ts, start=frame.keyframe)
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
            self._output().write_video(data, ts, keyframe=True)
            self._muxed(ts, start=True)
            self._still_count += 1
            self._still_next += STILL_INTERVAL
            self.pusher.stats.bytes += len(data)

    def _write_audio(self, frame: MediaFrame) -> None:
        output = self._output()
        self._write_still(_pts(frame))
        if output.audio is None:
            return  # an audio track appeared after the header: FLV cannot add one
        if output.audio.codec != "aac":
            if _G711_FLV.get(frame.codec) != output.audio.codec:
                self._warn_once("acodec", "audio codec changed to %s: dropped", frame.codec)
                return
            payload = self.pusher._silence_if_muted(frame)
            self._mux_audio(payload, _pts(frame))
            return
        if self.transcoder is None or frame.codec not in DECODERS:
            self._warn_once("acodec", "audio codec %s cannot be transcoded", frame.codec)
            return
        units = self.transcoder.feed(
            frame.codec, frame.payload, _pts(frame), muted=self.pusher.muted
        )
        for unit in units:
            self._mux_audio(unit.data, unit.pts)

    def _mux_audio(self, data: bytes, pts: float) -> None:
        ts = self.timeline.ms("audio", pts)
        output = self._output()
        output.write_audio(data, ts)
        self._muxed(ts, start=not output.has_video)
        stats = self.pusher.stats
        stats.audio_frames_sent += 1
        stats.bytes += len(data)
