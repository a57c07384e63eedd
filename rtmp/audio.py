"""Call audio for RTMP: G.711 or Opus decoded and encoded to AAC-LC with PyAV.

FLV has no Opus, and the big RTMP platforms take AAC only (FLV spec v10.1,
Annex E.4.2.1, ``SoundFormat`` 10). :class:`AacTranscoder` decodes each call
audio frame (``pcm_mulaw``/``pcm_alaw`` at 8 kHz, RFC 3551 §4.5.14; Opus,
RFC 7587), resamples to the encoder's format and rate, cuts the result into the
1024-sample frames AAC-LC codes (ISO/IEC 14496-3 §4.5.1) through an
:class:`av.AudioFifo`, and encodes them.

Timing: the samples stay continuous, and each output packet is stamped from the
``pts`` of the input frame its first sample came from (plus its offset inside
that frame), so the audio follows every correction of the call clock exactly
as the video does (A/V sync steps below :data:`PTS_TOLERANCE` included; stamping
by a sample count from the first frame left those to drift up to 8 ms). The
incoming ``pts`` are the truth: a frame later than the samples counted so far (a lost packet,
DTX) is preceded by that much silence; a frame earlier than that (a clock
step backwards) is dropped, so audio never drifts from the frames' clock by
more than :data:`PTS_TOLERANCE`. Packet ``pts`` from the encoder include its
priming delay (1024 samples before the first input sample, the usual AAC
``initial_padding``), so a player that decodes from the first packet puts
every real sample at its true time.

Blocking (CPU) work: call it from the pusher's writer thread, not the event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av
import av.audio.fifo
import av.audio.frame
import av.audio.resampler
from av.audio.codeccontext import AudioCodecContext

from rtmp.ffmpeg_threads import limit_ffmpeg_threads

__all__ = [
    "DECODERS",
    "PTS_TOLERANCE",
    "AacTranscoder",
    "EncodedAudio",
    "g711_silence",
]

log = logging.getLogger(__name__)

# _ONE_THREAD: FFmpeg's codecs and filter graphs default to one worker thread per core
# and start them at open(); for 20 ms audio frames they bring nothing but threads
# (rtmp.ffmpeg_threads). The pushes' encoding runs in rtmp.writer's thread pool instead.
limit_ffmpeg_threads()

#: Call audio codec name (:class:`rtp.frame.MediaFrame` ``codec``) -> (FFmpeg decoder,
#: sample rate, channel layout).
DECODERS: dict[str, tuple[str, int, str]] = {
    "PCMU": ("pcm_mulaw", 8000, "mono"),
    "PCMA": ("pcm_alaw", 8000, "mono"),
    # RFC 7587 §4.1: Opus RTP always advertises 48000/2; the decoder downmixes if needed.
    "opus": ("opus", 48000, "stereo"),
}

#: How far (seconds) a frame's pts may stray from the counted samples before
#: silence is inserted or the frame dropped: below half a 20 ms packet.
PTS_TOLERANCE = 0.008
#: The longest gap filled with silence; a longer one re-anchors the timeline.
MAX_SILENCE = 10.0


def g711_silence(codec: str, length: int) -> bytes:
    """``length`` bytes of G.711 silence: µ-law 0xFF, A-law 0xD5 (ITU-T G.711 Tables 1-2)."""
    if codec == "PCMU":
        return b"\xff" * length
    if codec == "PCMA":
        return b"\xd5" * length
    raise ValueError(f"not a G.711 codec: {codec!r}")


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    """One AAC access unit: ``pts`` (seconds, call clock) of its first sample."""

    data: bytes
    pts: float
    duration: float


class AacTranscoder:
    """Call audio frames in, AAC-LC access units out (ISO/IEC 14496-3), mono.

    ``extradata`` is the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the
    FLV AAC sequence header's body. Feed frames in pts order with :meth:`feed`;
    :meth:`flush` drains the encoder at the end of the stream.
    """

    def __init__(self, *, bitrate: int = 128_000, sample_rate: int = 48_000) -> None:
        self.sample_rate = sample_rate
        self.bitrate = bitrate
        encoder = av.CodecContext.create("aac", "w")
        assert isinstance(encoder, AudioCodecContext)
        encoder.sample_rate = sample_rate
        encoder.layout = "mono"
        encoder.format = "fltp"
        encoder.bit_rate = bitrate
        encoder.time_base = Fraction(1, sample_rate)
        # FLV sends the AudioSpecificConfig once, as the sequence header.
        encoder.flags |= av.codec.context.Flags.global_header
        encoder.thread_count = 1  # see _ONE_THREAD
        encoder.open()
        self._encoder = encoder
        self.frame_size = encoder.frame_size or 1024
        self._resampler = av.audio.resampler.AudioResampler(
            format="fltp", layout="mono", rate=sample_rate
        )
        self._fifo = av.audio.fifo.AudioFifo()
        self._decoder: AudioCodecContext | None = None
        self._decoder_codec: str | None = None
        self._origin: float | None = None
        self._in_samples = 0  # samples (at sample_rate) written to the FIFO
        # (first sample index, pts) of every input frame not yet encoded: packet stamps.
        self._anchors: deque[tuple[int, float]] = deque()
        self._out_samples = 0  # samples (at sample_rate) sent to the encoder
        self.frames_in = 0
        self.frames_dropped = 0
        self.silence_inserted = 0.0  # seconds

    @property
    def extradata(self) -> bytes:
        """The AudioSpecificConfig (2 bytes for AAC-LC)."""
        data = self._encoder.extradata
        if not data:
            raise RuntimeError("the AAC encoder gave no AudioSpecificConfig")
        return data

    @property
    def expected_pts(self) -> float | None:
        """Where the next input frame is expected on the call clock (None before the first)."""
        if self._origin is None:
            return None
        return self._origin + self._in_samples / self.sample_rate

    def feed(
        self, codec: str, payload: bytes, pts: float, *, muted: bool = False
    ) -> list[EncodedAudio]:
        """Decode one call audio frame and return the AAC units now complete.

        ``muted`` replaces the samples by silence, keeping the timing. Raises
        :class:`ValueError` for a codec not in :data:`DECODERS`.
        """
        decoder = self._decoder_for(codec)
        try:
            frames = decoder.decode(av.Packet(payload))
        except av.FFmpegError as exc:
            # A corrupt packet is lost audio, not a broken push: the gap becomes silence.
            log.debug("audio decode error (%s): %s", codec, exc)
            return []
        out: list[EncodedAudio] = []
        for frame in frames:
            out += self._push(frame, pts, muted)
            pts += frame.samples / frame.sample_rate
        return out

    def flush(self) -> list[EncodedAudio]:
        """Encode what the FIFO holds (the last frame padded) and drain the encoder."""
        out: list[EncodedAudio] = []
        for resampled in self._resampler.resample(None):
            self._write_fifo(resampled)
        rest = self._fifo.samples
        if rest:
            tail = self._fifo.read(rest)
            if tail is not None:
                out += self._encode(tail)
        out += self._encode(None)
        return out

    # -- internals ----------------------------------------------------------------------
    def _decoder_for(self, codec: str) -> AudioCodecContext:
        if self._decoder is not None and self._decoder_codec == codec:
            return self._decoder
        try:
            name, rate, layout = DECODERS[codec]
        except KeyError:
            raise ValueError(f"no AAC transcoding from audio codec {codec!r}") from None
        decoder = av.CodecContext.create(name, "r")
        assert isinstance(decoder, AudioCodecContext)
        decoder.sample_rate = rate
        decoder.layout = layout
        decoder.thread_count = 1  # see _ONE_THREAD
        decoder.open()
        self._decoder = decoder
        self._decoder_codec = codec
        return decoder

    def _push(self, frame: av.AudioFrame, pts: float, muted: bool) -> list[EncodedAudio]:
        duration = frame.samples / frame.sample_rate
        expected = self.expected_pts
        if expected is None:
            self._origin = pts
        else:
            gap = pts - expected
            if gap < -PTS_TOLERANCE:
                # Entirely or mostly in the past: drop it rather than shift what follows.
                self.frames_dropped += 1
                return []
            if gap > MAX_SILENCE:
                log.warning("audio pts jumped %.3f s ahead: timeline re-anchored", gap)
                assert self._origin is not None
                self._origin += gap
            elif gap > PTS_TOLERANCE:
                self._insert_silence(round(gap * self.sample_rate))
        self.frames_in += 1
        self._anchors.append((self._in_samples, pts))
        if muted:
            frame = _silent_like(frame)
        frame.pts = None
        self._in_samples += round(duration * self.sample_rate)
        for resampled in self._resampler.resample(frame):
            self._write_fifo(resampled)
        return self._drain_fifo()

    def _insert_silence(self, samples: int) -> None:
        if samples <= 0:
            return
        silence = _silence(samples, self.sample_rate)
        self._fifo.write(silence)
        self._in_samples += samples
        self.silence_inserted += samples / self.sample_rate

    def _write_fifo(self, frame: av.AudioFrame) -> None:
        frame.pts = None  # the FIFO checks pts continuity; the timeline is counted here
        self._fifo.write(frame)

    def _drain_fifo(self) -> list[EncodedAudio]:
        out: list[EncodedAudio] = []
        while self._fifo.samples >= self.frame_size:
            frame = self._fifo.read(self.frame_size)
            if frame is None:
                break
            out += self._encode(frame)
        return out

    def _encode(self, frame: av.AudioFrame | None) -> list[EncodedAudio]:
        if frame is not None:
            frame.pts = self._out_samples
            frame.time_base = Fraction(1, self.sample_rate)
            frame.sample_rate = self.sample_rate
            self._out_samples += frame.samples
        out: list[EncodedAudio] = []
        rate = self.sample_rate
        for packet in self._encoder.encode(frame):
            if packet.pts is None:
                continue
            out.append(
                EncodedAudio(
                    data=bytes(packet),
                    pts=self._stamp(packet.pts),
                    duration=(packet.duration or self.frame_size) / rate,
                )
            )
        return out

    def _stamp(self, sample: int) -> float:
        """The call-clock time of output sample ``sample`` (negative: the priming)."""
        anchors = self._anchors
        while len(anchors) > 1 and anchors[1][0] <= sample:
            anchors.popleft()
        if not anchors:
            origin = self._origin if self._origin is not None else 0.0
            return origin + sample / self.sample_rate
        first_sample, pts = anchors[0]
        return pts + (sample - first_sample) / self.sample_rate


def _silence(samples: int, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="fltp", layout="mono", samples=samples)
    frame.sample_rate = rate
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame


def _silent_like(frame: av.AudioFrame) -> av.AudioFrame:
    silent = av.AudioFrame(
        format=frame.format.name, layout=frame.layout.name, samples=frame.samples
    )
    silent.sample_rate = frame.sample_rate
    for plane in silent.planes:
        plane.update(bytes(plane.buffer_size))
    return silent
