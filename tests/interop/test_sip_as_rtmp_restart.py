"""SIP as RTMP through an nginx restart: the push reconnects, the call never notices.

The set-up of :mod:`tests.interop.test_sip_as_rtmp`: baresip (``bob``, registered at
kamailio, answering by itself) sends a 640x360 25 fps H.264 test pattern and a PCMU
tone; the real ``sipbridge serve`` calls it with ``rtmpUrl`` pointing at nginx's
``live`` application, so the call's stream is pushed as ``rtmp_<streamName>``.

Once the push is ``PROCESSED_REMOTE`` and its ``framesSent`` grows, nginx is stopped (its
process group, by PID). The push must go ``PENDING`` with an ``info`` saying why,
while the call stays ``ESTABLISHED`` (``/call/find``): losing the RTMP server is
not a reason to hang up. nginx is started again on the same ports; within
:data:`RECONNECT_WITHIN` seconds the push must be connected again (``CONNECTED``,
then ``PROCESSED_REMOTE`` once its first keyframe went out) with
``reconnects >= 1`` and ``framesSent`` growing again, and ffprobe pulling the
stream from the new nginx must see H.264 at the size baresip sends. The call is
polled at every step and must never leave ``ESTABLISHED`` until ``/call/terminate``
ends it (``FINISH``), which stops the push.

The gateway runs with its default ``[rtmp]`` retry settings (1 s doubling to 30 s,
10 retries): nginx is down for about 2 s, so the second or third retry finds it
back. How long the reconnect took is kept in ``sip-as-rtmp-restart-figures.json``
in the artifacts, not asserted beyond :data:`RECONNECT_WITHIN`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.interop.baresip import MediaSources
from tests.interop.gateway_process import GatewayProcess
from tests.interop.nginx import NginxRtmp
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_baresip_media import (
    VIDEO_BITRATE,
    VIDEO_FPS,
    VIDEO_SIZE,
    MediaFiles,
    media_files,  # noqa: F401 - the module-scoped fixture, shared
    start_bob_with_media,
)
from tests.interop.test_calls_via_kamailio import seed_body
from tests.interop.test_sip_as_rtmp import find_pushes, probe, streams_by_kind, wait_push

pytestmark = pytest.mark.interop

#: How long nginx stays down (s).
DOWN_SECONDS = 2.0
#: The push must be CONNECTED again this long after nginx is back (s).
RECONNECT_WITHIN = 20.0
#: How long ``framesSent`` is watched for growth (s): a few frames at 25 fps.
GROWTH_WINDOW = 5.0
#: Seconds of media ffprobe reads from the restarted nginx.
PROBE_AFTER_SECONDS = 2


class CallWatch:
    """The call and its push, polled together: every call status seen is kept."""

    def __init__(self, gateway: GatewayProcess, call_id: str, media_session_id: str) -> None:
        self.gateway = gateway
        self.call_id = call_id
        self.media_session_id = media_session_id
        self.call_statuses: list[str] = []

    def check_call(self) -> None:
        """Poll ``/call/find``: the call must still be ESTABLISHED."""
        call = self.gateway.find(self.call_id)
        status = "GONE" if call is None else str(call["status"])
        if not self.call_statuses or self.call_statuses[-1] != status:
            self.call_statuses.append(status)
        assert status == "ESTABLISHED", (self.call_statuses, call)

    def push(self) -> dict[str, Any]:
        """The push as ``/push/find_all`` reports it, after checking the call."""
        self.check_call()
        pushes = [
            p for p in find_pushes(self.gateway) if p["mediaSessionId"] == self.media_session_id
        ]
        assert len(pushes) == 1, pushes
        return pushes[0]

    def wait(
        self, what: str, timeout: float, ok: Callable[[dict[str, Any]], object]
    ) -> dict[str, Any]:
        """Poll until ``ok(push)``; the call is checked on every poll."""
        deadline = time.monotonic() + timeout
        push = self.push()
        while not ok(push):
            if time.monotonic() > deadline:
                raise AssertionError(f"push never {what} within {timeout} s: {push}")
            time.sleep(0.1)
            push = self.push()
        return push

    def wait_frames_grow(self, since: int, timeout: float = GROWTH_WINDOW) -> dict[str, Any]:
        """Poll until the push is PROCESSED_REMOTE with ``framesSent`` beyond ``since`` by
        1 s of video."""
        return self.wait(
            f"PROCESSED_REMOTE with framesSent > {since} + {VIDEO_FPS:.0f}",
            timeout,
            lambda p: p["status"] == "PROCESSED_REMOTE" and p["framesSent"] > since + VIDEO_FPS,
        )


def test_nginx_restart_mid_call(
    gateway: GatewayProcess,
    kamailio: Kamailio,
    peers: PeerSet,
    tmp_path: Path,
    media_files: MediaFiles,  # noqa: F811 - the fixture imported above
) -> None:
    nginx = NginxRtmp(peers).start()
    app_url = nginx.url("").rstrip("/")
    media = MediaSources(
        video_file=media_files.video,
        audio_file=media_files.tone_8k,
        video_size=VIDEO_SIZE,
        video_fps=VIDEO_FPS,
        video_bitrate=VIDEO_BITRATE,
    )
    bob = start_bob_with_media(peers, kamailio, tmp_path, media, ("PCMU",))
    call_id = "sip-as-rtmp-restart"
    published = f"rtmp_stream-{call_id}"

    response = gateway.post("/call/startup", seed_body(call_id, kamailio, rtmpUrl=app_url))
    assert response.status_code == 200, response.text
    (push,) = find_pushes(gateway)
    assert push["targetUrl"] == nginx.url(published), push
    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, bob.diagnostics())
    watch = CallWatch(gateway, call_id, push["mediaSessionId"])

    # Before: PROCESSED_REMOTE, video out, frames flowing, nginx sees the publisher.
    push = watch.wait(
        "PROCESSED_REMOTE with video",
        15.0,
        lambda p: p["status"] == "PROCESSED_REMOTE" and p["firstVideoAt"],
    )
    before = watch.wait_frames_grow(push["framesSent"])
    assert before["reconnects"] == 0, before
    nginx.wait_publishing(published, timeout=10)

    # nginx goes away: the push is PENDING with a reason; the call carries on.
    stopped_at = time.monotonic()
    nginx.stop()
    pending = watch.wait("PENDING", 10.0, lambda p: p["status"] == "PENDING")
    assert pending["info"], pending
    pending_after = time.monotonic() - stopped_at
    while time.monotonic() - stopped_at < DOWN_SECONDS:
        down = watch.push()
        assert down["status"] == "PENDING", down
        time.sleep(0.2)

    # nginx is back on the same port: the push reconnects and frames flow again.
    nginx.start()
    restarted_at = time.monotonic()
    again = watch.wait(
        "connected again",
        RECONNECT_WITHIN,
        lambda p: p["status"] in ("CONNECTED", "PROCESSED_REMOTE"),
    )
    reconnected_after = time.monotonic() - restarted_at
    assert again["reconnects"] >= 1, again
    after = watch.wait_frames_grow(again["framesSent"])
    assert after["framesSent"] > before["framesSent"], (before, after)
    nginx.wait_publishing(published, timeout=10)

    # A player on the new nginx gets H.264 again (after baresip's next keyframe).
    probed = probe(nginx.url(published), seconds=PROBE_AFTER_SECONDS)
    kinds = streams_by_kind(probed)
    assert "video" in kinds, probed
    video = kinds["video"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", *VIDEO_SIZE), video
    assert int(video["nb_read_frames"]) > 0, video
    watch.check_call()
    assert watch.call_statuses == ["ESTABLISHED"], watch.call_statuses

    # The call ends as usual and takes the push with it.
    assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    gateway.wait_status(call_id, {"FINISH"})
    ended = wait_push(gateway, watch.media_session_id, "STOPPED", timeout=10)
    assert ended["framesSent"] >= after["framesSent"] and ended["reconnects"] >= 1, ended

    (peers.log_dir / "sip-as-rtmp-restart-figures.json").write_text(
        json.dumps(
            {
                "pending_after_stop_s": round(pending_after, 3),
                "pending_info": pending["info"],
                "connected_after_restart_s": round(reconnected_after, 3),
                "frames_before_stop": before["framesSent"],
                "push": ended,
                "probe": probed["streams"],
            },
            indent=1,
        )
    )
