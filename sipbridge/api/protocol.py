"""The gateway as the REST layer sees it.

:class:`GatewayAPI` is the structural type the ``/call/*`` handlers drive;
:class:`StreamsAPI` the one the ``/stream/*`` handlers drive, :class:`PushesAPI`
the ``/push/*`` ones, :class:`ViewersAPI` the WHEP ones. ``sipbridge.gateway.Gateway``
implements the first, ``sipbridge.registry.StreamRegistry`` the second,
``sipbridge.pushes.PushManager`` the third, ``webrtc.whep.WhepSessions`` the
fourth; the tests drive fakes. Keeping the REST layer on a Protocol (not the
concrete class) keeps the import graph one-way (api -> gateway, never back) and
lets the handlers be tested without sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sipbridge.callinfo import CallInfo, CallRequest, CallStatus
from sipbridge.pushes import PushInfo
from sipbridge.registry import StreamInfo, StreamStatus

__all__ = [
    "DTMF_METHODS",
    "GatewayAPI",
    "PushesAPI",
    "StreamsAPI",
    "ViewerInfoAPI",
    "ViewersAPI",
    "WhepAnswerAPI",
]

# The DTMF transports WCS's ``/call/send_dtmf`` names in its ``type`` field.
DTMF_METHODS = ("RFC2833", "INFO")


class CallHandle(Protocol):
    """A placed call as the REST layer sees it (:class:`sipbridge.calls.Call`)."""

    def snapshot(self) -> CallInfo:
        """The call's state now, as ``/call/find`` reports it."""
        ...


class GatewayAPI(Protocol):
    """What ``/rest-api/call/*`` needs from the gateway.

    Every method raises :mod:`sipbridge.errors` subclasses for the caller's
    mistakes (``InvalidRequest`` 400, ``NotFound`` 404, ``Conflict`` 409,
    ``NotSupported`` 501); anything else is a bug and becomes a logged 500.
    """

    async def start_call(self, request: CallRequest) -> CallHandle:
        """Start an outbound call and return it at once (status NEW or PENDING).

        Raises ``InvalidRequest``, or ``Conflict`` for a reused ``call_id``, a stream
        name in use, or an RTMP URL + stream already pushed.
        """
        ...

    async def terminate_call(self, call_id: str) -> CallInfo:
        """Hang up (BYE, or CANCEL before the answer); ``NotFound`` for an unknown id.

        A call that has already ended answers its final :class:`CallInfo`.
        """
        ...

    def find_calls(
        self,
        *,
        call_id: str | None = None,
        callee: str | None = None,
        rtmp_url: str | None = None,
        status: CallStatus | None = None,
    ) -> list[CallInfo]:
        """Calls matching every given filter (all calls when none is given)."""
        ...

    def all_calls(self) -> list[CallInfo]:
        """Every call the gateway knows about."""
        ...

    async def hold_call(self, call_id: str) -> CallInfo:
        """Put an ESTABLISHED call on hold (re-INVITE sendonly, RFC 3264 §8.4).

        ``NotFound`` for an unknown id, ``Conflict`` when the call is not ESTABLISHED.
        """
        ...

    async def unhold_call(self, call_id: str) -> CallInfo:
        """Resume a held call (re-INVITE sendrecv); ``Conflict`` when it is not on HOLD."""
        ...

    async def send_dtmf(self, call_id: str, digits: str, method: str) -> CallInfo:
        """Send DTMF ``digits`` by ``method`` (one of :data:`DTMF_METHODS`).

        ``NotSupported`` when the method is not available for this call.
        """
        ...


