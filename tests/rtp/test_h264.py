"""H264 RTP depacketizer (RFC 6184) and H.264 bitstream helpers."""

from __future__ import annotations

import base64
import itertools
import json
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.depacketize import H264Depacketizer, create_depacketizer, parse_sprop_parameter_sets
from rtp.frame import MediaFrame
from rtp.h264_bits import (
    BitReader,
    first_mb_in_slice,
    is_vcl,
    join_annexb,
    parse_sps,
    pps_id,
    split_annexb,
    unescape_rbsp,
)
from rtp.packet import RtpPacket
from tests.interop.peers import require_binary

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "h264"
SPS_VECTORS = json.loads((VECTORS / "sps.json").read_text())
SC4 = b"\x00\x00\x00\x01"
SC3 = b"\x00\x00\x01"

# Real parameter sets of the 320x240 baseline vector.
SPS = bytes.fromhex(SPS_VECTORS[0]["sps"])
PPS = bytes.fromhex(SPS_VECTORS[0]["pps"])
SPROP = f"{base64.b64encode(SPS).decode()},{base64.b64encode(PPS).decode()}"
# Slices whose headers say first_mb_in_slice = 0 (ue "1"), then made-up slice data.
IDR = bytes([0x65, 0x88]) + bytes(range(1, 40))
IDR_LATE_SLICE = bytes([0x65, 0x0A, 0x01]) + bytes(range(1, 40))  # first_mb_in_slice 19
P_SLICE = bytes([0x41, 0x9A]) + bytes(range(2, 30))
SEI = bytes([0x06, 0x05, 0x01, 0x02, 0x80])
AUD = bytes([0x09, 0xF0])
FILLER = bytes([0x0C, 0xFF, 0xFF, 0x80])


# -- packetizing, as a sender would (RFC 6184 packetization-mode 1) ------------------------


def packetize(
    nals: list[bytes], *, timestamp: int, seq: int, mtu: int = 1200, aggregate: bool = True
) -> list[RtpPacket]:
    """One access unit to RTP: FU-A above ``mtu``, STAP-A for runs of small NAL units."""
    payloads: list[bytes] = []
    pending: list[bytes] = []

    def flush() -> None:
        if len(pending) == 1:
            payloads.append(pending[0])
        elif pending:
            nri = max(nal[0] & 0x60 for nal in pending)
            units = b"".join(len(nal).to_bytes(2, "big") + nal for nal in pending)
            payloads.append(bytes([nri | 24]) + units)
        pending.clear()

    for nal in nals:
        if len(nal) > mtu:
            flush()
            body, chunk = nal[1:], mtu - 2
            for offset in range(0, len(body), chunk):
                start = 0x80 if offset == 0 else 0
                end = 0x40 if offset + chunk >= len(body) else 0
                header = bytes([(nal[0] & 0xE0) | 28, start | end | (nal[0] & 0x1F)])
                payloads.append(header + body[offset : offset + chunk])
        else:
            size = 1 + sum(2 + len(n) for n in pending) + 2 + len(nal)
            if pending and (size > mtu or not aggregate):
                flush()
            pending.append(nal)
    flush()
    return [
        RtpPacket.parse(
            bytes(
                RtpPacket(
                    payload_type=96,
                    sequence_number=(seq + index) & 0xFFFF,
                    timestamp=timestamp & 0xFFFFFFFF,
                    ssrc=0x1234,
                    marker=index == len(payloads) - 1,
                    payload=payload,
                )
            )
        )
        for index, payload in enumerate(payloads)
    ]


