"""Media test tools: ffmpeg-made clips, ffmpeg as RTP sender/receiver, A/V measurements.

Theory of operation
-------------------
A/V alignment is measured on what a receiver *outputs*, never on its
internals. The "flash and beep" clip is black video with a white frame every
``flash_every`` frames (an IDR picture, so a receiver that drops P frames
after a loss still shows it) and silent audio with a 1 kHz beep starting
``beep_delay`` seconds after each flash (mid-packet on purpose: an onset
inside a packet is exact even when the packet before it was lost). Decoding
a receiver's output gives the PTS of each flash (first white frame) and of
each beep onset (first loud sample after at least 10 ms of contiguous
silence); paired flash-to-beep offsets are compared with the same offsets
measured the same way on the source clip, the sender's truth.

Video is decoded with PyAV's H264 decoder (Annex B access units in), G.711
u-law with the 256-entry table of ITU-T G.711, Opus with PyAV. numpy is not
needed: planes are read as bytes.

ffmpeg (5.1 here) sends a clip with ``-re`` as one RTP stream per track with
RTCP sender reports on port + 1 (``rtcpport``); its SR maps the muxer's
header time to RTP timestamp ``base`` and media timestamps are ``base + pts``,
so SRs describe the clip's own timeline. Clips are Matroska, whose millisecond
timestamps are exact for 25 fps video and 20 ms audio frames.
"""

from __future__ import annotations

import base64
import statistics
import subprocess
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av

from rtp.h264_bits import NAL_AUD, NAL_PPS, NAL_SEI, NAL_SPS, first_mb_in_slice, is_vcl

__all__ = [
    "AlignmentReport",
    "AudioChunk",
    "ClipSpec",
    "VideoSample",
    "beep_onsets",
    "container_packets",
    "decode_audio",
    "decode_h264",
    "flash_onsets",
    "make_clip",
    "measure_alignment",
    "pair_offsets",
    "read_container",
    "receiver_argv",
    "receiver_sdp",
    "reference_access_units",
    "sender_argv",
    "source_truth",
    "split_access_units",
    "sprop_parameter_sets",
    "ulaw_decode",
]

AudioCodecName = Literal["PCMU", "opus"]
LOCALHOST = "127.0.0.1"
#: Luma above this is a white (flash) frame; black is 16, white 235.
WHITE_LUMA = 128.0
#: An audio sample above this (full scale 1.0; the beep peaks at 0.5) is loud.
LOUD = 0.1
#: Contiguous silence needed before a loud sample for it to be an onset.
QUIET_BEFORE_ONSET = 0.010
_RUN_TIMEOUT = 60.0


@dataclass(frozen=True)
class ClipSpec:
    """A test clip: H264 (libx264, no B-frames) + PCMU 8 kHz or Opus 48 kHz, 20 ms frames."""

    duration: float = 6.0
    width: int = 640
    height: int = 360
    fps: int = 25
    audio: AudioCodecName = "PCMU"
    profile: Literal["baseline", "high"] = "baseline"
    pattern: Literal["testsrc", "flash"] = "testsrc"
    flash_every: int = 15
    """Frames between flashes (and beeps)."""
    flash_first: int = 12
    """Frame index of the first flash."""
    beep_delay: float = 0.005
    """The beep starts this long after its flash: the built-in A/V offset."""
    beep_length: float = 0.040
    audio_start: float = 0.0
    """The audio stream starts this late (its first beeps are cut)."""

    @property
    def sample_rate(self) -> int:
        return 8000 if self.audio == "PCMU" else 48000

    @property
    def period(self) -> float:
        """Seconds between flashes."""
        return self.flash_every / self.fps

    @property
    def video_frames(self) -> int:
        return round(self.duration * self.fps)

    @property
    def audio_frames(self) -> int:
        return round((self.duration - self.audio_start) / 0.020)


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, timeout=_RUN_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {done.returncode}:\n"
            + done.stderr.decode(errors="replace")[-2000:]
        )


