"""Structured SIP header values: URIs, name-addr, Via (RFC 3261 §19.1, §20.10, §20.42).

Each class parses from the header text with ``parse()`` and writes it back
with ``str()``. Parameters keep their order and their original spelling of
values; parameter names compare case-insensitively (§19.1.4) and are kept in
lower case. Parsing is as liberal as RFC 4475 asks where the intent is clear
(LWS around ``/`` and ``=`` in Via, display names glued to ``<``) and strict
where a guess could change the meaning (unbalanced quotes, spaces inside
``<>``, an addr-spec carrying ``?`` or ``,``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple
from urllib.parse import unquote

__all__ = ["NameAddr", "SipParseError", "SipUri", "Target", "Via", "format_host", "parse_params"]


class Target(NamedTuple):
    """Where a message goes or came from: transport ("udp"/"tcp"), IP address, port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{format_host(self.host)}:{self.port}"


class SipParseError(ValueError):
    """The peer sent something RFC 3261 does not allow; the text says what.

    ``status`` is the response code a UAS should answer a request with when
    this error is raised for it: 400 (Bad Request) unless the RFC asks for
    another: 505 for an unsupported SIP version (§21.5.20), 416 for an
    unsupported Request-URI scheme (§8.2.2.1).
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


#: RFC 3261 §25.1 token characters.
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN_RE = re.compile(f"[{TOKEN_CHARS}]+")
# '_' is not legal in a hostname (§25.1) but common on private networks; accept it.
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")
_VIA_RE = re.compile(
    rf"([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)"
    r"[ \t]+([^;]*)(?:;(.*))?",
    re.DOTALL,
)
_URI_FORBIDDEN = frozenset(' \t"<>') | frozenset(map(chr, range(32))) | {"\x7f"}


def is_decimal(text: str, max_digits: int) -> bool:
    """ASCII digits only, at most ``max_digits`` significant ones (no int() blow-ups)."""
    return (
        text.isascii()
        and text.isdigit()
        and len(text.lstrip("0")) <= max_digits
        and len(text) <= 64  # int() refuses more than 4300 digits; leading zeros are no excuse
    )


def format_host(host: str) -> str:
    """IPv6 literals in brackets, everything else as is (§19.1.1)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _split_host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}: {text[:80]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {what}: {text[:80]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = text.partition(":")
        port_text = port_text_raw if colon else None
    if not _HOST_RE.fullmatch(host):
        raise SipParseError(f"bad host in {what}: {host[:80]!r}")
    port: int | None = None
    if port_text is not None:
        if not is_decimal(port_text, 5) or not 0 < int(port_text) < 65536:
            raise SipParseError(f"bad port in {what}: {port_text[:20]!r}")
        port = int(port_text)
    return host, port


def parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` parameters (the text after the first ``;``).

    LWS around ``;`` and ``=`` is allowed (§25.1 SEMI, EQUAL); a value may be a
    quoted string containing ``;``. Empty text means no parameters.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    for raw in _split_outside_quotes(text, ";"):
        item = raw.strip(" \t")
        if not item:
            raise SipParseError(f"empty parameter in {what}")
        name, eq, value = item.partition("=")
        name = name.strip(" \t")
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter name in {what}: {name[:40]!r}")
        params[name.lower()] = value.strip(" \t") if eq else None
    return params


def _params_after(sep: str, text: str, what: str) -> dict[str, str | None]:
    # A ';' with nothing after it is an empty parameter, not "no parameters".
    if sep and not text.strip(" \t"):
        raise SipParseError(f"empty parameter in {what}")
    return parse_params(text, what)


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


def split_list_value(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and ``<...>`` (§7.3.1)."""
    items: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            items.append(value[start:index].strip(" \t"))
            start = index + 1
    items.append(value[start:].strip(" \t"))
    return [item for item in items if item]


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1).

    ``user`` keeps its %-escapes as received (``unescaped_user`` decodes them,
    §19.1.4); ``headers`` is the raw text after ``?``.
    """

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip(" \t")
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:80]!r}")
        bad = next((ch for ch in rest if ch in _URI_FORBIDDEN), None)
        if bad is not None:
            raise SipParseError(f"character {bad!r} not allowed in SIP URI: {text[:80]!r}")
        user: str | None = None
        password: str | None = None
        # userinfo may hold ';', '?' and ':' (§25.1 user-unreserved, password) but
        # never '@', and no '@' may follow it: the last '@' ends it.
        at = rest.rfind("@")
        if at >= 0:
            user, pcolon, pw = rest[:at].partition(":")
            password = pw if pcolon else None
            rest = rest[at + 1 :]
            if not user:
                raise SipParseError(f"empty user part in URI: {text[:80]!r}")
        rest, qmark, headers = rest.partition("?")
        hostport, sep, param_text = rest.partition(";")
        host, port = _split_host_port(hostport, "URI")
        return cls(
            host=host,
            user=user,
            password=password,
            port=port,
            scheme=scheme,
            params=_params_after(sep, param_text, "URI"),
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

    @property
    def unescaped_user(self) -> str | None:
        """The user part with %HH escapes decoded (esc01: ``%75se%72`` is ``user``)."""
        return None if self.user is None else unquote(self.user, errors="surrogateescape")

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
    parses it when it is a SIP URI. In the addr-spec form (no ``<>``) every
    parameter after the URI belongs to the header, not to the URI (§20.10).
    """

    uri: str
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip(" \t")
        if not text:
            raise SipParseError("empty address")
        if text.startswith('"'):
            end = _closing_quote(text)
            if end < 0:
                raise SipParseError(f"unterminated quoted display name: {text[:80]!r}")
            rest = text[end + 1 :].lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError(f"quoted display name without <URI>: {text[:80]!r}")
            _check_qdtext(text[1:end])
            return cls._bracketed(rest, _unquote(text[1:end]))
        lt = text.find("<")
        if lt >= 0:
            display_text = text[:lt].strip(" \t")
            words = re.split(r"[ \t]+", display_text) if display_text else []
            if not all(_TOKEN_RE.fullmatch(word) for word in words):
                raise SipParseError(
                    f"unquoted display name with non-token characters: {display_text[:60]!r}"
                )
            return cls._bracketed(text[lt:], display_text or None)
        uri, sep, param_text = text.partition(";")
        uri = uri.strip(" \t")
        if "?" in uri or "," in uri:
            raise SipParseError(f"URI with '?' or ',' must be enclosed in <>: {uri[:80]!r}")
        if re.search(r"[ \t]", uri):
            raise SipParseError(f"address with spaces needs <>: {text[:80]!r}")
        _check_uri(uri)
        return cls(uri=uri, params=_params_after(sep, param_text, "address"))

    @classmethod
    def _bracketed(cls, text: str, display: str | None) -> NameAddr:
        gt = text.find(">")
        if gt < 0:
            raise SipParseError(f"unterminated '<' in address: {text[:80]!r}")
        uri = text[1:gt]
        if re.search(r"[ \t]", uri):
            raise SipParseError(f"whitespace inside <> in address: {text[: gt + 1][:80]!r}")
        _check_uri(uri)
        rest = text[gt + 1 :].strip(" \t")
        if rest and not rest.startswith(";"):
            raise SipParseError(f"junk after '>' in address: {rest[:60]!r}")
        return cls(uri=uri, display_name=display, params=_params_after(rest, rest[1:], "address"))

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
            display = f'"{_quote(self.display_name)}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def _check_uri(uri: str) -> None:
    if not _SCHEME_RE.match(uri):
        raise SipParseError(f"address without a URI scheme: {uri[:80]!r}")
    bad = next((ch for ch in uri if ch in _URI_FORBIDDEN), None)
    if bad is not None:
        raise SipParseError(f"character {bad!r} not allowed in address URI: {uri[:80]!r}")


def _closing_quote(text: str) -> int:
    """Index of the '"' closing the quoted string that starts at text[0], or -1."""
    escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index
    return -1


def _check_qdtext(text: str) -> None:
    """RFC 3261 §25.1: qdtext has no raw control characters but HTAB, and a quoted-pair
    never carries CR or LF."""
    escaped = False
    for char in text:
        code = ord(char)
        if escaped:
            if char in "\r\n":
                raise SipParseError("CR or LF escaped in a quoted string")
            escaped = False
        elif char == "\\":
            escaped = True
        elif (code < 0x20 and char != "\t") or code == 0x7F:
            raise SipParseError(f"control character {code:#04x} in a quoted string")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _quote(text: str) -> str:
    # quoted-pair (§25.1) can carry any octet but CR and LF, which a display
    # name cannot contain at all: those become spaces.
    out = []
    for char in text.replace("\r", " ").replace("\n", " "):
        if char in '"\\' or (ord(char) < 0x20 and char != "\t") or char == "\x7f":
            out.append("\\")
        out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class Via:
    """One Via header value (RFC 3261 §20.42, §18.2.1; rport per RFC 3581).

    ``SIP / 2.0 / UDP`` with LWS around the slashes and LWS around ``;``,
    ``=`` and ``:`` are accepted (§25.1 SLASH, SEMI, EQUAL, COLON).
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        text = text.strip(" \t")
        match = _VIA_RE.fullmatch(text)
        if match is None:
            raise SipParseError(f"bad Via: {text[:80]!r}")
        name, version, transport, sent_by, param_text = match.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"bad Via protocol: {name}/{version}")
        host, port = _split_host_port(re.sub(r"[ \t]", "", sent_by), "Via")
        params = _params_after(";" if param_text is not None else "", param_text or "", "Via")
        return cls(transport.upper(), host, port, params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value a server filled in (RFC 3581 §4), None if absent or a bare flag."""
        value = self.params.get("rport")
        if value is None or not is_decimal(value, 5) or not 0 < int(value) < 65536:
            return None
        return int(value)

    @property
    def has_rport(self) -> bool:
        """The client asked for symmetric response routing (RFC 3581 §3)."""
        return "rport" in self.params

    def with_params(self, **params: str | None) -> Via:
        return replace(self, params={**self.params, **params})

    def __str__(self) -> str:
        host = format_host(self.host)
        sent_by = host if self.port is None else f"{host}:{self.port}"
        return f"SIP/2.0/{self.transport} {sent_by}{_format_params(self.params)}"
