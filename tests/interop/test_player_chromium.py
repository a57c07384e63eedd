"""A user's whole path in a real browser: call from the console, watch in the player.

Headless Chromium (:mod:`tests.interop.browser`) opens the console (``/``) of
the real ``sipbridge serve`` process, fills the call form for ``bob`` (baresip
registered at kamailio, answering by itself with an H.264 640x360 test
pattern and an Opus tone) and clicks *Start call*. The console then lists the
call and its stream (``#calls``, ``#streams``, fed by ``/events``). The player
page (``/player?stream=NAME``) plays the stream over WHEP: Chromium's own
``getStats()`` must show H.264 video decoded at the sent size and Opus audio
arriving, and a screenshot of it is kept as an artifact.

The gateway offers ICE host candidates on 127.0.0.1 only (``[webrtc]
ice_addresses``); Chromium offers none there (see
:mod:`tests.interop.test_browser_webrtc`), the media still flows
127.0.0.1 <-> 127.0.0.1 through a peer-reflexive candidate, which is checked.

Tolerances, and why:

* **Video rate**: baresip sends 25 fps; over a window of at least
  :data:`WINDOW` s Chromium must decode at least half of that. The window
  starts once the first frame is shown, so start-up does not count; a
  halved rate still allows a loaded 2-core machine running baresip's encoder,
  the gateway and the browser, while a broken passthrough (frames not
  decodable, only keyframes, a stall) decodes far fewer or none.
* **Audio**: at least half of the 50 packets/s baresip sends (20 ms ptime),
  for the same reason.
* **Screenshot**: a PNG of the video element larger than 5 kB; a black or
  empty 640x360 frame compresses to well under 2 kB, the test pattern to tens
  of kB.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.baresip import Baresip, MediaSources
from tests.interop.browser import BrowserPage, Chromium, wait_for_js
from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import LOCALHOST, Kamailio, PeerSet, require_binary

pytestmark = pytest.mark.interop

VIDEO_SIZE = (640, 360)
VIDEO_FPS = 25.0
AUDIO_PACKETS_PER_S = 50.0
#: Seconds between the two getStats() samples of the playing stream.
WINDOW = 3.0
#: Share of the sent rates the browser must reach (module docstring).
MIN_RATE_SHARE = 0.5
MIN_SCREENSHOT_BYTES = 5_000

CALL_ID = "player-call"
STREAM = "player-stream"
PLAYER_PC = "window.sipbridgePlayer.pc"


# --------------------------------------------------------------------------- shared helpers


def make_media(
    folder: Path,
    *,
    size: tuple[int, int] = VIDEO_SIZE,
    fps: float = VIDEO_FPS,
    bitrate: int = 1_000_000,
) -> MediaSources:
    """A 60 s test pattern (H.264, no audio track) and a 440 Hz tone for baresip to send.

    The MP4 has no audio track (avformat audio crashes baresip 1.0); the tone
    is a 48 kHz WAV for ``aufile`` (baresip encodes it to Opus).
    """
    ffmpeg = require_binary("ffmpeg")
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    video, tone = folder / "pattern.mp4", folder / "tone48k.wav"
    quiet = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [
            *quiet,
            *("-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={fps:g}"),
            *("-t", "60", "-an", "-pix_fmt", "yuv420p", "-c:v", "libx264"),
            *("-preset", "ultrafast", "-g", f"{int(fps)}", str(video)),
        ],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [
            *quiet,
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", "60", "-ac", "1", "-c:a", "pcm_s16le", str(tone)),
        ],
        check=True,
        timeout=60,
    )
    return MediaSources(
        video_file=video, audio_file=tone, video_size=size, video_fps=fps, video_bitrate=bitrate
    )


def start_bob(peers: PeerSet, kamailio: Kamailio, tmp_path: Path, media: MediaSources) -> Baresip:
    """baresip as ``bob`` sending ``media`` (H.264 + Opus); stopped by the ``peers`` fixture."""
    bob = Baresip(
        tmp_path / "bob",
        peers.log_dir,
        user="bob",
        password=KAMAILIO_USERS["bob"],
        registrar=kamailio,
        media=media,
    )
    assert bob.has_h264, "baresip has no avcodec.so: run `make peers` (baresip-ffmpeg)"
    return bob.start(peers)


def events_state(gateway: GatewayProcess, timeout: float = 5.0) -> dict[str, Any]:
    """The first ``event: state`` of the gateway's ``/events`` feed, decoded."""
    url = f"http://{LOCALHOST}:{gateway.http_port}/events"
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                state: dict[str, Any] = json.loads(line[len("data: ") :])
                return state
    raise AssertionError(f"{url} ended without a state event")


def rates(
    first: dict[str, dict[str, Any]], last: dict[str, dict[str, Any]], seconds: float
) -> dict[str, float]:
    """Per-second increase of the counters the tests check, between two stats samples."""

    def per_s(kind: str, counter: str) -> float:
        return float(last[kind][counter] - first[kind][counter]) / seconds

    return {
        "video_fps": per_s("video", "framesDecoded"),
        "video_packets_per_s": per_s("video", "packetsReceived"),
        "audio_packets_per_s": per_s("audio", "packetsReceived"),
    }


# --------------------------------------------------------------------------- the test


async def fill_call_form(console: BrowserPage, kamailio: Kamailio) -> None:
    """The console's call form as a user fills it for the seed call to bob."""
    page = console.page
    fields = {
        "#call-callee": "bob",
        "#call-callId": CALL_ID,
        "#call-toStream": STREAM,
        "#call-appKey": "defaultApp",
        "#call-sipLogin": "alice",
        "#call-sipAuthenticationName": "alice",
        "#call-sipPassword": KAMAILIO_USERS["alice"],
        "#call-sipDomain": LOCALHOST,
        "#call-sipOutboundProxy": LOCALHOST,
        "#call-sipPort": str(kamailio.port),
    }
    for selector, value in fields.items():
        await page.fill(selector, value)
    await page.check("#call-hasAudio")
    await page.check("#call-hasVideo")
    await page.check("#call-sipRegisterRequired")


