"""Recording through the real gateway: real calls recorded to files, checked with ffmpeg.

Two kinds of callee, both real:

* **baresip** (``bob``, registered at kamailio, answering by itself) sends its
  H.264 encoding of a test pattern and a PCMU tone, as in
  ``test_baresip_media.py``: a softphone's media, for the REST-started and the
  automatic recording.
* **sipp + ffmpeg**: sipp answers the INVITE (PCMU + H.264 with the clip's
  ``sprop-parameter-sets``) and ffmpeg sends a clip made by
  :mod:`tests.interop.media_tools` as RTP with RTCP sender reports to the ports
  of the gateway's offer, in real time. The clip is known exactly (its duration,
  its keyframes, its flash-and-beep A/V truth), so the file can be held to it:
  A/V sync, crash safety and rotation.

Every file is checked from the outside: ffprobe (codecs, duration), ``ffmpeg
-v error -i FILE -map 0 -f null -`` (no error), PyAV (packet times, the
``SIPBRIDGE_START_OFFSET`` tag). Figures (file durations, A/V errors, seconds
lost to ``kill -9``) go to ``artifacts/<test>/figures.json`` and stdout.

Tolerances, and why:

* **Duration of a REST-started recording**: the file starts on the stream's
  cached GOP (its last keyframe before the request) or, without one, on the
  next keyframe (asked for at once by RTCP PLI/FIR and SIP INFO; baresip 1.0
  sends one only at the call's start), and ends with the call's last frame.
  It must be within one GOP (+0.3 s: frame durations, REST round trips) of
  the stream's video time between the request and the hang-up, and never more
  than the call's whole video time.
* **A/V sync**: 5 ms, as the RTMP output (``test_rtmp_sync.py``).
* **kill -9**: what the file holds must reach to within 3 s of the kill
  (the Matroska cluster being filled, 1 s, what the queues held, and the
  jitter buffer's delay).
* **Rotation**: file N's video ends where file N+1 starts (1.5 ms: Matroska's
  millisecond timestamps), its audio within one 20 ms frame of it; no frame
  lost or doubled (PCMU payloads compared byte for byte with the clip).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from tests.interop.baresip import Baresip, MediaSources
from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.media_tools import (
    AudioChunk,
    ClipSpec,
    VideoSample,
    beep_onsets,
    container_packets,
    flash_onsets,
    make_clip,
    measure_alignment,
    read_container,
    sender_argv,
    source_truth,
    sprop_parameter_sets,
)
from tests.interop.peers import (
    Kamailio,
    ManagedProcess,
    PeerSet,
    Sipp,
    free_port,
    require_binary,
)
from tests.interop.test_baresip import establish
from tests.interop.test_baresip_media import (
    VIDEO_BITRATE,
    VIDEO_FPS,
    VIDEO_SIZE,
    MediaFiles,
    media_files,  # noqa: F401 - the module-scoped fixture, shared
    start_bob_with_media,
)
from tests.interop.test_calls import startup_body
from tests.recording.media import decode_errors, packets, probe, start_offset

pytestmark = pytest.mark.interop

#: After ffmpeg's last packet: the jitter buffer (up to 0.5 s) releases what it holds.
DRAIN = 0.8
#: How long a recorded call runs with baresip's media (s).
BARESIP_SECONDS = 6.0
#: A file name still being written (the recorder renames it when finished).
PARTIAL = "partial"
SYNC_TOLERANCE_MS = 5.0
MAX_LOST_ON_KILL = 3.0
#: A REST-started file may end this much after the stream's video time (see module doc).
DURATION_SLACK = 0.3

#: sipp's answer: PCMU and H.264 (packetization-mode 1, the clip's parameter sets), on
#: sipp's own media ports; the gateway keeps its RTCP and keepalives going there. The
#: recorder's keyframe requests come as SIP INFO too (the clip has its own keyframes).
AV_ANSWER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas_answer_av">
  <Global variables="sprop"/>
  <recv request="INVITE" rrs="true"/>
  <send>
    <![CDATA[
      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv
      m=video [media_port+2] RTP/AVP 96
      a=rtpmap:96 H264/90000
      a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=[$sprop]
      a=sendrecv
    ]]>
  </send>
  <recv request="ACK"/>
  <!-- Until the BYE: keyframe requests by SIP INFO (picture_fast_update) get a 200. -->
  <label id="wait"/>
  <recv request="INFO" optional="true" next="info"/>
  <recv request="BYE" timeout="300000"/>
  <send next="end">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <label id="info"/>
  <send next="wait">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
</scenario>
"""


