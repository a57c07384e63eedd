"""In-memory ``GatewayAPI`` and ``StreamsAPI`` (:mod:`sipbridge.api.protocol`) for the REST tests.

It keeps calls as :class:`CallInfo` objects, records what it was asked, and
follows the contract's rules (409 on a reused callId or stream name, 404 on an
unknown id, hold only when ESTABLISHED, ...). :class:`FakeStreams` keeps
streams as :class:`StreamInfo` objects, :class:`FakePushes` pushes as
:class:`PushInfo` objects. ``fail_with`` makes the next call of
any method raise the given exception, to test the error mapping.
"""

from __future__ import annotations

from rtmp.pusher import PushStatus
from sipbridge.callinfo import CallInfo, CallRequest, CallStatus
from sipbridge.errors import Conflict, NotFound, NotSupported
from sipbridge.pushes import PushInfo, rtmp_target_url
from sipbridge.registry import StreamInfo, StreamStatus, TrackStats


class FakeCall:
    """What ``start_call`` returns: a handle whose snapshot is the fake's stored info."""

    def __init__(self, info: CallInfo) -> None:
        self.info = info

    def snapshot(self) -> CallInfo:
        return self.info


class FakeGateway:
    """Structurally a ``GatewayAPI``; no SIP, no media."""

    def __init__(self) -> None:
        self.calls: dict[str, CallInfo] = {}
        self.requests: list[CallRequest] = []
        self.dtmf_sent: list[tuple[str, str, str]] = []
        self.find_filters: list[dict[str, object]] = []
        self.fail_with: BaseException | None = None

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    def _get(self, call_id: str) -> CallInfo:
        try:
            return self.calls[call_id]
        except KeyError:
            raise NotFound(f"no call with callId {call_id!r}", field="callId") from None

    def add_call(self, call_id: str, status: CallStatus, **fields: object) -> CallInfo:
        """Put a call straight into a state (tests set the scene with it)."""
        info = CallInfo(callId=call_id, callee="bob", caller="alice", status=status)
        for name, value in fields.items():
            setattr(info, name, value)
        self.calls[call_id] = info
        return info

    async def start_call(self, request: CallRequest) -> FakeCall:
        self._maybe_fail()
        if request.call_id in self.calls:
            raise Conflict(f"callId {request.call_id!r} is already in use", field="callId")
        if request.to_stream is not None and any(
            call.streamName == request.to_stream and not call.status.is_final
            for call in self.calls.values()
        ):
            raise Conflict(f"stream {request.to_stream!r} is already in use", field="toStream")
        self.requests.append(request)
        info = CallInfo(
            callId=request.call_id,
            callee=request.callee,
            caller=request.sip_login,
            status=CallStatus.PENDING,
            streamName=request.to_stream,
            rtmpUrl=request.rtmp_url,
            rtmpStream=request.rtmp_stream,
            hasAudio=request.has_audio,
            hasVideo=request.has_video,
            appKey=request.app_key,
            visibleName=request.visible_name,
        )
        self.calls[request.call_id] = info
        return FakeCall(info)

    async def terminate_call(self, call_id: str) -> CallInfo:
        self._maybe_fail()
        info = self._get(call_id)
        if not info.status.is_final:  # an ended call answers its final state
            info.status = CallStatus.FINISH
            info.info = "Normal call clearing"
        return info

    def find_calls(
        self,
        *,
        call_id: str | None = None,
        callee: str | None = None,
        rtmp_url: str | None = None,
        status: CallStatus | None = None,
    ) -> list[CallInfo]:
        self._maybe_fail()
        self.find_filters.append(
            {"call_id": call_id, "callee": callee, "rtmp_url": rtmp_url, "status": status}
        )
        return [
            call
            for call in self.calls.values()
            if (call_id is None or call.callId == call_id)
            and (callee is None or call.callee == callee)
            and (rtmp_url is None or call.rtmpUrl == rtmp_url)
            and (status is None or call.status == status)
        ]

    def all_calls(self) -> list[CallInfo]:
        self._maybe_fail()
        return list(self.calls.values())

    async def hold_call(self, call_id: str) -> CallInfo:
        self._maybe_fail()
        info = self._get(call_id)
        if info.status != CallStatus.ESTABLISHED:
            raise Conflict(f"call {call_id!r} is {info.status.value}, not ESTABLISHED")
        info.status = CallStatus.HOLD
        return info

    async def unhold_call(self, call_id: str) -> CallInfo:
        self._maybe_fail()
        info = self._get(call_id)
        if info.status != CallStatus.HOLD:
            raise Conflict(f"call {call_id!r} is {info.status.value}, not HOLD")
        info.status = CallStatus.ESTABLISHED
        return info

    async def send_dtmf(self, call_id: str, digits: str, method: str) -> CallInfo:
        self._maybe_fail()
        info = self._get(call_id)
        if method == "RFC2833":
            raise NotSupported("DTMF by RFC2833 is not supported yet", field="type")
        self.dtmf_sent.append((call_id, digits, method))
        return info


