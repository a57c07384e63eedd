"""The outbound call flow (RFC 3261 §9, §13-15, RFC 3264, RFC 4028) against a scripted
peer, on virtual time."""

# The flows change state behind mypy's back: `assert x.state is X` after an
# earlier `is Y` is not an impossible comparison.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sipbridge.callinfo import CallStatus
from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import NameAddr, Target
from sipbridge.sip.auth import DigestChallenge, format_challenge
from sipbridge.sip.invite import (
    CallEvent,
    CallTimers,
    DtmfReceived,
    MediaUpdated,
    OutboundCall,
    StatusChanged,
    callee_uri,
    display_target,
)
from sipbridge.sip.message import SipRequest, SipResponse
from sipbridge.sip.offer_answer import MediaOfferConfig
from sipbridge.sip.sdp import SessionDescription
from sipbridge.sip.transaction import Timers
from sipbridge.sip.ua import LocalEndpoint, UserAgent
from tests.sip.peer import (
    G729_AUDIO,
    PEER,
    PEER_TCP,
    Peer,
    PeerDialog,
    check_digest,
    sdp_answer,
    sdp_offer,
)

LOCAL = LocalEndpoint("192.0.2.1", 5070)
TIMERS = Timers()  # T1 = 0.5 s: Timer B = 32 s
CALLEE = "sip:bob@example.com"
PEER_CONTACT = "<sip:bob@192.0.2.10:5060>"
MEDIA = MediaOfferConfig(
    "192.0.2.1", 40000, None, session_id=7, session_version=1, audio_codecs=("PCMU", "PCMA")
)
#: Two record-routing proxies, the nearest to us (R2) listed last by the callee.
RECORD_ROUTE = ["<sip:192.0.2.22;lr>", "<sip:192.0.2.21;lr>"]
ESTABLISHED = CallStatus.ESTABLISHED


@dataclass
class Rig:
    ua: UserAgent
    peer: Peer
    call: OutboundCall

    def events(self) -> list[CallEvent]:
        out: list[CallEvent] = []
        while (event := self.call.next_event()) is not None:
            out.append(event)
        return out

    def statuses(self) -> list[tuple[CallStatus, int | None, str | None]]:
        return [
            (e.status, e.sip_status, e.info) for e in self.events() if isinstance(e, StatusChanged)
        ]


def setup(
    *,
    timers: CallTimers | None = None,
    proxy: Target = PEER,
    password: str = "secret",
    media: MediaOfferConfig = MEDIA,
) -> Rig:
    ua = UserAgent(LOCAL, timers=TIMERS)
    account = SipAccount(login="alice", domain="example.com", proxy=proxy, password=password)
    call = OutboundCall(ua, account, CALLEE, media, timers=timers or CallTimers())
    return Rig(ua, Peer(ua, address=proxy), call)


def start(rig: Rig) -> SipRequest:
    rig.peer.act(rig.call.start)
    return rig.peer.expect_request("INVITE")


def answer(
    rig: Rig,
    invite: SipRequest,
    *,
    record_route: list[str] | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> tuple[PeerDialog, SipRequest]:
    """200 OK from the callee; returns its dialog and the ACK the UA sent."""
    extra = [("Contact", PEER_CONTACT)]
    extra += [("Record-Route", route) for route in record_route or []]
    extra += headers or []
    rig.peer.reply(
        invite, 200, to_tag="bob", headers=extra, body=sdp_answer() if body is None else body
    )
    ack = rig.peer.expect_request("ACK")
    return PeerDialog.from_invite(invite, "bob", record_route=record_route), ack


def established(
    *,
    record_route: list[str] | None = None,
    headers: list[tuple[str, str]] | None = None,
    timers: CallTimers | None = None,
    proxy: Target = PEER,
) -> tuple[Rig, SipRequest, PeerDialog]:
    rig = setup(timers=timers, proxy=proxy)
    invite = start(rig)
    rig.peer.reply(invite, 100)
    dialog, _ = answer(rig, invite, record_route=record_route, headers=headers)
    assert rig.call.status is ESTABLISHED
    rig.events()
    return rig, invite, dialog


def direction_of(body: bytes) -> str:
    return SessionDescription.parse(body).media[0].direction


# --------------------------------------------------------------------------- the INVITE


def test_invite_carries_offer_contact_and_session_timer() -> None:
    rig = setup()
    invite = start(rig)
    assert invite.uri == CALLEE
    assert invite.cseq == (1, "INVITE")
    assert invite.call_id == rig.call.call_id
    assert invite.from_.uri == "sip:alice@example.com" and invite.from_.tag
    assert invite.to.uri == CALLEE and invite.to.tag is None
    assert invite.headers.get("Contact") == "<sip:alice@192.0.2.1:5070>"
    assert "timer" in invite.headers.get_all("Supported")
    assert invite.headers.get("Session-Expires") == "1800"
    assert invite.headers.get("Min-SE") == "90"
    assert "UPDATE" in invite.headers.get_all("Allow")
    assert invite.headers.get("Content-Type") == "application/sdp"
    offer = SessionDescription.parse(invite.body)
    assert offer.connection_address == "192.0.2.1"
    assert [(m.kind, m.port, m.direction) for m in offer.media] == [("audio", 40000, "sendrecv")]
    assert [c.name for c in offer.media[0].codecs] == ["PCMU", "PCMA", "telephone-event"]
    assert rig.call.status is CallStatus.PENDING
    assert rig.statuses() == [(CallStatus.PENDING, None, None)]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (100, b"", CallStatus.TRYING),
        (180, b"", CallStatus.RING),
        (180, sdp_answer(), CallStatus.RING_MEDIA),
        (183, sdp_answer(), CallStatus.SESSION_PROGRESS),
    ],
)
def test_provisional_responses(status: int, body: bytes, expected: CallStatus) -> None:
    rig = setup()
    invite = start(rig)
    rig.events()
    rig.peer.reply(invite, status, to_tag=None if status == 100 else "bob", body=body)
    assert rig.call.status is expected
    assert rig.call.sip_status == status
    assert rig.statuses() == [(expected, status, None)]
    rig.peer.expect_nothing()


