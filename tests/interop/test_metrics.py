"""``GET /metrics`` of the real ``sipbridge serve`` during and after a real call with real RTP.

baresip (``bob``, registered at kamailio) answers the gateway's call and sends
a 440 Hz tone as PCMU from a WAV file (``aufile``). While the call runs, the
test scrapes ``/metrics`` over HTTP as Prometheus would, parses it with
``prometheus_client.parser``, and checks what the gateway counted: the call
ESTABLISHED, RTP packets received and frames published for the call's stream
and in the gateway's totals, the jitter and buffer delay gauges, the SIP
responses (kamailio's 407 challenge and baresip's 200 to the INVITE), and the
event-loop lag histogram. After the hang-up, the totals must not have gone
down and the call must be counted as ended FINISH.
"""

from __future__ import annotations

import math
import struct
import time
import wave
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipbridge.settings import RtpSettings
from tests.interop.baresip import Baresip, MediaSources
from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_calls_via_kamailio import seed_body

pytestmark = pytest.mark.interop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CALL_ID = "metrics-call"
STREAM = f"stream-{CALL_ID}"
#: How long media must have flowed before the RTP counters are read (s).
MEDIA_SECONDS = 3.0


def write_tone(path: Path, *, seconds: float = 30.0, rate: int = 8000) -> Path:
    """A 440 Hz mono 16-bit WAV: what ``aufile`` plays as bob's microphone."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


def scrape(gateway: GatewayProcess, save_to: Path | None = None) -> Samples:
    """``GET /metrics`` as Prometheus does it, parsed by prometheus_client's own parser."""
    url = f"http://127.0.0.1:{gateway.http_port}/metrics"
    answer = httpx.get(url, timeout=10.0)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    if save_to is not None:
        save_to.write_text(answer.text)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} not exposed: {sorted(k for k in found if k[0] == name)}"
    return found[key]


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in found.items() if n == name and wanted <= lbls)


@pytest.fixture
def bob(peers: PeerSet, kamailio: Kamailio, tmp_path: Path) -> Baresip:
    """baresip as bob, answering by itself and sending a PCMU tone."""
    phone = Baresip(
        tmp_path / "bob",
        peers.log_dir,
        user="bob",
        password=KAMAILIO_USERS["bob"],
        registrar=kamailio,
        audio_codecs=("PCMU",),
        media=MediaSources(audio_file=write_tone(tmp_path / "tone8k.wav")),
    )
    return phone.start(peers)


