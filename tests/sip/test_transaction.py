"""RFC 3261 §17 / RFC 6026 transaction state machines, on virtual time."""

# The machines change state behind mypy's back: `assert txn.state is X` after an
# earlier `is Y` is not an impossible comparison.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.address import SipParseError, Target
from sipbridge.sip.message import SipRequest, SipResponse, make_response, parse_message
from sipbridge.sip.transaction import (
    Event,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    State,
    Terminated,
    TimedOut,
    Timers,
    TransactionError,
    TransportFailed,
    TwoHundredRetransmitter,
    build_ack,
    client_key,
    server_key,
)

TIMERS = Timers()  # T1=0.5, T2=4, T4=5
UDP = Target("udp", "192.0.2.10", 5060)
TCP = Target("tcp", "192.0.2.10", 5060)
BRANCH = "z9hG4bKnashds8"

INVITE_TEXT = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch={BRANCH};rport\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKolder\r\n"
    "Route: <sip:p1.example.com;lr>\r\n"
    "Route: <sip:p2.example.com;lr>\r\n"
    "Max-Forwards: 70\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Timestamp: 54\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
)


def request(method: str = "INVITE", *, branch: str = BRANCH, sent_by: str = "") -> SipRequest:
    """The INVITE above, or the same dialog's request with another method."""
    text = INVITE_TEXT.replace("CSeq: 314159 INVITE", f"CSeq: 314159 {method}")
    text = text.replace("INVITE sip:", f"{method} sip:", 1).replace(BRANCH, branch)
    if sent_by:
        text = text.replace("pc33.atlanta.example.com:5060;", f"{sent_by};", 1)
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


def reply(req: SipRequest, status: int, tag: str | None = "a6c85cf") -> SipResponse:
    return make_response(req, status, to_tag=tag)


class Driven(Protocol):
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def messages_to_send(self) -> Sequence[SipRequest | SipResponse]: ...
    def next_event(self) -> Event | None: ...


def run_until(machine: Driven, until: float) -> list[tuple[float, SipRequest | SipResponse]]:
    """Fire timers exactly at their deadlines up to ``until``; what was sent, and when."""
    sent: list[tuple[float, SipRequest | SipResponse]] = []
    while (deadline := machine.get_timer()) is not None and deadline <= until:
        machine.handle_timer(deadline)
        sent += [(deadline, message) for message in machine.messages_to_send()]
    return sent


def events(machine: Driven) -> list[Event]:
    out: list[Event] = []
    while (event := machine.next_event()) is not None:
        out.append(event)
    return out


def times(sent: list[tuple[float, SipRequest | SipResponse]]) -> list[float]:
    return [when for when, _ in sent]


def started_invite(target: Target = UDP, now: float = 0.0) -> InviteClientTransaction:
    txn = InviteClientTransaction(request(), target, reliable=target is TCP, timers=TIMERS)
    txn.start(now)
    return txn


# -- Timers -------------------------------------------------------------------


def test_timer_values_follow_rfc3261_table_4() -> None:
    assert (TIMERS.b, TIMERS.f, TIMERS.h, TIMERS.j, TIMERS.l, TIMERS.m) == (32.0,) * 6
    assert (TIMERS.d, TIMERS.i, TIMERS.k, TIMERS.trying) == (32.0, 5.0, 5.0, 0.2)
    assert Timers(t1=0.1).d == 32.0  # "at least 32 s" whatever T1
    assert Timers(t1=1.0).d == 64.0  # and covers the peer's 64*T1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"t1": 0.0}, "T1 must be positive, got 0.0"),
        ({"t1": 1.0, "t2": 0.5}, "T2 (0.5) must not be below T1 (1.0)"),
        ({"t4": -1.0}, "T4 must be positive, got -1.0"),
    ],
)
def test_timers_reject_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Timers(**kwargs)
    assert str(info.value) == message


# -- matching -------------------------------------------------------------------