class StreamsAPI(Protocol):
    """What ``/rest-api/stream/*`` needs: the stream registry's REST face.

    Errors as for :class:`GatewayAPI` (``NotFound`` 404, ``InvalidRequest`` 400).
    """

    def find_streams(
        self,
        *,
        name: str | None = None,
        status: StreamStatus | None = None,
        media_session_id: str | None = None,
    ) -> list[StreamInfo]:
        """Streams (live, and ended ones still kept) matching every given filter."""
        ...

    def all_streams(self) -> list[StreamInfo]:
        """Every stream the registry keeps."""
        ...

    async def terminate_stream(
        self, *, name: str | None = None, media_session_id: str | None = None
    ) -> StreamInfo:
        """Stop a stream (``STOPPED``; its call is hung up); ``NotFound`` when none matches.

        A stream that has already ended answers its final :class:`StreamInfo`.
        """
        ...


class PushesAPI(Protocol):
    """What ``/rest-api/push/*`` needs: the gateway's pushes (RTMP transponders).

    Errors as for :class:`GatewayAPI` (``InvalidRequest`` 400, ``NotFound`` 404,
    ``Conflict`` 409).
    """

    async def start_push(
        self, stream_name: str, rtmp_url: str, *, full_url: bool = False
    ) -> PushInfo:
        """Push the live stream ``stream_name`` to ``rtmp_url`` (the ``rtmp_`` rule unless
        ``full_url``); ``InvalidRequest`` for a bad URL, ``NotFound`` for an unknown
        stream, ``Conflict`` when that stream is already pushed to that URL."""
        ...

    def find_pushes(
        self, *, stream_name: str | None = None, rtmp_url: str | None = None
    ) -> list[PushInfo]:
        """Pushes (live, and ended ones still kept) matching every given filter."""
        ...

    def all_pushes(self) -> list[PushInfo]:
        """Every push kept."""
        ...

    async def terminate_push(self, media_session_id: str) -> PushInfo:
        """Stop a push (``STOPPED``); ``NotFound`` for an unknown id; an ended push as it is."""
        ...

    async def mute_push(self, media_session_id: str) -> PushInfo:
        """Mute the push's audio; ``NotFound`` for an unknown id, ``Conflict`` once ended."""
        ...

    async def unmute_push(self, media_session_id: str) -> PushInfo:
        """Unmute the push's audio; errors as :meth:`mute_push`."""
        ...


class WhepAnswerAPI(Protocol):
    """What a WHEP session's creation answers (``webrtc.whep.WhepAnswer`` has these fields)."""

    @property
    def session_id(self) -> str: ...

    @property
    def stream_name(self) -> str: ...

    @property
    def sdp(self) -> str: ...


class ViewerInfoAPI(Protocol):
    """A viewer as reported (``webrtc.whep.ViewerInfo``, a msgspec Struct encoded as it
    is); the REST layer reads only these two fields, so it need not import ``webrtc``."""

    @property
    def session_id(self) -> str: ...

    @property
    def stream_name(self) -> str: ...


class ViewersAPI(Protocol):
    """What ``/whep/*`` and ``/events`` need: the WebRTC viewers (WHEP sessions).

    Errors as for :class:`GatewayAPI` (``InvalidRequest`` 400, ``NotFound`` 404,
    ``Conflict`` 409).
    """

    async def create(self, stream_name: str, offer_sdp: str) -> WhepAnswerAPI:
        """Answer ``offer_sdp`` (recvonly, all ICE candidates gathered) with a session
        playing ``stream_name``; ``NotFound`` for an unknown stream, ``InvalidRequest``
        for an unusable offer, ``Conflict`` when a viewer limit is reached."""
        ...

    async def delete(self, session_id: str) -> ViewerInfoAPI:
        """Stop the session; answers its final viewer info; ``NotFound`` for an unknown id."""
        ...

    def get(self, session_id: str) -> ViewerInfoAPI | None:
        """The session's viewer info, or ``None`` when there is no such session."""
        ...

    def viewers(self, stream_name: str | None = None) -> Sequence[ViewerInfoAPI]:
        """Every live session's viewer info (those playing ``stream_name`` when given)."""
        ...