# --------------------------------------------------------------------------- gateway


def record_settings(directory: Path, **values: object) -> str:
    """A ``[record]`` table writing into ``directory`` with ``values`` (TOML literals)."""
    lines = ["[record]", f"directory = {json.dumps(str(directory))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def recording_gateway(workdir: Path, **values: object) -> Iterator[GatewayProcess]:
    """The real gateway (exits 0, no traceback) recording into ``workdir/recordings``."""
    settings = record_settings(workdir / "recordings", **values)
    with running_gateway(workdir, extra_settings=settings) as process:
        yield process


def recordings_dir(gateway: GatewayProcess) -> Path:
    return gateway.workdir / "recordings"


def find_all_recordings(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """``/recorder/find_all``; ``[]`` for its 404 (none)."""
    response = gateway.post("/recorder/find_all")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def wait_recording(
    gateway: GatewayProcess, stream_name: str, statuses: set[str], timeout: float = 15.0
) -> dict[str, Any]:
    """Poll ``/recorder/find_all`` until the stream's latest recording has one of ``statuses``."""
    deadline = time.monotonic() + timeout
    latest: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        mine = [r for r in find_all_recordings(gateway) if r["streamName"] == stream_name]
        latest = mine[-1] if mine else None
        if latest is not None and latest["status"] in statuses:
            return latest
        time.sleep(0.1)
    raise AssertionError(f"recording of {stream_name} never {sorted(statuses)}: {latest}")


def stream_of(gateway: GatewayProcess, name: str) -> dict[str, Any]:
    response = gateway.post("/stream/find", {"name": name})
    assert response.status_code == 200, response.text
    [stream] = response.json()
    assert isinstance(stream, dict)
    return stream


def track(stream: dict[str, Any], kind: str) -> dict[str, Any]:
    [found] = [t for t in stream["tracks"] if t["kind"] == kind]
    assert isinstance(found, dict)
    return found


def wait_publishing(gateway: GatewayProcess, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """The stream once both its tracks have frames."""
    deadline = time.monotonic() + timeout
    while True:
        stream = stream_of(gateway, name)
        kinds = {t["kind"]: t["frames"] for t in stream["tracks"]}
        if stream["status"] == "PUBLISHING" and len(kinds) == 2 and all(kinds.values()):
            return stream
        assert time.monotonic() < deadline, f"stream {name} not publishing: {stream}"
        time.sleep(0.1)


def wait_stream_ended(gateway: GatewayProcess, name: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (stream := stream_of(gateway, name))["status"] == "PUBLISHING":
        assert time.monotonic() < deadline, stream
        time.sleep(0.1)
    return stream


def hang_up(gateway: GatewayProcess, call_id: str) -> None:
    assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    call, _ = gateway.wait_status(call_id, {"FINISH", "FAILED"})
    assert call["status"] == "FINISH", call


# --------------------------------------------------------------------------- files


def probed(path: Path) -> dict[str, Any]:
    """ffprobe of a file: ``{"video": stream, "audio": stream, "format": format}``."""
    data = probe(path)
    out: dict[str, Any] = {s["codec_type"]: s for s in data["streams"]}
    out["format"] = data["format"]
    return out


def media_seconds(path: Path) -> float:
    """The end of the last packet of either track (file time, s)."""
    found = packets(path)
    return max(t + d for kind in ("video", "audio") for t, d in found[kind])


def first_video_is_keyframe(path: Path) -> bool:
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        return bool(first.is_keyframe)


def record_figures(artifacts_dir: Path, figures: dict[str, Any]) -> None:
    text = json.dumps(figures, indent=2, sort_keys=True)
    (artifacts_dir / "figures.json").write_text(text + "\n")
    print(text)


def file_report(path: Path) -> dict[str, Any]:
    """What the figures keep of a file: codecs, size, rate, duration, ffmpeg's errors."""
    found = probed(path)
    video, audio = found.get("video", {}), found.get("audio", {})
    return {
        "name": path.name,
        "video_codec": video.get("codec_name"),
        "size": [video.get("width"), video.get("height")],
        "r_frame_rate": video.get("r_frame_rate"),
        "audio_codec": audio.get("codec_name"),
        "ffprobe_duration_s": float(found["format"].get("duration", "nan")),
        "media_s": round(media_seconds(path), 3),
        "ffmpeg_errors": decode_errors(path)[:2000],
    }


def assert_plays(path: Path, audio_codec: str, report: dict[str, Any] | None = None) -> None:
    """H.264 + ``audio_codec``; ``ffmpeg -v error`` decoding it prints nothing."""
    report = report or file_report(path)
    assert report["video_codec"] == "h264", report
    assert report["audio_codec"] == audio_codec, report
    assert report["ffmpeg_errors"] == "", report


# --------------------------------------------------------------------------- sipp + ffmpeg


@dataclass
class ClipCall:
    """A call answered by sipp whose media ffmpeg sends from a clip."""

    call_id: str
    stream_name: str
    callee: Sipp
    spec: ClipSpec
    clip: Path
    sender: ManagedProcess | None = None

    def send(self, peers: PeerSet, ffmpeg: str) -> ManagedProcess:
        """ffmpeg sends the clip (RTP + RTCP SR) to the ports of the gateway's offer."""
        invites = [
            e for e in self.callee.trace() if e.direction == "received" and e.method == "INVITE"
        ]
        assert invites, self.callee.flow()
        offer = invites[0].body
        ports = {
            kind: int(port) for kind, port in re.findall(r"^m=(audio|video) (\d+) ", offer, re.M)
        }
        argv = sender_argv(
            ffmpeg,
            self.clip,
            video=(ports["video"], ports["video"] + 1),
            audio=(ports["audio"], ports["audio"] + 1),
            audio_codec="PCMU",
        )
        bound = f"{self.spec.duration + 20:.0f}"
        self.sender = peers.process(["timeout", "-s", "KILL", bound, *argv], name="ffmpeg-sender")
        return self.sender

    def wait_sent(self) -> None:
        """Until ffmpeg has sent the whole clip (it exits), then the jitter buffer's drain."""
        assert self.sender is not None
        assert self.sender.wait(self.spec.duration + 20) == 0, self.sender.log_tail()
        time.sleep(DRAIN)


def start_clip_call(
    gateway: GatewayProcess,
    peers: PeerSet,
    tmp_path: Path,
    call_id: str,
    spec: ClipSpec,
) -> ClipCall:
    """Make the clip, start sipp answering with its parameter sets, place the call."""
    ffmpeg = require_binary("ffmpeg")
    clip = make_clip(ffmpeg, spec, tmp_path / f"{call_id}.mkv")
    scenario = tmp_path / "uas_answer_av.xml"
    scenario.write_text(AV_ANSWER_SCENARIO)
    callee = peers.sipp(
        scenario,
        variables={"sprop": sprop_parameter_sets(clip)},
        timeout=spec.duration + 60,
        name=f"sipp-{call_id}",
    )
    stream_name = f"stream-{call_id}"
    response = gateway.post("/call/startup", startup_body(call_id, callee))
    assert response.status_code == 200, response.text
    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, callee.errors())
    return ClipCall(call_id, stream_name, callee, spec, clip)


# --------------------------------------------------------------------------- baresip


def start_bob(peers: PeerSet, kamailio: Kamailio, tmp_path: Path, files: MediaFiles) -> Baresip:
    media = MediaSources(
        video_file=files.video,
        audio_file=files.tone_8k,
        video_size=VIDEO_SIZE,
        video_fps=VIDEO_FPS,
        video_bitrate=VIDEO_BITRATE,
    )
    return start_bob_with_media(peers, kamailio, tmp_path, media, ("PCMU",))


# --------------------------------------------------------------------------- 1. REST


def test_rest_started_recording_of_a_baresip_call(
    kamailio: Kamailio,
    peers: PeerSet,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
    media_files: MediaFiles,  # noqa: F811 - the fixture imported above
) -> None:
    bob = start_bob(peers, kamailio, tmp_path, media_files)
    call_id = "rec-rest"
    name = f"stream-{call_id}"
    with recording_gateway(tmp_path_factory.mktemp("gateway")) as gateway:
        establish(gateway, kamailio, bob, call_id)
        wait_publishing(gateway, name)
        assert find_all_recordings(gateway) == []  # [record] auto is off

        before = track(stream_of(gateway, name), "video")
        response = gateway.post("/stream/startRecording", {"name": name})
        assert response.status_code == 200, response.text
        started = response.json()
        assert started["streamName"] == name and started["callId"] == call_id
        assert started["status"] in ("PENDING", "RECORDING")
        recording = wait_recording(gateway, name, {"RECORDING"}, timeout=10)
        assert recording["recordingId"] == started["recordingId"]
        assert PARTIAL in recording["fileName"]
        time.sleep(BARESIP_SECONDS)

        hang_up(gateway, call_id)
        ended = wait_stream_ended(gateway, name)
        done = wait_recording(gateway, name, {"STOPPED", "FAILED"})
        listed = find_all_recordings(gateway)
    after = track(ended, "video")

    assert done["status"] == "STOPPED", done
    assert done["mediaSessionId"] == started["mediaSessionId"]
    [file] = done["files"]
    assert file["finished"] and file["error"] is None, file
    assert PARTIAL not in file["fileName"] and file["fileName"].endswith(".mkv")
    assert [r["fileName"] for r in listed] == [file["fileName"]]  # WCS's find_all fields
    path = recordings_dir(gateway) / file["fileName"]
    assert sorted(p.name for p in recordings_dir(gateway).iterdir()) == [path.name]
    report = file_report(path)
    duration = report["ffprobe_duration_s"]
    # The stream's video time while recorded, and its GOP (frames per keyframe).
    stream_seconds = (after["frames"] - before["frames"]) / VIDEO_FPS
    gop_seconds = after["frames"] / max(1, after["keyframes"]) / VIDEO_FPS
    call_seconds = after["frames"] / VIDEO_FPS
    figures = {
        "file": file,
        "report": report,
        "stream_video_s_total": round(call_seconds, 3),
        "stream_video_s_while_recorded": round(stream_seconds, 3),
        "stream_gop_s": round(gop_seconds, 3),
        "keyframes": after["keyframes"],
    }
    record_figures(artifacts_dir, figures)
    assert report["size"] == list(VIDEO_SIZE), figures
    assert file["duration"] == pytest.approx(duration, abs=0.05), figures
    # Within one GOP of the stream's time: the file starts at the next keyframe (asked
    # for at once), or with the stream's cached GOP when it has one.
    assert abs(duration - stream_seconds) <= gop_seconds + DURATION_SLACK, figures
    assert duration <= call_seconds + DURATION_SLACK, figures  # never more than the call had
    assert duration >= BARESIP_SECONDS - 1.0, figures
    assert_plays(path, "pcm_mulaw", report)


# --------------------------------------------------------------------------- 2. auto


def test_automatic_recording_without_a_request(
    kamailio: Kamailio,
    peers: PeerSet,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
    media_files: MediaFiles,  # noqa: F811
) -> None:
    bob = start_bob(peers, kamailio, tmp_path, media_files)
    call_id = "rec-auto"
    name = f"stream-{call_id}"
    workdir = tmp_path_factory.mktemp("gateway")
    with recording_gateway(workdir, auto=True) as gateway:
        establish(gateway, kamailio, bob, call_id)
        wait_publishing(gateway, name)
        recording = wait_recording(gateway, name, {"RECORDING"}, timeout=10)
        assert recording["callId"] == call_id
        time.sleep(BARESIP_SECONDS / 2)
        hang_up(gateway, call_id)
        done = wait_recording(gateway, name, {"STOPPED", "FAILED"})
        listed = find_all_recordings(gateway)
        log = gateway.log_text()
    assert "startRecording" not in log and "/recorder/startup" not in log
    assert [r["recordingId"] for r in listed] == [recording["recordingId"]]
    assert done["status"] == "STOPPED", done
    [file] = done["files"]
    assert listed[0]["fileName"] == file["fileName"]
    assert file["fileName"].startswith(f"{name}-") and PARTIAL not in file["fileName"]
    path = recordings_dir(gateway) / file["fileName"]
    report = file_report(path)
    record_figures(artifacts_dir, {"file": file, "report": report})
    # Recorded from the reservation: the call's media from its first keyframe.
    assert report["ffprobe_duration_s"] >= BARESIP_SECONDS / 2, report
    assert_plays(path, "pcm_mulaw", report)


# --------------------------------------------------------------------------- 3. A/V sync

#: Flashes 1.2 s apart (a misalignment of hundreds of ms cannot pair with the wrong
#: beep), audio starting 0.4 s after the video: test_rtmp_sync.py's clip, shorter.
SYNC_SPEC = ClipSpec(
    pattern="flash", width=320, height=240, duration=12.0, flash_every=30, audio_start=0.4
)


def test_recorded_file_keeps_the_sender_sync(
    peers: PeerSet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> None:
    ffmpeg = require_binary("ffmpeg")
    with recording_gateway(tmp_path_factory.mktemp("gateway"), auto=True) as gateway:
        call = start_clip_call(gateway, peers, tmp_path, "rec-sync", SYNC_SPEC)
        call.send(peers, ffmpeg)
        call.wait_sent()
        stream = stream_of(gateway, call.stream_name)
        hang_up(gateway, call.call_id)
        done = wait_recording(gateway, call.stream_name, {"STOPPED", "FAILED"})
    assert done["status"] == "STOPPED", done
    truth = source_truth(call.clip, SYNC_SPEC)
    pictures: list[VideoSample] = []
    chunks: list[AudioChunk] = []
    for file in done["files"]:
        path = recordings_dir(gateway) / file["fileName"]
        assert_plays(path, "pcm_mulaw")
        offset = start_offset(path)
        file_pictures, file_chunks = read_container(path)
        pictures += [VideoSample(p.pts + offset, p.luma, p.keyframe) for p in file_pictures]
        chunks += [AudioChunk(c.pts + offset, c.rate, c.samples) for c in file_chunks]
    report = measure_alignment(
        flash_onsets(pictures, 1 / SYNC_SPEC.fps),
        beep_onsets(chunks),
        truth=truth,
        period=SYNC_SPEC.period,
    )
    figures = {
        "files": [f["fileName"] for f in done["files"]],
        "stream_av_offset_ms": stream["avOffsetMs"],
        "video_frames": len(pictures),
        **report.summary(),
    }
    record_figures(artifacts_dir, figures)
    assert len(pictures) == SYNC_SPEC.video_frames, figures  # the whole clip was recorded
    assert report.events >= 6, figures
    assert report.max_abs_ms <= SYNC_TOLERANCE_MS, figures


# --------------------------------------------------------------------------- 4. crashes

#: Keyframes every second; long enough to kill the gateway in the middle.
CRASH_SPEC = ClipSpec(pattern="flash", width=320, height=240, duration=20.0, flash_every=25)
#: How long the recording runs before the gateway is killed (s of wall time).
RUN_BEFORE_KILL = 8.0


def start_time_of(file_name: str) -> float:
    """``{startTime}`` of the default template (``{streamName}-{startTime}-{endTime}``), s."""
    match = re.search(r"-(\d{13})-(?:\d{13}|partial)\.mkv$", file_name)
    assert match is not None, file_name
    return int(match[1]) / 1000


def test_kill_9_leaves_a_playable_file(
    peers: PeerSet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> None:
    ffmpeg = require_binary("ffmpeg")
    workdir = tmp_path_factory.mktemp("gateway")
    rtp = free_port("udp", span=10)
    gateway = GatewayProcess(
        workdir,
        http_port=free_port("tcp"),
        sip_port=free_port("sip"),
        rtp_range=(rtp, rtp + 9),
        extra_settings=record_settings(workdir / "recordings", auto=True),
    )
    gateway.start()
    try:
        call = start_clip_call(gateway, peers, tmp_path, "rec-kill", CRASH_SPEC)
        call.send(peers, ffmpeg)
        recording = wait_recording(gateway, call.stream_name, {"RECORDING"}, timeout=10)
        time.sleep(RUN_BEFORE_KILL)
        os.kill(gateway.pid, signal.SIGKILL)
        killed_at = time.time()
        assert gateway.process is not None
        assert gateway.process.wait(10) == -signal.SIGKILL
    finally:
        gateway.stop()
    [path] = list(recordings_dir(gateway).iterdir())
    assert path.name == recording["fileName"]
    assert PARTIAL in path.name  # never finished: it keeps its in-progress name
    assert_plays(path, "pcm_mulaw")
    elapsed = killed_at - start_time_of(path.name)
    recorded = media_seconds(path)
    figures = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "elapsed_s": round(elapsed, 3),
        "recorded_s": round(recorded, 3),
        "lost_s": round(elapsed - recorded, 3),
    }
    record_figures(artifacts_dir, figures)
    assert recorded >= elapsed - MAX_LOST_ON_KILL, figures
    assert recorded <= elapsed + 0.5, figures  # the file's time is the call's
    video = packets(path)["video"]
    assert len(video) >= (recorded - 0.1) * CRASH_SPEC.fps, figures  # no hole inside


def test_sigterm_finishes_the_recording_and_exits_0(
    peers: PeerSet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> None:
    ffmpeg = require_binary("ffmpeg")
    with recording_gateway(tmp_path_factory.mktemp("gateway"), auto=True) as gateway:
        call = start_clip_call(gateway, peers, tmp_path, "rec-term", CRASH_SPEC)
        call.send(peers, ffmpeg)
        recording = wait_recording(gateway, call.stream_name, {"RECORDING"}, timeout=10)
        time.sleep(4.0)
        stream = stream_of(gateway, call.stream_name)
        assert gateway.stop() == 0, gateway.log_text()[-3000:]
        stopped_log = gateway.log_text()
    # The call was hung up on the way out: sipp got its BYE.
    assert call.callee.wait(10) == 0, call.callee.errors()
    assert call.callee.received_requests()[-1] == "BYE"
    [path] = list(recordings_dir(gateway).iterdir())
    assert PARTIAL not in path.name, path.name  # finished: renamed with its end time
    assert path.name.startswith(f"{call.stream_name}-")
    assert path.name != recording["fileName"]
    report = file_report(path)
    video_frames = track(stream, "video")["frames"]
    figures = {"report": report, "stream_video_frames_just_before_sigterm": video_frames}
    record_figures(artifacts_dir, figures)
    assert_plays(path, "pcm_mulaw", report)
    # The trailer was written (a duration), and everything published before the stop.
    assert report["ffprobe_duration_s"] == pytest.approx(report["media_s"], abs=0.1), figures
    assert report["media_s"] >= video_frames / CRASH_SPEC.fps, figures
    assert "finishing 1 recording(s)" in stopped_log


# --------------------------------------------------------------------------- 5. rotation

#: Keyframes every second (at 0.48 s + n; the first frame is one too), rotation after 2 s.
ROTATE_GOP_FRAMES = 25
ROTATE_SPEC = ClipSpec(
    pattern="flash", width=320, height=240, duration=9.0, flash_every=ROTATE_GOP_FRAMES
)
ROTATE_PERIOD = 2.0
_NAME = re.compile(r"-(\d{13})-(\d{13})\.mkv$")


def test_rotation_through_the_gateway_is_continuous(
    peers: PeerSet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> None:
    ffmpeg = require_binary("ffmpeg")
    workdir = tmp_path_factory.mktemp("gateway")
    with recording_gateway(workdir, auto=True, rotate_duration=ROTATE_PERIOD) as gateway:
        call = start_clip_call(gateway, peers, tmp_path, "rec-rotate", ROTATE_SPEC)
        call.send(peers, ffmpeg)
        call.wait_sent()
        stream = stream_of(gateway, call.stream_name)
        hang_up(gateway, call.call_id)
        done = wait_recording(gateway, call.stream_name, {"STOPPED", "FAILED"})
    assert done["status"] == "STOPPED", done
    files = [recordings_dir(gateway) / f["fileName"] for f in done["files"]]
    assert sorted(p.name for p in recordings_dir(gateway).iterdir()) == sorted(
        p.name for p in files
    )
    figures: dict[str, Any] = {
        "files": [],
        "recording": {k: done[k] for k in ("framesWritten", "bytesWritten", "dropped")},
        "stream_tracks": stream["tracks"],
    }
    audio_payloads: list[bytes] = []
    video_count = 0
    for index, path in enumerate(files):
        assert_plays(path, "pcm_mulaw")
        assert first_video_is_keyframe(path), path.name
        found = packets(path)
        offset = start_offset(path)
        video_count += len(found["video"])
        with av.open(str(path)) as container:
            audio_payloads += [bytes(p) for p in container.demux(audio=0) if p.size]
        video_end = offset + found["video"][-1][0] + found["video"][-1][1]
        audio_end = offset + found["audio"][-1][0] + found["audio"][-1][1]
        figures["files"].append(
            {"name": path.name, "offset": offset, "video_end": round(video_end, 4),
             "audio_start": round(offset + found["audio"][0][0], 4),
             "audio_end": round(audio_end, 4), "video_frames": len(found["video"]),
             "audio_frames": len(found["audio"])}
        )  # fmt: skip
        if index + 1 == len(files):
            continue
        following = files[index + 1]
        next_offset = start_offset(following)
        assert video_end == pytest.approx(next_offset, abs=0.0015), figures
        assert abs(audio_end - next_offset) <= 0.020 + 0.0015, figures
        # The names meet too: file N's endTime is file N+1's startTime.
        ours, theirs = _NAME.search(path.name), _NAME.search(following.name)
        assert ours is not None and theirs is not None
        assert ours[2] == theirs[1], (path.name, following.name)
    record_figures(artifacts_dir, figures)
    # 9 s cut after 2 s at the next keyframe (1 s apart): 3 to 5 files, each but the last
    # lasting from the period to the period plus one GOP. A keyframe landing on the
    # period exactly may miss it by microseconds of call-clock drift: one GOP more.
    assert 3 <= len(files) <= 5, figures
    for entry in figures["files"][:-1]:
        period_frames = ROTATE_PERIOD * ROTATE_SPEC.fps
        assert period_frames <= entry["video_frames"] <= period_frames + ROTATE_GOP_FRAMES, figures
    # Nothing lost or doubled at the cuts: every frame the stream published is in one
    # file (the counts), and the clip's audio is there byte for byte, in order.
    audio_frames = track(stream, "audio")["frames"]
    assert done["dropped"] == 0, figures
    assert done["framesWritten"] == audio_frames + track(stream, "video")["frames"], figures
    assert len(audio_payloads) == audio_frames == ROTATE_SPEC.audio_frames, figures
    assert video_count == track(stream, "video")["frames"] == ROTATE_SPEC.video_frames
    _, clip_audio = container_packets(call.clip)
    assert b"".join(audio_payloads) == b"".join(clip_audio)
