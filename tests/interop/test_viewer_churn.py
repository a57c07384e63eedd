"""Twenty WHEP viewers come and go during one real call; nothing leaks, nobody starves.

The real ``sipbridge serve`` process calls ``bob`` (baresip through kamailio,
sending H.264 and Opus). Twenty aiortc clients in the test process play the
stream over HTTP (``POST /whep/NAME``, ``DELETE`` of the ``Location``):
:data:`STEADY` of them stay for the whole test, the others join and leave
:data:`ROUNDS` times, all at once and in staggered order. Meanwhile the
steady viewers must keep receiving video and audio frames (decoded by
aiortc), every churning viewer must get video in each of its sessions, and
afterwards ``/events`` must list no viewer and the gateway process must be
back near its thread and file-descriptor counts from before the first viewer.

Tolerances, and why:

* **Threads**: at most ``os.cpu_count() + 4`` more than the baseline. That is
  the size limit of asyncio's default executor (a ``ThreadPoolExecutor``,
  whose idle workers are kept for the life of the process, by design) which
  the WebRTC stack may use for the first time with the first viewer. A
  thread leaked per viewer would exceed it after one round (16 viewers).
* **UDP sockets**: exactly the baseline. Each WHEP session owns one UDP
  socket (its ICE host candidate on 127.0.0.1; audio and video bundled, RTCP
  muxed), seen here as exactly +20 with twenty viewers: none may outlive
  its session. Counted from ``/proc/PID/fd`` against ``/proc/PID/net/udp``.
* **File descriptors**: at most :data:`FD_SLACK` more than the baseline. The
  UDP sockets are checked exactly (above); the slack is for TCP connections
  of this test's HTTP clients the server has not closed yet (keep-alive),
  while one leaked descriptor per session would add :data:`CHURNERS` per
  round, ``ROUNDS * CHURNERS`` in all. Seen: back to the baseline exactly.
* **Frames**: each churning session must see at least
  :data:`MIN_FRAMES_PER_SESSION` video frames (a late joiner starts on the
  cached keyframe); each steady viewer must gain at least
  :data:`MIN_STEADY_FPS` frames/s in every round (baresip sends
  :data:`VIDEO_FPS`): joins and leaves may cost the others a few frames,
  not their stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import aioice.ice
import httpx
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import LOCALHOST, Kamailio, PeerSet
from tests.interop.test_baresip import establish
from tests.interop.test_player_chromium import events_state, make_media, start_bob

pytestmark = pytest.mark.interop

VIEWERS = 20
STEADY = 4
CHURNERS = VIEWERS - STEADY
ROUNDS = 5
#: Small video: 20 aiortc decoders run in the test process on a 2-core machine.
VIDEO_SIZE = (320, 180)
VIDEO_FPS = 15.0
MIN_FRAMES_PER_SESSION = 3
MIN_STEADY_FPS = 5.0
FD_SLACK = 8
#: How long a churning viewer may take to get its frames (s).
JOIN_TIMEOUT = 15.0


@dataclass
class WhepViewer:
    """One aiortc client playing a stream by WHEP (RFC 9725), video and audio recvonly."""

    name: str
    pc: RTCPeerConnection | None = None
    location: str | None = None
    video_frames: int = 0
    audio_frames: int = 0
    sessions: int = 0
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def _read(self, track: MediaStreamTrack) -> None:
        # Decoded frames: counts what a real viewer would see, not just packets.
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                else:
                    self.audio_frames += 1

    async def join(self, client: httpx.AsyncClient, endpoint: str) -> None:
        """Offer, POST it, apply the answer (no trickle: every candidate in the offer)."""
        assert self.pc is None, f"{self.name} already joined"
        # No ICE servers: aiortc would otherwise ask stun.l.google.com.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.readers.append(asyncio.ensure_future(self._read(track)))

        await pc.setLocalDescription(await pc.createOffer())
        response = await client.post(
            endpoint,
            content=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        assert response.status_code == 201, (self.name, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/sdp"), response.headers
        self.location = urljoin(endpoint, response.headers["location"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        self.sessions += 1

    async def leave(self, client: httpx.AsyncClient) -> None:
        """DELETE the session, then close the peer connection."""
        if self.location is not None:
            response = await client.delete(self.location)
            assert response.status_code == 200, (self.name, response.status_code, response.text)
            self.location = None
        await self.close()

    async def close(self) -> None:
        """Close the peer connection and stop the readers (no HTTP)."""
        if self.pc is not None:
            await self.pc.close()
            self.pc = None
        for reader in self.readers:
            reader.cancel()
        for reader in self.readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self.readers.clear()


async def wait_frames(viewer: WhepViewer, video: int, timeout: float = JOIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while viewer.video_frames < video:
        assert time.monotonic() < deadline, (
            f"{viewer.name}: {viewer.video_frames} video frames after {timeout:g} s "
            f"(session {viewer.sessions})"
        )
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class ProcCounts:
    """What process ``pid`` holds, from /proc: threads, open fds, UDP sockets among them."""

    threads: int
    fds: int
    udp_sockets: int

    @classmethod
    def read(cls, pid: int) -> ProcCounts:
        sockets = set()
        fd_dir = Path(f"/proc/{pid}/fd")
        names = os.listdir(fd_dir)
        for name in names:
            with contextlib.suppress(OSError):  # closed since listed
                target = os.readlink(fd_dir / name)
                if target.startswith("socket:["):
                    sockets.add(target[len("socket:[") : -1])
        udp_inodes = set()
        for table in ("udp", "udp6"):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                udp_inodes.add(line.split()[9])
        return cls(
            threads=len(os.listdir(f"/proc/{pid}/task")),
            fds=len(names),
            udp_sockets=len(sockets & udp_inodes),
        )

    def __str__(self) -> str:
        return f"threads={self.threads} fds={self.fds} udp={self.udp_sockets}"


@pytest.fixture
async def viewers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[WhepViewer]]:
    """The twenty clients, on 127.0.0.1 only; closed whatever the outcome."""
    # aioice leaves loopback out of its host candidates; here it is the only one.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [LOCALHOST])
    clients = [WhepViewer(f"viewer-{i:02d}") for i in range(VIEWERS)]
    try:
        yield clients
    finally:
        for viewer in clients:
            await viewer.close()


async def test_twenty_viewers_join_and_leave_during_one_call(
    webrtc_gateway: GatewayProcess,
    kamailio: Kamailio,
    peers: PeerSet,
    viewers: list[WhepViewer],
    tmp_path: Path,
) -> None:
    gateway = webrtc_gateway
    media = await asyncio.to_thread(
        make_media, tmp_path / "media", size=VIDEO_SIZE, fps=VIDEO_FPS, bitrate=300_000
    )
    bob = await asyncio.to_thread(start_bob, peers, kamailio, tmp_path, media)
    call_id = "churn"
    stream = f"stream-{call_id}"
    await asyncio.to_thread(establish, gateway, kamailio, bob, call_id)

    # Baseline: the call runs, no viewer yet.
    baseline = ProcCounts.read(gateway.pid)
    endpoint = f"http://{LOCALHOST}:{gateway.http_port}/whep/{stream}"
    steady, churners = viewers[:STEADY], viewers[STEADY:]
    rng = random.Random(7)
    log: list[str] = [f"baseline {baseline}"]

    async with httpx.AsyncClient(timeout=15.0) as client:
        await asyncio.gather(*(v.join(client, endpoint) for v in steady))
        await asyncio.gather(*(wait_frames(v, 5) for v in steady))

        for round_number in range(ROUNDS):
            before = [(v.video_frames, v.audio_frames) for v in steady]
            started = time.monotonic()
            order = churners[:]
            rng.shuffle(order)
            if round_number == 0:
                # Everybody at once.
                await asyncio.gather(*(v.join(client, endpoint) for v in order))
            else:
                # Staggered: one after another, a few ms apart.
                for viewer in order:
                    await viewer.join(client, endpoint)
                    await asyncio.sleep(rng.uniform(0.0, 0.05))
            marks = {v.name: v.video_frames for v in order}
            await asyncio.gather(
                *(wait_frames(v, marks[v.name] + MIN_FRAMES_PER_SESSION) for v in order)
            )
            state = await asyncio.to_thread(events_state, gateway)
            listed = sorted(v["sessionId"] for v in state["viewers"])
            assert len(listed) == VIEWERS, state["viewers"]
            assert {v["streamName"] for v in state["viewers"]} == {stream}, state["viewers"]
            # The measure sees sessions: each holds at least one UDP socket (its ICE candidate).
            joined = ProcCounts.read(gateway.pid)
            assert joined.udp_sockets >= baseline.udp_sockets + VIEWERS, (joined, baseline)

            rng.shuffle(order)
            for viewer in order:
                await viewer.leave(client)
                await asyncio.sleep(rng.uniform(0.0, 0.02))
            # The steady viewers kept getting frames through the round.
            elapsed = time.monotonic() - started
            log.append(
                f"round {round_number}: {elapsed:.2f} s, joined: {joined}, "
                f"left: {ProcCounts.read(gateway.pid)}, "
                f"steady video {[v.video_frames for v in steady]}"
            )
            for viewer, (video_before, audio_before) in zip(steady, before, strict=True):
                gained = viewer.video_frames - video_before
                assert gained >= MIN_STEADY_FPS * elapsed, (viewer.name, gained, elapsed, log)
                assert viewer.audio_frames > audio_before, (viewer.name, log)

        await asyncio.gather(*(v.leave(client) for v in steady))

    assert all(v.sessions == ROUNDS for v in churners), [v.sessions for v in churners]

    # No viewer left, and the gateway is back near its baseline (module docstring).
    deadline = time.monotonic() + 15.0
    thread_limit = baseline.threads + (os.cpu_count() or 1) + 4
    fd_limit = baseline.fds + FD_SLACK
    while True:
        state = await asyncio.to_thread(events_state, gateway)
        after = ProcCounts.read(gateway.pid)
        settled = (
            not state["viewers"]
            and after.threads <= thread_limit
            and after.fds <= fd_limit
            and after.udp_sockets == baseline.udp_sockets
        )
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    log.append(f"after {after}")
    (peers.log_dir / "churn-figures.txt").write_text("\n".join(log) + "\n")
    assert state["viewers"] == [], state["viewers"]
    assert after.threads <= thread_limit, log
    assert after.fds <= fd_limit, log
    assert after.udp_sockets == baseline.udp_sockets, log

    # The call itself went through it all.
    call = gateway.find(call_id)
    assert call is not None and call["status"] == "ESTABLISHED", call
    assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    ended, _ = await asyncio.to_thread(gateway.wait_status, call_id, {"FINISH", "FAILED"})
    assert ended["status"] == "FINISH", ended
