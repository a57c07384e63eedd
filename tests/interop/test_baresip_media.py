"""A real call with real media: baresip sends H.264 video and audio, the gateway publishes it.

The acceptance test of the RTP receive path. baresip (``bob``, registered at
kamailio, answering by itself) plays a 640x360 25 fps test pattern through
its avformat source and H.264 encoder, and a 440 Hz tone from a WAV file
through ``aufile``; the real ``sipbridge serve`` process calls it with the
seed REST body and publishes what arrives (jitter buffer, depacketizers, A/V
sync) as the stream named by ``toStream``. What the gateway made of it is read
from ``/stream/find``; what baresip got back (RFC 4733 DTMF, the BYE) from its
log.

Tolerances, and why:

* **Rates** are measured over a window of about 7 s between two
  ``/stream/find`` samples, so the call's start-up does not count. baresip
  paces both sources from its own timers (the file's 25 fps, 20 ms ptime),
  seen here at 25.0-25.3 fps and 50.0-50.3 packets/s. +-20% is the slack for a
  loaded machine: a sample lands up to one REST round trip late and the
  jitter buffer releases what it holds (up to its delay) in bursts; it still
  catches lost halves, doubled frames and packets counted as frames (a video
  frame here is about two packets).
* **Totals** over the whole call are held to the same +-20% of the nominal
  rate times the time since ESTABLISHED, with one second allowed for
  baresip to open the file and its encoder.
* **Loss** on loopback is zero in every run seen; at most 1% is allowed.
* **Jitter** (RFC 3550 §6.4.1) is 1-2 ms on loopback; 50 ms is far above that
  and still well under the jitter buffer's maximum delay.
* **Buffer delay** must stay within the configured ``jitter_min_delay`` ..
  ``jitter_max_delay`` (the gateway's defaults: 20-500 ms).
* **A/V offset**: baresip sends RTCP SRs on both streams (the first after a
  few seconds), so the gateway syncs by sender reports and reports the
  correction it applies (about 46 ms here: the encoder's latency). It must be
  there by the end of the window and smaller than the jitter buffer's maximum
  delay; a clock-rate mix-up in the SR mapping would make it seconds.

baresip 1.0 logs RFC 4733 telephone-events it receives over RTP as
``received event: '1' (end=0)`` then ``(end=1)``, not as "received DTMF"
(that line is for SIP INFO).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipbridge.settings import RtpSettings
from tests.interop.baresip import Baresip, MediaSources
from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import Kamailio, PeerSet, require_binary
from tests.interop.test_baresip import establish, gateway_trace, media_lines

pytestmark = pytest.mark.interop

VIDEO_SIZE = (640, 360)
VIDEO_FPS = 25.0
VIDEO_BITRATE = 1_000_000
AUDIO_PTIME = 0.020
#: How long the call runs with media before the figures are checked (s).
MEDIA_SECONDS = 9.0
#: Relative tolerance on rates and totals (see the module docstring).
RATE_TOLERANCE = 0.20
#: Time baresip may take from its 200 OK to its first frames (s).
STARTUP_ALLOWANCE = 1.0
MAX_JITTER_MS = 50.0
MAX_LOSS_RATIO = 0.01


# --------------------------------------------------------------------------- media files


@dataclass(frozen=True)
class MediaFiles:
    """The files baresip plays: an H.264 MP4 without audio, tones as WAV."""

    video: Path
    tone_48k: Path
    tone_8k: Path


def _ffmpeg(ffmpeg: str, *args: str) -> None:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    """A 30 s test pattern (no audio track: avformat audio crashes baresip) and tones."""
    ffmpeg = require_binary("ffmpeg")
    folder = tmp_path_factory.mktemp("media")
    width, height = VIDEO_SIZE
    files = MediaFiles(folder / "pattern.mp4", folder / "tone48k.wav", folder / "tone8k.wav")
    _ffmpeg(
        ffmpeg,
        *("-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={VIDEO_FPS:g}"),
        *("-t", "30", "-an", "-pix_fmt", "yuv420p", "-c:v", "libx264"),
        *("-preset", "ultrafast", "-g", "25", str(files.video)),
    )
    for path, rate in ((files.tone_48k, 48000), (files.tone_8k, 8000)):
        _ffmpeg(
            ffmpeg,
            *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}"),
            *("-t", "30", "-ac", "1", "-c:a", "pcm_s16le", str(path)),
        )
    return files


# --------------------------------------------------------------------------- fixtures


def start_bob_with_media(
    peers: PeerSet,
    kamailio: Kamailio,
    tmp_path: Path,
    media: MediaSources,
    audio_codecs: tuple[str, ...] | None,
) -> Baresip:
    """baresip as bob, sending ``media``; stopped by the ``peers`` fixture."""
    phone = Baresip(
        tmp_path / "bob",
        peers.log_dir,
        user="bob",
        password=KAMAILIO_USERS["bob"],
        registrar=kamailio,
        audio_codecs=audio_codecs,
        media=media,
    )
    assert phone.has_h264, "baresip has no avcodec.so: run `make peers` (baresip-ffmpeg)"
    return phone.start(peers)


# --------------------------------------------------------------------------- stream samples


@dataclass(frozen=True)
class StreamSample:
    """One ``/stream/find`` answer and when it was taken (``time.monotonic()``)."""

    at: float
    stream: dict[str, Any]

    def track(self, kind: str) -> dict[str, Any]:
        tracks: list[dict[str, Any]] = [t for t in self.stream["tracks"] if t["kind"] == kind]
        assert len(tracks) == 1, self.stream
        return tracks[0]

    @property
    def status(self) -> str:
        return str(self.stream["status"])


def sample_stream(gateway: GatewayProcess, name: str) -> StreamSample:
    """The one stream called ``name``."""
    response = gateway.post("/stream/find", {"name": name})
    at = time.monotonic()
    assert response.status_code == 200, response.text
    streams: list[dict[str, Any]] = response.json()
    assert len(streams) == 1, streams
    return StreamSample(at, streams[0])


def wait_publishing(gateway: GatewayProcess, name: str, timeout: float = 5.0) -> StreamSample:
    """Poll until the stream publishes frames on both tracks."""
    deadline = time.monotonic() + timeout
    while True:
        sample = sample_stream(gateway, name)
        if sample.status == "PUBLISHING" and all(t["frames"] > 0 for t in sample.stream["tracks"]):
            return sample
        assert time.monotonic() < deadline, f"stream {name} not publishing: {sample.stream}"
        time.sleep(0.1)


def rate(first: StreamSample, last: StreamSample, kind: str, field: str = "frames") -> float:
    """``field`` per second of ``kind`` between two samples."""
    count = float(last.track(kind)[field] - first.track(kind)[field])
    return count / (last.at - first.at)


def assert_near(value: float, nominal: float, what: str) -> None:
    low, high = nominal * (1 - RATE_TOLERANCE), nominal * (1 + RATE_TOLERANCE)
    assert low <= value <= high, f"{what}: {value:.2f}, expected {nominal:g} +-20%"


def figures(samples: list[StreamSample], established_at: float) -> dict[str, Any]:
    """What the report and the artifacts keep of a run."""
    first, last = samples[0], samples[-1]
    return {
        "seconds_since_established": round(last.at - established_at, 2),
        "window_seconds": round(last.at - first.at, 2),
        "video_fps": round(rate(first, last, "video"), 2),
        "audio_frames_per_s": round(rate(first, last, "audio"), 2),
        "audio_packets_per_s": round(rate(first, last, "audio", "packetsReceived"), 2),
        "avOffsetMs": last.stream["avOffsetMs"],
        "samples": [
            {"t": round(s.at - established_at, 2), "tracks": s.stream["tracks"]} for s in samples
        ],
    }


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize(
    ("audio_codecs", "codec", "clock_rate", "channels"),
    [(None, "opus", 48000, 2), (("PCMU",), "PCMU", 8000, 1)],
    ids=["opus", "pcmu"],
)
def test_real_call_publishes_baresip_media(
    gateway: GatewayProcess,
    kamailio: Kamailio,
    peers: PeerSet,
    tmp_path: Path,
    media_files: MediaFiles,
    audio_codecs: tuple[str, ...] | None,
    codec: str,
    clock_rate: int,
    channels: int,
) -> None:
    media = MediaSources(
        video_file=media_files.video,
        audio_file=media_files.tone_48k if clock_rate == 48000 else media_files.tone_8k,
        video_size=VIDEO_SIZE,
        video_fps=VIDEO_FPS,
        video_bitrate=VIDEO_BITRATE,
    )
    bob = start_bob_with_media(peers, kamailio, tmp_path, media, audio_codecs)
    call_id = f"media-{codec.lower()}"
    name = f"stream-{call_id}"
    establish(gateway, kamailio, bob, call_id)
    established_at = time.monotonic()
    bob.wait_for_log(r"audio tx pipeline:\s+aufile ---> ", timeout=5)

    # The codecs the stream announces are the ones of baresip's SDP answer.
    answers = [
        m
        for m in gateway_trace(gateway)
        if m.direction == "recv" and m.first_line.startswith("SIP/2.0 200")
        if m.cseq_method == "INVITE"
    ]
    assert len(answers) == 1, [m.first_line for m in gateway_trace(gateway)]
    answer = media_lines(answers[0].body)
    assert answer["audio"].encodings[0].split("/")[0].lower() == codec.lower(), answer
    assert answer["video"].encodings[0].startswith("H264/"), answer

    # Media flows: sample once a second for MEDIA_SECONDS after the answer.
    samples = [wait_publishing(gateway, name)]
    while time.monotonic() < established_at + MEDIA_SECONDS:
        time.sleep(1.0)
        samples.append(sample_stream(gateway, name))
    # The first RTCP SRs may come late on a busy machine: give the A/V offset 4 s more.
    deadline = time.monotonic() + 4.0
    while samples[-1].stream["avOffsetMs"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(sample_stream(gateway, name))
    first, last = samples[0], samples[-1]
    (peers.log_dir / "media-figures.json").write_text(
        json.dumps(figures(samples, established_at), indent=1)
    )

    assert last.status == "PUBLISHING", last.stream
    assert last.stream["published"] is True
    assert last.stream["callId"] == call_id
    audio, video = last.track("audio"), last.track("video")
    assert (audio["codec"].lower(), audio["clockRate"], audio["channels"]) == (
        codec.lower(),
        clock_rate,
        channels,
    ), audio
    assert (video["codec"], video["clockRate"]) == ("H264", 90000), video
    # baresip re-encodes the file at its video_size: the SPS says 640x360 (cropped
    # from 640x368 macroblocks).
    assert (video["width"], video["height"]) == VIDEO_SIZE, video

    # Rates over the window, then totals over the whole call (module docstring).
    assert last.at - first.at >= MEDIA_SECONDS - 3.0, (first.at, last.at)
    assert_near(rate(first, last, "video"), VIDEO_FPS, "video frames/s")
    assert_near(rate(first, last, "audio"), 1 / AUDIO_PTIME, "audio frames/s")
    assert_near(rate(first, last, "audio", "packetsReceived"), 1 / AUDIO_PTIME, "audio packets/s")
    elapsed = last.at - established_at
    for kind, nominal in (("video", VIDEO_FPS), ("audio", 1 / AUDIO_PTIME)):
        frames = last.track(kind)["frames"]
        low = nominal * (elapsed - STARTUP_ALLOWANCE) * (1 - RATE_TOLERANCE)
        high = nominal * elapsed * (1 + RATE_TOLERANCE)
        assert low <= frames <= high, f"{kind}: {frames} frames in {elapsed:.2f} s"

    settings = RtpSettings()
    min_delay_ms, max_delay_ms = settings.jitter_min_delay * 1000, settings.jitter_max_delay * 1000
    for sample in samples:
        for track in sample.stream["tracks"]:
            assert min_delay_ms - 0.5 <= track["bufferDelayMs"] <= max_delay_ms + 0.5, track
    for track in (audio, video):
        assert track["packetsLost"] <= MAX_LOSS_RATIO * track["packetsReceived"], track
        assert 0 <= track["jitterMs"] < MAX_JITTER_MS, track
        assert track["bytes"] > 0
    # Audio: one frame per packet; the difference is what the jitter buffer holds.
    held = audio["packetsReceived"] - audio["frames"]
    assert 0 <= held <= max_delay_ms / 1000 / AUDIO_PTIME + 2, audio
    # Video: an access unit takes one packet or more (FU-A); it starts on a keyframe.
    assert video["packetsReceived"] >= video["frames"], video
    assert 1 <= video["keyframes"] <= video["frames"], video
    # Counters only grow.
    for kind in ("audio", "video"):
        counts = [s.track(kind)["frames"] for s in samples]
        assert counts == sorted(counts), (kind, counts)

    offset = last.stream["avOffsetMs"]
    assert offset is not None, f"no A/V sync by sender reports: {last.stream}"
    assert abs(offset) < max_delay_ms, offset

    # RFC 4733 DTMF on the audio stream reaches baresip (RTP, not SIP INFO).
    mark = bob.log_mark()
    body = {"callId": call_id, "dtmf": "12#", "type": "RFC2833"}
    response = gateway.post("/call/send_dtmf", body)
    assert response.status_code == 200, response.text
    bob.wait_for_log(r"received event: '#' \(end=1\)", since=mark, timeout=5)
    events = re.findall(r"received event: '(.)' \(end=([01])\)", bob.read_log()[mark:])
    assert [digit for digit, end in events if end == "1"] == ["1", "2", "#"], events
    assert [digit for digit, end in events if end == "0"] == ["1", "2", "#"], events
    assert "INFO" not in bob.received_requests(mark)

    # Hang up: the call finishes, the stream is unpublished with what was buffered.
    mark = bob.log_mark()
    assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    call, _ = gateway.wait_status(call_id, {"FINISH", "FAILED"})
    assert call["status"] == "FINISH", call
    assert call["info"] == "Normal call clearing"
    bob.wait_for_log(r"session closed: Connection reset by peer", since=mark, timeout=5)
    deadline = time.monotonic() + 5.0
    ended = sample_stream(gateway, name)
    while ended.status != "UNPUBLISHED" and time.monotonic() < deadline:
        time.sleep(0.1)
        ended = sample_stream(gateway, name)
    assert ended.status == "UNPUBLISHED", ended.stream
    assert ended.stream["published"] is False
    for kind in ("audio", "video"):
        assert ended.track(kind)["frames"] >= last.track(kind)["frames"], ended.stream
