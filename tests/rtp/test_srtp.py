"""SrtpFilter: SRTP/SRTCP from a pylibsrtp sender decrypted into CallMedia, our RTCP
protected, tampered and replayed packets dropped and counted (RFC 3711).

The sending side of each test is a plain pylibsrtp session with the callee's key;
the receiving side is the real :class:`~rtp.media.CallMedia` behind the filter, on
virtual time.
"""

from __future__ import annotations

import logging

import pylibsrtp
import pytest

from rtp.media import CallMedia, FrameReady
from rtp.packet import RtpPacket
from rtp.rtcp import ReceiverReport, SenderReport, parse_compound
from rtp.session import Address
from rtp.srtp import SrtpContext, SrtpFilter, srtp_profile
from rtp.track import TrackConfig

REMOTE_RTP = ("192.0.2.10", 40000)
REMOTE_RTCP = ("192.0.2.10", 40001)
OUR_KEY = bytes(range(30))
THEIR_KEY = bytes(range(100, 130))
SSRC = 0x1234_5678
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


def _session(key: bytes, suite: str, ssrc_type: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=srtp_profile(suite))
    )


def _callee(suite: str) -> pylibsrtp.Session:
    """The callee's sender: protects with its own key."""
    return _session(THEIR_KEY, suite, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)


def _callee_receiver(suite: str) -> pylibsrtp.Session:
    """The callee's receiver: unprotects what we send with our key."""
    return _session(OUR_KEY, suite, pylibsrtp.Policy.SSRC_ANY_INBOUND)


def _media(*, rtcp_mux: bool = False) -> CallMedia:
    config = TrackConfig(
        kind="audio",
        remote_rtp=REMOTE_RTP,
        remote_rtcp=REMOTE_RTP if rtcp_mux else REMOTE_RTCP,
        rtcp_mux=rtcp_mux,
        codecs={0: ("PCMU", 8000, 1, {})},
    )
    return CallMedia([config], now=0.0)


def _filter(media: CallMedia, suite: str) -> tuple[SrtpFilter, SrtpContext]:
    context = SrtpContext(suite, OUR_KEY, THEIR_KEY)
    return SrtpFilter(media, {"audio-rtp": context, "audio-rtcp": context}), context


def _pcmu(seq: int) -> bytes:
    payload = bytes([seq & 0xFF]) * 160
    packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=SSRC)
    packet.payload = payload
    return bytes(packet)


def _drain(core: SrtpFilter, media: CallMedia, until: float) -> list[bytes]:
    """Run the core's timers up to ``until``; the payloads of the frames it published."""
    now = 0.0
    while True:
        deadline = core.get_timer()
        if deadline is None or deadline > until:
            break
        now = max(now, deadline)
        core.handle_timer(now)
    return [e.frame.payload for e in media.take_events() if isinstance(e, FrameReady)]


@pytest.mark.parametrize("suite", SUITES)
def test_srtp_stream_is_decrypted_into_frames(suite: str) -> None:
    media = _media()
    core, context = _filter(media, suite)
    sender = _callee(suite)
    for seq in range(50):
        protected = sender.protect(_pcmu(seq))
        assert protected != _pcmu(seq) and len(protected) > len(_pcmu(seq))
        core.receive("audio-rtp", protected, REMOTE_RTP, seq * 0.02)
    frames = _drain(core, media, 5.0)
    assert context.stats.unprotected == 50
    assert context.stats.dropped == 0
    assert media.tracks["audio"].stats.packets == 50
    assert len(frames) >= 45
    assert frames[0] == bytes([0]) * 160
    assert frames[10] == bytes([10]) * 160


def test_tampered_packets_are_dropped_and_counted() -> None:
    suite = SUITES[0]
    media = _media()
    core, context = _filter(media, suite)
    sender = _callee(suite)
    good = sender.protect(_pcmu(1))
    tampered = bytearray(sender.protect(_pcmu(2)))
    tampered[20] ^= 0x01
    core.receive("audio-rtp", bytes(tampered), REMOTE_RTP, 0.0)
    core.receive("audio-rtp", b"\x80\x00garbage", REMOTE_RTP, 0.0)
    core.receive("audio-rtp", good, REMOTE_RTP, 0.01)
    core.receive("audio-rtp", good, REMOTE_RTP, 0.02)  # a replay
    plain = _pcmu(3)
    core.receive("audio-rtp", plain, REMOTE_RTP, 0.03)  # unauthenticated plain RTP
    assert context.stats.unprotected == 1
    assert context.stats.auth_failures == 2  # tampered, and plain RTP
    assert context.stats.short_drops == 1  # 9 bytes: no room for a header and a tag
    assert context.stats.other_failures == 0
    assert context.stats.replay_failures == 1
    assert context.stats.dropped == 4
    assert media.tracks["audio"].stats.packets == 1


