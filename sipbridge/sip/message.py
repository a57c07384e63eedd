"""SIP messages: parse and serialize (RFC 3261 §7, §20, §25).

Theory of operation
-------------------
A datagram (or one framed message from a stream, see :class:`StreamFramer`) is
parsed by :func:`parse_message` into a :class:`SipRequest` or
:class:`SipResponse`. Header names are kept in canonical form (compact forms
expanded, RFC 3261 §7.3.3; case-insensitive lookup, §7.3.1) and values are kept
as text with folded lines joined (§7.3.1). Structured views of the headers the
stack needs (Via, From/To, CSeq, addresses and URIs) are parsed on demand by the
small classes in :mod:`sipbridge.sip.address`.

Every problem found in the peer's bytes raises :class:`SipParseError` with the
exact reason, so the transport can log it and, for a request, answer 400 with
that reason (RFC 3261 §16.3, §21.4.1).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from sipbridge.sip.address import NameAddr, SipParseError, Via

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
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_SPECIAL_CASE: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "min-se": "Min-SE",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1): several
#: header lines and one line with commas mean the same thing.
LIST_HEADERS = frozenset(
    {
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
        "Path",
        "Service-Route",
    }
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS_LINE_RE = re.compile(r"^SIP/(\d+)\.(\d+) (\d{3}) ?(.*)$", re.IGNORECASE)

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


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
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


class Headers:
    """An ordered, case-insensitive multimap of SIP headers (RFC 3261 §7.3)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

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

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line (in the place of the first)."""
        key = canonical_name(name)
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
        self._items.insert(0, (canonical_name(name), value))

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
    """The CSeq header: sequence number and method (RFC 3261 §20.16)."""

    seq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2:
            raise SipParseError(f"bad CSeq: {value!r}")
        number, method = parts
        if not number.isdigit() or len(number) > 10 or int(number) >= 2**31:
            raise SipParseError(f"bad CSeq number: {number!r}")
        if not _TOKEN_RE.match(method):
            raise SipParseError(f"bad CSeq method: {method!r}")
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

    def _head_and_body(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class SipRequest(_MessageBase):
    """A SIP request (RFC 3261 §7.1)."""

    method: str = ""
    uri: str = ""
    version: str = SIP_VERSION

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
_MANDATORY_RESPONSE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")


def _split_head(data: bytes) -> tuple[str, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            head = data[:index]
            body = data[index + len(separator) :]
            break
    else:
        raise SipParseError("no empty line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"headers are not UTF-8 at byte {exc.start}") from None
    return text, body


def _parse_header_lines(lines: list[str]) -> Headers:
    headers = Headers()
    current: list[str] | None = None
    pending: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if current is None:
                raise SipParseError("continuation line before the first header")
            current.append(line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:60]!r}")
        name = name.rstrip(" \t")
        if not _TOKEN_RE.match(name):
            raise SipParseError(f"bad header name: {name[:60]!r}")
        current = [value.strip()]
        pending.append((name, current))
    for name, parts in pending:
        headers.add(name, " ".join(part for part in parts if part))
    return headers


def _parse_content_length(headers: Headers) -> int | None:
    values = [v for n, v in headers if n == "Content-Length"]
    if not values:
        return None
    if len({v.strip() for v in values}) != 1:
        raise SipParseError(f"conflicting Content-Length headers: {values!r}")
    value = values[0].strip()
    if not value.isdigit() or len(value) > 9:
        raise SipParseError(f"bad Content-Length: {value!r}")
    return int(value)


def parse_message(data: bytes, *, stream: bool = False) -> SipRequest | SipResponse:
    """Parse one SIP message (RFC 3261 §7).

    Over a datagram transport, bytes beyond Content-Length are discarded and a
    missing Content-Length means "the rest of the datagram" (§18.3). With
    ``stream=True`` Content-Length is mandatory. A body shorter than the
    declared length is an error.
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    text, body = _split_head(data)
    lines = text.replace("\r\n", "\n").split("\n")
    start_line = lines[0]
    headers = _parse_header_lines(lines[1:])

    length = _parse_content_length(headers)
    if length is None:
        if stream:
            raise SipParseError("missing Content-Length on a stream transport")
    elif len(body) < length:
        raise SipParseError(f"body is {len(body)} bytes, Content-Length says {length}")
    else:
        body = body[:length]

    message: SipRequest | SipResponse
    status_match = _STATUS_LINE_RE.match(start_line)
    if status_match is not None:
        major, minor, code, reason = status_match.groups()
        if (major, minor) != ("2", "0"):
            raise SipParseError(f"unsupported SIP version in status line: {start_line[:60]!r}")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
        message = SipResponse(headers=headers, body=body, status=status, reason=reason)
        mandatory = _MANDATORY_RESPONSE_HEADERS
    else:
        message = _parse_request_line(start_line, headers, body)
        mandatory = _MANDATORY_REQUEST_HEADERS

    for name in mandatory:
        if name not in headers:
            raise SipParseError(f"missing {name} header")
    cseq = message.cseq
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(f"CSeq method {cseq.method} does not match request {message.method}")
    # Parse the structured headers the stack relies on, so that a malformed one
    # is rejected here with its reason rather than deep inside a transaction.
    message.top_via  # noqa: B018
    message.from_  # noqa: B018
    message.to  # noqa: B018
    return message