def fu_a(nal: bytes, pieces: int) -> list[bytes]:
    """FU-A payloads of one NAL unit in ``pieces`` fragments."""
    body = nal[1:]
    step = -(-len(body) // pieces)
    out = []
    for index in range(pieces):
        start = 0x80 if index == 0 else 0
        end = 0x40 if index == pieces - 1 else 0
        out.append(
            bytes([(nal[0] & 0xE0) | 28, start | end | (nal[0] & 0x1F)])
            + body[index * step : (index + 1) * step]
        )
    return out


def stap_a(*nals: bytes) -> bytes:
    return bytes([0x78]) + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


_seq = itertools.count()


def pkt(payload: bytes, timestamp: int, marker: bool = False) -> RtpPacket:
    """A packet with the next sequence number."""
    return RtpPacket(
        payload_type=96,
        sequence_number=next(_seq) & 0xFFFF,
        timestamp=timestamp,
        ssrc=7,
        marker=marker,
        payload=payload,
    )


def feed(
    dep: H264Depacketizer, packets: Iterable[RtpPacket], *, lost: dict[int, int] | None = None
) -> list[MediaFrame]:
    """Push packets in order; ``lost`` maps a packet's index to its lost_before."""
    frames: list[MediaFrame] = []
    for index, packet in enumerate(packets):
        frames += dep.push(
            packet,
            extended_timestamp=packet.timestamp,
            arrival=float(index),
            lost_before=(lost or {}).get(index, 0),
        )
    return frames


def split_access_units(stream: bytes) -> list[list[bytes]]:
    """Access units of an Annex B stream by H.264 §7.4.1.2.3's first-NAL-unit rules."""
    units: list[list[bytes]] = []
    current: list[bytes] = []
    seen_slice = False
    for nal in split_annexb(stream):
        kind = nal[0] & 0x1F
        new_picture = is_vcl(kind) and first_mb_in_slice(nal) == 0
        if seen_slice and (kind in (6, 7, 8, 9, 14, 15, 16, 17, 18) or new_picture):
            units.append(current)
            current, seen_slice = [], False
        current.append(nal)
        seen_slice = seen_slice or is_vcl(kind)
    units.append(current)
    return units


def packetize_stream(units: list[list[bytes]], *, mtu: int = 1200) -> list[RtpPacket]:
    packets: list[RtpPacket] = []
    for index, nals in enumerate(units):
        packets += packetize(nals, timestamp=3600 * index, seq=65500 + len(packets), mtu=mtu)
    return packets


# -- packetization structures -------------------------------------------------------------


def test_single_nal_unit_packets_make_one_idr_access_unit() -> None:
    dep = H264Depacketizer()
    frames = feed(dep, [pkt(SPS, 9000), pkt(PPS, 9000), pkt(IDR, 9000, marker=True)])
    assert len(frames) == 1
    frame = frames[0]
    assert frame.payload == SC4 + SPS + SC4 + PPS + SC3 + IDR
    assert frame.keyframe and frame.kind == "video" and frame.codec == "H264"
    assert frame.rtp_timestamp == 9000 and frame.clock_rate == 90000 and frame.ssrc == 7
    assert frame.arrival == 2.0
    assert frame.config == SC4 + SPS + SC4 + PPS
    assert (dep.width, dep.height, dep.profile) == (320, 240, "Constrained Baseline")
    assert dep.stats.frames == 1 and dep.stats.keyframes == 1
    assert not dep.needs_keyframe and not dep.take_keyframe_request()


def test_stap_a_with_sps_pps_idr() -> None:
    dep = H264Depacketizer()
    frames = feed(dep, [pkt(stap_a(SPS, PPS, IDR), 1, marker=True)])
    assert [f.payload for f in frames] == [SC4 + SPS + SC4 + PPS + SC3 + IDR]
    assert split_annexb(frames[0].payload) == [SPS, PPS, IDR]


def test_fu_a_start_middle_end_rebuilds_the_nal_header() -> None:
    big = bytes([0x65]) + bytes((7 * i) & 0xFF or 1 for i in range(3000))
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    pieces = fu_a(big, 3)
    assert [p[1] & 0xC0 for p in pieces] == [0x80, 0x00, 0x40]
    frames = feed(dep, [pkt(p, 5, marker=i == 2) for i, p in enumerate(pieces)])
    assert split_annexb(frames[0].payload) == [SPS, PPS, big]


def test_access_unit_ends_on_a_new_timestamp_without_marker() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    frames = feed(dep, [pkt(IDR, 0), pkt(P_SLICE, 3000), pkt(P_SLICE, 3000), pkt(P_SLICE, 6000)])
    assert [f.rtp_timestamp for f in frames] == [0, 3000]
    assert split_annexb(frames[1].payload) == [P_SLICE, P_SLICE]
    assert frames[1].payload == SC4 + P_SLICE + SC3 + P_SLICE
    assert not frames[1].keyframe and frames[1].config is None
    assert frames[1].arrival == 2.0  # its last packet, not the one that ended it
    tail = dep.flush()
    assert [f.rtp_timestamp for f in tail] == [6000] and dep.flush() == []


def test_sprop_parameter_sets_go_before_the_idr_slice_after_sei() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    assert dep.width == 320 and dep.config == SC4 + SPS + SC4 + PPS
    frames = feed(dep, [pkt(stap_a(AUD, SEI, IDR), 0, marker=True)])
    frames += feed(dep, [pkt(P_SLICE, 3000, marker=True), pkt(IDR, 6000, marker=True)])
    assert frames[0].payload == SC4 + AUD + SC3 + SEI + SC4 + SPS + SC4 + PPS + SC3 + IDR
    assert frames[0].config == SC4 + SPS + SC4 + PPS
    assert frames[1].config is None and frames[2].config is None  # unchanged since
    assert split_annexb(frames[2].payload) == [SPS, PPS, IDR]  # every IDR gets them


def test_in_band_parameter_sets_update_config() -> None:
    other_sps = bytes.fromhex(SPS_VECTORS[5]["sps"])  # 1920x1080 High, also id 0
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    first = feed(dep, [pkt(IDR, 0, marker=True)])[0]
    second = feed(dep, [pkt(stap_a(other_sps, PPS, IDR), 3000, marker=True)])[0]
    third = feed(dep, [pkt(IDR, 6000, marker=True)])[0]
    assert first.config == SC4 + SPS + SC4 + PPS
    assert second.config == SC4 + other_sps + SC4 + PPS
    assert split_annexb(third.payload) == [other_sps, PPS, IDR] and third.config is None
    assert (dep.width, dep.height, dep.profile) == (1920, 1080, "High")


def test_only_missing_parameter_set_is_inserted_and_filler_is_dropped() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    frames = feed(dep, [pkt(stap_a(SPS, IDR, FILLER), 0, marker=True)])
    assert split_annexb(frames[0].payload) == [SPS, PPS, IDR]


def test_parameter_sets_alone_are_cached_not_emitted() -> None:
    # Some cameras send SPS/PPS with the marker bit set, as an AU of their own.
    dep = H264Depacketizer()
    frames = feed(dep, [pkt(stap_a(SPS, PPS), 0, marker=True), pkt(IDR, 0, marker=True)])
    assert len(frames) == 1 and split_annexb(frames[0].payload) == [SPS, PPS, IDR]
    assert frames[0].config == SC4 + SPS + SC4 + PPS and dep.stats.dropped_frames == 0


# -- loss and keyframe requests -----------------------------------------------------------


def test_loss_inside_fu_a_drops_until_next_idr() -> None:
    big_p = bytes([0x41]) + bytes(range(1, 256)) * 8
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    packets = [pkt(IDR, 0, marker=True)]
    packets += [pkt(p, 3000, marker=i == 3) for i, p in enumerate(fu_a(big_p, 4))]
    del packets[2]  # the second fragment is lost: lost_before=1 on the third
    frames = feed(dep, packets, lost={2: 1})
    assert [f.rtp_timestamp for f in frames] == [0]
    assert dep.needs_keyframe
    assert dep.take_keyframe_request() is True
    assert dep.take_keyframe_request() is False  # edge-triggered
    frames = feed(dep, [pkt(P_SLICE, 6000, marker=True), pkt(P_SLICE, 9000, marker=True)])
    assert frames == [] and dep.needs_keyframe and not dep.take_keyframe_request()
    frames = feed(dep, [pkt(IDR, 12000, marker=True), pkt(P_SLICE, 15000, marker=True)])
    assert [(f.rtp_timestamp, f.keyframe) for f in frames] == [(12000, True), (15000, False)]
    assert not dep.needs_keyframe and not dep.take_keyframe_request()
    assert dep.stats.dropped_frames == 3 and dep.stats.lost_packets == 1
    assert dep.stats.frames == 3 and dep.stats.keyframes == 2
    # A second loss episode fires the request again.
    feed(dep, [pkt(P_SLICE, 18000, marker=True)], lost={0: 2})
    assert dep.take_keyframe_request() is True


def test_fu_a_fragment_gap_without_reported_loss_is_detected() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    pieces = fu_a(IDR, 3)
    # start, then end: not reported as lost, but the sequence numbers show the gap
    packets = [pkt(p, 0, marker=i == 2) for i, p in enumerate(pieces)]
    frames = feed(dep, [packets[0], packets[2]])
    assert frames == [] and dep.needs_keyframe and dep.stats.dropped_frames == 1
    assert dep.stats.lost_packets == 1
    # an FU-A cut short by a new start, by a single NAL unit, by the AU's end, by a new AU
    frames = feed(
        dep,
        [
            *[pkt(pieces[0], 1), pkt(pieces[0], 1), pkt(pieces[1], 1), pkt(pieces[2], 1, True)],
            *[pkt(pieces[0], 2), pkt(SEI, 2), pkt(IDR, 2, marker=True)],
            *[pkt(pieces[0], 3), pkt(pieces[1], 3, marker=True)],
            *[pkt(pieces[0], 4), pkt(pieces[1], 4), pkt(IDR, 5, marker=True)],
        ],
    )
    assert [f.rtp_timestamp for f in frames] == [5]  # only the whole IDR of the last case
    assert dep.stats.dropped_frames == 5 and dep.stats.bad_packets == 0
    assert dep.stats.lost_packets == 1


def test_old_and_repeated_packets_are_ignored() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    first, second = pkt(SEI, 0), pkt(IDR, 0, marker=True)
    frames = feed(dep, [first, first, second, first, second])
    assert len(frames) == 1 and split_annexb(frames[0].payload) == [SEI, SPS, PPS, IDR]
    assert dep.stats.bad_packets == 3 and dep.stats.lost_packets == 0


def test_stream_joined_mid_gop_waits_for_idr_then_asks_for_one() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    assert not dep.needs_keyframe  # nothing dropped yet: no request at start
    assert feed(dep, [pkt(P_SLICE, 0, marker=True)]) == []
    assert dep.needs_keyframe and dep.take_keyframe_request()
    assert len(feed(dep, [pkt(IDR, 3000, marker=True)])) == 1
    assert not dep.needs_keyframe


def test_idr_after_loss_is_kept_when_its_first_slice_starts_the_picture() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    feed(dep, [pkt(IDR, 0, marker=True)])
    frames = feed(dep, [pkt(IDR, 6000, marker=True)], lost={0: 3})
    assert len(frames) == 1 and frames[0].keyframe
    assert not dep.needs_keyframe and dep.take_keyframe_request() is False
    # a loss before an empty (padding) packet still counts against the next AU's head
    empty = pkt(b"", 7000)
    assert dep.push(empty, extended_timestamp=7000, arrival=0.0, lost_before=1) == []
    assert feed(dep, [pkt(IDR_LATE_SLICE, 8000, marker=True)]) == []
    assert len(feed(dep, [pkt(IDR, 8500, marker=True)])) == 1
    # the first slice of this IDR went missing: the rest is not a picture
    frames = feed(dep, [pkt(IDR_LATE_SLICE, 9000, marker=True)], lost={0: 1})
    assert frames == [] and dep.needs_keyframe


def test_loss_at_a_markerless_boundary_drops_both_sides() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    feed(dep, [pkt(IDR, 0, marker=True)])
    frames = feed(dep, [pkt(P_SLICE, 3000), pkt(P_SLICE, 6000)], lost={1: 1})
    assert frames == [] and dep.flush() == [] and dep.stats.dropped_frames == 2


def test_discontinuity_resets_and_needs_keyframe() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    feed(dep, [pkt(IDR, 0, marker=True), pkt(P_SLICE, 3000)])
    frames = dep.push(
        pkt(P_SLICE, 777, marker=True), extended_timestamp=777, arrival=1.0, discontinuity=True
    )
    assert frames == [] and dep.needs_keyframe and dep.stats.dropped_frames == 2
    frames = dep.push(pkt(IDR, 900, marker=True), extended_timestamp=900, arrival=2.0)
    assert [f.rtp_timestamp for f in frames] == [900]


# -- malformed and unsupported packets ----------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        stap_a(SPS, PPS)[:-1],  # truncated unit
        stap_a(SPS) + b"\x00",  # half a size field
        bytes([0x78, 0x00, 0x00]),  # zero-length unit
        bytes([0x78]),  # no units
        stap_a(stap_a(SPS)),  # nested aggregation
        bytes([0x7C, 0x85]),  # FU-A without a byte of the NAL unit
        bytes([0x7C, 0x98, 0x01]),  # FU-A carrying type 24
        bytes([0x79, 0x00, 0x01, 0x02, 0x03]),  # STAP-B (interleaved mode)
        bytes([0x7D, 0x85, 0x00, 0x00, 0x01]),  # FU-B
        bytes([0x7A, 0x00, 0x01, 0x02, 0x03]),  # MTAP16
    ],
)
def test_malformed_packets_spoil_their_access_unit_and_are_counted(payload: bytes) -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    frames = feed(dep, [pkt(IDR, 0), pkt(payload, 0, marker=True)])
    assert frames == [] and dep.stats.bad_packets == 1 and dep.stats.dropped_frames == 1
    assert dep.needs_keyframe


