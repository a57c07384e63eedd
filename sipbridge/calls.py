"""A call as the gateway keeps it: one SIP dialog, its RTP ports, its stream name.

:class:`Call` holds what is reported about a call (:class:`CallInfo`) and lets
asyncio code wait for its state changes (``await call.established()``,
``await call.ended()``) or read them as typed events (``async for event in
call.events()``); the SIP work is done by the sans-IO
:class:`~sipbridge.sip.invite.OutboundCall` and, when the request asks for it,
a :class:`~sipbridge.sip.registration.Registration`.

Every status change is published on the gateway's
:class:`~sipbridge.events.EventBus` as a :class:`~sipbridge.events.CallStatusEvent`
the moment it is recorded, synchronously: the bus never blocks, so neither a
slow library consumer nor a dead hook backend can delay the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sipbridge.call_media import CallMediaLink
from sipbridge.callinfo import CallInfo, CallRequest, CallStatus
from sipbridge.events import (
    CallStatusEvent,
    Event,
    EventBus,
    EventSubscription,
    StreamStatusEvent,
    call_status_event,
    stream_status_event,
)
from sipbridge.ports import PortPair
from sipbridge.registry import Stream
from sipbridge.sip.invite import DtmfReceived, MediaUpdated, OutboundCall, StatusChanged
from sipbridge.sip.offer_answer import NegotiatedSession
from sipbridge.sip.registration import Registration, RegistrationState

__all__ = ["Call", "CallNotEstablished", "StatusRecord"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusRecord:
    """One entry of a call's status history."""

    status: CallStatus
    sip_status: int | None
    info: str | None
    at: float


class CallNotEstablished(Exception):
    """The call ended (BUSY, FAILED, FINISH) before it was ever ESTABLISHED.

    ``info`` is the call as it ended: ``status``, ``sipStatus`` (the callee's final
    code, e.g. 486) and ``info`` (the WCS reason text, e.g. ``Failed by request timeout``).
    """

    def __init__(self, info: CallInfo) -> None:
        self.info = info
        code = f" {info.sipStatus}" if info.sipStatus is not None else ""
        reason = f" ({info.info})" if info.info else ""
        super().__init__(
            f"call {info.callId!r} to {info.callee!r} ended {info.status.value}{code}{reason} "
            "before it was established"
        )


