"""SDP (RFC 8866, formerly RFC 4566) parsing and serialization.

Theory of operation
-------------------
:meth:`SessionDescription.parse` reads a session description line by line: ``v=``, ``o=``
and ``s=`` must open it, every line is ``<letter>=<value>`` with a known letter, and the
lines a media section may not hold (``o=``, ``t=``, ...) are refused there. Line ends may be
CRLF or bare LF. Anything malformed raises :class:`SdpError` naming the line.

The model keeps what the gateway reasons about as typed fields (ports, direction,
``a=rtcp``, ``a=rtcp-mux``, bandwidths) and every other attribute, ``a=rtpmap`` and
``a=fmtp`` included, in order in ``attributes``; :attr:`MediaDescription.codecs` derives the
codecs from them. A private layout record (ignored by ``==``) remembers where the typed
attributes stood, so :meth:`SessionDescription.to_bytes` reproduces a parsed description
byte for byte while a description built in code comes out in a canonical order.

Offer/answer (RFC 3264) over these descriptions is :mod:`sipbridge.sip.offer_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DIRECTIONS",
    "Attribute",
    "Codec",
    "MediaDescription",
    "NoCommonCodecs",
    "SdpError",
    "SessionDescription",
    "Timing",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: RFC 3551 §6 static payload types: PT -> (encoding name, clock rate, channels).
# fmt: off
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1), 25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1), 28: ("nv", 90000, 1), 31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1), 33: ("MP2T", 90000, 1), 34: ("H263", 90000, 1),
}
# fmt: on

# Payload formats that carry no audio/video of their own (RFC 4733, 3389, 2198, 5109, 4588).
_NOT_MEDIA = frozenset({"telephone-event", "cn", "red", "ulpfec", "flexfec", "rtx"})
_SESSION_ONLY = frozenset("vosuepztr")
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+", re.ASCII)
_PROTO_RE = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+(?:/[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+)*")
_HEX6_RE = re.compile(r"[0-9A-Fa-f]{6}")
_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})
# Order in which the typed media attributes are written when no parsed layout says otherwise.
_SPECIALS = ("rtcp", "rtcp-mux", "direction")


class SdpError(ValueError):
    """A session description is malformed or an offer/answer exchange is not acceptable."""


class NoCommonCodecs(SdpError):
    """RFC 3264 negotiation left no stream with a usable codec (the SIP layer answers 488)."""


def _uint(text: str, digits: int, maximum: int | None = None) -> int | None:
    """ASCII decimal with at most ``digits`` digits (bounds int() work on hostile input)."""
    if not 0 < len(text) <= digits or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return None if maximum is not None and value > maximum else value


def _infer_addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _is_direction(name: str) -> bool:
    return name in DIRECTIONS


@dataclass(frozen=True)
class Attribute:
    """One ``a=`` line (RFC 8866 §5.13): ``a=name`` (value None) or ``a=name:value``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass
