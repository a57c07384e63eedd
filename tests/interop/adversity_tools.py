"""Fault injection for the adversity tests: hostile datagrams, a header-rewriting proxy,
and what the gateway must still show afterwards.

Theory of operation
-------------------
A call under test is the cheapest real one with H.264 + audio: sipp answers with
PCMU + H.264 (the clip's parameter sets, :data:`AV_ANSWER_SCENARIO` of
``test_recording.py``) and ffmpeg sends a clip in real time as RTP with RTCP SRs.
ffmpeg does not send to the gateway directly but through a :class:`RewritingProxy`
(one UDP socket per RTP/RTCP port of the gateway's offer, in a thread): the gateway
latches to the proxy's sockets, so the proxy can

* rewrite headers on the way (SSRC and sequence jumps, lying SR timestamps) once
  :meth:`RewritingProxy.arm` is called, and
* :meth:`RewritingProxy.inject` datagrams *from the latched source*, which is the
  hardest place for garbage to arrive (latching does not filter it).

:func:`hostile_datagrams` makes the garbage: random bytes, truncated SIP or RTP
(valid prefixes of every length), and 65507-byte datagrams (the largest UDP
payload over IPv4). :func:`blast` sends them from any local address (``127.0.0.2``
is loopback too on Linux: a spoofed source).

What must hold afterwards is read over REST (:func:`snapshot`, :func:`assert_alive`,
:func:`wait_frames_beyond`): the process runs, ``/health`` answers, and the stream's
frame counters pass where they were before the fault.
"""

from __future__ import annotations

import contextlib
import random
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.media_tools import ClipSpec, make_clip, sender_argv, sprop_parameter_sets
from tests.interop.peers import (
    LOCALHOST,
    ManagedProcess,
    PeerSet,
    Sipp,
    require_binary,
)
from tests.interop.test_calls import startup_body
from tests.interop.test_recording import AV_ANSWER_SCENARIO

__all__ = [
    "AV_ANSWER_SCENARIO",
    "MAX_UDP_PAYLOAD",
    "Address",
    "AvCall",
    "Clip",
    "Rewrite",
    "RewritingProxy",
    "assert_alive",
    "blast",
    "fast_timers_gateway",
    "hostile_datagrams",
    "make_test_clip",
    "offer_ports",
    "place_av_call",
    "snapshot",
    "wait_frames_beyond",
    "write_answer_scenario",
]

Address = tuple[str, int]
#: The largest UDP payload over IPv4: 65535 - 20 (IP) - 8 (UDP).
MAX_UDP_PAYLOAD = 65507
#: ``rewrite(kind, is_rtcp, datagram)`` -> the datagram to forward (``None``: drop it).
Rewrite = Callable[[str, bool, bytes], bytes | None]

#: A plausible SIP request, truncated at every length by :func:`hostile_datagrams`.
_SIP_SAMPLE = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-adversity\r\n"
    b"From: <sip:mallory@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: adversity@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    b"Contact: <sip:mallory@127.0.0.1:5999>\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 30\r\n\r\nv=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n"
)


def _rtp_sample(payload_type: int, rng: random.Random) -> bytes:
    header = struct.pack(
        "!BBHII",
        0x80,
        payload_type,
        rng.getrandbits(16),
        rng.getrandbits(32),
        rng.getrandbits(32),
    )
    return header + rng.randbytes(rng.randint(0, 1200))


def hostile_datagrams(
    count: int, *, kind: str, seed: int, payload_type: int = 96
) -> Iterator[bytes]:
    """``count`` datagrams cycling through garbage, truncations and oversized ones.

    ``kind`` is ``"sip"`` (truncated SIP requests, bad Content-Length, binary
    noise) or ``"rtp"`` (RTP headers cut at every length, wrong versions, padding
    and extension bits pointing past the end, RTCP cut short). One in 50 is
    :data:`MAX_UDP_PAYLOAD` bytes long.
    """
    rng = random.Random(seed)
    for index in range(count):
        choice = index % 5
        if index % 50 == 49:
            yield rng.randbytes(MAX_UDP_PAYLOAD)
        elif choice == 0:
            yield rng.randbytes(rng.randint(0, 1500))
        elif kind == "sip":
            if choice == 1:
                yield _SIP_SAMPLE[: rng.randint(0, len(_SIP_SAMPLE))]
            elif choice == 2:
                yield _SIP_SAMPLE.replace(b"Content-Length: 30", b"Content-Length: 99999")
            elif choice == 3:
                yield b"SIP/2.0 200 OK\r\n" + rng.randbytes(rng.randint(0, 200))
            else:
                yield _SIP_SAMPLE + b"\r\n" * rng.randint(1, 8) + rng.randbytes(100)
        else:
            sample = _rtp_sample(payload_type, rng)
            if choice == 1:
                yield sample[: rng.randint(0, 12)]  # shorter than the fixed header
            elif choice == 2:
                # Version 2 with padding, extension and 15 CSRCs claimed, few bytes there.
                yield bytes([0xBF, payload_type]) + sample[2 : rng.randint(2, 40)]
            elif choice == 3:
                # An RTCP SR / RR / SDES / BYE header whose length points past the end.
                pt = rng.choice((200, 201, 202, 203, 205, 206))
                yield struct.pack("!BBH", 0x81, pt, 0xFFFF) + rng.randbytes(rng.randint(0, 30))
            else:
                # Valid header, payload type of the call, H.264 fragment garbage.
                yield sample[:12] + bytes([0x7C, 0x85]) + rng.randbytes(rng.randint(0, 50))


