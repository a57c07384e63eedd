"""Annex-B -> AVCC conversion and the avcC record, against FFmpeg's own."""

from __future__ import annotations

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.flv import AvcConfig, annexb_to_avcc, avc_decoder_configuration_record, avcc_to_annexb
from rtp.h264_bits import NAL_AUD, NAL_PPS, NAL_SPS, join_annexb, nal_type, split_annexb
from tests.rtmp.media import Clip

# A hand-checked Constrained Baseline record: SPS 67 42 c0 1e ..., PPS 68 ce 3c 80.
SPS = bytes.fromhex("6742c01ed9005005ba10000003001000000303c0f162e480")
PPS = bytes.fromhex("68ce3c80")
RECORD = (
    b"\x01\x42\xc0\x1e"  # version 1, profile 66, constraints 0xc0, level 30
    b"\xff"  # 6 reserved bits + lengthSizeMinusOne = 3
    b"\xe1" + len(SPS).to_bytes(2, "big") + SPS  # 3 reserved bits + 1 SPS
    + b"\x01" + len(PPS).to_bytes(2, "big") + PPS  # 1 PPS
)  # fmt: skip


def test_record_hand_checked() -> None:
    assert avc_decoder_configuration_record([SPS], [PPS]) == RECORD
    assert AvcConfig(sps=(SPS,), pps=(PPS,)).record == RECORD


def test_record_matches_ffmpeg(clip: Clip, clip_640: Clip) -> None:
    # libx264's extradata in the MKV is FFmpeg's avcC (ff_isom_write_avcc), High
    # profile included (chroma format and bit depth fields).
    for source in (clip, clip_640):
        with av.open(str(source.path)) as container:
            extradata = container.streams.video[0].codec_context.extradata
        config = source.video[0].config
        assert config is not None
        nals = split_annexb(config)
        sps = [n for n in nals if nal_type(n) == NAL_SPS]
        pps = [n for n in nals if nal_type(n) == NAL_PPS]
        assert avc_decoder_configuration_record(sps, pps) == extradata


def test_record_errors() -> None:
    with pytest.raises(ValueError, match="at least one SPS"):
        avc_decoder_configuration_record([], [PPS])
    with pytest.raises(ValueError, match="at least one PPS"):
        avc_decoder_configuration_record([SPS], [])
    with pytest.raises(ValueError, match="not an SPS"):
        avc_decoder_configuration_record([PPS], [PPS])


def test_access_unit_conversion() -> None:
    idr = b"\x65\x88\x84\x00\x33"
    sei = b"\x06\x05\x01\x00\x80"
    au = join_annexb([bytes([NAL_AUD << 0 | 0x00]) + b"\xf0", SPS, PPS, sei, idr])
    unit = annexb_to_avcc(au)
    assert unit.sps == [SPS] and unit.pps == [PPS] and unit.idr
    assert unit.data == b"\x00\x00\x00\x05" + sei + b"\x00\x00\x00\x05" + idr
    assert avcc_to_annexb(unit.data) == join_annexb([sei, idr])
    # 3-byte start codes too, and a non-IDR picture
    slice_ = b"\x41\x9a\x00\x01"
    unit = annexb_to_avcc(b"\x00\x00\x01" + slice_)
    assert unit.data == b"\x00\x00\x00\x04" + slice_ and not unit.idr and not unit.sps


def test_clip_access_units_roundtrip(clip: Clip) -> None:
    for frame in clip.video:
        unit = annexb_to_avcc(frame.payload)
        kept = [n for n in split_annexb(frame.payload) if nal_type(n) not in (7, 8, 9, 12)]
        assert split_annexb(avcc_to_annexb(unit.data)) == kept
        assert unit.idr == frame.keyframe


def test_config_update_replaces_by_id() -> None:
    config = AvcConfig.from_nals([SPS, PPS])
    assert config is not None
    assert config.updated([SPS], [PPS]) == config
    other_pps = b"\x68\xee\x3c\x80"  # same id 0, other content
    updated = config.updated([], [other_pps])
    assert updated.pps == (other_pps,) and updated.sps == (SPS,)
    assert AvcConfig.from_nals([SPS]) is None
    assert config.sps_info.profile_idc == 66


def test_avcc_errors() -> None:
    with pytest.raises(ValueError, match="truncated"):
        avcc_to_annexb(b"\x00\x00")
    with pytest.raises(ValueError, match="overruns"):
        avcc_to_annexb(b"\x00\x00\x00\x09\x65")


nal_bodies = st.binary(min_size=1, max_size=40).map(
    # A NAL unit never contains a start code (emulation prevention, H.264 §7.4.1): keep
    # bodies free of zero bytes, with a header byte of a slice/SEI type.
    lambda b: bytes(x or 1 for x in b)
)
nal_units = st.tuples(st.sampled_from([1, 5, 6, 7, 8, 9, 12]), nal_bodies).map(
    lambda t: bytes([0x60 | t[0]]) + t[1]
)


@given(st.lists(nal_units, min_size=1, max_size=8))
def test_conversion_property(nals: list[bytes]) -> None:
    unit = annexb_to_avcc(join_annexb(nals))
    kept = [n for n in nals if nal_type(n) not in (7, 8, 9, 12)]
    assert split_annexb(avcc_to_annexb(unit.data)) == kept
    assert unit.sps == [n for n in nals if nal_type(n) == 7]
    assert unit.pps == [n for n in nals if nal_type(n) == 8]
    assert len(unit.data) == sum(4 + len(n) for n in kept)


def test_tag_bodies() -> None:
    from rtmp.flv import aac_body, g711_body, video_body

    assert video_body(b"NAL", keyframe=True) == b"\x17\x01\x00\x00\x00NAL"
    assert video_body(b"NAL", keyframe=False, composition_time=40) == b"\x27\x01\x00\x00\x28NAL"
    assert aac_body(b"\x11\x90", sequence_header=True) == b"\xaf\x00\x11\x90"
    assert aac_body(b"raw") == b"\xaf\x01raw"
    assert g711_body(b"\xff", "pcm_mulaw") == b"\x82\xff"
    assert g711_body(b"\xd5", "pcm_alaw") == b"\x72\xd5"
    with pytest.raises(ValueError, match=r"not a G\.711 FLV codec"):
        g711_body(b"", "aac")


def test_flv_file_writer_layout() -> None:
    import io

    from rtmp.flv import FlvFileWriter

    out = io.BytesIO()
    flv = FlvFileWriter(out, has_video=True, has_audio=True)
    flv.write_tag(8, 0x01234567, b"abc")
    data = out.getvalue()
    assert data[:13] == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    # type, size, timestamp (lower 24 bits, then the upper 8), stream id, body, tag size
    assert data[13:] == b"\x08\x00\x00\x03\x23\x45\x67\x01\x00\x00\x00abc\x00\x00\x00\x0e"
    assert flv.bytes_written == len(data)