def test_client_key_is_branch_and_cseq_method() -> None:
    assert client_key(reply(request(), 180)) == (BRANCH, "INVITE")
    assert client_key(reply(request("CANCEL"), 200)) == (BRANCH, "CANCEL")
    txn = started_invite()
    assert txn.key == (BRANCH, "INVITE")


def test_client_key_without_branch_is_a_parse_error() -> None:
    response = reply(request(), 180)
    response.headers.set("Via", "SIP/2.0/UDP pc33.atlanta.example.com")
    with pytest.raises(SipParseError) as info:
        client_key(response)
    assert str(info.value) == "response Via has no branch"


def test_server_key_maps_ack_to_invite_and_normalizes_sent_by() -> None:
    key = (BRANCH, "pc33.atlanta.example.com:5060", "INVITE")
    assert server_key(request()) == key
    assert server_key(request("ACK")) == key
    assert server_key(request(sent_by="PC33.Atlanta.Example.COM")) == key  # default port
    assert server_key(request("CANCEL"))[2] == "CANCEL"
    assert server_key(request(sent_by="[2001:db8::1]:5070"))[1] == "[2001:db8::1]:5070"


def test_server_key_requires_the_magic_cookie() -> None:
    with pytest.raises(SipParseError) as info:
        server_key(request(branch="rfc2543style"))
    assert str(info.value) == "Via branch without the RFC 3261 magic cookie: 'rfc2543style'"


# -- INVITE client (§17.1.1, RFC 6026) ------------------------------------------


def test_invite_over_udp_retransmits_with_doubling_then_timer_b() -> None:
    txn = started_invite()
    assert txn.state is State.CALLING
    assert txn.messages_to_send() == [txn.request]
    sent = run_until(txn, 31.99)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # no T2 cap for INVITE
    assert all(message is txn.request for _, message in sent)
    assert events(txn) == []
    assert txn.get_timer() == 32.0
    assert run_until(txn, 32.0) == []
    assert events(txn) == [TimedOut("B"), Terminated()]
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None


def test_invite_over_tcp_never_retransmits() -> None:
    txn = started_invite(TCP, now=10.0)
    assert txn.messages_to_send() == [txn.request]
    assert txn.get_timer() == 42.0  # only Timer B
    assert run_until(txn, 42.0) == []
    assert events(txn) == [TimedOut("B"), Terminated()]


def test_provisional_stops_timer_a_and_timer_b() -> None:
    txn = started_invite()
    txn.messages_to_send()
    assert times(run_until(txn, 1.0)) == [0.5]
    ringing = reply(txn.request, 180)
    txn.receive_response(ringing, 1.0)
    assert txn.state is State.PROCEEDING
    assert events(txn) == [ResponseReceived(ringing)]
    assert txn.get_timer() is None
    assert run_until(txn, 1000.0) == []
    txn.receive_response(ringing, 2.0)  # every provisional goes up
    assert events(txn) == [ResponseReceived(ringing)]


def test_non_2xx_final_is_acked_with_the_rfc_headers() -> None:
    txn = started_invite()
    txn.messages_to_send()
    txn.receive_response(reply(txn.request, 100, tag=None), 0.2)
    busy = reply(txn.request, 486, tag="b0b")
    txn.receive_response(busy, 2.0)
    assert txn.state is State.COMPLETED
    assert events(txn) == [
        ResponseReceived(reply(txn.request, 100, tag=None)),
        ResponseReceived(busy),
    ]
    [ack] = txn.messages_to_send()
    assert isinstance(ack, SipRequest)
    assert ack == build_ack(txn.request, busy)
    assert (ack.method, ack.uri) == ("ACK", "sip:bob@biloxi.example.com")
    assert list(ack.headers) == [
        ("Via", f"SIP/2.0/UDP pc33.atlanta.example.com:5060;branch={BRANCH};rport"),
        ("Route", "<sip:p1.example.com;lr>"),
        ("Route", "<sip:p2.example.com;lr>"),
        ("Max-Forwards", "70"),
        ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
        ("To", '"Bob" <sip:bob@biloxi.example.com>;tag=b0b'),  # the response's To
        ("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com"),
        ("CSeq", "314159 ACK"),
        ("Content-Length", "0"),
    ]
    assert ack.body == b""
    assert ack.to_bytes().endswith(b"Content-Length: 0\r\n\r\n")
    assert txn.get_timer() == 34.0  # Timer D = 32 s


