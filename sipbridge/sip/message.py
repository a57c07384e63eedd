"""SIP messages: parse and serialize (RFC 3261 §7, §20, §25).

Theory of operation
-------------------
A datagram (or one framed message from a stream, see :class:`StreamFramer`) is
parsed by :func:`parse_message` into a :class:`SipRequest` or
:class:`SipResponse`. Header names are kept in canonical form (compact forms
expanded, RFC 3261 §7.3.3; case-insensitive lookup, §7.3.1) and values are kept
as text with folded lines joined (§7.3.1). Structured views of the headers the
stack needs (Via, From/To, CSeq, Contact, addresses and URIs) are parsed on
demand by the small classes in :mod:`sipbridge.sip.address`.

The parser validates the start line, Content-Length framing, the header
section's syntax and the headers every layer relies on: Via (all values),
From, To, Call-ID, CSeq (range; method = request method) and Contact. Headers
the stack does not interpret (Date, Expires, unknown ones) are carried as text
and never fail a message; Max-Forwards and the Request-URI scheme are checked
on demand (``max_forwards``, ``sip_uri``) by the layers acting on them. The
RFC 4475 mapping is tabled in tests/sip/test_message.py.

Every problem found in the peer's bytes raises :class:`SipParseError` with the
exact reason and the status a UAS should answer (400, or 505 for an unknown
SIP version), so the transport can log it and answer a request (§21.4.1).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from sipbridge.sip.address import (
    TOKEN_CHARS,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    is_decimal,
    split_list_value,
)

__all__ = [
    "CSeq",
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "canonical_name",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "make_response",
    "parse_message",
    "reason_phrase",
]

SIP_VERSION = "SIP/2.0"

#: RFC 3261 §7.3.3 and the IANA registry of compact forms.
# fmt: off
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires",
    "y": "Identity",
}
# fmt: on

# fmt: off
_SPECIAL_CASE: dict[str, str] = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq", "min-se": "Min-SE",
    "sip-etag": "SIP-ETag", "sip-if-match": "SIP-If-Match",
}
# fmt: on

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1): several
#: header lines and one line with commas mean the same thing.
# fmt: off
LIST_HEADERS = frozenset({
    "Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require", "Proxy-Require",
    "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events", "Path",
    "Service-Route", "Alert-Info", "Call-Info", "Error-Info", "Content-Encoding",
    "Content-Language", "In-Reply-To", "Warning", "Reason",
})
# fmt: on

_TOKEN_RE = re.compile(f"[{TOKEN_CHARS}]+")
_STATUS_LINE_RE = re.compile(r"SIP/([0-9]+)\.([0-9]+) ([0-9]+)(?: (.*))?", re.IGNORECASE)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")

# fmt: off
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 422: "Session Interval Too Small",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}
# fmt: on


def reason_phrase(status: int) -> str:
    """The RFC 3261 §21 reason phrase for ``status`` (generic for unknown codes)."""
    return REASON_PHRASES.get(status, "Unknown")


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name: compact forms expanded (§7.3.3)."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    special = _SPECIAL_CASE.get(lower)
    if special is not None:
        return special
    return "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))


def _checked(name: str, value: str) -> tuple[str, str]:
    # Local misuse, not a peer's error: a CR or LF in a value would inject headers.
    if not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"bad header name: {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value contains CR or LF: {value[:60]!r}")
    return canonical_name(name), value


class Headers:
    """An ordered, case-insensitive multimap of SIP headers (RFC 3261 §7.3).

    Names must be tokens and values must not contain CR or LF (``ValueError``).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [_checked(n, v) for n, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (for a list header: the first element)."""
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, list headers split into their elements."""
        key = canonical_name(name)
        values = [v for n, v in self._items if n == key]
        if key in LIST_HEADERS:
            return [item for v in values for item in split_list_value(v)]
        return values

    def count(self, name: str) -> int:
        """How many header lines (not list elements) named ``name`` there are."""
        key = canonical_name(name)
        return sum(1 for n, _ in self._items if n == key)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self._items.append(_checked(name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line (in the place of the first)."""
        key, value = _checked(name, value)
        for index, (existing, _) in enumerate(self._items):
            if existing == key:
                self._items[index] = (key, value)
                self._items = [
                    item for i, item in enumerate(self._items) if i <= index or item[0] != key
                ]
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        """Remove every line of ``name``."""
        key = canonical_name(name)
        self._items = [item for item in self._items if item[0] != key]

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before all others (a proxy's or client's new top Via)."""
        self._items.insert(0, _checked(name, value))

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(n == key for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class CSeq(NamedTuple):
    """The CSeq header: sequence number and method (RFC 3261 §20.16).

    The number must be below 2**31 (§8.1.1.5); leading zeros are allowed.
    """

    seq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = re.split(r"[ \t]+", value.strip(" \t"))
        if len(parts) != 2:
            raise SipParseError(f"bad CSeq: {value[:60]!r}")
        number, method = parts
        if not is_decimal(number, 10) or int(number) >= 2**31:
            raise SipParseError(f"bad CSeq number: {number[:40]!r}")
        if not _TOKEN_RE.fullmatch(method):
            raise SipParseError(f"bad CSeq method: {method[:40]!r}")
        return cls(int(number), method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass
class _MessageBase:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # -- structured views of the headers every layer needs -----------------
    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if value is None:
            raise SipParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq")
        return CSeq.parse(value)

    @property
    def from_(self) -> NameAddr:
        value = self.headers.get("From")
        if value is None:
            raise SipParseError("missing From")
        return NameAddr.parse(value)

    @property
    def to(self) -> NameAddr:
        value = self.headers.get("To")
        if value is None:
            raise SipParseError("missing To")
        return NameAddr.parse(value)

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        value = self.headers.get("Via")
        if value is None:
            raise SipParseError("missing Via")
        return Via.parse(value)

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact value (§20.10); the REGISTER wildcard ``*`` is an error here."""
        values = self.headers.get_all("Contact")
        if "*" in values:
            raise SipParseError("Contact is the wildcard '*', not an address")
        return [NameAddr.parse(v) for v in values]

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255, §20.22), None when absent."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        text = value.strip(" \t")
        if not is_decimal(text, 3) or int(text) > 255:
            raise SipParseError(f"bad Max-Forwards: {value[:40]!r}")
        return int(text)

    def _head_and_body(self, start_line: str) -> bytes:
        # Content-Length is always written and always right (§18.3, §20.14),
        # in the place of the first Content-Length the message had.
        headers = self.headers.copy()
        headers.set("Content-Length", str(len(self.body)))
        lines = [start_line, *(f"{name}: {value}" for name, value in headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class SipRequest(_MessageBase):
    """A SIP request (RFC 3261 §7.1)."""

    method: str = ""
    uri: str = ""
    version: str = SIP_VERSION

    @property
    def sip_uri(self) -> SipUri:
        """The Request-URI as a SIP/SIPS URI; another scheme raises with status 416 (§8.2.2.1)."""
        match = _SCHEME_RE.match(self.uri)
        if match is None or match.group(1).lower() not in ("sip", "sips"):
            scheme = match.group(1) if match else self.uri[:20]
            raise SipParseError(f"unsupported URI scheme in Request-URI: {scheme!r}", status=416)
        return SipUri.parse(self.uri)

    def to_bytes(self) -> bytes:
        """Serialize with a correct Content-Length (always written, §18.3)."""
        return self._head_and_body(f"{self.method} {self.uri} {self.version}")

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"


@dataclass
class SipResponse(_MessageBase):
    """A SIP response (RFC 3261 §7.2)."""

    status: int = 200
    reason: str = "OK"
    version: str = SIP_VERSION

    def to_bytes(self) -> bytes:
        """Serialize with a correct Content-Length (always written, §18.3)."""
        return self._head_and_body(f"{self.version} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


SipMessage = SipRequest | SipResponse

_MANDATORY_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
_MANDATORY_RESPONSE_HEADERS = _MANDATORY_REQUEST_HEADERS  # §8.1.1, §8.2.6.2
#: Headers that may appear once only (§7.3.1, §20): RFC 4475 multi01.
_SINGLE_HEADERS = ("To", "From", "CSeq", "Call-ID")


def _find_head_end(data: bytes | bytearray) -> tuple[int, int]:
    """Index and length of the empty line ending the header section, (-1, 0) if none."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")  # bare-LF senders exist; be liberal in what we accept
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)


def _head_lines(head: bytes) -> list[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"headers are not UTF-8 at byte {exc.start}") from None
    text = text.replace("\r\n", "\n").removesuffix("\r")
    if "\r" in text:
        raise SipParseError("bare CR in the header section")
    return text.split("\n")


def _parse_header_lines(lines: list[str]) -> Headers:
    headers = Headers()
    current: list[str] | None = None
    pending: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if current is None:
                raise SipParseError("continuation line before the first header")
            current.append(line.strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:60]!r}")
        name = name.rstrip(" \t")
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad header name: {name[:60]!r}")
        current = [value.strip(" \t")]
        pending.append((name, current))
    for name, parts in pending:
        headers.add(name, " ".join(part for part in parts if part))
    return headers


def _parse_content_length(headers: Headers) -> int | None:
    values = [v for n, v in headers if n == "Content-Length"]
    if not values:
        return None
    if len({v.strip(" \t") for v in values}) != 1:
        raise SipParseError(f"conflicting Content-Length headers: {values!r}"[:120])
    value = values[0].strip(" \t")
    if not is_decimal(value, 9):
        raise SipParseError(f"bad Content-Length: {value[:20]!r}")
    return int(value)


def parse_message(data: bytes, *, stream: bool = False) -> SipRequest | SipResponse:
    """Parse one SIP message (RFC 3261 §7).

    Over a datagram transport, bytes beyond Content-Length are discarded and a
    missing Content-Length means "the rest of the datagram" (§18.3). With
    ``stream=True`` Content-Length is mandatory. A body shorter than the
    declared length is an error. CRLFs before the start line are ignored (§7.5).
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    end, separator = _find_head_end(data)
    if end < 0:
        raise SipParseError("no empty line after the headers")
    lines = _head_lines(data[:end])
    body = data[end + separator :]
    start_line = lines[0]
    message: SipRequest | SipResponse
    if start_line[:4].upper() == "SIP/":
        message = _parse_status_line(start_line)
    else:
        message = _parse_request_line(start_line)
    message.headers = headers = _parse_header_lines(lines[1:])

    length = _parse_content_length(headers)
    if length is None:
        if stream:
            raise SipParseError("missing Content-Length on a stream transport")
    elif len(body) < length:
        raise SipParseError(f"body is {len(body)} bytes, Content-Length says {length}")
    else:
        body = body[:length]
    message.body = body
    _validate(message)
    return message


def _validate(message: SipRequest | SipResponse) -> None:
    headers = message.headers
    missing = [name for name in _MANDATORY_REQUEST_HEADERS if name not in headers]
    if missing:
        raise SipParseError(f"missing {', '.join(missing)} header{'s' * (len(missing) > 1)}")
    for name in _SINGLE_HEADERS:
        if headers.count(name) > 1:
            raise SipParseError(f"multiple {name} headers")
    if not message.call_id.strip(" \t"):
        raise SipParseError("empty Call-ID")
    cseq = message.cseq
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(f"CSeq method {cseq.method} does not match request {message.method}")
    # Parse the structured headers the stack relies on, so that a malformed one
    # is rejected here with its reason rather than deep inside a transaction.
    message.vias  # noqa: B018
    message.from_  # noqa: B018
    message.to  # noqa: B018
    if headers.get_all("Contact") != ["*"]:
        message.contacts  # noqa: B018


def _parse_status_line(line: str) -> SipResponse:
    match = _STATUS_LINE_RE.fullmatch(line)
    if match is None:
        raise SipParseError(f"bad status line: {line[:80]!r}")
    major, minor, code, reason = match.groups()
    if (major, minor) != ("2", "0"):
        raise SipParseError(f"unsupported SIP version in status line: {line[:60]!r}", status=505)
    if len(code) != 3 or not 100 <= int(code) <= 699:
        raise SipParseError(f"status code out of range: {code[:20]}")
    return SipResponse(status=int(code), reason=reason or "")


def _parse_request_line(line: str) -> SipRequest:
    # Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP each (§7.1).
    if line != line.rstrip(" \t"):
        raise SipParseError(f"whitespace at the end of the request line: {line[:80]!r}")
    if "  " in line or "\t" in line:
        raise SipParseError(f"more than one SP between request line elements: {line[:80]!r}")
    parts = line.split(" ")
    if len(parts) > 3:
        raise SipParseError(f"whitespace inside the Request-URI: {line[:80]!r}")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line: {line[:80]!r}")
    method, uri, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise SipParseError(f"bad method: {method[:40]!r}")
    if not _VERSION_RE.fullmatch(version):
        raise SipParseError(f"bad SIP version: {version[:20]!r}")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported SIP version: {version[:20]!r}", status=505)
    if uri.startswith("<"):
        raise SipParseError(f"Request-URI enclosed in <>: {uri[:80]!r}")
    scheme = _SCHEME_RE.match(uri)
    if scheme is None or any(ch in uri for ch in '<>"'):
        raise SipParseError(f"bad Request-URI: {uri[:80]!r}")
    if scheme.group(1).lower() in ("sip", "sips") and SipUri.parse(uri).headers is not None:
        raise SipParseError(f"headers not allowed in a Request-URI (§19.1.1): {uri[:80]!r}")
    return SipRequest(method=method, uri=uri, version=SIP_VERSION)


class StreamFramer:
    """Frames SIP messages out of a byte stream (TCP/TLS) by Content-Length (§18.3).

    CRLFs between messages (keep-alives, RFC 5626 §3.5.1) are skipped. A framing
    error (missing/bad Content-Length, more than ``max_size`` bytes) sets
    ``broken``: every later ``feed`` raises and the connection must be closed.
    A malformed but well-framed message raises and framing carries on; if other
    messages came out of the same call, they are returned and the error is
    raised by the next ``feed`` (``feed(b"")`` collects it and what follows).
    """

    def __init__(self, *, max_size: int = 65535) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._deferred: SipParseError | None = None
        self._broken: str | None = None

    @property
    def broken(self) -> bool:
        """The stream's framing was lost: close the connection."""
        return self._broken is not None

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        """Add received bytes; return every complete message. Raises SipParseError."""
        self._buffer += data
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        if self._broken is not None:
            raise SipParseError(f"stream framing was lost: {self._broken}")
        messages: list[SipRequest | SipResponse] = []
        while True:
            try:
                chunk = self._next_chunk()
            except SipParseError as exc:
                self._broken = str(exc)
                return self._fail(messages, exc)
            if chunk is None:
                return messages
            try:
                messages.append(parse_message(chunk, stream=True))
            except SipParseError as exc:
                return self._fail(messages, exc)

    def _fail(
        self, messages: list[SipRequest | SipResponse], error: SipParseError
    ) -> list[SipRequest | SipResponse]:
        if not messages:
            raise error
        self._deferred = error
        return messages

    def _next_chunk(self) -> bytes | None:
        buffer = self._buffer
        skip = 0
        while skip < len(buffer) and buffer[skip] in b"\r\n":
            skip += 1
        del buffer[:skip]
        end, separator = _find_head_end(buffer)
        if end < 0 or end > self._max_size:
            if len(buffer) > self._max_size:
                raise SipParseError(f"header block longer than {self._max_size} bytes")
            return None
        length = _parse_content_length(_parse_header_lines(_head_lines(bytes(buffer[:end]))[1:]))
        if length is None:
            raise SipParseError("missing Content-Length on a stream transport")
        total = end + separator + length
        if total > self._max_size:
            raise SipParseError(f"message of {total} bytes exceeds {self._max_size}")
        if len(buffer) < total:
            return None
        chunk = bytes(buffer[:total])
        del buffer[:total]
        return chunk


def generate_branch() -> str:
    """A new Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + secrets.token_hex(10)


def generate_tag() -> str:
    """A new From/To tag with at least 32 bits of randomness (§19.3)."""
    return secrets.token_hex(6)


def generate_call_id(host: str) -> str:
    """A globally unique Call-ID (§8.1.1.4)."""
    return f"{secrets.token_hex(12)}@{host}"


def _copied_into_response(name: str, status: int) -> bool:
    if name == "Record-Route":
        return 100 < status < 300
    if name == "Timestamp":
        return status == 100
    return name in ("Via", "From", "Call-ID", "CSeq")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` as a UAS builds it (RFC 3261 §8.2.6).

    Via (all, in order), From, Call-ID and CSeq are copied; To is copied, and
    when it has no tag and ``status`` is not 100 it gets ``to_tag`` or, if none
    is given, a fresh one (§8.2.6.2: the UAS MUST add a tag). A 100 Trying
    copies Timestamp (§8.2.6.1). Record-Route is copied into 101-299 responses
    (§12.1.1).
    """
    out = Headers()
    for name, value in request.headers:
        if _copied_into_response(name, status):
            out.add(name, value)
        elif name == "To":
            to = NameAddr.parse(value)
            if status != 100 and to.tag is None:
                to = to.with_param("tag", to_tag or generate_tag())
                out.add(name, str(to))
            else:
                out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    return SipResponse(
        headers=out,
        body=body,
        status=status,
        reason=reason if reason is not None else reason_phrase(status),
    )
