"""The gateway: the one object the REST API, the CLI and library users drive.

``async with Gateway(settings) as gw:`` starts the SIP endpoint; ``start_call``
places an outbound call and answers at once while the call proceeds in its
own task: resolve the SIP server, reserve RTP ports, REGISTER when asked, then
INVITE. ``find_calls``/``all_calls`` report calls with the WCS vocabulary;
finished calls stay visible for ``finished_call_retention`` seconds.
``gateway.pushes`` (a :class:`~sipbridge.pushes.PushManager`) pushes streams to
RTMP servers: a call started with ``rtmpUrl`` ("SIP as RTMP") is pushed from its
start until it ends. ``gateway.webrtc`` (a :class:`~webrtc.whep.WhepSessions`)
plays streams to WebRTC viewers (WHEP); ``stop()`` closes every viewer.
``gateway.recordings`` (a :class:`~sipbridge.recording.RecordingManager`)
records streams to files: on request (``/stream/startRecording``) or, with
``[record] auto = true``, every call's stream from the moment it is reserved.

Library use: ``call = gw.place_call(call_id=..., callee=..., ...)`` takes the
fields of ``/call/startup`` (as :class:`~sipbridge.callinfo.CallRequest` names
them) and returns the live :class:`~sipbridge.calls.Call` (``await
call.established()``, ``call.events()``); ``gw.events()`` iterates every typed
event (:mod:`sipbridge.events`): a ``CallStatusEvent`` per call status change,
a ``StreamStatusEvent`` per stream status change. ``gateway.hooks`` (a
:class:`~sipbridge.hooks.HookSender`) POSTs those events to the backend of the
call's appKey (``[hooks]``); the REST layer's ``/events`` feed relays them too.
See docs/library.md.

Stream status changes are heard, not looked for: the gateway listens to its
registry (:meth:`~sipbridge.registry.StreamRegistry.add_status_listener`) from
``start()`` to ``stop()`` and publishes each ``StreamStatusEvent`` synchronously
where the change happens (reservation, ``PUBLISHING`` on the first frame in the
media path, the call's end, ``/stream/terminate``). One exception keeps the
order: a call's stream is reserved before its call exists, so ``place_call``
announces that ``PENDING`` itself, after the call's ``NEW`` and with its appKey.

``stop()`` (SIGTERM) finishes in this order: every recording first (its files
get their trailer and final name while the streams still flow), then every
call is hung up (its stream ends, its pushes stop), then the WebRTC viewers,
the remaining pushes and the SIP endpoint; then the event bus is closed (every
``events()`` iterator ends) and the hooks get ``hooks_drain_timeout`` seconds to
deliver what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rtp.dtmf import DIGITS as DTMF_DIGITS
from sipbridge.call_media import CallMediaLink, expects_media
from sipbridge.callinfo import CallInfo, CallRequest, CallStatus
from sipbridge.calls import Call
from sipbridge.errors import Conflict, InvalidRequest, NotFound, NotSupported
from sipbridge.events import EventBus, EventSubscription, stream_status_event
from sipbridge.hooks import HookSender
from sipbridge.logs import SIP_TRACE_LOGGER, register_secret
from sipbridge.ports import PortRangeExhausted, RtpPortAllocator
from sipbridge.pushes import PushManager, call_push_target, is_rtmp_url, rtmp_target_url
from sipbridge.recording import RecordingManager
from sipbridge.registry import Stream, StreamRegistry, StreamStatus
from sipbridge.settings import Settings, parse_outbound_proxy
from sipbridge.signaling import SipCounters, SipEndpoint
from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import SipParseError, Target, format_host
from sipbridge.sip.invite import CallTimers, OutboundCall, callee_uri
from sipbridge.sip.offer_answer import MediaOfferConfig
from sipbridge.sip.registration import Registration, RegistrationState
from sipbridge.sip.ua import UserAgent
from webrtc.whep import WhepSessions

__all__ = ["Gateway"]


log = logging.getLogger(__name__)


class Gateway:
    """SIP calls in, named live streams out (see ARCHITECTURE.md)."""

    #: How long a finished call stays visible to ``find``.
    finished_call_retention = 300.0
    #: How long to wait for a REGISTER (and the un-REGISTER at the end).
    register_timeout = 32.0
    #: How long ``stop()`` lets the hooks deliver the last events (s).
    hooks_drain_timeout = 2.0

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._calls: dict[str, Call] = {}
        self.streams = StreamRegistry(keyframe_interval=self.settings.rtp.keyframe_interval)
        self.pushes = PushManager(self.streams, self.settings.rtmp)
        self.webrtc = WhepSessions(self.streams, self.settings.webrtc.to_config())
        self.recordings = RecordingManager(self.streams, self.settings.record)
        self._endpoint = SipEndpoint(self.settings.sip, on_activity=self._dispatch)
        rtp = self.settings.rtp
        self._ports = RtpPortAllocator(self._media_bind_host(), rtp.port_min, rtp.port_max)
        self._started = False
        self._background: set[asyncio.Future[CallInfo]] = set()
        hooks = self.settings.hooks
        #: Every typed event (:mod:`sipbridge.events`); ``events()`` subscribes to it.
        self.event_bus = EventBus(node_id=hooks.node_id or socket.gethostname())
        self.hooks = HookSender(self.event_bus, hooks)
        # Last status published per live stream (media session id): no repeats.
        self._stream_seen: dict[str, StreamStatus] = {}
        self._stop_stream_listener: Callable[[], None] | None = None
        self._sip_trace = self.settings.log.sip_trace

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        await self._endpoint.start()
        self._endpoint.set_trace(self._sip_trace)
        self.event_bus.open()
        await self.hooks.start()
        self._stop_stream_listener = self.streams.add_status_listener(self._on_stream_status)
        self._started = True

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Finish every recording, then hang up every call (BYE/CANCEL) and wait for them up
        to ``timeout``, close the viewers, pushes and sockets (module doc: the order)."""
        if not self._started:
            return
        # Recordings first: their files are finished (trailer, final name, hooks) while
        # the calls still publish; a stream ending under a recorder would leave the
        # worker thread finishing the file on its own, which nobody waits for at exit.
        await self.recordings.close()
        active = [c for c in self._calls.values() if not c.is_final]
        for call in active:
            with contextlib.suppress(Exception):
                await self.terminate_call(call.call_id)
        if active:
            await asyncio.wait([asyncio.ensure_future(c.ended()) for c in active], timeout=timeout)
        tasks = [c.task for c in self._calls.values() if c.task is not None and not c.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self.webrtc.close()
        await self.pushes.stop_all()
        await self._endpoint.stop()
        if self._stop_stream_listener is not None:
            self._stop_stream_listener()
            self._stop_stream_listener = None
        self._stream_seen.clear()
        self.event_bus.close()
        await self.hooks.stop(drain_timeout=self.hooks_drain_timeout)
        self._started = False

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def sip_trace(self) -> bool:
        """Whether every SIP message is logged (``[log] sip_trace``, switchable at runtime)."""
        return self._sip_trace

    def set_sip_trace(self, enabled: bool) -> None:
        """Switch SIP message tracing on or off while running (passwords stay masked)."""
        self._sip_trace = enabled
        logging.getLogger(SIP_TRACE_LOGGER).setLevel(
            logging.DEBUG if enabled else logging.CRITICAL + 1
        )
        if self._started:
            self._endpoint.set_trace(enabled)
        log.info("SIP message trace %s", "on" if enabled else "off")

    @property
    def sip_port(self) -> int:
        return self._endpoint.local_port

    @property
    def sip_counters(self) -> SipCounters:
        """What crossed the SIP endpoint: messages and client transactions (for metrics)."""
        return self._endpoint.counters

    # -- events -----------------------------------------------------------------------
    def events(
        self, *, max_queue: int | None = None, call_id: str | None = None
    ) -> EventSubscription:
        """Every event from now on (only ``call_id``'s when given): ``async for event in
        gw.events()``. Ends when the gateway stops; ``close()`` it to stop earlier.

        Its queue holds ``max_queue`` events (default 1000); a reader that falls
        further behind loses the oldest (``dropped`` counts them), never slows a call.
        """
        return self.event_bus.subscribe(max_queue=max_queue, call_id=call_id)

    # -- calls -----------------------------------------------------------------------
    async def start_call(self, request: CallRequest | None = None, /, **fields: Any) -> Call:
        """Place an outbound call (``/call/startup``); returns the live :class:`Call` at
        once while the call proceeds: ``await call.established()`` waits for the answer.

        Takes a :class:`CallRequest` or its fields as keywords, as :meth:`place_call`.
        """
        return self.place_call(request, **fields)

    def place_call(self, request: CallRequest | None = None, /, **fields: Any) -> Call:
        """:meth:`start_call` without the ``await``: returns the live :class:`Call`.

        Give a :class:`CallRequest`, or its fields as keywords (those of
        ``/call/startup`` in snake case: ``callee="bob", sip_domain=...``); a missing
        ``call_id`` gets a random UUID. Raises as :meth:`start_call` does.
        """
        if request is None:
            fields.setdefault("call_id", str(uuid.uuid4()))
            try:
                request = CallRequest(**fields)
            except TypeError as exc:
                raise InvalidRequest(f"bad call field: {exc}") from None
        elif fields:
            raise InvalidRequest("give a CallRequest or keyword fields, not both")
        if not self._started:
            raise NotSupported("the gateway is not started")
        self._forget_old_calls()
        self._validate(request)
        existing = self._calls.get(request.call_id)
        if existing is not None and not existing.is_final:
            raise Conflict(f"callId {request.call_id!r} is in use", field="callId")
        limit = self.settings.sip.max_calls
        active = sum(1 for call in self._calls.values() if not call.is_final)
        if active >= limit:
            raise Conflict(f"too many calls: {active} active, [sip] max_calls is {limit}")
        push_target = call_push_target(request)
        if push_target is not None:
            # A bad URL is the caller's 400 before anything is reserved.
            rtmp_target_url(push_target.rtmp_url, request.call_id, field=push_target.field)
        # "SIP as RTMP" with the RTMP URL in toStream: the local stream takes the callId.
        to_stream = None if is_rtmp_url(request.to_stream) else request.to_stream
        stream_name = to_stream or request.call_id
        try:
            stream = self.streams.reserve(
                stream_name, call_id=request.call_id, on_terminate=self._on_stream_terminated
            )
        except Conflict as exc:
            raise Conflict(exc.message, field="toStream") from None
        if push_target is not None:
            try:
                push = self.pushes.start(
                    stream,
                    push_target.rtmp_url,
                    published_name=push_target.published_name,
                    call_id=request.call_id,
                    field=push_target.field,
                )
            except Exception:
                self.streams.remove(stream_name)
                raise
            log.info("call %s: pushed to RTMP as push %s", request.call_id, push.media_session_id)
        if request.sip_password:
            register_secret(request.sip_password)
        domain = request.sip_domain or self.settings.sip.default_domain
        call = Call(
            request,
            caller=f"{request.sip_login}@{domain}",
            stream_name=stream_name,
            bus=self.event_bus,
        )
        call.stream = stream
        if push_target is not None:
            call.rtmp_url = push_target.rtmp_url
        self._calls[request.call_id] = call
        call.task = asyncio.create_task(self._run_call(call), name=f"call-{request.call_id}")
        self.event_bus.publish(call.status_event())  # NEW: the call exists
        self._publish_stream_status(stream, stream.status, call)  # then its stream's PENDING
        # [record] auto: recorded from the reservation, so the first keyframe is in the file.
        self.recordings.stream_published(stream)
        return call

    async def terminate_call(self, call_id: str) -> CallInfo:
        """Hang up (``/call/terminate``); a finished call is reported as it is."""
        call = self._get(call_id)
        if call.is_final:
            return call.snapshot()
        if call.flow is not None and not call.flow.ended:
            flow = call.flow
            self._endpoint.act(flow.terminate)
        else:
            call.set_status(CallStatus.FINISH, None, "Normal call clearing")
            if call.task is not None:
                call.task.cancel()
        return call.snapshot()

    def find_calls(
        self,
        *,
        call_id: str | None = None,
        callee: str | None = None,
        rtmp_url: str | None = None,
        status: CallStatus | None = None,
    ) -> list[CallInfo]:
        """Calls matching every given filter (``/call/find``)."""
        self._forget_old_calls()
        found = []
        for call in self._calls.values():
            info = call.snapshot()
            if call_id is not None and info.callId != call_id:
                continue
            if callee is not None and info.callee != callee:
                continue
            if rtmp_url is not None and info.rtmpUrl != rtmp_url:
                continue
            if status is not None and info.status is not status:
                continue
            found.append(info)
        return found

    def all_calls(self) -> list[CallInfo]:
        self._forget_old_calls()
        return [c.snapshot() for c in self._calls.values()]

    def get_call(self, call_id: str) -> Call:
        """The live :class:`Call` (library use); raises :class:`NotFound`."""
        return self._get(call_id)

    async def hold_call(self, call_id: str) -> CallInfo:
        call = self._get(call_id)
        if call.status is not CallStatus.ESTABLISHED or call.flow is None:
            raise Conflict(f"call is {call.status.value}, not ESTABLISHED", field="callId")
        flow = call.flow
        self._endpoint.act(flow.hold)
        return call.snapshot()

    async def unhold_call(self, call_id: str) -> CallInfo:
        call = self._get(call_id)
        if call.status is not CallStatus.HOLD or call.flow is None:
            raise Conflict(f"call is {call.status.value}, not HOLD", field="callId")
        flow = call.flow
        self._endpoint.act(flow.unhold)
        return call.snapshot()

    async def send_dtmf(self, call_id: str, digits: str, method: str) -> CallInfo:
        call = self._get(call_id)
        if not digits or any(d not in DTMF_DIGITS for d in digits.upper()):
            raise InvalidRequest(f"dtmf must be digits 0-9 * # A-D, got {digits!r}", field="dtmf")
        if method.upper() not in ("INFO", "RFC2833"):
            raise InvalidRequest(f"type must be INFO or RFC2833, got {method!r}", field="type")
        if call.status not in (CallStatus.ESTABLISHED, CallStatus.HOLD) or call.flow is None:
            raise Conflict(f"call is {call.status.value}, not ESTABLISHED", field="callId")
        if method.upper() == "RFC2833":
            if call.media is None or not call.media.send_dtmf(digits.upper()):
                raise Conflict(
                    "the callee did not accept telephone-event (RFC 4733): use type INFO",
                    field="type",
                )
            return call.snapshot()
        flow = call.flow
        self._endpoint.act(lambda now: flow.send_dtmf_info(digits.upper(), now))
        return call.snapshot()

    # -- internals ---------------------------------------------------------------------
    def _get(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise NotFound(f"no call with callId {call_id!r}", field="callId")
        return call

    def _validate(self, request: CallRequest) -> None:
        if not request.call_id:
            raise InvalidRequest("callId must not be empty", field="callId")
        if not request.callee.strip():
            raise InvalidRequest("callee must not be empty", field="callee")
        if not (request.sip_domain or self.settings.sip.default_domain):
            raise InvalidRequest("sipDomain is required (no default_domain set)", field="sipDomain")
        if not request.has_audio and not request.has_video:
            raise InvalidRequest("hasAudio and hasVideo are both false", field="hasAudio")
        if request.sip_transport and request.sip_transport.lower() not in ("udp", "tcp", "tls"):
            raise InvalidRequest("sipTransport must be UDP, TCP or TLS", field="sipTransport")
        try:
            callee_uri(request.callee, request.sip_domain or "invalid")
        except SipParseError as exc:
            raise InvalidRequest(
                f"callee is not a valid SIP address: {exc}", field="callee"
            ) from None

    def _on_stream_terminated(self, stream: Stream) -> None:
        """``/stream/terminate`` of a call's stream hangs the call up (its STOPPED is out)."""
        call = self._calls.get(stream.call_id or "")
        if call is not None and not call.is_final:
            task = asyncio.ensure_future(self.terminate_call(call.call_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _dispatch(self) -> None:
        for call in self._calls.values():
            call.drain()
            if call.media_changed and call.media is not None and call.negotiated is not None:
                call.media_changed = False
                call.media.update(call.negotiated)

    async def _start_media(self, call: Call, flow: OutboundCall) -> None:
        """Receive the callee's RTP on the call's sockets and publish it (issue 3)."""
        if call.negotiated is None:
            return
        endpoint = self._endpoint

        def fail_by_inactivity(idle: float) -> None:
            log.info("call %s: no RTP for %.1f s", call.call_id, idle)
            endpoint.act(
                lambda now: flow.terminate(
                    now, status=CallStatus.FAILED, info="Failed by RTP activity"
                )
            )

        link = CallMediaLink(
            call_id=call.call_id,
            negotiated=call.negotiated,
            ports=call.ports,
            stream=call.stream,
            settings=self.settings.rtp,
            now=asyncio.get_running_loop().time(),
            on_inactive=fail_by_inactivity,
            on_keyframe_request=lambda: endpoint.act(flow.request_picture_fast_update),
            on_dtmf=call.dtmf_received.append,
        )
        call.media = link
        call.media_changed = False
        await link.start()
        link.set_expect_media(expects_media(call.negotiated))

    def _on_stream_status(self, stream: Stream, status: StreamStatus) -> None:
        """The registry's listener: a ``StreamStatusEvent`` per change, as it happens.

        Runs inside ``Stream.publish`` for ``PUBLISHING``: no I/O, the bus only queues.
        """
        call = self._calls.get(stream.call_id or "")
        if stream.on_terminate == self._on_stream_terminated and (
            call is None or call.stream is not stream
        ):
            # Reserved by place_call, whose call is not placed yet: it announces the
            # PENDING after the call's NEW; a stream dropped before that was never seen.
            return
        self._publish_stream_status(stream, status, call)

    def _publish_stream_status(
        self, stream: Stream, status: StreamStatus, call: Call | None
    ) -> None:
        """Publish ``stream``'s ``status`` once (``info`` of the call when FAILED)."""
        key = stream.media_session_id
        if self._stream_seen.get(key) is status:
            return
        if status.is_final:
            self._stream_seen.pop(key, None)  # nothing follows a final status
        else:
            self._stream_seen[key] = status
        failed = status is StreamStatus.FAILED
        self.event_bus.publish(
            stream_status_event(
                stream,
                node_id=self.event_bus.node_id,
                app_key=call.request.app_key if call is not None else None,
                status=status,
                info=call.info if call is not None and failed else None,
            )
        )

    def _forget_old_calls(self) -> None:
        cutoff = time.monotonic() - self.finished_call_retention
        for call_id in [
            cid
            for cid, c in self._calls.items()
            if c.ended_at is not None and c.ended_at < cutoff and (c.task is None or c.task.done())
        ]:
            del self._calls[call_id]

    def _media_bind_host(self) -> str:
        return self.settings.sip.host

    async def _resolve(self, host: str, port: int, transport: str) -> Target:
        try:
            ipaddress.ip_address(host.strip("[]"))
            return Target(transport, host.strip("[]"), port)
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        infos = await loop.getaddrinfo(host, port, type=kind)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        address = infos[0][4][0]
        if transport == "tls":  # the certificate must match the name (RFC 3261 §26.3.1)
            self._endpoint.set_tls_server_name(str(address), port, host)
        return Target(transport, str(address), port)

    async def _account_for(self, request: CallRequest) -> SipAccount:
        sip = self.settings.sip
        domain = request.sip_domain or sip.default_domain
        proxy_text = request.sip_outbound_proxy or sip.outbound_proxy
        proxy_host, proxy_port, proxy_transport = domain, None, None
        if proxy_text:
            proxy = parse_outbound_proxy(proxy_text)
            proxy_host, proxy_port, proxy_transport = proxy.host, proxy.port, proxy.transport
        port = proxy_port or request.sip_port or sip.default_port
        transport = (request.sip_transport or proxy_transport or sip.transport).lower()
        target = await self._resolve(proxy_host, port, transport)
        domain_port = request.sip_port or sip.default_port
        same_hop = proxy_host.lower() == domain.lower() and port == domain_port
        proxy_uri = None
        if not same_hop:
            param = "" if transport == "udp" else f";transport={transport}"
            proxy_uri = f"sip:{format_host(proxy_host)}:{port};lr{param}"
        return SipAccount(
            login=request.sip_login or "sipbridge",
            domain=domain,
            proxy=target,
            password=request.sip_password,
            auth_name=request.sip_authentication_name,
            display_name=request.visible_name,
            domain_port=domain_port,
            proxy_uri=proxy_uri,
        )

    async def _run_call(self, call: Call) -> None:
        request = call.request
        registration: Registration | None = None
        try:
            try:
                account = await self._account_for(request)
            except (OSError, ValueError) as exc:
                call.set_status(CallStatus.FAILED, None, f"Failed by error: {exc}")
                return
            call.set_status(CallStatus.PENDING)
            if request.sip_register_required:
                registration = Registration(
                    self._ua(), account, expires=self.settings.sip.register_expires
                )
                call.registration = registration
                reg = registration
                self._endpoint.act(reg.start)
                # Still REGISTERING after the wait: reported as a timeout just below.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.registration_settled.wait(), self.register_timeout)
                if registration.state is not RegistrationState.REGISTERED:
                    # WCS keeps the prefix; the reason says why (never a credential:
                    # a status line, "timeout" or the transport's error).
                    reason = registration.failure_reason or "timeout"
                    call.set_status(
                        CallStatus.FAILED,
                        registration.failure_status,
                        f"Failed by registration error: {reason}",
                    )
                    return
            try:
                if request.has_audio:
                    call.ports["audio"] = self._ports.allocate()
                if request.has_video:
                    call.ports["video"] = self._ports.allocate()
            except PortRangeExhausted as exc:
                call.set_status(CallStatus.FAILED, None, f"Failed by error: {exc}")
                return
            flow = OutboundCall(
                self._ua(),
                account,
                callee_uri(request.callee, account.domain, account.domain_port),
                self._offer_config(call),
                timers=CallTimers(
                    invite_timeout=self.settings.sip.invite_timeout,
                    session_expires=self.settings.sip.session_expires,
                    min_se=self.settings.sip.min_se,
                ),
            )
            call.flow = flow
            self._endpoint.act(flow.start)
            status = await call.wait_for({CallStatus.ESTABLISHED, CallStatus.HOLD})
            if not status.is_final:
                await self._start_media(call, flow)
            await call.ended()
        except TimeoutError:
            call.set_status(CallStatus.FAILED, None, "Failed by registration timeout")
        except asyncio.CancelledError:
            call.set_status(CallStatus.FINISH, None, "Normal call clearing")
            raise
        except Exception:
            log.exception("call %s failed", call.call_id)
            call.set_status(CallStatus.FAILED, None, "Failed by error")
        finally:
            if call.media is not None:
                await call.media.stop()
            if call.stream is not None:
                # Its UNPUBLISHED / FAILED event goes out from the registry's listener.
                call.stream.end(
                    StreamStatus.FAILED
                    if call.status is CallStatus.FAILED
                    else StreamStatus.UNPUBLISHED
                )
                # The call's pushes end with it ("SIP as RTMP" and /push/* alike).
                await self.pushes.stop_stream(call.stream)
            for pair in call.ports.values():
                self._ports.release(pair)
            call.ports.clear()
            if registration is not None and registration.state is RegistrationState.REGISTERED:
                await self._unregister(call, registration)

    async def _unregister(self, call: Call, registration: Registration) -> None:
        call.registration_settled.clear()
        self._endpoint.act(registration.unregister)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.registration_settled.wait(), self.register_timeout)

    def _ua(self) -> UserAgent:
        ua = self._endpoint.ua
        assert ua is not None, "gateway not started"
        return ua

    def _offer_config(self, call: Call) -> MediaOfferConfig:
        sip = self.settings.sip
        audio = call.ports.get("audio")
        video = call.ports.get("video")
        return MediaOfferConfig(
            address=sip.public_address or sip.host,
            audio_port=audio.rtp_port if audio else None,
            video_port=video.rtp_port if video else None,
            session_id=secrets.randbelow(2**31),
            session_version=1,
            srtp=sip.srtp,
        )