def test_retransmitted_final_is_re_acked_without_a_second_event() -> None:
    txn = started_invite()
    txn.messages_to_send()
    busy = reply(txn.request, 486)
    assert times(run_until(txn, 1.0)) == [0.5]
    txn.receive_response(busy, 1.0)
    [ack] = txn.messages_to_send()
    events(txn)
    txn.receive_response(busy, 1.6)
    txn.receive_response(reply(txn.request, 603), 2.0)
    assert txn.messages_to_send() == [ack, ack]
    txn.receive_response(reply(txn.request, 180), 2.1)  # stray provisional: absorbed
    txn.receive_response(reply(txn.request, 200), 2.2)  # stray 2xx: absorbed
    assert txn.messages_to_send() == []
    assert events(txn) == []
    assert run_until(txn, 33.0) == []
    assert events(txn) == [Terminated()]
    txn.receive_response(busy, 40.0)  # after TERMINATED: nothing
    assert txn.messages_to_send() == []
    assert events(txn) == []


def test_reliable_non_2xx_final_terminates_at_once() -> None:
    txn = started_invite(TCP)
    txn.messages_to_send()
    busy = reply(txn.request, 486)
    txn.receive_response(busy, 1.0)
    assert [m.method for m in txn.messages_to_send()] == ["ACK"]
    assert events(txn) == [ResponseReceived(busy), Terminated()]
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None


def test_2xx_goes_to_accepted_and_retransmissions_go_up_until_timer_m() -> None:
    txn = started_invite()
    txn.messages_to_send()
    ok = reply(txn.request, 200)
    assert times(run_until(txn, 1.0)) == [0.5]
    txn.receive_response(ok, 1.0)
    assert txn.state is State.ACCEPTED
    assert events(txn) == [ResponseReceived(ok)]
    assert txn.messages_to_send() == []  # the UA core ACKs a 2xx, not the transaction
    assert txn.get_timer() == 33.0  # Timer M = 64*T1
    forked = reply(txn.request, 200, tag="other-fork")
    txn.receive_response(ok, 1.5)
    txn.receive_response(forked, 2.0)
    txn.receive_response(reply(txn.request, 180), 2.5)
    txn.receive_response(reply(txn.request, 486), 2.6)
    assert events(txn) == [ResponseReceived(ok), ResponseReceived(forked)]
    assert txn.messages_to_send() == []
    assert run_until(txn, 32.9) == []
    assert events(txn) == []
    run_until(txn, 33.0)
    assert events(txn) == [Terminated()]


def test_invite_transport_error_informs_and_terminates() -> None:
    txn = started_invite()
    txn.transport_error("ICMP port unreachable", 0.1)
    assert events(txn) == [TransportFailed("ICMP port unreachable"), Terminated()]
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None
    txn.transport_error("again", 0.2)
    txn.receive_response(reply(txn.request, 180), 0.3)
    assert events(txn) == []


def test_late_handle_timer_sends_one_copy_and_keeps_the_schedule() -> None:
    txn = started_invite()
    txn.messages_to_send()
    txn.handle_timer(10.0)  # due: 0.5, 1.5, 3.5, 7.5
    assert txn.messages_to_send() == [txn.request]
    assert txn.get_timer() == 15.5
    txn.handle_timer(40.0)  # A at 15.5 (31.5 skipped as stale), then B at 32
    assert txn.messages_to_send() == [txn.request]
    assert events(txn) == [TimedOut("B"), Terminated()]