def make_clip(ffmpeg: str, spec: ClipSpec, path: Path) -> Path:
    """Encode ``spec`` into the Matroska file ``path`` with ffmpeg's lavfi sources."""
    rate = spec.sample_rate
    period = spec.flash_every * rate // spec.fps
    onset = round((spec.flash_first / spec.fps + spec.beep_delay) * rate)
    length = round(spec.beep_length * rate)
    start = round(spec.audio_start * rate)
    # Sample n of the source is at clip time audio_start + n / rate (-itsoffset below).
    # A cosine so the first beep sample is at full amplitude (the onset is sharp).
    beep = (
        f"if(lt(mod(n+{start + period * 1000 - onset}\\,{period})\\,{length})"
        f"\\,0.5*cos(2*PI*1000*(n+{start})/{rate})\\,0)"
    )
    audio_length = spec.duration - spec.audio_start
    audio = f"aevalsrc=exprs='{beep}':s={rate}:d={audio_length}:nb_samples={rate // 50}"
    size = f"{spec.width}x{spec.height}"
    flash = f"eq(mod(n\\,{spec.flash_every})\\,{spec.flash_first % spec.flash_every})"
    if spec.pattern == "flash":
        video = (
            f"color=c=black:s={size}:r={spec.fps}:d={spec.duration},format=yuv420p,"
            f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='{flash}'"
        )
        keyframes = [
            "-force_key_frames",
            f"expr:eq(mod(n,{spec.flash_every}),{spec.flash_first % spec.flash_every})",
        ]
    else:
        video = f"testsrc2=s={size}:r={spec.fps}:d={spec.duration},format=yuv420p"
        keyframes = []
    if spec.audio == "PCMU":
        audio_codec = ["-c:a", "pcm_mulaw"]
    else:
        audio_codec = ["-c:a", "libopus", "-b:a", "48k", "-frame_duration", "20"]
    _run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", video,
            "-itsoffset", str(spec.audio_start), "-f", "lavfi", "-i", audio,
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-profile:v", spec.profile, "-bf", "0", "-g", "50",
            "-tune", "zerolatency", "-pix_fmt", "yuv420p", *keyframes,
            *audio_codec,
            str(path),
        ]
    )  # fmt: skip
    return path


# --------------------------------------------------------------------------- H264 reference


def reference_access_units(ffmpeg: str, clip: Path, out: Path) -> list[bytes]:
    """ffmpeg's own Annex B bitstream of the clip's video, split into access units."""
    _run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip),
            "-map", "0:v", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out),
        ]
    )  # fmt: skip
    return split_access_units(out.read_bytes())


def _nal_starts(stream: bytes) -> list[tuple[int, int]]:
    """(start of the start code, start of the NAL unit) for every NAL unit."""
    starts: list[tuple[int, int]] = []
    position = stream.find(b"\x00\x00\x01")
    while position >= 0:
        code = position - 1 if position > 0 and stream[position - 1] == 0 else position
        starts.append((code, position + 3))
        position = stream.find(b"\x00\x00\x01", position + 3)
    return starts


def split_access_units(stream: bytes) -> list[bytes]:
    """Cut an Annex B byte stream into access units (H.264 §7.4.1.2.3), bytes kept exact.

    A new access unit starts, once the current one holds a slice, at an access
    unit delimiter, SEI, SPS or PPS, or at a slice with ``first_mb_in_slice``
    0. Each unit keeps its start codes as they are in the stream.
    """
    units: list[bytes] = []
    begin: int | None = None
    has_slice = False
    for code, nal in _nal_starts(stream):
        kind = stream[nal] & 0x1F
        starts_unit = has_slice and (
            kind in (NAL_AUD, NAL_SEI, NAL_SPS, NAL_PPS)
            or (is_vcl(kind) and first_mb_in_slice(stream[nal : nal + 9]) == 0)
        )
        if begin is None:
            begin = code
        elif starts_unit:
            units.append(stream[begin:code])
            begin, has_slice = code, False
        has_slice = has_slice or is_vcl(kind)
    if begin is not None:
        units.append(stream[begin:])
    return units


def sprop_parameter_sets(clip: Path) -> str:
    """The SDP ``sprop-parameter-sets`` (RFC 6184 §8.1) of a clip's avcC extradata."""
    with av.open(str(clip)) as container:
        extradata = container.streams.video[0].codec_context.extradata
    if not extradata or extradata[0] != 1:
        raise ValueError("the clip's video has no avcC extradata")
    nals: list[bytes] = []
    position = 5
    for mask in (0x1F, 0xFF):  # SPS count (low 5 bits), then PPS count
        count = extradata[position] & mask
        position += 1
        for _ in range(count):
            size = int.from_bytes(extradata[position : position + 2], "big")
            nals.append(extradata[position + 2 : position + 2 + size])
            position += 2 + size
    return ",".join(base64.b64encode(nal).decode() for nal in nals)


