"""Prometheus metrics: SIP counters of the shell, the scrape-time collector, loop lag, /metrics."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import cast

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from rtmp.pusher import PushStatus
from rtp.jitter import JitterStats
from sipbridge.api.app import create_app
from sipbridge.call_media import CallMediaLink
from sipbridge.callinfo import CallInfo, CallStatus
from sipbridge.metrics import GatewayCollector, GatewayMetrics, LoopLagMonitor, _Totals
from sipbridge.pushes import PushInfo
from sipbridge.recording import RecordingInfo, RecordingStatus
from sipbridge.registry import Stream, StreamRegistry, StreamStatus
from sipbridge.settings import SipSettings
from sipbridge.signaling import SipCounters, SipEndpoint
from sipbridge.sip.address import Target
from sipbridge.sip.message import SipRequest, SipResponse, make_response, parse_message
from tests.api.fakes import FakeGateway
from webrtc.whep import ViewerInfo

TIMEOUT = 32.0  # 64 * T1 with T1 = 0.5
PEER = Target("udp", "127.0.0.1", 5070)
OTHER_PEER = Target("udp", "127.0.0.1", 5080)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --------------------------------------------------------------------------- helpers


def request(method: str, branch: str = "z9hG4bK-1", cseq_method: str | None = None) -> SipRequest:
    text = (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: call-1@127.0.0.1\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def response(req: SipRequest, status: int) -> SipResponse:
    return make_response(req, status, to_tag="b1")


def samples(text: str) -> Samples:
    """Every sample of an exposition: (sample name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} not exposed: {sorted(k for k in found if k[0] == name)}"
    return found[key]


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def scrape(collector: GatewayCollector) -> Samples:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return samples(generate_latest(registry).decode())


# --------------------------------------------------------------------------- SIP counters


def test_request_retransmissions_are_one_transaction() -> None:
    counters = SipCounters(timeout=TIMEOUT)
    invite = request("INVITE")
    counters.sent(invite, PEER, 0.0)
    counters.sent(invite, PEER, 0.5)  # Timer A
    counters.sent(invite, PEER, 1.5)
    assert counters.requests_sent == {"INVITE": 3}
    assert counters.transactions_started == {"INVITE": 1}
    assert counters.pending_transactions == 1


def test_final_response_completes_with_its_class() -> None:
    counters = SipCounters(timeout=TIMEOUT)
    invite = request("INVITE")
    counters.sent(invite, PEER, 0.0)
    counters.received(response(invite, 100), 0.1)
    counters.received(response(invite, 180), 0.2)
    # Proceeding: Timer B no longer runs, however long the phone rings.
    counters.expire(TIMEOUT + 100.0)
    assert counters.pending_transactions == 1
    counters.received(response(invite, 486), 150.0)
    counters.received(response(invite, 486), 150.5)  # retransmitted final: counted, not completed
    assert counters.transactions_completed == {("INVITE", "4xx"): 1}
    assert counters.responses_received == {
        ("INVITE", 100): 1,
        ("INVITE", 180): 1,
        ("INVITE", 486): 2,
    }
    assert counters.pending_transactions == 0


def test_non_invite_times_out_at_timer_f_even_after_a_provisional() -> None:
    counters = SipCounters(timeout=TIMEOUT)
    options = request("OPTIONS")
    counters.sent(options, PEER, 10.0)
    counters.received(response(options, 100), 10.1)
    counters.expire(10.0 + TIMEOUT - 0.5)
    assert counters.transactions_completed == {}
    counters.expire(10.0 + TIMEOUT)
    assert counters.transactions_completed == {("OPTIONS", "timeout"): 1}
    assert counters.pending_transactions == 0