def test_late_handle_timer_in_the_capped_regime_jumps_to_the_schedule() -> None:
    txn = started_options()
    txn.handle_timer(13.0)  # due: 0.5, 1.5, 3.5, 7.5, 11.5
    assert txn.messages_to_send() == [txn.request]
    assert txn.get_timer() == 15.5
    txn.receive_response(reply(txn.request, 100, tag=None), 14.0)
    txn.handle_timer(1e9)  # hours of stall: one copy, no loop over every T2
    assert txn.messages_to_send() == [txn.request]
    assert events(txn)[-2:] == [TimedOut("F"), Terminated()]


def test_client_misuse_raises_transaction_error() -> None:
    with pytest.raises(TransactionError) as info:
        InviteClientTransaction(request("BYE"), UDP, reliable=False, timers=TIMERS)
    assert str(info.value) == "InviteClientTransaction cannot send BYE"
    with pytest.raises(TransactionError) as info:
        NonInviteClientTransaction(request("ACK"), UDP, reliable=False, timers=TIMERS)
    assert str(info.value) == "NonInviteClientTransaction cannot send ACK"
    txn = InviteClientTransaction(request(), UDP, reliable=False, timers=TIMERS)
    with pytest.raises(TransactionError) as info:
        txn.receive_response(reply(txn.request, 180), 0.0)
    assert str(info.value) == "response before start()"
    txn.start(0.0)
    with pytest.raises(TransactionError) as info:
        txn.start(1.0)
    assert str(info.value) == "transaction already started"
    with pytest.raises(TransactionError) as info:
        txn.receive_response(reply(request(branch="z9hG4bKother"), 180), 1.0)
    assert str(info.value) == (
        f"response for ('z9hG4bKother', 'INVITE') given to transaction ('{BRANCH}', 'INVITE')"
    )


# -- non-INVITE client (§17.1.2) ------------------------------------------------


def started_options(target: Target = UDP) -> NonInviteClientTransaction:
    txn = NonInviteClientTransaction(
        request("OPTIONS"), target, reliable=target is TCP, timers=TIMERS
    )
    txn.start(0.0)
    assert txn.messages_to_send() == [txn.request]
    return txn


def test_non_invite_retransmits_capped_at_t2_then_timer_f() -> None:
    txn = started_options()
    assert txn.state is State.TRYING
    sent = run_until(txn, 31.99)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(txn) == []
    run_until(txn, 32.0)
    assert events(txn) == [TimedOut("F"), Terminated()]
    assert txn.state is State.TERMINATED


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    txn = started_options()
    assert times(run_until(txn, 0.7)) == [0.5]
    trying = reply(txn.request, 100, tag=None)
    txn.receive_response(trying, 0.7)
    assert txn.state is State.PROCEEDING
    assert events(txn) == [ResponseReceived(trying)]
    assert times(run_until(txn, 20.0)) == [1.5, 5.5, 9.5, 13.5, 17.5]
    run_until(txn, 32.0)  # Timer F still runs in PROCEEDING
    assert events(txn) == [TimedOut("F"), Terminated()]


def test_non_invite_final_absorbs_retransmissions_until_timer_k() -> None:
    txn = started_options()
    ok = reply(txn.request, 200)
    assert times(run_until(txn, 2.0)) == [0.5, 1.5]
    txn.receive_response(ok, 2.0)
    assert txn.state is State.COMPLETED
    assert events(txn) == [ResponseReceived(ok)]
    assert txn.get_timer() == 7.0  # Timer K = T4
    txn.receive_response(ok, 3.0)
    txn.receive_response(reply(txn.request, 500), 3.5)
    assert events(txn) == []
    assert run_until(txn, 7.0) == []  # no retransmission after the final response
    assert events(txn) == [Terminated()]


def test_non_invite_over_tcp_no_retransmission_and_k_is_zero() -> None:
    txn = started_options(TCP)
    assert txn.get_timer() == 32.0
    ok = reply(txn.request, 404)
    txn.receive_response(ok, 5.0)
    assert events(txn) == [ResponseReceived(ok), Terminated()]
    assert txn.messages_to_send() == []


def test_non_invite_transport_error_in_proceeding() -> None:
    txn = started_options()
    txn.receive_response(reply(txn.request, 100, tag=None), 0.1)
    events(txn)
    txn.transport_error("connection reset", 0.2)
    assert events(txn) == [TransportFailed("connection reset"), Terminated()]


