"""A recording's file sequence: frames in, one or more files out, cut at keyframes.

Theory of operation
-------------------
:class:`FileSequence` runs in the recorder's worker thread and is fed every
frame in the order the stream published it (:meth:`FileSequence.feed`).

Start. The first file opens on a video keyframe that brings SPS and PPS, so
it decodes from its first picture. Audio that came up to ``video_wait``
seconds before that keyframe is kept (it starts the file; the video track
starts a little later). While the first file is not open yet, frames are held
until what the header needs is known: the audio codec (looked for up to
:data:`LOOKAHEAD` s of frames) and the video frame rate (from the first
frames' pts, written as the track's default duration so players and ffmpeg
do not guess it). A stream that declares no video starts on its first audio
frame; one that declares video but sends no keyframe within ``video_wait``
seconds of audio starts audio-only.

Timeline. Every file has a *zero*: the call-clock pts at file time 0, its
first frame's pts (with AAC, the encoder's priming packet, which would come
before it, is left out). A frame is written at
``pts - zero``; nothing is re-timed, so the file's A/V alignment is the call
clock's. The file's ``SIPBRIDGE_START_OFFSET`` tag holds ``zero - origin``
(seconds since the recording's first file started), so a frame's place on
the recording's timeline is ``file time + START_OFFSET`` in every file.

Cuts. A new file starts when the current one reached ``rotate_seconds`` or
``rotate_bytes``, when a cut is requested (:meth:`FileSequence.cut`: a
``startRecording`` of a stream already recording), when the SPS/PPS change,
or when video appears in an audio-only file; always on a video keyframe with
SPS and PPS (on any audio frame when the recording has no video), which
becomes the new file's first frame at the cut instant ``C`` (its pts). Audio
is cut at the same instant: an audio frame with pts < ``C`` still goes to the
previous file, which stays open until an audio frame at or after ``C``
arrives (or the video is :data:`LINGER` s past ``C``). Continuity is then: the
previous file's video ends at ``C`` (its last frame's pts plus one frame
interval), its audio ends within one audio frame of ``C`` (the last frame
that *started* before ``C`` is whole in it), and the next file starts at
``C``. No frame is in two files and none is dropped at a cut. With AAC the
previous file's encoder is drained at its close, so its last AAC frame
(padded) may end up to one AAC frame after ``C``.

Errors. Any :class:`OSError` or :class:`av.FFmpegError` from a file propagates
to the recorder, which aborts the sequence (what is on disk stays) and fails
the recording.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from rtmp.audio import DECODERS, AacTranscoder, EncodedAudio
from rtmp.flv import AvcConfig, annexb_to_avcc
from rtmp.urls import describe_error
from rtmp.writer import avc_config
from rtp.frame import MediaFrame
from sipbridge.recording.config import RecorderConfig
from sipbridge.recording.container import EXTENSIONS, AudioTrack, MediaFile, opus_head
from sipbridge.recording.names import PARTIAL, resolve_inside

__all__ = ["LINGER", "LOOKAHEAD", "FileSequence", "RecordedFile", "SequenceEvents"]

log = logging.getLogger(__name__)

#: How far (seconds of pts) the start looks ahead for the audio codec and the frame rate.
LOOKAHEAD = 0.5
#: How long (seconds of video pts) after a cut the previous file waits for late audio.
LINGER = 0.5
#: Common frame rates a measured one is snapped to (within 4 %).
_RATES = (5, 7.5, 10, 12, 12.5, 15, 20, 24, 25, 29.97, 30, 48, 50, 59.94, 60)
#: Pts closer than this are the same instant (sums of 20 ms steps are not exact).
_EPSILON = 1e-6
#: Frame gaps measured before the frame rate is trusted (else LOOKAHEAD decides).
_RATE_GAPS = 4
_COPY_CODECS = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw", "opus": "opus"}

# File names handed out and not yet renamed away, across recordings of this process.
_claimed: set[Path] = set()
_claim_lock = threading.Lock()


@dataclass
class RecordedFile:
    """One file of a recording, as the recorder reports it (times in seconds)."""

    name: str
    """The path relative to the output directory (``/`` separated)."""
    path: Path
    start_time: float
    """Wall clock (Unix seconds) of the file's first frame."""
    start_offset: float
    """File time 0 on the recording's timeline (see the module doc)."""
    start_pts: float
    end_time: float | None = None
    end_pts: float | None = None
    bytes: int = 0
    video_codec: str | None = None
    audio_codec: str | None = None
    finished: bool = False
    error: str | None = None

    @property
    def duration(self) -> float:
        return 0.0 if self.end_pts is None else max(0.0, self.end_pts - self.start_pts)


