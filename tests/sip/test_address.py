"""SIP URIs, name-addr and Via values (RFC 3261 §19.1, §20.10, §20.42, §25.1; RFC 3581)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.address import (
    NameAddr,
    SipParseError,
    SipUri,
    Target,
    Via,
    format_host,
    parse_params,
)


# -------------------------------------------------------------------- SipUri
def test_sip_uri_all_components() -> None:
    uri = SipUri.parse(
        "sips:alice:secret@Example.COM:5061;transport=TLS;lr;maddr=10.0.0.1?subject=hi"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("Example.COM", 5061)
    assert uri.params == {"transport": "TLS", "lr": None, "maddr": "10.0.0.1"}
    assert uri.transport == "tls"
    assert uri.headers == "subject=hi"
    assert uri.host_port == "Example.COM:5061"
    assert (
        str(uri) == "sips:alice:secret@Example.COM:5061;transport=TLS;lr;maddr=10.0.0.1?subject=hi"
    )


def test_sip_uri_minimal_and_scheme_case() -> None:
    uri = SipUri.parse("SIP:example.com")
    assert (uri.scheme, uri.user, uri.password, uri.port) == ("sip", None, None, None)
    assert uri.params == {} and uri.headers is None and uri.transport is None
    assert str(uri) == "sip:example.com"


def test_sip_uri_ipv6_references() -> None:
    uri = SipUri.parse("sip:bob@[2001:db8::10]:5070;transport=udp")
    assert (uri.host, uri.port) == ("[2001:db8::10]", 5070)
    assert uri.host_port == "[2001:db8::10]:5070"
    assert str(uri) == "sip:bob@[2001:db8::10]:5070;transport=udp"
    assert SipUri.parse("sip:[::1]").port is None
    assert str(SipUri(host="2001:db8::1", port=5060)) == "sip:[2001:db8::1]:5060"
    with pytest.raises(SipParseError, match="bad port in URI"):
        SipUri.parse("sip:2001:db8::10")  # RFC 5118 §4.2: brackets are mandatory
    with pytest.raises(SipParseError, match="junk after IPv6 reference in URI"):
        SipUri.parse("sip:[2001:db8::10]5070")


def test_sip_uri_escaped_user_and_password_characters() -> None:
    uri = SipUri.parse("sip:%61lice%20smith@example.com")
    assert uri.user == "%61lice%20smith" and uri.unescaped_user == "alice smith"
    semi = SipUri.parse("sip:user;par=u%40example.net@example.com;lr")
    assert semi.user == "user;par=u%40example.net" and semi.params == {"lr": None}
    assert semi.unescaped_user == "user;par=u@example.net"
    odd = SipUri.parse("sip:a?b,c:p&w=1$@example.com?h=v")
    assert (odd.user, odd.password, odd.headers) == ("a?b,c", "p&w=1$", "h=v")
    assert SipUri(host="h").unescaped_user is None


def test_sip_uri_params_compare_names_case_insensitively() -> None:
    uri = SipUri.parse("sip:h;Transport=TCP;LR")
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.with_params(maddr="x", ttl_value="1").params == {
        "transport": "TCP",
        "lr": None,
        "maddr": "x",
        "ttl-value": "1",
    }
    assert uri.without_params("lr").params == {"transport": "TCP"}
    assert uri.params == {"transport": "TCP", "lr": None}  # frozen: unchanged


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("tel:+123", "not a SIP URI"),
        ("example.com", "not a SIP URI"),
        ("sip:@example.com", "empty user part in URI"),
        ("sip:alice@", "bad host in URI: ''"),
        ("sip:alice@exa mple.com", "character ' ' not allowed in SIP URI"),
        ("sip:alice@<example.com>", "character '<' not allowed in SIP URI"),
        ("sip:a@h:0", "bad port in URI: '0'"),
        ("sip:a@h:65536", "bad port in URI: '65536'"),
        ("sip:a@h:\uff15\uff10\uff16\uff10", "bad port in URI"),  # fullwidth digits are not DIGIT
        ("sip:a@h:" + "0" * 5000 + "1", "bad port in URI"),
        ("sip:a@h;", "empty parameter in URI"),
        ("sip:a@h;;lr", "empty parameter in URI"),
        ("sip:a@h;x y=1", "character ' ' not allowed"),
        ("sip:a@[::1", "unterminated IPv6 reference in URI"),
        ("sip:a@h;=1", "bad parameter name in URI: ''"),
    ],
)
def test_sip_uri_errors(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse(text)
    assert reason in str(info.value)
    assert info.value.status == 400


# ------------------------------------------------------------------ NameAddr
def test_name_addr_quoted_display_with_escapes() -> None:
    addr = NameAddr.parse(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8')
    assert addr.display_name == 'J Rosenberg \\"'
    assert addr.uri == "sip:jdrosen@example.com" and addr.tag == "98asjd8"
    assert str(addr) == r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8'
    assert NameAddr.parse(str(addr)) == addr


def test_name_addr_display_forms() -> None:
    assert NameAddr.parse("caller<sip:c@example.com>").display_name == "caller"  # RFC 4475 lwsdisp
    tokens = NameAddr.parse("A. Bell <sip:a@example.com>")
    assert tokens.display_name == "A. Bell"
    assert str(tokens) == '"A. Bell" <sip:a@example.com>'
    assert NameAddr.parse('"" <sip:a@b>').display_name == ""
    assert NameAddr.parse("<sip:a@b>").display_name is None
    assert NameAddr.parse('"a,b;c<d>" <sip:a@b>').display_name == "a,b;c<d>"
    controls = NameAddr(uri="sip:a@b", display_name='x\x00y\x7f"\\\r\nz')
    assert str(controls) == '"x\\\x00y\\\x7f\\"\\\\  z" <sip:a@b>'
    assert NameAddr.parse(str(controls)).display_name == 'x\x00y\x7f"\\  z'


def test_name_addr_addr_spec_params_belong_to_the_header() -> None:
    addr = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=x")
    assert addr.uri == "sip:+19725552222@gw1.example.net"
    assert addr.params == {"unknownparam": None, "tag": "x"}
    assert addr.sip_uri.params == {}
    bracketed = NameAddr.parse("<sip:+19725552222@gw1.example.net;unknownparam>;tag=x")
    assert bracketed.sip_uri.params == {"unknownparam": None}
    assert bracketed.params == {"tag": "x"}
    assert str(addr) == "<sip:+19725552222@gw1.example.net>;unknownparam;tag=x"


def test_name_addr_params_lws_and_quoted_values() -> None:
    addr = NameAddr.parse('<sip:a@b> ; tag = 1 ; q=0.5 ; +sip.instance="<urn:uuid:1;2>"')
    assert addr.params == {"tag": "1", "q": "0.5", "+sip.instance": '"<urn:uuid:1;2>"'}
    assert addr.with_param("expires", "60").params["expires"] == "60"
    assert addr.tag == "1" and NameAddr.parse("<sip:a@b>").tag is None


def test_name_addr_other_schemes() -> None:
    assert NameAddr.parse("<tel:+1-201-555-0123>").uri == "tel:+1-201-555-0123"
    assert NameAddr.parse("isbn:2983792873").uri == "isbn:2983792873"
    with pytest.raises(SipParseError, match="not a SIP URI"):
        NameAddr.parse("<tel:+1>").sip_uri  # noqa: B018


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty address"),
        ('"Mr. J. User <sip:j.user@example.com>', "unterminated quoted display name"),
        ('"abc\\" <sip:a@b>', "unterminated quoted display name"),
        ('"x" y <sip:a@b>', "quoted display name without <URI>"),
        ("Bell, Alexander <sip:a@b>", "unquoted display name with non-token characters"),
        ("< sip:t.watson@example.org >", "whitespace inside <> in address"),
        ("<sip:a@b", "unterminated '<' in address"),
        ("<sip:a@b>x", "junk after '>' in address"),
        ("<sip:a@b>;", "empty parameter in address"),
        ("sip:a@b;", "empty parameter in address"),
        ("sip:user@example.com?Route=%3Csip:x%3E", "URI with '?' or ',' must be enclosed in <>"),
        ("sip:a@b, sip:c@d", "URI with '?' or ',' must be enclosed in <>"),
        ("a@b", "address without a URI scheme"),
        ("<1sip:a@b>", "address without a URI scheme"),
        ('<sip:a@b>;x="unterminated', "unterminated quoted string"),
    ],
)
def test_name_addr_errors(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        NameAddr.parse(text)
    assert reason in str(info.value)


# ----------------------------------------------------------------------- Via
def test_via_basic_and_params() -> None:
    via = Via.parse("SIP/2.0/udp 192.0.2.1:5060;branch=z9hG4bK776;received=10.0.0.1;rport=6000")
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.1", 5060)
    assert via.branch == "z9hG4bK776" and via.received == "10.0.0.1"
    assert via.rport == 6000 and via.has_rport
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;received=10.0.0.1;rport=6000"


def test_via_rport_flag_without_value() -> None:
    via = Via.parse("SIP/2.0/UDP host.example.com;rport;branch=z9hG4bKa")
    assert via.has_rport and via.rport is None and via.params["rport"] is None
    assert str(via) == "SIP/2.0/UDP host.example.com;rport;branch=z9hG4bKa"
    filled = via.with_params(rport="5066", received="198.51.100.7")
    assert filled.rport == 5066 and filled.received == "198.51.100.7"
    assert str(filled).endswith(";rport=5066;branch=z9hG4bKa;received=198.51.100.7")
    plain = Via.parse("SIP/2.0/TCP h")
    assert not plain.has_rport and plain.rport is None and plain.branch is None
    assert Via.parse("SIP/2.0/UDP h;rport=junk").rport is None


def test_via_ipv6_sent_by() -> None:
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255];branch=z9hG4bK1")
    assert (via.host, via.port) == ("[2001:db8::9:1]", 5070)
    assert via.received == "[2001:db8::9:255]"
    assert str(via) == "SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255];branch=z9hG4bK1"
    assert str(Via("TCP", "::1", 5060)) == "SIP/2.0/TCP [::1]:5060"


def test_via_lws_around_slashes_semicolons_and_equals() -> None:
    # RFC 3261 §25.1 (SLASH, SEMI, EQUAL, COLON) and RFC 4475 wsinv, after unfolding.
    via = Via.parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw")
    assert (via.transport, via.host, via.branch) == ("UDP", "192.0.2.2", "390skdjuw")
    spaced = Via.parse("SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8")
    assert (spaced.transport, spaced.host, spaced.branch) == (
        "TCP",
        "spindle.example.com",
        "z9hG4bK9ikj8",
    )
    tabbed = Via.parse("SIP/2.0/UDP\th.example.com : 5062 ;\tbranch=z9hG4bKt")
    assert (tabbed.host, tabbed.port, tabbed.branch) == ("h.example.com", 5062, "z9hG4bKt")
    assert str(spaced) == "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "bad Via"),
        ("SIP/2.0/UDP", "bad Via"),
        ("SIP/2.0 host", "bad Via"),
        ("HTTP/1.1/TCP host", "bad Via protocol: HTTP/1.1"),
        ("SIP/7.0/UDP host", "bad Via protocol: SIP/7.0"),
        ("SIP/2.0/UDP ;branch=x", "bad host in Via: ''"),
        ("SIP/2.0/UDP host:99999", "bad port in Via"),
        ("SIP/2.0/UDP 192.0.2.15;;", "empty parameter in Via"),
        ("SIP/2.0/UDP host;", "empty parameter in Via"),
        ("SIP/2.0/UDP [::1;branch=x", "unterminated IPv6 reference in Via"),
    ],
)
def test_via_errors(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        Via.parse(text)
    assert reason in str(info.value)


# --------------------------------------------------------------------- misc
def test_parse_params_and_helpers() -> None:
    assert parse_params("", "x") == {}
    assert parse_params('A=1; b ;c="x;y"', "x") == {"a": "1", "b": None, "c": '"x;y"'}
    assert format_host("::1") == "[::1]" and format_host("[::1]") == "[::1]"
    assert format_host("example.com") == "example.com"
    assert str(Target("udp", "::1", 5060)) == "udp:[::1]:5060"
    error = SipParseError("nope", status=505)
    assert (str(error), error.status) == ("nope", 505) and isinstance(error, ValueError)
    assert SipParseError("plain").status == 400


# --------------------------------------------------------------- properties
TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1
)
HOST = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9\-]{0,10}(\.[a-z0-9][a-z0-9\-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
PORT = st.none() | st.integers(1, 65535)
LOWER_TOKEN = TOKEN.map(str.lower)
PARAMS = st.dictionaries(LOWER_TOKEN, st.none() | TOKEN, max_size=4)
USER = st.text("abcxyz019-_.!~*'()&=+$,;?/%", min_size=1, max_size=12)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    return SipUri(
        host=draw(HOST),
        user=draw(st.none() | USER),
        password=draw(st.none() | st.text("abc123&=+$,", max_size=6)),
        port=draw(PORT),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        params=draw(PARAMS),
        headers=draw(st.none() | st.text("abc=&%123", max_size=10)),
    )


@settings(max_examples=300, deadline=None)
@given(sip_uris())
def test_sip_uri_round_trip(uri: SipUri) -> None:
    if uri.user is None and uri.password is not None:
        uri = SipUri(host=uri.host, port=uri.port, params=uri.params)
    again = SipUri.parse(str(uri))
    assert again == uri
    assert str(again) == str(uri)


@settings(max_examples=300, deadline=None)
@given(
    sip_uris(),
    st.none() | st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=20),
    PARAMS,
)
def test_name_addr_round_trip(
    uri: SipUri, display: str | None, params: dict[str, str | None]
) -> None:
    addr = NameAddr(uri=str(uri), display_name=display, params=params)
    again = NameAddr.parse(str(addr))
    expected = None if display is None else display.replace("\r", " ").replace("\n", " ")
    assert (again.uri, again.display_name, again.params) == (addr.uri, expected, params)
    assert again.sip_uri == SipUri.parse(addr.uri)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]), HOST, PORT, PARAMS)
def test_via_round_trip(
    transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = Via(transport, host, port, params)
    assert Via.parse(str(via)) == via


ALPHABET = st.characters(codec="utf-8") | st.sampled_from(list(' \t"\\<>;,:?@[]/=%\x00'))


@settings(max_examples=500, deadline=None)
@given(st.text(ALPHABET, max_size=80), st.sampled_from(["sip:", "<sip:", '"', "SIP/2.0/UDP ", ""]))
def test_arbitrary_text_raises_only_sip_parse_error(text: str, prefix: str) -> None:
    for parse in (SipUri.parse, NameAddr.parse, Via.parse):
        try:
            value = parse(prefix + text)
        except SipParseError:
            continue
        reparsed = type(value).parse(str(value))  # whatever parses also re-parses
        assert str(reparsed) == str(value)
        if isinstance(value, Via):
            assert value.rport is None or 0 < value.rport < 65536


@pytest.mark.parametrize(
    "raw", ['"Ali\x00ce" <sip:a@h>', '"Ali\rce" <sip:a@h>', '"A\\\rB" <sip:a@h>']
)
def test_control_characters_in_a_quoted_display_name_are_refused(raw: str) -> None:
    """RFC 3261 §25.1 qdtext/quoted-pair (found by fuzz/fuzz_sip_address.py)."""
    with pytest.raises(SipParseError):
        NameAddr.parse(raw)


def test_fuzz_finding_display_name_round_trips_or_is_refused() -> None:
    data = (Path(__file__).parents[2] / "fuzz/findings/sip_address-display-name-roundtrip")
    text = data.read_bytes().decode("utf-8", "replace")
    try:
        parsed = NameAddr.parse(text)
    except SipParseError:
        return
    assert NameAddr.parse(str(parsed)) == parsed