def test_srtcp_sender_report_reaches_the_core() -> None:
    suite = SUITES[0]
    media = _media()
    core, context = _filter(media, suite)
    sender = _callee(suite)
    core.receive("audio-rtp", sender.protect(_pcmu(1)), REMOTE_RTP, 0.0)
    report = SenderReport(
        ssrc=SSRC, ntp_timestamp=1000 << 32, rtp_timestamp=160, packet_count=1, octet_count=160
    )
    core.receive("audio-rtcp", sender.protect_rtcp(bytes(report)), REMOTE_RTCP, 0.1)
    assert context.stats.unprotected == 2
    assert media.tracks["audio"].stats.sender_reports == 1


class _RecordingCore:
    """A MediaCore that keeps what reaches it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None:
        self.received.append((socket_name, data))

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        del now


#: What baresip 1.0 sends on each stream's RTCP port as the call starts, before its
#: SRTP applies (stream_start: rtcp_send_app(rtp, "PING", "PONG", 4)): RTCP APP,
#: subtype 0, length 3 words, its SSRC, name "PING", data "PONG"; 16 bytes, no
#: SRTCP index, no tag; as captured in tests/interop/test_srtp.py (other SSRC).
BARESIP_PING = bytes.fromhex("80cc0003") + SSRC.to_bytes(4, "big") + b"PINGPONG"


@pytest.mark.parametrize("socket_name", ["audio-rtcp", "audio-rtp"])
def test_plain_rtcp_too_short_for_srtcp_is_a_short_drop(
    socket_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    core = _RecordingCore()
    context = SrtpContext(SUITES[0], OUR_KEY, THEIR_KEY)
    srtp = SrtpFilter(core, {"audio-rtp": context, "audio-rtcp": context})
    caplog.set_level(logging.DEBUG, logger="rtp.srtp")
    srtp.receive(socket_name, BARESIP_PING, REMOTE_RTCP, 0.0)
    assert core.received == []
    assert context.stats.short_drops == 1 and context.stats.dropped == 1
    assert (context.stats.auth_failures, context.stats.replay_failures) == (0, 0)
    assert context.stats.other_failures == 0 and context.stats.failures == 0
    # Expected and harmless: DEBUG, saying what it is, never a WARNING.
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert caplog.messages == [
        "SRTCP: dropped a 16-byte datagram, too short to be protected (RFC 3711 §3.4): "
        "an unprotected RTCP packet (type 204) (1 so far)"
    ]
    # A genuine SRTCP packet of the same stream still gets through afterwards.
    rr = bytes(ReceiverReport(ssrc=SSRC))
    srtp.receive(socket_name, _callee(SUITES[0]).protect_rtcp(rr), REMOTE_RTCP, 0.1)
    assert core.received == [(socket_name, rr)]


@pytest.mark.parametrize("suite", SUITES)
def test_smallest_srtp_and_srtcp_pass_and_one_byte_less_is_short(suite: str) -> None:
    core = _RecordingCore()
    context = SrtpContext(suite, OUR_KEY, THEIR_KEY)
    srtp = SrtpFilter(core, {"audio-rtp": context, "audio-rtcp": context})
    sender = _callee(suite)
    empty = RtpPacket(payload_type=0, sequence_number=1, timestamp=0, ssrc=SSRC)
    rtp = sender.protect(bytes(empty))
    # RFC 3711 §3.1: header + tag (80 or 32 bits); §3.4: header + E/index + 80-bit tag.
    assert len(rtp) == 12 + (10 if suite.endswith("_80") else 4)
    rtcp = sender.protect_rtcp(bytes(ReceiverReport(ssrc=SSRC)))
    assert len(rtcp) == 8 + 4 + 10
    srtp.receive("audio-rtp", rtp[:-1], REMOTE_RTP, 0.0)
    srtp.receive("audio-rtcp", rtcp[:-1], REMOTE_RTCP, 0.0)
    assert context.stats.short_drops == 2 and context.stats.failures == 0
    srtp.receive("audio-rtp", rtp, REMOTE_RTP, 0.01)
    srtp.receive("audio-rtcp", rtcp, REMOTE_RTCP, 0.01)
    assert context.stats.unprotected == 2 and context.stats.dropped == 2
    assert [name for name, _ in core.received] == ["audio-rtp", "audio-rtcp"]


@pytest.mark.parametrize("rtcp_mux", [False, True])
def test_our_rtcp_and_keepalives_are_protected(rtcp_mux: bool) -> None:
    suite = SUITES[1]
    media = _media(rtcp_mux=rtcp_mux)
    core, context = _filter(media, suite)
    sender = _callee(suite)
    for seq in range(20):
        core.receive("audio-rtp", sender.protect(_pcmu(seq)), REMOTE_RTP, seq * 0.02)
    out: list[tuple[str, bytes, tuple[str, int]]] = []
    now = 0.4
    while now < 12.0:
        deadline = core.get_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        core.handle_timer(now)
        out.extend(core.datagrams_to_send())
    assert out, "receiver reports and keepalives are due within 12 s"
    receiver = _callee_receiver(suite)
    rtcp_seen = rtp_seen = 0
    for name, data, _ in out:
        is_rtcp = name.endswith("-rtcp") or 192 <= data[1] <= 223
        if is_rtcp:
            packets = parse_compound(receiver.unprotect_rtcp(data))
            assert packets
            rtcp_seen += 1
        else:
            assert RtpPacket.parse(receiver.unprotect(data)).payload_type == 0
            rtp_seen += 1
    assert rtcp_seen >= 1 and rtp_seen >= 1
    assert context.stats.protected == len(out)
    assert context.stats.protect_failures == 0


def test_rekey_switches_to_the_new_remote_key() -> None:
    suite = SUITES[0]
    media = _media()
    core, old = _filter(media, suite)
    new_key = bytes(range(200, 230))
    new = SrtpContext(suite, OUR_KEY, new_key)
    core.rekey({"audio-rtp": new, "audio-rtcp": new})
    sender = _session(new_key, suite, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    core.receive("audio-rtp", sender.protect(_pcmu(1)), REMOTE_RTP, 0.0)
    core.receive("audio-rtp", _callee(suite).protect(_pcmu(2)), REMOTE_RTP, 0.0)
    assert new.stats.unprotected == 1 and new.stats.auth_failures == 1
    assert old.stats.unprotected == 0


def test_rekey_carries_the_counters_over() -> None:
    suite = SUITES[0]
    media = _media()
    core, old = _filter(media, suite)
    sender = _callee(suite)
    good = sender.protect(_pcmu(1))
    core.receive("audio-rtp", good, REMOTE_RTP, 0.0)
    core.receive("audio-rtp", good, REMOTE_RTP, 0.01)  # a replay
    core.receive("audio-rtp", b"\x80\x00garbage", REMOTE_RTP, 0.02)
    before = (old.stats.unprotected, old.stats.replay_failures, old.stats.dropped)
    assert before == (1, 1, 2)  # the garbage is a short drop
    new_key = bytes(range(200, 230))
    new = SrtpContext(suite, OUR_KEY, new_key)
    core.rekey({"audio-rtp": new, "audio-rtcp": new})
    assert (new.stats.unprotected, new.stats.replay_failures, new.stats.dropped) == before
    assert new.stats is not old.stats
    core.receive("audio-rtp", sender.protect(_pcmu(2)), REMOTE_RTP, 0.03)  # the old key
    assert new.stats.auth_failures == old.stats.auth_failures + 1
    assert new.stats.dropped == 3 and old.stats.dropped == 2


def test_unknown_suite_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported SRTP crypto suite 'F8_128_HMAC_SHA1_80'"):
        SrtpContext("F8_128_HMAC_SHA1_80", OUR_KEY, THEIR_KEY)


def test_context_repr_hides_keys() -> None:
    context = SrtpContext(SUITES[0], OUR_KEY, THEIR_KEY)
    assert OUR_KEY.hex() not in repr(context) and "AES_CM_128_HMAC_SHA1_80" in repr(context)