class Timing:
    """A ``t=`` line and the ``r=`` lines that follow it (RFC 8866 §5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


def parse_fmtp_params(text: str) -> dict[str, str]:
    """Split ``a=fmtp`` parameters ``k=v;k2=v2`` (RFC 8866 §6.15); a bare ``0-16`` maps to ""."""
    params: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip()
    return params


def format_fmtp_params(params: dict[str, str]) -> str:
    """Inverse of :func:`parse_fmtp_params`."""
    return ";".join(key if value == "" else f"{key}={value}" for key, value in params.items())


def _fmtp_get(params: dict[str, str], key: str, default: str) -> str:
    # RFC 8866 leaves fmtp parameter case to each format; media types (RFC 6838) are
    # case-insensitive, and phones do send "Profile-Level-Id".
    for name, value in params.items():
        if name.lower() == key:
            return value
    return default


@dataclass
class Codec:
    """One RTP payload type of an ``m=`` line: its ``a=rtpmap`` (or RFC 3551 static
    assignment), its ``a=fmtp`` parameters and its ``a=rtcp-fb`` values (RFC 4585 §4.2,
    wildcard ``*`` lines included)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` value after the payload type, e.g. ``opus/48000/2``."""
        base = f"{self.name}/{self.clock_rate}"
        return base if self.channels == 1 else f"{base}/{self.channels}"

    @property
    def is_media(self) -> bool:
        """False for DTMF, comfort noise, RED, FEC and RTX, which carry no media alone."""
        return self.name.lower() not in _NOT_MEDIA


@dataclass
class _Layout:
    """Where a parsed description's typed items stood, so it serializes byte for byte."""

    addrtypes: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (addr, type)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # -> (index, line no)
    direction_implicit: bool = False

    def addrtype(self, key: str, address: str) -> str:
        recorded = self.addrtypes.get(key)
        if recorded is not None and recorded[0] == address:
            return recorded[1]
        return _infer_addrtype(address)


def _layout() -> _Layout:
    return _Layout()


def _first(attributes: Iterable[Attribute], name: str) -> Attribute | None:
    return next((attr for attr in attributes if attr.name == name), None)


def _word(value: str, what: str) -> str:
    if not value or any(c in value for c in " \t\r\n\0"):
        raise SdpError(f"cannot serialize {what} {value!r}")
    return value


def _parse_rtpmap(value: str) -> tuple[int, str, int, int] | None:
    pt_text, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    pt = _uint(pt_text, 3, 127)
    if pt is None or not 2 <= len(parts) <= 3 or not _TOKEN_RE.fullmatch(parts[0]):
        return None
    rate = _uint(parts[1], 10)
    channels = _uint(parts[2], 3) if len(parts) == 3 else 1
    if rate is None or channels is None:
        return None
    return pt, parts[0], rate, channels


def _parse_rtcp(value: str) -> tuple[int, str | None, str | None] | None:
    """``a=rtcp:port [IN IP4 addr]`` (RFC 3605 §2.1) -> (port, address, addrtype)."""
    parts = value.split()
    port = _uint(parts[0], 5, 65535) if parts else None
    if port is None:
        return None
    if len(parts) == 1:
        return port, None, None
    if len(parts) != 4 or parts[1] != "IN" or not _TOKEN_RE.fullmatch(parts[2]):
        return None
    return port, parts[3], parts[2]


@dataclass
class MediaDescription:
    """One media section, from its ``m=`` line to the next (RFC 8866 §5.14).

    ``direction`` is the effective one (RFC 3264 §5.1): the section's own attribute, else
    the session-level one, else ``sendrecv``. ``rtcp_port``/``rtcp_address`` come from
    ``a=rtcp`` (RFC 3605) and ``rtcp_mux`` from ``a=rtcp-mux`` (RFC 5761); those
    attributes are not repeated in ``attributes``.
    """

    kind: str
    port: int
    proto: str
    formats: list[str]
    connection_address: str | None = None
    direction: str = "sendrecv"
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    bandwidths: dict[str, int] = field(default_factory=dict)
    attributes: list[Attribute] = field(default_factory=list)
    rtcp_address: str | None = None
    port_count: int | None = None
    information: str | None = None
    encryption_key: str | None = None
    _layout: _Layout = field(default_factory=_layout, compare=False, repr=False)

    @property
    def is_rtp(self) -> bool:
        """RTP profiles (RTP/AVP, RTP/SAVPF, UDP/TLS/RTP/SAVPF...) use payload type formats."""
        return "RTP/" in self.proto

    @property
    def codecs(self) -> list[Codec]:
        """The payload types in ``formats`` order, from ``a=rtpmap``/``a=fmtp``/``a=rtcp-fb``
        or the RFC 3551 static table; formats known by neither are left out."""
        if not self.is_rtp:
            return []
        maps: dict[int, tuple[str, int, int]] = {}
        fmtps: dict[int, dict[str, str]] = {}
        feedback: list[tuple[str, str]] = []
        for attr in self.attributes:
            if attr.value is None:
                continue
            if attr.name == "rtpmap":
                parsed = _parse_rtpmap(attr.value)
                if parsed is None:
                    raise SdpError(f"bad rtpmap attribute: {attr.value!r}")
                maps.setdefault(parsed[0], parsed[1:])
            elif attr.name == "fmtp":
                pt_text, _, params = attr.value.partition(" ")
                pt = _uint(pt_text, 3, 127)
                if pt is not None:
                    fmtps.setdefault(pt, parse_fmtp_params(params))
            elif attr.name == "rtcp-fb":
                pt_text, _, value = attr.value.partition(" ")
                feedback.append((pt_text, value.strip()))
        codecs: list[Codec] = []
        for fmt in self.formats:
            pt = _uint(fmt, 3, 127)
            if pt is None:
                continue
            known = maps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if known is None:
                continue
            fb = [value for key, value in feedback if key in ("*", fmt, str(pt))]
            codecs.append(Codec(pt, known[0], known[1], known[2], dict(fmtps.get(pt, {})), fb))
        return codecs

    def set_codecs(self, codecs: Sequence[Codec], rtcp_fb_wildcard: Sequence[str] = ()) -> None:
        """Replace ``formats`` and the rtpmap/fmtp/rtcp-fb attributes with ``codecs``
        (rtpmap is written for static payload types too, as most stacks do)."""
        kept = [a for a in self.attributes if a.name not in ("rtpmap", "fmtp", "rtcp-fb")]
        made: list[Attribute] = []
        for codec in codecs:
            made.append(Attribute("rtpmap", f"{codec.payload_type} {codec.rtpmap}"))
            if codec.fmtp:
                made.append(
                    Attribute("fmtp", f"{codec.payload_type} {format_fmtp_params(codec.fmtp)}")
                )
        for codec in codecs:
            made.extend(Attribute("rtcp-fb", f"{codec.payload_type} {fb}") for fb in codec.rtcp_fb)
        made.extend(Attribute("rtcp-fb", f"* {fb}") for fb in rtcp_fb_wildcard)
        self.formats = [str(codec.payload_type) for codec in codecs]
        self.attributes = made + kept
        self._layout.positions.clear()

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` (``""`` for a property attribute), else None."""
        attr = _first(self.attributes, name)
        return None if attr is None else (attr.value or "")

    def _write(self, out: list[str], inherited: str) -> None:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        fmts = " ".join(_word(f, "format") for f in self.formats)
        out.append(f"m={_word(self.kind, 'media')} {port} {_word(self.proto, 'proto')} {fmts}")
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.connection_address is not None:
            addr = _word(self.connection_address, "address")
            out.append(f"c=IN {self._layout.addrtype('c', addr)} {addr}")
        out.extend(f"b={_word(k, 'bwtype')}:{v}" for k, v in self.bandwidths.items())
        if self.encryption_key is not None:
            out.append(f"k={self.encryption_key}")
        if self.direction not in DIRECTIONS:
            raise SdpError(f"cannot serialize direction {self.direction!r}")
        specials: dict[str, str] = {}
        if self.rtcp_port is not None:
            rtcp = f"rtcp:{self.rtcp_port}"
            if self.rtcp_address is not None:
                addr = _word(self.rtcp_address, "address")
                rtcp += f" IN {self._layout.addrtype('rtcp', addr)} {addr}"
            specials["rtcp"] = rtcp
        if self.rtcp_mux:
            specials["rtcp-mux"] = "rtcp-mux"
        if not (self._layout.direction_implicit and self.direction == inherited):
            specials["direction"] = self.direction
        for attr in self.attributes:
            if _is_direction(attr.name) or attr.name in ("rtcp", "rtcp-mux"):
                raise SdpError(f"attribute {attr.name!r} must be set through its field")
        placed = sorted(
            (self._layout.positions.get(key, (len(self.attributes), i)), key)
            for i, key in enumerate(_SPECIALS)
            if key in specials
        )
        pending = iter(placed)
        nxt = next(pending, None)
        for index, item in enumerate([*self.attributes, None]):
            while nxt is not None and nxt[0][0] <= index:
                out.append(f"a={specials[nxt[1]]}")
                nxt = next(pending, None)
            if item is not None:
                out.append(f"a={item}")


@dataclass
class SessionDescription:
    """A whole session description (RFC 8866 §5): origin, session-level lines, media."""

    username: str
    session_id: int
    session_version: int
    address: str
    session_name: str = "-"
    connection_address: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    bandwidths: dict[str, int] = field(default_factory=dict)
    times: list[Timing] = field(default_factory=lambda: [Timing()])
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    time_zones: str | None = None
    encryption_key: str | None = None
    _layout: _Layout = field(default_factory=_layout, compare=False, repr=False)

    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, inherited by media without one."""
        return next((a.name for a in self.attributes if _is_direction(a.name)), None)

    def attribute(self, name: str) -> str | None:
        """Value of the first session-level ``a=name`` (``""`` if valueless), else None."""
        attr = _first(self.attributes, name)
        return None if attr is None else (attr.value or "")

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse a session description (RFC 8866 §5); raises :class:`SdpError` with the line
        number and reason. Bytes are UTF-8 (§5: the default charset), other bytes kept
        as surrogate escapes so they serialize back unchanged."""
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogateescape")
        return _Parser(text).run()

    def to_bytes(self) -> bytes:
        """Serialize with CRLF line ends in RFC 8866 §5 order (v o s i u e p c b t r z k a, m)."""
        out = ["v=0"]
        addr = _word(self.address, "origin address")
        if self.session_id < 0 or self.session_version < 0:
            raise SdpError("cannot serialize a negative session id or version")
        out.append(
            f"o={_word(self.username, 'username')} {self.session_id} {self.session_version}"
            f" IN {self._layout.addrtype('o', addr)} {addr}"
        )
        out.append(f"s={self.session_name}")
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={email}" for email in self.emails)
        out.extend(f"p={phone}" for phone in self.phones)
        if self.connection_address is not None:
            addr = _word(self.connection_address, "address")
            out.append(f"c=IN {self._layout.addrtype('c', addr)} {addr}")
        out.extend(f"b={_word(k, 'bwtype')}:{v}" for k, v in self.bandwidths.items())
        for timing in self.times:
            out.append(f"t={timing.start} {timing.stop}")
            out.extend(f"r={repeat}" for repeat in timing.repeats)
        if self.time_zones is not None:
            out.append(f"z={self.time_zones}")
        if self.encryption_key is not None:
            out.append(f"k={self.encryption_key}")
        out.extend(f"a={attr}" for attr in self.attributes)
        inherited = self.direction or "sendrecv"
        for media in self.media:
            media._write(out, inherited)
        for line in out:
            if any(c in line for c in "\r\n\0"):
                raise SdpError(f"cannot serialize a line with CR, LF or NUL: {line!r}")
        try:
            return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise SdpError(f"cannot serialize: {exc.reason}") from exc


class _Parser:
    """One pass over the lines; session-level state, then one media section at a time."""

    def __init__(self, text: str) -> None:
        lines = text.split("\n")
        while lines and lines[-1] in ("", "\r"):
            lines.pop()
        self.lines = lines
        self.session_direction = "sendrecv"
        self.seen: set[str] = set()
        self.media: MediaDescription | None = None
        self.media_seen: set[str] = set()

    def fail(self, number: int, reason: str) -> SdpError:
        return SdpError(f"line {number}: {reason}")

    def bad(self, number: int, kind: str, line: str) -> SdpError:
        return self.fail(number, f"bad {kind}= line: {line[:120]!r}")

    def run(self) -> SessionDescription:
        if not self.lines:
            raise SdpError("empty session description")
        session: SessionDescription | None = None
        for number, raw in enumerate(self.lines, 1):
            line = raw[:-1] if raw.endswith("\r") else raw
            if "\r" in line or "\0" in line:
                raise self.fail(number, "stray CR or NUL character")
            if len(line) < 2 or line[1] != "=":
                raise self.fail(number, f"not a <type>=<value> line: {line[:120]!r}")
            kind, value = line[0], line[2:]
            if kind not in _KNOWN_TYPES:
                raise self.fail(number, f"unknown line type {kind!r}")
            if kind not in "si":
                value = value.rstrip(" \t")
            expected = {1: "v", 2: "o", 3: "s"}.get(number)
            if expected is not None and kind != expected:
                raise self.fail(number, f"expected {expected}= line, got {line[:120]!r}")
            if number == 1:
                if value != "0":
                    raise self.fail(number, f"unsupported SDP version {value!r}")
            elif number == 2:
                session = self.origin(number, value, line)
            elif session is None:  # pragma: no cover - line 2 always sets it
                raise self.fail(number, "missing o= line")
            elif self.media is None and kind != "m":
                self.session_line(session, number, kind, value, line)
            else:
                self.media_line(session, number, kind, value, line)
        if session is None:
            raise SdpError("missing o= line")
        if len(self.lines) < 3:
            raise SdpError("missing s= line")
        if "t" not in self.seen:
            raise SdpError("missing t= line")
        return session

    def origin(self, number: int, value: str, line: str) -> SessionDescription:
        parts = value.split(" ")
        if len(parts) != 6 or parts[3] != "IN" or not _TOKEN_RE.fullmatch(parts[4]):
            raise self.bad(number, "o", line)
        session_id, version = _uint(parts[1], 64), _uint(parts[2], 64)
        if session_id is None or version is None or not parts[0] or not parts[5]:
            raise self.bad(number, "o", line)
        if any(c in part for part in (parts[0], parts[5]) for c in "\t\r\n\0"):
            raise self.bad(number, "o", line)  # RFC 8866 §5.2: non-whitespace strings
        session = SessionDescription(parts[0], session_id, version, parts[5], times=[])
        self.record_addrtype(session._layout, "o", parts[5], parts[4])
        return session

    @staticmethod
    def record_addrtype(layout: _Layout, key: str, address: str, addrtype: str) -> None:
        if addrtype != _infer_addrtype(address):
            layout.addrtypes[key] = (address, addrtype)

    def connection(self, number: int, value: str, line: str) -> tuple[str, str]:
        parts = value.split(" ")
        if len(parts) != 3 or parts[0] != "IN" or not _TOKEN_RE.fullmatch(parts[1]):
            raise self.bad(number, "c", line)
        if not parts[2] or any(c in parts[2] for c in "\t\r\n\0"):
            raise self.bad(number, "c", line)  # RFC 8866 §5.7: an address has no whitespace
        return parts[2], parts[1]

    def bandwidth(self, number: int, value: str, line: str, into: dict[str, int]) -> None:
        bwtype, _, amount = value.partition(":")
        parsed = _uint(amount, 18)
        if not _TOKEN_RE.fullmatch(bwtype) or parsed is None:
            raise self.bad(number, "b", line)
        into[bwtype] = parsed

    def once(self, seen: set[str], number: int, kind: str) -> None:
        if kind in seen:
            raise self.fail(number, f"duplicate {kind}= line")
        seen.add(kind)

    def attribute(self, number: int, value: str, line: str) -> Attribute:
        name, colon, attr_value = value.partition(":")
        if not _TOKEN_RE.fullmatch(name):
            raise self.bad(number, "a", line)
        return Attribute(name, attr_value if colon else None)

    def session_line(
        self, session: SessionDescription, number: int, kind: str, value: str, line: str
    ) -> None:
        if kind in "osiuczk":
            self.once(self.seen, number, kind)
        if kind == "s":
            session.session_name = value
        elif kind == "i":
            session.information = value
        elif kind == "u":
            session.uri = value
        elif kind == "e":
            session.emails.append(value)
        elif kind == "p":
            session.phones.append(value)
        elif kind == "c":
            address, addrtype = self.connection(number, value, line)
            session.connection_address = address
            self.record_addrtype(session._layout, "c", address, addrtype)
        elif kind == "b":
            self.bandwidth(number, value, line, session.bandwidths)
        elif kind == "t":
            self.seen.add("t")
            start, _, stop = value.partition(" ")
            start_time, stop_time = _uint(start, 20), _uint(stop, 20)
            if start_time is None or stop_time is None:
                raise self.bad(number, "t", line)
            session.times.append(Timing(start_time, stop_time))
        elif kind == "r":
            if not session.times:
                raise self.fail(number, "r= line without a t= line")
            session.times[-1].repeats.append(value)
        elif kind == "z":
            session.time_zones = value
        elif kind == "k":
            session.encryption_key = value
        elif kind == "a":
            attr = self.attribute(number, value, line)
            if _is_direction(attr.name) and session.direction is None:
                self.session_direction = attr.name
            session.attributes.append(attr)
        else:
            raise self.fail(number, f"duplicate {kind}= line")

    def media_line(
        self, session: SessionDescription, number: int, kind: str, value: str, line: str
    ) -> None:
        if kind in _SESSION_ONLY:
            raise self.fail(number, f"{kind}= line not allowed in a media section")
        if kind == "m":
            if "t" not in self.seen:
                raise SdpError("missing t= line")
            self.media = self.m_line(number, value, line)
            self.media_seen = set()
            session.media.append(self.media)
            return
        media = self.media
        assert media is not None
        if kind in "ick":
            self.once(self.media_seen, number, kind)
        if kind == "i":
            media.information = value
        elif kind == "c":
            address, addrtype = self.connection(number, value, line)
            media.connection_address = address
            self.record_addrtype(media._layout, "c", address, addrtype)
        elif kind == "b":
            self.bandwidth(number, value, line, media.bandwidths)
        elif kind == "k":
            media.encryption_key = value
        else:
            self.media_attribute(media, number, self.attribute(number, value, line), line)

    def m_line(self, number: int, value: str, line: str) -> MediaDescription:
        parts = [part for part in value.split(" ") if part]
        if len(parts) < 3 or not _TOKEN_RE.fullmatch(parts[0]):
            raise self.bad(number, "m", line)
        port_text, slash, count_text = parts[1].partition("/")
        port = _uint(port_text, 5, 65535)
        count = _uint(count_text, 5) if slash else None
        formats = parts[3:]
        if port is None or (slash and not count) or not _PROTO_RE.fullmatch(parts[2]):
            raise self.bad(number, "m", line)
        if not all(_TOKEN_RE.fullmatch(fmt) for fmt in formats):
            raise self.bad(number, "m", line)
        media = MediaDescription(parts[0], port, parts[2], formats, port_count=count)
        if media.is_rtp and not all(_uint(fmt, 3, 127) is not None for fmt in formats):
            raise self.fail(number, f"bad m= line: RTP formats must be 0-127: {line[:120]!r}")
        # RFC 8866 §5.14 wants one format at least; rejected streams (port 0) often omit it.
        if not formats and port != 0:
            raise self.fail(number, f"bad m= line: no formats: {line[:120]!r}")
        media.direction = self.session_direction
        media._layout.direction_implicit = True
        return media

    def media_attribute(
        self, media: MediaDescription, number: int, attr: Attribute, line: str
    ) -> None:
        key = "direction" if _is_direction(attr.name) else attr.name
        if key in _SPECIALS:
            if key in media._layout.positions:
                raise self.fail(number, f"duplicate {key} attribute: {line[:120]!r}")
            media._layout.positions[key] = (len(media.attributes), number)
        if key == "direction":
            if attr.value is not None:
                raise self.fail(number, f"bad direction attribute: {line[:120]!r}")
            media.direction = attr.name
            media._layout.direction_implicit = False
        elif key == "rtcp-mux":
            if attr.value is not None:
                raise self.fail(number, f"bad rtcp-mux attribute: {line[:120]!r}")
            media.rtcp_mux = True
        elif key == "rtcp":
            rtcp = _parse_rtcp(attr.value or "")
            if rtcp is None:
                raise self.fail(number, f"bad rtcp attribute: {line[:120]!r}")
            media.rtcp_port, media.rtcp_address = rtcp[0], rtcp[1]
            if rtcp[1] is not None and rtcp[2] is not None:
                self.record_addrtype(media._layout, "rtcp", rtcp[1], rtcp[2])
        else:
            if attr.name == "rtpmap" and _parse_rtpmap(attr.value or "") is None:
                raise self.fail(number, f"bad rtpmap attribute: {line[:120]!r}")
            if attr.name in ("fmtp", "rtcp-fb"):
                pt = (attr.value or "").partition(" ")[0]
                if not (pt == "*" and attr.name == "rtcp-fb") and not _TOKEN_RE.fullmatch(pt):
                    raise self.fail(number, f"bad {attr.name} attribute: {line[:120]!r}")
            media.attributes.append(attr)