def test_progress_sequence() -> None:
    rig = setup()
    invite = start(rig)
    for status in (100, 180, 183, 180):
        rig.peer.reply(invite, status, to_tag=None if status == 100 else "bob")
    assert [s for s, _, _ in rig.statuses()] == [
        CallStatus.PENDING,
        CallStatus.TRYING,
        CallStatus.RING,
        CallStatus.SESSION_PROGRESS,
        CallStatus.RING,
    ]


def test_proxy_challenge_resends_invite_with_credentials() -> None:
    rig = setup()
    first = start(rig)
    challenge = format_challenge(DigestChallenge(realm="example.com", nonce="pn1", qop=("auth",)))
    rig.peer.reply(first, 407, to_tag="proxy", headers=[("Proxy-Authenticate", challenge)])
    # The INVITE transaction ACKs the 407 itself: same branch, CSeq number, To tag.
    ack = rig.peer.expect_request("ACK")
    assert ack.top_via.branch == first.top_via.branch
    assert ack.cseq == (1, "ACK")
    assert ack.to.tag == "proxy"
    assert ack.uri == first.uri
    second = rig.peer.expect_request("INVITE")
    assert second.cseq == (2, "INVITE")
    assert second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.to.tag is None
    assert second.top_via.branch != first.top_via.branch
    assert second.body == first.body
    check_digest(
        second,
        "Proxy-Authorization",
        username="alice",
        password="secret",
        realm="example.com",
        nonce="pn1",
    )
    rig.peer.reply(second, 100)
    _, ack2 = answer(rig, second)
    assert ack2.cseq == (2, "ACK")
    assert ack2.headers.get("Proxy-Authorization") == second.headers.get("Proxy-Authorization")
    assert rig.call.status is ESTABLISHED


def test_challenge_with_wrong_password_fails() -> None:
    rig = setup(password="nope")
    first = start(rig)
    header = "Proxy-Authenticate"
    rig.peer.reply(
        first,
        407,
        to_tag="p",
        headers=[(header, format_challenge(DigestChallenge(realm="example.com", nonce="a")))],
    )
    rig.peer.expect_request("ACK")
    second = rig.peer.expect_request("INVITE")
    rig.peer.reply(
        second,
        407,
        to_tag="p",
        headers=[(header, format_challenge(DigestChallenge(realm="example.com", nonce="b")))],
    )
    rig.peer.expect_request("ACK")
    rig.peer.expect_nothing()
    assert rig.call.status is CallStatus.FAILED
    assert rig.call.sip_status == 407
    assert rig.ua.session_count == 0


# --------------------------------------------------------------------------- answer


def test_answer_with_record_route_acks_through_the_route_set() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(invite, 180, to_tag="bob")
    rig.events()
    rig.peer.reply(
        invite,
        200,
        to_tag="bob",
        headers=[("Contact", PEER_CONTACT), *(("Record-Route", r) for r in RECORD_ROUTE)],
        body=sdp_answer(),
    )
    sent = rig.peer.next_sent()
    ack = sent.message
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    # Loose routing: to the first route (the reversed Record-Route, §12.1.2), Request-URI
    # the remote target.
    assert sent.target == Target("udp", "192.0.2.21", 5060)
    assert ack.uri == "sip:bob@192.0.2.10:5060"
    assert ack.headers.get_all("Route") == list(reversed(RECORD_ROUTE))
    assert ack.cseq == (1, "ACK")
    assert ack.to.tag == "bob" and ack.from_.tag == invite.from_.tag
    assert ack.top_via.branch != invite.top_via.branch  # a 2xx ACK is a new transaction
    assert ack.body == b""
    events = rig.events()
    media = [e for e in events if isinstance(e, MediaUpdated)]
    assert len(media) == 1
    audio = media[0].negotiated.audio
    assert audio is not None
    assert (audio.codec.name, audio.remote_address, audio.remote_port) == (
        "PCMU",
        "192.0.2.50",
        50000,
    )
    assert audio.telephone_event_pt == 101
    assert [e for e in events if isinstance(e, StatusChanged)] == [
        StatusChanged(ESTABLISHED, 200, None)
    ]
    assert rig.call.negotiated is media[0].negotiated


def test_retransmitted_200_is_acked_again() -> None:
    rig = setup()
    invite = start(rig)
    ok_headers = [("Contact", PEER_CONTACT)]
    rig.peer.reply(invite, 200, to_tag="bob", headers=ok_headers, body=sdp_answer())
    ack = rig.peer.expect_request("ACK")
    rig.peer.advance(0.5)
    rig.peer.reply(invite, 200, to_tag="bob", headers=ok_headers, body=sdp_answer())
    again = rig.peer.expect_request("ACK")
    assert again.to_bytes() == ack.to_bytes()
    # After Timer M the transaction is gone: the session still ACKs a late copy.
    rig.peer.advance(40.0)
    rig.peer.reply(invite, 200, to_tag="bob", headers=ok_headers, body=sdp_answer())
    late = rig.peer.expect_request("ACK")
    assert late.to_bytes() == ack.to_bytes()
    assert [s for s, _, _ in rig.statuses()] == [CallStatus.PENDING, ESTABLISHED]


