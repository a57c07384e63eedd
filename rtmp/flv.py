"""H.264 in FLV: Annex-B access units to AVCC samples, and the avcC sequence header.

FLV (Adobe FLV spec v10.1, Annex E.4.3.1, ``AVCVIDEOPACKET``) carries H.264 the
way MP4 does (ISO/IEC 14496-15): every NAL unit prefixed by its length (here 4
bytes), and the parameter sets out of band, in an ``AVCDecoderConfigurationRecord``
(ISO/IEC 14496-15 §5.3.3.1, "avcC") sent as the sequence header
(``AVCPacketType`` 0). Media ingest hands us Annex-B access units with start
codes and SPS/PPS in band (see :class:`rtp.frame.MediaFrame`), so this module
converts: the SPS/PPS move into the record, access unit delimiters are
dropped (FLV frames every access unit itself), the rest become AVCC.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    "AvcConfig",
    "AvccAccessUnit",
    "annexb_to_avcc",
    "avc_decoder_configuration_record",
    "avcc_to_annexb",
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
