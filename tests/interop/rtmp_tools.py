"""Helpers for measuring A/V sync on an RTMP output (see ``test_rtmp_sync.py``).

A call's media path as the gateway builds it (ports from :class:`RtpPortAllocator`,
:class:`CallMedia` on :class:`RtpSession`) whose ``FrameReady`` frames are published
into a registry :class:`~sipbridge.registry.Stream`; ffmpeg command lines for the
reference relay (RTP in, RTMP out) and for pulling an RTMP stream into an FLV file;
and decoding of such a file (H.264 + AAC) into the samples the flash-and-beep
measurement of :mod:`tests.interop.media_tools` works on.

AAC in FLV: packet timestamps are whole milliseconds while an AAC frame lasts
1024 / 48000 s (21.333 ms), so packet timestamps are off the sample clock by up
to half a millisecond. :func:`read_flv` counts samples within each contiguous run
of packets and anchors the run on the mean of its packet timestamps, so a beep
onset keeps sample precision. The decoder's first output of a stream (FFmpeg's
``aac`` decoder has no output delay) holds the encoder's priming: FLV carries no
``initial_padding``, so the first packet's timestamp must be the priming's start,
which is what both FFmpeg's FLV muxer (by shifting) and the pusher (``lead``) do.
"""

from __future__ import annotations

import asyncio
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import av

from rtp.frame import MediaFrame
from rtp.media import CallMedia, FrameReady
from rtp.session import RtpSession
from rtp.track import TrackConfig
from sipbridge.ports import PortPair, RtpPortAllocator
from sipbridge.registry import Stream
from tests.interop.media_tools import AudioChunk, VideoSample
from tests.interop.peers import LOCALHOST, free_port

__all__ = [
    "PublishingIngest",
    "open_publishing_ingest",
    "pull_argv",
    "read_flv",
    "relay_argv",
    "stitch_chunks",
    "transcode_argv",
]

Address = tuple[str, int]
#: Where our keepalives go before latching: the discard port, nobody listens.
NOWHERE: Address = (LOCALHOST, 9)
#: Two packets are contiguous when the second starts this close to the first's end (s):
#: FLV millisecond rounding moves each by at most 0.5 ms.
CONTIGUOUS = 0.0015


@dataclass
class PublishingIngest:
    """CallMedia on RtpSession, PCMU + H264, whose published frames go into ``stream``."""

    media: CallMedia
    session: RtpSession
    allocator: RtpPortAllocator
    pairs: dict[str, PortPair]
    stream: Stream
    frames: dict[str, list[MediaFrame]] = field(default_factory=lambda: {"audio": [], "video": []})

    def ports(self, kind: str) -> tuple[int, int]:
        pair = self.pairs[kind]
        return pair.rtp_port, pair.rtcp_port

    def drain(self) -> None:
        for event in self.media.take_events():
            if isinstance(event, FrameReady):
                self.frames[event.frame.kind].append(event.frame)
                self.stream.publish(event.frame)

    async def close(self) -> None:
        """Stop the media (what the jitter buffers hold is published), release the ports."""
        self.media.stop(asyncio.get_running_loop().time())
        self.drain()
        await self.session.stop()
        for pair in self.pairs.values():
            self.allocator.release(pair)


async def open_publishing_ingest(sprop: str, stream: Stream) -> PublishingIngest:
    """As ``test_media_ingest.open_ingest`` (PCMU), publishing into ``stream``."""
    base = free_port(span=8)
    allocator = RtpPortAllocator(LOCALHOST, base, base + 8)
    pairs = {"audio": allocator.allocate(), "video": allocator.allocate()}
    fmtp = {"packetization-mode": "1", "sprop-parameter-sets": sprop}
    loop = asyncio.get_running_loop()
    media = CallMedia(
        [
            TrackConfig("audio", NOWHERE, NOWHERE, False, {0: ("PCMU", 8000, 1, {})}),
            TrackConfig("video", NOWHERE, NOWHERE, False, {96: ("H264", 90000, 1, fmtp)}),
        ],
        now=loop.time(),
        inactivity_timeout=0,
    )
    stream.track("video")
    stream.track("audio")
    stream.set_keyframe_requester(lambda: media.request_keyframe(loop.time()))
    sockets = {}
    for kind, pair in pairs.items():
        sockets[f"{kind}-rtp"] = pair.rtp_socket
        sockets[f"{kind}-rtcp"] = pair.rtcp_socket
    # The lambda looks ``ingest`` up when frames come, after it is assigned.
    session = RtpSession(media, sockets, on_activity=lambda: ingest.drain())
    ingest = PublishingIngest(media, session, allocator, pairs, stream)
    await session.start()
    return ingest


# --------------------------------------------------------------------------- ffmpeg


