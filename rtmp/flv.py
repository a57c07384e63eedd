"""H.264 in FLV: Annex-B access units to AVCC samples, and the avcC sequence header.

FLV (Adobe FLV spec v10.1, Annex E.4.3.1, ``AVCVIDEOPACKET``) carries H.264 the
way MP4 does (ISO/IEC 14496-15): every NAL unit prefixed by its length (here 4
bytes), and the parameter sets out of band, in an ``AVCDecoderConfigurationRecord``
(ISO/IEC 14496-15 §5.3.3.1, "avcC") sent as the sequence header
(``AVCPacketType`` 0). Media ingest hands us Annex-B access units with start
codes and SPS/PPS in band (see :class:`rtp.frame.MediaFrame`), so this module
converts: the SPS/PPS move into the record, access unit delimiters are
dropped (FLV frames every access unit itself), the rest become AVCC.

FLV tag bodies (FLV spec v10.1, Annex E.4.2 ``AUDIODATA``, E.4.3 ``VIDEODATA``)
are built here too, for both outputs: the RTMP publisher sends them as audio and
video messages (RTMP spec §7.1.4-5), :class:`FlvFileWriter` wraps them in FLV tags.

Pure functions, no I/O but :class:`FlvFileWriter`'s file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

from rtmp.amf0 import AmfValue, EcmaArray, encode_all
from rtp.frame import MediaFrame
from rtp.h264_bits import (
    NAL_AUD,
    NAL_FILLER,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    SpsInfo,
    nal_type,
    parse_sps,
    pps_id,
    split_annexb,
    sps_id,
)

__all__ = [
    "AudioSpec",
    "AvcConfig",
    "AvccAccessUnit",
    "FlvFileWriter",
    "aac_body",
    "annexb_to_avcc",
    "avc_config",
    "avc_decoder_configuration_record",
    "avcc_to_annexb",
    "convert_video",
    "g711_body",
    "has_avc_config",
    "metadata",
    "video_body",
    "video_sequence_header",
]

# Profiles whose avcC carries the chroma format and bit depths (ISO/IEC 14496-15 §5.3.3.1.2).
_AVCC_EXTENDED_PROFILES = frozenset({100, 110, 122, 144})
# NAL units that never go into an AVCC sample: they are in the record, or framing only.
_OUT_OF_BAND = frozenset({NAL_SPS, NAL_PPS, NAL_AUD, NAL_FILLER})
_LENGTH_SIZE = 4


def avc_decoder_configuration_record(sps: list[bytes], pps: list[bytes]) -> bytes:
    """The ``AVCDecoderConfigurationRecord`` for these parameter sets (ISO/IEC 14496-15
    §5.3.3.1.2), with 4-byte NAL unit lengths.

    Profile, compatibility and level are copied from the first SPS; for the High
    profiles (100, 110, 122, 144) the chroma format and bit depth fields follow,
    with no SPS extensions, as FFmpeg writes them.
    """
    if not sps:
        raise ValueError("an avcC record needs at least one SPS")
    if not pps:
        raise ValueError("an avcC record needs at least one PPS")
    if len(sps) > 31:
        raise ValueError(f"an avcC record holds at most 31 SPS, got {len(sps)}")
    if len(pps) > 255:
        raise ValueError(f"an avcC record holds at most 255 PPS, got {len(pps)}")
    first = sps[0]
    if len(first) < 4 or nal_type(first) != NAL_SPS:
        raise ValueError("the first parameter set is not an SPS")
    out = bytearray([1, first[1], first[2], first[3], 0xFC | (_LENGTH_SIZE - 1), 0xE0 | len(sps)])
    for nal in sps:
        out += _length16(nal, "SPS")
    out.append(len(pps))
    for nal in pps:
        out += _length16(nal, "PPS")
    if first[1] in _AVCC_EXTENDED_PROFILES:
        info = parse_sps(first)
        out += bytes(
            [
                0xFC | info.chroma_format_idc,
                0xF8 | (info.bit_depth_luma - 8),
                0xF8 | (info.bit_depth_chroma - 8),
                0,  # numOfSequenceParameterSetExt
            ]
        )
    return bytes(out)


def _length16(nal: bytes, what: str) -> bytes:
    if len(nal) > 0xFFFF:
        raise ValueError(f"{what} of {len(nal)} bytes does not fit an avcC record")
    return len(nal).to_bytes(2, "big") + nal


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """The parameter sets in force: what the FLV sequence header carries."""

    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def record(self) -> bytes:
        """The avcC record (the FLV sequence header's body, the stream's extradata)."""
        return avc_decoder_configuration_record(list(self.sps), list(self.pps))

    @property
    def sps_info(self) -> SpsInfo:
        """The first SPS, parsed: picture size, profile."""
        return parse_sps(self.sps[0])

    def updated(self, sps: list[bytes], pps: list[bytes]) -> AvcConfig:
        """This configuration with the parameter sets seen in an access unit.

        A new SPS (PPS) replaces the one with the same id.
        """
        return AvcConfig(
            sps=_merge(self.sps, sps, _sps_key),
            pps=_merge(self.pps, pps, _pps_key),
        )

    @classmethod
    def from_nals(cls, nals: list[bytes]) -> AvcConfig | None:
        """The configuration from NAL units (an access unit or a ``MediaFrame.config``),
        or ``None`` when they lack an SPS or a PPS."""
        sps = [nal for nal in nals if nal and nal_type(nal) == NAL_SPS]
        pps = [nal for nal in nals if nal and nal_type(nal) == NAL_PPS]
        if not sps or not pps:
            return None
        return cls(sps=_merge((), sps, _sps_key), pps=_merge((), pps, _pps_key))


def _sps_key(nal: bytes) -> int:
    try:
        return sps_id(nal)
    except ValueError:
        return 0


def _pps_key(nal: bytes) -> int:
    try:
        return pps_id(nal)
    except ValueError:
        return 0


def _merge(
    old: tuple[bytes, ...], new: list[bytes], key: Callable[[bytes], int]
) -> tuple[bytes, ...]:
    # Parameter sets are addressed by id (H.264 §7.4.2.1.1, §7.4.2.2): a new one replaces
    # the one with its id; ids are kept in ascending order so equal sets compare equal.
    merged: dict[int, bytes] = {key(nal): nal for nal in old}
    for nal in new:
        merged[key(nal)] = nal
    return tuple(merged[k] for k in sorted(merged))


@dataclass(frozen=True, slots=True)
class AvccAccessUnit:
    """One access unit converted for FLV.

    ``data`` is the AVCC sample (4-byte big-endian lengths), without SPS, PPS,
    AUD and filler data; ``sps`` and ``pps`` are the parameter sets that were
    in band; ``idr`` tells whether an IDR slice is present.
    """

    data: bytes
    sps: list[bytes]
    pps: list[bytes]
    idr: bool


def annexb_to_avcc(access_unit: bytes) -> AvccAccessUnit:
    """Convert one Annex-B access unit (H.264 Annex B) to an AVCC sample
    (ISO/IEC 14496-15 §5.3.4.2, ``lengthSizeMinusOne`` = 3)."""
    sps: list[bytes] = []
    pps: list[bytes] = []
    idr = False
    out = bytearray()
    for nal in split_annexb(access_unit):
        kind = nal_type(nal)
        if kind == NAL_SPS:
            sps.append(nal)
        elif kind == NAL_PPS:
            pps.append(nal)
        if kind in _OUT_OF_BAND:
            continue
        if kind == NAL_IDR:
            idr = True
        out += len(nal).to_bytes(_LENGTH_SIZE, "big")
        out += nal
    return AvccAccessUnit(data=bytes(out), sps=sps, pps=pps, idr=idr)


def avcc_to_annexb(sample: bytes, length_size: int = _LENGTH_SIZE) -> bytes:
    """The inverse, for tests and tools: length-prefixed NAL units to Annex-B."""
    out = bytearray()
    pos = 0
    while pos < len(sample):
        if pos + length_size > len(sample):
            raise ValueError(f"AVCC sample truncated in a length field at byte {pos}")
        size = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(sample):
            raise ValueError(f"AVCC NAL unit length {size} at byte {pos} overruns the sample")
        out += b"\x00\x00\x00\x01" + sample[pos : pos + size]
        pos += size
    return bytes(out)


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


# -- FLV tag bodies ----------------------------------------------------------------------------
#: FLV CodecID 7 (AVC) with FrameType 1 (key frame) / 2 (inter frame) (E.4.3.1).
_AVC_KEY: Final = 0x17
_AVC_INTER: Final = 0x27
#: SoundFormat 10 (AAC), SoundRate 3, SoundSize 1, SoundType 1: always 0xAF for AAC
#: (E.4.2.1; the real rate and channels are in the AudioSpecificConfig), as FFmpeg writes.
_AAC: Final = 0xAF
#: G.711 (SoundFormat 7 A-law, 8 µ-law), rate field 0, 16-bit, mono: FFmpeg's flvenc flags.
_G711: Final = {"pcm_alaw": 0x72, "pcm_mulaw": 0x82}
#: FLV codec ids for onMetaData (E.4.2.1, E.4.3.1).
_AUDIO_CODEC_ID: Final = {"aac": 10.0, "pcm_alaw": 7.0, "pcm_mulaw": 8.0}
AudioCodecName = Literal["aac", "pcm_mulaw", "pcm_alaw"]


@dataclass(frozen=True, slots=True)
class AudioSpec:
    """The FLV audio track: AAC (``extradata`` = AudioSpecificConfig) or G.711 at 8 kHz."""

    codec: AudioCodecName
    sample_rate: int
    extradata: bytes | None = None


def video_sequence_header(config: AvcConfig) -> bytes:
    """``AVCPacketType`` 0: the avcC record (E.4.3.1, ISO/IEC 14496-15 §5.3.3.1)."""
    return bytes([_AVC_KEY, 0, 0, 0, 0]) + config.record


def video_body(sample: bytes, *, keyframe: bool, composition_time: int = 0) -> bytes:
    """``AVCPacketType`` 1: one AVCC access unit; ``composition_time`` (ms, pts - dts) is
    0 for the streams we pass through (no B-frames reordering at the source)."""
    head = _AVC_KEY if keyframe else _AVC_INTER
    return bytes([head, 1]) + (composition_time & 0xFFFFFF).to_bytes(3, "big") + sample


def aac_body(data: bytes, *, sequence_header: bool = False) -> bytes:
    """``AACPacketType`` 0 (AudioSpecificConfig) or 1 (one raw AAC frame) (E.4.2.2)."""
    return bytes([_AAC, 0 if sequence_header else 1]) + data


def g711_body(data: bytes, codec: AudioCodecName) -> bytes:
    """G.711 bytes as FLV audio (SoundFormat 7/8, 8 kHz mono)."""
    try:
        return bytes([_G711[codec]]) + data
    except KeyError:
        raise ValueError(f"not a G.711 FLV codec: {codec!r}") from None


def metadata(
    video: AvcConfig | None, audio: AudioSpec | None, *, audio_bitrate: int | None = None
) -> dict[str, AmfValue]:
    """The ``onMetaData`` values FFmpeg's FLV muxer writes for a live output (no
    duration/filesize): picture size and codec ids, audio rate, size, channels."""
    values: dict[str, AmfValue] = {}
    if video is not None:
        info = video.sps_info
        values.update(width=float(info.width), height=float(info.height), videocodecid=7.0)
    if audio is not None:
        if audio_bitrate:
            values["audiodatarate"] = audio_bitrate / 1024
        values.update(
            audiosamplerate=float(audio.sample_rate),
            audiosamplesize=16.0,
            stereo=False,
            audiocodecid=_AUDIO_CODEC_ID[audio.codec],
        )
    values["encoder"] = "sipbridge"
    return values


class FlvFileWriter:
    """An FLV file (FLV spec v10.1, Annex E.2-E.4): header, then tags with the same
    bodies the RTMP publisher sends. Blocking file I/O: small buffered writes."""

    def __init__(self, file: BinaryIO, *, has_video: bool, has_audio: bool) -> None:
        self._file = file
        flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
        # Signature, version 1, flags, header size 9, PreviousTagSize0 = 0 (E.2, E.3).
        file.write(b"FLV\x01" + bytes([flags]) + (9).to_bytes(4, "big") + bytes(4))
        self.bytes_written = 13

    def write_tag(self, tag_type: int, timestamp: int, body: bytes) -> None:
        """One tag: 8 audio, 9 video, 18 script data; ``timestamp`` in ms (E.4.1)."""
        if len(body) > 0xFFFFFF:
            raise ValueError(f"FLV tag body of {len(body)} bytes exceeds 24 bits")
        ts = timestamp & 0xFFFFFFFF
        header = (
            bytes([tag_type])
            + len(body).to_bytes(3, "big")
            + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes([ts >> 24])
            + bytes(3)  # StreamID: always 0
        )
        self._file.write(header + body + (11 + len(body)).to_bytes(4, "big"))
        self.bytes_written += 15 + len(body)

    def write_metadata(self, values: dict[str, AmfValue]) -> None:
        self.write_tag(18, 0, encode_all("onMetaData", EcmaArray(values)))

    def flush(self) -> None:
        self._file.flush()
