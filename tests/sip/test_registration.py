"""Registration (RFC 3261 §10.2) against a scripted registrar, on virtual time."""

# The flows change state behind mypy's back: `assert x.state is X` after an
# earlier `is Y` is not an impossible comparison.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import pytest

from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import NameAddr, Target
from sipbridge.sip.auth import DigestChallenge, format_challenge
from sipbridge.sip.message import SipRequest
from sipbridge.sip.registration import Registration, RegistrationEvent, RegistrationState
from sipbridge.sip.transaction import Timers
from sipbridge.sip.ua import LocalEndpoint, UserAgent
from tests.sip.peer import PEER, PEER_TCP, Peer, check_digest, out_of_dialog_request

LOCAL = LocalEndpoint("192.0.2.1", 5070)
TIMERS = Timers()  # T1 = 0.5 s: Timer F = 32 s
REALM = "example.com"
CONTACT = "<sip:alice@192.0.2.1:5070>"


def account(proxy: Target = PEER, password: str = "secret") -> SipAccount:
    return SipAccount(login="alice", domain="example.com", proxy=proxy, password=password)


def setup(
    *, expires: int = 3600, proxy: Target = PEER, password: str = "secret"
) -> tuple[UserAgent, Peer, Registration]:
    ua = UserAgent(LOCAL, timers=TIMERS)
    peer = Peer(ua, address=proxy)
    registration = Registration(ua, account(proxy, password), expires=expires)
    return ua, peer, registration


def events(registration: Registration) -> list[RegistrationEvent]:
    out = []
    while (event := registration.next_event()) is not None:
        out.append(event)
    return out


def challenge(nonce: str = "n1", *, stale: bool = False) -> tuple[str, str]:
    value = format_challenge(DigestChallenge(realm=REALM, nonce=nonce, qop=("auth",), stale=stale))
    return ("WWW-Authenticate", value)


def granted(seconds: int) -> tuple[str, str]:
    return ("Contact", f"{CONTACT};expires={seconds}")


def authorize(peer: Peer, first: SipRequest, nonce: str = "n1") -> SipRequest:
    """401 to ``first``; return the retried REGISTER after checking its credentials."""
    peer.reply(first, 401, to_tag="reg", headers=[challenge(nonce)])
    retry = peer.expect_request("REGISTER")
    check_digest(
        retry, "Authorization", username="alice", password="secret", realm=REALM, nonce=nonce
    )
    return retry


# --------------------------------------------------------------------------- success


def test_first_register_is_well_formed() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    request = peer.expect_request("REGISTER")
    assert request.uri == "sip:example.com"
    assert NameAddr.parse(request.headers.get("To") or "").uri == "sip:alice@example.com"
    assert request.from_.uri == "sip:alice@example.com"
    assert request.from_.tag
    assert request.headers.get("Contact") == f"{CONTACT};expires=3600"
    assert request.headers.get("Expires") == "3600"
    assert request.cseq == (1, "REGISTER")
    assert request.call_id == registration.call_id
    assert "Authorization" not in request.headers
    via = request.top_via
    assert (via.host, via.port, via.transport) == ("192.0.2.1", 5070, "UDP")
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert "rport" in via.params
    assert registration.state is RegistrationState.REGISTERING