@dataclass
class SequenceEvents:
    """What the sequence tells its owner (called in the worker thread)."""

    file_opened: Callable[[RecordedFile], None] = lambda f: None
    file_closed: Callable[[RecordedFile], None] = lambda f: None
    request_keyframe: Callable[[], None] = lambda: None


@dataclass
class _Open:
    """A file being written and how frames map onto it."""

    media: MediaFile
    record: RecordedFile
    zero: float
    transcoder: AacTranscoder | None
    audio_source: str | None
    cut: float | None = None
    last_video_pts: float | None = None


@dataclass
class _Interval:
    """The video frame interval, from pts deltas (median of the last ones)."""

    last: float | None = None
    deltas: deque[float] = field(default_factory=lambda: deque(maxlen=30))

    def add(self, pts: float) -> None:
        if self.last is not None and 0.001 < pts - self.last < 1.0:
            self.deltas.append(pts - self.last)
        self.last = pts

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.deltas) if self.deltas else None

    @property
    def rate(self) -> Fraction | None:
        interval = self.seconds
        if interval is None:
            return None
        measured = 1 / interval
        best = min(_RATES, key=lambda r: abs(r - measured))
        if abs(best - measured) > 0.04 * best:
            return None
        return Fraction(best).limit_denominator(1001) if best % 1 else Fraction(int(best))


def _pts(frame: MediaFrame) -> float:
    # pts is set by the call's A/V sync; before that, arrival is the best guess (as rtmp does).
    return frame.pts if frame.pts is not None else frame.arrival


def _audio_duration(frame: MediaFrame) -> float:
    if frame.duration is not None:
        return frame.duration
    if frame.codec in ("PCMU", "PCMA"):
        return len(frame.payload) / 8000
    return 0.020