def test_ignored_and_empty_packets_leave_the_access_unit_alone() -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    packets = [pkt(IDR, 0), pkt(b"", 0), pkt(b"\x1e\x00", 0), pkt(b"\x00\x01", 0)]
    frames = feed(dep, [*packets, pkt(IDR, 0, marker=True)])
    assert len(frames) == 1 and split_annexb(frames[0].payload) == [SPS, PPS, IDR, IDR]
    assert dep.stats.bad_packets == 1 and dep.stats.unsupported_packets == 2


def test_fu_a_with_start_and_end_bits_is_taken_whole() -> None:
    # RFC 6184 §5.8 forbids it; aiortc and GStreamer accept it, and so do we.
    dep = H264Depacketizer(sprop_parameter_sets=SPROP)
    frames = feed(dep, [pkt(bytes([0x7C, 0xC5]) + IDR[1:], 0, marker=True)])
    assert split_annexb(frames[0].payload) == [SPS, PPS, IDR]


def test_sprop_parameter_sets_parsing() -> None:
    assert parse_sprop_parameter_sets(SPROP) == [SPS, PPS]
    assert parse_sprop_parameter_sets("aMuDyyA") == [PPS]  # missing padding tolerated
    with pytest.raises(ValueError, match=r"sprop-parameter-sets entry '\*\*' is not base64"):
        parse_sprop_parameter_sets("**")
    dep = H264Depacketizer(sprop_parameter_sets="**," + SPROP.split(",")[1])
    assert dep.config == SC4 + PPS and dep.width is None
    created = create_depacketizer("H264", clock_rate=90000, fmtp={"sprop-parameter-sets": SPROP})
    assert isinstance(created, H264Depacketizer) and created.width == 320


