"""A SIP identity: address of record, digest credentials, where requests go."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipbridge.sip.address import Target, format_host

__all__ = ["SipAccount"]


@dataclass(frozen=True)
class SipAccount:
    """Who we are at the SIP server (RFC 3261 §10.2: the address of record).

    ``proxy`` is the resolved next hop for out-of-dialog requests (the
    outbound proxy, or the domain's server); ``proxy_uri`` is its URI when
    it must appear as a pre-loaded Route (§8.1.2), else None.
    """

    login: str
    domain: str
    proxy: Target
    password: str = field(default="", repr=False)
    auth_name: str | None = None
    display_name: str | None = None
    domain_port: int | None = None
    proxy_uri: str | None = None

    @property
    def username(self) -> str:
        """The digest username (``sipAuthenticationName``, or the login)."""
        return self.auth_name or self.login

    @property
    def domain_hostport(self) -> str:
        host = format_host(self.domain)
        return host if self.domain_port in (None, 5060) else f"{host}:{self.domain_port}"

    @property
    def aor(self) -> str:
        """``sip:login@domain`` (port kept when not the default)."""
        return f"sip:{self.login}@{self.domain_hostport}"

    @property
    def transport(self) -> str:
        return self.proxy.transport

    def from_header(self, tag: str) -> str:
        display = ""
        if self.display_name:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.aor}>;tag={tag}"