def test_challenge_then_ok_then_refresh_before_expiry() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    first = peer.expect_request("REGISTER")
    retry = authorize(peer, first)
    assert retry.cseq == (2, "REGISTER")
    assert retry.call_id == first.call_id
    assert retry.from_.tag == first.from_.tag
    assert retry.top_via.branch != first.top_via.branch

    peer.reply(retry, 200, to_tag="reg", headers=[granted(120)])
    assert registration.state is RegistrationState.REGISTERED
    assert registration.granted == 120
    assert events(registration) == [
        RegistrationEvent(RegistrationState.REGISTERING),
        RegistrationEvent(RegistrationState.REGISTERED, 200, "OK", 120),
    ]

    # Refresh 30 s before the 120 s expiry: at t = 90, not earlier.
    peer.run_until(89.99)
    peer.expect_nothing()
    peer.run_until(90.0)
    sent = peer.next_sent()
    assert sent.at == pytest.approx(90.0)
    refresh = sent.message
    assert isinstance(refresh, SipRequest) and refresh.method == "REGISTER"
    assert refresh.cseq == (3, "REGISTER")
    assert refresh.call_id == first.call_id
    assert refresh.from_.tag == first.from_.tag
    # The cached credentials go along, with the nonce count moved on.
    params = check_digest(
        refresh, "Authorization", username="alice", password="secret", realm=REALM, nonce="n1"
    )
    assert params["nc"] == "00000002"
    peer.reply(refresh, 200, to_tag="reg", headers=[granted(120)])
    assert registration.state is RegistrationState.REGISTERED
    peer.run_until(179.9)
    peer.expect_nothing()
    peer.run_until(180.0)
    assert peer.expect_request("REGISTER").cseq == (4, "REGISTER")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Contact", f"{CONTACT};expires=120")], 120),
        # Another binding of the same AOR is not ours; ours carries the grant.
        (
            [
                ("Contact", "<sip:alice@198.51.100.7>;expires=30"),
                ("Contact", f"{CONTACT};expires=60"),
            ],
            60,
        ),
        ([("Expires", "300")], 300),  # no Contact: the Expires header
        ([], 3600),  # neither: what we asked for
        # A registrar may write our contact with other URI parameters or case.
        ([("Contact", "<sip:alice@192.0.2.1:5070;transport=udp>;expires=45")], 45),
    ],
)
def test_granted_expiry(headers: list[tuple[str, str]], expected: int) -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    peer.reply(peer.expect_request("REGISTER"), 200, to_tag="reg", headers=headers)
    assert registration.state is RegistrationState.REGISTERED
    assert registration.granted == expected


def test_interval_too_brief_is_retried_with_min_expires_and_kept() -> None:
    _, peer, registration = setup(expires=60)
    peer.act(registration.start)
    first = peer.expect_request("REGISTER")
    peer.reply(first, 423, to_tag="reg", headers=[("Min-Expires", "600")])
    retry = peer.expect_request("REGISTER")
    assert retry.headers.get("Expires") == "600"
    assert retry.headers.get("Contact") == f"{CONTACT};expires=600"
    assert retry.cseq == (2, "REGISTER")
    peer.reply(retry, 200, to_tag="reg", headers=[granted(600)])
    assert registration.state is RegistrationState.REGISTERED
    # The refresh asks for the registrar's minimum again rather than earning another 423.
    peer.run_until(570.0)
    refresh = peer.expect_request("REGISTER")
    assert refresh.headers.get("Expires") == "600"


def test_interval_too_brief_without_a_larger_minimum_fails() -> None:
    _, peer, registration = setup(expires=600)
    peer.act(registration.start)
    peer.reply(peer.expect_request("REGISTER"), 423, to_tag="reg", headers=[("Min-Expires", "60")])
    assert registration.state is RegistrationState.FAILED
    peer.expect_nothing()


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "Forbidden"), (404, "Not Found"), (500, "Server Internal Error"), (603, "Decline")],
)
def test_final_error_fails(status: int, reason: str) -> None:
    ua, peer, registration = setup()
    peer.act(registration.start)
    peer.reply(peer.expect_request("REGISTER"), status, to_tag="reg")
    assert registration.state is RegistrationState.FAILED
    assert events(registration)[-1] == RegistrationEvent(RegistrationState.FAILED, status, reason)
    assert registration.failure_reason == f"{status} {reason}"
    assert registration.failure_status == status
    assert ua.session_count == 0
    peer.run_until(100.0)
    peer.expect_nothing()


