"""The benchmark's RTP sender: many realistic calls replayed from a real H264 clip.

Run in its own process (see ``bench/ingest.py``) so it does not share the
receiver's core. It replays, for each call, a libx264 elementary stream made
by ffmpeg (1 Mbit/s, 30 fps, a keyframe every 2 s) packetized as RFC 6184
mode 1 does it (STAP-A for SPS+PPS, single NAL units, FU-A fragments of at
most ``MTU`` payload bytes, marker on the last packet of an access unit), and
PCMU in 20 ms packets (RFC 3551 §4.5.14), looping with ever increasing
sequence numbers and timestamps, plus an RTCP SR per track every 5 s
(RFC 3550 §6.4.1) so the receiver's A/V clock works as in a real call.

Every call runs at its real rate (30 frames/s, 50 audio packets/s); a load
is a number of calls. Sending is paced by a 1 ms timing wheel, one connected
socket per RTP destination (the kernel caches the route), and whatever the
receiver sends back (RTCP RR, PLI/FIR, NAT keepalives) is drained so it never
shows up as a receive-buffer drop in ``/proc/net/snmp``.
"""

from __future__ import annotations

import errno
import math
import os
import random
import select
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rtp.rtcp import SenderReport, ntp_from_unix

__all__ = [
    "MTU",
    "Clip",
    "FloodPlan",
    "access_units",
    "build_clip",
    "ensure_h264_clip",
    "packetize_access_unit",
    "run_sender",
    "split_annexb",
]

#: Largest RTP payload: 1200 bytes keeps every datagram under a 1280-byte path MTU.
MTU = 1200
FPS = 30
VIDEO_RATE = 90000
AUDIO_RATE = 8000
AUDIO_PTIME = 0.02
SR_INTERVAL = 5.0
TICK = 0.001
_HEADER = struct.Struct("!BBHII")
_STAP_A = 24
_FU_A = 28


def ensure_h264_clip(path: Path, *, seconds: int = 10, timeout: float = 60.0) -> Path:
    """A libx264 Annex-B elementary stream at ``path``, made with ffmpeg when missing.

    640x360, 30 fps, constrained baseline (what SIP phones send), 1 Mbit/s,
    a keyframe every 60 frames with SPS/PPS repeated before each.
    """
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.h264")
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
        "-t", str(seconds), "-an",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-threads", "1",
        "-profile:v", "baseline", "-b:v", "1M", "-maxrate", "1M", "-bufsize", "500k",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
        "-x264-params", "repeat-headers=1",
        "-f", "h264", str(partial),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=timeout)
    partial.replace(path)
    return path


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (ITU-T H.264 Annex B), start codes removed."""
    starts: list[tuple[int, int]] = []  # (start code position, NAL position)
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        code = pos - 1 if pos > 0 and data[pos - 1] == 0 else pos
        starts.append((code, pos + 3))
        pos = data.find(b"\x00\x00\x01", pos + 3)
    nals = []
    for index, (_, begin) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(data)
        nal = data[begin:end].rstrip(b"\x00") if index + 1 == len(starts) else data[begin:end]
        if nal:
            nals.append(nal)
    return nals


def access_units(nals: list[bytes]) -> list[list[bytes]]:
    """Group NAL units into access units (H.264 §7.4.1.2.3, simplified for one stream).

    A new access unit starts at an AUD/SEI/SPS/PPS after a slice, or at a slice
    whose ``first_mb_in_slice`` is 0 (its ue(v) code is the single bit ``1``).
    """
    units: list[list[bytes]] = []
    current: list[bytes] = []
    has_slice = False
    for nal in nals:
        kind = nal[0] & 0x1F
        is_slice = kind in (1, 5)
        first_slice = is_slice and len(nal) > 1 and nal[1] & 0x80
        if current and has_slice and (kind in (6, 7, 8, 9) or first_slice):
            units.append(current)
            current, has_slice = [], False
        current.append(nal)
        has_slice = has_slice or is_slice
    if current:
        units.append(current)
    return units


def packetize_access_unit(nals: list[bytes], mtu: int = MTU) -> list[bytes]:
    """RTP payloads of one access unit, RFC 6184 non-interleaved mode (§5.6-§5.8).

    Consecutive NAL units that fit together go into one STAP-A; a NAL unit too
    large for one packet is cut into FU-A fragments.
    """
    payloads: list[bytes] = []
    group: list[bytes] = []

    def flush_group() -> None:
        if len(group) == 1:
            payloads.append(group[0])
        elif group:
            nri = max(nal[0] & 0x60 for nal in group)
            body = b"".join(struct.pack("!H", len(nal)) + nal for nal in group)
            payloads.append(bytes([nri | _STAP_A]) + body)
        group.clear()

    for nal in nals:
        if len(nal) > mtu:
            flush_group()
            indicator = (nal[0] & 0xE0) | _FU_A
            kind = nal[0] & 0x1F
            body = nal[1:]
            step = mtu - 2
            for offset in range(0, len(body), step):
                start = 0x80 if offset == 0 else 0
                end = 0x40 if offset + step >= len(body) else 0
                fu_header = start | end | kind
                payloads.append(bytes([indicator, fu_header]) + body[offset : offset + step])
            continue
        stap_size = 1 + sum(2 + len(n) for n in group) + 2 + len(nal)
        if group and stap_size > mtu:
            flush_group()
        group.append(nal)
    flush_group()
    return payloads


def _ulaw(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample (ITU-T G.711, the usual segment search)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


@dataclass(frozen=True)
class Clip:
    """One call's media: video access units as RTP payloads, and 1 s of PCMU payloads."""

    frames: list[list[bytes]]
    keyframes: list[bool]
    audio: list[bytes]

    @property
    def video_packets_per_second(self) -> float:
        return sum(len(f) for f in self.frames) * FPS / len(self.frames)

    @property
    def packets_per_second(self) -> float:
        """RTP packets/s of one call (video + audio; RTCP SRs add ~0.4)."""
        return self.video_packets_per_second + 1 / AUDIO_PTIME

    @property
    def video_bitrate(self) -> float:
        return sum(len(p) for f in self.frames for p in f) * 8 * FPS / len(self.frames)

    @property
    def mean_video_payload(self) -> float:
        sizes = [len(p) for f in self.frames for p in f]
        return sum(sizes) / len(sizes)


