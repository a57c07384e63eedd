"""The asyncio shell around the sans-IO SIP core.

:class:`SipEndpoint` owns the :class:`~sipbridge.sip.transport.SipTransport`
and the :class:`~sipbridge.sip.ua.UserAgent`. It feeds the core every message
and transport error with the loop's time, sends what the core produced, and
keeps one ``loop.call_at`` timer armed at the core's next deadline (the
aioquic pattern). Code that acts on a sans-IO flow does it through
:meth:`SipEndpoint.act`, so the output is flushed and the timer re-armed.

The shell also counts what crosses it (:class:`SipCounters`, read by
``sipbridge.metrics``): every message in and out, and the outcome of every
client transaction, inferred from the wire so the sans-IO core stays free of
bookkeeping it does not need.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sipbridge.settings import SipSettings
from sipbridge.sip.address import SipParseError, Target
from sipbridge.sip.message import SipRequest, SipResponse
from sipbridge.sip.transaction import Timers
from sipbridge.sip.transport import SipTransport, TransportStats, client_tls_context
from sipbridge.sip.ua import LocalEndpoint, UserAgent

__all__ = [
    "ABANDONED",
    "KNOWN_METHODS",
    "TIMEOUT",
    "TRANSPORT_ERROR",
    "SipCounters",
    "SipEndpoint",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Methods counted under their own name (RFC 3261's, then those of RFC 6086, 3311,
#: 3262, 6665, 3515, 3428 and 3903); any other is counted as ``"other"``, so a peer
#: inventing methods cannot grow the metrics' label sets without bound.
KNOWN_METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER")) | frozenset(
    ("INFO", "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH")
)

#: How a client transaction ended, besides its final response's class ("2xx".."6xx").
TIMEOUT = "timeout"
TRANSPORT_ERROR = "transport_error"
ABANDONED = "abandoned"
#: The core's ``now`` for a request and the shell's ``now`` when it sends it differ
#: by microseconds; a timer fires no earlier than its deadline minus this.
_TIMER_SLACK = 0.01


def _method(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


@dataclass
class _Pending:
    method: str
    target: Target
    #: Timer B/F expiry (RFC 3261 §17.1.1.2, §17.1.2.2); an INVITE that got a
    #: provisional response has none (Timer B is cancelled in Proceeding).
    deadline: float | None
    started: float


@dataclass
class SipCounters:
    """SIP traffic of one endpoint as seen by the shell (plain counters, no I/O).

    Messages are counted as they cross the transport, retransmissions included:
    ``requests_sent`` / ``requests_received`` by method, ``responses_sent`` /
    ``responses_received`` by (CSeq method, status code). Methods outside
    :data:`KNOWN_METHODS` count as ``"other"``.

    Client transactions (RFC 3261 §17.1) are followed by their key (top Via
    branch, CSeq method, §17.1.3): a request sent with a new key (but ACK)
    starts one (``transactions_started`` by method); it completes
    (``transactions_completed`` by (method, outcome)) with the class of its
    first final response (``"2xx"``..``"6xx"``), with ``"transport_error"`` when
    the transport fails to reach its target (§17.1.4), or with ``"timeout"``
    when no final response came before Timer B/F (``timeout``, 64*T1) fired.
    An INVITE answered provisionally has no Timer B; if it is still pending
    ``proceeding_limit`` seconds after its start (its session gave up on it),
    it completes ``"abandoned"`` and is forgotten.
    """

    timeout: float
    proceeding_limit: float = 600.0
    requests_sent: Counter[str] = field(default_factory=Counter)
    requests_received: Counter[str] = field(default_factory=Counter)
    responses_sent: Counter[tuple[str, int]] = field(default_factory=Counter)
    responses_received: Counter[tuple[str, int]] = field(default_factory=Counter)
    transactions_started: Counter[str] = field(default_factory=Counter)
    transactions_completed: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: The transport's own counters (parse and send errors), once it exists.
    transport: TransportStats | None = None
    _pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)

    @property
    def pending_transactions(self) -> int:
        """Client transactions started and not completed yet."""
        return len(self._pending)

    def sent(self, message: SipRequest | SipResponse, target: Target, now: float) -> None:
        """``message`` was handed to the transport for ``target``."""
        try:
            method = message.cseq.method
        except SipParseError:
            method = message.method if isinstance(message, SipRequest) else "other"
        if isinstance(message, SipResponse):
            self.responses_sent[_method(method), message.status] += 1
            return
        self.requests_sent[_method(message.method)] += 1
        if message.method == "ACK":
            return  # never a transaction of its own (§17.1.1.3, §13.2.2.4)
        try:
            branch = message.top_via.branch
        except SipParseError:
            return
        key = (branch or "", method)
        if key in self._pending:
            return  # a retransmission (Timer A/E)
        self._pending[key] = _Pending(_method(method), target, now + self.timeout, now)
        self.transactions_started[_method(method)] += 1

    def received(self, message: SipRequest | SipResponse, now: float) -> None:
        """``message`` came from the transport (before the core sees it)."""
        if isinstance(message, SipRequest):
            self.requests_received[_method(message.method)] += 1
            return
        try:
            method = message.cseq.method
            key = (message.top_via.branch or "", method)
        except SipParseError:
            self.responses_received["other", message.status] += 1
            return
        self.responses_received[_method(method), message.status] += 1
        pending = self._pending.get(key)
        if pending is None:
            return
        if message.status >= 200:
            self._complete(key, f"{message.status // 100}xx")
        elif method == "INVITE":
            pending.deadline = None

    def transport_failed(self, target: Target) -> None:
        """The transport could not send to ``target``: its transactions end (§17.1.4)."""
        for key, pending in list(self._pending.items()):
            if pending.target == target:
                self._complete(key, TRANSPORT_ERROR)

    def expire(self, now: float) -> None:
        """Complete the transactions whose Timer B/F has fired by ``now``."""
        for key, pending in list(self._pending.items()):
            if pending.deadline is not None and now >= pending.deadline - _TIMER_SLACK:
                self._complete(key, TIMEOUT)
            elif pending.deadline is None and now >= pending.started + self.proceeding_limit:
                self._complete(key, ABANDONED)

    def _complete(self, key: tuple[str, str], outcome: str) -> None:
        pending = self._pending.pop(key)
        self.transactions_completed[pending.method, outcome] += 1


class SipEndpoint:
    """One SIP listening address, its transport and its user agent core."""

    def __init__(self, settings: SipSettings, *, on_activity: Callable[[], None]) -> None:
        self.settings = settings
        self._on_activity = on_activity
        self._transport = SipTransport(
            settings.host,
            settings.port,
            on_message=self._on_message,
            on_error=self._on_error,
            max_message_size=settings.max_message_size,
            tls_context=client_tls_context(
                verify=settings.tls_verify,
                ca_file=settings.tls_ca_file,
                cert_file=settings.tls_cert_file,
                key_file=settings.tls_key_file,
                min_version=settings.tls_min_version,
            ),
        )
        self._timers = Timers(t1=settings.t1, t2=settings.t2, t4=settings.t4)
        #: What crossed this endpoint (read by ``sipbridge.metrics``).
        self.counters = SipCounters(timeout=self._timers.b, transport=self._transport.stats)
        self.ua: UserAgent | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._transport.start()
        port = self._transport.local_port
        local = LocalEndpoint(
            host=self.settings.host,
            port=port,
            public_host=self.settings.public_address,
            public_port=self.settings.public_port,
            user_agent=self.settings.user_agent,
        )
        self.ua = UserAgent(local, timers=self._timers)
        log.info("SIP listening on %s:%d (udp, tcp; tls outbound)", self.settings.host, port)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._transport.stop()

    @property
    def local_port(self) -> int:
        return self._transport.local_port

    def set_tls_server_name(self, host: str, port: int, name: str) -> None:
        """The name a TLS peer's certificate must match (RFC 3261 §26.3.1), and its SNI."""
        self._transport.set_tls_server_name(host, port, name)

    def set_trace(self, enabled: bool) -> None:
        self._transport.set_trace(enabled)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def act(self, action: Callable[[float], T]) -> T:
        """Run ``action(now)`` on the core, then send its output and re-arm the timer."""
        try:
            return action(self.now())
        finally:
            self._flush()

    # -- transport callbacks ---------------------------------------------------
    def _on_message(self, message: SipRequest | SipResponse, source: Target) -> None:
        if self.ua is None:
            return
        now = self.now()
        self.counters.received(message, now)
        self.ua.receive(message, source, now)
        self._flush()

    def _on_error(self, target: Target, reason: str) -> None:
        if self.ua is None:
            return
        self.counters.transport_failed(target)
        self.ua.transport_error(target, reason, self.now())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        if self.ua is None:
            return
        self.ua.handle_timer(self.now())
        self._flush()

    def _flush(self) -> None:
        if self.ua is None or self._loop is None:
            return
        now = self._loop.time()
        for message, target in self.ua.messages_to_send():
            self.counters.sent(message, target, now)
            self._transport.send(message, target)
        try:
            self._on_activity()
        except Exception:
            log.exception("error while dispatching SIP events")
        for message, target in self.ua.messages_to_send():
            self.counters.sent(message, target, now)
            self._transport.send(message, target)
        self.counters.expire(now)
        deadline = self.ua.get_timer()
        if self._timer is not None:
            if deadline is not None and abs(self._timer_deadline - deadline) < 1e-6:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            # uvloop returns a plain Handle (no .when()) for a deadline already past.
            self._timer_deadline = deadline
            self._timer = self._loop.call_at(max(deadline, self._loop.time()), self._on_timer)
