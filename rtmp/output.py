"""One FLV output connection through PyAV: streams, header, packets, trailer.

Why the ``tee`` muxer: PyAV opens an output's URL with ``avio_open`` and no
options, so protocol options such as ``rw_timeout`` (and ``tcp_nodelay``)
would never reach the RTMP/TCP layers, and a server that stops reading
would block :meth:`av.container.OutputContainer.mux` forever. FFmpeg's
``tee`` muxer opens each slave itself with the slave's options, protocol
options included; with a single ``[f=flv:...]`` slave it is a plain FLV
output whose writes fail with ``ETIMEDOUT`` after ``rw_timeout``.

Why templates: FLV needs codec parameters (the avcC record, the AAC
AudioSpecificConfig) on its streams before the header, but a stream PyAV
creates with ``add_stream`` gets an encoder that is opened (libx264 for
H.264) at the header. A stream made with ``add_stream_from_template`` from a
never-opened scratch stream is not opened, and its codec context's
``extradata``, picture size, sample rate and layout are what the muxer gets.

Mid-stream SPS/PPS changes: a packet carrying ``new_extradata`` side data
makes FFmpeg's FLV muxer (``flvenc.c``) write a new AVC sequence header
before it, on the same connection.

Timestamps here are FLV milliseconds (FLV spec v10.1, E.4.1 ``Timestamp``);
the caller makes them monotonic. Blocking: call from a worker thread only.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from av.container import OutputContainer
from av.packet import PacketSideData, packet_sidedata_type_from_literal
from av.stream import Stream as AvStream

from rtmp.flv import AvcConfig

__all__ = ["AudioSpec", "FlvOutput", "tee_url"]

log = logging.getLogger(__name__)

_MS = Fraction(1, 1000)
AudioCodecName = Literal["aac", "pcm_mulaw", "pcm_alaw"]


@dataclass(frozen=True, slots=True)
class AudioSpec:
    """The FLV audio track: AAC (``extradata`` = AudioSpecificConfig) or G.711 at 8 kHz."""

    codec: AudioCodecName
    sample_rate: int
    extradata: bytes | None = None


def tee_url(url: str, *, rw_timeout: float, network: bool) -> str:
    """The ``tee`` muxer target for ``url``: one FLV slave with our options.

    ``rw_timeout`` is in seconds. Raises :class:`ValueError` for a URL the tee
    syntax cannot carry (square brackets end the option list).
    """
    if "[" in url or "]" in url:
        raise ValueError(f"RTMP URL must not contain square brackets: {url!r}")
    options = [
        "f=flv",
        "flvflags=no_duration_filesize",
        f"rw_timeout={max(1, round(rw_timeout * 1_000_000))}",
        # Hold a track back at most 1 s waiting for the other (FFmpeg waits 10 s).
        "max_interleave_delta=1000000",
    ]
    if network:
        options.append("tcp_nodelay=1")
    # The slave list is split on '|' by av_get_token(): escape its special characters.
    escaped = "".join("\\" + ch if ch in "\\|'" else ch for ch in url)
    return "[" + ":".join(options) + "]" + escaped


class FlvOutput:
    """One connection: ``open`` writes the FLV header (connects), ``write_*`` mux, ``close``
    writes the trailer. Any PyAV error (:class:`av.FFmpegError`, an :class:`OSError`)
    means the connection is lost: call :meth:`abort`."""

    def __init__(
        self,
        url: str,
        *,
        video: AvcConfig | None,
        audio: AudioSpec | None,
        rw_timeout: float,
    ) -> None:
        if video is None and audio is None:
            raise ValueError("an FLV output needs a video or an audio track")
        self.url = url
        self.video_config = video
        self.audio = audio
        self.rw_timeout = rw_timeout
        self.bytes_written = 0
        self._container: OutputContainer | None = None
        self._video: AvStream | None = None
        self._audio: AvStream | None = None
        self._header_written = False

    @property
    def has_video(self) -> bool:
        return self.video_config is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def open(self) -> None:
        """Connect and write the FLV header (the RTMP ``publish`` happens here)."""
        network = self.url.startswith(("rtmp://", "rtmps://", "rtmpt://", "rtmpts://"))
        container = av.open(
            tee_url(self.url, rw_timeout=self.rw_timeout, network=network),
            "w",
            format="tee",
            options={"max_interleave_delta": "1000000"},
        )
        self._container = container
        scratch = av.open(io.BytesIO(), "w", format="flv")
        try:
            if self.video_config is not None:
                video_template = scratch.add_stream("h264")
                video = container.add_stream_from_template(video_template)
                info = self.video_config.sps_info
                video_ctx = video.codec_context
                video_ctx.extradata = self.video_config.record
                video_ctx.width = info.width
                video_ctx.height = info.height
                video.time_base = _MS
                self._video = video
            if self.audio is not None:
                spec = self.audio
                audio_template = scratch.add_stream(
                    spec.codec, rate=spec.sample_rate, layout="mono"
                )
                audio = container.add_stream_from_template(audio_template)
                audio_ctx = audio.codec_context
                audio_ctx.sample_rate = spec.sample_rate
                audio_ctx.layout = "mono"
                if spec.extradata:
                    audio_ctx.extradata = spec.extradata
                audio.time_base = _MS
                self._audio = audio
        finally:
            scratch.close()
        container.start_encoding()
        self._header_written = True

    def write_video(
        self, data: bytes, ts_ms: int, *, keyframe: bool, new_config: AvcConfig | None = None
    ) -> None:
        """Mux one AVCC access unit; ``new_config`` sends a new sequence header first."""
        if self._video is None:
            raise RuntimeError("this FLV output has no video track")
        packet = self._packet(data, ts_ms, self._video)
        packet.is_keyframe = keyframe
        if new_config is not None:
            record = new_config.record
            side = PacketSideData(  # type: ignore[call-arg]
                packet_sidedata_type_from_literal("new_extradata"), len(record)
            )
            side.update(record)
            packet.set_sidedata(side)
            self.video_config = new_config
        self._mux(packet)

    def write_audio(self, data: bytes, ts_ms: int) -> None:
        """Mux one audio packet (an AAC access unit or G.711 bytes)."""
        if self._audio is None:
            raise RuntimeError("this FLV output has no audio track")
        packet = self._packet(data, ts_ms, self._audio)
        packet.is_keyframe = True
        self._mux(packet)

    def close(self) -> None:
        """Flush the interleaving queues and write the trailer; then release everything."""
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def abort(self) -> None:
        """Release the connection after an error; errors while closing are ignored."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.close()
        except (av.FFmpegError, OSError) as exc:
            log.debug("closing a failed FLV output: %s", exc)

    def _packet(self, data: bytes, ts_ms: int, stream: AvStream) -> av.Packet[AvStream]:
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = _MS
        packet.pts = ts_ms
        packet.dts = ts_ms
        return packet

    def _mux(self, packet: av.Packet[AvStream]) -> None:
        container = self._container
        if container is None:
            raise RuntimeError("this FLV output is not open")
        size = packet.size
        container.mux(packet)
        self.bytes_written += size
