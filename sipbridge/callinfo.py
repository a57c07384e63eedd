"""The call's public data: what is asked for (:class:`CallRequest`) and what is reported
(:class:`CallInfo`), with the WCS status vocabulary (see shared REST-CONTRACT.md)."""

from __future__ import annotations

import enum

import msgspec


class CallStatus(enum.StrEnum):
    """WCS call statuses."""

    NEW = "NEW"
    PENDING = "PENDING"
    TRYING = "TRYING"
    RING = "RING"
    RING_MEDIA = "RING_MEDIA"
    SESSION_PROGRESS = "SESSION_PROGRESS"
    ESTABLISHED = "ESTABLISHED"
    HOLD = "HOLD"
    BUSY = "BUSY"
    FAILED = "FAILED"
    FINISH = "FINISH"

    @property
    def is_final(self) -> bool:
        return self in (CallStatus.BUSY, CallStatus.FAILED, CallStatus.FINISH)


class CallRequest(msgspec.Struct, kw_only=True, frozen=True):
    """An outbound call as asked for by ``/call/startup`` or ``Gateway.start_call``.

    Field meanings follow WCS: ``callee`` is a user part or a full SIP URI;
    ``sip_domain`` is the registrar/From domain; ``sip_outbound_proxy`` (host or
    host:port) is where requests are sent, defaulting to the domain; ``sip_port``
    is the port of the proxy/domain.
    """

    call_id: str
    callee: str
    to_stream: str | None = None
    rtmp_url: str | None = None
    rtmp_stream: str | None = None
    has_audio: bool = True
    has_video: bool = True
    sip_login: str = ""
    sip_authentication_name: str | None = None
    sip_password: str = msgspec.field(default="")
    sip_domain: str = ""
    sip_outbound_proxy: str | None = None
    sip_port: int | None = None
    sip_register_required: bool = False
    sip_transport: str | None = None
    app_key: str | None = None
    visible_name: str | None = None

    def __repr__(self) -> str:  # never leak the password through logs or tracebacks
        fields = ", ".join(
            f"{name}={'***' if name == 'sip_password' else repr(getattr(self, name))}"
            for name in self.__struct_fields__
        )
        return f"CallRequest({fields})"


class CallInfo(msgspec.Struct, kw_only=True):
    """A call as reported by ``/call/find`` (WCS field names; never the password)."""

    callId: str
    callee: str
    caller: str
    status: CallStatus
    sipStatus: int | None = None
    info: str | None = None
    streamName: str | None = None
    rtmpUrl: str | None = None
    rtmpStream: str | None = None
    hasAudio: bool = True
    hasVideo: bool = True
    appKey: str | None = None
    visibleName: str | None = None
    incoming: bool = False
