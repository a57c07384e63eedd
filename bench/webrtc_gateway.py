"""The gateway side of the WebRTC viewers benchmark: one process, one stream, N viewers.

Run by ``bench/webrtc_viewers.py`` in a process of its own (uvloop, pinned to
one core) so its CPU (``/proc/PID/stat``) and RSS are its alone. It holds:

- the real ingest of one call: a :class:`~sipbridge.call_media.CallMediaLink`
  (``RtpSession`` -> jitter buffer -> H264/PCMU depacketizing -> A/V clock)
  publishing into a :class:`~sipbridge.registry.StreamRegistry` stream, fed by
  ``bench/udp_flood.py`` (one real-rate call) from another process;
- an egress, by ``kind``:

  * ``sipbridge``: :class:`~webrtc.whep.WhepSessions` with
    ``ice_addresses=("127.0.0.1",)``, the product's WHEP path: one
    :class:`~webrtc.fanout.StreamFanout` per stream (one subscription, one
    reader task, one shared packet per frame, one release timer) feeding a
    :class:`~webrtc.schedule.ViewerSchedule` and two
    :class:`~webrtc.tracks.PassthroughTrack` per viewer, aiortc senders;
  * ``aiortc`` (the peer): the same frames relayed the way aiortc's own
    examples relay a live source: one source track per kind, read once, fanned
    out by :class:`aiortc.contrib.media.MediaRelay` to every viewer's sender as
    soon as it is published (no schedule, pacing or keyframe handling). Same
    codec choice (:func:`webrtc.codecs.choose_codecs`), same ICE host address,
    same aiortc packetizer, SRTP and sockets.

- a signalling server on 127.0.0.1 (one JSON line in: ``{"offer": sdp}``, one
  out: ``{"answer": sdp}`` or ``{"error": text}``) for the viewer processes;
- :class:`LatencyProbe`: for every frame sent to every viewer, the time from
  the frame's ``MediaFrame.arrival`` (the monotonic time its last RTP packet
  was received, as :mod:`rtp.session` stamps it with ``loop.time()``) to the
  moment the last RTP packet aiortc made of it has been SRTP-protected and
  handed to the UDP socket (``RTCDtlsTransport._send_rtp`` returned). It
  wraps two aiortc methods in this process only (bench code; product code is
  untouched) and costs both egress kinds the same.

The driver talks to it over a :class:`multiprocessing.connection.Connection`
with tuples: ``("status",)``, ``("mark",)`` (window start), ``("report",)``
(window end: counters and latency over the window) and ``("stop",)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import os
import resource
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["KINDS", "GatewaySpec", "LatencyProbe", "percentiles", "run_gateway"]

KINDS = ("sipbridge", "aiortc")
STREAM = "bench"
HOST = "127.0.0.1"
#: Gateway RTP ports: away from the other benchmarks' and the tests' ranges.
PORTS = (32000, 32099)
#: Frames remembered for the latency lookup (per kind): about 20 s at 30 + 50 frames/s,
#: far more than the 2 s a viewer can play behind (one GOP).
REMEMBERED_FRAMES = 1000


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway run: ``kind`` is ``sipbridge`` or ``aiortc``."""

    kind: str
    control_port: int
    """The sender's RTP port as our SDP names it (``negotiated_call``)."""
    cpu: int | None
    max_seconds: float
    viewer_queue_frames: int = 300


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """Median, p95, max (and count) of ``values`` in milliseconds."""
    if not values:
        return {"count": 0, "median_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(values)
    n = len(ordered)
    return {
        "count": n,
        "median_ms": ordered[n // 2] * 1000,
        "p95_ms": ordered[min(n - 1, (n * 95) // 100)] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


class LatencyProbe:
    """Per frame and viewer: arrival -> published -> due (sipbridge) -> last packet sent.

    ``on_publish`` runs in ``Stream.publish`` (the frame's arrival and pts are
    remembered under its RTP time in the WebRTC clock, which is what aiortc's
    ``pack()`` returns as the frame's timestamp before adding the sender's
    origin); ``on_encoded`` runs when an aiortc sender got a frame from its
    track; ``on_sent`` for every packet a DTLS transport sent. aiortc sends a
    frame's packets one after the other with nothing in between on that
    sender, and sets the marker bit on the last one (on every audio packet),
    so the marker closes the frame.
    """

    def __init__(self) -> None:
        self.frames: dict[tuple[str, int], tuple[float, float, float]] = {}
        self._order: deque[tuple[str, int]] = deque()
        self.viewers: weakref.WeakKeyDictionary[Any, tuple[int, Callable[[], Any]]] = (
            weakref.WeakKeyDictionary()
        )
        # ssrc -> (kind, arrival, published, due or None, viewer index)
        self._pending: dict[int, tuple[str, float, float, float | None, int]] = {}
        self.recording = False
        #: (kind, viewer, arrival, published, due or nan, sent) over the window.
        self.samples: list[tuple[str, int, float, float, float, float]] = []
        self.unmatched = 0

    def on_publish(self, kind: str, key: int, arrival: float, pts: float) -> None:
        entry = (kind, key)
        if entry not in self.frames:
            self._order.append(entry)
            if len(self._order) > 2 * REMEMBERED_FRAMES:
                self.frames.pop(self._order.popleft(), None)
        self.frames[entry] = (arrival, time.monotonic(), pts)

    def add_viewer(self, sender: Any, index: int, schedule: Callable[[], Any]) -> None:
        """``schedule()`` returns the viewer's ``ViewerSchedule`` (or ``None``)."""
        self.viewers[sender] = (index, schedule)

    def on_encoded(self, sender: Any, timestamp: int) -> None:
        kind = sender.kind
        frame = self.frames.get((kind, timestamp))
        if frame is None:
            self.unmatched += 1
            return
        arrival, published, pts = frame
        index, schedule_of = self.viewers.get(sender, (-1, _none))
        schedule = schedule_of()
        due = schedule.due(pts) if schedule is not None and schedule.anchor is not None else None
        self._pending[sender._ssrc] = (kind, arrival, published, due, index)

    def on_sent(self, data: bytes) -> None:
        if len(data) < 12 or not data[1] & 0x80 or 192 <= data[1] <= 223:
            return  # not the last packet of a frame, or RTCP
        pending = self._pending.pop(int.from_bytes(data[8:12], "big"), None)
        if pending is None or not self.recording:
            return
        kind, arrival, published, due, index = pending
        self.samples.append(
            (kind, index, arrival, published, float("nan") if due is None else due,
             time.monotonic())
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """Distributions over the window (milliseconds): ``total`` (arrival -> sent) =
        ``ingest`` (arrival -> published: the jitter buffer) + ``egress`` (published ->
        sent); for sipbridge ``egress`` = ``hold`` (published -> due on the viewer's
        schedule) + ``late`` (due -> sent)."""
        out: dict[str, Any] = {"frames": len(self.samples), "unmatched": self.unmatched}
        for name, kinds in (("all", ("audio", "video")), ("video", ("video",))):
            rows = [s for s in self.samples if s[0] in kinds]
            part: dict[str, Any] = {
                "total": percentiles([s[5] - s[2] for s in rows]),
                "ingest": percentiles([s[3] - s[2] for s in rows]),
                "egress": percentiles([s[5] - s[3] for s in rows]),
            }
            timed = [s for s in rows if s[4] == s[4]]  # due known (not nan)
            if timed:
                part["hold"] = percentiles([s[4] - s[3] for s in timed])
                part["late"] = percentiles([s[5] - s[4] for s in timed])
            out[name] = part
        # Each viewer's hold is about constant (50 ms + the GOP's age when it joined): its
        # spread over the viewers.
        per_viewer: dict[int, list[float]] = {}
        for s in self.samples:
            if s[4] == s[4]:
                per_viewer.setdefault(s[1], []).append(s[4] - s[3])
        holds = [sorted(v)[len(v) // 2] for v in per_viewer.values()]
        out["hold_per_viewer"] = percentiles(holds)
        if holds:
            out["hold_per_viewer"]["min_ms"] = min(holds) * 1000
        return out


def _none() -> None:
    return None


def install_probe(probe: LatencyProbe) -> None:
    """Wrap ``RTCRtpSender._next_encoded_frame`` and ``RTCDtlsTransport._send_rtp`` (this
    process only) so ``probe`` sees every frame a sender takes and every packet sent."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpsender import RTCRtpSender

    next_encoded = RTCRtpSender._next_encoded_frame
    send_rtp = RTCDtlsTransport._send_rtp

    async def next_encoded_frame(self: RTCRtpSender, codec: Any) -> Any:
        encoded = await next_encoded(self, codec)
        if encoded is not None:
            probe.on_encoded(self, encoded.timestamp)
        return encoded

    async def send(self: RTCDtlsTransport, data: bytes) -> None:
        await send_rtp(self, data)
        probe.on_sent(data)

    RTCRtpSender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    RTCDtlsTransport._send_rtp = send  # type: ignore[method-assign]


# -- the two egress kinds --------------------------------------------------------------------
class _SipbridgeEgress:
    """The product: WhepSessions, one ViewerSession per viewer."""

    def __init__(self, registry: Any, probe: LatencyProbe, queue_frames: int) -> None:
        from webrtc.config import WebRtcConfig
        from webrtc.whep import WhepSessions

        config = WebRtcConfig(
            ice_addresses=(HOST,),
            max_viewers=100_000,
            max_viewers_per_stream=100_000,
            viewer_queue_frames=queue_frames,
        )
        self.whep = WhepSessions(registry, config)
        self.probe = probe
        self.count = 0

    async def create(self, offer: str) -> str:
        answer = await self.whep.create(STREAM, offer)
        session = self.whep._sessions[answer.session_id]
        assert session.pc is not None
        index = self.count
        self.count += 1

        def schedule() -> Any:
            return session.schedule

        for sender in session.pc.getSenders():
            self.probe.add_viewer(sender, index, schedule)
        return answer.sdp

    def counters(self) -> dict[str, Any]:
        sessions = list(self.whep._sessions.values())
        video = [s.frames_sent("video") for s in sessions]
        audio = [s.frames_sent("audio") for s in sessions]
        return {
            "viewers": len(sessions),
            "connected": sum(1 for s in sessions if s.state == "connected"),
            "video_frames_sent": video,
            "audio_frames_sent": audio,
            "dropped": sum(s.dropped for s in sessions),
            "subscription_dropped": sum(
                s.subscription.dropped for s in sessions if s.subscription is not None
            ),
            "late": sum(s.schedule.late for s in sessions if s.schedule is not None),
            "reanchors": sum(s.schedule.reanchors for s in sessions if s.schedule is not None),
            "max_queued": max(
                (len(s.subscription) for s in sessions if s.subscription is not None), default=0
            ),
            "keyframe_requests": sum(s.keyframe_requests for s in sessions),
        }

    async def close(self) -> None:
        await self.whep.close()


class _RelayEgress:
    """The peer: aiortc's MediaRelay fanning one packet per frame out to every viewer."""

    def __init__(self, stream: Any, probe: LatencyProbe, queue_frames: int) -> None:
        import av
        from aiortc.contrib.media import MediaRelay
        from aiortc.mediastreams import MediaStreamTrack

        class SourceTrack(MediaStreamTrack):
            """Frames as ``av.Packet`` (pts in the codec clock), as soon as published."""

            def __init__(self, kind: str, clock_rate: int) -> None:
                super().__init__()
                self.kind = kind
                self.clock_rate = clock_rate
                self.time_base = fractions.Fraction(1, clock_rate)
                self.queue: asyncio.Queue[Any] = asyncio.Queue()
                self.sent = 0

            def offer(self, frame: Any) -> None:
                if self.queue.qsize() >= queue_frames:
                    self.queue.get_nowait()  # nobody reads yet (no viewer): keep it bounded
                packet = av.Packet(frame.payload)
                packet.pts = round(frame.pts * self.clock_rate)
                packet.time_base = self.time_base
                self.queue.put_nowait(packet)

            async def recv(self) -> Any:
                packet = await self.queue.get()
                self.sent += 1
                return packet

        self.stream = stream
        self.probe = probe
        self.relay = MediaRelay()
        self.sources = {"video": SourceTrack("video", 90000), "audio": SourceTrack("audio", 8000)}
        self.subscription = stream.subscribe(max_queue=queue_frames, from_gop=False)
        self.task = asyncio.create_task(self._feed())
        self.pcs: list[Any] = []
        self.proxies: list[tuple[Any, Any]] = []

    async def _feed(self) -> None:
        async for frame in self.subscription:
            source = self.sources.get(frame.kind)
            if source is not None and frame.pts is not None:
                source.offer(frame)

    async def create(self, offer: str) -> str:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from webrtc.codecs import choose_codecs, parse_offer
        from webrtc.ice import host_addresses
        from webrtc.whep import declared_codecs

        choices = choose_codecs(declared_codecs(self.stream), parse_offer(offer))
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        index = len(self.pcs) - 1
        for kind in ("audio", "video"):
            choice = choices.get(kind)
            if choice is None:
                continue
            proxy = self.relay.subscribe(self.sources[kind], buffered=True)
            transceiver = pc.addTransceiver(proxy, direction="sendonly")
            transceiver.setCodecPreferences(list(choice.preferences))
            self.probe.add_viewer(transceiver.sender, index, _none)
            self.proxies.append((pc, proxy))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await pc.createAnswer()
        with host_addresses((HOST,)):
            await pc.setLocalDescription(answer)
        sdp: str = pc.localDescription.sdp
        return sdp

    def counters(self) -> dict[str, Any]:
        return {
            "viewers": len(self.pcs),
            "connected": sum(1 for pc in self.pcs if pc.connectionState == "connected"),
            # Frames taken by each viewer's sender: what its relay queue gave out.
            "video_frames_sent": [_relay_taken(p) for _, p in self.proxies if p.kind == "video"],
            "audio_frames_sent": [_relay_taken(p) for _, p in self.proxies if p.kind == "audio"],
            "dropped": self.subscription.dropped,
            "subscription_dropped": self.subscription.dropped,
            "late": 0,
            "reanchors": 0,
            "max_queued": max((p._queue.qsize() for _, p in self.proxies), default=0),
            "keyframe_requests": 0,
        }

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)
        self.subscription.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _relay_taken(proxy: Any) -> int:
    # RelayStreamTrack has no counter: count what its recv() returned through a wrapper.
    return int(getattr(proxy, "bench_taken", 0))


def _count_relay_recv() -> None:
    from aiortc.contrib.media import RelayStreamTrack

    recv = RelayStreamTrack.recv

    async def counted(self: RelayStreamTrack) -> Any:
        frame = await recv(self)
        self.bench_taken = getattr(self, "bench_taken", 0) + 1  # type: ignore[attr-defined]
        return frame

    RelayStreamTrack.recv = counted  # type: ignore[method-assign]


# -- the process ---------------------------------------------------------------------------
def run_gateway(spec: GatewaySpec, conn: Connection) -> None:
    """Process entry point: reports ``{"targets": [...], "signaling_port": p}``, then serves
    the driver's commands until ``("stop",)`` (or ``spec.max_seconds``)."""
    try:
        if spec.cpu is not None:
            os.sched_setaffinity(0, {spec.cpu})
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        import uvloop

        conn.send(uvloop.run(_serve(spec, conn)))
    except Exception as exc:  # reported to the driver, which fails the run
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


async def _serve(spec: GatewaySpec, conn: Connection) -> dict[str, Any]:
    from ingest_receiver import negotiated_call

    from sipbridge.call_media import CallMediaLink
    from sipbridge.ports import RtpPortAllocator
    from sipbridge.registry import StreamRegistry
    from sipbridge.settings import RtpSettings
    from webrtc.schedule import rtp_timestamp

    loop = asyncio.get_running_loop()
    probe = LatencyProbe()
    install_probe(probe)
    registry = StreamRegistry()
    stream = registry.reserve(STREAM, call_id=STREAM)
    publish = stream.publish

    def probed_publish(frame: Any) -> None:
        if frame.pts is not None:
            probe.on_publish(
                frame.kind, rtp_timestamp(frame.pts, frame.clock_rate), frame.arrival, frame.pts
            )
        publish(frame)

    stream.publish = probed_publish  # type: ignore[method-assign]
    allocator = RtpPortAllocator(HOST, *PORTS)
    audio, video = allocator.allocate(), allocator.allocate()
    link = CallMediaLink(
        call_id=STREAM, negotiated=negotiated_call(spec.control_port),
        ports={"audio": audio, "video": video}, stream=stream, settings=RtpSettings(),
        now=loop.time(), on_inactive=lambda idle: None, on_keyframe_request=lambda: None,
        on_dtmf=lambda digit: None,
    )  # fmt: skip
    await link.start()
    egress: _SipbridgeEgress | _RelayEgress
    if spec.kind == "sipbridge":
        egress = _SipbridgeEgress(registry, probe, spec.viewer_queue_frames)
    elif spec.kind == "aiortc":
        _count_relay_recv()
        egress = _RelayEgress(stream, probe, spec.viewer_queue_frames)
    else:
        raise ValueError(f"unknown gateway kind {spec.kind!r}")
    errors: list[str] = []

    async def signal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            try:
                reply = {"answer": await egress.create(request["offer"])}
            except Exception as exc:  # the viewer is told; the driver sees the count
                errors.append(f"{type(exc).__name__}: {exc}")
                reply = {"error": errors[-1]}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(signal, HOST, 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    conn.send(
        {
            "targets": [(audio.rtp_port, audio.rtcp_port, video.rtp_port, video.rtcp_port)],
            "signaling_port": port,
        }
    )
    marked: dict[str, Any] = {}

    def status() -> dict[str, Any]:
        counters = egress.counters()
        info = stream.tracks
        return {
            **counters,
            "published": {k: t.frames for k, t in info.items()},
            "codecs": {k: t.codec for k, t in info.items()},
            "signaling_errors": list(errors),
        }

    def handle(command: tuple[Any, ...]) -> dict[str, Any]:
        name = command[0]
        if name == "status":
            return status()
        if name == "mark":
            probe.samples.clear()
            probe.unmatched = 0
            probe.recording = True
            marked.clear()
            marked.update(status(), at=time.monotonic())
            return {"ok": True}
        if name == "report":
            probe.recording = False
            end = status()
            end["at"] = time.monotonic()
            return {"start": marked.copy(), "end": end, "latency": probe.summary()}
        raise ValueError(f"unknown command {name!r}")

    stop = asyncio.Event()

    def on_command() -> None:
        while conn.poll():
            command = conn.recv()
            if command[0] == "stop":
                stop.set()
                return
            try:
                conn.send(handle(command))
            except Exception as exc:
                conn.send({"error": f"{type(exc).__name__}: {exc}"})

    loop.add_reader(conn.fileno(), on_command)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=spec.max_seconds)
    loop.remove_reader(conn.fileno())
    final = status()
    server.close()
    await egress.close()
    await link.stop()
    allocator.release(audio)
    allocator.release(video)
    return {"stopped": True, "viewers_at_stop": final["viewers"]}
