"""Dialog state of the UAC (RFC 3261 §12): creation, routing, CSeq and target rules."""

from __future__ import annotations

import pytest

from sipbridge.sip.dialog import Dialog, DialogError
from sipbridge.sip.message import SipRequest, SipResponse, make_response, parse_message

_INVITE = parse_message(
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKinv1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice A." <sip:alice@atlanta.example.com>;tag=a1\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: call-1@192.0.2.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5070>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
assert isinstance(_INVITE, SipRequest)
INVITE: SipRequest = _INVITE


def response(
    status: int = 200,
    *,
    contact: str | None = "<sip:bob@192.0.2.10:5060>",
    record_route: tuple[str, ...] = (),
    to_tag: str | None = "b1",
) -> SipResponse:
    headers = [("Record-Route", r) for r in record_route]
    if contact is not None:
        headers.append(("Contact", contact))
    built = make_response(INVITE, status, to_tag=to_tag, headers=headers)
    if to_tag is None:  # make_response always tags a non-100 answer; a broken peer may not
        built.headers.set("To", "Bob <sip:bob@biloxi.example.com>")
    parsed = parse_message(built.to_bytes())
    assert isinstance(parsed, SipResponse)
    return parsed


def dialog(**kwargs: object) -> Dialog:
    return Dialog.from_response(INVITE, response(**kwargs))  # type: ignore[arg-type]


def peer_request(method: str, seq: int, *, contact: str | None = None) -> SipRequest:
    lines = [
        f"{method} sip:alice@192.0.2.1:5070 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKpeer",
        "From: Bob <sip:bob@biloxi.example.com>;tag=b1",
        'To: "Alice A." <sip:alice@atlanta.example.com>;tag=a1',
        "Call-ID: call-1@192.0.2.1",
        f"CSeq: {seq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    parsed = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(parsed, SipRequest)
    return parsed


# --------------------------------------------------------------------------- creation


def test_from_2xx() -> None:
    d = dialog(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    assert (d.call_id, d.local_tag, d.remote_tag) == ("call-1@192.0.2.1", "a1", "b1")
    assert d.local_uri == '"Alice A." <sip:alice@atlanta.example.com>'
    assert d.remote_uri == '"Bob" <sip:bob@biloxi.example.com>'
    assert d.remote_target == "sip:bob@192.0.2.10:5060"
    # §12.1.2: the route set is the Record-Route in reverse order.
    assert d.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert d.local_seq == 7
    assert d.remote_seq is None
    assert not d.early


def test_record_route_in_one_header_line_is_split_and_reversed() -> None:
    d = dialog(record_route=("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",))
    assert d.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]


def test_early_dialog_from_1xx_without_contact_targets_the_request_uri() -> None:
    d = dialog(status=180, contact=None)
    assert d.early
    assert d.remote_target == "sip:bob@biloxi.example.com"
    d.confirm(response(record_route=("<sip:p9.example.com;lr>",)))
    assert not d.early
    assert d.remote_target == "sip:bob@192.0.2.10:5060"
    assert d.route_set == ["<sip:p9.example.com;lr>"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to_tag": None}, "response without a To tag creates no dialog"),
        ({"contact": None}, "2xx to INVITE without a Contact"),
    ],
)
def test_unusable_responses(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DialogError, match=message) as info:
        dialog(**kwargs)
    assert info.value.status == 400


# --------------------------------------------------------------------------- requests


def test_loose_routing_request() -> None:
    d = dialog(record_route=("<sip:192.0.2.22;lr>", "<sip:192.0.2.21;lr>"))
    bye = d.create_request("BYE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKbye")
    assert bye.uri == "sip:bob@192.0.2.10:5060"
    assert bye.headers.get_all("Route") == ["<sip:192.0.2.21;lr>", "<sip:192.0.2.22;lr>"]
    assert bye.cseq == (8, "BYE")
    assert bye.from_.tag == "a1" and bye.to.tag == "b1"
    assert bye.call_id == "call-1@192.0.2.1"
    assert str(d.next_hop_uri()) == "sip:192.0.2.21;lr"


def test_strict_routing_request() -> None:
    # The first route has no ``lr``: it is a strict router (§12.2.1.1).
    d = dialog(record_route=("<sip:p2.example.com;lr>", "<sip:p1.example.com>"))
    info = d.create_request("INFO", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKi")
    assert info.uri == "sip:p1.example.com"
    assert info.headers.get_all("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:bob@192.0.2.10:5060>",
    ]


def test_no_route_set_goes_to_the_remote_target() -> None:
    d = dialog()
    request = d.create_request("OPTIONS", via="SIP/2.0/UDP h;branch=z9hG4bKo")
    assert "Route" not in request.headers
    assert str(d.next_hop_uri()) == "sip:bob@192.0.2.10:5060"


@pytest.mark.parametrize(
    ("method", "cseq", "expected_seq", "local_seq_after"),
    [
        ("BYE", None, 8, 8),  # a new request: CSeq + 1
        ("ACK", 7, 7, 7),  # ACK of the INVITE's 2xx: the INVITE's number, no increment
        ("CANCEL", 7, 7, 7),
    ],
)
def test_cseq_of_our_requests(
    method: str, cseq: int | None, expected_seq: int, local_seq_after: int
) -> None:
    d = dialog()
    request = d.create_request(method, via="SIP/2.0/UDP h;branch=z9hG4bKx", cseq=cseq)
    assert request.cseq == (expected_seq, method)
    assert d.local_seq == local_seq_after


def test_request_with_body_and_contact() -> None:
    d = dialog()
    request = d.create_request(
        "INVITE",
        via="SIP/2.0/UDP h;branch=z9hG4bKr",
        contact="<sip:alice@192.0.2.1:5070>",
        body=b"v=0\r\n",
        content_type="application/sdp",
        extra=[("Session-Expires", "90;refresher=uac")],
    )
    assert request.headers.get("Contact") == "<sip:alice@192.0.2.1:5070>"
    assert request.headers.get("Content-Type") == "application/sdp"
    assert request.headers.get("Session-Expires") == "90;refresher=uac"
    assert request.body == b"v=0\r\n"


# --------------------------------------------------------------------------- the peer's requests


@pytest.mark.parametrize(
    ("sequence", "rejected_at"),
    [
        ([("INFO", 5), ("INFO", 6), ("BYE", 9)], None),
        ([("INFO", 5), ("INFO", 4)], 1),  # lower: out of order (§12.2.2)
        ([("INFO", 5), ("OPTIONS", 5)], 1),  # equal CSeq on a new request
        ([("INFO", 5), ("ACK", 3), ("CANCEL", 2), ("INFO", 6)], None),  # not counted
    ],
)
def test_remote_cseq_rules(sequence: list[tuple[str, int]], rejected_at: int | None) -> None:
    d = dialog()
    for index, (method, seq) in enumerate(sequence):
        request = peer_request(method, seq)
        if index == rejected_at:
            with pytest.raises(DialogError, match=r"CSeq \d+ not above 5") as info:
                d.check_request(request)
            assert info.value.status == 500
            return
        d.check_request(request)
    assert rejected_at is None
    assert d.remote_seq == max(seq for m, seq in sequence if m not in ("ACK", "CANCEL"))


@pytest.mark.parametrize(
    ("method", "refreshes"),
    [("INVITE", True), ("UPDATE", True), ("BYE", False), ("INFO", False), ("OPTIONS", False)],
)
def test_target_refresh(method: str, refreshes: bool) -> None:
    d = dialog()
    d.check_request(peer_request(method, 20, contact="<sip:bob@198.51.100.4:5062>"))
    expected = "sip:bob@198.51.100.4:5062" if refreshes else "sip:bob@192.0.2.10:5060"
    assert d.remote_target == expected


def test_target_refresh_then_requests_go_to_the_new_target() -> None:
    d = dialog()
    d.check_request(peer_request("INVITE", 20, contact="<sip:bob@198.51.100.4:5062>"))
    bye = d.create_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKb")
    assert bye.uri == "sip:bob@198.51.100.4:5062"


def test_matches() -> None:
    d = dialog()
    assert d.matches(peer_request("BYE", 1))
    assert d.matches(response())
    assert not d.matches(response(to_tag="other"))
    stranger = peer_request("BYE", 1)
    stranger.headers.set("Call-ID", "other@host")
    assert not d.matches(stranger)
    broken = peer_request("BYE", 1)
    broken.headers.set("From", "<<garbage")
    assert not d.matches(broken)