# -- INVITE server (§17.2.1, RFC 6026) ------------------------------------------


def invite_server(target: Target = UDP, now: float | None = 0.0) -> InviteServerTransaction:
    return InviteServerTransaction(
        request(), target, reliable=target is TCP, timers=TIMERS, now=now
    )


def test_invite_server_sends_100_trying_after_200_ms() -> None:
    txn = invite_server(now=3.0)
    assert txn.state is State.PROCEEDING
    assert txn.key == (BRANCH, "pc33.atlanta.example.com:5060", "INVITE")
    assert txn.get_timer() == pytest.approx(3.2)
    [(when, trying)] = run_until(txn, 10.0)
    assert when == pytest.approx(3.2)
    assert isinstance(trying, SipResponse)
    assert (trying.status, trying.reason) == (100, "Trying")
    assert trying.to.tag is None
    assert trying.headers.get_all("Via") == txn.request.headers.get_all("Via")
    assert trying.headers.get("Timestamp") == "54"  # §8.2.6.1
    assert txn.get_timer() is None
    txn.receive_request(request(), 4.0)  # retransmission: the 100 again
    assert txn.messages_to_send() == [trying]


def test_invite_server_no_100_when_the_tu_answers_first() -> None:
    txn = invite_server()
    ringing = reply(txn.request, 180)
    txn.respond(ringing, 0.1)
    assert txn.messages_to_send() == [ringing]
    assert txn.get_timer() is None
    txn.receive_request(request(), 0.5)
    assert txn.messages_to_send() == [ringing]  # the last provisional again
    assert events(txn) == []


def test_invite_server_start_arms_the_100_timer() -> None:
    txn = invite_server(now=None)
    assert txn.get_timer() is None
    txn.start(5.0)
    assert txn.get_timer() == pytest.approx(5.2)
    with pytest.raises(TransactionError):
        txn.start(6.0)


def test_retransmitted_invite_before_any_response_gets_100_at_once() -> None:
    txn = invite_server(now=None)
    txn.receive_request(request(), 0.5)
    [trying] = txn.messages_to_send()
    assert trying.status == 100
    assert txn.last_response is trying


def test_non_2xx_final_retransmits_on_timer_g_until_timer_h() -> None:
    txn = invite_server()
    busy = reply(txn.request, 486)
    txn.respond(busy, 0.0)
    assert txn.state is State.COMPLETED
    assert txn.messages_to_send() == [busy]
    sent = run_until(txn, 31.99)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(message is busy for _, message in sent)
    run_until(txn, 32.0)
    assert events(txn) == [TimedOut("H"), Terminated()]
    assert txn.state is State.TERMINATED


def test_ack_confirms_and_timer_i_absorbs_retransmissions() -> None:
    txn = invite_server()
    busy = reply(txn.request, 486)
    txn.respond(busy, 0.0)
    txn.messages_to_send()
    assert times(run_until(txn, 1.0)) == [0.5]
    txn.receive_request(request(), 1.0)  # retransmitted INVITE: the final again
    assert txn.messages_to_send() == [busy]
    assert times(run_until(txn, 1.9)) == [1.5]
    txn.receive_request(request("ACK"), 2.0)
    assert txn.state is State.CONFIRMED
    assert txn.get_timer() == 7.0  # Timer I = T4, G and H stopped
    txn.receive_request(request("ACK"), 3.0)
    txn.receive_request(request(), 3.0)
    assert txn.messages_to_send() == []
    assert run_until(txn, 7.0) == []
    assert events(txn) == [Terminated()]  # no TimedOut: the ACK came


def test_invite_server_over_tcp_no_timer_g_and_i_is_zero() -> None:
    txn = invite_server(TCP)
    txn.respond(reply(txn.request, 503), 0.0)
    txn.messages_to_send()
    assert txn.get_timer() == 32.0  # Timer H only
    txn.receive_request(request("ACK"), 1.0)
    assert events(txn) == [Terminated()]
    assert txn.state is State.TERMINATED