# -- real bitstreams ----------------------------------------------------------------------

STREAMS = [
    ("baseline_320x240.h264", 25, 3, (320, 240)),
    ("slices_320x240.h264", 12, 3, (320, 240)),
    ("high_1920x1080.h264", 3, 1, (1920, 1080)),
]


@pytest.mark.parametrize(("name", "count", "idrs", "size"), STREAMS)
@pytest.mark.parametrize("mtu", [1200, 300])
def test_real_stream_round_trip_is_byte_identical_to_ffmpeg(
    name: str, count: int, idrs: int, size: tuple[int, int], mtu: int
) -> None:
    stream = (VECTORS / name).read_bytes()
    units = split_access_units(stream)
    assert len(units) == count  # ffprobe -count_frames
    packets = packetize_stream(units, mtu=mtu)
    assert {p.payload[0] & 0x1F for p in packets} >= {24, 28}
    dep = H264Depacketizer()
    frames = feed(dep, packets)
    assert [split_annexb(f.payload) for f in frames] == units
    assert b"".join(f.payload for f in frames) == stream
    assert sum(f.keyframe for f in frames) == idrs == dep.stats.keyframes
    assert (dep.width, dep.height) == size and dep.stats.bad_packets == 0


@pytest.mark.parametrize(("name", "count", "idrs", "size"), STREAMS)
def test_out_of_band_parameter_sets_are_put_back_where_ffmpeg_puts_them(
    name: str, count: int, idrs: int, size: tuple[int, int]
) -> None:
    stream = (VECTORS / name).read_bytes()
    units = split_access_units(stream)
    params = [n for u in units for n in u if n[0] & 0x1F in (7, 8)][:2]
    sprop = ",".join(base64.b64encode(n).decode() for n in params)
    stripped = [[n for n in u if n[0] & 0x1F not in (7, 8)] for u in units]
    dep = H264Depacketizer(sprop_parameter_sets=sprop)
    frames = feed(dep, packetize_stream(stripped))
    assert b"".join(f.payload for f in frames) == stream
    assert frames[0].config == join_annexb(params)
    assert all(f.config is None for f in frames[1:])


