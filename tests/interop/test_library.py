"""sipbridge as a library: ``async with Gateway(settings)``, a real call, its frames, its events.

No HTTP server anywhere: the gateway runs in the test's own event loop. The
callee is baresip (``bob``, registered at kamailio, answering by itself) sending
an H.264 test pattern and a 440 Hz tone, as in ``test_baresip_media``; the
gateway registers as ``alice`` (401), is challenged on the INVITE (407) and the
call is established through kamailio.

The second test runs ``examples/library_call.py`` (the example docs/library.md
shows, checked to be the same text) as its own process against the same kind
of callee, and checks that process never imported Starlette or uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtp.frame import MediaFrame
from sipbridge import (
    CallNotEstablished,
    CallStatus,
    CallStatusEvent,
    Event,
    Gateway,
    Settings,
    StreamStatus,
    StreamStatusEvent,
)
from sipbridge.settings import SipSettings
from tests.interop import test_baresip_media
from tests.interop.baresip import Baresip, MediaSources
from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_baresip_media import MediaFiles, start_bob_with_media

pytestmark = pytest.mark.interop

#: test_baresip_media's module fixture (H.264 pattern and tones), registered here too.
baresip_media_files = test_baresip_media.media_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "library_call.py"
DOC = ROOT / "docs" / "library.md"
#: Frames read from the stream before hanging up: 2 s of video at 25 fps, of audio at 50/s.
VIDEO_FRAMES = 50
AUDIO_FRAMES = 100


@pytest.fixture(scope="module")
def media(baresip_media_files: MediaFiles) -> MediaFiles:
    """The H.264 pattern and tones ``test_baresip_media`` makes (its fixture, reused)."""
    return baresip_media_files


def bob_sending(peers: PeerSet, kamailio: Kamailio, tmp_path: Path, files: MediaFiles) -> Baresip:
    media = MediaSources(
        video_file=files.video,
        audio_file=files.tone_48k,
        video_size=(640, 360),
        video_fps=25.0,
        video_bitrate=1_000_000,
    )
    return start_bob_with_media(peers, kamailio, tmp_path, media, None)


def library_settings() -> Settings:
    return Settings(sip=SipSettings(host="127.0.0.1", port=0))


def call_fields(kamailio: Kamailio, call_id: str, **overrides: object) -> dict[str, object]:
    """The seed ``/call/startup`` body as :class:`CallRequest` keywords."""
    fields: dict[str, object] = {
        "call_id": call_id,
        "callee": "bob",
        "to_stream": f"stream-{call_id}",
        "sip_login": "alice",
        "sip_authentication_name": "alice",
        "sip_password": KAMAILIO_USERS["alice"],
        "sip_domain": "127.0.0.1",
        "sip_port": kamailio.port,
        "sip_outbound_proxy": "127.0.0.1",
        "sip_register_required": True,
        "app_key": "defaultApp",
    }
    fields.update(overrides)
    return fields


async def read_frames(gw: Gateway, name: str) -> list[MediaFrame]:
    """Subscribe to the stream ``name`` and read until enough video and audio came."""
    stream = gw.streams.get(name)
    assert stream is not None, [s.name for s in gw.streams.all()]
    frames: list[MediaFrame] = []
    subscription = stream.subscribe()
    try:
        async with asyncio.timeout(20):
            async for frame in subscription:
                frames.append(frame)
                kinds = [f.kind for f in frames]
                if kinds.count("video") >= VIDEO_FRAMES and kinds.count("audio") >= AUDIO_FRAMES:
                    break
    finally:
        subscription.close()
    return frames


async def test_library_call_to_baresip_frames_and_events(
    peers: PeerSet, kamailio: Kamailio, tmp_path: Path, media: MediaFiles
) -> None:
    bob = bob_sending(peers, kamailio, tmp_path, media)
    async with Gateway(library_settings()) as gw:
        everything = gw.events()
        call = await gw.start_call(**call_fields(kamailio, "lib1"))
        own = call.events()
        info = await call.established(timeout=20)
        assert info.status is CallStatus.ESTABLISHED, bob.diagnostics()
        assert info.sipStatus == 200
        assert info.appKey == "defaultApp"

        frames = await read_frames(gw, "stream-lib1")
        video = [f for f in frames if f.kind == "video"]
        audio = [f for f in frames if f.kind == "audio"]
        # A subscriber's video starts on a keyframe (the cached GOP or the next one).
        assert video[0].keyframe, video[0]
        assert {f.codec for f in video} == {"H264"}
        assert {f.codec.lower() for f in audio} == {"opus"}
        # H.264 access units in Annex-B; the keyframe carries SPS/PPS (NAL types 7, 8).
        assert video[0].payload.startswith(b"\x00\x00\x00\x01"), video[0].payload[:8]
        nal_types = {m.end() for m in re.finditer(b"\x00\x00\x01", video[0].payload)}
        assert {video[0].payload[i] & 0x1F for i in nal_types} >= {7, 8, 5}
        assert all(len(f.payload) > 0 for f in audio)
        pts = [f.pts for f in video if f.pts is not None]
        assert pts == sorted(pts) and len(pts) >= VIDEO_FRAMES - 5

        await gw.terminate_call("lib1")
        assert await call.ended(timeout=10) is CallStatus.FINISH
        # The call's own iterator ends by itself once the call and its stream ended.
        mine: list[Event] = []
        async with asyncio.timeout(5):
            async for event in own:
                mine.append(event)
    # Out of the `async with`: the gateway stopped, the bus closed, the iterator ends.
    seen: list[Event] = []
    async with asyncio.timeout(5):
        async for event in everything:
            seen.append(event)

    for events in (mine, seen):
        calls = [e.status for e in events if isinstance(e, CallStatusEvent)]
        assert calls[0] is CallStatus.NEW
        assert CallStatus.PENDING in calls
        assert calls.index(CallStatus.PENDING) < calls.index(CallStatus.ESTABLISHED)
        assert calls[-1] is CallStatus.FINISH, calls
        streams = [e for e in events if isinstance(e, StreamStatusEvent)]
        assert [e.status for e in streams] == [
            StreamStatus.PENDING,
            StreamStatus.PUBLISHING,
            StreamStatus.UNPUBLISHED,
        ], streams
        publishing = streams[1]
        assert publishing.published and publishing.name == "stream-lib1"
        assert publishing.callId == "lib1" and publishing.appKey == "defaultApp"
        assert publishing.hasVideo and publishing.hasAudio
        assert all(e.callId == "lib1" for e in events)
    established = next(
        e for e in seen if isinstance(e, CallStatusEvent) and e.status is CallStatus.ESTABLISHED
    )
    assert established.sipStatus == 200 and established.callee == "bob"
    assert established.caller == "alice@127.0.0.1"
    await asyncio.to_thread(
        bob.wait_for_log, r"session closed: Connection reset by peer", timeout=5
    )


async def test_library_call_that_fails_raises_a_clear_error(
    peers: PeerSet, kamailio: Kamailio
) -> None:
    del peers
    async with Gateway(library_settings()) as gw:
        # carol is known to kamailio but not registered: the proxy answers 404 or 480.
        call = gw.place_call(**call_fields(kamailio, "lib-nobody", callee="carol"))
        with pytest.raises(CallNotEstablished) as caught:
            await call.established(timeout=20)
    info = caught.value.info
    assert info.status in (CallStatus.FAILED, CallStatus.BUSY), info
    assert info.sipStatus is not None and info.sipStatus >= 400, info
    assert str(caught.value).startswith(f"call 'lib-nobody' to 'carol' ended {info.status.value}")
    assert "before it was established" in str(caught.value)


def test_documented_example_runs_against_baresip(
    peers: PeerSet, kamailio: Kamailio, tmp_path: Path, media: MediaFiles
) -> None:
    doc = DOC.read_text()
    example = EXAMPLE.read_text()
    # The doc shows the example's main() verbatim: what runs here is what users read.
    body = example[example.index("async def main") : example.index('if __name__ == "__main__"')]
    assert body.strip() in doc, "docs/library.md no longer shows examples/library_call.py"

    bob_sending(peers, kamailio, tmp_path, media)
    probe = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')], "
        "'an HTTP server was imported'"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            str(EXAMPLE),
            *("--domain", "127.0.0.1", "--port", str(kamailio.port), "--proxy", "127.0.0.1"),
            *("--login", "alice", "--password", KAMAILIO_USERS["alice"]),
            *("--callee", "bob", "--seconds", "3"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    (peers.log_dir / "library-example.stderr").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["final"] == "FINISH"
    assert summary["codecs"] == {"video": "H264", "audio": "opus"}
    # 3 s at 25 fps and 50 frames/s, with a wide margin for a loaded machine.
    assert summary["frames"]["video"] >= 40 and summary["frames"]["audio"] >= 80, summary
    assert summary["frames"]["keyframes"] >= 1
    assert "call ESTABLISHED" in summary["events"] and summary["events"][-1] in (
        "call FINISH",
        "stream lib-bob UNPUBLISHED",
    )
    assert "stream lib-bob PUBLISHING" in summary["events"], summary["events"]