def build_clip(path: Path, *, mtu: int = MTU) -> Clip:
    """Packetize the elementary stream at ``path``; PCMU is a 440 Hz tone."""
    units = access_units(split_annexb(path.read_bytes()))
    frames = [packetize_access_unit(unit, mtu) for unit in units]
    keyframes = [any(nal[0] & 0x1F == 5 for nal in unit) for unit in units]
    samples = [round(8000 * math.sin(2 * math.pi * 440 * n / AUDIO_RATE)) for n in range(8000)]
    tone = bytes(_ulaw(s) for s in samples)
    audio = [tone[i : i + 160] for i in range(0, len(tone), 160)]
    return Clip(frames=frames, keyframes=keyframes, audio=audio)


@dataclass(frozen=True)
class FloodPlan:
    """What one sender run does; times are ``time.monotonic()`` values."""

    clip_path: str
    #: Per call: (audio RTP, audio RTCP, video RTP, video RTCP) ports on 127.0.0.1.
    targets: list[tuple[int, int, int, int]]
    audio_pt: int
    video_pt: int
    control_port: int
    """Our own RTP/RTCP ports as the receivers' SDP names them (``control_port`` and +1)."""
    cpu: int | None = None
    seed: int = 1


class _Call:
    __slots__ = (
        "audio_index",
        "audio_octets",
        "audio_packets",
        "audio_rtcp",
        "audio_seq",
        "audio_sock",
        "audio_ssrc",
        "audio_ts",
        "frame_index",
        "video_octets",
        "video_packets",
        "video_rtcp",
        "video_seq",
        "video_sock",
        "video_ssrc",
        "video_ts",
    )

    def __init__(self, target: tuple[int, int, int, int], rng: random.Random, frames: int) -> None:
        audio_rtp, self.audio_rtcp, video_rtp, self.video_rtcp = target
        self.audio_sock = _connected(audio_rtp)
        self.video_sock = _connected(video_rtp)
        self.audio_ssrc, self.video_ssrc = rng.getrandbits(32), rng.getrandbits(32)
        self.audio_seq, self.video_seq = rng.getrandbits(16), rng.getrandbits(16)
        self.audio_ts, self.video_ts = rng.getrandbits(32), rng.getrandbits(32)
        self.frame_index = rng.randrange(frames)  # keyframes of different calls do not align
        self.audio_index = 0
        self.audio_packets = self.video_packets = 0
        self.audio_octets = self.video_octets = 0


