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

IPv6 literals (``rtmp://[::1]:1935/app/key``): the tee muxer reads options
only from a ``[...]`` block at the very start of a slave, up to its first
``]``; our block always comes first and holds no ``]``, so brackets in the
URL after it reach the RTMP protocol as they are.

TLS (``rtmps://``): FFmpeg's TLS layer does not verify the server's
certificate unless told to (its ``tls_verify`` option defaults to 0, FFmpeg
8.1 included). ``tls_verify`` + ``ca_file`` slave options reach the TLS layer
under the RTMP protocol and make the open fail (``EIO``) on a certificate that
does not chain to the CA file or does not match the host.

Delivery: :meth:`FlvOutput.delivered_before` tells which packets have surely
left FFmpeg for the protocol. ``mux()`` goes through two per-dts interleaving
queues (the tee's, then the FLV slave's); each releases its oldest packet while
every track has a packet queued, or when the newest packet it holds is more than
``max_interleave_delta`` (:data:`MAX_INTERLEAVE_MS`) newer. A queue has
therefore released every packet older than the newest packet of its most
behind track, and every packet older than its newest minus that delta (a track
that sends nothing holds the others back by at most the delta, per queue).
With ``flush_packets=1`` a released packet is written to the connection at once.

Mid-stream SPS/PPS changes: a packet carrying ``new_extradata`` side data
makes FFmpeg's FLV muxer (``flvenc.c``) write a new AVC sequence header
before it, on the same connection.

Timestamps here are FLV milliseconds (FLV spec v10.1, E.4.1 ``Timestamp``);
the caller makes them monotonic. Blocking: call from a worker thread only.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from av.container import OutputContainer
from av.packet import PacketSideData, packet_sidedata_type_from_literal
from av.stream import Stream as AvStream

from rtmp.flv import AvcConfig

__all__ = ["AudioSpec", "FlvOutput", "TlsOptions", "tee_url"]

log = logging.getLogger(__name__)

_MS = Fraction(1, 1000)
AudioCodecName = Literal["aac", "pcm_mulaw", "pcm_alaw"]
#: Characters a value inside the tee's ``[...]`` option block cannot carry unescaped.
_OPTION_UNSAFE = frozenset(":[]|\\'=")
#: FFmpeg's ``max_interleave_delta`` for both queues (ms): how long one track may wait
#: for the other (FFmpeg's default is 10 s).
MAX_INTERLEAVE_MS = 1000
#: Per track, how many recent timestamps :meth:`FlvOutput.delivered_before` looks back.
_DELIVERY_WINDOW = 256


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Certificate checking for ``rtmps://``: with ``verify``, the server certificate
    must chain to ``ca_file`` (a PEM bundle) and match the URL's host."""

    verify: bool = False
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None and (not self.ca_file or _OPTION_UNSAFE & set(self.ca_file)):
            raise ValueError(
                f"TLS CA file path must be non-empty without any of : [ ] | \\ ' =: "
                f"{self.ca_file!r}"
            )


@dataclass(frozen=True, slots=True)
class AudioSpec:
    """The FLV audio track: AAC (``extradata`` = AudioSpecificConfig) or G.711 at 8 kHz."""

    codec: AudioCodecName
    sample_rate: int
    extradata: bytes | None = None


def tee_url(
    url: str,
    *,
    rw_timeout: float,
    network: bool,
    tls: TlsOptions | None = None,
    send_buffer: int = 0,
) -> str:
    """The ``tee`` muxer target for ``url``: one FLV slave with our options.

    ``rw_timeout`` is in seconds; ``send_buffer`` (bytes, network only, 0: the OS
    default) is the TCP socket's ``SO_SNDBUF``; ``tls`` applies to ``rtmps://`` URLs only (other
    protocols would reject the options). Brackets in ``url`` (IPv6 literals) are
    fine: the option block, which comes first, ends at its own ``]``.
    """
    options = [
        "f=flv",
        "flvflags=no_duration_filesize",
        f"rw_timeout={max(1, round(rw_timeout * 1_000_000))}",
        f"max_interleave_delta={MAX_INTERLEAVE_MS * 1000}",
        # A released packet goes to the connection now, not when AVIO's buffer fills.
        "flush_packets=1",
    ]
    if network:
        options.append("tcp_nodelay=1")
        if send_buffer > 0:
            # FFmpeg's RTMP protocol passes it down to its TCP socket (rtmps: under TLS).
            options.append(f"send_buffer_size={send_buffer}")
    if tls is not None and tls.verify and url[:8].lower() == "rtmps://":
        options.append("tls_verify=1")
        if tls.ca_file:
            options.append(f"ca_file={tls.ca_file}")
    # The slave list is split on '|' by av_get_token(): escape its special characters.
    escaped = "".join("\\" + ch if ch in "\\|'" else ch for ch in url)
    return "[" + ":".join(options) + "]" + escaped


def _released_before(newest: list[int | None]) -> float:
    """What one interleaving queue has surely released, given the newest timestamp it
    received per track (``None``: nothing yet): every packet older than the most behind
    track's newest, and every packet more than :data:`MAX_INTERLEAVE_MS` older than the
    newest of all."""
    known = [t for t in newest if t is not None]
    if not known:
        return float("-inf")
    by_delta = float(max(known) - MAX_INTERLEAVE_MS)
    if len(known) < len(newest):
        return by_delta
    return max(float(min(known)), by_delta)


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
        tls: TlsOptions | None = None,
        send_buffer: int = 0,
    ) -> None:
        if video is None and audio is None:
            raise ValueError("an FLV output needs a video or an audio track")
        self.url = url
        self.video_config = video
        self.audio = audio
        self.rw_timeout = rw_timeout
        self.tls = tls
        self.send_buffer = send_buffer
        self.bytes_written = 0
        self._container: OutputContainer | None = None
        self._video: AvStream | None = None
        self._audio: AvStream | None = None
        self._header_written = False
        # Timestamps muxed per track (newest last), for delivered_before().
        self._muxed: dict[int, deque[int]] = {}

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
            tee_url(
                self.url,
                rw_timeout=self.rw_timeout,
                network=network,
                tls=self.tls,
                send_buffer=self.send_buffer,
            ),
            "w",
            format="tee",
            options={"max_interleave_delta": str(MAX_INTERLEAVE_MS * 1000)},
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
        self._muxed = {index: deque(maxlen=_DELIVERY_WINDOW) for index in self._track_indexes()}

    def delivered_before(self) -> float:
        """Every packet muxed with a timestamp (ms) below this has left both interleaving
        queues, i.e. was written to the connection (module doc). ``inf`` with one track
        (nothing waits), ``-inf`` while a track has nothing yet."""
        tracks = list(self._muxed.values())
        if len(tracks) <= 1:
            return float("inf") if self._header_written else float("-inf")
        # The tee's queue, fed by mux(), then the FLV queue, fed by what the tee released.
        tee_released = _released_before([times[-1] if times else None for times in tracks])
        newest = []
        for times in tracks:
            below = [t for t in times if t < tee_released]
            newest.append(below[-1] if below else None)
        return _released_before(newest)

    def _track_indexes(self) -> list[int]:
        return [s.index for s in (self._video, self._audio) if s is not None]

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
        ts = packet.dts
        index = packet.stream_index
        container.mux(packet)
        self.bytes_written += size
        if ts is not None and index in self._muxed:
            self._muxed[index].append(ts)
