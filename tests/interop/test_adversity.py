"""Adversity: hostile traffic and vanishing peers against a real gateway with a real call.

Every test runs ``sipbridge serve`` (the ``gateway`` fixture: it must exit 0 with no
traceback logged), places a call that sipp answers with PCMU + H.264, and has ffmpeg
send a clip through a :class:`~tests.interop.adversity_tools.RewritingProxy`. Then it
injects one fault and checks that the process is alive and ``/health`` answers, that
the call is still ESTABLISHED (or, where the fault ends it, ends cleanly with a
reason), and that the stream's frame counters pass where they were before the fault
(media continues, nothing published is lost).

Cases covered elsewhere, not repeated here: an RTMP server that accepts then stalls
(``test_rtmp_stall.py``), loss/jitter/reordering (``test_impair.py``,
``test_media_ingest.py``), no media at all (``test_media_inactivity.py``), an RTMP
server restarted mid-call (``test_sip_as_rtmp_restart.py``), full disk at the
recorder level (``tests/recording/test_recorder.py``, ``test_crash.py``).

Latching (``rtp/track.py``, RFC 4961): the first valid RTP packet of a negotiated
payload type fixes the source address of a track for the rest of the call; RTCP
latches the same way on its own socket. Packets from any other address are counted
and dropped; only a re-INVITE that changes the remote media address re-latches.
A spoofer who gets in *before* the callee's first packet therefore wins the track;
after it, it cannot (case 3 tests the latter).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from tests.interop.adversity_tools import (
    AvCall,
    Clip,
    assert_alive,
    blast,
    fast_timers_gateway,
    hostile_datagrams,
    make_test_clip,
    place_av_call,
    snapshot,
    wait_frames_beyond,
    write_answer_scenario,
)
from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.media_tools import ClipSpec
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_calls_via_kamailio import seed_body
from tests.interop.test_recording import record_settings, wait_recording

pytestmark = pytest.mark.interop

#: 30 s of 320x240 H.264 (a keyframe every 2 s) + PCMU: longer than any test's call.
SPEC = ClipSpec(duration=30.0, width=320, height=240, pattern="testsrc")
#: Each burst: the issue's 10k datagrams.
BURST = 10_000
#: The A/V offset must stay within the clock's ``max_av_skew_correction`` (1 s).
MAX_AV_OFFSET_MS = 1000.0
#: A lying SR claims the sender's wallclock jumped this far (3 hours).
SR_LIE = 3 * 3600


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return make_test_clip(tmp_path_factory.mktemp("clip"), SPEC)


def publishing(call: AvCall, timeout: float = 10.0) -> dict[str, int]:
    """Frame counters once both tracks publish (the call's media flows)."""
    deadline = time.monotonic() + timeout
    while True:
        stream = snapshot(call.gateway, call.stream_name)
        frames: dict[str, int] = stream["frames"]
        if len(frames) == 2 and all(count >= 10 for count in frames.values()):
            return frames
        assert time.monotonic() < deadline, f"not publishing: {stream}"
        time.sleep(0.1)


def assert_survived(call: AvCall, before: dict[str, int], more: int = 25) -> dict[str, Any]:
    """Process alive, call ESTABLISHED, frames past ``before``."""
    assert_alive(call.gateway)
    status = call.status()
    assert status["status"] == "ESTABLISHED", status
    return wait_frames_beyond(call.gateway, call.stream_name, before, more=more)


def hang_up_cleanly(call: AvCall) -> None:
    """A real SIP transaction still works: BYE answered, FINISH."""
    assert call.gateway.post("/call/terminate", {"callId": call.call_id}).status_code == 200
    ended, _ = call.gateway.wait_status(call.call_id, {"FINISH", "FAILED"})
    assert ended["status"] == "FINISH", ended
    assert call.callee.wait(10) == 0, call.callee.errors()
    assert call.callee.received_requests()[-1] == "BYE"


# --------------------------------------------------------------------------- 1, 2


def test_garbage_to_the_sip_port(
    gateway: GatewayProcess, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-sip")
    before = publishing(call)
    sent = blast(gateway.sip_port, hostile_datagrams(BURST, kind="sip", seed=1))
    sent += blast(
        gateway.sip_port,
        hostile_datagrams(1000, kind="sip", seed=2),
        source=("127.0.0.2", 0),
    )
    assert sent == BURST + 1000
    assert_survived(call, before)
    hang_up_cleanly(call)
    assert_alive(gateway)


def test_garbage_to_the_rtp_and_rtcp_ports(
    gateway: GatewayProcess, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-rtp")
    before = publishing(call)
    for kind, (rtp, rtcp) in call.gateway_ports.items():
        pt = 96 if kind == "video" else 0
        for index, port in enumerate((rtp, rtcp)):
            # From strangers (another port, another loopback address) ...
            datagrams = hostile_datagrams(BURST // 2, kind="rtp", seed=index, payload_type=pt)
            assert blast(port, datagrams) == BURST // 2
            datagrams = hostile_datagrams(BURST // 2, kind="rtp", seed=9, payload_type=pt)
            assert blast(port, datagrams, source=("127.0.0.2", 0)) == BURST // 2
            # ... and from the latched source itself, where latching filters nothing.
            datagrams = hostile_datagrams(2000, kind="rtp", seed=7 + index, payload_type=pt)
            assert call.proxy.inject(kind, bool(index), datagrams) > 0
    assert_survived(call, before, more=50)
    hang_up_cleanly(call)


# --------------------------------------------------------------------------- 3


def _spoofed_rtp(count: int, payload_type: int, seed: int) -> Iterator[bytes]:
    """Well-formed RTP of the call's payload type from a source of our own."""
    ssrc = 0x5B00F000 + seed
    for seq in range(count):
        header = struct.pack("!BBHII", 0x80, payload_type, seq, seq * 3600, ssrc)
        if payload_type == 96:
            yield header + bytes([0x65, 0x88]) + bytes(200)  # an IDR slice, all zeros
        else:
            yield header + b"\x7f" * 160


def test_spoofed_source_does_not_hijack_the_stream(
    gateway: GatewayProcess, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-spoof")
    before = publishing(call)
    stream = snapshot(gateway, call.stream_name)
    received = {t["kind"]: t["packetsReceived"] for t in stream["tracks"]}
    forwarded = {kind: call.proxy.forwarded(kind) for kind in ("audio", "video")}
    spoofed = 0
    for kind, (rtp, _) in call.gateway_ports.items():
        pt = 96 if kind == "video" else 0
        for seed, source in enumerate((("127.0.0.2", 0), ("127.0.0.1", 0))):
            spoofed += blast(rtp, _spoofed_rtp(2000, pt, seed), source=source, pace_every=20)
    after = assert_survived(call, before, more=50)
    # The spoofed packets were not counted as the stream's: what the gateway received
    # since is what the proxy (the latched source) forwarded since, not 8000 more.
    for kind in ("audio", "video"):
        [track] = [t for t in after["tracks"] if t["kind"] == kind]
        got = track["packetsReceived"] - received[kind]
        legit = call.proxy.forwarded(kind) - forwarded[kind]
        assert got <= legit + 5, (kind, got, legit, spoofed)
    latched = [line for line in gateway.log_text().splitlines() if "RTP latched to" in line]
    assert len(latched) == 2, latched  # audio and video, once each, to the proxy
    proxy_ports = {str(port) for rtp, _ in call.proxy.ports.values() for port in (rtp,)}
    assert all(line.rsplit(":", 1)[1].strip() in proxy_ports for line in latched), latched
    hang_up_cleanly(call)


# --------------------------------------------------------------------------- 4


def _jump(kind: str, rtcp: bool, data: bytes) -> bytes | None:
    """Video: new SSRC and sequence +30000; audio: sequence +12345 and timestamp +10^6."""
    if rtcp or len(data) < 12:
        return data
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    if kind == "video":
        seq, ssrc = (seq + 30000) & 0xFFFF, ssrc ^ 0xDEADBEEF
    else:
        seq, ts = (seq + 12345) & 0xFFFF, (ts + 1_000_000) & 0xFFFFFFFF
    return data[:2] + struct.pack("!HII", seq, ts, ssrc) + data[12:]


def test_ssrc_and_sequence_jumps(
    gateway: GatewayProcess, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-jump", rewrite=_jump)
    before = publishing(call)
    call.proxy.arm()
    after = assert_survived(call, before, more=75)  # 3 s of video after the jump
    offset = after["avOffsetMs"]
    assert offset is None or abs(offset) <= MAX_AV_OFFSET_MS, after
    hang_up_cleanly(call)


# --------------------------------------------------------------------------- 5


def _lie(kind: str, rtcp: bool, data: bytes) -> bytes | None:
    """The video sender's SRs (PT 200) claim a wallclock SR_LIE seconds later."""
    if kind != "video" or not rtcp or len(data) < 28 or data[1] != 200:
        return data
    (ntp,) = struct.unpack_from("!I", data, 8)
    return data[:8] + struct.pack("!I", (ntp + SR_LIE) & 0xFFFFFFFF) + data[12:]


def _lying_srs(genuine: bytes, count: int, spacing: float) -> list[bytes]:
    """SRs that agree with each other and with :func:`_lie`: a sender clock stepped by
    SR_LIE seconds (three such SRs make ``rtp/sync.py`` adopt the new mapping)."""
    ssrc, ntp, frac, rtp_ts, packets, octets = struct.unpack_from("!IIIIII", genuine, 4)
    out = []
    for k in range(1, count + 1):
        when = ntp + frac / 2**32 + SR_LIE + k * spacing
        body = struct.pack(
            "!IIIIII",
            ssrc,
            int(when) & 0xFFFFFFFF,
            int((when % 1) * 2**32),
            (rtp_ts + round(k * spacing * 90000)) & 0xFFFFFFFF,
            packets,
            octets,
        )
        out.append(struct.pack("!BBH", 0x80, 200, 6) + body)
    return out


def test_lying_sender_reports(
    gateway: GatewayProcess, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-sr", rewrite=_lie)
    before = publishing(call)
    deadline = time.monotonic() + 10
    while (genuine := call.proxy.last("video", rtcp=True)) is None or genuine[1] != 200:
        assert time.monotonic() < deadline, "ffmpeg sent no video SR"
        time.sleep(0.1)
    call.proxy.arm()
    assert call.proxy.inject("video", True, _lying_srs(genuine, 5, 0.05)) == 5
    offsets: list[float] = []
    end = time.monotonic() + 6.0  # ffmpeg's own SRs (every 5 s), lying too, come meanwhile
    while time.monotonic() < end:
        stream = snapshot(gateway, call.stream_name)
        if stream["avOffsetMs"] is not None:
            offsets.append(stream["avOffsetMs"])
        time.sleep(0.2)
    assert_survived(call, before, more=25)
    print("av offsets (ms) after the lie:", offsets)
    assert offsets and all(abs(o) <= MAX_AV_OFFSET_MS for o in offsets), offsets
    hang_up_cleanly(call)


# --------------------------------------------------------------------------- 6

#: The SIP T1 of the gateways of cases 6 and 7 (s): Timer F is 64 * T1 = 12.8 s.
FAST_T1 = 0.2
#: Timer F and a margin (s).
TIMER_F = 64 * FAST_T1 + 3.0


@pytest.fixture
def fast_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with fast_timers_gateway(tmp_path_factory.mktemp("gateway"), t1=FAST_T1) as process:
        yield process


def test_callee_that_stops_answering(
    fast_gateway: GatewayProcess, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    """sipp is frozen (SIGSTOP) mid-call: an INFO then a BYE get no answer at all."""
    gateway = fast_gateway
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-mute")
    before = publishing(call)
    pid = call.callee.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        body = {"callId": call.call_id, "dtmf": "1", "type": "INFO"}
        response = gateway.post("/call/send_dtmf", body)
        assert response.status_code == 200, response.text
        # The INFO transaction times out (Timer F): the call stays up, media flows.
        deadline = time.monotonic() + TIMER_F
        while time.monotonic() < deadline:
            assert call.status()["status"] == "ESTABLISHED"
            time.sleep(0.5)
        before = assert_survived(call, before)["frames"]
        # The BYE times out too: the call ends anyway, with its reason, and the
        # process stays up.
        assert gateway.post("/call/terminate", {"callId": call.call_id}).status_code == 200
        ended, _ = gateway.wait_status(call.call_id, {"FINISH", "FAILED"}, timeout=TIMER_F)
        print("call ended:", ended["status"], ended["sipStatus"], ended["info"])
        assert ended["info"], ended
        assert_alive(gateway)
        final = snapshot(gateway, call.stream_name)
        assert all(final["frames"][k] >= n for k, n in before.items()), (before, final)
    finally:
        os.kill(pid, signal.SIGCONT)


# --------------------------------------------------------------------------- 7


def test_sip_server_disappears_mid_call(
    fast_gateway: GatewayProcess, kamailio: Kamailio, peers: PeerSet, tmp_path: Path, clip: Clip
) -> None:
    gateway = fast_gateway
    bob = peers.registered_callee(
        kamailio,
        user="bob",
        scenario=write_answer_scenario(tmp_path),
        timeout=SPEC.duration + 60,
        extra_args=["-set", "sprop", clip.sprop],
    )
    body = seed_body("adv-kam", kamailio)
    call = place_av_call(gateway, peers, tmp_path, clip, "adv-kam", callee=bob.callee, body=body)
    before = publishing(call)
    kamailio.stop()  # by PID (its process group): the proxy and registrar are gone
    assert kamailio.process.poll() is not None
    # No SIP needed for the established call's media: 3 s more of video.
    after = assert_survived(call, before, more=75)
    # The BYE goes to the record-routed proxy, which is gone: it fails, the call ends.
    assert gateway.post("/call/terminate", {"callId": call.call_id}).status_code == 200
    ended, _ = gateway.wait_status(call.call_id, {"FINISH", "FAILED"}, timeout=TIMER_F)
    print("call ended:", ended["status"], ended["sipStatus"], ended["info"])
    assert ended["info"], ended
    assert_alive(gateway)
    final = snapshot(gateway, call.stream_name)
    assert all(final["frames"][k] >= n for k, n in after["frames"].items()), (after, final)


# --------------------------------------------------------------------------- 8

#: The recordings' filesystem: above the recorder's 1 MiB free-space floor at start;
#: the test then fills it with a filler file while the recording runs.
DISK_SIZE = "2m"


@contextlib.contextmanager
def tiny_filesystem(directory: Path) -> Iterator[Path]:
    directory.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (root needed): {done.stderr}"
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem refuses (ENOSPC)."""
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def decodable_video_frames(path: Path) -> int:
    """Video frames decoded from the start of ``path`` until its first damage."""
    frames = 0
    with contextlib.suppress(av.FFmpegError), av.open(str(path)) as container:
        for packet in container.demux(video=0):
            for _ in packet.decode():
                frames += 1
    return frames


def test_full_disk_for_a_recording(
    peers: PeerSet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, clip: Clip
) -> None:
    workdir = tmp_path_factory.mktemp("gateway")
    with (
        tiny_filesystem(workdir / "recordings") as disk,
        running_gateway(workdir, extra_settings=record_settings(disk, auto=True)) as gateway,
    ):
        call = place_av_call(gateway, peers, tmp_path, clip, "adv-disk")
        before = publishing(call)
        wait_recording(gateway, call.stream_name, {"RECORDING"}, timeout=10)
        time.sleep(2.0)  # two seconds of media in the file, then the disk fills up
        fill(disk / "filler")
        recording = wait_recording(gateway, call.stream_name, {"FAILED", "STOPPED"}, timeout=30)
        assert recording["status"] == "FAILED", recording
        assert "No space left on device" in (recording.get("info") or ""), recording
        assert_survived(call, before, more=50)
        files = [p for p in disk.iterdir() if p.suffix == ".mkv"]
        assert files, list(disk.iterdir())
        # What was written before the disk filled is still there and decodable.
        frames = sum(decodable_video_frames(p) for p in files)
        assert frames >= SPEC.fps, (frames, [(p.name, p.stat().st_size) for p in files])
        hang_up_cleanly(call)
