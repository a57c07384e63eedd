"""One recording file through PyAV: crash-safe Matroska (default) or fragmented MP4.

Why these muxer settings (see docs/decisions.md, "recording container"):

* Matroska (``.mkv``) is written in clusters of at most ``fragment`` seconds
  (``cluster_time_limit``), and FFmpeg's muxer writes the Segment with an
  *unknown* size that it patches only at the end; every cluster is complete
  on disk once written (``flush_packets``). A process killed mid-file leaves
  a valid file without Cues or Duration: every cluster written plays; the
  one being filled (at most ``fragment`` seconds) is lost.
* Fragmented MP4 (``.mp4``) gets ``empty_moov`` (the track headers first,
  no sample table), one ``moof``+``mdat`` per fragment (``frag_keyframe``
  and ``frag_duration`` = ``fragment``) and ``default_base_moof``; a killed
  process loses the fragment being filled.

Why the ``tee`` muxer: PyAV refuses to add a stream whose codec the format
does not list at FFmpeg's normal compliance level, and Matroska lists G.711
only in its VfW compatibility mode (``A_MS/ACM``, which FFmpeg's muxer writes
and every FFmpeg-based player reads). A ``tee`` output with one slave accepts
any codec and hands the streams to the real muxer with our options (the RTMP
output used the same trick before it moved to our own publisher).

Streams are made from never-opened scratch templates (``add_stream_from_template``)
so the avcC record and the audio configuration reach the muxer untouched.
Timestamps are seconds from the start of the file; they are converted with the
time base the muxer chose (Matroska: 1 ms; MP4: 1/90000 video, 1/rate audio)
and kept strictly increasing per track. Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
from av.container import OutputContainer
from av.stream import Stream as AvStream

from rtmp.flv import AvcConfig

__all__ = [
    "EXTENSIONS",
    "AudioTrack",
    "ContainerFormat",
    "MediaFile",
    "opus_head",
    "slave_url",
]

log = logging.getLogger(__name__)

ContainerFormat = Literal["mkv", "mp4"]
AudioCodecName = Literal["pcm_mulaw", "pcm_alaw", "opus", "aac"]

EXTENSIONS: dict[ContainerFormat, str] = {"mkv": ".mkv", "mp4": ".mp4"}
_MUXERS: dict[ContainerFormat, str] = {"mkv": "matroska", "mp4": "mp4"}
#: How long FFmpeg may hold one track back waiting for the other (µs): bounds what a
#: crash loses when one track stops (video paused by the phone) to this much.
_INTERLEAVE_US = 500_000


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """The audio track of a file: codec as FFmpeg names it, rate, channels, configuration."""

    codec: AudioCodecName
    sample_rate: int
    channels: int = 1
    extradata: bytes | None = None


def opus_head(channels: int = 2, pre_skip: int = 0, input_rate: int = 48000) -> bytes:
    """An ``OpusHead`` identification header (RFC 7845 §5.1), mapping family 0: the codec
    private data Matroska and MP4 need for Opus."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


def slave_url(path: Path, fmt: ContainerFormat, *, fragment: float) -> str:
    """The ``tee`` target writing ``path`` as ``fmt`` with the crash-safe options."""
    options = [f"f={_MUXERS[fmt]}", "flush_packets=1", f"max_interleave_delta={_INTERLEAVE_US}"]
    if fmt == "mkv":
        options.append(f"cluster_time_limit={max(1, round(fragment * 1000))}")
    else:
        options += [
            "movflags=frag_keyframe+empty_moov+default_base_moof+use_metadata_tags",
            f"frag_duration={max(1, round(fragment * 1_000_000))}",
        ]
    # The slave list is split on '|' and its options end at ']': escape what tee parses.
    escaped = "".join("\\" + ch if ch in "\\|'[]" else ch for ch in str(path))
    return "[" + ":".join(options) + "]" + escaped


