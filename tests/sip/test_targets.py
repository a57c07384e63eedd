"""Callee Request-URIs and next hops of URIs (RFC 3261 §8.1.2, §19.1)."""

from __future__ import annotations

import pytest

from sipbridge.sip.address import SipParseError, SipUri, Target
from sipbridge.sip.targets import callee_uri, display_target, is_ip_literal, uri_target


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.1", True),
        ("[2001:db8::1]", True),
        ("2001:db8::1", True),
        ("example.com", False),
        ("192.0.2", False),
        ("", False),
    ],
)
def test_is_ip_literal(host: str, expected: bool) -> None:
    assert is_ip_literal(host) is expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:bob@192.0.2.10", Target("udp", "192.0.2.10", 5060)),
        ("sip:bob@192.0.2.10:5080;transport=TCP", Target("tcp", "192.0.2.10", 5080)),
        ("sip:[2001:db8::1]:5062", Target("udp", "2001:db8::1", 5062)),
        ("sip:bob@example.com", None),
    ],
)
def test_uri_target(uri: str, expected: Target | None) -> None:
    assert uri_target(SipUri.parse(uri), "udp") == expected


def test_uri_target_default_transport() -> None:
    assert uri_target(SipUri.parse("sip:192.0.2.10"), "tcp") == Target("tcp", "192.0.2.10", 5060)


def test_callee_uri_tel_and_errors() -> None:
    assert callee_uri(" tel:+15551234 ", "example.com") == "sip:+15551234@example.com"
    assert callee_uri("100", "2001:db8::1", 5080) == "sip:100@[2001:db8::1]:5080"
    with pytest.raises(SipParseError):
        callee_uri("bob smith", "example.com")


def test_display_target_without_user() -> None:
    assert display_target("sip:example.com:5060") == "example.com"
    assert display_target("sip:alice@example.com;transport=udp") == "alice@example.com"