class Call:
    """One outbound call placed by the gateway.

    ``bus``: where status changes are published (the gateway's); without one the
    call still works but :meth:`events` is unavailable.
    """

    def __init__(
        self,
        request: CallRequest,
        *,
        caller: str,
        stream_name: str | None,
        bus: EventBus | None = None,
    ) -> None:
        self.request = request
        self.call_id = request.call_id
        self.caller = caller
        self.stream_name = stream_name
        # Where the call's stream is pushed ("SIP as RTMP"): rtmpUrl, or the RTMP URL
        # found in toStream/rtmpStream; reported as the call's rtmpUrl.
        self.rtmp_url: str | None = request.rtmp_url
        self.status = CallStatus.NEW
        self.sip_status: int | None = None
        self.info: str | None = None
        self.flow: OutboundCall | None = None
        self.registration: Registration | None = None
        self.ports: dict[str, PortPair] = {}
        self.negotiated: NegotiatedSession | None = None
        self.stream: Stream | None = None
        self.media: CallMediaLink | None = None
        self.media_changed = False
        self.dtmf_received: list[str] = []
        self.history: list[StatusRecord] = [StatusRecord(self.status, None, None, time.time())]
        self.task: asyncio.Task[None] | None = None
        self.ended_at: float | None = None
        self._changed = asyncio.Event()
        self.registration_settled = asyncio.Event()
        self._bus = bus

    # -- reporting -------------------------------------------------------------
    def snapshot(self) -> CallInfo:
        """The call as ``/call/find`` reports it (WCS field names, no password)."""
        req = self.request
        return CallInfo(
            callId=self.call_id,
            callee=req.callee,
            caller=self.caller,
            status=self.status,
            sipStatus=self.sip_status,
            info=self.info,
            streamName=self.stream_name,
            rtmpUrl=self.rtmp_url,
            rtmpStream=req.rtmp_stream,
            hasAudio=req.has_audio,
            hasVideo=req.has_video,
            appKey=req.app_key,
            visibleName=req.visible_name,
            incoming=False,
        )

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    # -- state changes -----------------------------------------------------------
    def set_status(
        self, status: CallStatus, sip_status: int | None = None, info: str | None = None
    ) -> None:
        """Record a new status (a final status is never left)."""
        if self.status.is_final:
            return
        if sip_status is not None:
            self.sip_status = sip_status
        if status is self.status and info == self.info:
            return
        self.status = status
        self.info = info
        self.history.append(StatusRecord(status, self.sip_status, info, time.time()))
        if status.is_final:
            self.ended_at = time.monotonic()
        log.info(
            "call %s: %s%s%s",
            self.call_id,
            status.value,
            f" {self.sip_status}" if self.sip_status is not None else "",
            f" ({info})" if info else "",
            extra={"callId": self.call_id, "status": status.value},
        )
        self._changed.set()
        self._changed = asyncio.Event()
        if self._bus is not None:
            self._bus.publish(self.status_event())

    def drain(self) -> None:
        """Take the events of the SIP flows into this call's state."""
        registration = self.registration
        if registration is not None:
            while (reg_event := registration.next_event()) is not None:
                if reg_event.state in (
                    RegistrationState.REGISTERED,
                    RegistrationState.FAILED,
                    RegistrationState.UNREGISTERED,
                ):
                    self.registration_settled.set()
        flow = self.flow
        if flow is None:
            return
        while (event := flow.next_event()) is not None:
            if isinstance(event, StatusChanged):
                self.set_status(event.status, event.sip_status, event.info)
            elif isinstance(event, MediaUpdated):
                self.negotiated = event.negotiated
                self.media_changed = True
            elif isinstance(event, DtmfReceived):
                self.dtmf_received.append(event.digit)

    async def wait_for(
        self, statuses: Iterable[CallStatus], timeout: float | None = None
    ) -> CallStatus:
        """Wait until the call is in one of ``statuses`` (or final); return its status."""
        wanted = set(statuses)

        async def waiter() -> CallStatus:
            while self.status not in wanted and not self.status.is_final:
                await self._changed.wait()
            return self.status

        return await asyncio.wait_for(waiter(), timeout)

    @property
    def was_established(self) -> bool:
        """True once the call has been ESTABLISHED (it may have ended since)."""
        return any(r.status is CallStatus.ESTABLISHED for r in self.history)

    async def established(self, timeout: float | None = None) -> CallInfo:
        """Wait for the answer (RFC 3261 §13.2.2.4: a 2xx, then ACK); return the call.

        Raises :class:`CallNotEstablished` when the call ends first (busy, rejected,
        timed out, hung up), :class:`TimeoutError` after ``timeout`` seconds.
        """
        await self.wait_for({CallStatus.ESTABLISHED, CallStatus.HOLD}, timeout)
        if not self.was_established:
            raise CallNotEstablished(self.snapshot())
        return self.snapshot()

    async def ended(self, timeout: float | None = None) -> CallStatus:
        """Wait until the call has ended; return its final status."""
        return await self.wait_for(set(), timeout)

    # -- events ----------------------------------------------------------------------
    def status_event(self) -> CallStatusEvent:
        """The call's current status as a :class:`CallStatusEvent`."""
        node_id = self._bus.node_id if self._bus is not None else ""
        return call_status_event(self.snapshot(), node_id=node_id)

    def events(self, *, max_queue: int | None = None) -> EventSubscription:
        """This call's events: its current status first, then every change of the call
        and of its stream, ending after both the call and its stream have ended.

        ``async for event in call.events(): ...``; close it (or use ``async with``)
        to stop early. Raises :class:`RuntimeError` for a call without a bus.
        """
        bus = self._bus
        if bus is None:
            raise RuntimeError(f"call {self.call_id!r} has no event bus (not placed by a Gateway)")
        stream = self.stream
        initial: list[Event] = [self.status_event()]
        if stream is not None:
            initial.append(
                stream_status_event(stream, node_id=bus.node_id, app_key=self.request.app_key)
            )
        seen = {"call": False, "stream": stream is None}

        def finished(event: Event) -> bool:
            if isinstance(event, CallStatusEvent) and event.status.is_final:
                seen["call"] = True
            elif (
                isinstance(event, StreamStatusEvent)
                and stream is not None
                and event.mediaSessionId == stream.media_session_id
                and event.status.is_final
            ):
                seen["stream"] = True
            return seen["call"] and seen["stream"]

        return bus.subscribe(
            max_queue=max_queue, call_id=self.call_id, stop_when=finished, initial=initial
        )