def test_metrics_during_and_after_a_real_call(
    gateway: GatewayProcess, kamailio: Kamailio, peers: PeerSet, bob: Baresip
) -> None:
    before = scrape(gateway)
    assert value(before, "sipbridge_calls", status="ESTABLISHED") == 0
    assert value(before, "sipbridge_rtp_packets_received_total", kind="audio") == 0

    body = seed_body(CALL_ID, kamailio, hasVideo="false")
    response = gateway.post("/call/startup", body)
    assert response.status_code == 200, response.text
    call, seen = gateway.wait_status(CALL_ID, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, bob.diagnostics())
    established_at = time.monotonic()
    bob.wait_for_log(r"audio tx pipeline:\s+aufile ---> ", timeout=5)

    # Scrape until the call's stream has counted MEDIA_SECONDS of packets.
    audio = {"stream": STREAM, "kind": "audio"}
    deadline = established_at + MEDIA_SECONDS + 10.0
    while True:
        during = scrape(gateway, peers.log_dir / "metrics-during-call.txt")
        received = during.get(
            ("sipbridge_stream_rtp_packets_received_total", frozenset(audio.items())), 0.0
        )
        if time.monotonic() >= established_at + MEDIA_SECONDS and received > 0:
            break
        assert time.monotonic() < deadline, f"no RTP counted for {STREAM}: {received}"
        time.sleep(0.5)

    # The call, its stream and its RTP, as counted at scrape time.
    assert value(during, "sipbridge_calls", status="ESTABLISHED") == 1
    assert value(during, "sipbridge_calls_started_total") == 1
    assert value(during, "sipbridge_streams", status="PUBLISHING") == 1
    received = value(during, "sipbridge_stream_rtp_packets_received_total", **audio)
    # 50 packets/s of 20 ms PCMU: at least half of that over the seconds waited.
    assert received >= 25 * MEDIA_SECONDS, received
    assert value(during, "sipbridge_rtp_packets_received_total", kind="audio") == received
    frames = value(during, "sipbridge_stream_frames_published_total", **audio)
    assert 0 < frames <= received
    assert value(during, "sipbridge_frames_published_total", kind="audio") == frames
    assert value(during, "sipbridge_stream_bytes_published_total", **audio) == 160 * frames
    lost = value(during, "sipbridge_stream_rtp_packets_lost_total", **audio)
    assert lost <= 0.01 * received, lost  # loopback
    assert value(during, "sipbridge_stream_rtp_packets_late_total", **audio) >= 0
    assert 0 <= value(during, "sipbridge_stream_rtp_jitter_seconds", **audio) < 0.05
    settings = RtpSettings()
    delay = value(during, "sipbridge_stream_buffer_delay_seconds", **audio)
    assert settings.jitter_min_delay - 0.001 <= delay <= settings.jitter_max_delay + 0.001, delay
    # /stream/find tells the same story, read after the scrape: never fewer packets.
    stream = gateway.post("/stream/find", {"name": STREAM}).json()[0]
    track = next(t for t in stream["tracks"] if t["kind"] == "audio")
    assert track["packetsReceived"] >= received

    # SIP: kamailio challenged the INVITE (407), baresip answered it (200).
    invite_in = {"direction": "in", "method": "INVITE"}
    assert value(during, "sipbridge_sip_responses_total", code="407", **invite_in) >= 1
    assert value(during, "sipbridge_sip_responses_total", code="200", **invite_in) >= 1
    assert value(during, "sipbridge_sip_requests_total", direction="out", method="INVITE") >= 2
    assert value(during, "sipbridge_sip_requests_total", direction="out", method="REGISTER") >= 1
    completed = "sipbridge_sip_client_transactions_completed_total"
    assert value(during, completed, method="INVITE", outcome="2xx") == 1
    assert value(during, completed, method="INVITE", outcome="4xx") >= 1
    assert total(during, completed, outcome="timeout") == 0

    # The event loop is watched: samples taken, none of them a stall.
    lag_count = value(during, "sipbridge_event_loop_lag_seconds_count")
    assert lag_count > 0
    assert value(during, "sipbridge_event_loop_lag_seconds_bucket", le="+Inf") == lag_count
    assert value(during, "sipbridge_event_loop_lag_seconds_bucket", le="1.0") == lag_count
    assert "process_resident_memory_bytes" in {name for name, _ in during}

    # Hang up: the call is counted as ended, the totals keep the call's packets.
    assert gateway.post("/call/terminate", {"callId": CALL_ID}).status_code == 200
    call, _ = gateway.wait_status(CALL_ID, {"FINISH", "FAILED"})
    assert call["status"] == "FINISH", call
    after = scrape(gateway, peers.log_dir / "metrics-after-call.txt")
    assert value(after, "sipbridge_calls", status="ESTABLISHED") == 0
    assert value(after, "sipbridge_calls", status="FINISH") == 1
    assert value(after, "sipbridge_calls_ended_total", status="FINISH") == 1
    assert value(after, "sipbridge_rtp_packets_received_total", kind="audio") >= received
    assert value(after, "sipbridge_frames_published_total", kind="audio") >= frames
    assert value(after, "sipbridge_streams", status="UNPUBLISHED") == 1
    # The BYE's 200 may come a moment after the status changed.
    deadline = time.monotonic() + 5.0
    while total(after, completed, method="BYE", outcome="2xx") < 1:
        assert time.monotonic() < deadline, sorted(k for k in after if k[0] == completed)
        time.sleep(0.2)
        after = scrape(gateway)
    assert value(after, completed, method="BYE", outcome="2xx") == 1
    assert value(after, "sipbridge_sip_requests_total", direction="out", method="BYE") >= 1
