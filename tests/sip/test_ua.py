"""The user agent core (RFC 3261 §8, §17, §18): routing, stateless answers, endpoints."""

# The flows change state behind mypy's back: `assert x.state is X` after an
# earlier `is Y` is not an impossible comparison.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import pytest

from sipbridge.callinfo import CallStatus
from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import Target
from sipbridge.sip.invite import CallTimers, OutboundCall
from sipbridge.sip.message import SipRequest, make_response
from sipbridge.sip.offer_answer import MediaOfferConfig
from sipbridge.sip.registration import Registration, RegistrationState
from sipbridge.sip.transaction import Timers
from sipbridge.sip.ua import ALLOWED_METHODS, LocalEndpoint, UserAgent
from tests.sip.peer import PEER, Peer, out_of_dialog_request, sdp_answer

LOCAL = LocalEndpoint("192.0.2.1", 5070)
OTHER = Target("udp", "198.51.100.9", 5060)
MEDIA = MediaOfferConfig("192.0.2.1", 40000, None, session_id=1, session_version=1)
ACCOUNT = SipAccount(login="alice", domain="example.com", proxy=PEER, password="pw")


def rig() -> tuple[UserAgent, Peer]:
    ua = UserAgent(LOCAL, timers=Timers())
    return ua, Peer(ua)


# --------------------------------------------------------------------------- endpoint


@pytest.mark.parametrize(
    ("local", "sent_by", "contact_tcp"),
    [
        (
            LocalEndpoint("192.0.2.1", 5070),
            "192.0.2.1:5070",
            "<sip:u@192.0.2.1:5070;transport=tcp>",
        ),
        (
            LocalEndpoint("10.0.0.5", 5060, public_host="203.0.113.4", public_port=15060),
            "203.0.113.4:15060",
            "<sip:u@203.0.113.4:15060;transport=tcp>",
        ),
        (LocalEndpoint("::1", 5060), "[::1]:5060", "<sip:u@[::1]:5060;transport=tcp>"),
    ],
)
def test_local_endpoint_advertises_its_public_address(
    local: LocalEndpoint, sent_by: str, contact_tcp: str
) -> None:
    ua = UserAgent(local)
    assert local.sent_by() == sent_by
    via = ua.via("udp", branch="z9hG4bKabc")
    assert via == f"SIP/2.0/UDP {sent_by};rport;branch=z9hG4bKabc"
    assert ua.contact("u", "tcp") == contact_tcp
    assert ua.contact(None, "udp") == f"<sip:{sent_by}>"


def test_idle_user_agent_has_no_timer_and_nothing_to_send() -> None:
    ua, _ = rig()
    assert ua.get_timer() is None
    assert ua.messages_to_send() == []
    assert ua.session_count == 0


# --------------------------------------------------------------------------- stateless answers


def test_out_of_dialog_options_gets_200() -> None:
    ua, peer = rig()
    options = out_of_dialog_request("OPTIONS")
    peer.deliver(options)
    ok = peer.expect_response(200)
    assert ok.cseq == options.cseq and ok.call_id == options.call_id
    assert ok.to.tag  # §8.2.6.2
    assert ok.headers.get_all("Allow") == [m.strip() for m in ALLOWED_METHODS.split(",")]
    assert ok.headers.get("Accept") == "application/sdp"
    assert ok.headers.get("Server") == "sipbridge"
    # A retransmission is answered by the server transaction with the same response.
    peer.deliver(options)
    assert peer.expect_response(200).to_bytes() == ok.to_bytes()
    peer.advance(32.0)  # Timer J
    assert ua.get_timer() is None
    peer.expect_nothing()


def test_out_of_dialog_invite_gets_480_until_acked() -> None:
    ua, peer = rig()
    invite = out_of_dialog_request("INVITE", body=sdp_answer())
    peer.deliver(invite)
    final = peer.expect_response(480)
    assert final.reason == "Incoming Calls Not Supported"
    assert final.to.tag
    peer.advance(0.5)  # Timer G
    assert peer.expect_response(480).to_bytes() == final.to_bytes()
    ack = SipRequest(headers=invite.headers.copy(), method="ACK", uri=invite.uri)
    ack.headers.set("CSeq", "1 ACK")
    ack.headers.set("To", final.headers.get("To") or "")
    ack.headers.remove("Content-Type")
    peer.deliver(ack)
    peer.advance(40.0)
    peer.expect_nothing()
    assert ua.get_timer() is None
    assert ua.session_count == 0


def test_request_for_an_unknown_dialog_gets_481() -> None:
    _, peer = rig()
    peer.deliver(out_of_dialog_request("BYE", to_tag="gone"))
    assert peer.expect_response(481).cseq.method == "BYE"


