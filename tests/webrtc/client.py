"""A WHEP player that is not our page: an aiortc RTCPeerConnection on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from webrtc.ice import host_addresses
from webrtc.whep import WhepAnswer, WhepSessions

LOOPBACK = ("127.0.0.1",)


class Player:
    """Offers recvonly audio + video, decodes what arrives, counts it."""

    def __init__(self, *, video: bool = True, audio: bool = True) -> None:
        self.pc = RTCPeerConnection()
        if video:
            self.pc.addTransceiver("video", direction="recvonly")
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.video_frames: list[tuple[int, int, int]] = []  # (width, height, pts)
        self.audio_frames: list[tuple[int, int, int]] = []  # (samples, sample rate, pts)
        self.answer: WhepAnswer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    async def offer(self) -> str:
        with host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def play(self, whep: WhepSessions, stream_name: str) -> WhepAnswer:
        self.answer = await whep.create(stream_name, await self.offer())
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=self.answer.sdp, type="answer")
        )
        return self.answer

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    self.video_frames.append((frame.width, frame.height, frame.pts or 0))
                elif isinstance(frame, AudioFrame):
                    self.audio_frames.append((frame.samples, frame.sample_rate, frame.pts or 0))

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_until(predicate: object, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` (seconds); its last value."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return bool(predicate())
        await asyncio.sleep(step)
    return True


def socket_fds() -> int:
    """Open sockets of this process (UDP and TCP), from /proc/self/fd."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def udp_sockets() -> int:
    """Open UDP sockets of this process: inodes in /proc/net/udp{,6} that our fds hold."""
    inodes: set[str] = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(name) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if len(fields) > 9:
                    inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
    return count


def live_peer_connections(*, besides: tuple[Player, ...] = ()) -> int:
    """RTCPeerConnection objects still alive (but those of ``besides``), after a gc."""
    gc.collect()
    theirs = {id(p.pc) for p in besides}
    return sum(
        1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and id(o) not in theirs
    )


def other_tasks() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


def foreign_threads() -> set[str]:
    """Names of live threads other than the event loop's default executor pool (bounded,
    its idle workers stay by design: ``loop.getaddrinfo`` runs there for every socket
    aioice binds)."""
    return {t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")}


def executor_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("asyncio_"))