class FakeStreams:
    """Structurally a ``StreamsAPI``; no media."""

    def __init__(self) -> None:
        self.streams: list[StreamInfo] = []
        self.find_filters: list[dict[str, object]] = []
        self.terminated: list[tuple[str | None, str | None]] = []
        self.fail_with: BaseException | None = None

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    def add_stream(
        self,
        name: str,
        status: StreamStatus = StreamStatus.PUBLISHING,
        *,
        media_session_id: str | None = None,
        call_id: str | None = None,
        tracks: list[TrackStats] | None = None,
    ) -> StreamInfo:
        """Put a stream straight into a state (tests set the scene with it)."""
        info = StreamInfo(
            media_session_id=media_session_id or f"msid-{len(self.streams) + 1}",
            name=name,
            status=status,
            call_id=call_id,
            published=status is StreamStatus.PUBLISHING,
            created_at=1_700_000_000_000,
            tracks=tracks or [],
            av_offset_ms=None,
            subscribers=0,
        )
        self.streams.append(info)
        return info

    def find_streams(
        self,
        *,
        name: str | None = None,
        status: StreamStatus | None = None,
        media_session_id: str | None = None,
    ) -> list[StreamInfo]:
        self._maybe_fail()
        self.find_filters.append(
            {"name": name, "status": status, "media_session_id": media_session_id}
        )
        return [
            info
            for info in self.streams
            if (name is None or info.name == name)
            and (status is None or info.status == status)
            and (media_session_id is None or info.media_session_id == media_session_id)
        ]

    def all_streams(self) -> list[StreamInfo]:
        self._maybe_fail()
        return list(self.streams)

    async def terminate_stream(
        self, *, name: str | None = None, media_session_id: str | None = None
    ) -> StreamInfo:
        self._maybe_fail()
        self.terminated.append((name, media_session_id))
        for info in reversed(self.streams):
            if (name is None or info.name == name) and (
                media_session_id is None or info.media_session_id == media_session_id
            ):
                if not info.status.is_final:
                    info.status = StreamStatus.STOPPED
                    info.published = False
                return info
        if media_session_id is not None:
            raise NotFound(
                f"no stream with mediaSessionId {media_session_id!r}", field="mediaSessionId"
            )
        raise NotFound(f"no stream named {name!r}", field="name")


class FakePushes:
    """Structurally a ``PushesAPI``; no RTMP. Streams named in ``streams`` exist.

    URLs are checked by the real :func:`~sipbridge.pushes.rtmp_target_url` (400s
    and the ``rtmp_`` rule are the manager's, and the REST layer must pass them on).
    """

    def __init__(self, streams: tuple[str, ...] = ("stream1",)) -> None:
        self.streams = set(streams)
        self.pushes: list[PushInfo] = []
        self.started: list[tuple[str, str, bool]] = []
        self.find_filters: list[dict[str, object]] = []
        self.fail_with: BaseException | None = None

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    def _get(self, media_session_id: str) -> PushInfo:
        for info in self.pushes:
            if info.media_session_id == media_session_id:
                return info
        raise NotFound(f"no push with mediaSessionId {media_session_id!r}", field="mediaSessionId")

    async def start_push(
        self, stream_name: str, rtmp_url: str, *, full_url: bool = False
    ) -> PushInfo:
        self._maybe_fail()
        target, name = rtmp_target_url(rtmp_url, stream_name, full_url=full_url)
        if stream_name not in self.streams:
            raise NotFound(f"no live stream named {stream_name!r}", field="streamName")
        if any(
            p.stream_name == stream_name and p.target_url == target and p.status != "STOPPED"
            for p in self.pushes
        ):
            raise Conflict(f"stream {stream_name!r} is already pushed there", field="rtmpUrl")
        self.started.append((stream_name, rtmp_url, full_url))
        info = PushInfo(
            media_session_id=f"push-{len(self.pushes) + 1}",
            stream_name=stream_name,
            stream_media_session_id=f"msid-{stream_name}",
            rtmp_url=rtmp_url,
            rtmp_transponder_full_url=full_url,
            target_url=target,
            published_name=name,
            status=PushStatus.PENDING,
            info=None,
            muted=False,
            call_id=None,
            created_at=1_700_000_000_000,
            connected_at=None,
            first_video_at=None,
            frames_sent=0,
            bytes_sent=0,
            reconnects=0,
            dropped=0,
        )
        self.pushes.append(info)
        return info

    def find_pushes(
        self, *, stream_name: str | None = None, rtmp_url: str | None = None
    ) -> list[PushInfo]:
        self._maybe_fail()
        self.find_filters.append({"stream_name": stream_name, "rtmp_url": rtmp_url})
        return [
            p
            for p in self.pushes
            if (stream_name is None or p.stream_name == stream_name)
            and (rtmp_url is None or rtmp_url in (p.rtmp_url, p.target_url))
        ]

    def all_pushes(self) -> list[PushInfo]:
        self._maybe_fail()
        return list(self.pushes)

    async def terminate_push(self, media_session_id: str) -> PushInfo:
        self._maybe_fail()
        info = self._get(media_session_id)
        if info.status not in (PushStatus.STOPPED, PushStatus.FAILED):
            info.status = PushStatus.STOPPED
        return info

    async def mute_push(self, media_session_id: str) -> PushInfo:
        return self._set_muted(media_session_id, True)

    async def unmute_push(self, media_session_id: str) -> PushInfo:
        return self._set_muted(media_session_id, False)

    def _set_muted(self, media_session_id: str, muted: bool) -> PushInfo:
        self._maybe_fail()
        info = self._get(media_session_id)
        if info.status in (PushStatus.STOPPED, PushStatus.FAILED):
            raise Conflict(f"push is {info.status.value}", field="mediaSessionId")
        info.muted = muted
        return info
