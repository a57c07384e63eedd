"""SDES-SRTP on the media leg against a real baresip (``srtp.so``) through kamailio.

* ``[sip] srtp = "mandatory"`` calling baresip with ``mediaenc=srtp-mand``: the
  offer is RTP/SAVP with ``a=crypto``, baresip answers with its own key, and the
  SRTP it sends (H.264 + audio) is decrypted and published as frames; no key ever
  shows in the gateway's DEBUG log with the SIP trace on.
* ``mandatory`` calling a plain-RTP baresip: the call fails with a clear reason.
  baresip (without ``srtp.so``) refuses RTP/SAVP itself with 488; sipp, which
  answers plain RTP/AVP to anything, is acknowledged and hung up on with
  "SRTP required".
* ``optional`` calling the same plain baresip: a plain RTP call that publishes.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from sipbridge.metrics import SRTP_DROP_REASONS
from tests.interop.baresip import Baresip, MediaSources
from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_baresip_media import (
    VIDEO_BITRATE,
    VIDEO_FPS,
    VIDEO_SIZE,
    MediaFiles,
    media_files,
    sample_stream,
    wait_publishing,
)
from tests.interop.test_calls import sipp_methods, startup_body
from tests.interop.test_calls_via_kamailio import seed_body
from tests.interop.test_metrics import scrape

pytestmark = pytest.mark.interop

__all__ = ["media_files"]  # the module fixture, used by name

_INLINE_RE = re.compile(r"inline:([A-Za-z0-9+/]{40})")


class SrtpBaresip(Baresip):
    """baresip with the ``srtp`` module and ``mediaenc`` set on its account."""

    def __init__(self, *args: object, mediaenc: str | None, **kwargs: object) -> None:
        self.mediaenc = mediaenc
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _select_modules(self) -> tuple[str, ...]:
        modules = super()._select_modules()
        if self.mediaenc is None:
            return modules
        assert (Path("/usr/lib/baresip/modules") / "srtp.so").exists(), (
            "baresip has no srtp.so: run `make peers` (baresip-core)"
        )
        return (*modules, "srtp.so")

    def render_account(self) -> str:
        line = super().render_account().rstrip("\n")
        if self.mediaenc is not None:
            line += f";mediaenc={self.mediaenc}"
        return line + "\n"


def _no_srtp_key(log: str) -> None:
    assert not _INLINE_RE.search(log), "an SRTP key is in the gateway log"


def srtp_gateway(workdir: Path, mode: str) -> contextlib.AbstractContextManager[GatewayProcess]:
    """The real gateway with ``[sip] srtp = mode``; exits 0, no traceback, no key logged."""
    workdir.mkdir(parents=True, exist_ok=True)
    return running_gateway(workdir, sip_settings=f'srtp = "{mode}"\n', log_check=_no_srtp_key)


def start_bob(
    peers: PeerSet, kamailio: Kamailio, tmp_path: Path, files: MediaFiles, mediaenc: str | None
) -> SrtpBaresip:
    media = MediaSources(
        video_file=files.video,
        audio_file=files.tone_48k,
        video_size=VIDEO_SIZE,
        video_fps=VIDEO_FPS,
        video_bitrate=VIDEO_BITRATE,
    )
    phone = SrtpBaresip(
        tmp_path / "bob",
        peers.log_dir,
        user="bob",
        password=KAMAILIO_USERS["bob"],
        registrar=kamailio,
        media=media,
        mediaenc=mediaenc,
    )
    assert phone.has_h264, "baresip has no avcodec.so: run `make peers` (baresip-ffmpeg)"
    phone.start(peers)
    return phone


def _call(gateway: GatewayProcess, kamailio: Kamailio, call_id: str) -> dict[str, object]:
    response = gateway.post("/call/startup", seed_body(call_id, kamailio))
    assert response.status_code == 200, response.text
    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    if call["status"] == "ESTABLISHED":
        return call
    return {**call, "seen": seen}


def _hang_up(gateway: GatewayProcess, call_id: str) -> None:
    assert gateway.post("/call/terminate", {"callId": call_id}).status_code == 200
    call, _ = gateway.wait_status(call_id, {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"


def test_mandatory_srtp_with_baresip_publishes_decoded_media(
    kamailio: Kamailio, peers: PeerSet, tmp_path: Path, media_files: MediaFiles
) -> None:
    bob = start_bob(peers, kamailio, tmp_path, media_files, "srtp-mand")
    with srtp_gateway(tmp_path / "gw", "mandatory") as gateway:
        call = _call(gateway, kamailio, "srtp-mand")
        assert call["status"] == "ESTABLISHED", (call, bob.diagnostics())
        # baresip got RTP/SAVP with our keys and answered with its own.
        offers = [m for m in bob.sip_messages() if m.direction == "recv" and "m=video" in m.body]
        assert offers, bob.diagnostics()
        assert "m=audio" in offers[0].body and " RTP/SAVP " in offers[0].body
        assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in offers[0].body
        answers = [m for m in bob.sip_messages() if m.direction == "send" and "m=video" in m.body]
        assert answers and "a=crypto:" in answers[0].body, bob.diagnostics()
        bob_keys = _INLINE_RE.findall(answers[0].body)
        our_keys = _INLINE_RE.findall(offers[0].body)
        assert bob_keys and our_keys

        first = wait_publishing(gateway, "stream-srtp-mand", timeout=10.0)
        time.sleep(3.0)
        last = sample_stream(gateway, "stream-srtp-mand")
        video, audio = last.track("video"), last.track("audio")
        assert video["codec"].upper() == "H264"
        assert video["width"] == VIDEO_SIZE[0] and video["height"] == VIDEO_SIZE[1]
        assert video["frames"] - first.track("video")["frames"] >= 40  # 25 fps, 3 s
        assert audio["frames"] - first.track("audio")["frames"] >= 100  # 50/s, 3 s
        # The drop counters are there (SRTP tracks) and all zero. baresip's plain RTCP
        # APP "PING" per track as the call starts is a short drop, not a failure
        # (rtp/srtp.py, docs/media.md): DEBUG only.
        metrics = scrape(gateway)
        for kind, track in (("video", video), ("audio", audio)):
            drops = (
                track["srtpAuthFailures"],
                track["srtpReplayDrops"],
                track["srtpOtherDrops"],
                track["srtpShortDrops"],
            )
            assert drops[:3] == (0, 0, 0), track
            assert drops[3] <= 1, track  # baresip's one plain "PING" per stream, if any
            for reason, count in zip(SRTP_DROP_REASONS, drops, strict=True):
                labels = {"stream": "stream-srtp-mand", "kind": kind, "reason": reason}
                key = ("sipbridge_stream_srtp_dropped_total", frozenset(labels.items()))
                assert metrics[key] == count, (kind, reason)
        _hang_up(gateway, "srtp-mand")
        log = gateway.log_text()
        for key in bob_keys + our_keys:
            assert key not in log
        assert "SRTP packet dropped" not in log and "SRTCP packet dropped" not in log


def test_mandatory_srtp_refuses_a_plain_callee(
    kamailio: Kamailio, peers: PeerSet, tmp_path: Path, media_files: MediaFiles
) -> None:
    bob = start_bob(peers, kamailio, tmp_path, media_files, None)
    with srtp_gateway(tmp_path / "gw", "mandatory") as gateway:
        call = _call(gateway, kamailio, "srtp-refused")
        assert call["status"] == "FAILED", (call, bob.diagnostics())
        # Either baresip refuses RTP/SAVP itself (488) or answers plain RTP and the
        # gateway ends the call: both say why.
        assert call["info"] in ("SRTP required", "Not Acceptable Here"), call


def test_mandatory_srtp_hangs_up_on_a_plain_answer(peers: PeerSet, tmp_path: Path) -> None:
    callee = peers.sipp("uas_answer_wait_bye.xml")
    body = startup_body("srtp-plain-answer", callee)
    with srtp_gateway(tmp_path / "gw", "mandatory") as gateway:
        assert gateway.post("/call/startup", body).status_code == 200
        call, seen = gateway.wait_status("srtp-plain-answer", {"FAILED", "FINISH"})
        assert call["status"] == "FAILED", seen
        assert call["info"] == "SRTP required"
        assert call["sipStatus"] == 200
        assert callee.wait(15) == 0, callee.log_path.read_text()
        assert sipp_methods(callee, "received") == ["INVITE", "ACK", "BYE"]
        log = gateway.log_text()
        assert "SRTP required but the answer has no a=crypto matching our offer" in log


def test_optional_srtp_calls_a_plain_callee(
    kamailio: Kamailio, peers: PeerSet, tmp_path: Path, media_files: MediaFiles
) -> None:
    bob = start_bob(peers, kamailio, tmp_path, media_files, None)
    with srtp_gateway(tmp_path / "gw", "optional") as gateway:
        call = _call(gateway, kamailio, "srtp-optional")
        assert call["status"] == "ESTABLISHED", (call, bob.diagnostics())
        offers = [m for m in bob.sip_messages() if m.direction == "recv" and "m=video" in m.body]
        assert offers and " RTP/AVP " in offers[0].body and "a=crypto:1 " in offers[0].body
        plain = wait_publishing(gateway, "stream-srtp-optional", timeout=10.0)
        assert "srtpAuthFailures" not in plain.track("audio")  # plain RTP: no counters
        names = {name for name, _ in scrape(gateway)}
        assert "sipbridge_stream_srtp_dropped_total" not in names
        _hang_up(gateway, "srtp-optional")