def test_wrong_password_fails_on_second_challenge() -> None:
    ua, peer, registration = setup(password="wrong")
    peer.act(registration.start)
    first = peer.expect_request("REGISTER")
    peer.reply(first, 401, to_tag="reg", headers=[challenge("n1")])
    retry = peer.expect_request("REGISTER")
    assert "Authorization" in retry.headers
    peer.reply(retry, 401, to_tag="reg", headers=[challenge("n2")])  # new nonce, not stale
    peer.expect_nothing()
    assert registration.state is RegistrationState.FAILED
    assert events(registration)[-1].status == 401
    assert ua.session_count == 0


def test_stale_nonce_is_answered_again() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    retry = authorize(peer, peer.expect_request("REGISTER"), "n1")
    peer.reply(retry, 401, to_tag="reg", headers=[challenge("n2", stale=True)])
    again = peer.expect_request("REGISTER")
    check_digest(
        again, "Authorization", username="alice", password="secret", realm=REALM, nonce="n2"
    )
    peer.reply(again, 200, to_tag="reg", headers=[granted(120)])
    assert registration.state is RegistrationState.REGISTERED


def test_no_answer_times_out_at_timer_f_with_retransmissions() -> None:
    ua, peer, registration = setup()
    peer.act(registration.start)
    peer.expect_request("REGISTER")
    peer.run_until(31.99)
    copies = peer.drain()
    # Timer E: T1, doubling up to T2 = 4 s (RFC 3261 §17.1.2.2).
    assert [s.at for s in copies] == pytest.approx(
        [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    )
    assert all(isinstance(s.message, SipRequest) and s.message.cseq.seq == 1 for s in copies)
    assert registration.state is RegistrationState.REGISTERING
    peer.run_until(32.0)
    assert registration.state is RegistrationState.FAILED
    assert events(registration)[-1] == RegistrationEvent(
        RegistrationState.FAILED, 408, "Request Timeout"
    )
    assert (registration.failure_reason, registration.failure_status) == ("timeout", None)
    assert ua.session_count == 0
    assert ua.get_timer() is None


def test_over_tcp_nothing_is_retransmitted() -> None:
    _, peer, registration = setup(proxy=PEER_TCP)
    peer.act(registration.start)
    request = peer.expect_request("REGISTER")
    assert request.top_via.transport == "TCP"
    assert request.headers.get("Contact") == "<sip:alice@192.0.2.1:5070;transport=tcp>;expires=3600"
    peer.run_until(31.99)
    peer.expect_nothing()
    peer.run_until(32.0)
    assert registration.state is RegistrationState.FAILED


def test_transport_error_fails() -> None:
    ua, peer, registration = setup()
    peer.act(registration.start)
    peer.expect_request("REGISTER")
    ua.transport_error(PEER, "connection refused", peer.now)
    assert registration.state is RegistrationState.FAILED
    assert events(registration)[-1].status == 503
    # The transport's own words, without our synthetic 503 (nobody answered).
    assert (registration.failure_reason, registration.failure_status) == (
        "connection refused",
        None,
    )


def test_tls_verification_failure_is_the_reason() -> None:
    ua, peer, registration = setup(proxy=Target("tls", PEER.host, 5061))
    peer.act(registration.start)
    ua.transport_error(
        Target("tls", PEER.host, 5061),
        "TLS certificate verify failed: self-signed certificate",
        peer.now,
    )
    assert registration.state is RegistrationState.FAILED
    assert registration.failure_reason == "TLS certificate verify failed: self-signed certificate"
    assert registration.failure_status is None


def test_wrong_password_reason_never_holds_the_password() -> None:
    _, peer, registration = setup(password="hunter2-secret")
    peer.act(registration.start)
    first = peer.expect_request("REGISTER")
    peer.reply(first, 401, to_tag="reg", headers=[challenge("n1")])
    peer.reply(peer.expect_request("REGISTER"), 401, to_tag="reg", headers=[challenge("n2")])
    assert registration.failure_reason == "401 Unauthorized"
    assert registration.failure_status == 401


def test_failed_refresh_is_retried_and_keeps_registered() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    peer.reply(peer.expect_request("REGISTER"), 200, to_tag="reg", headers=[granted(120)])
    peer.run_until(90.0)
    refresh = peer.expect_request("REGISTER")
    peer.reply(refresh, 503, to_tag="reg")
    assert registration.state is RegistrationState.REGISTERED
    assert events(registration)[-1] == RegistrationEvent(
        RegistrationState.REGISTERED, 503, "Service Unavailable"
    )
    peer.run_until(119.99)
    peer.expect_nothing()
    assert (registration.failure_reason, registration.failure_status) == (
        "503 Service Unavailable",
        503,
    )
    peer.run_until(120.0)
    retry = peer.expect_request("REGISTER")
    assert retry.cseq.seq == refresh.cseq.seq + 1
    peer.reply(retry, 200, to_tag="reg", headers=[granted(120)])
    assert (registration.failure_reason, registration.failure_status) == (None, None)


# --------------------------------------------------------------------------- removal


def test_unregister_sends_expires_zero() -> None:
    ua, peer, registration = setup()
    peer.act(registration.start)
    first = peer.expect_request("REGISTER")
    ok = authorize(peer, first)
    peer.reply(ok, 200, to_tag="reg", headers=[granted(120)])
    events(registration)
    peer.act(registration.unregister)
    removal = peer.expect_request("REGISTER")
    assert removal.headers.get("Expires") == "0"
    assert removal.headers.get("Contact") == f"{CONTACT};expires=0"
    assert removal.cseq == (3, "REGISTER")
    assert removal.call_id == first.call_id
    check_digest(
        removal, "Authorization", username="alice", password="secret", realm=REALM, nonce="n1"
    )
    assert registration.state is RegistrationState.UNREGISTERING
    peer.reply(removal, 200, to_tag="reg")
    assert registration.state is RegistrationState.UNREGISTERED
    assert events(registration) == [
        RegistrationEvent(RegistrationState.UNREGISTERING),
        RegistrationEvent(RegistrationState.UNREGISTERED, 200, "OK"),
    ]
    assert ua.session_count == 0
    peer.run_until(1000.0)
    peer.expect_nothing()  # no refresh after removal


def test_unregister_never_registered_is_a_no_op() -> None:
    ua, peer, registration = setup()
    peer.act(registration.unregister)
    peer.expect_nothing()
    assert registration.state is RegistrationState.UNREGISTERED
    assert ua.session_count == 0


def test_unregister_while_registering_ignores_the_late_answer_to_the_first() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    first = peer.expect_request("REGISTER")
    peer.act(registration.unregister)
    removal = peer.expect_request("REGISTER")
    assert removal.headers.get("Expires") == "0"
    # The registrar answers the first REGISTER late: that is not the removal's answer.
    peer.reply(first, 200, to_tag="reg", headers=[granted(3600)])
    assert registration.state is RegistrationState.UNREGISTERING
    peer.reply(removal, 200, to_tag="reg")
    assert registration.state is RegistrationState.UNREGISTERED


def test_unregister_with_no_answer_ends_unregistered() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    peer.reply(peer.expect_request("REGISTER"), 200, to_tag="reg", headers=[granted(120)])
    peer.act(registration.unregister)
    peer.expect_request("REGISTER")
    peer.run_until(peer.now + 32.0)
    assert registration.state is RegistrationState.UNREGISTERED
    assert events(registration)[-1].status == 408


def test_request_on_the_registration_call_id_gets_481() -> None:
    _, peer, registration = setup()
    peer.act(registration.start)
    peer.expect_request("REGISTER")
    stray = out_of_dialog_request("NOTIFY", call_id=registration.call_id, to_tag="x")
    peer.deliver(stray)
    response = peer.expect_response(481)
    assert response.cseq == stray.cseq