class FileSequence:
    """Writes one stream's frames into successive files (module doc). Worker thread only."""

    def __init__(
        self,
        config: RecorderConfig,
        *,
        stream_name: str,
        media_session_id: str,
        recording_id: str,
        events: SequenceEvents,
        wall_clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.stream_name = stream_name
        self.media_session_id = media_session_id
        self.recording_id = recording_id
        self.events = events
        self._wall_clock = wall_clock
        self.frames_written = 0
        self.bytes_written = 0
        self.files_finished = 0
        self._cur: _Open | None = None
        self._prev: _Open | None = None
        self._buffer: list[MediaFrame] = []
        self._origin: float | None = None
        self._wall_origin = 0.0
        self._cut_wanted = False
        self._next_config: RecorderConfig | None = None
        self._interval = _Interval()
        self._audio_codec: str | None = None
        self._declares_video = False
        self._declares_audio = False
        self._warned: set[str] = set()

    @property
    def current(self) -> RecordedFile | None:
        return None if self._cur is None else self._cur.record

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, frame: MediaFrame, *, declares_video: bool, declares_audio: bool) -> None:
        """Write ``frame`` where it belongs (may open or close files)."""
        self._declares_video = declares_video or self._declares_video
        self._declares_audio = declares_audio or self._declares_audio
        if frame.kind == "audio":
            self._audio_codec = frame.codec
        elif frame.codec != "H264":
            self._warn_once("vcodec", "video codec %s cannot be recorded: dropped", frame.codec)
            return
        else:
            self._interval.add(_pts(frame))
        if self._cur is None:
            self._buffer.append(frame)
            self._try_start(final=False)
            return
        self._route(frame)

    def cut(self, config: RecorderConfig | None = None) -> None:
        """End the current file at the next cut point; later files use ``config``."""
        if config is not None:
            self._next_config = config
        if self._cur is not None:
            self._cut_wanted = True
            if self._cur.media.has_video:
                self.events.request_keyframe()

    def finish(self) -> None:
        """The stream ended or the recording stops: write what is held, close every file."""
        if self._cur is None and self._buffer:
            self._try_start(final=True)
        if self._prev is not None:
            self._close(self._prev, self._prev.cut)
            self._prev = None
        if self._cur is not None:
            cur, self._cur = self._cur, None
            self._close(cur, None)

    def abort(self, error: str) -> None:
        """After a write error: release every file, keep what is on disk, report them."""
        for item in (self._prev, self._cur):
            if item is None:
                continue
            item.media.abort()
            record = item.record
            record.error = error
            record.bytes = item.media.bytes_written
            record.end_pts = record.end_pts or self._end_pts(item)
            if record.end_pts is not None and self._origin is not None:
                record.end_time = self._wall_at(record.end_pts)
            _release(record.path)
            self.events.file_closed(record)
        self._prev = self._cur = None

    # -- start ------------------------------------------------------------------------------
    def _try_start(self, *, final: bool) -> None:
        buffer = self._buffer
        audio = [f for f in buffer if f.kind == "audio"]
        key = next(
            (f for f in buffer if f.kind == "video" and f.keyframe and avc_config(f) is not None),
            None,
        )
        if key is not None:
            after = [f for f in buffer if _pts(f) >= _pts(key)]
            span = max(_pts(f) for f in after) - _pts(key)
            audio_known = not self._declares_audio or any(f.kind == "audio" for f in after)
            # One gap is not a rate: phones often leave a longer one after the first
            # frame (baresip: 80 ms at 25 fps), so wait for a few before trusting it.
            rate_known = (
                self._interval.rate is not None and len(self._interval.deltas) >= _RATE_GAPS
            )
            if not final and not (audio_known and rate_known) and span < LOOKAHEAD:
                return
            early = _pts(key) - self.config.video_wait
            frames = [f for f in buffer if (f.kind == "audio" and _pts(f) >= early) or f is key]
            frames += [f for f in buffer if f.kind == "video" and _pts(f) > _pts(key)]
            start = min(_pts(f) for f in frames)
            self._buffer = []
            self._open(start, video=avc_config(key))
            for frame in sorted(frames, key=_pts):
                self._route(frame)
            return
        # Video before its first keyframe is useless; keep only what can start a file.
        self._buffer = [f for f in buffer if f.kind == "audio"]
        if not audio:
            if buffer:
                self.events.request_keyframe()
            return
        span = _pts(audio[-1]) - _pts(audio[0])
        if self._declares_video and not final and span < self.config.video_wait:
            self.events.request_keyframe()
            return
        if self._declares_video:
            log.info("recording %s: no video keyframe yet: starting audio only", self.stream_name)
        self._buffer = []
        self._open(_pts(audio[0]), video=None)
        for frame in audio:
            self._route(frame)

    # -- routing ----------------------------------------------------------------------------
    def _route(self, frame: MediaFrame) -> None:
        cur = self._cur
        assert cur is not None
        pts = _pts(frame)
        if frame.kind == "video":
            self._linger_check(pts)
            if frame.keyframe and self._wants_cut(cur, frame):
                config = avc_config(frame)
                if config is not None:
                    cur = self._rotate(pts, video=config)
            elif not frame.keyframe and self._limit_reached(cur, frame):
                # Phones that send keyframes only on request would never be cut otherwise
                # (the stream sends at most one request per keyframe_interval).
                self.events.request_keyframe()
            if not cur.media.has_video:
                self.events.request_keyframe()  # video came to an audio-only file: cut soon
                return
            self._write_video(cur, frame)
            return
        prev = self._prev
        if prev is not None:
            if prev.cut is not None and pts < prev.cut - _EPSILON:
                if prev.media.has_audio:
                    self._write_audio(prev, frame)
                return
            self._prev = None
            self._close(prev, prev.cut)
        if pts < cur.zero - _EPSILON:
            return  # came after its file was closed (later than LINGER): lost at the cut
        recordable = frame.codec in _COPY_CODECS or frame.codec in DECODERS
        if recordable and frame.codec != cur.audio_source:
            # Audio appeared, or the call renegotiated its codec: the file's audio track
            # cannot change, so a new file starts (at once without video, else at a keyframe).
            if not cur.media.has_video:
                cur = self._rotate(pts, video=None)
            else:
                self._cut_wanted = True
                self.events.request_keyframe()
                return
        elif not cur.media.has_video and self._wants_cut(cur, frame):
            cur = self._rotate(pts, video=None)
        if cur.media.has_audio:
            self._write_audio(cur, frame)

    def _limit_reached(self, cur: _Open, frame: MediaFrame) -> bool:
        config = self.config
        elapsed = _pts(frame) - cur.record.start_pts
        if config.rotate_seconds and elapsed >= config.rotate_seconds - _EPSILON:
            return True
        return bool(config.rotate_bytes) and cur.media.bytes_written >= config.rotate_bytes

    def _wants_cut(self, cur: _Open, frame: MediaFrame) -> bool:
        if self._cut_wanted or self._limit_reached(cur, frame):
            return True
        if frame.kind != "video":
            return False
        if not cur.media.has_video:
            return True
        seen = avc_config(frame)
        current = cur.media.video_config
        if seen is None or current is None:
            return False
        return current.updated(list(seen.sps), list(seen.pps)) != current

    def _linger_check(self, video_pts: float) -> None:
        prev = self._prev
        if prev is not None and prev.cut is not None and video_pts - prev.cut > LINGER:
            self._prev = None
            self._close(prev, prev.cut)

    def _rotate(self, at: float, *, video: AvcConfig | None) -> _Open:
        old = self._cur
        assert old is not None
        if self._prev is not None:
            prev, self._prev = self._prev, None
            self._close(prev, prev.cut)
        old.cut = at
        self._cut_wanted = False
        if self._next_config is not None:
            self.config, self._next_config = self._next_config, None
        self._cur = None  # whatever happens next, ``old`` is reported once
        if old.media.has_audio and old.media.has_video:
            self._prev = old  # takes the audio that is still before the cut
        else:
            self._close(old, at)
        return self._open(at, video=video)

    # -- files ------------------------------------------------------------------------------
    def _open(self, start: float, *, video: AvcConfig | None) -> _Open:
        config = self.config
        if self._origin is None:
            self._origin = start
            self._wall_origin = self._wall_clock()
        audio_source = self._audio_codec
        transcoder: AacTranscoder | None = None
        track: AudioTrack | None = None
        if audio_source is not None:
            track, transcoder = self._audio_track(audio_source)
            if track is None:
                audio_source = None
        zero = start
        wall = self._wall_at(start)
        values = {
            "streamName": self.stream_name,
            "mediaSessionId": self.media_session_id,
            "startTime": str(round(wall * 1000)),
            "endTime": PARTIAL,
            "videoCodec": "H264" if video is not None else "",
            "audioCodec": audio_source or "",
        }
        extension = EXTENSIONS[config.format]
        relative = config.template.render(values, extension=extension)
        path = _claim(resolve_inside(config.directory, relative))
        path.parent.mkdir(parents=True, exist_ok=True)
        offset = zero - self._origin
        record = RecordedFile(
            name=path.relative_to(config.directory.resolve()).as_posix(),
            path=path,
            start_time=wall,
            start_offset=offset,
            start_pts=start,
            video_codec="H264" if video is not None else None,
            audio_codec=audio_source,
        )
        metadata = {
            "SIPBRIDGE_START_OFFSET": f"{offset:.6f}",
            "SIPBRIDGE_START_TIME": str(round(wall * 1000)),
            "SIPBRIDGE_STREAM": self.stream_name,
            "SIPBRIDGE_MEDIA_SESSION_ID": self.media_session_id,
            "SIPBRIDGE_RECORDING_ID": self.recording_id,
        }
        media = MediaFile(
            path,
            config.format,
            video=video,
            audio=track,
            metadata=metadata,
            fragment=config.fragment,
            frame_rate=self._interval.rate,
        )
        try:
            media.open()
        except BaseException:
            _release(path)
            raise
        opened = _Open(media=media, record=record, zero=zero, transcoder=transcoder,
                       audio_source=audio_source)  # fmt: skip
        self._cur = opened
        log.info("recording %s: writing %s", self.stream_name, path)
        self.events.file_opened(record)
        return opened

    def _audio_track(self, codec: str) -> tuple[AudioTrack | None, AacTranscoder | None]:
        config = self.config
        copy = _COPY_CODECS.get(codec)
        if (
            config.audio == "copy"
            and copy is not None
            and (config.format == "mkv" or copy == "opus")
        ):
            if copy == "opus":
                return AudioTrack("opus", 48000, 2, opus_head()), None
            return AudioTrack(copy, 8000), None  # type: ignore[arg-type]
        if codec not in DECODERS:
            self._warn_once(f"acodec-{codec}", "audio codec %s cannot be recorded", codec)
            return None, None
        transcoder = AacTranscoder(bitrate=config.aac_bitrate, sample_rate=config.aac_sample_rate)
        track = AudioTrack("aac", config.aac_sample_rate, 1, transcoder.extradata)
        return track, transcoder

    def _write_video(self, item: _Open, frame: MediaFrame) -> None:
        data = annexb_to_avcc(frame.payload).data
        if not data:
            return  # parameter sets only
        interval = self._interval.seconds or 0.04
        item.media.write_video(
            data, _pts(frame) - item.zero, keyframe=frame.keyframe, duration=interval
        )
        item.last_video_pts = _pts(frame)
        self.frames_written += 1
        self.bytes_written += len(data)

    def _write_audio(self, item: _Open, frame: MediaFrame) -> None:
        if item.audio_source is not None and frame.codec != item.audio_source:
            return
        if item.transcoder is None:
            item.media.write_audio(
                frame.payload, _pts(frame) - item.zero, duration=_audio_duration(frame)
            )
            self.frames_written += 1
            self.bytes_written += len(frame.payload)
            return
        if frame.codec not in DECODERS:
            return
        for unit in item.transcoder.feed(frame.codec, frame.payload, _pts(frame)):
            self._write_aac(item, unit)
        self.frames_written += 1

    def _write_aac(self, item: _Open, unit: EncodedAudio) -> None:
        if unit.pts < item.zero - _EPSILON:
            # The encoder's priming packet, before the file's start: fragmented MP4 cannot
            # start a track before another without an edit list (it would move the first
            # video frame to 0). The decoder then starts from silence for one AAC frame.
            return
        item.media.write_audio(unit.data, unit.pts - item.zero, duration=unit.duration)
        self.bytes_written += len(unit.data)

    def _end_pts(self, item: _Open) -> float | None:
        ends = [
            end for end in (item.media.end("video"), item.media.end("audio")) if end is not None
        ]
        return item.zero + max(ends) if ends else None

    def _close(self, item: _Open, cut: float | None) -> None:
        media = item.media
        if item.transcoder is not None and media.has_audio:
            for unit in item.transcoder.flush():
                self._write_aac(item, unit)
        record = item.record
        try:
            media.close()
        except (OSError, av.FFmpegError) as exc:
            # The trailer did not fit: report the file (cut back to whole clusters) as failed.
            record.error = describe_error(exc)
            record.bytes = media.bytes_written
            record.end_pts = self._end_pts(item)
            record.end_time = self._wall_at(record.end_pts or record.start_pts)
            _release(record.path)
            self.events.file_closed(record)
            raise
        record.end_pts = cut if cut is not None else self._end_pts(item)
        record.end_time = self._wall_at(record.end_pts or record.start_pts)
        record.bytes = media.bytes_written
        record.finished = True
        self._rename(record)
        self.files_finished += 1
        self.events.file_closed(record)

    def _rename(self, record: RecordedFile) -> None:
        """Give a finished file its name with ``{endTime}`` (it was written as ``partial``)."""
        config = self.config
        if not config.template.has_end_time:
            _release(record.path)
            return
        values = {
            "streamName": self.stream_name,
            "mediaSessionId": self.media_session_id,
            "startTime": str(round(record.start_time * 1000)),
            "endTime": str(round((record.end_time or record.start_time) * 1000)),
            "videoCodec": record.video_codec or "",
            "audioCodec": record.audio_codec or "",
        }
        old = record.path
        try:
            relative = config.template.render(values, extension=EXTENSIONS[config.format])
            new = _claim(resolve_inside(config.directory, relative))
        except ValueError as exc:
            log.warning("recording %s: %s: keeping %s", self.stream_name, exc, old)
            _release(old)
            return
        try:
            new.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, new)
        except OSError as exc:
            log.warning("recording %s: cannot rename %s: %s", self.stream_name, old, exc.strerror)
            _release(new)
            _release(old)
            return
        _release(old)
        _release(new)
        record.path = new
        record.name = new.relative_to(config.directory.resolve()).as_posix()

    def _wall_at(self, pts: float) -> float:
        """The wall clock of call-clock ``pts`` (the recording's first frame is its start)."""
        assert self._origin is not None
        return self._wall_origin + (pts - self._origin)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("recording %s: " + message, self.stream_name, *args)


def _claim(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext``... when taken on disk or by another file."""
    with _claim_lock:
        candidate = path
        number = 1
        while candidate in _claimed or candidate.exists():
            number += 1
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        _claimed.add(candidate)
        return candidate


def _release(path: Path) -> None:
    with _claim_lock:
        _claimed.discard(path)