# --------------------------------------------------------------------------- ffmpeg RTP


def _audio_rtp(codec: AudioCodecName) -> tuple[int, str]:
    return (0, "PCMU/8000") if codec == "PCMU" else (111, "opus/48000/2")


def sender_argv(
    ffmpeg: str,
    clip: Path,
    *,
    video: tuple[int, int],
    audio: tuple[int, int],
    audio_codec: AudioCodecName,
    video_pt: int = 96,
) -> list[str]:
    """ffmpeg sending ``clip`` in real time: video to ``video`` (RTP, RTCP ports), audio too."""
    audio_pt, _ = _audio_rtp(audio_codec)
    return [
        ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostdin", "-re", "-i", str(clip),
        "-map", "0:v", "-c:v", "copy", "-f", "rtp", "-payload_type", str(video_pt),
        f"rtp://{LOCALHOST}:{video[0]}?rtcpport={video[1]}",
        "-map", "0:a", "-c:a", "copy", "-f", "rtp", "-payload_type", str(audio_pt),
        f"rtp://{LOCALHOST}:{audio[0]}?rtcpport={audio[1]}",
    ]  # fmt: skip


def receiver_sdp(
    *, video_port: int, audio_port: int, audio_codec: AudioCodecName, sprop: str
) -> str:
    """An SDP for ffmpeg receiving what :func:`sender_argv` sends (RTCP on port + 1)."""
    audio_pt, rtpmap = _audio_rtp(audio_codec)
    return (
        "v=0\r\n"
        f"o=- 0 0 IN IP4 {LOCALHOST}\r\n"
        "s=reference receiver\r\n"
        f"c=IN IP4 {LOCALHOST}\r\n"
        "t=0 0\r\n"
        f"m=video {video_port} RTP/AVP 96\r\n"
        "a=rtpmap:96 H264/90000\r\n"
        f"a=fmtp:96 packetization-mode=1; sprop-parameter-sets={sprop}\r\n"
        f"m=audio {audio_port} RTP/AVP {audio_pt}\r\n"
        f"a=rtpmap:{audio_pt} {rtpmap}\r\n"
    )


def receiver_argv(ffmpeg: str, sdp: Path, out: Path, *, duration: float) -> list[str]:
    """ffmpeg receiving RTP as a user scripts it, copying both tracks into ``out`` (NUT).

    NUT keeps the RTP time bases (1/90000, 1/8000) exactly, unlike Matroska's
    milliseconds. ffmpeg stops by itself after ``duration`` seconds of output:
    a signal does not do it cleanly, because ffmpeg 5.1 keeps everything in its
    interleaving queue while video timestamps are unset (before the first SR),
    the first SIGTERM is only seen when a packet arrives, and a second one
    aborts the file writes too.
    """
    return [
        ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostdin", "-y",
        "-protocol_whitelist", "file,udp,rtp", "-i", str(sdp),
        "-map", "0", "-c", "copy", "-t", f"{duration:.3f}", "-f", "nut", str(out),
    ]  # fmt: skip


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class VideoSample:
    """One decoded picture: its PTS (s), mean luma (0-255), whether it was a keyframe."""

    pts: float
    luma: float
    keyframe: bool


@dataclass(frozen=True)
class AudioChunk:
    """The decoded samples of one audio frame (first channel, full scale 1.0)."""

    pts: float
    rate: int
    samples: Sequence[float] = field(repr=False)

    @property
    def end(self) -> float:
        return self.pts + len(self.samples) / self.rate


def _mean_luma(frame: av.VideoFrame) -> float:
    plane = frame.planes[0]
    data = bytes(plane)
    stride, width = plane.line_size, plane.width
    rows = range(0, plane.height, 4)
    total = sum(sum(data[row * stride : row * stride + width]) for row in rows)
    return total / (len(rows) * width)


