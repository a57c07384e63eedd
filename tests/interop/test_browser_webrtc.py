"""Chromium plays WebRTC from aiortc over 127.0.0.1: the browser harness's own check.

No gateway here: a tiny aiortc answerer in the test process sends a generated
video pattern (and Opus silence), a minimal page served by uvicorn on
127.0.0.1 offers ``recvonly`` audio and video, posts its offer (WHEP style:
``application/sdp`` in, ``201`` + answer out) and plays the answer in a
``<video>``. If this fails, the browser or the loopback setup is broken, not
the product; if it passes and the player test fails, look at the product.

What it takes on 127.0.0.1 (kept here as the reference):

* Chromium: the flags of :mod:`tests.interop.browser`
  (``--allow-loopback-in-peer-connection``, mDNS host names off, autoplay).
* aiortc: ``RTCConfiguration(iceServers=[])``, or aiortc asks
  stun.l.google.com for a server-reflexive candidate; and host candidates on
  127.0.0.1, which ``aioice.ice.get_host_addresses`` leaves out (it skips
  loopback): patched here, the gateway has ``[webrtc] ice_addresses``.
* Chromium 156 here puts **no** 127.0.0.1 candidate in its offer, with or
  without ``--allow-loopback-in-peer-connection`` (seen: only the eth0
  addresses, IPv4 and IPv6). The connection still comes up on loopback: its
  connectivity checks reach aiortc's 127.0.0.1 candidate from 127.0.0.1, aiortc
  answers them (the remote is peer-reflexive to it, RFC 8445 §7.3.1.3) and
  Chromium learns a peer-reflexive local candidate 127.0.0.1:PORT
  (§7.2.5.3.1). So the answerer must offer a loopback candidate; the
  browser's own candidates do not matter. This page even drops every
  non-loopback candidate from its offer (leaving none), so the media cannot
  wander onto another interface of the machine.

Tolerances: the pattern runs at aiortc's 30 fps; over a window of at least 2 s
Chromium must decode at least 10 frames a second (a third of the rate: a
software VP8 decoder on a loaded 2-core machine, plus the sampling jitter of
two ``getStats()`` calls) and receive audio packets at all (aiortc sends 50/s).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aioice.ice
import av
import pytest
import uvicorn
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.interop.browser import BrowserPage, Chromium, wait_for_js
from tests.interop.peers import LOCALHOST, free_port

pytestmark = pytest.mark.interop

WIDTH, HEIGHT = 320, 240
#: Seconds between the two getStats() samples.
WINDOW = 2.5
#: Lowest decode rate accepted (frames/s; aiortc sends 30, see the module docstring).
MIN_FPS = 10.0

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>aiortc loopback spike</title></head>
<body style="margin:0;background:#222">
<video id="video" autoplay playsinline muted style="width:640px;height:480px"></video>
<script>
"use strict";
// Keep only candidates on 127.0.0.1: media must stay on loopback.
function loopbackOnly(sdp) {
  return sdp.split("\\r\\n").filter(
    (line) => !line.startsWith("a=candidate:") || line.split(" ")[4] === "127.0.0.1"
  ).join("\\r\\n");
}
async function start() {
  const pc = new RTCPeerConnection({iceServers: []});
  window.spike = {pc, state: "new", error: null};
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const video = document.getElementById("video");
  pc.ontrack = (event) => {
    if (event.track.kind === "video") {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
    }
  };
  pc.onconnectionstatechange = () => { window.spike.state = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") { resolve(); return; }
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") { resolve(); }
    };
  });
  console.log("gathered: " + pc.localDescription.sdp.split("\\r\\n").filter(
    (l) => l.startsWith("a=candidate:")).join(" | "));
  const offer = loopbackOnly(pc.localDescription.sdp);
  console.log("offer candidates: " + offer.split("\\r\\n").filter(
    (l) => l.startsWith("a=candidate:")).join(" | "));
  const response = await fetch("/offer", {
    method: "POST", headers: {"Content-Type": "application/sdp"}, body: offer,
  });
  if (response.status !== 201) { throw new Error("offer answered " + response.status); }
  await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
}
start().catch((error) => { window.spike.error = String(error); console.error(error); });
</script>
</body></html>
"""