@pytest.mark.interop
def test_ffmpeg_rtp_sender_output_matches_its_own_annexb(tmp_path: Path) -> None:
    """ffmpeg packetizes an MP4 to RTP; we rebuild exactly its h264_mp4toannexb bytes."""
    require_binary("ffmpeg")
    mp4, sdp, ref = tmp_path / "in.mp4", tmp_path / "out.sdp", tmp_path / "ref.h264"
    quiet = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [
            *quiet,
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=25",
            "-frames:v",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-g",
            "8",
            str(mp4),
        ],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [
            *quiet,
            "-i",
            str(mp4),
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
            str(ref),
        ],
        check=True,
        timeout=60,
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        subprocess.run(
            [
                *quiet,
                "-re",
                "-i",
                str(mp4),
                "-c:v",
                "copy",
                "-f",
                "rtp",
                "-sdp_file",
                str(sdp),
                f"rtp://127.0.0.1:{port}?rtcpport={port + 1}&pkt_size=1200",
            ],
            check=True,
            timeout=60,
        )
        sock.setblocking(False)
        packets = []
        while True:
            try:
                packets.append(RtpPacket.parse(sock.recv(65536)))
            except BlockingIOError:
                break
    fmtp = sdp.read_text().split("sprop-parameter-sets=")[1].split(";")[0].strip()
    packets.sort(key=lambda p: p.sequence_number)
    dep = H264Depacketizer(sprop_parameter_sets=fmtp)
    frames = feed(dep, packets) + dep.flush()
    assert len(frames) == 20 and dep.stats.dropped_frames == 0
    assert b"".join(f.payload for f in frames) == ref.read_bytes()
    assert (dep.width, dep.height) == (640, 360)