async def test_console_starts_call_and_player_plays_it_in_chromium(
    webrtc_gateway: GatewayProcess,
    kamailio: Kamailio,
    peers: PeerSet,
    chromium: Chromium,
    tmp_path: Path,
    artifacts_dir: Path,
) -> None:
    gateway = webrtc_gateway
    media = await asyncio.to_thread(make_media, tmp_path / "media")
    bob = await asyncio.to_thread(start_bob, peers, kamailio, tmp_path, media)
    base = f"http://{LOCALHOST}:{gateway.http_port}"

    # The console: fill the call form and click "Start call".
    console = await chromium.new_page("console")
    await console.page.goto(f"{base}/")
    await fill_call_form(console, kamailio)
    await console.page.click("#start-call")
    await wait_for_js(
        console,
        "document.getElementById('call-result').textContent",
        timeout=10.0,
        what="the call form's result",
    )
    result = await console.page.text_content("#call-result")
    assert result is not None and CALL_ID in result, (result, console.console)
    assert await console.page.get_attribute("#call-result", "data-ok") == "true", result

    call, seen = await asyncio.to_thread(
        gateway.wait_status, CALL_ID, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"}
    )
    assert call["status"] == "ESTABLISHED", (seen, call, bob.diagnostics())
    assert call["streamName"] == STREAM, call

    # The console lists the call (established) and its stream, from /events.
    call_row = console.page.locator(f'#calls tr[data-key="{CALL_ID}"]')
    await call_row.filter(has_text="ESTABLISHED").wait_for(timeout=10_000)
    await console.page.locator("#streams", has_text=STREAM).wait_for(timeout=10_000)
    await console.screenshot("call-listed")

    # The player plays the stream.
    player = await chromium.new_page("player")
    await player.page.goto(f"{base}/player?stream={STREAM}")
    await wait_for_js(
        player,
        "window.sipbridgePlayer && ['playing', 'error', 'ended']"
        ".includes(window.sipbridgePlayer.state) && window.sipbridgePlayer.state",
        timeout=20.0,
        what="the player to play",
    )
    state = await player.page.evaluate(
        "({state: window.sipbridgePlayer.state, message: window.sipbridgePlayer.message})"
    )
    assert state["state"] == "playing", (state, player.console, gateway.log_text()[-3000:])
    await wait_for_js(
        player,
        "document.getElementById('video').videoWidth > 0",
        timeout=10.0,
        what="the first video frame",
    )

    first = await player.inbound_rtp(PLAYER_PC)
    started = time.monotonic()
    await asyncio.sleep(WINDOW)
    last = await player.inbound_rtp(PLAYER_PC)
    elapsed = time.monotonic() - started
    figures = rates(first, last, elapsed)
    pairs = await player.selected_pairs(PLAYER_PC)
    element = await player.video_element("#video")
    (artifacts_dir / "player-figures.json").write_text(
        json.dumps(
            {
                "first": first,
                "last": last,
                "seconds": elapsed,
                "rates": figures,
                "pairs": pairs,
                "video": element,
            },
            indent=1,
        )
    )

    video, audio = last["video"], last["audio"]
    assert video["mimeType"] == "video/H264", video
    assert audio["mimeType"] in ("audio/opus", "audio/PCMU", "audio/PCMA"), audio
    assert figures["video_fps"] >= VIDEO_FPS * MIN_RATE_SHARE, figures
    assert figures["audio_packets_per_s"] >= AUDIO_PACKETS_PER_S * MIN_RATE_SHARE, figures
    assert (video["frameWidth"], video["frameHeight"]) == VIDEO_SIZE, video
    assert (element["videoWidth"], element["videoHeight"]) == VIDEO_SIZE, element
    assert not element["paused"], element
    assert pairs, "no selected ICE candidate pair"
    for pair in pairs:
        assert pair["local"].startswith(f"{LOCALHOST}:"), pairs
        assert pair["remote"].startswith(f"{LOCALHOST}:"), pairs

    shot = await player.screenshot("playing")
    video_shot = await player.screenshot("video", selector="#video")
    for path in (shot, video_shot):
        assert path.exists() and path.stat().st_size > MIN_SCREENSHOT_BYTES, path
    assert player.errors == [], player.console

    # The gateway knows the viewer; the console page shows it too.
    session_id = await player.page.evaluate("window.sipbridgePlayer.sessionId")
    assert session_id, await player.page.evaluate("JSON.stringify(window.sipbridgePlayer)")
    viewers = (await asyncio.to_thread(events_state, gateway))["viewers"]
    assert [v["sessionId"] for v in viewers] == [session_id], viewers
    assert viewers[0]["streamName"] == STREAM, viewers
    await console.page.locator("#viewers", has_text=STREAM).wait_for(timeout=5_000)
    await console.screenshot("viewer-listed")

    # Closing the player ends its WHEP session (pagehide DELETE).
    await player.page.close()
    deadline = time.monotonic() + 10.0
    while (await asyncio.to_thread(events_state, gateway))["viewers"]:
        assert time.monotonic() < deadline, "the player's WHEP session outlived its page"
        await asyncio.sleep(0.2)

    assert gateway.post("/call/terminate", {"callId": CALL_ID}).status_code == 200
    call, _ = await asyncio.to_thread(gateway.wait_status, CALL_ID, {"FINISH", "FAILED"})
    assert call["status"] == "FINISH", call
    assert console.errors == [], console.console
