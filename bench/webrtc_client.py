"""The viewers of the WebRTC viewers benchmark: many cheap aiortc players in one process.

Each viewer is a real :class:`aiortc.RTCPeerConnection` that offers ``recvonly``
audio and video (aiortc's default codec lists, so the gateway picks H264 and
PCMU from them as it would from a browser's offer), gathers a host candidate
on 127.0.0.1 only, gets its answer from the gateway's signalling server, and
completes ICE (aioice connectivity checks), DTLS (its own certificate) and
SRTP (keys from the handshake) for real.

To keep the client side cheap (it shares a core with the sender), received
media is not decoded, and once a viewer's DTLS is up its SRTP datagrams skip
aiortc's per-packet asyncio hop: ``aioice.ice.Connection.data_received``
(which would queue each datagram for the DTLS transport's reader task) is
wrapped in this process so that, for a connected viewer, every SRTP/SRTCP
datagram is unprotected right there with the session's own receive keys
(``RTCDtlsTransport._rx_srtp``: every packet is still authenticated and
decrypted) and counted (packets, bytes, sequence gaps). STUN (ICE consent) and
DTLS still take aiortc's normal path; RTP that took it before the switch is
counted by a replaced ``RTCDtlsTransport._handle_rtp_data``, so aiortc's
receivers (jitter buffer, NACK, decoder threads) never see a packet.

The driver sends tuples on the connection: ``("add", n, concurrency)``,
``("counts",)`` and ``("stop",)``; each is answered with a dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["ClientSpec", "run_clients"]

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ClientSpec:
    """One viewer process: where to signal, which core, how long at most."""

    signaling_port: int
    cpu: int | None
    max_seconds: float
    name: str = "viewers"


@dataclass
class _Counter:
    """What one viewer received (all SSRCs of its one bundled transport)."""

    audio: int = 0
    video: int = 0
    octets: int = 0
    lost: int = 0
    last_seq: dict[int, int] = field(default_factory=dict)

    rtcp: int = 0
    bad: int = 0

    def count(self, data: bytes, octets: int) -> None:
        """One decrypted RTP packet."""
        if len(data) < 12:
            self.bad += 1
            return
        if data[1] & 0x7F == 0:  # PCMU, payload type 0 (RFC 3551): the audio track
            self.audio += 1
        else:
            self.video += 1
        self.octets += octets
        ssrc = int.from_bytes(data[8:12], "big")
        seq = int.from_bytes(data[2:4], "big")
        last = self.last_seq.get(ssrc)
        if last is None:
            self.last_seq[ssrc] = seq
            return
        gap = (seq - last - 1) & 0xFFFF
        if gap < 0x8000:  # ahead: packets in between never came (lost or reordered)
            self.lost += gap
            self.last_seq[ssrc] = seq


#: DTLS transport -> its viewer's counter (packets that took aiortc's path).
_COUNTERS: weakref.WeakKeyDictionary[Any, _Counter] = weakref.WeakKeyDictionary()
#: aioice connection -> (DTLS transport, counter), once the viewer is connected.
_FAST: weakref.WeakKeyDictionary[Any, tuple[Any, _Counter]] = weakref.WeakKeyDictionary()


def _install_counter() -> None:
    import aioice.ice
    import pylibsrtp
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    async def count(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        counter = _COUNTERS.get(self)
        if counter is not None:
            counter.count(data, len(data))

    data_received = aioice.ice.Connection.data_received

    def receive(self: aioice.ice.Connection, data: bytes, component: int) -> None:
        entry = _FAST.get(self)
        if entry is None or not 127 < data[0] < 192:
            data_received(self, data, component)  # STUN/DTLS, or not connected yet
            return
        dtls, counter = entry
        try:
            if 192 <= data[1] <= 223:  # RTCP (RFC 5761 §4): the gateway's sender reports
                dtls._rx_srtp.unprotect_rtcp(data)
                counter.rtcp += 1
            else:
                counter.count(dtls._rx_srtp.unprotect(data), len(data))
        except pylibsrtp.Error:
            counter.bad += 1

    RTCDtlsTransport._handle_rtp_data = count  # type: ignore[method-assign]
    aioice.ice.Connection.data_received = receive  # type: ignore[method-assign]


class _Viewer:
    def __init__(self) -> None:
        from aiortc import RTCPeerConnection

        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.counter = _Counter()
        self.connected = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    async def connect(self, port: int) -> None:
        from aiortc import RTCSessionDescription

        from webrtc.ice import host_addresses

        with host_addresses((HOST,)):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(json.dumps({"offer": self.pc.localDescription.sdp}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
        if "answer" not in reply:
            raise RuntimeError(f"gateway refused the offer: {reply.get('error')}")
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=reply["answer"], type="answer")
        )
        for transceiver in self.pc.getTransceivers():
            _COUNTERS[transceiver.receiver.transport] = self.counter
        await asyncio.wait_for(self.connected.wait(), CONNECT_TIMEOUT)
        # DTLS is up (connectionState "connected" needs it): its SRTP keys are set.
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            _FAST[dtls.transport._connection] = (dtls, self.counter)

    async def close(self) -> None:
        await self.pc.close()


def run_clients(spec: ClientSpec, conn: Connection) -> None:
    """Process entry point: serve the driver's commands until ``("stop",)``."""
    try:
        if spec.cpu is not None:
            os.sched_setaffinity(0, {spec.cpu})
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        import uvloop

        _install_counter()
        conn.send(uvloop.run(_serve(spec, conn)))
    except Exception as exc:  # reported to the driver
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


async def _serve(spec: ClientSpec, conn: Connection) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    viewers: list[_Viewer] = []
    stop = asyncio.Event()
    busy: list[asyncio.Task[None]] = []

    async def add(count: int, concurrency: int) -> None:
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one() -> None:
            async with gate:
                viewer = _Viewer()
                try:
                    await viewer.connect(spec.signaling_port)
                except Exception as exc:  # counted and reported, the run goes on
                    failures.append(f"{type(exc).__name__}: {exc}")
                    await viewer.close()
                    return
                viewers.append(viewer)

        await asyncio.gather(*(one() for _ in range(count)))
        conn.send(
            {
                "added": count - len(failures),
                "failures": failures[:5],
                "failed": len(failures),
                "seconds": time.monotonic() - started,
                "viewers": len(viewers),
            }
        )

    def counts() -> dict[str, Any]:
        return {
            "at": time.monotonic(),
            "viewers": [
                (v.counter.audio, v.counter.video, v.counter.octets, v.counter.lost,
                 v.counter.bad, v.pc.connectionState)
                for v in viewers
            ],
        }  # fmt: skip

    def on_command() -> None:
        while conn.poll():
            command = conn.recv()
            name = command[0]
            if name == "add":
                busy.append(loop.create_task(add(int(command[1]), int(command[2]))))
            elif name == "counts":
                conn.send(counts())
            elif name == "stop":
                stop.set()
                return
            else:
                conn.send({"error": f"unknown command {name!r}"})

    loop.add_reader(conn.fileno(), on_command)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=spec.max_seconds)
    loop.remove_reader(conn.fileno())
    for task in busy:
        task.cancel()
    await asyncio.gather(*busy, return_exceptions=True)
    await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
    return {"closed": len(viewers)}