# -- property tests -----------------------------------------------------------------------

_packet_steps = st.lists(
    st.tuples(
        st.binary(max_size=40),
        st.booleans(),
        st.integers(0, 2),
        st.integers(0, 3),
        st.booleans(),
    ),
    max_size=30,
)


@given(steps=_packet_steps, sprop=st.booleans())
def test_random_packets_never_raise(
    steps: list[tuple[bytes, bool, int, int, bool]], sprop: bool
) -> None:
    dep = H264Depacketizer(sprop_parameter_sets=SPROP if sprop else None)
    timestamp = 0
    frames: list[MediaFrame] = []
    expect_keyframe = True  # the stream starts by waiting for an IDR
    for payload, marker, step, lost, jump in steps:
        timestamp += step * 3000
        expect_keyframe = expect_keyframe or lost > 0 or jump
        out = dep.push(
            pkt(payload, timestamp, marker=marker),
            extended_timestamp=timestamp,
            arrival=0.0,
            lost_before=lost,
            discontinuity=jump,
        )
        for frame in out:
            # after a loss, nothing but an IDR may come out first
            assert frame.keyframe or not expect_keyframe
            expect_keyframe = False
        frames += out
    frames += dep.flush()
    assert dep.stats.frames == len(frames)
    assert dep.stats.keyframes == sum(f.keyframe for f in frames)
    for frame in frames:
        assert frame.payload.startswith(SC4)
        assert any(is_vcl(n[0] & 0x1F) for n in split_annexb(frame.payload))


