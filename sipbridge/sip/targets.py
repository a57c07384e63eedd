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
    the account's proxy. The port defaults to 5060, the transport to
    ``default_transport`` unless the URI names one.
    """
    if not is_ip_literal(uri.host):
        return None
    return Target(uri.transport or default_transport, uri.host.strip("[]"), uri.port or 5060)


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
