"""sipp as a real callee: two concurrent calls placed over REST, each receiving H264 + PCMU.

The load and soak benchmarks (issue 8) use one sipp in server mode as the
callee side of N calls; this test runs the same setup small: the real
``sipbridge serve``, sipp 3.6.1 with ``bench/scenarios/uas_pcap_media.xml``
replaying a 12 s pcap from ``bench/sipp_media.py`` (libx264 640x360 30 fps
H264 in RFC 6184 mode 1, PCMU 20 ms, RTCP SRs on both tracks), and two calls
started with ``/call/startup``.

Checked: the gateway's offer has H264 payload type 96 with
packetization-mode=1 (what the pcap carries) and its video port is its audio
port + 2 (sipp sends the pcap's video there, see ``bench/sipp_media.py``);
both streams publish H264 640x360 at about 30 fps and PCMU at 50 frames/s
over a window of about 6 s, lose no packet on loopback, and report an A/V
offset from the SRs that is small (the pcap's tracks are aligned exactly, so
the correction is only the packet spacing of a video frame and jitter);
after ``/call/terminate`` sipp has answered both BYEs and exits 0.

Tolerances: +-20 % on rates (a ``/stream/find`` sample lands up to a REST
round trip late and the jitter buffer releases in bursts); A/V offset under
50 ms (a clock-rate mix-up in the SR mapping would make it seconds).
Figures go to ``artifacts/<test>/figures.json`` and stdout.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rtp.rtcp import SenderReport, parse_compound, unix_from_ntp
from tests.conftest import ARTIFACTS_ROOT
from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import PeerSet, Sipp, require_binary
from tests.interop.test_calls import startup_body

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from sipp_media import MediaPcapInfo, cached_media_pcap, write_scenario

pytestmark = pytest.mark.interop

CALLS = ("sipp-media-1", "sipp-media-2")
PCAP_SECONDS = 12.0
#: After ESTABLISHED: the window's first and last ``/stream/find`` samples (s).
WINDOW = (2.5, 8.5)
RATE_TOLERANCE = 0.2
MAX_AV_OFFSET_MS = 50.0


def sample(gateway: GatewayProcess, name: str) -> tuple[float, dict[str, Any]]:
    """One ``/stream/find`` answer for ``name`` and when it came (``time.monotonic()``)."""
    response = gateway.post("/stream/find", {"name": name})
    at = time.monotonic()
    assert response.status_code == 200, response.text
    streams: list[dict[str, Any]] = response.json()
    assert len(streams) == 1, streams
    return at, streams[0]


def track(stream: dict[str, Any], kind: str) -> dict[str, Any]:
    tracks: list[dict[str, Any]] = [t for t in stream["tracks"] if t["kind"] == kind]
    assert len(tracks) == 1, stream
    return tracks[0]


def offer_ports(sdp: str) -> dict[str, int]:
    """``{"audio": port, "video": port}`` from an SDP's m-lines."""
    return {kind: int(port) for kind, port in re.findall(r"^m=(\w+) (\d+) ", sdp, re.MULTILINE)}


def assert_near(value: float, nominal: float, what: str) -> None:
    low, high = nominal * (1 - RATE_TOLERANCE), nominal * (1 + RATE_TOLERANCE)
    assert low <= value <= high, f"{what}: {value:.2f}, expected {nominal:g} +-20%"