def test_unknown_out_of_dialog_method_gets_405() -> None:
    _, peer = rig()
    peer.deliver(out_of_dialog_request("MESSAGE"))
    response = peer.expect_response(405)
    assert "INVITE" in response.headers.get_all("Allow")


def test_cancel_of_an_unknown_invite_gets_481() -> None:
    _, peer = rig()
    peer.deliver(out_of_dialog_request("CANCEL"))
    peer.expect_response(481)


def test_cancel_of_an_answered_invite_gets_200() -> None:
    _, peer = rig()
    invite = out_of_dialog_request("INVITE")
    peer.deliver(invite)
    peer.expect_response(480)
    cancel = SipRequest(headers=invite.headers.copy(), method="CANCEL", uri=invite.uri)
    cancel.headers.set("CSeq", "1 CANCEL")
    cancel.headers.remove("Contact")
    peer.deliver(cancel)
    assert peer.expect_response(200).cseq.method == "CANCEL"


def test_request_without_rfc3261_branch_is_dropped() -> None:
    ua, peer = rig()
    request = out_of_dialog_request("OPTIONS")
    request.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=old2543")
    peer.deliver(request)
    peer.expect_nothing()
    assert ua.get_timer() is None


# --------------------------------------------------------------------------- responses


def test_stray_response_is_dropped() -> None:
    ua, peer = rig()
    request = out_of_dialog_request("OPTIONS")
    request.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKnotours")
    peer.deliver(make_response(request, 200))
    peer.expect_nothing()
    assert ua.get_timer() is None


def test_response_for_another_sent_by_is_dropped() -> None:
    ua, peer = rig()
    registration = Registration(ua, ACCOUNT, expires=60)
    peer.act(registration.start)
    register = peer.expect_request("REGISTER")
    response = make_response(register, 200)
    response.headers.set("Via", str(register.top_via).replace("192.0.2.1", "192.0.2.99"))
    peer.deliver(response)
    assert registration.state is RegistrationState.REGISTERING  # §18.1.2: discarded
    peer.reply(register, 200)
    assert registration.state is RegistrationState.REGISTERED


def test_requests_carry_user_agent_and_rport() -> None:
    ua, peer = rig()
    peer.act(Registration(ua, ACCOUNT).start)
    register = peer.expect_request("REGISTER")
    assert register.headers.get("User-Agent") == "sipbridge"
    assert "rport" in register.top_via.params


# --------------------------------------------------------------------------- several sessions


def test_responses_are_routed_to_their_own_session() -> None:
    ua, peer = rig()
    first = OutboundCall(ua, ACCOUNT, "sip:bob@example.com", MEDIA, timers=CallTimers())
    second = OutboundCall(ua, ACCOUNT, "sip:carol@example.com", MEDIA, timers=CallTimers())
    registration = Registration(ua, ACCOUNT, expires=60)
    peer.act(first.start)
    peer.act(second.start)
    peer.act(registration.start)
    invite1 = peer.expect_request("INVITE")
    invite2 = peer.expect_request("INVITE")
    register = peer.expect_request("REGISTER")
    assert ua.session_count == 3
    peer.reply(invite2, 486, to_tag="c")
    peer.expect_request("ACK")
    peer.reply(invite1, 180, to_tag="b")
    peer.reply(register, 200)
    assert (first.status, second.status) == (CallStatus.RING, CallStatus.BUSY)
    assert registration.state is RegistrationState.REGISTERED
    assert ua.session_count == 2


def test_transport_error_only_hits_transactions_to_that_target() -> None:
    ua, peer = rig()
    here = Registration(ua, ACCOUNT, expires=60)
    elsewhere = Registration(
        ua, SipAccount(login="bob", domain="example.org", proxy=OTHER, password="x"), expires=60
    )
    peer.act(here.start)
    peer.act(elsewhere.start)
    peer.drain()
    ua.transport_error(OTHER, "connection refused", peer.now)
    assert elsewhere.state is RegistrationState.FAILED
    assert here.state is RegistrationState.REGISTERING


def test_finished_session_keeps_completed_transactions_only_until_they_end() -> None:
    ua, peer = rig()
    call = OutboundCall(ua, ACCOUNT, "sip:bob@example.com", MEDIA, timers=CallTimers())
    peer.act(call.start)
    invite = peer.expect_request("INVITE")
    peer.reply(invite, 404, to_tag="b")
    peer.expect_request("ACK")
    assert ua.session_count == 0
    timer = ua.get_timer()
    assert timer is not None  # Timer D of the INVITE transaction
    peer.run_until(timer)
    assert ua.get_timer() is None