def test_established_call_outlives_the_invite_timeout() -> None:
    rig, _, _ = established(timers=CallTimers(invite_timeout=60.0, session_expires=0))
    rig.peer.run_until(600.0)
    rig.peer.expect_nothing()
    assert rig.call.status is ESTABLISHED
    assert rig.statuses() == []


def test_200_from_a_second_fork_is_acked_and_ended() -> None:
    rig, invite, _ = established()
    rig.peer.reply(
        invite,
        200,
        to_tag="fork2",
        headers=[("Contact", "<sip:bob@192.0.2.30>")],
        body=sdp_answer(),
    )
    ack = rig.peer.next_sent()
    bye = rig.peer.next_sent()
    assert isinstance(ack.message, SipRequest) and ack.message.method == "ACK"
    assert isinstance(bye.message, SipRequest) and bye.message.method == "BYE"
    assert ack.target == bye.target == Target("udp", "192.0.2.30", 5060)
    assert ack.message.to.tag == bye.message.to.tag == "fork2"
    assert rig.call.status is ESTABLISHED  # the first dialog is untouched


def test_200_without_contact_fails_the_call() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(invite, 200, to_tag="bob", body=sdp_answer())
    assert rig.call.status is CallStatus.FAILED
    assert rig.ua.session_count == 0


# --------------------------------------------------------------------------- endings


def test_remote_bye_finishes_the_call() -> None:
    rig, _, dialog = established()
    bye = dialog.request("BYE")
    rig.peer.deliver(bye)
    ok = rig.peer.expect_response(200)
    assert ok.cseq == bye.cseq and ok.to.tag == dialog.remote_tag
    assert rig.statuses() == [(CallStatus.FINISH, 200, "Normal call clearing")]
    assert rig.call.ended
    assert rig.ua.session_count == 0
    # A retransmitted BYE is answered by the server transaction again.
    rig.peer.deliver(bye)
    rig.peer.expect_response(200)


def test_local_terminate_sends_bye_through_the_route_set() -> None:
    rig, invite, _ = established(record_route=RECORD_ROUTE)
    rig.peer.act(rig.call.terminate)
    sent = rig.peer.next_sent()
    bye = sent.message
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert sent.target == Target("udp", "192.0.2.21", 5060)
    assert bye.cseq == (2, "BYE")
    assert bye.call_id == invite.call_id
    assert bye.uri == "sip:bob@192.0.2.10:5060"
    assert bye.headers.get_all("Route") == list(reversed(RECORD_ROUTE))
    assert (bye.from_.tag, bye.to.tag) == (invite.from_.tag, "bob")
    assert rig.call.status is ESTABLISHED  # until the BYE is answered
    rig.peer.reply(bye, 200)
    assert rig.statuses() == [(CallStatus.FINISH, 200, "Normal call clearing")]
    assert rig.ua.session_count == 0
    rig.peer.act(rig.call.terminate)  # idempotent
    rig.peer.expect_nothing()


def test_bye_without_answer_still_finishes() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.terminate)
    rig.peer.expect_request("BYE")
    rig.peer.advance(32.0)
    assert rig.call.status is CallStatus.FINISH
    assert rig.ua.session_count == 0


def test_bye_challenge_is_answered_then_failure_ends() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.terminate)
    bye = rig.peer.expect_request("BYE")
    www = ("WWW-Authenticate", format_challenge(DigestChallenge(realm="r", nonce="x")))
    rig.peer.reply(bye, 401, headers=[www])
    bye2 = rig.peer.expect_request("BYE")
    assert bye2.cseq.seq == bye.cseq.seq + 1
    check_digest(bye2, "Authorization", username="alice", password="secret", realm="r", nonce="x")
    www2 = ("WWW-Authenticate", format_challenge(DigestChallenge(realm="r", nonce="y")))
    rig.peer.reply(bye2, 401, headers=[www2])  # rejected: the call still ends
    assert rig.call.status is CallStatus.FINISH
    assert rig.ua.session_count == 0


@pytest.mark.parametrize(
    ("status", "expected", "info"),
    [
        (486, CallStatus.BUSY, "Busy Here"),
        (600, CallStatus.BUSY, "Busy Everywhere"),
        (404, CallStatus.FAILED, "Not Found"),
        (603, CallStatus.FAILED, "Decline"),
        (503, CallStatus.FAILED, "Service Unavailable"),
    ],
)
def test_final_failure(status: int, expected: CallStatus, info: str) -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(invite, 180, to_tag="bob")
    rig.events()
    final = rig.peer.reply(invite, status, to_tag="bob")
    ack = rig.peer.expect_request("ACK")
    assert ack.top_via.branch == invite.top_via.branch
    assert rig.call.status is expected
    assert rig.call.sip_status == status
    assert rig.call.info == info
    assert rig.statuses() == [(expected, status, info)]
    assert rig.ua.session_count == 0
    # A retransmission of the final response is ACKed again by the transaction (Timer D).
    rig.peer.advance(1.0)
    rig.peer.deliver(final)
    assert rig.peer.expect_request("ACK").to_bytes() == ack.to_bytes()
    rig.peer.advance(40.0)
    assert rig.ua.get_timer() is None


def test_terminate_while_ringing_cancels() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(invite, 180, to_tag="bob")
    rig.events()
    rig.peer.act(rig.call.terminate)
    sent = rig.peer.next_sent()
    cancel = sent.message
    assert isinstance(cancel, SipRequest) and cancel.method == "CANCEL"
    assert sent.target == PEER
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.uri == invite.uri
    assert cancel.cseq == (1, "CANCEL")
    assert cancel.call_id == invite.call_id
    assert cancel.from_.tag == invite.from_.tag and cancel.to.tag is None
    rig.peer.reply(cancel, 200)
    final = rig.peer.reply(invite, 487, to_tag="bob")
    rig.peer.expect_request("ACK")
    assert rig.statuses() == [(CallStatus.FINISH, 487, "Normal call clearing")]
    assert rig.ua.session_count == 0
    rig.peer.deliver(final)
    rig.peer.expect_request("ACK")