def test_transport_error_ends_the_transactions_to_that_target() -> None:
    counters = SipCounters(timeout=TIMEOUT)
    counters.sent(request("REGISTER", "z9hG4bK-r"), PEER, 0.0)
    counters.sent(request("BYE", "z9hG4bK-b"), OTHER_PEER, 0.0)
    counters.transport_failed(PEER)
    assert counters.transactions_completed == {("REGISTER", "transport_error"): 1}
    assert counters.pending_transactions == 1


def test_ack_cancel_responses_sent_and_unknown_methods() -> None:
    counters = SipCounters(timeout=TIMEOUT)
    invite = request("INVITE", "z9hG4bK-i")
    counters.sent(invite, PEER, 0.0)
    # CANCEL shares the INVITE's branch but is its own transaction (§9.1, §17.1.3).
    counters.sent(request("CANCEL", "z9hG4bK-i"), PEER, 1.0)
    counters.sent(request("ACK", "z9hG4bK-a"), PEER, 2.0)
    counters.sent(request("FROBNICATE", "z9hG4bK-f"), PEER, 2.0)
    incoming = request("OPTIONS", "z9hG4bK-in")
    counters.received(incoming, 3.0)
    counters.sent(response(incoming, 200), PEER, 3.0)
    counters.received(request("WHATEVER", "z9hG4bK-w"), 3.0)
    assert counters.requests_sent == {"INVITE": 1, "CANCEL": 1, "ACK": 1, "other": 1}
    assert counters.transactions_started == {"INVITE": 1, "CANCEL": 1, "other": 1}
    assert counters.requests_received == {"OPTIONS": 1, "other": 1}
    assert counters.responses_sent == {("OPTIONS", 200): 1}


def test_an_invite_left_in_proceeding_is_abandoned() -> None:
    counters = SipCounters(timeout=TIMEOUT, proceeding_limit=600.0)
    invite = request("INVITE")
    counters.sent(invite, PEER, 0.0)
    counters.received(response(invite, 180), 1.0)
    counters.expire(599.0)
    assert counters.pending_transactions == 1
    counters.expire(600.0)
    assert counters.transactions_completed == {("INVITE", "abandoned"): 1}


async def test_endpoint_counts_what_crosses_it() -> None:
    endpoint = SipEndpoint(SipSettings(host="127.0.0.1", port=0), on_activity=lambda: None)
    await endpoint.start()
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        port = peer.getsockname()[1]
        options = (
            request("OPTIONS", "z9hG4bK-opt")
            .to_bytes()
            .replace(b"127.0.0.1:5060;branch", f"127.0.0.1:{port};branch".encode())
        )
        await loop.sock_sendto(peer, options, ("127.0.0.1", endpoint.local_port))
        data = await asyncio.wait_for(loop.sock_recv(peer, 65535), 5.0)
        answer = parse_message(data)
        assert isinstance(answer, SipResponse) and answer.status == 200
        await loop.sock_sendto(peer, b"garbage\r\n\r\n", ("127.0.0.1", endpoint.local_port))
        counters = endpoint.counters
        for _ in range(100):  # the garbage datagram is read on a later loop turn
            if counters.transport is not None and counters.transport.parse_errors:
                break
            await asyncio.sleep(0)
        assert counters.requests_received == {"OPTIONS": 1}
        assert counters.responses_sent == {("OPTIONS", 200): 1}
        assert counters.transport is not None and counters.transport.parse_errors == 1
    finally:
        peer.close()
        await endpoint.stop()


# --------------------------------------------------------------------------- totals


def test_totals_keep_what_left_and_never_go_down() -> None:
    totals = _Totals(2)
    assert totals.update({"a": ("audio", (10, 1)), "b": ("video", (5, 0))}) == {
        "audio": [10, 1],
        "video": [5, 0],
    }
    # "a" left the gateway: its last values stay in the total; "b" went backwards: kept.
    assert totals.update({"b": ("video", (4, 0)), "c": ("audio", (3, 0))}) == {
        "audio": [13, 1],
        "video": [5, 0],
    }
    assert totals.update({}) == {"audio": [13, 1], "video": [5, 0]}