def test_2xx_goes_to_accepted_until_timer_l() -> None:
    txn = invite_server()
    ok = reply(txn.request, 200)
    txn.respond(ok, 0.1)
    assert txn.state is State.ACCEPTED
    assert txn.messages_to_send() == [ok]  # answered within 200 ms: no 100 Trying
    assert txn.get_timer() == pytest.approx(32.1)  # Timer L = 64*T1
    txn.receive_request(request(), 1.5)  # retransmitted INVITE: absorbed (RFC 6026)
    assert txn.messages_to_send() == []
    txn.respond(ok, 1.5)  # the TU's 2xx retransmission passes through
    assert txn.messages_to_send() == [ok]
    ack = request("ACK")
    txn.receive_request(ack, 2.0)  # an ACK that matches: to the TU
    assert events(txn) == [RequestReceived(ack)]
    with pytest.raises(TransactionError) as info:
        txn.respond(reply(txn.request, 486), 2.0)
    assert str(info.value) == "cannot send 486 in state ACCEPTED"
    assert run_until(txn, 32.1) == []
    assert events(txn) == [Terminated()]


def test_second_final_raises_transaction_error() -> None:
    txn = invite_server()
    txn.respond(reply(txn.request, 486), 0.0)
    with pytest.raises(TransactionError) as info:
        txn.respond(reply(txn.request, 500), 0.1)
    assert str(info.value) == "cannot send 500 in state COMPLETED"
    with pytest.raises(TransactionError):
        txn.respond(reply(txn.request, 180), 0.1)
    run_until(txn, 40.0)
    with pytest.raises(TransactionError) as info:
        txn.respond(reply(txn.request, 200), 41.0)
    assert str(info.value) == "cannot send 200 in state TERMINATED"


def test_invite_server_transport_errors_follow_rfc6026() -> None:
    txn = invite_server()
    txn.respond(reply(txn.request, 180), 0.0)
    txn.transport_error("connection reset", 0.1)
    assert events(txn) == [TransportFailed("connection reset")]
    assert txn.state is State.PROCEEDING  # the TU may still answer
    txn.respond(reply(txn.request, 486), 0.2)
    txn.transport_error("connection reset", 0.3)
    assert events(txn) == [TransportFailed("connection reset"), Terminated()]
    assert txn.get_timer() is None


def test_server_misuse_raises_transaction_error() -> None:
    with pytest.raises(TransactionError) as info:
        NonInviteServerTransaction(request("ACK"), UDP, reliable=False, timers=TIMERS)
    assert str(info.value) == "an ACK never creates a server transaction (§17.2.3)"
    txn = invite_server()
    other = request("BYE")
    with pytest.raises(TransactionError) as info:
        txn.respond(reply(other, 200), 0.0)
    assert str(info.value) == ("response CSeq 314159 BYE does not match request CSeq 314159 INVITE")
    with pytest.raises(TransactionError):
        txn.receive_request(other, 0.0)


# -- non-INVITE server (§17.2.2) ------------------------------------------------


def options_server(target: Target = UDP) -> NonInviteServerTransaction:
    return NonInviteServerTransaction(
        request("OPTIONS"), target, reliable=target is TCP, timers=TIMERS
    )


def test_non_invite_server_trying_absorbs_then_resends_last_response() -> None:
    txn = options_server()
    assert txn.state is State.TRYING
    assert txn.get_timer() is None  # no automatic 100 for non-INVITE
    txn.receive_request(request("OPTIONS"), 0.5)
    assert txn.messages_to_send() == []
    trying = reply(txn.request, 100, tag=None)
    txn.respond(trying, 0.6)
    assert txn.state is State.PROCEEDING
    txn.receive_request(request("OPTIONS"), 1.0)
    assert txn.messages_to_send() == [trying, trying]
    ok = reply(txn.request, 200)
    txn.respond(ok, 2.0)
    assert txn.state is State.COMPLETED
    txn.receive_request(request("OPTIONS"), 3.0)
    assert txn.messages_to_send() == [ok, ok]
    assert txn.get_timer() == 34.0  # Timer J = 64*T1
    with pytest.raises(TransactionError) as info:
        txn.respond(reply(txn.request, 500), 3.0)
    assert str(info.value) == "cannot send 500 in state COMPLETED"
    assert run_until(txn, 34.0) == []
    assert events(txn) == [Terminated()]


