"""AMF0: the value encoding of RTMP commands and FLV script data (Adobe AMF0 spec).

Python values map to AMF0 types (AMF0 spec §2):

========================  =====================================================
Python                    AMF0 marker
========================  =====================================================
``float`` / ``int``       number (0x00), an IEEE 754 double
``bool``                  boolean (0x01)
``str``                   string (0x02) up to 65535 UTF-8 bytes, else long
                          string (0x0C)
``dict[str, value]``      anonymous object (0x03)
``None``                  null (0x05)
:data:`UNDEFINED`         undefined (0x06)
:class:`EcmaArray`        ECMA array (0x08): a ``dict`` with a count hint
``list``                  strict array (0x0A)
:class:`AmfDate`          date (0x0B): ms since the epoch + a time zone
========================  =====================================================

Decoding gives the same types back (numbers always as ``float``). Anything else
the decoder meets (references, typed objects, AMF3 switch, truncation, bad UTF-8,
nesting deeper than :data:`MAX_DEPTH`) is an :class:`AmfError` with the offset:
a peer's garbage never raises anything else. Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "MAX_DEPTH",
    "UNDEFINED",
    "AmfDate",
    "AmfError",
    "AmfValue",
    "EcmaArray",
    "Undefined",
    "decode",
    "decode_all",
    "encode",
    "encode_all",
]

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C

#: How deeply objects and arrays may nest when decoding (a peer cannot exhaust the stack).
MAX_DEPTH: Final = 64
_DOUBLE = struct.Struct(">d")
_DATE = struct.Struct(">dh")


class AmfError(ValueError):
    """Bytes that are not AMF0 we understand, or a value AMF0 cannot carry."""


class Undefined:
    """AMF0 ``undefined`` (one instance: :data:`UNDEFINED`)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


class EcmaArray(dict[str, "AmfValue"]):
    """An AMF0 ECMA array (associative array, AMF0 spec §2.10): what FLV ``onMetaData``
    carries. A ``dict``; the type only chooses the marker."""


@dataclass(frozen=True, slots=True)
class AmfDate:
    """AMF0 date (§2.13): ``ms`` since 1970-01-01 UTC and a time zone (minutes; the spec
    says senders should write 0)."""

    ms: float
    timezone: int = 0


AmfValue: TypeAlias = (
    "float | int | bool | str | Undefined | AmfDate | EcmaArray"
    " | dict[str, AmfValue] | list[AmfValue] | None"
)


