"""Request bodies of ``/rest-api/call/*`` and ``/stream/*``: msgspec Structs, decoders, checks.

Theory of operation
-------------------
Each endpoint's JSON body is decoded by a :class:`msgspec.json.Decoder` built once
at import, into a Struct with WCS's camelCase field names (``rename="camel"``)
that refuses unknown fields, so a typo such as ``calee`` is a 400 naming it
rather than a silently ignored value.

WCS clients send booleans and ports as strings (``"hasVideo": "true"``,
``"sipPort": "5060"``) and empty strings for fields they leave blank. The
lenient fields are therefore typed ``object`` in the Structs and converted by
:func:`parse_flag` / :func:`parse_port`, whose error texts name the field and
the accepted forms; an empty string means "absent" for every optional field.

:func:`decode_body` turns msgspec's errors into :class:`InvalidRequest` with the
offending field in ``field`` and ``"<field>: <reason>"`` as message. A field
inside a nested object or array is named by its path from the body, dotted:
``config.fileTemplate``, ``items[1].name`` (msgspec says ``unknown field
`template` - at `$.config``; we say ``config.template: unknown field``).
No message ever quotes the value of ``sipPassword``: msgspec's own texts
never quote string values, and the lenient converters never see the password.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Final, TypeVar

import msgspec

from sipbridge.api.protocol import DTMF_METHODS
from sipbridge.callinfo import CallRequest, CallStatus
from sipbridge.errors import InvalidRequest
from sipbridge.registry import StreamStatus

__all__ = [
    "CALL_ID_DECODER",
    "EMPTY_DECODER",
    "FIND_CALLS_DECODER",
    "FIND_STREAMS_DECODER",
    "MAX_DTMF_DIGITS",
    "SEND_DTMF_DECODER",
    "SIP_TRANSPORTS",
    "START_CALL_DECODER",
    "STREAM_KEY_DECODER",
    "CallFilter",
    "CallIdBody",
    "EmptyBody",
    "FindCallsBody",
    "FindStreamsBody",
    "SendDtmfBody",
    "StartCallBody",
    "StreamFilter",
    "StreamKeyBody",
    "decode_body",
    "parse_dtmf",
    "parse_dtmf_method",
    "parse_flag",
    "parse_port",
    "parse_status",
    "parse_stream_status",
    "parse_transport",
    "require_call_id",
    "to_call_filter",
    "to_call_request",
    "to_stream_filter",
    "to_stream_key",
]

# Limits keep one field from eating the whole body budget; they are far above real use.
Id = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
Url = Annotated[str, msgspec.Meta(max_length=4096)]

SIP_TRANSPORTS: Final = ("UDP", "TCP", "TLS")
MAX_DTMF_DIGITS: Final = 64
_DTMF_RE: Final = re.compile(r"[0-9*#A-D]+")
_FLAG_FORMS: Final = 'true, false, "true", "false", "1" or "0"'
# Longest a quoted client value may get inside an error message.
_SHOW_MAX: Final = 40


class StartCallBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/call/startup``: WCS's fields, plus the harmless extras WCS clients send.

    ``hasAudio``, ``hasVideo``, ``sipRegisterRequired`` and ``sipPort`` are loose
    (``object``) on purpose: see :func:`parse_flag` and :func:`parse_port`.
    """

    callee: Text
    call_id: Id | None = None
    to_stream: Text | None = None
    rtmp_url: Url | None = None
    rtmp_stream: Text | None = None
    has_audio: object = None
    has_video: object = None
    sip_login: Text | None = None
    sip_authentication_name: Text | None = None
    sip_password: Text | None = None
    sip_domain: Text | None = None
    sip_outbound_proxy: Text | None = None
    sip_port: object = None
    sip_register_required: object = None
    sip_transport: Text | None = None
    app_key: Text | None = None
    visible_name: Text | None = None
    # Sent by WCS clients; accepted so they work unchanged.
    sip_visible_name: Text | None = None  # the From display name when visibleName is absent
    custom: object = None  # WCS's free-form client data: ignored
    media_session_id: Id | None = None  # WCS's client-side session id: ignored

    def __repr__(self) -> str:  # a Struct's default repr would print the password
        fields = ", ".join(
            f"{name}={'***' if name == 'sip_password' else repr(getattr(self, name))}"
            for name in self.__struct_fields__
        )
        return f"StartCallBody({fields})"


class CallIdBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/call/terminate``, ``/call/hold``, ``/call/unhold``."""

    call_id: Id


class FindCallsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/call/find``: every given (non-empty) filter must match."""

    call_id: Id | None = None
    callee: Text | None = None
    rtmp_url: Url | None = None
    status: Id | None = None


class SendDtmfBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/call/send_dtmf``: ``dtmf`` digits (string, or a number), ``type`` RFC2833 or INFO."""

    call_id: Id
    dtmf: object
    type: Id | None = None


class EmptyBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``/call/find_all``: ``{}`` (an empty body reads as ``{}``)."""


class FindStreamsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/stream/find``: every given (non-empty) filter must match."""

    name: Text | None = None
    status: Id | None = None
    media_session_id: Id | None = None


class StreamKeyBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/stream/terminate``: ``mediaSessionId`` or ``name`` (at least one)."""

    media_session_id: Id | None = None
    name: Text | None = None


class CallFilter(msgspec.Struct, kw_only=True, frozen=True):
    """The decoded filters of ``/call/find`` (``None``: not filtered on)."""

    call_id: str | None = None
    callee: str | None = None
    rtmp_url: str | None = None
    status: CallStatus | None = None


class StreamFilter(msgspec.Struct, kw_only=True, frozen=True):
    """The decoded filters of ``/stream/find`` (``None``: not filtered on)."""

    name: str | None = None
    status: StreamStatus | None = None
    media_session_id: str | None = None


START_CALL_DECODER: Final = msgspec.json.Decoder(StartCallBody)
CALL_ID_DECODER: Final = msgspec.json.Decoder(CallIdBody)
FIND_CALLS_DECODER: Final = msgspec.json.Decoder(FindCallsBody)
SEND_DTMF_DECODER: Final = msgspec.json.Decoder(SendDtmfBody)
EMPTY_DECODER: Final = msgspec.json.Decoder(EmptyBody)
FIND_STREAMS_DECODER: Final = msgspec.json.Decoder(FindStreamsBody)
STREAM_KEY_DECODER: Final = msgspec.json.Decoder(StreamKeyBody)

T = TypeVar("T")

_UTF8_BOM: Final = b"\xef\xbb\xbf"
# msgspec appends " - at `$<path>`" for errors below the top level. The path is made of
# our own (camelCase) field names, indices and "[...]" for dict values: never a backtick,
# which keeps a client's field name containing " - at `$" from passing for a path.
_AT_PATH_RE: Final = re.compile(
    r"^(?P<reason>.*) - at `\$(?P<path>(?:\.[A-Za-z_][A-Za-z0-9_]*|\[(?:\d+|\.\.\.)\])+)`$",
    re.DOTALL,
)
_UNKNOWN_RE: Final = re.compile(r"^Object contains unknown field `(?P<name>.*)`$", re.DOTALL)
_MISSING_RE: Final = re.compile(r"^Object missing required field `(?P<name>.*)`$", re.DOTALL)


