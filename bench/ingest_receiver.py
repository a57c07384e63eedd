"""The two receivers the ingest benchmark compares, each run in its own process.

- ``raw``: the peer. One :class:`asyncio.DatagramProtocol` that only counts,
  on uvloop, on the very same sockets a call has (audio RTP/RTCP and video
  RTP/RTCP, bound by :class:`~sipbridge.ports.RtpPortAllocator`, with
  :data:`rtp.session.RECEIVE_BUFFER`).
- ``ingest``: the gateway's path. Per call a :class:`~sipbridge.call_media.CallMediaLink`
  (``RtpSession`` -> ``CallMedia``: parse, latching, jitter buffer, H264/PCMU
  depacketizing, A/V clock) publishing into a
  :class:`~sipbridge.registry.Stream` from a :class:`~sipbridge.registry.StreamRegistry`,
  with one subscriber task per stream draining it.

The driver sends the measurement window; the receiver snapshots its counters
and ``time.process_time()`` at both ends (``process_time`` of a one-threaded
process is the CPU of its one core) and reports them once the sender stopped
and a grace period let the kernel queues drain.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop

from rtp.session import RECEIVE_BUFFER
from sipbridge.call_media import CallMediaLink
from sipbridge.ports import PortPair, RtpPortAllocator
from sipbridge.registry import StreamRegistry, Subscription
from sipbridge.settings import RtpSettings
from sipbridge.sip.offer_answer import (
    MediaOfferConfig,
    NegotiatedSession,
    answer_offer,
    build_offer,
    negotiate,
)

__all__ = [
    "PORT_MAX",
    "PORT_MIN",
    "ReceiverSpec",
    "core_busy_seconds",
    "negotiated_call",
    "run_receiver",
]

#: Receivers bind here: below the kernel's ephemeral range (32768-60999) and away
#: from the gateway's default RTP range (20000-20999) that tests may be using.
PORT_MIN = 22000
PORT_MAX = 31999


@dataclass(frozen=True)
class ReceiverSpec:
    """One receiver run: ``kind`` is ``raw`` or ``ingest``."""

    kind: str
    calls: int
    control_port: int
    cpu: int | None = None
    profiler: str | None = None
    """``cprofile`` or ``pyinstrument``: profile the measurement window."""
    grace: float = 0.5


def negotiated_call(control_port: int) -> NegotiatedSession:
    """The SDP outcome of one call: our offer (PCMU + telephone-event, H264 modes 1 and 0)
    answered by a callee at ``127.0.0.1:control_port`` (RFC 3264)."""
    ours = MediaOfferConfig(
        "127.0.0.1", PORT_MIN, PORT_MIN + 2, session_id=1, session_version=1,
        audio_codecs=("PCMU",), video_codecs=("H264",),
    )  # fmt: skip
    theirs = MediaOfferConfig(
        "127.0.0.1", control_port, control_port, session_id=2, session_version=1,
        audio_codecs=("PCMU",), video_codecs=("H264",),
    )  # fmt: skip
    offer = build_offer(ours)
    answer, _ = answer_offer(offer, theirs)
    return negotiate(offer, answer)


class _Counting(asyncio.DatagramProtocol):
    """The raw peer: counts datagrams, touches nothing else."""

    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.count += 1


class _Ingest:
    """The calls of one ingest receiver and their counters."""

    def __init__(self) -> None:
        self.links: list[CallMediaLink] = []
        self.subscriptions: list[Subscription] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.delivered = 0

    async def drain(self, subscription: Subscription) -> None:
        async for _ in subscription:
            self.delivered += 1

    def datagrams(self) -> int:
        total = 0
        for link in self.links:
            for track in link.media.tracks.values():
                s = track.stats
                total += (
                    s.packets + s.rtcp_received + s.bad_packets + s.foreign_packets
                    + s.unknown_payload
                )  # fmt: skip
        return total

    def counters(self) -> dict[str, Any]:
        published = lost = keyframe_requests = 0
        for link in self.links:
            stream = link.stream
            if stream is not None:
                published += sum(info.frames for info in stream.tracks.values())
            for track in link.media.tracks.values():
                lost += track.jitter.stats.lost
                keyframe_requests += track.stats.keyframe_requests
        offsets = sorted(
            link.media.clock.av_offset
            for link in self.links
            if link.media.clock.av_offset is not None
        )
        return {
            "frames_published": published,
            "frames_delivered": self.delivered,
            "subscriber_dropped": sum(sub.dropped for sub in self.subscriptions),
            "jitter_lost": lost,
            "keyframe_requests": keyframe_requests,
            "av_offset_median_ms": offsets[len(offsets) // 2] * 1000 if offsets else None,
            "sync_mode": str(self.links[0].media.clock.sync_mode) if self.links else None,
        }


def run_receiver(spec: ReceiverSpec, conn: Connection) -> None:
    """Process entry point (see the module docstring); results go to ``conn`` as a dict."""
    try:
        if spec.cpu is not None:
            os.sched_setaffinity(0, {spec.cpu})
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        conn.send(uvloop.run(_receive(spec, conn)))
    except Exception as exc:  # reported to the driver, which fails the step
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


async def _receive(spec: ReceiverSpec, conn: Connection) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    allocator = RtpPortAllocator("127.0.0.1", PORT_MIN, PORT_MAX)
    pairs: list[tuple[PortPair, PortPair]] = []
    for _ in range(spec.calls):
        pairs.append((allocator.allocate(), allocator.allocate()))
    targets = [(a.rtp_port, a.rtcp_port, v.rtp_port, v.rtcp_port) for a, v in pairs]
    counting = _Counting()
    ingest = _Ingest()
    transports: list[asyncio.BaseTransport] = []
    if spec.kind == "raw":
        for pair in (p for call in pairs for p in call):
            for sock in (pair.rtp_socket, pair.rtcp_socket):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
                transport, _ = await loop.create_datagram_endpoint(lambda: counting, sock=sock)
                transports.append(transport)
        count: Callable[[], int] = lambda: counting.count  # noqa: E731
    elif spec.kind == "ingest":
        negotiated = negotiated_call(spec.control_port)
        registry = StreamRegistry()
        settings = RtpSettings()
        for index, (audio, video) in enumerate(pairs):
            call_id = f"bench-{index}"
            stream = registry.reserve(call_id, call_id=call_id)
            link = CallMediaLink(
                call_id=call_id,
                negotiated=negotiated,
                ports={"audio": audio, "video": video},
                stream=stream,
                settings=settings,
                now=loop.time(),
                on_inactive=lambda idle: None,
                on_keyframe_request=lambda: None,
                on_dtmf=lambda digit: None,
            )
            await link.start()
            ingest.links.append(link)
            subscription = stream.subscribe()
            ingest.subscriptions.append(subscription)
            ingest.tasks.append(loop.create_task(ingest.drain(subscription)))
        count = ingest.datagrams
    else:
        raise ValueError(f"unknown receiver kind {spec.kind!r}")
    conn.send({"targets": targets})
    # The driver answers with the window once the sender is scheduled; nothing is
    # sent to us before, so blocking the loop here costs nothing.
    window_start, window_end = conn.recv()

    snapshots: dict[str, tuple[float, float, int]] = {}
    core_busy: dict[str, float | None] = {}
    profiler = _Profiler(spec.profiler)

    def snapshot(name: str) -> None:
        if name == "end":
            profiler.stop()
        snapshots[name] = (time.monotonic(), time.process_time(), count())
        core_busy[name] = core_busy_seconds(spec.cpu)
        if name == "start":
            profiler.start()

    def at(moment: float, name: str) -> None:
        loop.call_at(loop.time() + moment - time.monotonic(), snapshot, name)

    at(window_start, "start")
    at(window_end, "end")
    await asyncio.sleep(window_end + spec.grace - time.monotonic())
    snapshot("final")
    result: dict[str, Any] = {"kind": spec.kind, "calls": spec.calls}
    (t0, c0, n0), (t1, c1, n1) = snapshots["start"], snapshots["end"]
    busy0, busy1 = core_busy["start"], core_busy["end"]
    result.update(
        # What other processes took of our core: noise that the ratio has to live with.
        core_other_share=(
            None
            if busy0 is None or busy1 is None
            else max(0.0, (busy1 - busy0 - (c1 - c0))) / (t1 - t0)
        ),
        window_seconds=t1 - t0,
        window_packets=n1 - n0,
        window_cpu_seconds=c1 - c0,
        total_packets=snapshots["final"][2],
        profile=profiler.report(),
    )
    if spec.kind == "ingest":
        result.update(ingest.counters())
        for link in ingest.links:
            await link.stop()
        for task in ingest.tasks:
            task.cancel()
        await asyncio.gather(*ingest.tasks, return_exceptions=True)
    for endpoint in transports:
        endpoint.close()
    for audio, video in pairs:
        allocator.release(audio)
        allocator.release(video)
    return result


def core_busy_seconds(cpu: int | None) -> float | None:
    """Seconds CPU ``cpu`` has been busy since boot, from ``/proc/stat`` (all processes)."""
    if cpu is None:
        return None
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None


class _Profiler:
    """cProfile (deterministic: call counts) or pyinstrument (sampling: low overhead)."""

    def __init__(self, which: str | None) -> None:
        self.which = which
        self._cprofile: cProfile.Profile | None = None
        self._pyinstrument: Any = None

    def start(self) -> None:
        if self.which == "cprofile":
            self._cprofile = cProfile.Profile()
            self._cprofile.enable()
        elif self.which == "pyinstrument":
            from pyinstrument import Profiler  # optional: pip install pyinstrument

            self._pyinstrument = Profiler(interval=0.0005, async_mode="disabled")
            self._pyinstrument.start()

    def stop(self) -> None:
        if self._cprofile is not None:
            self._cprofile.disable()
        if self._pyinstrument is not None:
            self._pyinstrument.stop()

    def report(self) -> dict[str, Any] | None:
        if self._cprofile is not None:
            stats = pstats.Stats(self._cprofile, stream=io.StringIO())
            rows = []
            raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
            for (path, line, name), (_cc, ncalls, tottime, cumtime, _) in raw_stats.items():
                rows.append(
                    {
                        "function": f"{_short(path)}:{line}({name})",
                        "ncalls": ncalls,
                        "tottime": tottime,
                        "cumtime": cumtime,
                    }
                )
            rows.sort(key=lambda row: row["tottime"], reverse=True)
            return {"profiler": "cprofile", "rows": rows[:60]}
        if self._pyinstrument is not None:
            text = self._pyinstrument.output_text(unicode=False, color=False, show_all=False)
            return {"profiler": "pyinstrument", "text": text}
        return None


_ROOT = str(Path(__file__).resolve().parents[1]) + "/"


def _short(path: str) -> str:
    if path.startswith(_ROOT):
        return path[len(_ROOT) :]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    return path.rsplit("/", 1)[-1] if "/" in path else path