_real_units = split_access_units((VECTORS / "slices_320x240.h264").read_bytes())
_real_packets = packetize_stream(_real_units, mtu=400)


@given(
    mutations=st.lists(
        st.tuples(st.integers(0, len(_real_packets) - 1), st.integers(0, 500), st.integers(0, 255)),
        max_size=6,
    ),
    cut=st.integers(0, len(_real_packets) - 1),
    cut_to=st.integers(0, 50),
)
def test_mutated_real_packets_never_raise(
    mutations: list[tuple[int, int, int]], cut: int, cut_to: int
) -> None:
    packets = [RtpPacket.parse(bytes(p)) for p in _real_packets]
    for index, offset, value in mutations:
        data = bytearray(packets[index].payload)
        if offset < len(data):
            data[offset] = value
        packets[index].payload = bytes(data)
    packets[cut].payload = packets[cut].payload[:cut_to]
    dep = H264Depacketizer()
    frames = feed(dep, packets) + dep.flush()
    assert dep.stats.frames == len(frames) <= len(_real_units)
    assert all(f.payload.startswith(SC4) for f in frames)


# -- bitstream helpers --------------------------------------------------------------------


@pytest.mark.parametrize("vector", SPS_VECTORS, ids=[v["name"] for v in SPS_VECTORS])
def test_sps_of_real_encodes_matches_ffprobe(vector: dict[str, object]) -> None:
    info = parse_sps(bytes.fromhex(str(vector["sps"])))
    assert (info.width, info.height) == (vector["width"], vector["height"])
    assert info.profile == vector["profile"]
    assert info.level_idc == vector["level_idc"]
    assert info.frame_mbs_only == (vector["field_order"] == "progressive")
    assert (
        info.chroma_format_idc
        == {"yuv420p": 1, "yuv422p10le": 2, "yuv444p": 3}[str(vector["pix_fmt"])]
    )
    assert info.bit_depth_luma == (10 if "10" in str(vector["pix_fmt"]) else 8)
    assert pps_id(bytes.fromhex(str(vector["pps"]))) == 0


def test_profile_level_id() -> None:
    assert parse_sps(SPS).profile_level_id == "42c00d"
    assert parse_sps(bytes.fromhex(SPS_VECTORS[5]["sps"])).profile_level_id == "640028"


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> None:
        self.bits += [(value >> (count - 1 - i)) & 1 for i in range(count)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, header: int) -> bytes:
        bits = [*self.bits, 1]  # rbsp_stop_one_bit
        bits += [0] * (-len(bits) % 8)
        raw = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
        out = bytearray()
        for byte in raw:  # emulation prevention (§7.4.1)
            if len(out) >= 2 and out[-1] == 0 and out[-2] == 0 and byte <= 3:
                out.append(3)
            out.append(byte)
        return bytes([header]) + bytes(out)