class PatternTrack(VideoStreamTrack):
    """A moving luma gradient, WIDTH x HEIGHT, paced by aiortc at 30 fps."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._chroma = bytes([128]) * ((WIDTH // 2) * (HEIGHT // 2))

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        shift = (self.count * 4) % 256
        row = bytes((x + shift) % 256 for x in range(WIDTH))
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(row * HEIGHT)
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base)
        self.count += 1
        return frame


class LoopbackAnswerer:
    """aiortc answering recvonly offers with :class:`PatternTrack` and silence."""

    def __init__(self) -> None:
        self.peer_connections: list[RTCPeerConnection] = []
        self.video_tracks: list[PatternTrack] = []

    async def offer(self, request: Request) -> Response:
        offer = (await request.body()).decode()
        # No ICE servers: aiortc would otherwise ask stun.l.google.com.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peer_connections.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        track = PatternTrack()
        self.video_tracks.append(track)
        pc.addTrack(track)
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        return Response(pc.localDescription.sdp, status_code=201, media_type="application/sdp")

    async def close(self) -> None:
        for pc in self.peer_connections:
            await pc.close()
        # Let them go: tests/webrtc counts every RTCPeerConnection still in memory.
        self.peer_connections.clear()


async def page(_: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


@pytest.fixture
async def spike_server(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, LoopbackAnswerer]]:
    """The page and the answerer on a free port of 127.0.0.1, in this event loop."""
    # aioice leaves loopback out of its host candidates; here it is the only one.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [LOCALHOST])
    answerer = LoopbackAnswerer()
    app = Starlette(routes=[Route("/", page), Route("/offer", answerer.offer, methods=["POST"])])
    port = free_port("tcp")
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOCALHOST, port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 10.0
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield f"http://{LOCALHOST}:{port}/", answerer
    finally:
        await answerer.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10.0)


async def test_chromium_plays_aiortc_video_over_loopback(
    chromium: Chromium,
    spike_server: tuple[str, LoopbackAnswerer],
    artifacts_dir: Path,
) -> None:
    url, answerer = spike_server
    tab: BrowserPage = await chromium.new_page("spike")
    await tab.page.goto(url)

    await wait_for_js(
        tab,
        "window.spike && (window.spike.error || window.spike.state === 'connected')",
        timeout=15.0,
        what="the peer connection",
    )
    assert await tab.page.evaluate("window.spike.error") is None, tab.console

    # Media flows between the two loopback host candidates, nowhere else.
    pairs = await tab.selected_pairs("window.spike.pc")
    assert pairs, "no selected candidate pair"
    for pair in pairs:
        assert pair["local"].startswith(f"{LOCALHOST}:"), pairs
        assert pair["remote"].startswith(f"{LOCALHOST}:"), pairs
        # Chromium offers no 127.0.0.1 candidate (module docstring): its side of the
        # pair is the peer-reflexive address aiortc's answers to its checks reveal.
        assert pair["localType"] in ("host", "prflx"), pairs
        assert pair["remoteType"] == "host", pairs

    await wait_for_js(
        tab,
        "document.getElementById('video').videoWidth > 0",
        timeout=10.0,
        what="the first decoded frame",
    )
    first = await tab.inbound_rtp("window.spike.pc")
    started = time.monotonic()
    await asyncio.sleep(WINDOW)
    last = await tab.inbound_rtp("window.spike.pc")
    elapsed = time.monotonic() - started

    video, audio = last["video"], last["audio"]
    fps = (video["framesDecoded"] - first["video"]["framesDecoded"]) / elapsed
    assert fps >= MIN_FPS, (first, last)
    assert video["mimeType"] == "video/VP8", video
    assert (video["frameWidth"], video["frameHeight"]) == (WIDTH, HEIGHT), video
    assert audio["packetsReceived"] > first["audio"]["packetsReceived"], (first, last)
    assert audio["mimeType"] == "audio/opus", audio
    assert answerer.video_tracks[0].count > 0

    element = await tab.video_element("#video")
    assert (element["videoWidth"], element["videoHeight"]) == (WIDTH, HEIGHT), element
    assert not element["paused"], element

    shot = await tab.screenshot("playing")
    assert shot.stat().st_size > 5_000, shot
    assert tab.errors == [], tab.console
    assert (artifacts_dir / "spike.console.log").exists()

    # The fixture stops the browser by PID; prove it leaves nothing behind.
    pid = chromium.pid
    await chromium.stop()
    assert chromium.leftover_pids() == [], chromium.leftover_pids()
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True