def test_terminate_before_any_provisional_waits_for_one() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.act(rig.call.terminate)
    rig.peer.expect_nothing()  # §9.1: no CANCEL before a provisional response
    rig.peer.reply(invite, 100)
    cancel = rig.peer.expect_request("CANCEL")
    assert cancel.top_via.branch == invite.top_via.branch
    rig.peer.reply(cancel, 200)
    rig.peer.reply(invite, 487, to_tag="bob")
    rig.peer.expect_request("ACK")
    assert rig.call.status is CallStatus.FINISH


def test_terminate_before_any_response_then_final_response() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.act(rig.call.terminate)
    rig.peer.reply(invite, 486, to_tag="bob")
    rig.peer.expect_request("ACK")
    rig.peer.expect_nothing()
    assert rig.call.status is CallStatus.FINISH


def test_200_after_cancel_is_acked_and_byed() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(invite, 180, to_tag="bob")
    rig.peer.act(rig.call.terminate)
    cancel = rig.peer.expect_request("CANCEL")
    rig.peer.reply(
        invite, 200, to_tag="bob", headers=[("Contact", PEER_CONTACT)], body=sdp_answer()
    )
    rig.peer.expect_request("ACK")
    bye = rig.peer.expect_request("BYE")
    assert bye.cseq == (2, "BYE")
    rig.peer.reply(cancel, 200)
    rig.peer.reply(bye, 200)
    assert rig.call.status is CallStatus.FINISH
    assert rig.call.info == "Normal call clearing"
    assert ESTABLISHED not in [s for s, _, _ in rig.statuses()]
    assert rig.ua.session_count == 0


def test_no_common_codec_is_acked_and_byed() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(
        invite,
        200,
        to_tag="bob",
        headers=[("Contact", PEER_CONTACT)],
        body=sdp_answer(audio=G729_AUDIO),
    )
    rig.peer.expect_request("ACK")
    bye = rig.peer.expect_request("BYE")
    rig.peer.reply(bye, 200)
    assert rig.call.status is CallStatus.FAILED
    assert rig.call.info == "No common codecs"
    assert rig.call.sip_status == 200
    assert not any(isinstance(e, MediaUpdated) for e in rig.events())