# --------------------------------------------------------------------------- the collector


@dataclass(eq=False)
class FakeCall:
    status: CallStatus
    stream: Stream | None = None
    media: CallMediaLink | None = None
    call_id: str = "c1"

    def snapshot(self) -> CallInfo:
        return CallInfo(callId=self.call_id, callee="bob", caller="alice", status=self.status)


def fake_media(late: dict[str, int]) -> CallMediaLink:
    tracks = {
        kind: SimpleNamespace(jitter=SimpleNamespace(stats=JitterStats(late=count)))
        for kind, count in late.items()
    }
    return cast(CallMediaLink, SimpleNamespace(media=SimpleNamespace(tracks=tracks)))


@dataclass
class FakePushes:
    items: list[PushInfo] = field(default_factory=list)

    def all_pushes(self) -> list[PushInfo]:
        return list(self.items)


@dataclass
class FakeViewers:
    items: list[ViewerInfo] = field(default_factory=list)

    def viewers(self, stream_name: str | None = None) -> list[ViewerInfo]:
        return list(self.items)


@dataclass
class FakeRecordings:
    items: list[RecordingInfo] = field(default_factory=list)

    def find_all(self) -> list[RecordingInfo]:
        return list(self.items)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSource:
    streams: StreamRegistry
    pushes: FakePushes = field(default_factory=FakePushes)
    webrtc: FakeViewers = field(default_factory=FakeViewers)
    recordings: FakeRecordings = field(default_factory=FakeRecordings)
    sip_counters: SipCounters = field(default_factory=lambda: SipCounters(timeout=TIMEOUT))
    calls: dict[str, FakeCall] = field(default_factory=dict)

    def all_calls(self) -> list[CallInfo]:
        return [call.snapshot() for call in self.calls.values()]

    def get_call(self, call_id: str) -> FakeCall:
        return self.calls[call_id]


def push_info(msid: str, status: PushStatus, reconnects: int, frames: int) -> PushInfo:
    return PushInfo(
        media_session_id=msid,
        stream_name="s1",
        stream_media_session_id="m1",
        rtmp_url="rtmp://127.0.0.1/live",
        rtmp_transponder_full_url=False,
        target_url="rtmp://127.0.0.1/live/rtmp_s1",
        published_name=None,
        status=status,
        info=None,
        muted=False,
        call_id="c1",
        created_at=0,
        connected_at=None,
        first_video_at=None,
        frames_sent=frames,
        bytes_sent=frames * 100,
        reconnects=reconnects,
        dropped=1,
    )


def viewer_info(session_id: str, state: str, video: int) -> ViewerInfo:
    return ViewerInfo(
        session_id=session_id,
        stream_name="s1",
        state=state,
        created_at=0,
        video_codec="H264",
        audio_codec="opus",
        video_frames_sent=video,
        audio_frames_sent=2 * video,
        dropped=0,
        keyframe_requests=0,
    )


def recording_info(recording_id: str, status: RecordingStatus, frames: int) -> RecordingInfo:
    return RecordingInfo(
        recording_id=recording_id,
        media_session_id="m1",
        stream_name="s1",
        call_id="c1",
        status=status,
        info=None,
        file_name="s1.mp4",
        files=[],
        created_at=0,
        frames_written=frames,
        bytes_written=frames * 10,
        dropped=0,
    )


def publishing_stream(
    registry: StreamRegistry, name: str, *, received: int, frames: int, call_id: str = "c1"
) -> Stream:
    stream = registry.reserve(name, call_id=call_id)
    stream.set_status(StreamStatus.PUBLISHING)
    audio = stream.track("audio")
    audio.codec, audio.packets_received, audio.packets_lost = "PCMU", received, 2
    audio.frames, audio.bytes = frames, frames * 160
    audio.jitter_ms, audio.buffer_delay_ms = 1.5, 40.0
    video = stream.track("video")
    video.codec, video.packets_received, video.frames = "H264", 2 * received, frames // 2
    stream.av_offset = 0.046
    return stream


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> FakeSource:
    return FakeSource(StreamRegistry(retention=300.0, clock=clock))


