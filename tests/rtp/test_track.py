"""TrackReceiver: latching, NAT keepalives, RTCP, frames, keyframe requests, DTMF in.

Everything runs on virtual time: the test moves ``now`` by hand and calls
``handle_timer`` whenever ``now`` reaches ``get_timer()`` (see :class:`Runner`).
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from rtp.dtmf import DtmfSender
from rtp.frame import MediaFrame
from rtp.packet import RtpPacket
from rtp.rtcp import (
    FullIntraRequest,
    Goodbye,
    PictureLossIndication,
    ReceiverReport,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    ntp_middle_32,
    parse_compound,
)
from rtp.track import TrackConfig, TrackReceiver

Address = tuple[str, int]
T = TypeVar("T")

REMOTE_RTP: Address = ("192.0.2.10", 40000)
REMOTE_RTCP: Address = ("192.0.2.10", 40001)
NAT_RTP: Address = ("198.51.100.7", 61000)
NAT_RTCP: Address = ("198.51.100.7", 61001)
STRANGER: Address = ("203.0.113.99", 40000)
REMOTE_SSRC = 0x1234_5678

Codecs = dict[int, tuple[str, int, int, dict[str, str]]]
PCMU: Codecs = {0: ("PCMU", 8000, 1, {})}
PCMA: Codecs = {8: ("PCMA", 8000, 1, {})}
OPUS: Codecs = {111: ("opus", 48000, 2, {})}
TE_PT = 101

_H264_VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "h264" / "sps.json"
_SPS_VECTOR = json.loads(_H264_VECTORS.read_text())[0]
SPS = bytes.fromhex(_SPS_VECTOR["sps"])
PPS = bytes.fromhex(_SPS_VECTOR["pps"])
SC4 = b"\x00\x00\x00\x01"
IDR = bytes([0x65, 0x88]) + bytes(range(1, 40))  # first_mb_in_slice 0
P_SLICE = bytes([0x41, 0x9A]) + bytes(range(2, 30))
H264: Codecs = {96: ("H264", 90000, 1, {"packetization-mode": "1"})}


def stap_a(*nals: bytes) -> bytes:
    """An RFC 6184 §5.7.1 STAP-A payload."""
    return bytes([0x78]) + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


# -- configs and remote packets ------------------------------------------------------


def audio_config(codecs: Codecs | None = None, **kwargs: object) -> TrackConfig:
    options: dict[str, object] = {
        "kind": "audio",
        "remote_rtp": REMOTE_RTP,
        "remote_rtcp": REMOTE_RTCP,
        "rtcp_mux": False,
        "codecs": dict(codecs if codecs is not None else PCMU),
        "telephone_event_pt": TE_PT,
        **kwargs,
    }
    return TrackConfig(**options)  # type: ignore[arg-type]


def video_config(**kwargs: object) -> TrackConfig:
    options: dict[str, object] = {
        "kind": "video",
        "remote_rtp": REMOTE_RTP,
        "remote_rtcp": REMOTE_RTCP,
        "rtcp_mux": False,
        "codecs": dict(H264),
        **kwargs,
    }
    return TrackConfig(**options)  # type: ignore[arg-type]


def rtp(
    pt: int,
    seq: int,
    ts: int,
    payload: bytes,
    *,
    marker: bool = False,
    ssrc: int = REMOTE_SSRC,
) -> bytes:
    return bytes(
        RtpPacket(
            payload_type=pt,
            sequence_number=seq & 0xFFFF,
            timestamp=ts & 0xFFFF_FFFF,
            ssrc=ssrc,
            marker=marker,
            payload=payload,
        )
    )


def pcmu(index: int, *, seq0: int = 1000, ts0: int = 8000) -> bytes:
    """The ``index``-th 20 ms PCMU packet of the remote stream."""
    return rtp(0, seq0 + index, ts0 + 160 * index, bytes([index % 256]) * 160)


def sender_report(ntp: int, rtp_timestamp: int, *, ssrc: int = REMOTE_SSRC) -> bytes:
    sr = SenderReport(
        ssrc=ssrc, ntp_timestamp=ntp, rtp_timestamp=rtp_timestamp, packet_count=1, octet_count=1
    )
    sdes = SourceDescription(chunks=[SdesChunk(ssrc, [(1, b"phone")])])
    return bytes(sr) + bytes(sdes)


def dtmf_packets(digit: str, seq0: int, ts: int) -> list[bytes]:
    """Every packet of one key press as a sender sends it (RFC 4733 §2.5.1)."""
    packets = DtmfSender().packets_for(digit, ts, duration_ms=100)
    return [
        rtp(TE_PT, seq0 + index, timestamp, bytes(event), marker=marker)
        for index, (marker, timestamp, event) in enumerate(packets)
    ]


# -- virtual time ---------------------------------------------------------------------


class Core(Protocol):
    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None: ...

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


@dataclass(frozen=True)
class Sent:
    at: float
    socket: str
    data: bytes
    address: Address


@dataclass
class Runner:
    """Drives a sans-IO core on virtual time, recording what it sends."""

    core: Core
    now: float = 0.0
    collect: Callable[[], None] = lambda: None
    sent: list[Sent] = field(default_factory=list)

    def _drain(self) -> None:
        for socket_name, data, address in self.core.datagrams_to_send():
            self.sent.append(Sent(self.now, socket_name, data, address))
        self.collect()

    def run_until(self, until: float) -> None:
        """Fire every timer due up to ``until``, then stand at ``until``."""
        for _ in range(200_000):
            deadline = self.core.get_timer()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
            self._drain()
        else:
            pytest.fail("the timer does not advance")
        self.now = max(self.now, until)
        self._drain()

    def act(self, action: Callable[[float], T]) -> T:
        """Run ``action(now)`` on the core, as the asyncio shell does, and collect."""
        result = action(self.now)
        self._drain()
        return result

    def deliver(self, socket_name: str, data: bytes, source: Address, at: float) -> None:
        self.run_until(at)
        self.core.receive(socket_name, data, source, self.now)
        self._drain()

    def deliver_all(
        self, socket_name: str, timed: Iterable[tuple[float, bytes]], source: Address
    ) -> None:
        for at, data in timed:
            self.deliver(socket_name, data, source, at)

    def rtcp_sent(self, socket_name: str | None = None) -> list[tuple[Sent, list[RtcpPacket]]]:
        """Every RTCP datagram sent (on ``socket_name``), parsed."""
        out = []
        for sent in self.sent:
            if socket_name is not None and sent.socket != socket_name:
                continue
            if sent.data[1] in range(192, 224):
                out.append((sent, parse_compound(sent.data)))
        return out

    def rtp_sent(self) -> list[tuple[Sent, RtpPacket]]:
        return [
            (sent, RtpPacket.parse(sent.data))
            for sent in self.sent
            if sent.data[1] not in range(192, 224)
        ]


@dataclass
class TrackRun(Runner):
    """A Runner over one TrackReceiver that also collects its frames and digits."""

    frames: list[MediaFrame] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)


def track_run(config: TrackConfig, now: float = 0.0) -> tuple[TrackReceiver, TrackRun]:
    track = TrackReceiver(config, now=now)
    run = TrackRun(track, now=now)

    def collect() -> None:
        run.frames += track.take_frames()
        run.digits += track.take_digits()

    run.collect = collect
    return track, run


def keyframe_requests(run: Runner) -> list[tuple[Sent, list[RtcpPacket]]]:
    return [
        (sent, packets)
        for sent, packets in run.rtcp_sent()
        if any(isinstance(p, PictureLossIndication) for p in packets)
    ]


def receiver_reports(run: Runner, socket_name: str) -> list[tuple[Sent, ReceiverReport]]:
    out = []
    for sent, packets in run.rtcp_sent(socket_name):
        assert isinstance(packets[0], ReceiverReport), packets
        out.append((sent, packets[0]))
    return out


# -- latching (RFC 4961) ---------------------------------------------------------------


def test_first_valid_packet_latches_and_others_are_foreign() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    run.deliver("audio-rtp", pcmu(1), STRANGER, 0.02)
    run.deliver("audio-rtp", pcmu(2, ts0=999), STRANGER, 0.03)
    run.deliver("audio-rtp", pcmu(1), NAT_RTP, 0.04)
    run.run_until(1.0)

    assert track.stats.latched == NAT_RTP
    assert track.stats.foreign_packets == 2
    assert track.stats.packets == 2
    assert [frame.payload[0] for frame in run.frames] == [0, 1]


def test_unknown_payload_type_does_not_latch() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", rtp(99, 1, 1, b"x" * 20), STRANGER, 0.0)
    assert track.stats.latched is None
    assert track.stats.unknown_payload == 1
    assert track.stats.packets == 0

    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.01)
    assert track.stats.latched == NAT_RTP
    assert track.stats.packets == 1


def test_garbage_does_not_latch() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", b"\x80\x00\x01", STRANGER, 0.0)
    run.deliver("audio-rtp", b"\x00" * 40, STRANGER, 0.0)  # version 0
    assert track.stats.latched is None
    assert track.stats.bad_packets == 2


def test_unknown_payload_after_latching_keeps_the_remote_ssrc() -> None:
    # Without rtcp-mux a peer's RTCP keepalive on our RTP port parses as RTP
    # with payload type 72-76: it must not replace the remote SSRC.
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    report = bytes(sender_report(ntp_from_unix(1.7e9), 1, ssrc=0xDEAD))
    run.deliver("audio-rtp", report, NAT_RTP, 0.01)
    assert track.stats.remote_ssrc == REMOTE_SSRC
    assert track.stats.unknown_payload == 1
    assert track.stats.packets == 1
    assert track.stats.sender_reports == 0


def test_keepalives_follow_the_latched_addresses() -> None:
    track, run = track_run(audio_config(keepalive_interval=5.0))
    run.run_until(0.0)
    first = [(s.socket, s.address) for s in run.sent]
    assert sorted(first) == [("audio-rtcp", REMOTE_RTCP), ("audio-rtp", REMOTE_RTP)]

    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 1.0)
    run.sent.clear()
    run.run_until(5.0)
    at_five = {s.socket: s.address for s in run.sent if s.at == 5.0}
    # RTP latched, RTCP not yet: RTCP still goes to the SDP's address.
    assert at_five == {"audio-rtp": NAT_RTP, "audio-rtcp": REMOTE_RTCP}

    run.deliver("audio-rtcp", sender_report(ntp_from_unix(1.7e9), 8000), NAT_RTCP, 6.0)
    run.sent.clear()
    run.run_until(10.0)
    assert run.sent
    assert {s.address for s in run.sent if s.socket == "audio-rtcp"} == {NAT_RTCP}
    assert {s.address for s in run.sent if s.socket == "audio-rtp"} == {NAT_RTP}
    assert track.stats.latched_rtcp == NAT_RTCP


def test_retarget_after_a_reinvite_sends_to_the_new_address_and_latches_again() -> None:
    track, run = track_run(audio_config(keepalive_interval=5.0))
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.5)
    assert track.retarget(REMOTE_RTP, REMOTE_RTCP) is False  # the same SDP address: no change

    moved_rtp, moved_rtcp = ("192.0.2.20", 50000), ("192.0.2.20", 50001)
    assert track.retarget(moved_rtp, moved_rtcp) is True
    assert track.stats.latched is None
    run.sent.clear()
    run.run_until(5.0)
    assert {s.socket: s.address for s in run.sent if s.at == 5.0} == {
        "audio-rtp": moved_rtp,
        "audio-rtcp": moved_rtcp,
    }
    run.deliver("audio-rtp", pcmu(1), moved_rtp, 5.5)
    run.deliver("audio-rtp", pcmu(2), NAT_RTP, 5.52)  # the old source is foreign now
    assert track.stats.latched == moved_rtp
    assert track.stats.foreign_packets == 1


def test_rtcp_from_a_stranger_after_latching_is_ignored() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtcp", sender_report(ntp_from_unix(1.7e9), 1), NAT_RTCP, 0.0)
    run.deliver("audio-rtcp", sender_report(ntp_from_unix(1.8e9), 2), STRANGER, 0.1)
    assert track.stats.sender_reports == 1
    assert track.stats.foreign_packets == 1
    assert len(track.sender_reports) == 1


# -- NAT keepalive ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codecs", "pt", "silence", "rate"),
    [
        (PCMU, 0, b"\xff" * 160, 8000),
        (PCMA, 8, b"\xd5" * 160, 8000),
        (OPUS, 111, b"\xf8\xff\xfe", 48000),
    ],
)
def test_audio_keepalive_at_start(codecs: Codecs, pt: int, silence: bytes, rate: int) -> None:
    track, run = track_run(audio_config(codecs, keepalive_interval=5.0, cname=b"gw-1"))
    assert track.get_timer() == 0.0
    run.run_until(0.0)

    [(sent_rtp, packet)] = run.rtp_sent()
    assert (sent_rtp.at, sent_rtp.socket, sent_rtp.address) == (0.0, "audio-rtp", REMOTE_RTP)
    assert packet.payload_type == pt
    assert packet.payload == silence
    assert packet.ssrc == track.ssrc

    [(sent_rtcp, packets)] = run.rtcp_sent()
    assert (sent_rtcp.socket, sent_rtcp.address) == ("audio-rtcp", REMOTE_RTCP)
    report, sdes = packets
    assert isinstance(report, ReceiverReport)
    assert report.ssrc == track.ssrc
    assert report.reports == []  # nothing received yet
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].ssrc == track.ssrc
    assert sdes.chunks[0].cname == b"gw-1"
    assert track.stats.keepalives_sent == 1

    # Repeated every keepalive_interval: one stream, numbered and timed.
    run.run_until(20.0)
    packets_out = run.rtp_sent()
    assert [s.at for s, _ in packets_out] == [0.0, 5.0, 10.0, 15.0, 20.0]
    seqs = [p.sequence_number for _, p in packets_out]
    assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1, 1, 1, 1]
    stamps = [p.timestamp for _, p in packets_out]
    steps = [(b - a) & 0xFFFF_FFFF for a, b in itertools.pairwise(stamps)]
    assert steps == [5 * rate] * 4
    assert {p.ssrc for _, p in packets_out} == {track.ssrc}
    keepalive_rtcp = [s.at for s, _ in run.rtcp_sent() if s.at in (0.0, 5.0, 10.0, 15.0, 20.0)]
    assert keepalive_rtcp == [0.0, 5.0, 10.0, 15.0, 20.0]


def test_video_keepalive_is_rtcp_on_both_ports() -> None:
    track, run = track_run(video_config(keepalive_interval=5.0))
    run.run_until(0.0)
    assert run.rtp_sent() == []
    sent = {(s.socket, s.address) for s, _ in run.rtcp_sent()}
    assert sent == {("video-rtp", REMOTE_RTP), ("video-rtcp", REMOTE_RTCP)}
    for _, packets in run.rtcp_sent():
        assert isinstance(packets[0], ReceiverReport)
        assert packets[0].ssrc == track.ssrc


def test_audio_without_known_silence_sends_rtcp_on_the_rtp_port() -> None:
    _, run = track_run(audio_config({18: ("G729", 8000, 1, {})}))
    run.run_until(0.0)
    assert run.rtp_sent() == []
    sent = {(s.socket, s.address) for s, _ in run.rtcp_sent()}
    assert sent == {("audio-rtp", REMOTE_RTP), ("audio-rtcp", REMOTE_RTCP)}


def test_keepalive_off_sends_nothing_at_start() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.run_until(2.0)
    assert run.sent == []
    assert track.stats.keepalives_sent == 0
    # The first RR comes at 0.5-1x the RTCP interval (RFC 3550 §6.2 halves the first).
    run.run_until(5.0)
    [(sent, packets)] = run.rtcp_sent()
    assert 2.5 <= sent.at <= 5.0
    assert isinstance(packets[0], ReceiverReport)
    assert run.rtp_sent() == []


def test_keepalive_with_rtcp_mux_uses_the_rtp_socket() -> None:
    config = video_config(rtcp_mux=True, remote_rtcp=REMOTE_RTP)
    track, run = track_run(config)
    assert track.rtcp_socket == track.rtp_socket == "video-rtp"
    run.run_until(0.0)
    [(sent, packets)] = run.rtcp_sent()  # one RR, not the same one twice
    assert (sent.socket, sent.address) == ("video-rtp", REMOTE_RTP)
    assert isinstance(packets[0], ReceiverReport)


# -- RTCP --------------------------------------------------------------------------------


def test_sender_report_sets_lsr_and_dlsr_of_the_next_report() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver_all("audio-rtp", ((i * 0.02, pcmu(i)) for i in range(10)), NAT_RTP)
    ntp = ntp_from_unix(1_700_000_000.123456)
    run.deliver("audio-rtcp", sender_report(ntp, 8000 + 1600), NAT_RTCP, 0.3)
    assert track.sender_reports == [(ntp / 2**32, 9600, 0.3)]
    run.sent.clear()
    run.run_until(8.0)

    sent, report = receiver_reports(run, "audio-rtcp")[0]
    [block] = report.reports
    assert block.ssrc == REMOTE_SSRC
    assert block.lsr == ntp_middle_32(ntp)
    assert block.dlsr == round((sent.at - 0.3) * 65536)
    assert block.highest_sequence == 1009
    assert block.packets_lost == 0
    assert sent.address == NAT_RTCP


def test_report_without_sender_report_has_zero_lsr() -> None:
    _, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    run.run_until(6.0)
    _, report = receiver_reports(run, "audio-rtcp")[0]
    [block] = report.reports
    assert (block.lsr, block.dlsr) == (0, 0)


def test_receiver_reports_about_every_five_seconds() -> None:
    _, run = track_run(audio_config(keepalive=False))
    run.run_until(300.0)
    times = [sent.at for sent, _ in receiver_reports(run, "audio-rtcp")]
    assert 2.5 <= times[0] <= 5.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(2.5 <= gap <= 7.5 for gap in gaps), gaps
    assert 40 <= len(times) <= 120
    assert max(gaps) - min(gaps) > 0.1  # randomised, not a fixed period


def test_report_counts_loss() -> None:
    _, run = track_run(audio_config(keepalive=False))
    arrivals = ((i * 0.02, pcmu(i)) for i in range(50) if i not in (10, 11, 30))
    run.deliver_all("audio-rtp", arrivals, NAT_RTP)
    run.run_until(6.0)
    _, report = receiver_reports(run, "audio-rtcp")[0]
    [block] = report.reports
    assert block.packets_lost == 3
    assert block.fraction_lost == (3 << 8) // 50


def test_rtcp_mux_recognises_rtcp_on_the_rtp_socket() -> None:
    config = audio_config(rtcp_mux=True, remote_rtcp=REMOTE_RTP, keepalive=False)
    track, run = track_run(config)
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    ntp = ntp_from_unix(1.7e9)
    for packet_type_data in (
        sender_report(ntp, 8000),
        bytes(ReceiverReport(ssrc=REMOTE_SSRC)) + bytes(SourceDescription()),
        bytes(Goodbye(sources=[REMOTE_SSRC])),
    ):
        assert 200 <= packet_type_data[1] <= 204
        run.deliver("audio-rtp", packet_type_data, NAT_RTP, 0.01)
    run.deliver("audio-rtp", pcmu(1), NAT_RTP, 0.02)
    assert track.stats.rtcp_received == 3
    assert track.stats.sender_reports == 1
    assert track.stats.packets == 2
    assert track.stats.bad_packets == track.stats.unknown_payload == 0
    run.run_until(6.0)
    reports = receiver_reports(run, "audio-rtp")
    assert reports
    assert {sent.address for sent, _ in reports} == {NAT_RTP}
    assert reports[0][1].reports[0].lsr == ntp_middle_32(ntp)
    assert all(sent.socket == "audio-rtp" for sent in run.sent)


# -- frames ---------------------------------------------------------------------------


def test_pcmu_frames_come_out_after_the_jitter_delay() -> None:
    _, run = track_run(audio_config(keepalive=False))
    for i in range(50):
        run.deliver("audio-rtp", pcmu(i), NAT_RTP, i * 0.02)
        if i == 0:
            assert run.frames == []  # held for the playout delay
    run.run_until(2.0)
    assert len(run.frames) == 50
    assert [f.rtp_timestamp for f in run.frames] == [8000 + 160 * i for i in range(50)]
    assert all(f.codec == "PCMU" and f.kind == "audio" for f in run.frames)
    assert all(f.duration == pytest.approx(0.02) for f in run.frames)


def test_reordered_audio_comes_out_in_order() -> None:
    _, run = track_run(audio_config(keepalive=False))
    order = [0, 2, 1, 3, 5, 4, 6]
    for slot, i in enumerate(order):
        run.deliver("audio-rtp", pcmu(i), NAT_RTP, slot * 0.02)
    run.run_until(2.0)
    assert [f.payload[0] for f in run.frames] == sorted(order)


def test_comfort_noise_is_no_frame_and_no_loss() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    run.deliver("audio-rtp", rtp(13, 1001, 8160, b"\x40"), NAT_RTP, 0.02)
    run.deliver("audio-rtp", pcmu(2), NAT_RTP, 0.04)
    run.run_until(1.0)
    assert [f.payload[0] for f in run.frames] == [0, 2]
    assert track.stats.packets == 3
    assert track.jitter.stats.lost == 0


def test_comfort_noise_latches() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", rtp(13, 1, 160, b"\x40"), NAT_RTP, 0.0)
    assert track.stats.latched == NAT_RTP
    run.run_until(1.0)
    assert run.frames == []


def test_undecodable_codec_still_counts() -> None:
    codecs = {**PCMU, 9: ("G722", 8000, 1, {})}
    track, run = track_run(audio_config(codecs, keepalive=False))
    for i in range(3):
        run.deliver("audio-rtp", rtp(9, i, 160 * i, b"\x55" * 160), NAT_RTP, i * 0.02)
    run.run_until(1.0)
    assert run.frames == []
    assert track.stats.packets == 3
    assert 9 in track.config.codecs  # the configuration is not rewritten


def video_stream(
    frames: int, *, lost: Iterable[int] = (), idrs: Iterable[int] = (), seq0: int = 500
) -> list[tuple[float, bytes]]:
    """One packet per frame at 25 fps: an IDR (SPS/PPS in-band, in a STAP-A) then P.

    ``idrs`` are the other frames that are IDRs, ``lost`` those that never arrive.
    """
    out = []
    skip = set(lost)
    keyframes = {0, *idrs}
    for i in range(frames):
        payload = stap_a(SPS, PPS, IDR) if i in keyframes else P_SLICE
        if i in skip:
            continue
        out.append((i * 0.04, rtp(96, seq0 + i, 90000 + 3600 * i, payload, marker=True)))
    return out


def test_h264_single_nal_idr_then_p_frames() -> None:
    sprop = f"{base64.b64encode(SPS).decode()},{base64.b64encode(PPS).decode()}"
    fmtp = {"packetization-mode": "1", "sprop-parameter-sets": sprop}
    config = video_config(keepalive=False, codecs={96: ("H264", 90000, 1, fmtp)})
    track, run = track_run(config)
    for i in range(10):
        payload = IDR if i == 0 else P_SLICE
        run.deliver("video-rtp", rtp(96, 7 + i, 3600 * i, payload, marker=True), NAT_RTP, i * 0.04)
    run.run_until(2.0)
    assert len(run.frames) == 10
    first, *rest = run.frames
    assert first.keyframe
    # As ffmpeg's h264_mp4toannexb writes it: the SDP's SPS and PPS inserted.
    assert first.payload == SC4 + SPS + SC4 + PPS + b"\x00\x00\x01" + IDR
    assert first.config == SC4 + SPS + SC4 + PPS
    assert [f.keyframe for f in rest] == [False] * 9
    assert [f.rtp_timestamp for f in run.frames] == [3600 * i for i in range(10)]
    assert keyframe_requests(run) == []
    assert track.stats.keyframe_requests == 0


def test_video_loss_sends_rr_sdes_pli_fir() -> None:
    track, run = track_run(video_config(keepalive=False))
    run.deliver_all("video-rtp", video_stream(20, lost=[5]), NAT_RTP)
    run.run_until(1.5)
    requests = keyframe_requests(run)
    assert len(requests) >= 1
    sent, packets = requests[0]
    assert (sent.socket, sent.address) == ("video-rtcp", REMOTE_RTCP)
    report, sdes, pli, fir = packets
    assert isinstance(report, ReceiverReport) and report.ssrc == track.ssrc
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].ssrc == track.ssrc
    assert isinstance(pli, PictureLossIndication)
    assert (pli.sender_ssrc, pli.media_ssrc) == (track.ssrc, REMOTE_SSRC)
    assert isinstance(fir, FullIntraRequest)
    assert fir.sender_ssrc == track.ssrc
    assert fir.entries == [(REMOTE_SSRC, 1)]
    # Sent when the frame after the gap played out, not before the loss.
    assert 0.24 <= sent.at <= 0.24 + 0.5
    assert track.take_keyframe_sent() is True
    assert track.take_keyframe_sent() is False
    assert len([f for f in run.frames if not f.keyframe]) == 4  # P frames before the loss


def test_keyframe_requests_are_rate_limited_and_retried_while_needed() -> None:
    track, run = track_run(video_config(keepalive=False, keyframe_interval=1.0))
    # A loss at frame 5, no IDR for 3 s, then one at frame 100 (4 s).
    run.deliver_all("video-rtp", video_stream(150, lost=[5], idrs=[100]), NAT_RTP)
    run.run_until(8.0)
    times = [sent.at for sent, _ in keyframe_requests(run)]
    assert len(times) >= 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), gaps
    assert times[-1] < 4.2  # the IDR ended the episode
    fir_numbers = [
        next(p for p in packets if isinstance(p, FullIntraRequest)).entries[0][1]
        for _, packets in keyframe_requests(run)
    ]
    assert fir_numbers == list(range(1, len(times) + 1))
    assert run.frames[-1].rtp_timestamp == 90000 + 3600 * 149
    assert track.stats.keyframe_requests == len(times)


def test_a_loss_repaired_before_the_rate_limit_asks_nothing_more() -> None:
    _, run = track_run(video_config(keepalive=False, keyframe_interval=1.0))
    # Loss at frame 3, IDR at 6; loss at 9, IDR at 12 before the interval is over.
    run.deliver_all("video-rtp", video_stream(40, lost=[3, 9], idrs=[6, 12]), NAT_RTP)
    run.run_until(3.0)
    assert len(keyframe_requests(run)) == 1


def test_a_second_loss_waits_for_the_rate_limit() -> None:
    _, run = track_run(video_config(keepalive=False, keyframe_interval=1.0))
    # Loss at frame 3; IDR at 6 repairs; loss at 9 (0.36 s) within the interval.
    run.deliver_all("video-rtp", video_stream(40, lost=[3, 9], idrs=[6]), NAT_RTP)
    run.run_until(3.0)
    times = [sent.at for sent, _ in keyframe_requests(run)]
    assert len(times) >= 2
    assert times[1] == pytest.approx(times[0] + 1.0)


def test_no_retry_once_packets_stop() -> None:
    _, run = track_run(video_config(keepalive=False, keyframe_interval=1.0))
    run.deliver_all("video-rtp", video_stream(10, lost=[5]), NAT_RTP)
    run.run_until(30.0)
    assert 1 <= len(keyframe_requests(run)) <= 2


def test_explicit_requests_within_the_interval_coalesce() -> None:
    track, run = track_run(video_config(keepalive=False, keyframe_interval=1.0))
    run.run_until(10.0)
    assert run.act(track.request_keyframe) is True
    run.run_until(10.5)
    assert run.act(track.request_keyframe) is False
    run.run_until(12.0)
    assert [sent.at for sent, _ in keyframe_requests(run)] == [10.0]
    assert run.act(track.request_keyframe) is True
    assert [sent.at for sent, _ in keyframe_requests(run)] == [10.0, 12.0]


def test_audio_never_requests_keyframes() -> None:
    track, run = track_run(audio_config(keepalive=False))
    assert track.request_keyframe(1.0) is False
    run.run_until(3.0)
    assert keyframe_requests(run) == []


# -- DTMF (RFC 4733) -------------------------------------------------------------------


def test_telephone_events_become_one_digit_per_key_press() -> None:
    track, run = track_run(audio_config(keepalive=False))
    five = dtmf_packets("5", 100, 8000)
    pound = dtmf_packets("#", 100 + len(five), 8000 + 4000)
    timed = [(i * 0.02, data) for i, data in enumerate(five + pound)]
    run.deliver_all("audio-rtp", timed, NAT_RTP)
    run.deliver("audio-rtp", five[-1], NAT_RTP, 1.0)  # a late repeat of an end packet
    run.run_until(2.0)
    assert run.digits == ["5", "#"]
    assert run.frames == []
    assert track.stats.packets == len(five) + len(pound) + 1


def test_telephone_events_do_not_count_as_audio_loss() -> None:
    # RFC 4733 events take sequence numbers of the audio stream.
    digit = dtmf_packets("5", 1010, 8000 + 1600)
    events = range(10, 10 + len(digit))

    def play(with_dtmf: bool) -> tuple[TrackReceiver, TrackRun]:
        track, run = track_run(audio_config(keepalive=False))
        for i in range(40 + len(digit)):
            data = digit[i - 10] if with_dtmf and i in events else pcmu(i)
            run.deliver("audio-rtp", data, NAT_RTP, i * 0.02)
        return track, run

    track, run = play(True)
    control, _ = play(False)
    # The events' timestamps are their start, stale by up to 100 ms: not jitter.
    assert track.jitter.target_delay == pytest.approx(control.jitter.target_delay, abs=0.002)
    run.run_until(8.0)
    assert run.digits == ["5"]
    assert len(run.frames) == 40
    assert track.jitter.stats.lost == 0
    _, report = receiver_reports(run, "audio-rtcp")[0]
    assert report.reports[0].packets_lost == 0


def test_a_new_source_restarts_dtmf_detection() -> None:
    _, run = track_run(audio_config(keepalive=False))
    first = dtmf_packets("7", 1, 8000)
    again = [
        rtp(TE_PT, 50 + i, 8000, RtpPacket.parse(data).payload, ssrc=0xBEEF)
        for i, data in enumerate(first)
    ]
    run.deliver_all("audio-rtp", [(i * 0.02, d) for i, d in enumerate(first + again)], NAT_RTP)
    assert run.digits == ["7", "7"]


def test_malformed_telephone_event_is_counted() -> None:
    track, run = track_run(audio_config(keepalive=False))
    run.deliver("audio-rtp", rtp(TE_PT, 1, 1, b"\x05"), NAT_RTP, 0.0)
    assert run.digits == []
    assert track.stats.bad_packets == 1


def test_goodbye_ends_the_track() -> None:
    track, run = track_run(audio_config())
    run.run_until(1.0)
    track.goodbye(1.0)
    track.goodbye(1.0)
    run.run_until(1.0)
    byes = [packets for _, packets in run.rtcp_sent() if isinstance(packets[-1], Goodbye)]
    assert len(byes) == 1
    report, sdes, bye = byes[0]
    assert isinstance(report, ReceiverReport) and isinstance(sdes, SourceDescription)
    assert isinstance(bye, Goodbye) and bye.sources == [track.ssrc]
    assert track.get_timer() is None
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 2.0)
    assert track.stats.packets == 0