def _connected(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def run_sender(plan: FloodPlan, conn: Connection) -> None:
    """Process entry point: prepare ``plan``, say ``{"ready": True}`` on ``conn``, take
    ``(start, window_start, window_end)`` (``time.monotonic()`` values) from it, send,
    and report counters on ``conn`` as a dict."""
    try:
        conn.send(_send(plan, conn))
    except Exception as exc:  # reported to the driver, which fails the step
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _send(plan: FloodPlan, conn: Connection) -> dict[str, Any]:
    if plan.cpu is not None:
        os.sched_setaffinity(0, {plan.cpu})
    clip = build_clip(Path(plan.clip_path))
    video_b1 = [
        [(0x80 | plan.video_pt) if i == len(f) - 1 else plan.video_pt for i in range(len(f))]
        for f in clip.frames
    ]
    frames = [list(zip(b1, f, strict=True)) for b1, f in zip(video_b1, clip.frames, strict=True)]
    audio = clip.audio
    rng = random.Random(plan.seed)
    control = _bound(plan.control_port)
    sink = _bound(plan.control_port + 1)
    calls = [_Call(t, rng, len(frames)) for t in plan.targets]
    poller = select.epoll()
    drainable = {control.fileno(): control, sink.fileno(): sink}
    for call in calls:
        drainable[call.audio_sock.fileno()] = call.audio_sock
        drainable[call.video_sock.fileno()] = call.video_sock
    for fd in drainable:
        poller.register(fd, select.EPOLLIN)

    # The timing wheel: slot (ms since start) -> event codes, call index * 4 + kind.
    # Kinds: 0 video frame, 1 audio packet, 2 video SR, 3 audio SR.
    wheel: dict[int, list[int]] = {}
    frame_ms, audio_ms, sr_ms = 1000 / FPS, AUDIO_PTIME * 1000, SR_INTERVAL * 1000
    # Per event the next due time in ms (float, so 33.33 ms frames do not drift).
    due: list[float] = []
    for index in range(len(calls)):
        phases = (
            rng.uniform(0, frame_ms),
            rng.uniform(0, audio_ms),
            rng.uniform(0, sr_ms),
            rng.uniform(0, sr_ms),
        )
        for kind, phase in enumerate(phases):
            due.append(phase)
            wheel.setdefault(int(phase), []).append(index * 4 + kind)
    periods = (frame_ms, audio_ms, sr_ms, sr_ms)
    wall_offset = time.time() - time.monotonic()
    pack = _HEADER.pack
    sent = octets = errors = returned = 0
    error_kinds: dict[int, int] = {}
    first_error: tuple[float, int, int] | None = None
    sent_at_window_start = sent_at_window_end = -1
    window_start_at = window_end_at = 0.0
    slot = 0
    conn.send({"ready": True})
    start, window_start, window_end = conn.recv()
    while time.monotonic() < start:
        time.sleep(min(0.01, max(0.0, start - time.monotonic())))
    cpu_start = time.process_time()
    late_slots = 0
    while True:
        now = time.monotonic()
        if sent_at_window_start < 0 and now >= window_start:
            sent_at_window_start, window_start_at = sent, now
        if now >= window_end:
            sent_at_window_end, window_end_at = sent, now
            break
        current = int((now - start) * 1000)
        if current - slot > 50:
            late_slots += 1  # more than 50 ms behind schedule: the sender is the limit
        while slot <= current:
            for code in wheel.pop(slot, ()):
                index, kind = code >> 2, code & 3
                call = calls[index]
                try:
                    if kind == 0:
                        seq, ts, ssrc, sock = (
                            call.video_seq,
                            call.video_ts,
                            call.video_ssrc,
                            call.video_sock,
                        )
                        for b1, payload in frames[call.frame_index]:
                            sock.send(pack(0x80, b1, seq, ts, ssrc) + payload)
                            seq = (seq + 1) & 0xFFFF
                            sent += 1
                            octets += len(payload)
                            call.video_packets += 1
                            call.video_octets += len(payload)
                        call.video_seq = seq
                        call.video_ts = (ts + VIDEO_RATE // FPS) & 0xFFFFFFFF
                        call.frame_index = (call.frame_index + 1) % len(frames)
                    elif kind == 1:
                        payload = audio[call.audio_index]
                        marker = 0x80 if call.audio_packets == 0 else 0
                        call.audio_sock.send(
                            pack(0x80, marker | plan.audio_pt, call.audio_seq, call.audio_ts,
                                 call.audio_ssrc) + payload
                        )  # fmt: skip
                        sent += 1
                        octets += len(payload)
                        call.audio_packets += 1
                        call.audio_octets += len(payload)
                        call.audio_seq = (call.audio_seq + 1) & 0xFFFF
                        call.audio_ts = (call.audio_ts + 160) & 0xFFFFFFFF
                        call.audio_index = (call.audio_index + 1) % len(audio)
                    else:
                        video = kind == 2
                        at = start + due[code] / 1000
                        # The SR's RTP time is the stream's timestamp at that instant.
                        if video:
                            rate, ts = VIDEO_RATE, call.video_ts
                            packets, sr_octets, ssrc = (
                                call.video_packets,
                                call.video_octets,
                                call.video_ssrc,
                            )
                            port = call.video_rtcp
                        else:
                            rate, ts = AUDIO_RATE, call.audio_ts
                            packets, sr_octets, ssrc = (
                                call.audio_packets,
                                call.audio_octets,
                                call.audio_ssrc,
                            )
                            port = call.audio_rtcp
                        # ts is the *next* frame's timestamp; its nominal time is its due time.
                        next_due = due[code - kind + (0 if video else 1)]
                        rtp_now = (ts - round((next_due / 1000 - (at - start)) * rate)) & 0xFFFFFFFF
                        report = SenderReport(
                            ssrc=ssrc,
                            ntp_timestamp=ntp_from_unix(at + wall_offset),
                            rtp_timestamp=rtp_now,
                            packet_count=packets & 0xFFFFFFFF,
                            octet_count=sr_octets & 0xFFFFFFFF,
                        )
                        control.sendto(bytes(report), ("127.0.0.1", port))
                        sent += 1
                except OSError as exc:
                    # e.g. ECONNREFUSED after an ICMP error: counted, not fatal.
                    errors += 1
                    if first_error is None:
                        first_error = (time.monotonic() - start, index, kind)
                    error_kinds[exc.errno or 0] = error_kinds.get(exc.errno or 0, 0) + 1
                due[code] += periods[kind]
                wheel.setdefault(int(due[code]), []).append(code)
            slot += 1
        if slot % 20 == 0:
            returned += _drain(poller, drainable)
        pause = start + slot * TICK - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    cpu = time.process_time() - cpu_start
    returned += _drain(poller, drainable)
    for sock in drainable.values():
        sock.close()
    poller.close()
    return {
        "calls": len(calls),
        "sent": sent,
        "octets": octets,
        "send_errors": errors,
        "send_error_kinds": {errno.errorcode.get(k, str(k)): v for k, v in error_kinds.items()},
        "first_send_error": first_error,
        "returned": returned,
        "window_sent": sent_at_window_end - max(sent_at_window_start, 0),
        "window_seconds": window_end_at - window_start_at,
        "late_slots": late_slots,
        "cpu_seconds": cpu,
        "run_seconds": window_end_at - start,
    }


def _drain(poller: select.epoll, sockets: dict[int, socket.socket]) -> int:
    count = 0
    for fd, _ in poller.poll(0):
        sock = sockets[fd]
        while True:
            try:
                sock.recv(2048)
            except OSError:
                break  # EAGAIN (drained) or a queued ICMP error
            count += 1
    return count