def test_calls_streams_and_rtp_at_scrape_time(source: FakeSource) -> None:
    stream = publishing_stream(source.streams, "s1", received=100, frames=90)
    source.calls["c1"] = FakeCall(
        CallStatus.ESTABLISHED, stream, fake_media({"audio": 3, "video": 1})
    )
    source.calls["c0"] = FakeCall(CallStatus.FINISH, call_id="c0")
    found = scrape(GatewayCollector(source))

    assert value(found, "sipbridge_calls", status="ESTABLISHED") == 1
    assert value(found, "sipbridge_calls", status="FINISH") == 1
    assert value(found, "sipbridge_calls", status="RING") == 0
    assert value(found, "sipbridge_calls_started_total") == 2
    assert value(found, "sipbridge_calls_ended_total", status="FINISH") == 1
    assert value(found, "sipbridge_streams", status="PUBLISHING") == 1
    audio = {"stream": "s1", "kind": "audio"}
    assert value(found, "sipbridge_stream_rtp_packets_received_total", **audio) == 100
    assert value(found, "sipbridge_stream_rtp_packets_lost_total", **audio) == 2
    assert value(found, "sipbridge_stream_rtp_packets_late_total", **audio) == 3
    assert value(found, "sipbridge_stream_rtp_jitter_seconds", **audio) == pytest.approx(0.0015)
    assert value(found, "sipbridge_stream_buffer_delay_seconds", **audio) == pytest.approx(0.04)
    assert value(found, "sipbridge_stream_frames_published_total", **audio) == 90
    assert value(found, "sipbridge_stream_bytes_published_total", **audio) == 90 * 160
    assert value(found, "sipbridge_stream_av_offset_seconds", stream="s1") == pytest.approx(0.046)
    assert value(found, "sipbridge_stream_subscribers", stream="s1") == 0
    assert value(found, "sipbridge_rtp_packets_received_total", kind="video") == 200
    assert value(found, "sipbridge_rtp_packets_late_total", kind="video") == 1
    assert value(found, "sipbridge_frames_published_total", kind="audio") == 90


def test_totals_survive_the_end_of_a_call_and_its_stream(source: FakeSource, clock: Clock) -> None:
    collector = GatewayCollector(source)
    stream = publishing_stream(source.streams, "s1", received=100, frames=90)
    call = source.calls["c1"] = FakeCall(CallStatus.ESTABLISHED, stream, fake_media({"audio": 3}))
    scrape(collector)

    # The call ends with 20 more packets; a scrape sees the final counters...
    stream.track("audio").packets_received = 120
    stream.end()
    call.status = CallStatus.FINISH
    found = scrape(collector)
    audio = {"stream": "s1", "kind": "audio"}
    assert value(found, "sipbridge_stream_rtp_packets_received_total", **audio) == 120
    assert value(found, "sipbridge_calls_ended_total", status="FINISH") == 1
    # ...then both are forgotten (retention): the per-stream series go, the totals stay.
    clock.now += 301.0
    del source.calls["c1"]
    second = publishing_stream(source.streams, "s2", received=5, frames=4, call_id="c2")
    source.calls["c2"] = FakeCall(
        CallStatus.ESTABLISHED, second, fake_media({"audio": 1}), call_id="c2"
    )
    found = scrape(collector)
    assert not any(labels and dict(labels).get("stream") == "s1" for _, labels in found), (
        "series of a forgotten stream are still exposed"
    )
    assert value(found, "sipbridge_rtp_packets_received_total", kind="audio") == 125
    assert value(found, "sipbridge_rtp_packets_late_total", kind="audio") == 4
    assert value(found, "sipbridge_frames_published_total", kind="audio") == 94
    assert value(found, "sipbridge_calls_started_total") == 2
    assert value(found, "sipbridge_calls_ended_total", status="FINISH") == 1
    assert value(found, "sipbridge_calls", status="FINISH") == 0