def decode_body(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    """Decode a request body; every failure is an :class:`InvalidRequest` naming the field.

    An empty (or all-whitespace) body reads as ``{}``, so ``/call/find_all``
    works without one and other endpoints report their missing field.
    """
    data = data.removeprefix(_UTF8_BOM)
    if not data.strip():
        data = b"{}"
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        message, field = _explain_validation_error(str(exc))
        raise InvalidRequest(message, field=field) from None
    except msgspec.DecodeError as exc:
        reason = str(exc).removeprefix("JSON is malformed: ")
        raise InvalidRequest(f"malformed JSON: {_lower_first(reason)}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("malformed JSON: the body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply") from None


def _explain_validation_error(text: str) -> tuple[str, str | None]:
    """``("<field>: <reason>", field)`` from a msgspec ValidationError text; ``field`` is
    the dotted path of the offending field (module doc), ``None`` for the body itself."""
    nested = _AT_PATH_RE.match(text)
    if nested is not None:
        where = nested["path"].removeprefix(".")
        if explained := _explain_object_error(nested["reason"], f"{where}."):
            return explained
    # Tried second: a top-level unknown field may itself contain " - at `$.x`".
    if explained := _explain_object_error(text, ""):
        return explained
    if nested is None:
        return f"request body: {_lower_first(text)}", None
    field = nested["path"].removeprefix(".")
    return f"{field}: {_lower_first(nested['reason'])}", field


def _explain_object_error(reason: str, prefix: str) -> tuple[str, str] | None:
    """An unknown or missing field of the object at ``prefix`` (``""``: the body)."""
    if match := _UNKNOWN_RE.match(reason):
        field = prefix + _clip(match["name"])
        return f"{field}: unknown field", field
    if match := _MISSING_RE.match(reason):
        field = prefix + match["name"]
        return f"{field}: required field is missing", field
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _clip(text: str) -> str:
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX] + "..."


def _show(value: object) -> str:
    """A short rendering of a client's JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(_clip(value))
    if isinstance(value, int | float):
        return _clip(str(value))
    if isinstance(value, list):
        return "an array"
    return "an object"


def _absent(value: str | None) -> str | None:
    """WCS clients send ``""`` for fields left blank: that means "not given"."""
    return value if value else None


def parse_flag(value: object, field: str, *, default: bool) -> bool:
    """A WCS boolean: JSON ``true``/``false`` or a string ``true``/``false``/``1``/``0``.

    Strings are case-insensitive; ``null`` and ``""`` mean ``default``.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if not word:
            return default
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
    raise InvalidRequest(
        f"{field}: expected a boolean ({_FLAG_FORMS}), got {_show(value)}", field=field
    )


def parse_port(value: object, field: str) -> int | None:
    """A port number 1-65535, as a JSON integer or a string of digits; ``null``/``""``: none."""
    port: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        # isdecimal() alone would take other scripts' digits; the length check keeps int() cheap.
        if text.isascii() and text.isdecimal() and len(text) <= 5:
            port = int(text)
    elif value is None:
        return None
    if port is None or not 1 <= port <= 65535:
        raise InvalidRequest(
            f"{field}: expected a port number 1-65535, got {_show(value)}", field=field
        )
    return port


def parse_transport(value: str | None) -> str | None:
    """``sipTransport``: ``UDP``, ``TCP`` or ``TLS`` (any case); ``""``/absent: the default."""
    if not value:
        return None
    transport = value.strip().upper()
    if transport not in SIP_TRANSPORTS:
        raise InvalidRequest(
            f"sipTransport: expected one of {', '.join(SIP_TRANSPORTS)}, got {_show(value)}",
            field="sipTransport",
        )
    return transport


def parse_dtmf(value: object) -> str:
    """``dtmf``: RFC 4733 §3.2 events 0-9, ``*``, ``#``, A-D (letters in any case).

    WCS clients may send a single digit as a JSON number.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if isinstance(value, str):
        digits = value.strip().upper()
        if 0 < len(digits) <= MAX_DTMF_DIGITS and _DTMF_RE.fullmatch(digits):
            return digits
    raise InvalidRequest(
        f"dtmf: expected 1-{MAX_DTMF_DIGITS} DTMF digits (0-9, *, #, A-D), got {_show(value)}",
        field="dtmf",
    )


def parse_dtmf_method(value: str | None) -> str:
    """``type`` of ``/call/send_dtmf``: ``RFC2833`` (WCS's default) or ``INFO``, any case."""
    if not value:
        return DTMF_METHODS[0]
    method = value.strip().upper()
    if method not in DTMF_METHODS:
        raise InvalidRequest(
            f"type: expected one of {', '.join(DTMF_METHODS)}, got {_show(value)}", field="type"
        )
    return method


def parse_status(value: str | None) -> CallStatus | None:
    """``status`` filter of ``/call/find``: a WCS call status name, any case."""
    if not value:
        return None
    try:
        return CallStatus(value.strip().upper())
    except ValueError:
        names = ", ".join(status.value for status in CallStatus)
        raise InvalidRequest(
            f"status: expected one of {names}, got {_show(value)}", field="status"
        ) from None


def require_call_id(value: str) -> str:
    """A ``callId`` that names a call: present and not empty."""
    if not value:
        raise InvalidRequest("callId: must not be empty", field="callId")
    return value


def to_call_request(body: StartCallBody) -> CallRequest:
    """The gateway's :class:`CallRequest` for a ``/call/startup`` body.

    A missing or empty ``callId`` gets a random UUID (library users may leave it out;
    WCS clients always send one).
    """
    if not body.callee.strip():
        raise InvalidRequest("callee: must not be empty", field="callee")
    return CallRequest(
        call_id=body.call_id or str(uuid.uuid4()),
        callee=body.callee,
        to_stream=_absent(body.to_stream),
        rtmp_url=_absent(body.rtmp_url),
        rtmp_stream=_absent(body.rtmp_stream),
        has_audio=parse_flag(body.has_audio, "hasAudio", default=True),
        has_video=parse_flag(body.has_video, "hasVideo", default=True),
        sip_login=body.sip_login or "",
        sip_authentication_name=_absent(body.sip_authentication_name),
        sip_password=body.sip_password or "",
        sip_domain=body.sip_domain or "",
        sip_outbound_proxy=_absent(body.sip_outbound_proxy),
        sip_port=parse_port(body.sip_port, "sipPort"),
        sip_register_required=parse_flag(
            body.sip_register_required, "sipRegisterRequired", default=False
        ),
        sip_transport=parse_transport(body.sip_transport),
        app_key=_absent(body.app_key),
        visible_name=_absent(body.visible_name) or _absent(body.sip_visible_name),
    )


def to_call_filter(body: FindCallsBody) -> CallFilter:
    """The filters of a ``/call/find`` body; empty strings are no filter."""
    return CallFilter(
        call_id=_absent(body.call_id),
        callee=_absent(body.callee),
        rtmp_url=_absent(body.rtmp_url),
        status=parse_status(body.status),
    )


def parse_stream_status(value: str | None) -> StreamStatus | None:
    """``status`` filter of ``/stream/find``: a WCS stream status name, any case."""
    if not value:
        return None
    try:
        return StreamStatus(value.strip().upper())
    except ValueError:
        names = ", ".join(status.value for status in StreamStatus)
        raise InvalidRequest(
            f"status: expected one of {names}, got {_show(value)}", field="status"
        ) from None


def to_stream_filter(body: FindStreamsBody) -> StreamFilter:
    """The filters of a ``/stream/find`` body; empty strings are no filter."""
    return StreamFilter(
        name=_absent(body.name),
        status=parse_stream_status(body.status),
        media_session_id=_absent(body.media_session_id),
    )


def to_stream_key(body: StreamKeyBody) -> tuple[str | None, str | None]:
    """``(name, media_session_id)`` of a ``/stream/terminate`` body; at least one is set."""
    name, media_session_id = _absent(body.name), _absent(body.media_session_id)
    if name is None and media_session_id is None:
        raise InvalidRequest(
            "mediaSessionId: required field is missing (give mediaSessionId or name)",
            field="mediaSessionId",
        )
    return name, media_session_id