def wait_until_at(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def read_pcap(path: Path) -> tuple[int, list[tuple[float, int, bytes]]]:
    """Link type and (capture time, UDP destination port, UDP payload) of a classic pcap."""
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4, hex(magic)
    packets: list[tuple[float, int, bytes]] = []
    pos = 24
    while pos < len(data):
        seconds, micros, caplen, length = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        assert caplen == length == len(frame)  # sipp refuses truncated packets
        assert frame[12:14] == b"\x08\x00" and frame[14] == 0x45 and frame[23] == 17
        _, dport, udp_length, _ = struct.unpack_from("!HHHH", frame, 34)
        assert udp_length == len(frame) - 34 <= 1500  # sipp's PCAP_MAXPACKET
        packets.append((seconds + micros / 1e6, dport, frame[42:]))
    return link, packets


def test_media_pcap_content() -> None:
    """The pcap itself: ports, RFC 6184 sizes and markers, continuous numbering, one
    NTP wallclock behind both tracks' SRs, and the cache reusing the file."""
    info = cached_media_pcap(ARTIFACTS_ROOT / "bench", seconds=PCAP_SECONDS)
    mtime = info.path.stat().st_mtime_ns
    assert cached_media_pcap(ARTIFACTS_ROOT / "bench", seconds=PCAP_SECONDS) == info
    assert info.path.stat().st_mtime_ns == mtime
    link, packets = read_pcap(info.path)
    assert link == 1  # Ethernet; sipp takes DLT_EN10MB or DLT_LINUX_SLL only
    times = [t for t, _, _ in packets]
    assert times == sorted(times)
    base = info.base_port
    by_port: dict[int, list[tuple[float, bytes]]] = {}
    for t, port, payload in packets:
        by_port.setdefault(port, []).append((t, payload))
    assert sorted(by_port) == [base, base + 1, base + 2, base + 3]
    assert len(by_port[base]) == info.audio_packets == info.audio_frames
    assert len(by_port[base + 2]) == info.video_packets
    assert info.bytes == info.path.stat().st_size
    assert 100_000 < info.bytes_per_second < 250_000, info.bytes_per_second  # ~1 Mbit/s video
    # (capture time - RTP time) per track: constant when the media is paced by its clock.
    wallclock_minus_rtp: dict[int, float] = {}
    for port, rate, kind in ((base, 8000, "audio"), (base + 2, 90000, "video")):
        stream = by_port[port]
        pts = {payload[1] & 0x7F for _, payload in stream}
        assert pts == {info.audio_pt if kind == "audio" else info.video_pt}
        seqs = [struct.unpack_from("!H", payload, 2)[0] for _, payload in stream]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), kind
        assert len({payload[8:12] for _, payload in stream}) == 1  # one SSRC
        first_ts = struct.unpack_from("!I", stream[0][1], 4)[0]
        for t, payload in stream:
            elapsed = ((struct.unpack_from("!I", payload, 4)[0] - first_ts) & 0xFFFFFFFF) / rate
            assert abs(t - stream[0][0] - elapsed) < 0.012, (kind, t, elapsed)
        if kind == "video":
            assert max(len(payload) - 12 for _, payload in stream) <= 1200
            markers = sum(payload[1] >> 7 for _, payload in stream)
            assert markers == info.video_frames
            nal_types = {payload[12] & 0x1F for _, payload in stream}
            assert nal_types <= {1, 5, 7, 8, 24, 28}, nal_types  # mode 1: STAP-A, FU-A
        # The SRs: NTP - RTP time is the same for every SR and equals capture - RTP time.
        reports = [
            report
            for _, payload in by_port[port + 1]
            for report in parse_compound(payload)
            if isinstance(report, SenderReport)
        ]
        assert len(reports) == len(by_port[port + 1]) == 3
        offsets = [
            unix_from_ntp(r.ntp_timestamp) - ((r.rtp_timestamp - first_ts) & 0xFFFFFFFF) / rate
            for r in reports
        ]
        assert max(offsets) - min(offsets) < 1e-4, offsets
        wallclock_minus_rtp[port] = offsets[0]
        assert abs(offsets[0] - stream[0][0]) < 1e-4, (offsets[0], stream[0][0])
    # Both tracks' first frames were captured at the same wallclock instant: aligned.
    assert abs(wallclock_minus_rtp[base] - wallclock_minus_rtp[base + 2]) < 1e-4