def test_non_invite_server_over_tcp_j_is_zero() -> None:
    txn = options_server(TCP)
    txn.respond(reply(txn.request, 200), 0.0)
    assert events(txn) == [Terminated()]
    assert txn.state is State.TERMINATED


def test_non_invite_server_transport_error() -> None:
    txn = options_server()
    txn.transport_error("nothing was sent", 0.0)
    assert events(txn) == []  # TRYING: nothing sent, nothing to report
    txn.respond(reply(txn.request, 200), 0.1)
    txn.transport_error("host unreachable", 0.2)
    assert events(txn) == [TransportFailed("host unreachable"), Terminated()]


# -- 2xx retransmission by the UAS core (§13.3.1.4) ---------------------------


def test_two_hundred_retransmitter_schedule_and_give_up() -> None:
    ok = reply(request(), 200)
    retransmitter = TwoHundredRetransmitter(ok, False, TIMERS)
    retransmitter.start(10.0)
    assert retransmitter.messages_to_send() == []  # the first copy went via the transaction
    sent = run_until(retransmitter, 41.99)
    assert [t - 10.0 for t in times(sent)] == [
        0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5
    ]  # fmt: skip
    assert all(message is ok for _, message in sent)
    run_until(retransmitter, 42.0)
    assert events(retransmitter) == [TimedOut("2xx"), Terminated()]
    assert retransmitter.get_timer() is None


def test_two_hundred_retransmitter_stops_on_ack() -> None:
    ok = reply(request(), 200)
    retransmitter = TwoHundredRetransmitter(ok, reliable=True, timers=TIMERS)
    retransmitter.start(0.0)
    assert times(run_until(retransmitter, 2.0)) == [0.5, 1.5]  # also over TCP
    ack = request("ACK", branch="z9hG4bKnewbranch")
    assert retransmitter.matches_ack(ack)
    assert not retransmitter.matches_ack(request("BYE"))
    retransmitter.ack_received(2.0)
    assert events(retransmitter) == [Terminated()]
    assert retransmitter.get_timer() is None
    assert run_until(retransmitter, 100.0) == []
    retransmitter.ack_received()
    assert events(retransmitter) == []


def test_two_hundred_retransmitter_only_takes_2xx_to_invite() -> None:
    with pytest.raises(TransactionError) as info:
        TwoHundredRetransmitter(reply(request(), 486), False, TIMERS)
    assert str(info.value) == "only a 2xx to INVITE is retransmitted by the core, not 486 to INVITE"


# -- properties -------------------------------------------------------------------

STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 503, 603])
ADVANCE = st.tuples(st.just("advance"), st.floats(0.0, 12.0), st.booleans())
ENOUGH = 64 * TIMERS.t1 + 32  # every machine here ends within this of its last input


def advance(machine: Driven, until: float, late: bool) -> None:
    """Fire timers up to ``until``: at each deadline, or all at once (a late wake-up)."""
    if late:
        deadline = machine.get_timer()
        if deadline is not None and deadline <= until:
            machine.handle_timer(until)
    else:
        run_until(machine, until)
    deadline = machine.get_timer()
    assert deadline is None or deadline > until, "a due timer was left unfired"


