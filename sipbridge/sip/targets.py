"""Where a call goes: the callee's Request-URI, and the next hop of a URI (RFC 3261 §8.1.2,
§12.2.1.1, §19.1)."""

from __future__ import annotations

import ipaddress

from sipbridge.sip.address import NameAddr, SipParseError, SipUri, Target, format_host

__all__ = ["callee_uri", "display_target", "is_ip_literal", "uri_target"]


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (brackets allowed), not a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def uri_target(uri: SipUri, default_transport: str) -> Target | None:
    """The address a request for ``uri`` is sent to when its host is an IP literal (§8.1.2).

    ``None`` for a host name: we resolve no DNS (RFC 3263), such requests go through
    the account's proxy. The transport is the URI's ``transport`` parameter, TLS for a
    ``sips:`` URI (RFC 5630 §3.1.3), else ``default_transport``; the port defaults to
    5061 over TLS and 5060 otherwise (§19.1.2).
    """
    if not is_ip_literal(uri.host):
        return None
    transport = uri.transport or default_transport
    if uri.scheme == "sips" and transport.lower() != "tls":
        transport = "tls"  # sips: requires TLS on every hop (RFC 5630 §3.1.3)
    port = uri.port or (5061 if transport.lower() == "tls" else 5060)
    return Target(transport, uri.host.strip("[]"), port)


def callee_uri(callee: str, domain: str, port: int | None = None) -> str:
    """The Request-URI for a WCS ``callee``: a user part, ``user@host`` or a SIP URI.

    A ``tel:`` prefix is dropped and the number becomes the user part (§19.1.6).
    Raises :class:`~sipbridge.sip.address.SipParseError` for what no SIP URI can hold.
    """
    callee = callee.strip()
    if callee.lower().startswith(("sip:", "sips:")):
        return str(SipUri.parse(callee))
    if callee.lower().startswith("tel:"):
        callee = callee[4:]
    if "@" in callee:
        return str(SipUri.parse(f"sip:{callee}"))
    host = format_host(domain)
    host = f"{host}:{port}" if port not in (None, 5060) else host
    return str(SipUri.parse(f"sip:{callee}@{host}"))


def display_target(uri: str) -> str:
    """The callee as shown in reports: ``user@host`` without scheme or params."""
    try:
        parsed = NameAddr.parse(f"<{uri}>").sip_uri
    except SipParseError:
        return uri
    return f"{parsed.user}@{parsed.host}" if parsed.user else parsed.host