def blast(
    port: int,
    datagrams: Iterator[bytes] | Sequence[bytes],
    *,
    source: Address = (LOCALHOST, 0),
    pace_every: int = 100,
) -> int:
    """Send every datagram to ``127.0.0.1:port`` from ``source``; returns the count sent.

    A millisecond's pause every ``pace_every`` datagrams keeps the receiver's socket
    buffer from dropping most of them before the gateway parses them.
    """
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.bind(source)
        for data in datagrams:
            # ConnectionRefused: an ICMP error of an earlier datagram; the port is there.
            with contextlib.suppress(ConnectionRefusedError):
                sock.sendto(data, (LOCALHOST, port))
            sent += 1
            if sent % pace_every == 0:
                time.sleep(0.001)
    return sent


# --------------------------------------------------------------------------- proxy


@dataclass
class _Leg:
    kind: str
    rtcp: bool
    sock: socket.socket
    target: Address
    sender: Address | None = None
    forwarded: int = 0
    dropped: int = 0
    last: bytes | None = None


class RewritingProxy:
    """UDP forwarder between a media sender and the gateway, with header rewriting.

    ``targets`` maps a media kind to the gateway's ``(rtp, rtcp)`` ports. Each port
    gets a proxy socket (:attr:`ports`); datagrams from the sender are passed to
    ``rewrite`` while :meth:`armed`, then forwarded; datagrams from the gateway
    (RTCP RRs, keepalives) go back to the last sender address unchanged.
    """

    def __init__(self, targets: dict[str, tuple[int, int]], rewrite: Rewrite | None = None) -> None:
        self._rewrite = rewrite
        self._armed = threading.Event()
        self._stop = threading.Event()
        self._legs: dict[tuple[str, bool], _Leg] = {}
        self._selector = selectors.DefaultSelector()
        self.ports: dict[str, tuple[int, int]] = {}
        for kind, (rtp, rtcp) in targets.items():
            bound = []
            for is_rtcp, port in ((False, rtp), (True, rtcp)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((LOCALHOST, 0))
                sock.setblocking(False)
                leg = _Leg(kind, is_rtcp, sock, (LOCALHOST, port))
                self._legs[kind, is_rtcp] = leg
                self._selector.register(sock, selectors.EVENT_READ, leg)
                bound.append(sock.getsockname()[1])
            self.ports[kind] = (bound[0], bound[1])
        self._thread = threading.Thread(target=self._run, name="rewriting-proxy", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """From now on, ``rewrite`` sees every datagram from the sender."""
        self._armed.set()

    def inject(self, kind: str, rtcp: bool, datagrams: Iterator[bytes] | Sequence[bytes]) -> int:
        """Send ``datagrams`` to the gateway from the latched proxy socket; the count."""
        leg = self._legs[kind, rtcp]
        sent = 0
        for data in datagrams:
            try:
                leg.sock.sendto(data, leg.target)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            sent += 1
            if sent % 100 == 0:
                time.sleep(0.001)
        return sent

    def forwarded(self, kind: str, rtcp: bool = False) -> int:
        return self._legs[kind, rtcp].forwarded

    def last(self, kind: str, rtcp: bool = False) -> bytes | None:
        """The last datagram the sender sent on this leg (before any rewriting)."""
        return self._legs[kind, rtcp].last

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._selector.close()
        for leg in self._legs.values():
            leg.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                leg: _Leg = key.data
                try:
                    data, source = leg.sock.recvfrom(MAX_UDP_PAYLOAD)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                if source == leg.target:
                    if leg.sender is not None:
                        self._send(leg, data, leg.sender)
                    continue
                leg.sender = source
                leg.last = data
                out: bytes | None = data
                if self._armed.is_set() and self._rewrite is not None:
                    out = self._rewrite(leg.kind, leg.rtcp, data)
                if out is None:
                    leg.dropped += 1
                    continue
                self._send(leg, out, leg.target)
                leg.forwarded += 1

    @staticmethod
    def _send(leg: _Leg, data: bytes, to: Address) -> None:
        # A full buffer or an ICMP error: the next datagram goes; a proxy does not retry.
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            leg.sock.sendto(data, to)


# --------------------------------------------------------------------------- call


@dataclass(frozen=True)
class Clip:
    """A test clip and the ``sprop-parameter-sets`` sipp must answer with."""

    spec: ClipSpec
    path: Path
    sprop: str


def make_test_clip(directory: Path, spec: ClipSpec) -> Clip:
    path = make_clip(require_binary("ffmpeg"), spec, directory / "adversity-clip.mkv")
    return Clip(spec, path, sprop_parameter_sets(path))


def offer_ports(callee: Sipp) -> dict[str, tuple[int, int]]:
    """The gateway's RTP and RTCP port per kind, from the INVITE sipp received."""
    invites = [e for e in callee.trace() if e.direction == "received" and e.method == "INVITE"]
    assert invites, callee.flow()
    found = re.findall(r"^m=(audio|video) (\d+) ", invites[0].body, re.M)
    return {kind: (int(port), int(port) + 1) for kind, port in found}


@dataclass
class AvCall:
    """An established call whose media ffmpeg sends through a :class:`RewritingProxy`."""

    gateway: GatewayProcess
    call_id: str
    callee: Sipp
    gateway_ports: dict[str, tuple[int, int]]
    proxy: RewritingProxy
    sender: ManagedProcess
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_name(self) -> str:
        return f"stream-{self.call_id}"

    def status(self) -> dict[str, Any]:
        call = self.gateway.find(self.call_id)
        assert call is not None, f"call {self.call_id} vanished from /call/find"
        return call


def write_answer_scenario(directory: Path) -> Path:
    path = directory / "uas_answer_av.xml"
    path.write_text(AV_ANSWER_SCENARIO)
    return path


def place_av_call(
    gateway: GatewayProcess,
    peers: PeerSet,
    workdir: Path,
    clip: Clip,
    call_id: str,
    *,
    rewrite: Rewrite | None = None,
    callee: Sipp | None = None,
    body: dict[str, Any] | None = None,
) -> AvCall:
    """sipp answers (or ``callee``, already started), the call is placed with ``body``
    (default: straight to sipp), and ffmpeg sends the clip through a new proxy."""
    if callee is None:
        callee = peers.sipp(
            write_answer_scenario(workdir),
            variables={"sprop": clip.sprop},
            timeout=clip.spec.duration + 60,
            name=f"sipp-{call_id}",
        )
    response = gateway.post("/call/startup", body or startup_body(call_id, callee))
    assert response.status_code == 200, response.text
    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, callee.errors())
    ports = offer_ports(callee)
    proxy = RewritingProxy(ports, rewrite)
    # Closed with the peers (newest first, before ffmpeg stops), whatever happens.
    peers._stoppers.append(proxy.close)
    argv = sender_argv(
        require_binary("ffmpeg"),
        clip.path,
        video=proxy.ports["video"],
        audio=proxy.ports["audio"],
        audio_codec="PCMU",
    )
    bound = f"{clip.spec.duration + 20:.0f}"
    sender = peers.process(["timeout", "-s", "KILL", bound, *argv], name=f"ffmpeg-{call_id}")
    return AvCall(gateway, call_id, callee, ports, proxy, sender)


# --------------------------------------------------------------------------- gateway


def fast_timers_gateway(
    workdir: Path, *, t1: float, rtp_ports: int = 10, extra_settings: str = ""
) -> contextlib.AbstractContextManager[GatewayProcess]:
    """:func:`~tests.interop.gateway_process.running_gateway` with SIP ``t1`` set, so
    Timer F (64 * T1, RFC 3261 §17.1.2.2) fits in a test; the same checks on the way
    out (exit 0 on SIGTERM, no traceback, no password in the log)."""
    return running_gateway(workdir, t1=t1, rtp_ports=rtp_ports, extra_settings=extra_settings)


# --------------------------------------------------------------------------- checks


def snapshot(gateway: GatewayProcess, stream_name: str) -> dict[str, Any]:
    """``/stream/find`` of one stream, with ``frames`` per kind added."""
    response = gateway.post("/stream/find", {"name": stream_name})
    assert response.status_code == 200, response.text
    [stream] = response.json()
    assert isinstance(stream, dict)
    stream["frames"] = {t["kind"]: t["frames"] for t in stream["tracks"]}
    return stream


def assert_alive(gateway: GatewayProcess) -> None:
    """The process runs and ``/rest-api/health`` answers 200."""
    assert gateway.process is not None and gateway.process.poll() is None, (
        f"gateway died:\n{gateway.log_text()[-3000:]}"
    )
    response = httpx.get(f"{gateway.base_url}/health", timeout=5.0)
    assert response.status_code == 200, response.text


def wait_frames_beyond(
    gateway: GatewayProcess,
    stream_name: str,
    before: dict[str, int],
    *,
    more: int = 25,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Until every kind has ``more`` frames past ``before`` (media continues after the
    fault); the counters never go down (nothing published is lost)."""
    deadline = time.monotonic() + timeout
    while True:
        stream = snapshot(gateway, stream_name)
        frames: dict[str, int] = stream["frames"]
        for kind, count in before.items():
            assert frames.get(kind, 0) >= count, f"{kind} frames went back: {before} -> {frames}"
        if all(frames.get(kind, 0) >= count + more for kind, count in before.items()):
            return stream
        assert time.monotonic() < deadline, (
            f"media stopped after the fault: {before} -> {frames} ({stream})"
        )
        time.sleep(0.1)