def _parse_request_line(line: str, headers: Headers, body: bytes) -> SipRequest:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line: {line[:80]!r}")
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise SipParseError(f"bad method: {method[:40]!r}")
    if ":" not in uri or any(ch in uri for ch in "<> \t"):
        raise SipParseError(f"bad Request-URI: {uri[:80]!r}")
    if not version.upper().startswith("SIP/"):
        raise SipParseError(f"bad SIP version: {version[:20]!r}")
    return SipRequest(headers=headers, body=body, method=method, uri=uri, version=version.upper())


class StreamFramer:
    """Frames SIP messages out of a byte stream (TCP/TLS) by Content-Length (§18.3).

    Leading CRLFs between messages (keep-alives, RFC 5626 §3.5.1) are skipped.
    A message whose header block grows past ``max_size`` is an error: the
    connection must then be closed since the framing is lost.
    """

    def __init__(self, *, max_size: int = 65535) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        """Add received bytes; return every complete message. Raises SipParseError."""
        self._buffer += data
        messages: list[SipRequest | SipResponse] = []
        while True:
            while self._buffer[:2] == b"\r\n" or self._buffer[:1] == b"\n":
                del self._buffer[: 2 if self._buffer[:2] == b"\r\n" else 1]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max_size:
                    raise SipParseError(f"header block longer than {self._max_size} bytes")
                return messages
            head = bytes(self._buffer[:end])
            match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", head)
            if match is None:
                raise SipParseError("missing Content-Length on a stream transport")
            total = end + 4 + int(match.group(1))
            if total > self._max_size:
                raise SipParseError(f"message of {total} bytes exceeds {self._max_size}")
            if len(self._buffer) < total:
                return messages
            chunk = bytes(self._buffer[:total])
            del self._buffer[:total]
            messages.append(parse_message(chunk, stream=True))


def generate_branch() -> str:
    """A new Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + secrets.token_hex(10)


def generate_tag() -> str:
    """A new From/To tag with at least 32 bits of randomness (§19.3)."""
    return secrets.token_hex(6)


def generate_call_id(host: str) -> str:
    """A globally unique Call-ID (§8.1.1.4)."""
    return f"{secrets.token_hex(12)}@{host}"


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` as a UAS builds it (RFC 3261 §8.2.6.2).

    Via, From, Call-ID and CSeq are copied; To is copied and gets ``to_tag``
    when it has none (not for 100 Trying, which never carries a new tag).
    """
    out = Headers()
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route") and (
            name != "Record-Route" or 100 < status < 300
        ):
            out.add(name, value)
        elif name == "To":
            to = NameAddr.parse(value)
            if to_tag and status != 100 and to.tag is None:
                to = to.with_param("tag", to_tag)
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