def test_sipp_callee_replays_h264_and_pcmu_for_two_calls(
    gateway: GatewayProcess, peers: PeerSet, tmp_path: Path
) -> None:
    require_binary("sipp")
    info: MediaPcapInfo = cached_media_pcap(ARTIFACTS_ROOT / "bench", seconds=PCAP_SECONDS)
    assert (info.video_pt, info.audio_pt) == (96, 0), info
    assert (info.audio_frames, info.video_frames) == (600, 360), info
    assert info.video_keyframes == 6, info  # an IDR every 2 s
    assert info.audio_rtcp_packets == info.video_rtcp_packets == 3, info
    scenario = write_scenario(tmp_path / "uas_pcap_media.xml", info)
    sipp: Sipp = peers.sipp(scenario, service="bob", calls=len(CALLS), timeout=60.0)

    for call_id in CALLS:
        response = gateway.post("/call/startup", startup_body(call_id, sipp))
        assert response.status_code == 200, response.text
    established: dict[str, float] = {}
    for call_id in CALLS:
        call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
        assert call["status"] == "ESTABLISHED", (seen, call, sipp.diagnostics())
        established[call_id] = time.monotonic()
    start = min(established.values())

    # The offers: H264 96 in packetization-mode 1 first, video on the audio port + 2.
    invites = [e for e in sipp.trace() if e.direction == "received" and e.method == "INVITE"]
    assert len(invites) == len(CALLS), sipp.diagnostics()
    for invite in invites:
        assert re.search(r"^m=video \d+ RTP/AVP 96\b", invite.body, re.MULTILINE), invite.body
        assert re.search(r"^a=fmtp:96 .*packetization-mode=1", invite.body, re.MULTILINE)
        ports = offer_ports(invite.body)
        assert ports["video"] == ports["audio"] + 2, (
            f"sipp sends the pcap's video to the audio port + 2; the offer has {ports}"
        )
    answers = [e for e in sipp.trace() if e.direction == "sent" and e.status_code == 200]
    assert all("m=video" in a.body and "RTP/AVP 96" in a.body for a in answers[:2]), answers

    # Media: two samples per stream, WINDOW seconds after the first ESTABLISHED.
    wait_until_at(start + WINDOW[0])
    first = {call_id: sample(gateway, f"stream-{call_id}") for call_id in CALLS}
    wait_until_at(start + WINDOW[1])
    last = {call_id: sample(gateway, f"stream-{call_id}") for call_id in CALLS}
    figures: dict[str, Any] = {"pcap": info.to_json(), "calls": {}}
    for call_id in CALLS:
        (t0, s0), (t1, s1) = first[call_id], last[call_id]
        seconds = t1 - t0
        video, audio = track(s1, "video"), track(s1, "audio")
        fps = (video["frames"] - track(s0, "video")["frames"]) / seconds
        audio_fps = (audio["frames"] - track(s0, "audio")["frames"]) / seconds
        figures["calls"][call_id] = {
            "window_seconds": round(seconds, 2),
            "video_fps": round(fps, 2),
            "audio_frames_per_s": round(audio_fps, 2),
            "video_keyframes": video["keyframes"],
            "avOffsetMs": s1["avOffsetMs"],
            "tracks": s1["tracks"],
        }
        assert s1["status"] == "PUBLISHING", s1
        assert (video["codec"], video["width"], video["height"]) == ("H264", 640, 360), video
        assert (audio["codec"], audio["clockRate"]) == ("PCMU", 8000), audio
        assert_near(fps, 30.0, f"{call_id} video frames/s")
        assert_near(audio_fps, 50.0, f"{call_id} audio frames/s")
        assert video["keyframes"] >= 3, video  # IDRs at 0, 2, 4, 6 s of the replay
        assert video["packetsLost"] == 0 and audio["packetsLost"] == 0, s1["tracks"]
        assert video["packetsReceived"] > 0 and audio["packetsReceived"] > 0, s1["tracks"]
        offset = s1["avOffsetMs"]
        assert offset is not None, f"{call_id}: no SR-based A/V offset: {s1}"
        assert abs(offset) < MAX_AV_OFFSET_MS, f"{call_id}: A/V offset {offset} ms"
    text = json.dumps(figures, indent=2)
    (peers.log_dir / "figures.json").write_text(text + "\n")
    print(text)

    for call_id in CALLS:
        assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    for call_id in CALLS:
        call, seen = gateway.wait_status(call_id, {"FINISH", "FAILED"})
        assert call["status"] == "FINISH", seen
    assert sipp.wait(15) == 0, sipp.diagnostics()
    received = [e.method for e in sipp.trace() if e.direction == "received" and not e.is_response]
    assert received.count("BYE") == len(CALLS), sipp.diagnostics()
    bye_answers = [
        e for e in sipp.trace() if e.direction == "sent" and e.method == "BYE" and e.is_response
    ]
    assert [e.status_code for e in bye_answers] == [200] * len(CALLS), sipp.diagnostics()