def relay_argv(ffmpeg: str, sdp: Path, url: str, *, duration: float, limit: float) -> list[str]:
    """ffmpeg receiving RTP (with its SRs) and pushing RTMP itself, as a user scripts it.

    It stops by itself after ``duration`` s of output; ``timeout -s KILL`` bounds it
    to ``limit`` s whatever happens.
    """
    return [
        "timeout", "-s", "KILL", f"{limit:.0f}",
        ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostdin",
        "-protocol_whitelist", "file,udp,rtp", "-i", str(sdp),
        "-c:v", "copy", "-c:a", "aac", "-ar", "48000", "-ac", "1",
        "-t", f"{duration:.3f}", "-f", "flv", url,
    ]  # fmt: skip


def pull_argv(ffmpeg: str, url: str, out: Path, *, limit: float) -> list[str]:
    """ffmpeg playing ``url`` into an FLV file (stream copy), killed after ``limit`` s."""
    return [
        "timeout", "-s", "KILL", f"{limit:.0f}",
        ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostdin", "-y",
        "-rw_timeout", "5000000", "-i", url, "-c", "copy", "-f", "flv", str(out),
    ]  # fmt: skip


def transcode_argv(ffmpeg: str, clip: Path, out: Path) -> list[str]:
    """ffmpeg making an FLV (video copied, audio AAC 48 kHz mono) of a clip file: no network,
    no RTP; calibrates the measurement's handling of AAC (priming, codec delay)."""
    return [
        "timeout", "-s", "KILL", "60",
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(clip),
        "-c:v", "copy", "-c:a", "aac", "-ar", "48000", "-ac", "1", "-f", "flv", str(out),
    ]  # fmt: skip


# --------------------------------------------------------------------------- decoding


def _first_channel(frame: av.AudioFrame) -> list[float]:
    name = frame.format.name
    data = bytes(frame.planes[0])
    if name in ("flt", "fltp"):
        values: array[float] | array[int] = array("f", data)
        scale = 1.0
    elif name in ("s16", "s16p"):
        values, scale = array("h", data), 1 / 32768
    else:
        raise ValueError(f"unexpected decoded audio format {name!r}")
    channels = 1 if name.endswith("p") else frame.layout.nb_channels
    return [values[i] * scale for i in range(0, frame.samples * channels, channels)]


def _mean_luma(frame: av.VideoFrame) -> float:
    plane = frame.planes[0]
    data = bytes(plane)
    stride, width = plane.line_size, plane.width
    rows = range(0, plane.height, 4)
    total = sum(sum(data[row * stride : row * stride + width]) for row in rows)
    return total / (len(rows) * width)


def stitch_chunks(chunks: list[AudioChunk]) -> list[AudioChunk]:
    """Re-time contiguous chunks by counting samples, anchored on their mean timestamp.

    Chunks whose start is within :data:`CONTIGUOUS` of the previous one's end form a
    run; within it, chunk ``i`` starts at ``t0 + samples_before_i / rate``, ``t0``
    chosen so the mean difference to the given timestamps is zero.
    """
    runs: list[list[AudioChunk]] = []
    for chunk in sorted(chunks, key=lambda c: c.pts):
        if runs and abs(chunk.pts - runs[-1][-1].end) <= CONTIGUOUS:
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    out: list[AudioChunk] = []
    for run in runs:
        counted: list[float] = []
        samples = 0
        for chunk in run:
            counted.append(samples / chunk.rate)
            samples += len(chunk.samples)
        t0 = sum(c.pts - k for c, k in zip(run, counted, strict=True)) / len(run)
        out += [AudioChunk(t0 + k, c.rate, c.samples) for c, k in zip(run, counted, strict=True)]
    return out


def read_flv(path: Path) -> tuple[list[VideoSample], list[AudioChunk]]:
    """Decode an FLV's (or any file's) first video and audio streams, with their own
    decoders, into pictures and audio chunks timed by the packets' timestamps.

    Audio chunk ``pts`` is its packet's timestamp: the decoded samples of a packet are
    presented from it, the AAC priming included (see the module docstring).
    """
    video: list[VideoSample] = []
    chunks: list[AudioChunk] = []
    with av.open(str(path)) as container:
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0]
        for packet in container.demux(video_stream, audio_stream):
            if packet.pts is None or packet.time_base is None:
                continue
            when = float(packet.pts * packet.time_base)
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue
            if packet.stream is audio_stream:
                samples: list[float] = []
                rate = 0
                for frame in frames:
                    if isinstance(frame, av.AudioFrame):
                        samples += _first_channel(frame)
                        rate = frame.sample_rate
                if samples:
                    chunks.append(AudioChunk(when, rate, samples))
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame) and frame.pts is not None:
                    at = float(frame.pts * video_stream.time_base)  # type: ignore[operator]
                    video.append(VideoSample(at, _mean_luma(frame), frame.key_frame))
    return sorted(video, key=lambda s: s.pts), stitch_chunks(chunks)