def decode_h264(units: Iterable[tuple[float, bytes]]) -> tuple[list[VideoSample], int]:
    """Decode Annex B access units given with their PTS; return pictures and decode errors."""
    decoder = av.CodecContext.create("h264", "r")
    pts_of: dict[int, float] = {}
    samples: list[VideoSample] = []
    errors = 0

    def take(frames: Iterable[av.VideoFrame]) -> None:
        for frame in frames:
            if frame.pts is not None and frame.pts in pts_of:
                samples.append(VideoSample(pts_of[frame.pts], _mean_luma(frame), frame.key_frame))

    for index, (pts, unit) in enumerate(units):
        pts_of[index] = pts
        packet = av.Packet(unit)
        packet.pts = packet.dts = index
        try:
            take(decoder.decode(packet))
        except av.FFmpegError:
            errors += 1
    try:
        take(decoder.decode(None))
    except av.FFmpegError:
        errors += 1
    return samples, errors


def _ulaw_table() -> list[float]:
    """ITU-T G.711 u-law: the 256 code words as linear samples (full scale 1.0)."""
    table = []
    for code in range(256):
        value = ~code & 0xFF
        sign, exponent, mantissa = value & 0x80, (value >> 4) & 0x07, value & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        table.append((-magnitude if sign else magnitude) / 32768)
    return table


_ULAW = _ulaw_table()


def ulaw_decode(payload: bytes) -> list[float]:
    """G.711 u-law bytes to linear samples (full scale 1.0)."""
    return [_ULAW[byte] for byte in payload]


def _frame_samples(frame: av.AudioFrame) -> list[float]:
    name = frame.format.name
    data = bytes(frame.planes[0])
    values: array[float] | array[int]
    if name in ("flt", "fltp"):
        values, scale = array("f", data), 1.0
    elif name in ("s16", "s16p"):
        values, scale = array("h", data), 1 / 32768
    else:
        raise ValueError(f"unexpected decoded audio format {name!r}")
    channels = 1 if name.endswith("p") else frame.layout.nb_channels
    return [values[i] * scale for i in range(0, frame.samples * channels, channels)]


def decode_audio(
    frames: Iterable[tuple[float, bytes]], codec: AudioCodecName
) -> tuple[list[AudioChunk], int]:
    """Decode audio frames (one RTP payload each) given with their PTS; chunks and errors."""
    if codec == "PCMU":
        return [AudioChunk(pts, 8000, ulaw_decode(data)) for pts, data in frames], 0
    decoder = av.CodecContext.create("opus", "r")
    chunks: list[AudioChunk] = []
    errors = 0
    for pts, data in frames:
        samples: list[float] = []
        try:
            for frame in decoder.decode(av.Packet(data)):
                samples.extend(_frame_samples(frame))
                rate = frame.sample_rate
        except av.FFmpegError:
            errors += 1
            continue
        if samples:
            chunks.append(AudioChunk(pts, rate, samples))
    return chunks, errors


def read_container(path: Path) -> tuple[list[VideoSample], list[AudioChunk]]:
    """Decode a file's first video and audio streams the way receiver output is decoded.

    Video goes through the stream's own decoder (container extradata); audio
    packets go through :func:`decode_audio`, like RTP payloads.
    """
    with av.open(str(path)) as container:
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0]
        codec: AudioCodecName = "PCMU" if audio_stream.codec_context.name == "pcm_mulaw" else "opus"
        video: list[VideoSample] = []
        audio_packets: list[tuple[float, bytes]] = []
        for packet in container.demux(video_stream, audio_stream):
            if packet.pts is None or packet.time_base is None:
                continue
            pts = float(packet.pts * packet.time_base)
            if packet.stream is audio_stream:
                audio_packets.append((pts, bytes(packet)))
                continue
            try:
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame) and frame.pts is not None:
                        when = float(frame.pts * video_stream.time_base)  # type: ignore[operator]
                        video.append(VideoSample(when, _mean_luma(frame), frame.key_frame))
            except av.FFmpegError:
                continue
    chunks, _ = decode_audio(sorted(audio_packets), codec)
    return sorted(video, key=lambda s: s.pts), chunks


# --------------------------------------------------------------------------- events