def test_invite_timeout_without_any_response() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.run_until(31.99)
    copies = rig.peer.drain()
    # Timer A: T1 doubling without cap (§17.1.1.2).
    assert [s.at for s in copies] == pytest.approx([0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert all(
        isinstance(s.message, SipRequest) and s.message.to_bytes() == invite.to_bytes()
        for s in copies
    )
    assert rig.call.status is CallStatus.PENDING
    rig.peer.run_until(32.0)
    assert rig.call.status is CallStatus.FAILED
    assert (rig.call.sip_status, rig.call.info) == (408, "Failed by request timeout")
    assert rig.ua.session_count == 0
    assert rig.ua.get_timer() is None


def test_over_tcp_nothing_is_retransmitted() -> None:
    rig = setup(proxy=PEER_TCP)
    invite = start(rig)
    assert invite.top_via.transport == "TCP"
    assert invite.headers.get("Contact") == "<sip:alice@192.0.2.1:5070;transport=tcp>"
    rig.peer.run_until(31.99)
    rig.peer.expect_nothing()
    rig.peer.run_until(32.0)
    assert rig.call.status is CallStatus.FAILED


def test_established_over_tcp_uses_tcp_in_dialog() -> None:
    rig, _, dialog = established(proxy=PEER_TCP)
    rig.peer.act(rig.call.terminate)
    sent = rig.peer.next_sent()
    assert isinstance(sent.message, SipRequest) and sent.message.method == "BYE"
    assert sent.target == Target("tcp", "192.0.2.10", 5060)
    rig.peer.advance(10.0)
    rig.peer.expect_nothing()
    del dialog


def test_invite_timeout_while_ringing_cancels_and_fails() -> None:
    rig = setup(timers=CallTimers(invite_timeout=20.0))
    invite = start(rig)
    rig.peer.reply(invite, 180, to_tag="bob")
    rig.events()
    rig.peer.run_until(19.99)
    rig.peer.expect_nothing()
    rig.peer.run_until(20.0)
    cancel = rig.peer.expect_request("CANCEL")
    assert cancel.top_via.branch == invite.top_via.branch
    assert rig.statuses() == [(CallStatus.FAILED, 408, "Failed by request timeout")]
    rig.peer.reply(cancel, 200)
    rig.peer.reply(invite, 487, to_tag="bob")
    rig.peer.expect_request("ACK")
    assert rig.call.status is CallStatus.FAILED
    assert rig.call.sip_status == 408
    assert rig.statuses() == []
    assert rig.ua.session_count == 0


def test_cancelled_invite_without_final_response_is_given_up() -> None:
    rig = setup()
    invite = start(rig)
    rig.peer.reply(invite, 180, to_tag="bob")
    rig.peer.act(rig.call.terminate)
    cancel = rig.peer.expect_request("CANCEL")
    rig.peer.reply(cancel, 200)
    # No 487 ever: §9.1 lets the UAC consider the INVITE transaction over after 64*T1.
    rig.peer.run_until(32.0)
    assert rig.call.status is CallStatus.FINISH
    assert rig.ua.session_count == 0
    rig.peer.run_until(1000.0)
    assert rig.ua.get_timer() is None
    rig.peer.expect_nothing()


# --------------------------------------------------------------------------- re-INVITE


def test_peer_hold_and_resume() -> None:
    rig, _, dialog = established()
    reinvite = dialog.request("INVITE", body=sdp_offer(direction="sendonly", version=2))
    rig.peer.deliver(reinvite)
    ok = rig.peer.expect_response(200)
    assert ok.headers.get("Contact") == "<sip:alice@192.0.2.1:5070>"
    assert direction_of(ok.body) == "recvonly"
    events = rig.events()
    assert any(isinstance(e, MediaUpdated) for e in events)
    assert [e for e in events if isinstance(e, StatusChanged)] == [
        StatusChanged(CallStatus.HOLD, 200, "Held by peer")
    ]
    # The 2xx is retransmitted (T1, 2*T1, ...) until the ACK arrives (§13.3.1.4).
    rig.peer.advance(1.6)
    copies = rig.peer.drain()
    assert len(copies) == 2
    assert all(isinstance(c.message, SipResponse) and c.message.status == 200 for c in copies)
    assert [c.at - copies[0].at for c in copies] == pytest.approx([0.0, 1.0])
    rig.peer.deliver(dialog.ack_for(reinvite))
    rig.peer.advance(30.0)
    rig.peer.expect_nothing()

    resume = dialog.request("INVITE", body=sdp_offer(direction="sendrecv", version=3))
    rig.peer.deliver(resume)
    ok = rig.peer.expect_response(200)
    assert direction_of(ok.body) == "sendrecv"
    rig.peer.deliver(dialog.ack_for(resume))
    assert rig.call.status is ESTABLISHED
    assert [s for s, _, _ in rig.statuses()] == [ESTABLISHED]


def test_unacked_reinvite_200_ends_the_call() -> None:
    rig, _, dialog = established()
    rig.peer.deliver(dialog.request("INVITE", body=sdp_offer()))
    rig.peer.expect_response(200)
    rig.peer.advance(31.99)
    assert all(isinstance(s.message, SipResponse) for s in rig.peer.drain())
    rig.peer.advance(0.01)
    bye = rig.peer.expect_request("BYE")
    rig.peer.reply(bye, 200)
    assert rig.call.status is CallStatus.FAILED
    assert rig.call.info == "Failed by request timeout"


def test_offerless_reinvite_gets_our_offer_and_reads_the_answer_in_ack() -> None:
    rig, _, dialog = established()
    reinvite = dialog.request("INVITE")
    rig.peer.deliver(reinvite)
    ok = rig.peer.expect_response(200)
    assert SessionDescription.parse(ok.body).media[0].port == 40000
    ack = dialog.ack_for(reinvite)
    ack.body = sdp_answer(version=3, direction="sendrecv")
    ack.headers.add("Content-Type", "application/sdp")
    rig.peer.deliver(ack)
    assert any(isinstance(e, MediaUpdated) for e in rig.events())


def test_reinvite_with_unusable_sdp_gets_488() -> None:
    rig, _, dialog = established()
    rig.peer.deliver(dialog.request("INVITE", body=b"v=0\r\nthis is not sdp\r\n"))
    rig.peer.expect_response(488)
    assert rig.call.status is ESTABLISHED


def test_local_hold_and_unhold() -> None:
    rig, _, _ = established(record_route=RECORD_ROUTE)
    assert rig.call.hold(rig.peer.now)
    sent = rig.peer.next_sent()
    hold = sent.message
    assert isinstance(hold, SipRequest) and hold.method == "INVITE"
    assert sent.target == Target("udp", "192.0.2.21", 5060)
    assert hold.cseq == (2, "INVITE")
    assert hold.headers.get_all("Route") == list(reversed(RECORD_ROUTE))
    assert hold.headers.get("Contact") == "<sip:alice@192.0.2.1:5070>"
    offer = SessionDescription.parse(hold.body)
    assert offer.media[0].direction == "sendonly"
    assert offer.session_version == 2
    assert rig.call.status is ESTABLISHED  # until the answer
    rig.peer.reply(
        hold,
        200,
        headers=[("Contact", PEER_CONTACT)],
        body=sdp_answer(version=2, direction="recvonly"),
    )
    ack = rig.peer.expect_request("ACK")
    assert ack.cseq == (2, "ACK")
    assert rig.call.status is CallStatus.HOLD

    assert rig.call.unhold(rig.peer.now)
    unhold = rig.peer.expect_request("INVITE")
    assert unhold.cseq == (3, "INVITE")
    assert direction_of(unhold.body) == "sendrecv"
    assert SessionDescription.parse(unhold.body).session_version == 3
    rig.peer.reply(unhold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(version=3))
    assert rig.peer.expect_request("ACK").cseq == (3, "ACK")
    assert [s for s, _, _ in rig.statuses()] == [CallStatus.HOLD, ESTABLISHED]


def test_hold_before_answer_is_refused() -> None:
    rig = setup()
    start(rig)
    assert not rig.call.hold(rig.peer.now)
    rig.peer.expect_nothing()


def test_retransmitted_200_to_reinvite_is_acked_again() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    rig.peer.reply(
        hold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    ack = rig.peer.expect_request("ACK")
    rig.peer.advance(0.5)
    rig.peer.reply(
        hold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    again = rig.peer.expect_request("ACK")
    assert again.to_bytes() == ack.to_bytes()


def test_glare_491_is_retried_after_2_1_to_4_seconds() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    start_at = rig.peer.now
    rig.peer.reply(hold, 491)
    ack = rig.peer.expect_request("ACK")
    assert ack.top_via.branch == hold.top_via.branch
    assert rig.call.status is ESTABLISHED
    rig.peer.run_until(start_at + 2.09)
    rig.peer.expect_nothing()
    rig.peer.run_until(start_at + 4.0)
    sent = rig.peer.next_sent()
    retry = sent.message
    assert isinstance(retry, SipRequest) and retry.method == "INVITE"
    assert 2.1 <= sent.at - start_at <= 4.0
    assert retry.cseq == (3, "INVITE")
    assert direction_of(retry.body) == "sendonly"
    # Timer A copies of the retry, if time ran past its T1.
    assert all(s.message.to_bytes() == retry.to_bytes() for s in rig.peer.drain())
    rig.peer.reply(
        retry, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    rig.peer.expect_request("ACK")
    assert rig.call.status is CallStatus.HOLD


def test_rejected_hold_keeps_the_call_and_does_not_loop() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    rig.peer.reply(hold, 488)
    rig.peer.expect_request("ACK")
    rig.peer.advance(10.0)
    rig.peer.expect_nothing()
    assert rig.call.status is ESTABLISHED


def test_hold_during_a_pending_reinvite_is_sent_after_it() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    assert rig.call.unhold(rig.peer.now)  # queued behind the hold
    rig.peer.expect_nothing()
    rig.peer.reply(
        hold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    rig.peer.expect_request("ACK")
    unhold = rig.peer.expect_request("INVITE")
    assert direction_of(unhold.body) == "sendrecv"
    rig.peer.reply(unhold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer())
    rig.peer.expect_request("ACK")
    assert [s for s, _, _ in rig.statuses()] == [CallStatus.HOLD, ESTABLISHED]


def test_peer_reinvite_during_our_reinvite_gets_491() -> None:
    rig, _, dialog = established()
    rig.peer.act(rig.call.hold)
    rig.peer.expect_request("INVITE")
    rig.peer.deliver(dialog.request("INVITE", body=sdp_offer()))
    rig.peer.expect_response(491)


def test_peer_update_offer_during_our_reinvite_gets_491() -> None:
    # RFC 3311 §5.2: an UPDATE offer that crosses our pending offer is refused with 491,
    # like a re-INVITE; our own offer goes on and is answered normally.
    rig, _, dialog = established(headers=[("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")])
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    rig.peer.deliver(dialog.request("UPDATE", body=sdp_offer(direction="sendonly", version=2)))
    refusal = rig.peer.expect_response(491)
    assert refusal.cseq.method == "UPDATE" and not refusal.body
    assert not any(isinstance(e, MediaUpdated) for e in rig.events())
    rig.peer.reply(
        hold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    rig.peer.expect_request("ACK")
    assert rig.call.status is CallStatus.HOLD
    assert rig.call.offer.media[0].direction == "sendonly"


def test_peer_update_offer_during_our_refresh_update_is_answered() -> None:
    # Our session refresh UPDATE carries no offer (RFC 4028 §7.3): no glare with an offer.
    rig, _, dialog = established(
        headers=[
            ("Session-Expires", "90;refresher=uac"),
            ("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE"),
        ]
    )
    rig.peer.advance(45.0)
    refresh = rig.peer.expect_request("UPDATE")
    assert not refresh.body
    rig.peer.deliver(dialog.request("UPDATE", body=sdp_offer(direction="sendonly", version=2)))
    ok = rig.peer.expect_response(200)
    assert direction_of(ok.body) == "recvonly"
    assert rig.call.status is CallStatus.HOLD


def test_peer_refresh_update_without_offer_during_our_reinvite_is_answered() -> None:
    rig, _, dialog = established()
    rig.peer.act(rig.call.hold)
    rig.peer.expect_request("INVITE")
    rig.peer.deliver(dialog.request("UPDATE", headers=[("Session-Expires", "90")]))
    ok = rig.peer.expect_response(200)
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert not ok.body


def test_peer_update_offer_before_the_ack_of_our_offer_gets_491() -> None:
    # Our offer went in the 2xx to an offerless re-INVITE; until the ACK answers it, an
    # UPDATE offer crosses it (RFC 3311 §5.2). The ACK ends our offer, answered or not.
    rig, _, dialog = established()
    reinvite = dialog.request("INVITE")
    rig.peer.deliver(reinvite)
    rig.peer.expect_response(200)
    rig.peer.deliver(dialog.request("UPDATE", body=sdp_offer(version=2)))
    rig.peer.expect_response(491)
    rig.peer.deliver(dialog.ack_for(reinvite))  # no answer in it: a broken peer
    rig.peer.deliver(dialog.request("UPDATE", body=sdp_offer(direction="sendonly", version=3)))
    ok = rig.peer.expect_response(200)
    assert direction_of(ok.body) == "recvonly"


# --------------------------------------------------------------------------- session timers


@pytest.mark.parametrize(
    ("allow", "method"),
    [("INVITE, ACK, CANCEL, BYE, UPDATE", "UPDATE"), ("INVITE, ACK, CANCEL, BYE", "INVITE")],
)
def test_session_refresh_when_we_are_the_refresher(allow: str, method: str) -> None:
    rig, _, _ = established(
        headers=[("Session-Expires", "90;refresher=uac"), ("Require", "timer"), ("Allow", allow)]
    )
    start_at = rig.peer.now
    rig.peer.run_until(start_at + 44.99)
    rig.peer.expect_nothing()
    rig.peer.run_until(start_at + 45.0)
    refresh = rig.peer.expect_request(method)
    assert refresh.cseq == (2, method)
    assert refresh.headers.get("Session-Expires") == "90;refresher=uac"
    assert "timer" in refresh.headers.get_all("Supported")
    assert bool(refresh.body) == (method == "INVITE")
    body = sdp_answer() if method == "INVITE" else b""
    rig.peer.reply(
        refresh,
        200,
        headers=[("Contact", PEER_CONTACT), ("Session-Expires", "90;refresher=uac")],
        body=body,
    )
    if method == "INVITE":
        rig.peer.expect_request("ACK")
    rig.peer.run_until(start_at + 90.0)
    assert rig.peer.expect_request(method).cseq == (3, method)
    assert rig.call.status is ESTABLISHED


def test_session_expires_without_refresh_from_the_peer() -> None:
    rig, _, _ = established(headers=[("Session-Expires", "90;refresher=uas")])
    start_at = rig.peer.now
    rig.peer.run_until(start_at + 59.99)
    rig.peer.expect_nothing()
    # RFC 4028 §10: BYE before expiry, min(32, 90/3) = 30 s ahead of it.
    rig.peer.run_until(start_at + 60.0)
    bye = rig.peer.expect_request("BYE")
    rig.peer.reply(bye, 200)
    assert rig.call.status is CallStatus.FAILED
    assert rig.call.info == "Failed by session timer expiry"


def test_refresh_from_the_peer_pushes_expiry_back() -> None:
    rig, _, dialog = established(headers=[("Session-Expires", "90;refresher=uas")])
    rig.peer.advance(40.0)
    update = dialog.request("UPDATE", headers=[("Session-Expires", "90;refresher=uac")])
    rig.peer.deliver(update)
    ok = rig.peer.expect_response(200)
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    rig.peer.advance(59.99)  # 99.99 s after the answer: expired unless refreshed
    rig.peer.expect_nothing()
    rig.peer.advance(0.01)
    rig.peer.expect_request("BYE")


# --------------------------------------------------------------------------- INFO, OPTIONS


def test_dtmf_info_one_digit_at_a_time() -> None:
    rig, _, _ = established()
    rig.call.send_dtmf_info("1#", rig.peer.now)
    first = rig.peer.expect_request("INFO")
    rig.peer.expect_nothing()  # the next digit waits for the answer
    assert first.headers.get("Content-Type") == "application/dtmf-relay"
    assert first.body == b"Signal=1\r\nDuration=160\r\n"
    assert first.cseq == (2, "INFO")
    rig.peer.reply(first, 200)
    second = rig.peer.expect_request("INFO")
    assert second.body == b"Signal=#\r\nDuration=160\r\n"
    assert second.cseq == (3, "INFO")
    rig.peer.reply(second, 200)
    rig.peer.expect_nothing()


def test_picture_fast_update_info_once_and_queued_behind_dtmf() -> None:
    rig, _, _ = established()
    rig.call.send_dtmf_info("5", rig.peer.now)
    rig.call.request_picture_fast_update(rig.peer.now)
    rig.call.request_picture_fast_update(rig.peer.now)  # one pending request at most
    dtmf = rig.peer.expect_request("INFO")
    assert dtmf.headers.get("Content-Type") == "application/dtmf-relay"
    rig.peer.reply(dtmf, 200)
    update = rig.peer.expect_request("INFO")
    assert update.headers.get("Content-Type") == "application/media_control+xml"
    assert b"<picture_fast_update/>" in update.body
    rig.peer.reply(update, 200)
    rig.peer.expect_nothing()


def test_dtmf_info_timeout_moves_on() -> None:
    rig, _, _ = established()
    rig.call.send_dtmf_info("12", rig.peer.now)
    rig.peer.expect_request("INFO")
    rig.peer.advance(32.0)
    infos = [s.message for s in rig.peer.drain()]
    assert [m.body for m in infos if isinstance(m, SipRequest)][-1].startswith(b"Signal=2")


def test_dtmf_info_transport_error_moves_on() -> None:
    rig, _, _ = established()
    rig.call.send_dtmf_info("12", rig.peer.now)
    rig.peer.expect_request("INFO")
    rig.ua.transport_error(PEER, "unreachable", rig.peer.now)
    rig.peer.pump()
    second = rig.peer.expect_request("INFO")
    assert second.body.startswith(b"Signal=2")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"Signal=5\r\nDuration=160\r\n", DtmfReceived("5", 160)),
        (b"Signal = *\r\nDuration = 250\r\n", DtmfReceived("*", 250)),
        (b"Signal=#\r\n", DtmfReceived("#", None)),
    ],
)
def test_peer_dtmf_info(body: bytes, expected: DtmfReceived) -> None:
    rig, _, dialog = established()
    info = dialog.request("INFO", body=body, content_type="application/dtmf-relay")
    rig.peer.deliver(info)
    rig.peer.expect_response(200)
    assert [e for e in rig.events() if isinstance(e, DtmfReceived)] == [expected]


def test_peer_info_of_another_type_is_accepted_silently() -> None:
    rig, _, dialog = established()
    rig.peer.deliver(
        dialog.request("INFO", body=b"<media_control/>", content_type="application/xml")
    )
    rig.peer.expect_response(200)
    assert rig.events() == []


def test_options_in_dialog() -> None:
    rig, _, dialog = established()
    rig.peer.deliver(dialog.request("OPTIONS"))
    ok = rig.peer.expect_response(200)
    assert "INVITE" in ok.headers.get_all("Allow")


def test_unknown_method_in_dialog_gets_405() -> None:
    rig, _, dialog = established()
    rig.peer.deliver(dialog.request("MESSAGE", body=b"hi", content_type="text/plain"))
    assert "BYE" in rig.peer.expect_response(405).headers.get_all("Allow")


def test_out_of_order_cseq_gets_500() -> None:
    rig, _, dialog = established()
    rig.peer.deliver(dialog.request("OPTIONS", cseq=50))
    rig.peer.expect_response(200)
    rig.peer.deliver(dialog.request("INFO", cseq=49))
    rig.peer.expect_response(500)


def test_request_with_a_wrong_tag_gets_481() -> None:
    rig, _, dialog = established()
    dialog.local_tag = "someone-else"
    rig.peer.deliver(dialog.request("BYE"))
    rig.peer.expect_response(481)
    assert rig.call.status is ESTABLISHED


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("callee", "domain", "port", "expected"),
    [
        ("bob", "example.com", None, "sip:bob@example.com"),
        ("bob", "example.com", 5060, "sip:bob@example.com"),
        ("bob", "example.com", 5080, "sip:bob@example.com:5080"),
        ("bob@other.net", "example.com", None, "sip:bob@other.net"),
        ("sip:bob@other.net;transport=tcp", "example.com", None, "sip:bob@other.net;transport=tcp"),
        ("tel:+15551234", "example.com", None, "sip:+15551234@example.com"),
        ("bob", "2001:db8::1", 5080, "sip:bob@[2001:db8::1]:5080"),
    ],
)
def test_callee_uri(callee: str, domain: str, port: int | None, expected: str) -> None:
    assert callee_uri(callee, domain, port) == expected


def test_display_target() -> None:
    assert display_target("sip:bob@example.com:5080;transport=tcp") == "bob@example.com"
    assert display_target("tel:+1555") == "tel:+1555"


def test_name_addr_of_contact_is_ours() -> None:
    rig = setup()
    invite = start(rig)
    contact = NameAddr.parse(invite.headers.get("Contact") or "")
    assert contact.sip_uri.host == "192.0.2.1" and contact.sip_uri.port == 5070


# --------------------------------------------------------------------------- re-offer corners


def test_hold_refused_after_glare_restores_the_agreed_offer() -> None:
    rig, _, _ = established()
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    rig.peer.reply(hold, 491)
    rig.peer.expect_request("ACK")
    rig.peer.run_until(rig.peer.now + 4.0)
    retry = rig.peer.expect_request("INVITE")
    rig.peer.drain()
    # The retry repeats the refused offer: same o= version, since none was agreed.
    assert SessionDescription.parse(retry.body).session_version == 2
    rig.peer.reply(retry, 488)
    rig.peer.expect_request("ACK")
    rig.peer.advance(10.0)
    rig.peer.expect_nothing()
    assert rig.call.status is ESTABLISHED
    assert rig.call.offer.media[0].direction == "sendrecv"
    assert rig.call.offer.session_version == 1


def test_hold_asked_during_a_session_refresh_is_sent_after_it() -> None:
    rig, _, _ = established(
        headers=[("Session-Expires", "90;refresher=uac"), ("Allow", "INVITE, ACK, BYE")]
    )
    rig.peer.run_until(rig.peer.now + 45.0)
    refresh = rig.peer.expect_request("INVITE")
    assert direction_of(refresh.body) == "sendrecv"
    assert rig.call.hold(rig.peer.now)
    rig.peer.expect_nothing()
    rig.peer.reply(
        refresh,
        200,
        headers=[("Contact", PEER_CONTACT), ("Session-Expires", "90;refresher=uac")],
        body=sdp_answer(),
    )
    rig.peer.expect_request("ACK")
    assert rig.call.status is ESTABLISHED  # the refresh was no hold
    hold = rig.peer.expect_request("INVITE")
    assert direction_of(hold.body) == "sendonly"
    rig.peer.reply(
        hold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    rig.peer.expect_request("ACK")
    assert rig.call.status is CallStatus.HOLD


def test_refresh_while_held_by_peer_stays_on_hold() -> None:
    rig, _, dialog = established(
        headers=[("Session-Expires", "90;refresher=uac"), ("Allow", "INVITE, ACK, BYE")]
    )
    start_at = rig.peer.now
    reinvite = dialog.request("INVITE", body=sdp_offer(direction="sendonly"))
    rig.peer.deliver(reinvite)
    rig.peer.expect_response(200)
    rig.peer.deliver(dialog.ack_for(reinvite))
    assert rig.call.status is CallStatus.HOLD
    rig.peer.run_until(start_at + 45.0)
    refresh = rig.peer.expect_request("INVITE")
    # We answered since our last offer: the re-offer has a newer o= version.
    assert SessionDescription.parse(refresh.body).session_version == 3
    rig.peer.reply(
        refresh, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="sendonly")
    )
    rig.peer.expect_request("ACK")
    assert rig.call.status is CallStatus.HOLD
    assert [s for s, _, _ in rig.statuses()] == [CallStatus.HOLD]


def test_peer_reoffer_while_we_hold_keeps_our_hold() -> None:
    rig, _, dialog = established()
    rig.peer.act(rig.call.hold)
    hold = rig.peer.expect_request("INVITE")
    rig.peer.reply(
        hold, 200, headers=[("Contact", PEER_CONTACT)], body=sdp_answer(direction="recvonly")
    )
    rig.peer.expect_request("ACK")
    reinvite = dialog.request("INVITE", body=sdp_offer(direction="sendrecv", version=5))
    rig.peer.deliver(reinvite)
    ok = rig.peer.expect_response(200)
    assert direction_of(ok.body) == "sendonly"
    assert rig.call.status is CallStatus.HOLD


def test_ack_of_another_cseq_does_not_stop_the_200_retransmissions() -> None:
    rig, invite, dialog = established()
    reinvite = dialog.request("INVITE", body=sdp_offer())
    rig.peer.deliver(reinvite)
    rig.peer.expect_response(200)
    rig.peer.deliver(dialog.request("ACK", cseq=reinvite.cseq.seq - 1))
    rig.peer.advance(0.5)
    rig.peer.expect_response(200)
    rig.peer.deliver(dialog.ack_for(reinvite))
    rig.peer.advance(10.0)
    rig.peer.expect_nothing()
    del invite