def check_event_log(log: list[Event]) -> None:
    assert log.count(Terminated()) == 1
    assert log[-1] == Terminated()
    assert sum(isinstance(e, TimedOut) for e in log) <= 1


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    reliable=st.booleans(),
    steps=st.lists(st.one_of(ADVANCE, st.tuples(st.just("response"), STATUSES)), max_size=25),
    error_at=st.none() | st.integers(0, 25),
)
def test_client_transactions_always_terminate(
    method: str,
    reliable: bool,
    steps: list[tuple[object, ...]],
    error_at: int | None,
) -> None:
    target = TCP if reliable else UDP
    txn: InviteClientTransaction | NonInviteClientTransaction
    if method == "INVITE":
        txn = InviteClientTransaction(request(), target, reliable=reliable, timers=TIMERS)
    else:
        txn = NonInviteClientTransaction(request(method), target, reliable=reliable, timers=TIMERS)
    now = 0.0
    txn.start(now)
    log: list[Event] = []
    for index, step in enumerate(steps):
        if index == error_at:
            txn.transport_error("boom", now)
        if step[0] == "advance":
            _, dt, late = step
            assert isinstance(dt, float) and isinstance(late, bool)
            advance(txn, now + dt, late)
            now += dt
        else:
            status = step[1]
            assert isinstance(status, int)
            txn.receive_response(reply(txn.request, status), now)
        log += events(txn)
        for message in txn.messages_to_send():
            assert message.method in (method, "ACK")
            assert message.headers.get("Via") == txn.request.headers.get("Via")
    if txn.state is State.PROCEEDING and method == "INVITE":
        txn.receive_response(reply(txn.request, 486), now)  # no Timer B in PROCEEDING
    advance(txn, now + ENOUGH, late=False)
    log += events(txn)
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None
    check_event_log(log)
    finals = [
        e.response.status
        for e in log
        if isinstance(e, ResponseReceived) and e.response.status >= 200
    ]
    if method == "INVITE":  # one non-2xx, or 2xx only (RFC 6026 passes every 2xx up)
        assert len(finals) <= 1 or all(200 <= s < 300 for s in finals)
    else:
        assert len(finals) <= 1
    assert not (finals and any(isinstance(e, TimedOut) for e in log))


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    reliable=st.booleans(),
    steps=st.lists(
        st.one_of(
            ADVANCE,
            st.tuples(st.just("respond"), STATUSES),
            st.tuples(st.just("request"), st.sampled_from(["same", "ACK"])),
            st.just(("transport_error",)),
        ),
        max_size=25,
    ),
)
def test_server_transactions_always_terminate(
    method: str, reliable: bool, steps: list[tuple[object, ...]]
) -> None:
    source = TCP if reliable else UDP
    txn: InviteServerTransaction | NonInviteServerTransaction
    if method == "INVITE":
        txn = InviteServerTransaction(request(), source, reliable=reliable, timers=TIMERS, now=0.0)
    else:
        txn = NonInviteServerTransaction(request(method), source, reliable=reliable, timers=TIMERS)
    now = 0.0
    log: list[Event] = []
    for step in steps:
        kind = step[0]
        if kind == "advance":
            _, dt, late = step
            assert isinstance(dt, float) and isinstance(late, bool)
            advance(txn, now + dt, late)
            now += dt
        elif kind == "respond":
            status = step[1]
            assert isinstance(status, int)
            allowed = txn.state in (State.TRYING, State.PROCEEDING) or (
                txn.state is State.ACCEPTED and 200 <= status < 300
            )
            if allowed:
                txn.respond(reply(txn.request, status), now)
            else:
                with pytest.raises(TransactionError):
                    txn.respond(reply(txn.request, status), now)
        elif kind == "request":
            if step[1] == "ACK" and method == "INVITE":
                txn.receive_request(request("ACK"), now)
            else:
                txn.receive_request(request(method), now)
        else:
            txn.transport_error("boom", now)
        log += events(txn)
        for response in txn.messages_to_send():
            assert response.cseq == txn.request.cseq
    if txn.state in (State.TRYING, State.PROCEEDING):
        txn.respond(reply(txn.request, 500), now)  # the TU always answers in the end
    advance(txn, now + ENOUGH, late=False)
    log += events(txn)
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None
    check_event_log(log)
    if TimedOut("H") in log:
        assert method == "INVITE" and RequestReceived(request("ACK")) not in log
