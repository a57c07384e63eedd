"""SIP as RTMP end to end: a real call pushed to a real nginx-rtmp, pulled back by ffprobe.

baresip (``bob``, registered at kamailio, answering by itself) sends a 640x360
25 fps H.264 test pattern and a PCMU tone; the real ``sipbridge serve`` calls it
with the seed REST body plus ``rtmpUrl`` pointing at nginx's ``live``
application. The ``rtmp_`` rule publishes the call's stream as
``rtmp_<streamName>``; ffprobe pulling it from nginx must see H.264 at the size
baresip sent and AAC, and decode frames of both. Then the ``/push/*`` methods
are driven against the same call: a second push of the stream to a full URL,
the same again (409), its terminate (``STOPPED``), and the call's hang-up
ending the first push.

The time from the call's 200 OK (the gateway's ``ESTABLISHED`` log line, which
it writes as it handles the response) to the first video frame written to
nginx (the push's ``firstVideoAt``) is measured and kept in
``sip-as-rtmp-figures.json`` in the artifacts; it is not asserted (benchmarks
are not tests), only bounded by the 15 s the test waits for it.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.interop.baresip import MediaSources
from tests.interop.gateway_process import GatewayProcess
from tests.interop.nginx import NginxRtmp
from tests.interop.peers import Kamailio, PeerSet, require_binary
from tests.interop.test_baresip_media import (
    VIDEO_BITRATE,
    VIDEO_FPS,
    VIDEO_SIZE,
    MediaFiles,
    media_files,  # noqa: F401 - the module-scoped fixture, shared
    start_bob_with_media,
)
from tests.interop.test_calls_via_kamailio import seed_body

pytestmark = pytest.mark.interop

#: How long ffprobe reads the pulled stream (s of media).
PROBE_SECONDS = 4
#: ffprobe's ``-rw_timeout`` (µs). nginx-rtmp keeps no GOP: with ``wait_key on`` a
#: player joining a live stream gets nothing until the publisher's next keyframe, and
#: baresip's H.264 encoder sends one about every 10 s (the gateway asks the caller for
#: one only when one of *its* subscribers needs it, not when nginx gets a player).
PULL_RW_TIMEOUT_US = 15_000_000
#: Kill ffprobe after this long whatever happens (s).
PULL_KILL_AFTER = 40
_LOG_TS = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z\b.*?: (?P<msg>.*)$", re.M)


def probe(url: str, seconds: int = PROBE_SECONDS) -> dict[str, Any]:
    """ffprobe of a live RTMP URL: streams, with the frames read in ``seconds`` counted."""
    ffprobe = require_binary("ffprobe")
    argv = [
        *("timeout", "-s", "KILL", str(PULL_KILL_AFTER), ffprobe),
        *("-v", "error", "-rw_timeout", str(PULL_RW_TIMEOUT_US)),
        *("-read_intervals", f"%+{seconds}", "-count_frames"),
        *("-show_entries", "stream=codec_type,codec_name,width,height,sample_rate,nb_read_frames"),
        *("-of", "json", url),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PULL_KILL_AFTER + 5)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout)
    result["stderr"] = done.stderr
    return result


def streams_by_kind(probed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["codec_type"]: s for s in probed["streams"]}


def find_pushes(gateway: GatewayProcess, **filters: str) -> list[dict[str, Any]]:
    response = gateway.post("/push/find", filters) if filters else gateway.post("/push/find_all")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    pushes: list[dict[str, Any]] = response.json()
    return pushes


def wait_push(
    gateway: GatewayProcess, media_session_id: str, status: str, timeout: float = 15.0
) -> dict[str, Any]:
    """Poll ``/push/find_all`` until the push has ``status`` (and, for PROCESSED_REMOTE,
    video out)."""
    deadline = time.monotonic() + timeout
    push: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        push = next(
            (p for p in find_pushes(gateway) if p["mediaSessionId"] == media_session_id), None
        )
        video_out = status != "PROCESSED_REMOTE" or (push is not None and push["firstVideoAt"])
        if push is not None and push["status"] == status and video_out:
            return push
        time.sleep(0.1)
    raise AssertionError(f"push {media_session_id} never {status}: {push}")


def log_time_ms(gateway: GatewayProcess, pattern: str) -> int:
    """Unix ms of the first gateway log line whose message matches ``pattern``."""
    for match in _LOG_TS.finditer(gateway.log_text()):
        if re.search(pattern, match["msg"]):
            when = datetime.datetime.fromisoformat(match["ts"]).replace(tzinfo=datetime.UTC)
            return round(when.timestamp() * 1000)
    raise AssertionError(f"no log line matches {pattern!r}")


def test_call_pushed_to_nginx_and_push_methods(
    gateway: GatewayProcess,
    kamailio: Kamailio,
    peers: PeerSet,
    tmp_path: Path,
    media_files: MediaFiles,  # noqa: F811 - the fixture imported above
) -> None:
    nginx = NginxRtmp(peers).start()
    app_url = nginx.url("").rstrip("/")  # rtmp://127.0.0.1:PORT/live: names no stream
    media = MediaSources(
        video_file=media_files.video,
        audio_file=media_files.tone_8k,
        video_size=VIDEO_SIZE,
        video_fps=VIDEO_FPS,
        video_bitrate=VIDEO_BITRATE,
    )
    bob = start_bob_with_media(peers, kamailio, tmp_path, media, ("PCMU",))
    call_id = "sip-as-rtmp"
    stream_name = f"stream-{call_id}"
    published = f"rtmp_{stream_name}"

    # /call/startup with rtmpUrl: the push exists at once, PENDING until media comes.
    response = gateway.post("/call/startup", seed_body(call_id, kamailio, rtmpUrl=app_url))
    assert response.status_code == 200, response.text
    assert response.json()["rtmpUrl"] == app_url
    (first,) = find_pushes(gateway)
    assert first["streamName"] == stream_name
    assert first["callId"] == call_id
    assert first["targetUrl"] == nginx.url(published)
    assert first["status"] in ("PENDING", "CONNECTED", "PROCESSED_REMOTE")

    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, bob.diagnostics())

    # The push connects and its first keyframe reaches nginx; nginx sees a publisher.
    first = wait_push(gateway, first["mediaSessionId"], "PROCESSED_REMOTE")
    nginx.wait_publishing(published, timeout=10)
    answered_ms = log_time_ms(gateway, rf"^call {call_id}: ESTABLISHED\b")
    first_video_ms = int(first["firstVideoAt"])

    # ffprobe pulling from nginx sees what baresip sent: H.264 640x360, and AAC.
    probed = probe(nginx.url(published))
    kinds = streams_by_kind(probed)
    assert set(kinds) == {"video", "audio"}, probed
    video, audio = kinds["video"], kinds["audio"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", *VIDEO_SIZE), video
    assert (audio["codec_name"], audio["sample_rate"]) == ("aac", "48000"), audio
    # About PROBE_SECONDS of media were read and decoded (loose: live start-up, GOP wait).
    assert int(video["nb_read_frames"]) >= VIDEO_FPS * (PROBE_SECONDS - 2), video
    assert int(audio["nb_read_frames"]) >= 48000 / 1024 * (PROBE_SECONDS - 2), audio

    # /push/startup of the same stream to a second (full) URL works, at the same time.
    second_url = nginx.url("second")
    response = gateway.post("/push/startup", {"streamName": stream_name, "rtmpUrl": second_url})
    assert response.status_code == 200, response.text
    second = response.json()
    assert (second["targetUrl"], second["publishedName"]) == (second_url, None)
    assert second["mediaSessionId"] != first["mediaSessionId"]
    wait_push(gateway, second["mediaSessionId"], "PROCESSED_REMOTE")
    nginx.wait_publishing("second", timeout=10)
    second_kinds = streams_by_kind(probe(second_url, seconds=2))
    assert second_kinds["video"]["codec_name"] == "h264", second_kinds

    # The same stream to the same URL again: 409, naming the existing push.
    again = gateway.post("/push/startup", {"streamName": stream_name, "rtmpUrl": second_url})
    assert again.status_code == 409, again.text
    assert second["mediaSessionId"] in again.json()["error"]
    assert len(find_pushes(gateway, streamName=stream_name)) == 2
    assert [p["status"] for p in find_pushes(gateway)] == ["PROCESSED_REMOTE"] * 2

    # /push/terminate: STOPPED; the first push and the call go on.
    stopped = gateway.post("/push/terminate", {"mediaSessionId": second["mediaSessionId"]})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "STOPPED"
    still = gateway.find(call_id)
    assert still is not None and still["status"] == "ESTABLISHED", still
    wait_push(gateway, first["mediaSessionId"], "PROCESSED_REMOTE", timeout=2)

    # /call/terminate ends the remaining push with the call.
    assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    gateway.wait_status(call_id, {"FINISH"})
    ended = wait_push(gateway, first["mediaSessionId"], "STOPPED", timeout=10)
    assert ended["framesSent"] > 0 and ended["bytesSent"] > 0, ended

    (peers.log_dir / "sip-as-rtmp-figures.json").write_text(
        json.dumps(
            {
                "answer_to_first_video_ms": first_video_ms - answered_ms,
                "push": ended,
                "probe": probed["streams"],
            },
            indent=1,
        )
    )