def test_a_name_stands_for_its_live_stream(source: FakeSource) -> None:
    old = publishing_stream(source.streams, "s1", received=100, frames=90)
    old.end()
    publishing_stream(source.streams, "s1", received=7, frames=6)
    found = scrape(GatewayCollector(source))
    audio = {"stream": "s1", "kind": "audio"}
    assert value(found, "sipbridge_stream_rtp_packets_received_total", **audio) == 7
    # Both count in the gateway's totals.
    assert value(found, "sipbridge_rtp_packets_received_total", kind="audio") == 107
    assert value(found, "sipbridge_streams", status="UNPUBLISHED") == 1


def test_pushes_viewers_and_recordings(source: FakeSource) -> None:
    collector = GatewayCollector(source)
    source.pushes.items = [
        push_info("p1", PushStatus.CONNECTED, reconnects=2, frames=50),
        push_info("p2", PushStatus.FAILED, reconnects=5, frames=10),
    ]
    source.webrtc.items = [viewer_info("v1", "connected", video=30)]
    source.recordings.items = [recording_info("r1", RecordingStatus.RECORDING, frames=40)]
    found = scrape(collector)
    assert value(found, "sipbridge_pushes", status="CONNECTED") == 1
    assert value(found, "sipbridge_pushes", status="FAILED") == 1
    assert value(found, "sipbridge_pushes_started_total") == 2
    assert value(found, "sipbridge_push_reconnects_total") == 7
    assert value(found, "sipbridge_push_frames_sent_total") == 60
    assert value(found, "sipbridge_push_bytes_sent_total") == 6000
    assert value(found, "sipbridge_push_dropped_frames_total") == 2
    assert value(found, "sipbridge_webrtc_viewers", state="connected") == 1
    assert value(found, "sipbridge_webrtc_frames_sent_total", kind="video") == 30
    assert value(found, "sipbridge_recordings", status="RECORDING") == 1
    assert value(found, "sipbridge_recording_frames_written_total") == 40

    # A viewer leaves at once when it closes: it counts as last seen.
    source.webrtc.items = []
    source.pushes.items = [push_info("p1", PushStatus.STOPPED, reconnects=3, frames=70)]
    found = scrape(collector)
    assert value(found, "sipbridge_webrtc_viewers", state="connected") == 0
    assert value(found, "sipbridge_webrtc_viewers_started_total") == 1
    assert value(found, "sipbridge_webrtc_frames_sent_total", kind="audio") == 60
    assert value(found, "sipbridge_push_reconnects_total") == 8
    assert value(found, "sipbridge_pushes", status="STOPPED") == 1


def test_sip_families(source: FakeSource) -> None:
    counters = source.sip_counters
    invite = request("INVITE")
    counters.sent(invite, PEER, 0.0)
    counters.received(response(invite, 407), 0.1)
    counters.sent(request("OPTIONS", "z9hG4bK-o"), PEER, 0.0)
    found = scrape(GatewayCollector(source))
    assert value(found, "sipbridge_sip_requests_total", direction="out", method="INVITE") == 1
    assert (
        value(found, "sipbridge_sip_responses_total", direction="in", method="INVITE", code="407")
        == 1
    )
    assert value(found, "sipbridge_sip_client_transactions_started_total", method="OPTIONS") == 1
    assert (
        value(
            found,
            "sipbridge_sip_client_transactions_completed_total",
            method="INVITE",
            outcome="4xx",
        )
        == 1
    )
    assert value(found, "sipbridge_sip_client_transactions_pending") == 1
    assert value(found, "sipbridge_sip_parse_errors_total") == 0


# --------------------------------------------------------------------------- loop lag


