"""H.264 bitstream helpers: NAL unit framing, exp-Golomb reading, SPS parsing.

Only what media ingest needs, straight from ITU-T H.264 (06/2019):

- Annex B byte stream framing (start codes) in :func:`split_annexb` and
  :func:`join_annexb`;
- emulation prevention removal (§7.4.1) in :func:`unescape_rbsp`;
- exp-Golomb ``ue(v)``/``se(v)`` (§9.1) in :class:`BitReader`;
- the sequence parameter set (§7.3.2.1.1) up to the frame cropping fields, for
  the picture size and profile, in :func:`parse_sps`;
- the first fields of a PPS (§7.3.2.2) and of a slice header (§7.3.3).

Every parse failure is a :class:`ValueError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "NAL_AUD",
    "NAL_FILLER",
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SEI",
    "NAL_SLICE",
    "NAL_SPS",
    "BitReader",
    "SpsInfo",
    "first_mb_in_slice",
    "is_vcl",
    "join_annexb",
    "nal_type",
    "parse_sps",
    "pps_id",
    "split_annexb",
    "sps_id",
    "unescape_rbsp",
]

# nal_unit_type values (H.264 Table 7-1) that ingest treats specially.
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12

# profile_idc values whose SPS carries chroma_format_idc and bit depths (§7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

_PROFILE_NAMES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
    44: "CAVLC 4:4:4 Intra",
}


def nal_type(nal: bytes) -> int:
    """The nal_unit_type of a NAL unit (its first byte's low 5 bits, H.264 §7.3.1)."""
    return nal[0] & 0x1F


def is_vcl(kind: int) -> bool:
    """Whether a nal_unit_type carries coded slice data (types 1-5, H.264 §7.4.1.2.3)."""
    return 1 <= kind <= 5


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream, without start codes (H.264 Annex B).

    Accepts 3- and 4-byte start codes; the zero bytes before a start code
    (``zero_byte``, ``trailing_zero_8bits``) belong to no NAL unit, so they are
    dropped, and so are empty NAL units. Bytes before the first start code are
    ignored.
    """
    nals: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        nxt = data.find(b"\x00\x00\x01", begin)
        end = len(data) if nxt < 0 else nxt
        nal = data[begin:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        start = nxt
    return nals


def join_annexb(nals: list[bytes]) -> bytes:
    """An Annex B byte stream with a 4-byte start code before every NAL unit."""
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def unescape_rbsp(nal_payload: bytes) -> bytes:
    """Remove emulation prevention bytes: ``00 00 03`` becomes ``00 00`` (H.264 §7.4.1)."""
    if b"\x00\x00\x03" not in nal_payload:
        return nal_payload
    out = bytearray()
    zeros = 0
    for byte in nal_payload:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """Reads bits most significant first, with exp-Golomb codes (H.264 §7.2, §9.1)."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def bits_left(self) -> int:
        """How many bits are still unread."""
        return 8 * len(self._data) - self._pos

    def u(self, count: int) -> int:
        """``u(n)``: an unsigned integer of ``count`` bits."""
        if count > self.bits_left:
            raise ValueError("bitstream truncated")
        value = 0
        for _ in range(count):
            byte = self._data[self._pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def flag(self) -> bool:
        """``u(1)`` as a bool."""
        return self.u(1) == 1

    def ue(self) -> int:
        """``ue(v)``: unsigned exp-Golomb (§9.1); at most 32 leading zero bits."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """``se(v)``: signed exp-Golomb (§9.1.1): 1, -1, 2, -2, ..."""
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What ingest needs from a sequence parameter set (H.264 §7.3.2.1.1, §7.4.2.1.1)."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    width: int
    height: int

    @property
    def profile_level_id(self) -> str:
        """The SDP ``profile-level-id`` (RFC 6184 §8.1): 6 hex digits."""
        return f"{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"

    @property
    def profile(self) -> str:
        """The profile's name as ffprobe spells it (H.264 Annex A.2)."""
        constraint_set1 = bool(self.constraint_flags & 0x40)
        constraint_set3 = bool(self.constraint_flags & 0x10)
        if self.profile_idc == 66 and constraint_set1:
            return "Constrained Baseline"
        name = _PROFILE_NAMES.get(self.profile_idc, f"profile_idc {self.profile_idc}")
        if self.profile_idc in (110, 122, 244) and constraint_set3:
            return f"{name} Intra"
        return name


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    # H.264 §7.3.2.1.1.1: delta-coded; a next_scale of 0 ends the explicit list.
    last_scale = 8
    next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = reader.se()
            if not -128 <= delta <= 127:
                raise ValueError(f"SPS delta_scale {delta} out of range")
            next_scale = (last_scale + delta + 256) % 256
        last_scale = last_scale if next_scale == 0 else next_scale


def parse_sps(nal: bytes) -> SpsInfo:
    """Parse an SPS NAL unit (header byte included) up to its frame cropping.

    Implements H.264 §7.3.2.1.1 with the picture size of §7.4.2.1.1 (equations
    7-13 to 7-20 and the frame_crop_* semantics, CropUnitX/CropUnitY from
    Table 6-1).
    """
    if not nal or nal_type(nal) != NAL_SPS:
        raise ValueError("not an SPS NAL unit")
    reader = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = reader.u(8)
    constraint_flags = reader.u(8)
    level_idc = reader.u(8)
    sps_id = reader.ue()
    if sps_id > 31:
        raise ValueError(f"SPS id {sps_id} out of range")
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = reader.ue()
        if chroma_format_idc > 3:
            raise ValueError(f"SPS chroma_format_idc {chroma_format_idc} out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        bit_depth_luma = 8 + reader.ue()
        bit_depth_chroma = 8 + reader.ue()
        reader.u(1)  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            for index in range(12 if chroma_format_idc == 3 else 8):
                if reader.flag():
                    _skip_scaling_list(reader, 16 if index < 6 else 64)
    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.u(1)  # delta_pic_order_always_zero_flag
        reader.se()  # offset_for_non_ref_pic
        reader.se()  # offset_for_top_to_bottom_field
        cycle = reader.ue()
        if cycle > 255:
            raise ValueError(f"SPS num_ref_frames_in_pic_order_cnt_cycle {cycle} out of range")
        for _ in range(cycle):
            reader.se()
    elif poc_type != 2:
        raise ValueError(f"SPS pic_order_cnt_type {poc_type} out of range")
    reader.ue()  # max_num_ref_frames
    reader.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = reader.ue() + 1
    height_map_units = reader.ue() + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.u(1)  # mb_adaptive_frame_field_flag
    reader.u(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if reader.flag():  # frame_cropping_flag
        crop_left, crop_right = reader.ue(), reader.ue()
        crop_top, crop_bottom = reader.ue(), reader.ue()
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    field_factor = 1 if frame_mbs_only else 2
    if chroma_array_type == 0:
        crop_unit_x, crop_unit_y = 1, field_factor
    else:
        sub_width = 1 if chroma_array_type == 3 else 2
        sub_height = 2 if chroma_array_type == 1 else 1
        crop_unit_x, crop_unit_y = sub_width, sub_height * field_factor
    width = 16 * width_mbs - crop_unit_x * (crop_left + crop_right)
    height = 16 * field_factor * height_map_units - crop_unit_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise ValueError(f"SPS frame cropping leaves a {width}x{height} picture")
    return SpsInfo(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        frame_mbs_only=frame_mbs_only,
        width=width,
        height=height,
    )


def pps_id(nal: bytes) -> int:
    """The pic_parameter_set_id of a PPS NAL unit (H.264 §7.3.2.2)."""
    if not nal or nal_type(nal) != NAL_PPS:
        raise ValueError("not a PPS NAL unit")
    value = BitReader(unescape_rbsp(nal[1:9])).ue()
    if value > 255:
        raise ValueError(f"PPS id {value} out of range")
    return value


def sps_id(nal: bytes) -> int:
    """The seq_parameter_set_id of an SPS NAL unit, cheaper than :func:`parse_sps`."""
    if not nal or nal_type(nal) != NAL_SPS:
        raise ValueError("not an SPS NAL unit")
    reader = BitReader(unescape_rbsp(nal[1:12]))
    reader.u(24)  # profile_idc, constraint flags, level_idc
    value = reader.ue()
    if value > 31:
        raise ValueError(f"SPS id {value} out of range")
    return value


def first_mb_in_slice(nal: bytes) -> int:
    """The first_mb_in_slice of a coded slice NAL unit (H.264 §7.3.3); 0 starts a picture."""
    if not nal or not is_vcl(nal_type(nal)):
        raise ValueError("not a coded slice NAL unit")
    return BitReader(unescape_rbsp(nal[1:9])).ue()
