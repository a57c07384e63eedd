"""Structured SIP header values: URIs, name-addr, Via (RFC 3261 §19.1, §20.10, §20.42).

Each class parses from the header text with ``parse()`` and writes it back
with ``str()``. Parameters keep their order and their original spelling of
values; parameter names compare case-insensitively (§19.1.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple

__all__ = ["NameAddr", "SipParseError", "SipUri", "Target", "Via", "format_host", "parse_params"]


class Target(NamedTuple):
    """Where a message goes or came from: transport ("udp"/"tcp"), IP address, port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{format_host(self.host)}:{self.port}"


class SipParseError(ValueError):
    """The peer sent something RFC 3261 does not allow; the text says what."""


_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def format_host(host: str) -> str:
    """IPv6 literals in brackets, everything else as is (§19.1.1)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _split_host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}: {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {what}: {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = text.partition(":")
        port_text = port_text_raw if colon else None
    if not host or not _HOST_RE.match(host):
        raise SipParseError(f"bad host in {what}: {host!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SipParseError(f"bad port in {what}: {port_text!r}")
        port = int(port_text)
    return host, port


def parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` parameters (the text after the first ``;``)."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for raw in _split_outside_quotes(text, ";"):
        item = raw.strip()
        if not item:
            raise SipParseError(f"empty parameter in {what}")
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_RE.match(name):
            raise SipParseError(f"bad parameter name in {what}: {name!r}")
        params[name.lower()] = value.strip() if eq else None
    return params


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    start = 0
    in_quotes = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == sep and not in_quotes:
            parts.append(text[start:index])
            start = index + 1
    if in_quotes:
        raise SipParseError(f"unterminated quoted string in {text[:60]!r}")
    parts.append(text[start:])
    return parts


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1)."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.strip().partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:80]!r}")
        rest, qmark, headers = rest.partition("?")
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, pcolon, pw = userinfo.partition(":")
            password = pw if pcolon else None
            if not user:
                raise SipParseError(f"empty user part in URI: {text[:80]!r}")
        hostport, _, param_text = rest.partition(";")
        host, port = _split_host_port(hostport, "URI")
        return cls(
            host=host,
            user=user,
            password=password,
            port=port,
            scheme=scheme,
            params=parse_params(param_text, "URI"),
            headers=headers if qmark else None,
        )

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update({k.replace("_", "-"): v for k, v in params.items()})
        return replace(self, params=merged)

    def without_params(self, *names: str) -> SipUri:
        return replace(self, params={k: v for k, v in self.params.items() if k not in names})

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        text = f"{self.scheme}:{userinfo}{self.host_port}{_format_params(self.params)}"
        return text + (f"?{self.headers}" if self.headers is not None else "")


@dataclass(frozen=True)
class NameAddr:
    """``"Display" <uri>;params`` as in From, To, Contact, Route (RFC 3261 §20.10).

    The URI is kept as text (it may be ``tel:`` or another scheme); ``sip_uri``
    parses it when it is a SIP URI.
    """

    uri: str
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        if "<" in text:
            lt = _find_outside_quotes(text, "<")
            if lt < 0:
                raise SipParseError(f"'<' inside quotes only: {text[:80]!r}")
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated '<' in address: {text[:80]!r}")
            display_text = text[:lt].strip()
            if display_text:
                if display_text.startswith('"'):
                    if not display_text.endswith('"') or len(display_text) < 2:
                        raise SipParseError(f"bad quoted display name: {display_text[:60]!r}")
                    display = _unquote(display_text[1:-1])
                else:
                    display = display_text
            uri = text[lt + 1 : gt].strip()
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipParseError(f"junk after '>' in address: {rest[:60]!r}")
            params = parse_params(rest[1:], "address")
        else:
            # addr-spec form: parameters after ';' belong to the header, not the URI (§20.10)
            uri, _, param_text = text.partition(";")
            uri = uri.strip()
            if " " in uri:
                raise SipParseError(f"address with spaces needs <>: {text[:80]!r}")
            params = parse_params(param_text, "address")
        if ":" not in uri:
            raise SipParseError(f"address without a URI scheme: {uri[:80]!r}")
        return cls(uri=uri, display_name=display, params=params)

    @property
    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        return replace(self, params={**self.params, name: value})

    def __str__(self) -> str:
        display = ""
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def _find_outside_quotes(text: str, char: str) -> int:
    in_quotes = False
    escaped = False
    for index, current in enumerate(text):
        if escaped:
            escaped = False
        elif current == "\\" and in_quotes:
            escaped = True
        elif current == '"':
            in_quotes = not in_quotes
        elif current == char and not in_quotes:
            return index
    return -1


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class Via:
    """One Via header value (RFC 3261 §20.42, §18.2.1; rport per RFC 3581)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        text = text.strip()
        protocol, sep, rest = text.partition(" ")
        if not sep:
            raise SipParseError(f"bad Via: {text[:80]!r}")
        parts = [p.strip() for p in protocol.split("/")]
        # "SIP / 2.0 / UDP" with whitespace is legal (§25.1 LWS around SLASH).
        if len(parts) != 3:
            merged = re.sub(r"\s*/\s*", "/", text)
            protocol, sep, rest = merged.partition(" ")
            parts = protocol.split("/")
            if len(parts) != 3:
                raise SipParseError(f"bad Via protocol: {text[:80]!r}")
        name, version, transport = parts
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"bad Via protocol: {protocol!r}")
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = _split_host_port(sent_by.strip().replace(" ", ""), "Via")
        return cls(transport.upper(), host, port, parse_params(param_text, "Via"))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    def with_params(self, **params: str | None) -> Via:
        return replace(self, params={**self.params, **params})

    def __str__(self) -> str:
        host = format_host(self.host)
        sent_by = host if self.port is None else f"{host}:{self.port}"
        return f"SIP/2.0/{self.transport} {sent_by}{_format_params(self.params)}"