class MediaFile:
    """One file: :meth:`open` writes the header, ``write_*`` mux, :meth:`close` the trailer.

    Any :class:`av.FFmpegError` or :class:`OSError` means the file cannot be
    written further: call :meth:`abort`, which keeps what is on disk.
    """

    def __init__(
        self,
        path: Path,
        fmt: ContainerFormat,
        *,
        video: AvcConfig | None,
        audio: AudioTrack | None,
        metadata: Mapping[str, str] | None = None,
        fragment: float = 1.0,
        frame_rate: Fraction | None = None,
    ) -> None:
        if video is None and audio is None:
            raise ValueError("a recording file needs a video or an audio track")
        self.path = path
        self.format: ContainerFormat = fmt
        self.video_config = video
        self.audio = audio
        self.metadata = dict(metadata or {})
        self.fragment = fragment
        self.frame_rate = frame_rate
        self.bytes_written = 0
        self.packets = 0
        self._container: OutputContainer | None = None
        self._video: AvStream | None = None
        self._audio: AvStream | None = None
        self._last: dict[str, int] = {}
        self._ends: dict[str, float] = {}
        self._boundary: int | None = None
        self._write_failed = False

    @property
    def has_video(self) -> bool:
        return self.video_config is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def end(self, kind: str) -> float | None:
        """Where the last packet of track ``kind`` ends (file seconds), ``None`` before one."""
        return self._ends.get(kind)

    def open(self) -> None:
        """Create the file and write the header."""
        container = av.open(
            slave_url(self.path, self.format, fragment=self.fragment),
            "w",
            format="tee",
            options={"max_interleave_delta": str(_INTERLEAVE_US)},
        )
        self._container = container
        try:
            for key, value in self.metadata.items():
                container.metadata[key] = value
            # Templates from MOV, which lists every codec we write (H.264, G.711, Opus, AAC).
            scratch = av.open(io.BytesIO(), "w", format="mov")
            try:
                if self.video_config is not None:
                    self._video = self._add_video(container, scratch, self.video_config)
                if self.audio is not None:
                    self._audio = self._add_audio(container, scratch, self.audio)
            finally:
                scratch.close()
            container.start_encoding()
            self._note_boundary()
        except BaseException:
            self.abort()
            raise

    def write_video(self, data: bytes, ts: float, *, keyframe: bool, duration: float) -> None:
        """Mux one AVCC access unit at ``ts`` seconds from the file's start."""
        if self._video is None:
            raise RuntimeError("this recording file has no video track")
        self._mux(self._video, "video", data, ts, keyframe, duration)

    def write_audio(self, data: bytes, ts: float, *, duration: float) -> None:
        """Mux one audio packet (G.711 bytes, an Opus packet or an AAC access unit)."""
        if self._audio is None:
            raise RuntimeError("this recording file has no audio track")
        self._mux(self._audio, "audio", data, ts, True, duration)

    def close(self) -> None:
        """Flush the interleaving queue, write the trailer (Cues, Duration), close the file."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.close()
        except BaseException:
            self._write_failed = True  # the last cluster or the trailer did not fit
            self._cut_back()
            raise

    def abort(self) -> None:
        """Release the file after an error; what reached the disk stays (errors ignored).

        After a failed write FFmpeg's I/O layer ignores every later write (so no
        trailer lands), but the failing write may have put part of a cluster on disk
        (a full disk takes what fits first). The file is cut back to where it ended
        after the last complete write, which leaves what a killed process leaves:
        the header and whole clusters (fragments).
        """
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.close()
        except (av.FFmpegError, OSError) as exc:
            log.debug("closing a failed recording file %s: %s", self.path, exc)
        self._cut_back()

    def _cut_back(self) -> None:
        if self._boundary is None or not self._write_failed:
            return  # the error was not the file's: the trailer was written whole
        try:
            if self.path.stat().st_size > self._boundary:
                os.truncate(self.path, self._boundary)
                log.info("recording file %s cut back to %d bytes", self.path, self._boundary)
        except OSError as exc:
            log.warning("cannot cut back %s: %s", self.path, exc.strerror)

    # -- internals ----------------------------------------------------------------------
    def _note_boundary(self) -> None:
        # With flush_packets, a mux call that returns has written whole clusters
        # (fragments) or nothing: the file's size is then a clean end. One stat per
        # packet (~1 µs) buys a clean file after a full disk.
        with contextlib.suppress(OSError):
            self._boundary = self.path.stat().st_size

    def _add_video(
        self, container: OutputContainer, scratch: OutputContainer, config: AvcConfig
    ) -> AvStream:
        stream = container.add_stream_from_template(scratch.add_stream("h264"))
        info = config.sps_info
        ctx = stream.codec_context
        ctx.extradata = config.record
        ctx.width = info.width
        ctx.height = info.height
        if self.frame_rate is not None:
            # Matroska's DefaultDuration: without it ffmpeg guesses a rate from the
            # millisecond timestamps (24 for 25 fps) and its CLI then drops frames.
            ctx.framerate = self.frame_rate
        stream.time_base = Fraction(1, 90000) if self.format == "mp4" else Fraction(1, 1000)
        return stream

    def _add_audio(
        self, container: OutputContainer, scratch: OutputContainer, track: AudioTrack
    ) -> AvStream:
        layout = "mono" if track.channels == 1 else "stereo"
        template = scratch.add_stream(track.codec, rate=track.sample_rate, layout=layout)
        stream = container.add_stream_from_template(template)
        ctx = stream.codec_context
        ctx.sample_rate = track.sample_rate
        ctx.layout = layout
        if track.extradata:
            ctx.extradata = track.extradata
        stream.time_base = (
            Fraction(1, track.sample_rate) if self.format == "mp4" else Fraction(1, 1000)
        )
        return stream

    def _mux(
        self, stream: AvStream, kind: str, data: bytes, ts: float, key: bool, duration: float
    ) -> None:
        container = self._container
        if container is None:
            raise RuntimeError("this recording file is not open")
        time_base = stream.time_base
        assert time_base is not None
        value = max(0, round(ts / time_base))
        last = self._last.get(kind)
        if last is not None and value <= last:
            value = last + 1  # a muxer refuses equal or earlier timestamps in one track
        self._last[kind] = value
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = time_base
        packet.pts = value
        packet.dts = value
        packet.duration = max(1, round(duration / time_base)) if duration > 0 else 0
        packet.is_keyframe = key
        try:
            container.mux(packet)
        except BaseException:
            self._write_failed = True
            raise
        self._note_boundary()
        self.bytes_written += len(data)
        self.packets += 1
        self._ends[kind] = float(value * time_base) + max(duration, 0.0)