def flash_onsets(samples: Sequence[VideoSample], frame_interval: float) -> list[float]:
    """PTS of the first white picture of each flash that can be told exactly.

    A white picture is an onset when the picture just before it (within 1.5
    frame intervals) is dark, or when it is a keyframe and nothing white comes
    right before it (the pictures before it were lost: the flash is an IDR,
    while a concealed copy of a white picture would not be one).
    """
    onsets: list[float] = []
    previous: VideoSample | None = None
    for sample in sorted(samples, key=lambda s: s.pts):
        white = sample.luma > WHITE_LUMA
        contiguous = previous is not None and sample.pts - previous.pts <= 1.5 * frame_interval
        previous_white = previous is not None and previous.luma > WHITE_LUMA
        if white and (
            (contiguous and not previous_white)
            or (sample.keyframe and not (contiguous and previous_white))
        ):
            onsets.append(sample.pts)
        previous = sample
    return onsets


def beep_onsets(chunks: Sequence[AudioChunk]) -> list[float]:
    """PTS of each beep's first loud sample after ``QUIET_BEFORE_ONSET`` of contiguous silence."""
    onsets: list[float] = []
    quiet = 0.0
    end: float | None = None
    for chunk in sorted(chunks, key=lambda c: c.pts):
        if end is None or abs(chunk.pts - end) > 0.5 / 1000:
            quiet = 0.0  # a gap: what came before is unknown
        step = 1 / chunk.rate
        for index, value in enumerate(chunk.samples):
            if abs(value) > LOUD:
                if quiet >= QUIET_BEFORE_ONSET - step / 2:
                    onsets.append(chunk.pts + index * step)
                quiet = 0.0
            else:
                quiet += step
        end = chunk.end
    return onsets


@dataclass
class AlignmentReport:
    """Flash-to-beep offsets of a receiver's output against the sender's truth (ms)."""

    truth_ms: float
    errors_ms: list[float]
    flashes: int
    beeps: int

    @property
    def events(self) -> int:
        return len(self.errors_ms)

    @property
    def median_abs_ms(self) -> float:
        return statistics.median(abs(e) for e in self.errors_ms)

    @property
    def max_abs_ms(self) -> float:
        return max(abs(e) for e in self.errors_ms)

    def summary(self) -> dict[str, float | int | list[float]]:
        """Plain figures for figures.json."""
        return {
            "events": self.events,
            "flashes": self.flashes,
            "beeps": self.beeps,
            "truth_offset_ms": round(self.truth_ms, 3),
            "median_abs_error_ms": round(self.median_abs_ms, 3) if self.errors_ms else -1,
            "max_abs_error_ms": round(self.max_abs_ms, 3) if self.errors_ms else -1,
            "errors_ms": [round(e, 3) for e in self.errors_ms],
        }


def pair_offsets(flashes: Sequence[float], beeps: Sequence[float], window: float) -> list[float]:
    """Beep minus flash for each flash with a beep within ``window`` seconds after or before."""
    offsets: list[float] = []
    for flash in flashes:
        near = [beep - flash for beep in beeps if abs(beep - flash) < window]
        if near:
            offsets.append(min(near, key=abs))
    return offsets


def measure_alignment(
    flashes: Sequence[float], beeps: Sequence[float], *, truth: float, period: float
) -> AlignmentReport:
    """Compare output flash-to-beep offsets with ``truth`` (s); events paired within period/2."""
    offsets = pair_offsets(flashes, beeps, period / 2)
    return AlignmentReport(
        truth_ms=truth * 1000,
        errors_ms=[(offset - truth) * 1000 for offset in offsets],
        flashes=len(flashes),
        beeps=len(beeps),
    )


def container_packets(path: Path) -> tuple[list[bytes], list[bytes]]:
    """The payloads of a file's first video and audio streams' packets, in file order."""
    video: list[bytes] = []
    audio: list[bytes] = []
    with av.open(str(path)) as container:
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0]
        for packet in container.demux(video_stream, audio_stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            (video if packet.stream is video_stream else audio).append(bytes(packet))
    return video, audio


def source_truth(clip: Path, spec: ClipSpec) -> float:
    """The clip's own flash-to-beep offset (s), measured as receiver output is."""
    video, audio = read_container(clip)
    offsets = pair_offsets(flash_onsets(video, 1 / spec.fps), beep_onsets(audio), spec.period / 2)
    if not offsets:
        raise ValueError(f"no flash/beep pair found in {clip}")
    return statistics.median(offsets)
