"""SIP message parsing and serialization against RFC 4475 and property tests.

Who handles each RFC 4475 message (parser = ``parse_message`` raises
``SipParseError``; its ``status`` is what a UAS answers a request with):

| message    | RFC 4475 says                        | here                                       |
|------------|--------------------------------------|--------------------------------------------|
| wsinv ...  | 3.1.1: valid, must be accepted       | parser accepts (13 messages)               |
| badinv01   | 3.1.2.1: 400                         | parser: "empty parameter in Via"           |
| clerr      | 3.1.2.2: 400 (UDP)                   | parser: body shorter than Content-Length   |
| ncl        | 3.1.2.3: error                       | parser: "bad Content-Length"               |
| scalar02   | 3.1.2.4: 400 for CSeq                | parser: "bad CSeq number" (Max-Forwards    |
|            |                                      | and Expires are not the parser's business) |
| scalarlg   | 3.1.2.5: drop                        | parser: "bad CSeq number"                  |
| quotbal    | 3.1.2.6: 400                         | parser: unterminated quoted display name   |
| ltgtruri   | 3.1.2.7: 400                         | parser: Request-URI enclosed in <>         |
| lwsruri    | 3.1.2.8: 400                         | parser: whitespace inside the Request-URI  |
| lwsstart   | 3.1.2.9: may reject                  | parser rejects: more than one SP           |
| trws       | 3.1.2.10: may reject                 | parser rejects: trailing whitespace        |
| escruri    | 3.1.2.11: may reject                 | parser rejects: headers in Request-URI     |
| baddate    | 3.1.2.12: only if Date matters       | parser ACCEPTS: nothing here reads Date    |
| regbadct   | 3.1.2.13: 400                        | parser: URI with '?' needs <> (Contact)    |
| badaspec   | 3.1.2.14: 400 reasonable             | parser: whitespace inside <>               |
| baddn      | 3.1.2.15: 400                        | parser: unquoted non-token display name    |
| badvers    | 3.1.2.16: 505                        | parser raises with status=505              |
| mismatch01 | 3.1.2.17: 400                        | parser: CSeq method mismatch               |
| mismatch02 | 3.1.2.18: 501 (400 acceptable)       | parser: CSeq method mismatch, 400          |
| bigcode    | 3.1.2.19: drop the response          | parser: status code out of range           |
| badbranch  | 3.2.1: tx layer may reject/fall back | parser accepts; branch == "z9hG4bK"        |
| insuf      | 3.3.1: 400                           | parser: missing To, From, Call-ID          |
| unkscm     | 3.3.2: 416                           | parser accepts; request.sip_uri -> 416     |
| novelsc    | 3.3.3: 416 (or proxy forwards)       | parser accepts; request.sip_uri -> 416     |
| unksm2     | 3.3.4: accept, 400/404 at app        | parser accepts (any URI scheme in To/From) |
| bext01     | 3.3.5: 420                           | parser accepts; UA checks Require          |
| invut      | 3.3.6: 415                           | parser accepts; UA checks Content-Type     |
| regaut01   | 3.3.7: 401                           | parser accepts; auth layer                 |
| multi01    | 3.3.8: 400                           | parser: multiple To headers                |
| mcl01      | 3.3.9: 400                           | parser: conflicting Content-Length         |
| bcast      | 3.3.10: drop (not our Via)           | parser accepts; transaction layer drops    |
| zeromf     | 3.3.11: UAS answers normally         | parser accepts; max_forwards == 0          |
| cparam01/2 | 3.3.12-13: valid                     | parser accepts; param placement checked    |
| regescrt   | 3.3.14: registrar may reject         | parser accepts; Contact URI has headers    |
| sdp01      | 3.3.15: 406                          | parser accepts; UA checks Accept           |
| inv2543    | 3.4.1: accept (RFC 2543)             | parser accepts over UDP; stream needs CL   |
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipbridge.sip.address import SipParseError
from sipbridge.sip.message import (
    CSeq,
    Headers,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc4475"
SDP_150 = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
    b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
)


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


def request(name: str) -> SipRequest:
    message = parse_message(vector(name))
    assert isinstance(message, SipRequest)
    return message


def response(name: str) -> SipResponse:
    message = parse_message(vector(name))
    assert isinstance(message, SipResponse)
    return message


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rfc4475_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rfc4475_generate", module)
    spec.loader.exec_module(module)
    return module


VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "mpart01", "unreason", "noreason",
]  # fmt: skip
# Syntactically fine; higher layers decide (table above).
ACCEPTED_FOR_HIGHER_LAYERS = [
    "baddate", "badbranch", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01",
    "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
]  # fmt: skip
INVALID: list[tuple[str, str, int]] = [
    ("badinv01", "empty parameter in Via", 400),
    ("clerr", "body is 154 bytes, Content-Length says 9999", 400),
    ("ncl", "bad Content-Length: '-999'", 400),
    ("scalar02", "bad CSeq number: '36893488147419103232'", 400),
    ("scalarlg", "bad CSeq number: '9292394834772304023312'", 400),
    ("quotbal", "unterminated quoted display name", 400),
    ("ltgtruri", "Request-URI enclosed in <>", 400),
    ("lwsruri", "whitespace inside the Request-URI", 400),
    ("lwsstart", "more than one SP between request line elements", 400),
    ("trws", "whitespace at the end of the request line", 400),
    ("escruri", "headers not allowed in a Request-URI", 400),
    ("regbadct", "URI with '?' or ',' must be enclosed in <>", 400),
    ("badaspec", "whitespace inside <> in address", 400),
    ("baddn", "unquoted display name with non-token characters: 'Bell, Alexander'", 400),
    ("badvers", "unsupported SIP version: 'SIP/7.0'", 505),
    ("mismatch01", "CSeq method INVITE does not match request OPTIONS", 400),
    ("mismatch02", "CSeq method INVITE does not match request NEWMETHOD", 400),
    ("bigcode", "status code out of range: 4294967301", 400),
    ("insuf", "missing To, From, Call-ID headers", 400),
    ("multi01", "multiple To headers", 400),
    ("mcl01", "conflicting Content-Length headers: ['13', '5']", 400),
]


# --------------------------------------------------------------- the vectors
def test_every_rfc_message_is_stored_and_matches_the_rfc_text() -> None:
    generator = _load_generator()
    names = {p.stem for p in VECTORS.glob("*.dat")}
    assert names == set(generator.MESSAGES) and len(names) == 49
    assert names == set(VALID) | set(ACCEPTED_FOR_HIGHER_LAYERS) | {n for n, _, _ in INVALID}
    for name, text in generator.MESSAGES.items():
        assert generator.render(text) == vector(name), name


@pytest.mark.parametrize("name", VALID + ACCEPTED_FOR_HIGHER_LAYERS)
def test_valid_messages_parse_with_every_structured_header(name: str) -> None:
    message = parse_message(vector(name))
    assert message.call_id
    assert message.cseq.seq >= 0
    assert message.vias and message.from_.uri and message.to.uri


@pytest.mark.parametrize(("name", "reason", "status"), INVALID)
def test_invalid_messages_raise_a_precise_reason(name: str, reason: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(vector(name))
    assert reason in str(info.value)
    assert info.value.status == status


def test_wsinv_folding_compact_forms_and_lws() -> None:
    msg = request("wsinv")
    assert (msg.method, msg.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.cseq == CSeq(9, "INVITE")
    assert msg.max_forwards == 68
    assert len(msg.body) == 150 and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")
    assert msg.headers.get("Subject") == ""  # "s :" compact and empty
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.headers.get("Route") == (
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    )
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert (msg.to.uri, msg.to.tag) == ("sip:vivekg@chair-dnrc.example.com", "1918181833n")
    assert (msg.from_.display_name, msg.from_.tag) == ('J Rosenberg \\"', "98asjd8")
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert "Via" in msg.headers and "m" in msg.headers  # compact names look up too
    assert {name for name, _ in msg.headers} >= {"To", "From", "Max-Forwards", "CSeq", "Contact"}


def test_intmeth_unusual_characters_and_raw_octets() -> None:
    msg = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method and msg.cseq == CSeq(139122385, method)
    uri = msg.sip_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert (uri.host, uri.headers) == ("example.com", None)
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert msg.body == b""


def test_esc01_escapes_are_preserved_and_decodable() -> None:
    msg = request("esc01")
    assert msg.uri == "sip:sips%3Auser%40example.com@example.net"
    assert msg.sip_uri.user == "sips%3Auser%40example.com"
    assert msg.sip_uri.unescaped_user == "sips:user@example.com"
    assert msg.to.sip_uri.user == "%75se%72" and msg.to.sip_uri.unescaped_user == "user"
    assert msg.from_.sip_uri.unescaped_user == "I have spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # "i:" compact
    assert msg.headers.get("Content-Type") == "application/sdp"  # "C:" compact
    (contact,) = msg.contacts
    assert contact.sip_uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert len(msg.body) == 150


def test_escnull_two_distinct_contacts() -> None:
    msg = request("escnull")
    assert msg.to.sip_uri.user == "null-%00-null"
    assert [c.sip_uri.unescaped_user for c in msg.contacts] == ["\x00", "\x00\x00"]
    assert msg.headers.get("Content-Length") == "0"  # "L:0"


def test_esc02_percent_is_not_an_escape_outside_uris() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R" and msg.cseq.method == "RE%47IST%45R"
    assert msg.to.display_name == "%Z%45"
    assert [c.uri for c in msg.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_and_semiuri_and_transports() -> None:
    assert request("lwsdisp").from_.display_name == "caller"
    semi = request("semiuri")
    assert semi.sip_uri.user == "user;par=u%40example.net"
    assert semi.sip_uri.unescaped_user == "user;par=u@example.net"
    assert semi.sip_uri.host == "example.com"
    assert len(semi.headers.get_all("Accept")) == 6
    transports = request("transports")
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert transports.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_longreq_long_values_and_34_vias() -> None:
    msg = request("longreq")
    vias = msg.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[33].branch == "very" + "long" * 50 + "branchvalue"
    assert vias[33].received == "192.0.2.5"
    assert msg.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert msg.to.sip_uri.port == 6000
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert msg.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert len(msg.body) == 150


def test_dblreq_ignores_octets_after_content_length() -> None:
    data = vector("dblreq")
    msg = request("dblreq")
    assert msg.method == "REGISTER" and msg.body == b""
    assert b"INVITE sip:joe@example.com" in data
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def test_mpart01_binary_multipart_body_intact() -> None:
    msg = request("mpart01")
    body = msg.body
    assert len(body) == 553 and b"\x00" in body
    assert body.startswith(b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n")
    assert body.endswith(b"\r\n--7a9cbec02ceef655--\r\n")
    assert body.count(b"--7a9cbec02ceef655") == 3
    assert msg.top_via.has_rport and msg.top_via.rport is None
    assert msg.headers.get("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"


def test_unreason_and_noreason_status_lines() -> None:
    unreason = response("unreason")
    assert unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(unreason.body) == 154
    noreason = response("noreason")
    assert (noreason.status, noreason.reason) == (100, "")
    assert noreason.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def test_application_layer_messages_expose_what_the_ua_needs() -> None:
    with pytest.raises(SipParseError, match="unsupported URI scheme") as info:
        request("unkscm").sip_uri  # noqa: B018
    assert info.value.status == 416
    with pytest.raises(SipParseError) as info:
        request("novelsc").sip_uri  # noqa: B018
    assert info.value.status == 416
    unksm2 = request("unksm2")
    assert (unksm2.to.uri, unksm2.from_.uri) == ("isbn:2983792873", "http://www.example.com")
    assert unksm2.contacts[0].uri == "name:John_Smith"
    assert request("baddate").headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert request("badbranch").top_via.branch == "z9hG4bK"
    assert request("bext01").headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]
    assert request("zeromf").max_forwards == 0
    assert [v.host for v in response("bcast").vias] == ["192.0.2.198", "255.255.255.255"]
    cparam01 = request("cparam01").contacts[0]
    assert cparam01.params == {"unknownparam": None} and cparam01.sip_uri.params == {}
    cparam02 = request("cparam02").contacts[0]
    assert cparam02.params == {} and cparam02.sip_uri.params == {"unknownparam": None}
    regescrt = request("regescrt").contacts[0].sip_uri
    assert regescrt.headers == "Route=%3Csip:sip.example.com%3E"
    assert request("regaut01").headers.get("Authorization") == (
        "NoOneKnowsThisScheme opaque-data=here"
    )


def test_inv2543_needs_content_length_only_on_streams() -> None:
    msg = request("inv2543")
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert msg.to.params == {"user": "phone"}  # addr-spec: the parameter is the header's
    assert msg.top_via.branch is None
    with pytest.raises(SipParseError, match="missing Content-Length on a stream transport"):
        parse_message(vector("inv2543"), stream=True)


def test_scalar02_max_forwards_check_is_on_demand() -> None:
    text = vector("scalar02").replace(b"36893488147419103232", b"36")
    msg = parse_message(text)
    with pytest.raises(SipParseError, match="bad Max-Forwards: '300'"):
        msg.max_forwards  # noqa: B018
    assert msg.headers.get("Expires") == "1" + "0" * 100


# ------------------------------------------------------------- serialization
PARSEABLE = VALID + ACCEPTED_FOR_HIGHER_LAYERS


@pytest.mark.parametrize("name", PARSEABLE)
def test_round_trip_keeps_headers_and_body(name: str) -> None:
    original = parse_message(vector(name))
    data = original.to_bytes()
    again = parse_message(data)
    expected = original.headers.copy()
    expected.set("Content-Length", str(len(original.body)))
    assert again.headers == expected
    assert again.body == original.body
    assert repr(again) == repr(original)
    assert again.to_bytes() == data  # serialization is a fixed point
    assert parse_message(data, stream=True).body == original.body


def test_content_length_is_always_rewritten_in_place() -> None:
    msg = SipRequest(method="MESSAGE", uri="sip:a@example.com", body=b"hello")
    msg.headers.add("Via", "SIP/2.0/UDP h.example.com;branch=z9hG4bKx")
    msg.headers.add("Content-Length", "999")
    msg.headers.add("Content-Length", "3")
    msg.headers.add("Max-Forwards", "70")
    data = msg.to_bytes()
    assert data == (
        b"MESSAGE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bKx\r\n"
        b"Content-Length: 5\r\nMax-Forwards: 70\r\n\r\nhello"
    )
    assert SipResponse(status=486, reason="Busy Here").to_bytes() == (
        b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n"
    )


def test_headers_refuse_values_that_would_inject_lines() -> None:
    headers = Headers()
    with pytest.raises(ValueError, match="CR or LF"):
        headers.add("Subject", "hi\r\nVia: evil")
    with pytest.raises(ValueError, match="bad header name"):
        headers.set("Bad Name", "x")
    with pytest.raises(ValueError, match="CR or LF"):
        Headers([("Subject", "a\nb")])
    headers.add("v", "SIP/2.0/UDP a")
    headers.prepend("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c")
    assert headers.get_all("VIA") == ["SIP/2.0/UDP b", "SIP/2.0/UDP c", "SIP/2.0/UDP a"]
    assert headers.count("Via") == 2 and len(headers) == 2


def _invite(to: str = "<sip:bob@example.com>") -> SipRequest:
    data = (
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1, SIP/2.0/UDP a.example.com"
        ";branch=z9hG4bKa;rport\r\n"
        "Record-Route: <sip:p1.example.com;lr>\r\n"
        "Max-Forwards: 69\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@example.com>;tag=fa\r\n"
        "Call-ID: c1@a.example.com\r\n"
        "CSeq: 7 INVITE\r\n"
        "Timestamp: 54.3\r\n"
        "Contact: <sip:alice@a.example.com>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return request_from(data.encode())


def request_from(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def test_make_response_copies_what_rfc3261_8_2_6_2_says() -> None:
    invite = _invite()
    ringing = make_response(invite, 180, to_tag="t1", headers=[("Contact", "<sip:bob@b>")])
    assert (ringing.status, ringing.reason) == (180, "Ringing")
    assert ringing.headers.get_all("Via") == invite.headers.get_all("Via")
    assert ringing.headers.get("From") == invite.headers.get("From")
    assert ringing.call_id == invite.call_id and ringing.cseq == invite.cseq
    assert ringing.to.uri == "sip:bob@example.com" and ringing.to.tag == "t1"
    assert ringing.headers.get("Record-Route") == "<sip:p1.example.com;lr>"
    assert "Max-Forwards" not in ringing.headers and "Timestamp" not in ringing.headers
    assert ringing.headers.get("Contact") == "<sip:bob@b>"
    again = parse_message(ringing.to_bytes())
    assert isinstance(again, SipResponse) and again.to.tag == "t1"
    trying = make_response(invite, 100, to_tag="ignored")
    assert trying.to.tag is None and trying.headers.get("Timestamp") == "54.3"
    assert "Record-Route" not in trying.headers
    busy = make_response(invite, 486)
    assert busy.to.tag is not None and len(busy.to.tag) >= 8  # §8.2.6.2: the UAS MUST add one
    assert "Record-Route" not in busy.headers
    in_dialog = make_response(_invite("<sip:bob@example.com>;tag=old"), 200, to_tag="new")
    assert in_dialog.headers.get("To") == "<sip:bob@example.com>;tag=old"
    custom = make_response(invite, 499, "Odd", body=b"x")
    assert (custom.reason, custom.body) == ("Odd", b"x")
    assert make_response(invite, 416).reason == "Unsupported URI Scheme"


# -------------------------------------------------------------- more parsing
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n", "no empty line after the headers"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nVia\xff: x\r\n\r\n", "headers are not UTF-8 at byte 28"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nTo: a\rb\r\n\r\n", "bare CR in the header section"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n x\r\n\r\n", "continuation line before the first header"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nSubject hi\r\n\r\n", "header line without a colon"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nT o: a\r\n\r\n", "bad header name: 'T o'"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", "missing To, From, CSeq, Call-ID, Via headers"),
        (b"OPT<IONS sip:a@b SIP/2.0\r\n\r\n", "bad method"),
        (b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n", "bad SIP version: 'HTTP/1.1'"),
        (b"OPTIONS a@b SIP/2.0\r\n\r\n", "bad Request-URI: 'a@b'"),
        (b"OPTIONS sip:a@b:99999 SIP/2.0\r\n\r\n", "bad port in URI: '99999'"),
        (b"SIP/2.0 20 OK\r\n\r\n", "status code out of range: 20"),
        (b"SIP/2.0 OK\r\n\r\n", "bad status line"),
        (b"SIP/3.0 200 OK\r\n\r\n", "unsupported SIP version in status line"),
    ],
)
def test_malformed_basics(data: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert reason in str(info.value)


def _options(*lines: str, body: bytes = b"") -> bytes:
    base = [
        "OPTIONS sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKa",
        "To: <sip:bob@example.com>",
        "From: <sip:alice@example.com>;tag=1",
        "Call-ID: x@y",
        "CSeq: 1 OPTIONS",
    ]
    return ("\r\n".join([*base, *lines]) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("CSeq: 1 OPTIONS extra", "multiple CSeq headers"),
        ("Contact: *, <sip:a@b>", "Contact is the wildcard '*', not an address"),
        ("Contact: <sip:a@b>;", "empty parameter in address"),
        ("Contact: <sip:a@b> junk", "junk after '>' in address"),
        ("Contact: <sip:a@b", "unterminated '<' in address"),
        ('Contact: "x" sip:a@b', "quoted display name without <URI>"),
        ("Contact: <a@b>", "address without a URI scheme"),
        ("Contact: sip:a@b c", "address with spaces needs <>"),
        ("Via: SIP/2.0/UDP [::1", "unterminated IPv6 reference in Via"),
        ("Via: SIP/3.0/UDP a", "bad Via protocol: SIP/3.0"),
        ("Via: SIP/2.0 a", "bad Via"),
        ("Content-Length: 1, 1", "bad Content-Length"),
        ("Content-Length: 0000000001000000000", "bad Content-Length"),
    ],
)
def test_malformed_headers_the_stack_relies_on(line: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_options(line))
    assert reason in str(info.value)


def test_liberal_where_the_meaning_is_clear() -> None:
    assert parse_message(_options("Contact: *")).headers.get("Contact") == "*"
    bare_lf = _options("Max-Forwards: 70", body=b"").replace(b"\r\n", b"\n")
    assert parse_message(bare_lf).max_forwards == 70
    assert parse_message(b"\r\n\r\n" + _options()).call_id == "x@y"  # §7.5 leading CRLFs
    msg = parse_message(_options("Content-Length: 00004", body=b"abcdefgh"))
    assert msg.body == b"abcd"  # datagram: octets after Content-Length are dropped
    no_length = parse_message(_options(body=b"rest of datagram"))
    assert no_length.body == b"rest of datagram"
    lower = parse_message(_options().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1))
    assert isinstance(lower, SipRequest) and lower.version == "SIP/2.0"
    with pytest.raises(SipParseError, match="Contact is the wildcard"):
        parse_message(_options("Contact: *")).contacts  # noqa: B018


# ------------------------------------------------------------- StreamFramer
STREAM = [vector("esc01"), vector("mpart01"), vector("noreason"), vector("longreq")]


def _stream_bytes() -> bytes:
    return b"\r\n\r\n".join(STREAM) + b"\r\n"  # keep-alive CRLFs between messages


def _calls(messages: list[SipRequest | SipResponse]) -> list[str]:
    return [m.call_id for m in messages]


EXPECTED_CALLS = [parse_message(m).call_id for m in STREAM]


def test_framer_back_to_back_messages_and_keepalives() -> None:
    framer = StreamFramer()
    assert _calls(framer.feed(_stream_bytes())) == EXPECTED_CALLS
    assert framer.feed(b"\r\n\r\n") == [] and framer.feed(b"\r\n") == []
    assert _calls(framer.feed(STREAM[0])) == EXPECTED_CALLS[:1]
    assert not framer.broken


def test_framer_split_at_every_byte_position() -> None:
    data = b"\r\n".join(STREAM[:3])  # longreq left out: the rest keeps the test quick
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        got = framer.feed(data[:cut]) + framer.feed(data[cut:])
        assert _calls(got) == EXPECTED_CALLS[:3], cut
        assert got[1].body == parse_message(STREAM[1]).body


def test_framer_byte_at_a_time() -> None:
    framer = StreamFramer()
    got: list[SipRequest | SipResponse] = []
    for byte in _stream_bytes():
        got += framer.feed(bytes([byte]))
    assert _calls(got) == EXPECTED_CALLS


def test_framer_missing_content_length_breaks_the_stream() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="missing Content-Length on a stream transport"):
        framer.feed(vector("inv2543"))
    assert framer.broken
    with pytest.raises(SipParseError, match="stream framing was lost: missing Content-Length"):
        framer.feed(STREAM[0])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nSubject: " + b"x" * 300, "header block longer than 256"),
        (b"INVITE sip:a@b SIP/2.0\r\nl: 1000\r\n\r\n", "message of 1035 bytes exceeds 256"),
        (b"INVITE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n", "bad Content-Length: '-1'"),
        (b"INVITE sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\n", "conflicting Content-Length"),
    ],
)
def test_framer_framing_errors(data: bytes, reason: str) -> None:
    framer = StreamFramer(max_size=256)
    with pytest.raises(SipParseError, match=reason):
        framer.feed(data)
    assert framer.broken


def test_framer_malformed_message_keeps_framing_and_defers_its_error() -> None:
    bad = vector("mismatch01")  # framed fine (l: 0), semantically broken
    framer = StreamFramer()
    got = framer.feed(STREAM[0] + bad + STREAM[2])
    assert _calls(got) == EXPECTED_CALLS[:1]
    with pytest.raises(SipParseError, match="CSeq method INVITE does not match"):
        framer.feed(b"")
    assert not framer.broken
    assert _calls(framer.feed(b"")) == EXPECTED_CALLS[2:3]
    with pytest.raises(SipParseError, match="CSeq method"):
        framer.feed(bad)  # alone: raised at once
    assert _calls(framer.feed(STREAM[0])) == EXPECTED_CALLS[:1]


# ----------------------------------------------------------------- properties
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [vector(name) for name in PARSEABLE] + [vector(name) for name, _, _ in INVALID]


def _parse_everything(data: bytes, *, stream: bool = False) -> None:
    """Parse and touch every structured view: only SipParseError may escape."""
    try:
        message = parse_message(data, stream=stream)
    except SipParseError:
        return
    for view in ("vias", "from_", "to", "cseq", "contacts", "max_forwards", "top_via"):
        with contextlib.suppress(SipParseError):
            getattr(message, view)
    if isinstance(message, SipRequest):
        with contextlib.suppress(SipParseError):
            message.sip_uri  # noqa: B018
    again = parse_message(message.to_bytes())
    assert again.body == message.body


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_sip_parse_errors(data: bytes) -> None:
    _parse_everything(data)
    _parse_everything(b"INVITE sip:a@b SIP/2.0\r\n" + data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "duplicate":
            end = draw(st.integers(pos, min(len(data), pos + 80)))
            data[pos:pos] = data[pos:end]
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b" ", b";", b",", b'"', b"<", b":"]))
        elif data:
            del data[pos : pos + draw(st.integers(1, 20))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_vectors_raise_only_sip_parse_errors(data: bytes) -> None:
    _parse_everything(data)
    _parse_everything(data, stream=True)


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=3), st.integers(1, 200))
def test_mutated_streams_raise_only_sip_parse_errors(chunks: list[bytes], step: int) -> None:
    data = b"".join(chunks)
    framer = StreamFramer(max_size=4096)
    for start in range(0, len(data) + step, step):
        try:
            framer.feed(data[start : start + step])
        except SipParseError:
            if framer.broken:
                return


TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1
)
VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=40,
).map(lambda s: s.strip(" \t"))


@st.composite
def valid_messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    message: SipRequest | SipResponse
    method = draw(TOKEN)
    if draw(st.booleans()):
        user = draw(st.text("abcxyz019-_.!~*'()&=+$,;?/%", min_size=1, max_size=12))
        message = SipRequest(method=method, uri=f"sip:{user}@example.com")
    else:
        reason = draw(VALUE)
        message = SipResponse(status=draw(st.integers(100, 699)), reason=reason)
    message.headers.add("Via", f"SIP/2.0/UDP h.example.com;branch=z9hG4bK{draw(TOKEN)}")
    message.headers.add("To", f"<sip:to@example.com>;tag={draw(TOKEN)}")
    display = draw(VALUE)
    message.headers.add("From", f'"{display.replace(chr(92), "").replace(chr(34), "")}" <sip:f@x>')
    message.headers.add("Call-ID", draw(TOKEN))
    message.headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for _ in range(draw(st.integers(0, 4))):
        message.headers.add("X-" + draw(TOKEN), draw(VALUE))
    message.body = draw(st.binary(max_size=200))
    return message


@settings(max_examples=200, deadline=None)
@given(valid_messages(), st.booleans())
def test_generated_valid_messages_round_trip(
    message: SipRequest | SipResponse, stream: bool
) -> None:
    data = message.to_bytes()
    again = parse_message(data, stream=stream)
    expected = message.headers.copy()
    expected.set("Content-Length", str(len(message.body)))
    assert again.headers == expected
    assert again.body == message.body
    assert type(again) is type(message)
    assert again.to_bytes() == data
    framer = StreamFramer()
    assert framer.feed(data + b"\r\n" + data) == [again, again]
