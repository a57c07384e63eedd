"""SRTP drop counters (RFC 3711 §3.3): from the call's SrtpFilter into ``/stream/find``'s
track fields (``srtpAuthFailures``, ``srtpReplayDrops``, ``srtpOtherDrops``) and into
``/metrics`` (``sipbridge_stream_srtp_dropped_total``, ``sipbridge_srtp_dropped_total``).
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pylibsrtp
import pytest

from rtp.packet import RtpPacket
from rtp.srtp import srtp_profile
from sipbridge.call_media import CallMediaLink
from sipbridge.callinfo import CallStatus
from sipbridge.metrics import GatewayCollector
from sipbridge.ports import PortPair, RtpPortAllocator
from sipbridge.registry import StreamRegistry
from sipbridge.settings import RtpSettings
from sipbridge.sip.crypto import SrtpKeys
from sipbridge.sip.offer_answer import NegotiatedSession, NegotiatedStream
from sipbridge.sip.sdp import Codec, SessionDescription
from tests.test_metrics import (
    Clock,
    FakeCall,
    FakeSource,
    Samples,
    publishing_stream,
    scrape,
    value,
)

SUITE = "AES_CM_128_HMAC_SHA1_80"
OUR_KEY = bytes(range(30))
THEIR_KEY = bytes(range(100, 130))
REMOTE = ("192.0.2.10", 40000)
SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"


def _negotiated(remote_key: bytes | None) -> NegotiatedSession:
    pcmu = Codec(0, "PCMU", 8000)
    audio = NegotiatedStream(
        kind="audio",
        remote_address=REMOTE[0],
        remote_port=REMOTE[1],
        remote_rtcp_port=REMOTE[1] + 1,
        rtcp_mux=False,
        codec=pcmu,
        payload_types={0: pcmu},
        telephone_event_pt=None,
        direction="sendrecv",
        local_port=0,
        srtp=None if remote_key is None else SrtpKeys(SUITE, OUR_KEY, remote_key),
    )
    return NegotiatedSession(audio=audio, video=None, remote=SessionDescription.parse(SDP))


def _sender(key: bytes) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=srtp_profile(SUITE)
    )
    return pylibsrtp.Session(policy)


def _rtp(seq: int) -> bytes:
    packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=0x1234)
    packet.payload = bytes(160)
    return bytes(packet)


@pytest.fixture
def ports() -> Iterator[dict[str, PortPair]]:
    allocator = RtpPortAllocator("127.0.0.1", 31000, 31999)
    pair = allocator.allocate()
    yield {"audio": pair}
    allocator.release(pair)


def _link(ports: dict[str, PortPair], remote_key: bytes | None) -> CallMediaLink:
    stream = StreamRegistry().reserve("s1", call_id="c1")
    return CallMediaLink(
        call_id="c1",
        negotiated=_negotiated(remote_key),
        ports=ports,
        stream=stream,
        settings=RtpSettings(),
        now=0.0,
        on_inactive=lambda idle: None,
        on_keyframe_request=lambda: None,
        on_dtmf=lambda digit: None,
    )


def _track_json(link: CallMediaLink) -> dict[str, object]:
    assert link.stream is not None
    info = msgspec.json.decode(msgspec.json.encode(link.stream.snapshot()))
    (track,) = info["tracks"]
    assert isinstance(track, dict)
    return track


def test_plain_rtp_track_reports_no_srtp_counters(ports: dict[str, PortPair]) -> None:
    link = _link(ports, None)
    assert link.srtp is None
    track = _track_json(link)
    assert track["packetsReceived"] == 0
    assert not {"srtpAuthFailures", "srtpReplayDrops", "srtpOtherDrops"} & set(track)


def test_drops_by_reason_reach_the_snapshot_and_survive_a_rekey(
    ports: dict[str, PortPair],
) -> None:
    link = _link(ports, THEIR_KEY)
    assert link.srtp is not None
    track = _track_json(link)
    assert (track["srtpAuthFailures"], track["srtpReplayDrops"], track["srtpOtherDrops"]) == (
        0,
        0,
        0,
    )
    sender = _sender(THEIR_KEY)
    good = sender.protect(_rtp(1))
    tampered = bytearray(sender.protect(_rtp(2)))
    tampered[-1] ^= 0x01  # the authentication tag
    srtp = link.srtp
    srtp.receive("audio-rtp", good, REMOTE, 0.0)
    srtp.receive("audio-rtp", bytes(tampered), REMOTE, 0.01)
    srtp.receive("audio-rtp", good, REMOTE, 0.02)  # a replay
    srtp.receive("audio-rtp", good, REMOTE, 0.03)  # and again
    track = _track_json(link)
    assert (track["srtpAuthFailures"], track["srtpReplayDrops"]) == (1, 2)
    assert track["packetsReceived"] == 1  # only the good one reached the media core

    # The peer's re-INVITE brings a new key: the counters go on from where they were.
    new_key = bytes(range(200, 230))
    link.update(_negotiated(new_key))
    srtp.receive("audio-rtp", _sender(THEIR_KEY).protect(_rtp(3)), REMOTE, 0.04)  # old key
    srtp.receive("audio-rtp", _sender(new_key).protect(_rtp(4)), REMOTE, 0.05)
    track = _track_json(link)
    assert (track["srtpAuthFailures"], track["srtpReplayDrops"]) == (2, 2)
    assert track["packetsReceived"] == 2


def _series(found: Samples, name: str) -> set[tuple[str, str]]:
    """(stream, kind) of every sample of ``name``."""
    series = set()
    for sample, labels in found:
        if sample == name:
            label = dict(labels)
            series.add((label["stream"], label["kind"]))
    return series


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_metrics_per_stream_and_gateway_totals(clock: Clock) -> None:
    source = FakeSource(StreamRegistry(retention=300.0, clock=clock))
    collector = GatewayCollector(source)
    srtp_stream = publishing_stream(source.streams, "secure", received=100, frames=90)
    audio = srtp_stream.track("audio")
    audio.srtp_auth_failures, audio.srtp_replay_drops, audio.srtp_other_drops = 3, 2, 1
    audio.srtp_short_drops = 4
    publishing_stream(source.streams, "plain", received=10, frames=9, call_id="c2")
    source.calls["c1"] = FakeCall(CallStatus.ESTABLISHED, srtp_stream)
    found = scrape(collector)

    labels = {"stream": "secure", "kind": "audio"}
    name = "sipbridge_stream_srtp_dropped_total"
    assert value(found, name, **labels, reason="auth") == 3
    assert value(found, name, **labels, reason="replay") == 2
    assert value(found, name, **labels, reason="other") == 1
    assert value(found, name, **labels, reason="short") == 4
    # Only SRTP tracks have the series: not the plain stream, not the secure one's video.
    assert _series(found, name) == {("secure", "audio")}
    assert value(found, "sipbridge_srtp_dropped_total", kind="audio", reason="auth") == 3
    assert value(found, "sipbridge_srtp_dropped_total", kind="audio", reason="replay") == 2
    assert value(found, "sipbridge_srtp_dropped_total", kind="video", reason="auth") == 0

    # The stream ends and leaves the registry: the gateway totals keep its drops.
    audio.srtp_auth_failures = 5
    srtp_stream.end()
    scrape(collector)
    clock.now += 301.0
    found = scrape(collector)
    assert _series(found, name) == set()
    assert value(found, "sipbridge_srtp_dropped_total", kind="audio", reason="auth") == 5
    assert value(found, "sipbridge_srtp_dropped_total", kind="audio", reason="other") == 1
    assert value(found, "sipbridge_srtp_dropped_total", kind="audio", reason="short") == 4