def encode(value: AmfValue) -> bytes:
    """One value as AMF0 bytes; :class:`AmfError` for what AMF0 cannot carry."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def encode_all(*values: AmfValue) -> bytes:
    """Several values back to back (an RTMP command message body)."""
    out = bytearray()
    for value in values:
        _encode(value, out, 0)
    return bytes(out)


def _utf8(text: str, long: bool = False) -> bytes:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AmfError(f"string is not encodable as UTF-8: {exc.reason}") from None
    if not long and len(data) > 0xFFFF:
        raise AmfError(f"object key of {len(data)} bytes exceeds 65535")
    if len(data) > 0xFFFFFFFF:
        raise AmfError(f"string of {len(data)} bytes exceeds 2^32 - 1")
    return data


def _key(key: str, out: bytearray) -> None:
    if not isinstance(key, str):
        raise AmfError(f"object keys must be str, got {type(key).__name__}")
    data = _utf8(key)
    out += len(data).to_bytes(2, "big")
    out += data


def _encode(value: AmfValue, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AmfError(f"values nest deeper than {MAX_DEPTH}")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, int | float):
        out.append(NUMBER)
        try:
            out += _DOUBLE.pack(float(value))
        except OverflowError:
            raise AmfError(f"number {value} does not fit a double") from None
    elif isinstance(value, str):
        data = _utf8(value, long=True)
        if len(data) <= 0xFFFF:
            out.append(STRING)
            out += len(data).to_bytes(2, "big")
        else:
            out.append(LONG_STRING)
            out += len(data).to_bytes(4, "big")
        out += data
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DATE.pack(value.ms, value.timezone)
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += len(value).to_bytes(4, "big")
        _properties(value, out, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _properties(value, out, depth)
    elif isinstance(value, list):
        out.append(STRICT_ARRAY)
        out += len(value).to_bytes(4, "big")
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise AmfError(f"no AMF0 type for {type(value).__name__}")


def _properties(value: dict[str, AmfValue], out: bytearray, depth: int) -> None:
    for key, item in value.items():
        _key(key, out)
        _encode(item, out, depth + 1)
    out += b"\x00\x00" + bytes([OBJECT_END])


def decode(data: bytes, offset: int = 0) -> tuple[AmfValue, int]:
    """The value at ``offset`` and the offset after it."""
    return _Decoder(data).value(offset, 0)


def decode_all(data: bytes) -> list[AmfValue]:
    """Every value in ``data`` (a command message body), in order."""
    decoder = _Decoder(data)
    values: list[AmfValue] = []
    offset = 0
    while offset < len(data):
        value, offset = decoder.value(offset, 0)
        values.append(value)
    return values


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def _need(self, offset: int, size: int, what: str) -> None:
        if offset + size > len(self.data):
            raise AmfError(f"AMF0 {what} truncated at byte {offset}")

    def _text(self, offset: int, size: int, what: str) -> str:
        self._need(offset, size, what)
        try:
            return self.data[offset : offset + size].decode("utf-8")
        except UnicodeDecodeError:
            raise AmfError(f"AMF0 {what} at byte {offset} is not valid UTF-8") from None

    def value(self, offset: int, depth: int) -> tuple[AmfValue, int]:
        if depth > MAX_DEPTH:
            raise AmfError(f"AMF0 values nest deeper than {MAX_DEPTH} at byte {offset}")
        self._need(offset, 1, "type marker")
        marker = self.data[offset]
        pos = offset + 1
        if marker == NUMBER:
            self._need(pos, 8, "number")
            return _DOUBLE.unpack_from(self.data, pos)[0], pos + 8
        if marker == BOOLEAN:
            self._need(pos, 1, "boolean")
            return self.data[pos] != 0, pos + 1
        if marker == STRING:
            self._need(pos, 2, "string length")
            size = int.from_bytes(self.data[pos : pos + 2], "big")
            return self._text(pos + 2, size, "string"), pos + 2 + size
        if marker == LONG_STRING:
            self._need(pos, 4, "long string length")
            size = int.from_bytes(self.data[pos : pos + 4], "big")
            return self._text(pos + 4, size, "long string"), pos + 4 + size
        if marker == NULL:
            return None, pos
        if marker == UNDEFINED_MARKER:
            return UNDEFINED, pos
        if marker == OBJECT:
            props: dict[str, AmfValue] = {}
            return props, self._properties(pos, depth, props)
        if marker == ECMA_ARRAY:
            self._need(pos, 4, "ECMA array count")
            array = EcmaArray()
            # The count is a hint only (AMF0 §2.10): the end marker ends the array.
            return array, self._properties(pos + 4, depth, array)
        if marker == STRICT_ARRAY:
            self._need(pos, 4, "strict array count")
            count = int.from_bytes(self.data[pos : pos + 4], "big")
            pos += 4
            if count > len(self.data) - pos:  # every item takes at least one byte
                raise AmfError(f"AMF0 strict array count {count} at byte {offset} overruns")
            items: list[AmfValue] = []
            for _ in range(count):
                item, pos = self.value(pos, depth + 1)
                items.append(item)
            return items, pos
        if marker == DATE:
            self._need(pos, 10, "date")
            ms, timezone = _DATE.unpack_from(self.data, pos)
            return AmfDate(ms, timezone), pos + 10
        raise AmfError(f"unsupported AMF0 type marker 0x{marker:02x} at byte {offset}")

    def _properties(self, pos: int, depth: int, into: dict[str, AmfValue]) -> int:
        while True:
            self._need(pos, 2, "property name length")
            size = int.from_bytes(self.data[pos : pos + 2], "big")
            key = self._text(pos + 2, size, "property name")
            pos += 2 + size
            if size == 0:
                self._need(pos, 1, "object end marker")
                if self.data[pos] == OBJECT_END:
                    return pos + 1
            item, pos = self.value(pos, depth + 1)
            into[key] = item