def synthetic_sps(*, chroma: int, separate: bool, poc_type: int, frame_mbs_only: bool) -> bytes:
    w = BitWriter()
    w.u(8, 100)  # High
    w.u(8, 0)
    w.u(8, 40)
    w.ue(3)  # sps id
    w.ue(chroma)
    if chroma == 3:
        w.u(1, int(separate))
    w.ue(2)  # 10-bit luma
    w.ue(0)
    w.u(1, 0)
    w.u(1, 1)  # seq_scaling_matrix_present_flag
    for index in range(12 if chroma == 3 else 8):
        present = index in (0, 6, 7)
        w.u(1, int(present))
        if index == 0:
            for delta in (8, -3, 5, -100, 100):  # then 0 ends the list early ...
                w.se(delta)
            w.se(-18)  # ... next_scale = (18 - 18) = 0
        elif index == 6:
            for _ in range(64):
                w.se(1)
        elif present:
            for _ in range(8):
                w.se(-1)  # 8 - 8 = 0: the list ends after 8 deltas
    w.ue(5)  # log2_max_frame_num_minus4
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(4)
    elif poc_type == 1:
        w.u(1, 0)
        w.se(-2)
        w.se(3)
        w.ue(3)
        for offset in (1, -1, 7):
            w.se(offset)
    w.ue(4)  # max_num_ref_frames
    w.u(1, 0)
    w.ue(45 - 1)  # 720 wide
    w.ue((18 if not frame_mbs_only else 36) - 1)  # 576 high
    w.u(1, int(frame_mbs_only))
    if not frame_mbs_only:
        w.u(1, 1)
    w.u(1, 1)
    w.u(1, 1)  # frame_cropping_flag
    for crop in (2, 3, 1, 4):
        w.ue(crop)
    w.u(1, 0)  # no VUI
    return w.nal(0x67)


@pytest.mark.parametrize(
    ("chroma", "separate", "poc_type", "frame_mbs_only", "size"),
    [
        (1, False, 0, True, (720 - 2 * 5, 576 - 2 * 5)),
        (2, False, 1, True, (720 - 2 * 5, 576 - 1 * 5)),
        (3, False, 2, True, (720 - 1 * 5, 576 - 1 * 5)),
        (3, True, 1, False, (720 - 1 * 5, 576 - 2 * 5)),  # ChromaArrayType 0, fields
        (1, False, 2, False, (720 - 2 * 5, 576 - 4 * 5)),
        (0, False, 0, True, (720 - 1 * 5, 576 - 1 * 5)),  # monochrome
    ],
)
def test_synthetic_sps_branches(
    chroma: int, separate: bool, poc_type: int, frame_mbs_only: bool, size: tuple[int, int]
) -> None:
    info = parse_sps(
        synthetic_sps(
            chroma=chroma, separate=separate, poc_type=poc_type, frame_mbs_only=frame_mbs_only
        )
    )
    assert (info.width, info.height) == size
    assert info.sps_id == 3 and info.bit_depth_luma == 10 and info.chroma_format_idc == chroma


def test_sps_errors_are_value_errors_with_reasons() -> None:
    with pytest.raises(ValueError, match=r"^not an SPS NAL unit$"):
        parse_sps(PPS)
    with pytest.raises(ValueError, match=r"^bitstream truncated$"):
        parse_sps(SPS[:6])
    with pytest.raises(ValueError, match=r"^exp-Golomb code longer than 32 bits$"):
        BitReader(bytes(8)).ue()


@given(st.binary(max_size=64))
def test_sps_parser_raises_only_value_error(data: bytes) -> None:
    try:
        info = parse_sps(b"\x67" + data)
    except ValueError:
        return
    assert info.width > 0 and info.height > 0


def test_exp_golomb_and_unescape() -> None:
    reader = BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [reader.ue(), reader.ue(), reader.ue(), reader.se(), reader.se()] == [0, 1, 2, 2, -2]
    assert unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"
    assert unescape_rbsp(b"\x00\x03\x00") == b"\x00\x03\x00"


def test_split_and_join_annexb() -> None:
    stream = b"\x00" + SC4 + SPS + SC3 + PPS + b"\x00\x00" + SC3 + IDR + SC4
    assert split_annexb(stream) == [SPS, PPS, IDR]
    assert split_annexb(join_annexb([SPS, PPS, IDR])) == [SPS, PPS, IDR]
    assert split_annexb(b"") == [] and split_annexb(b"\x01\x02") == []