async def test_loop_lag_monitor_records_sleep_overshoot() -> None:
    now = [0.0]
    overshoots = [0.0, 0.05, 0.2]
    seen: list[float] = []
    parked = asyncio.get_running_loop().create_future()

    async def sleep(delay: float) -> None:
        if not overshoots:
            await parked  # until stop() cancels the monitor
        now[0] += delay + overshoots.pop(0)
        await asyncio.sleep(0)

    monitor = LoopLagMonitor(seen.append, interval=0.5, clock=lambda: now[0], sleep=sleep)
    monitor.start()
    assert monitor.running
    for _ in range(20):
        if len(seen) == 3:
            break
        await asyncio.sleep(0)
    await monitor.stop()
    assert seen == pytest.approx([0.0, 0.05, 0.2])
    assert not monitor.running
    with pytest.raises(ValueError, match="interval must be positive, got 0"):
        LoopLagMonitor(seen.append, interval=0)


async def test_gateway_metrics_lifecycle_and_formats(source: FakeSource) -> None:
    metrics = GatewayMetrics(source)
    await metrics.start()
    assert metrics.lag_monitor.running
    await metrics.stop()
    assert not metrics.lag_monitor.running
    metrics.observe_loop_lag(0.03)

    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(body.decode())
    assert value(found, "sipbridge_event_loop_lag_seconds_bucket", le="0.025") == 0
    assert value(found, "sipbridge_event_loop_lag_seconds_bucket", le="0.05") == 1
    assert value(found, "sipbridge_event_loop_lag_last_seconds") == pytest.approx(0.03)
    assert "process_cpu_seconds_total" in names(found)

    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_asyncio_tasks_counts_the_loops_unfinished_tasks(source: FakeSource) -> None:
    metrics = GatewayMetrics(source, process=False)
    before = value(samples(metrics.render()[0].decode()), "sipbridge_asyncio_tasks")
    assert before >= 1  # this test's own task
    release = asyncio.Event()
    extra = [asyncio.create_task(release.wait()) for _ in range(3)]
    assert value(samples(metrics.render()[0].decode()), "sipbridge_asyncio_tasks") == before + 3
    release.set()
    await asyncio.gather(*extra)
    assert value(samples(metrics.render()[0].decode()), "sipbridge_asyncio_tasks") == before


def test_asyncio_tasks_is_zero_off_the_loop(source: FakeSource) -> None:
    metrics = GatewayMetrics(source, process=False)
    assert value(samples(metrics.render()[0].decode()), "sipbridge_asyncio_tasks") == 0


def test_two_gateways_have_their_own_registries(source: FakeSource, clock: Clock) -> None:
    other = FakeSource(StreamRegistry(clock=clock))
    publishing_stream(source.streams, "s1", received=10, frames=9)
    first, second = GatewayMetrics(source), GatewayMetrics(other)
    one = samples(first.render()[0].decode())
    two = samples(second.render()[0].decode())
    assert value(one, "sipbridge_rtp_packets_received_total", kind="audio") == 10
    assert value(two, "sipbridge_rtp_packets_received_total", kind="audio") == 0


# --------------------------------------------------------------------------- GET /metrics


def test_metrics_route(source: FakeSource) -> None:
    publishing_stream(source.streams, "s1", received=10, frames=9)
    app = create_app(FakeGateway(), metrics=GatewayMetrics(source))
    with TestClient(app) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(answer.text)
    assert value(found, "sipbridge_stream_frames_published_total", stream="s1", kind="audio") == 9


def test_metrics_need_the_api_token(source: FakeSource) -> None:
    app = create_app(FakeGateway(), api_token="t0ken", metrics=GatewayMetrics(source))
    with TestClient(app) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = client.get("/metrics", headers={"Authorization": "Bearer t0ken"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert "sipbridge_calls" in names(samples(right.text))


def test_no_metrics_no_route() -> None:
    with TestClient(create_app(FakeGateway())) as client:
        assert client.get("/metrics").status_code == 404
