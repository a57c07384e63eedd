"""SIP transactions: the RFC 3261 §17 state machines with the RFC 6026 corrections.

Theory of operation
-------------------
A transaction is one request and its responses (§17). The UA core (the
"transaction user", TU) makes one object per transaction and feeds it, always
with the current time ``now`` (nothing here reads a clock): messages
(``receive_response``; ``receive_request`` for a retransmitted request or an
ACK; the TU's own ``respond``), timers (once ``now`` reaches ``get_timer()`` the
TU calls ``handle_timer(now)``, which fires every due timer, earliest first, a
timeout before a retransmission due at the same instant) and
``transport_error``. It drains ``messages_to_send()`` for the transport and
``next_event()``: frozen dataclasses, ``Terminated`` last, after which the TU
drops the transaction. This is aioquic's shape: no callbacks, no I/O.

Retransmission timers are anchored on their own deadlines, so the schedule is
exact on virtual time; a late ``handle_timer`` (a blocked loop) sends one copy,
not a burst. Over a reliable transport A, E and G are never armed and D, I, J,
K are zero: the state is left at once (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
B, F, H, L, M are 64*T1 on every transport. Only RFC 3261 branches (magic
cookie ``z9hG4bK``) are matched (§17.2.3); RFC 2543 peers are out of scope.

Each machine below is a transition table (state, input -> next state, action);
one handler per state or per timer implements it.

INVITE client, RFC 3261 Figure 5 as corrected by RFC 6026 §7.2 / §8.4::

    CALLING     start()          CALLING      send INVITE; arm A=T1 (unreliable), B=64*T1
    CALLING     Timer A          CALLING      resend INVITE; A doubles, no cap
    CALLING     Timer B          TERMINATED   TimedOut("B")
    CALLING,    1xx              PROCEEDING   to TU; A and B stop
    PROCEEDING  2xx              ACCEPTED     to TU; A and B stop; arm M=64*T1
                300-699          COMPLETED    to TU; send ACK (§17.1.1.3); arm D (0 reliable)
    ACCEPTED    2xx              ACCEPTED     to TU (a retransmission or another fork)
    ACCEPTED    Timer M          TERMINATED
    COMPLETED   300-699          COMPLETED    resend the ACK, not to TU
    COMPLETED   Timer D          TERMINATED
    any         transport error  TERMINATED   TransportFailed

non-INVITE client, RFC 3261 Figure 6 (§17.1.2)::

    TRYING      start()          TRYING       send; arm E=T1 (unreliable), F=64*T1
    TRYING      Timer E          TRYING       resend; E = min(2*E, T2)
    PROCEEDING  Timer E          PROCEEDING   resend; E = T2
    TRYING,     1xx              PROCEEDING   to TU
    PROCEEDING  200-699          COMPLETED    to TU; E and F stop; arm K=T4 (0 reliable)
                Timer F          TERMINATED   TimedOut("F")
    COMPLETED   any response     COMPLETED    absorbed
    COMPLETED   Timer K          TERMINATED
    any         transport error  TERMINATED   TransportFailed

INVITE server, RFC 3261 Figure 7 as corrected by RFC 6026 §7.1 / §8.7::

    PROCEEDING  start(now)       PROCEEDING   arm the 200 ms timer
    PROCEEDING  200 ms timer     PROCEEDING   send 100 Trying unless the TU answered
    PROCEEDING  INVITE           PROCEEDING   resend the last provisional (or 100 Trying)
    PROCEEDING  1xx from TU      PROCEEDING   send
    PROCEEDING  2xx from TU      ACCEPTED     send; arm L=64*T1
    PROCEEDING  300-699 from TU  COMPLETED    send; arm G=T1 (unreliable), H=64*T1
    PROCEEDING  transport error  PROCEEDING   TransportFailed (RFC 6026)
    ACCEPTED    INVITE           ACCEPTED     absorbed
    ACCEPTED    ACK              ACCEPTED     RequestReceived (to TU)
    ACCEPTED    2xx from TU      ACCEPTED     send
    ACCEPTED    transport error  ACCEPTED     TransportFailed
    ACCEPTED    Timer L          TERMINATED
    COMPLETED   INVITE           COMPLETED    resend the final response
    COMPLETED   Timer G          COMPLETED    resend; G = min(2*G, T2)
    COMPLETED   ACK              CONFIRMED    G and H stop; arm I=T4 (0 reliable)
    COMPLETED   Timer H          TERMINATED   TimedOut("H")
    COMPLETED   transport error  TERMINATED   TransportFailed
    CONFIRMED   INVITE, ACK      CONFIRMED    absorbed
    CONFIRMED   Timer I          TERMINATED

non-INVITE server, RFC 3261 Figure 8 (§17.2.2)::

    TRYING      request          TRYING       absorbed (nothing to resend yet)
    TRYING,     1xx from TU      PROCEEDING   send
    PROCEEDING  200-699 from TU  COMPLETED    send; arm J=64*T1 (0 reliable)
    PROCEEDING  request          PROCEEDING   resend the last response
    COMPLETED   request          COMPLETED    resend the final response
    COMPLETED   Timer J          TERMINATED
    PROCEEDING, transport error  TERMINATED   TransportFailed
    COMPLETED

A response after the final one (but a 2xx repeated in ACCEPTED) raises
:class:`TransactionError`. The 2xx to an INVITE is retransmitted by the UAS core
(§13.3.1.4) with a :class:`TwoHundredRetransmitter`, not by the transaction.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sipbridge.sip.address import SipParseError, Target, format_host
from sipbridge.sip.message import Headers, SipRequest, SipResponse, make_response

__all__ = [
    "ClientTransaction",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "State",
    "Terminated",
    "TimedOut",
    "Timers",
    "TransactionError",
    "TransportFailed",
    "TwoHundredRetransmitter",
    "build_ack",
    "client_key",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"


class TransactionError(Exception):
    """We (the TU) misused a transaction, like h11's ``LocalProtocolError``."""


@dataclass(frozen=True)
class Timers:
    """The RFC 3261 timer values (§17, Appendix A), injected, never module globals.

    ``trying`` is the 200 ms after which an INVITE server transaction sends 100
    Trying itself (§17.2.1). Derived: B, F, H, J and (RFC 6026) L, M are 64*T1;
    I and K are T4; D is "at least 32 s" for unreliable transports (§17.1.1.2)
    and never below 64*T1, since it covers the server's Timer H window.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying: float = 0.2

    def __post_init__(self) -> None:
        if self.t1 <= 0:
            raise ValueError(f"T1 must be positive, got {self.t1}")
        if self.t2 < self.t1:
            raise ValueError(f"T2 ({self.t2}) must not be below T1 ({self.t1})")
        if self.t4 <= 0:
            raise ValueError(f"T4 must be positive, got {self.t4}")
        if self.trying < 0:
            raise ValueError(f"the 100 Trying delay must not be negative, got {self.trying}")

    @property
    def b(self) -> float:
        return 64 * self.t1

    @property
    def d(self) -> float:
        return max(32.0, 64 * self.t1)

    @property
    def f(self) -> float:
        return 64 * self.t1

    @property
    def h(self) -> float:
        return 64 * self.t1

    @property
    def i(self) -> float:
        return self.t4

    @property
    def j(self) -> float:
        return 64 * self.t1

    @property
    def k(self) -> float:
        return self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name for the timer
        return 64 * self.t1

    @property
    def m(self) -> float:
        return 64 * self.t1


class State(enum.Enum):
    """Transaction states; each machine uses the subset its RFC figure names."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


@dataclass(frozen=True)
class ResponseReceived:
    """A response for the TU: every provisional and final one, and in ACCEPTED
    every 2xx (retransmissions and forks, RFC 6026 §8.4). Not a repeated non-2xx."""

    response: SipResponse


@dataclass(frozen=True)
class RequestReceived:
    """A request for the TU from a server transaction: only an ACK matching an
    INVITE server transaction in ACCEPTED (RFC 6026 §7.1, "ACK / to TU")."""

    request: SipRequest


@dataclass(frozen=True)
class TimedOut:
    """Timer B or F (client: the TU reports 408, §8.1.3.1), H (server: no ACK),
    or the 2xx retransmitter's 64*T1 (§13.3.1.4: no ACK, send BYE)."""

    timer: str = ""


@dataclass(frozen=True)
class TransportFailed:
    """The transport could not send for this transaction (§17.1.4, §17.2.4)."""

    reason: str


@dataclass(frozen=True)
class Terminated:
    """The transaction is TERMINATED; the TU drops it from its table."""


Event = ResponseReceived | RequestReceived | TimedOut | TransportFailed | Terminated


def client_key(response: SipResponse) -> tuple[str, str]:
    """The client transaction a response belongs to: (top Via branch, CSeq method) (§17.1.3)."""
    branch = response.top_via.branch
    if not branch:
        raise SipParseError("response Via has no branch")
    return branch, response.cseq.method


def server_key(request: SipRequest) -> tuple[str, str, str]:
    """The server transaction a request belongs to (§17.2.3).

    (branch, sent-by as ``host:port``, method), with ACK mapped to INVITE. The
    sent-by host is lower-cased and a missing port filled in (5061 for TLS,
    5060 otherwise). Only RFC 3261 branches (magic cookie ``z9hG4bK``) are
    accepted: the RFC 2543 fallback of §17.2.3 (matching on Request-URI, tags,
    Call-ID, CSeq) is out of scope and such a request raises SipParseError.
    """
    via = request.top_via
    branch = via.branch
    if not branch:
        raise SipParseError("request Via has no branch")
    if not branch.startswith(MAGIC_COOKIE):
        raise SipParseError(f"Via branch without the RFC 3261 magic cookie: {branch!r}")
    port = via.port if via.port is not None else (5061 if via.transport == "TLS" else 5060)
    sent_by = f"{format_host(via.host.lower())}:{port}"
    method = "INVITE" if request.method == "ACK" else request.method
    return branch, sent_by, method


# -- shared machinery -----------------------------------------------------------

# Timers that end something fire before a retransmission due at the same instant.
_RETRANSMIT_TIMERS = frozenset({"A", "E", "G", "100", "2xx"})


class _Machine(ABC):
    """Deadlines, the event queue, termination: what every machine here shares."""

    def __init__(self, *, reliable: bool, timers: Timers, state: State) -> None:
        self.reliable = reliable
        self.timers = timers
        self.state = state
        self._deadlines: dict[str, float] = {}
        self._events: deque[Event] = deque()
        self._interval = timers.t1  # of the one retransmission timer (A, E, G or 2xx)

    def get_timer(self) -> float | None:
        """The earliest pending deadline, None when no timer is armed."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is ``<= now``, earliest first."""
        while self.state is not State.TERMINATED:
            due = [
                (deadline, name in _RETRANSMIT_TIMERS, name)
                for name, deadline in self._deadlines.items()
                if deadline <= now
            ]
            if not due:
                return
            deadline, _, name = min(due)
            del self._deadlines[name]
            self._fire(name, deadline, now)

    def next_event(self) -> Event | None:
        """The next event for the TU, None when there is none."""
        return self._events.popleft() if self._events else None

    @abstractmethod
    def _fire(self, name: str, deadline: float, now: float) -> None: ...

    def _arm(self, name: str, deadline: float) -> None:
        self._deadlines[name] = deadline

    def _rearm(self, name: str, deadline: float, now: float, cap: float | None) -> None:
        """Re-arm retransmission timer ``name`` that fired at ``deadline``: the interval
        doubles, up to ``cap``. Intervals over by ``now`` are skipped, so a late
        wake-up sends one copy rather than a burst."""
        self._interval = 2 * self._interval if cap is None else min(2 * self._interval, cap)
        following = deadline + self._interval
        while following <= now:
            if self._interval == cap:  # constant from here: jump, even over hours of stall
                following += (math.floor((now - following) / cap) + 1) * cap
                continue
            self._interval = 2 * self._interval if cap is None else min(2 * self._interval, cap)
            following += self._interval
        self._arm(name, following)

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _terminate(self) -> None:
        self._deadlines.clear()
        self.state = State.TERMINATED
        self._events.append(Terminated())

    def _linger(self, timer: str, delay: float, now: float) -> None:
        """Arm a D/I/J/K-style wait, or terminate at once on a reliable transport."""
        if self.reliable:
            self._terminate()
        else:
            self._arm(timer, now + delay)


# -- client transactions (§17.1) ----------------------------------------------


class ClientTransaction(_Machine, ABC):
    """A client transaction (RFC 3261 §17.1): sends ``request`` to ``target``."""

    def __init__(
        self, request: SipRequest, target: Target, *, reliable: bool, timers: Timers
    ) -> None:
        initial = State.CALLING if request.method == "INVITE" else State.TRYING
        super().__init__(reliable=reliable, timers=timers, state=initial)
        if not self._accepts(request.method):
            raise TransactionError(f"{type(self).__name__} cannot send {request.method}")
        try:
            branch = request.top_via.branch
        except SipParseError as exc:
            raise TransactionError(f"bad request: {exc}") from None
        if not branch:
            raise TransactionError("request has no Via branch")
        self.request = request
        self.target = target
        self.key: tuple[str, str] = (branch, request.cseq.method)
        self._started = False
        self._outbound: list[SipRequest] = []

    def start(self, now: float) -> None:
        """Send the request and arm the retransmission and timeout timers."""
        if self._started:
            raise TransactionError("transaction already started")
        self._started = True
        self._outbound.append(self.request)
        self._on_start(now)

    def receive_response(self, response: SipResponse, now: float) -> None:
        """A response the TU matched to us with :func:`client_key`."""
        if not self._started:
            raise TransactionError("response before start()")
        key = client_key(response)
        if key != self.key:
            raise TransactionError(f"response for {key} given to transaction {self.key}")
        if self.state is not State.TERMINATED:
            self._on_response(response, now)

    def transport_error(self, reason: str, now: float) -> None:
        """The transport failed to send for us: inform the TU, terminate (§17.1.4).

        RFC 3261 draws this from Calling and Completed only; a transaction left
        in Proceeding by a dead connection would never end (no Timer B there),
        so every live state terminates.
        """
        if self.state is not State.TERMINATED:
            self._events.append(TransportFailed(reason))
            self._terminate()

    def messages_to_send(self) -> list[SipRequest]:
        """Drain the requests for the transport: the request, its copies, ACKs."""
        out, self._outbound = self._outbound, []
        return out

    @classmethod
    @abstractmethod
    def _accepts(cls, method: str) -> bool: ...

    @abstractmethod
    def _on_start(self, now: float) -> None: ...

    @abstractmethod
    def _on_response(self, response: SipResponse, now: float) -> None: ...


class InviteClientTransaction(ClientTransaction):
    """The INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §7.2 and §8.4)."""

    @classmethod
    def _accepts(cls, method: str) -> bool:
        return method == "INVITE"

    def __init__(
        self, request: SipRequest, target: Target, *, reliable: bool, timers: Timers
    ) -> None:
        super().__init__(request, target, reliable=reliable, timers=timers)
        self._ack: SipRequest | None = None
        self._handlers: dict[State, Callable[[SipResponse, float], None]] = {
            State.CALLING: self._response_calling_or_proceeding,
            State.PROCEEDING: self._response_calling_or_proceeding,
            State.ACCEPTED: self._response_accepted,
            State.COMPLETED: self._response_completed,
        }

    def _on_start(self, now: float) -> None:
        if not self.reliable:
            self._arm("A", now + self.timers.t1)
        self._arm("B", now + self.timers.b)

    def _on_response(self, response: SipResponse, now: float) -> None:
        self._handlers[self.state](response, now)

    def _response_calling_or_proceeding(self, response: SipResponse, now: float) -> None:
        self._cancel("A", "B")
        self._events.append(ResponseReceived(response))
        if response.status < 200:
            self.state = State.PROCEEDING
        elif response.status < 300:
            self.state = State.ACCEPTED
            self._arm("M", now + self.timers.m)
        else:
            self.state = State.COMPLETED
            self._ack = build_ack(self.request, response)
            self._outbound.append(self._ack)
            self._linger("D", self.timers.d, now)

    def _response_accepted(self, response: SipResponse, now: float) -> None:
        # Only 2xx are passed up (RFC 6026 §8.4); a stray 1xx or non-2xx is absorbed.
        if 200 <= response.status < 300:
            self._events.append(ResponseReceived(response))

    def _response_completed(self, response: SipResponse, now: float) -> None:
        if response.status >= 300 and self._ack is not None:
            self._outbound.append(self._ack)

    def _fire(self, name: str, deadline: float, now: float) -> None:
        if name == "A":
            self._outbound.append(self.request)
            self._rearm("A", deadline, now, None)
        elif name == "B":
            self._events.append(TimedOut("B"))
            self._terminate()
        else:  # D in COMPLETED, M in ACCEPTED
            self._terminate()


class NonInviteClientTransaction(ClientTransaction):
    """The non-INVITE client transaction (RFC 3261 §17.1.2)."""

    @classmethod
    def _accepts(cls, method: str) -> bool:
        # The ACK of a 2xx is sent by the UA core outside any transaction (§17.1).
        return method not in ("INVITE", "ACK")

    def _on_start(self, now: float) -> None:
        if not self.reliable:
            self._arm("E", now + self.timers.t1)
        self._arm("F", now + self.timers.f)

    def _on_response(self, response: SipResponse, now: float) -> None:
        if self.state is State.COMPLETED:
            return  # retransmissions of the final response are absorbed
        self._events.append(ResponseReceived(response))
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self._cancel("E", "F")
            self.state = State.COMPLETED
            self._linger("K", self.timers.k, now)

    def _fire(self, name: str, deadline: float, now: float) -> None:
        if name == "E":
            self._outbound.append(self.request)
            if self.state is State.PROCEEDING:
                self._interval = self.timers.t2  # "reset with a value of T2" (§17.1.2.2)
            self._rearm("E", deadline, now, self.timers.t2)
        elif name == "F":
            self._events.append(TimedOut("F"))
            self._terminate()
        else:  # K
            self._terminate()


def build_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final response to ``invite`` (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From, CSeq number and Route set of the INVITE; one Via,
    the INVITE's top Via (same branch); To of the response (with its tag).
    """
    headers = Headers()
    top_via = invite.headers.get("Via")
    if top_via is None:
        raise TransactionError("INVITE without a Via")
    headers.add("Via", top_via)
    for name, value in invite.headers:
        if name == "Route":
            headers.add(name, value)
    headers.add("Max-Forwards", "70")
    for name, source in (("From", invite), ("To", response), ("Call-ID", invite)):
        copied = source.headers.get(name)
        if copied is None:
            raise TransactionError(f"cannot build ACK: no {name} header")
        headers.add(name, copied)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    headers.add("Content-Length", "0")
    return SipRequest(headers=headers, method="ACK", uri=invite.uri, version=invite.version)


# -- server transactions (§17.2) ------------------------------------------------


class ServerTransaction(_Machine, ABC):
    """A server transaction (RFC 3261 §17.2) for ``request`` received from ``source``.

    The INVITE server transaction answers 100 Trying by itself 200 ms after
    ``start(now)`` (or the constructor's ``now``) unless the TU has answered.
    """

    _fatal_error_states: frozenset[State]  # a transport error there ends the transaction

    def __init__(
        self,
        request: SipRequest,
        source: Target,
        *,
        reliable: bool,
        timers: Timers,
        now: float | None = None,
    ) -> None:
        initial = State.PROCEEDING if request.method == "INVITE" else State.TRYING
        super().__init__(reliable=reliable, timers=timers, state=initial)
        if request.method == "ACK":
            raise TransactionError("an ACK never creates a server transaction (§17.2.3)")
        try:
            self.key: tuple[str, str, str] = server_key(request)
        except SipParseError as exc:
            raise TransactionError(f"cannot key the request: {exc}") from None
        self.request = request
        self.source = source
        self._last_response: SipResponse | None = None
        self._outbound: list[SipResponse] = []
        self._started = False
        if now is not None:
            self.start(now)

    @property
    def last_response(self) -> SipResponse | None:
        """The most recent response sent, the one a retransmitted request gets."""
        return self._last_response

    def start(self, now: float) -> None:
        """Arm the timers that run from the request's arrival (INVITE: 100 Trying)."""
        if self._started:
            raise TransactionError("transaction already started")
        self._started = True
        self._on_start(now)

    def receive_request(self, request: SipRequest, now: float) -> None:
        """A retransmission of the request, or (INVITE) its ACK, matched by :func:`server_key`."""
        key = server_key(request)
        if key != self.key:
            raise TransactionError(f"request for {key} given to transaction {self.key}")
        if self.state is not State.TERMINATED:
            self._on_request(request, now)

    def respond(self, response: SipResponse, now: float) -> None:
        """Send the TU's response; TransactionError when this state does not allow it."""
        if not self._response_allowed(response):
            raise TransactionError(f"cannot send {response.status} in state {self.state.name}")
        if response.cseq != self.request.cseq:
            raise TransactionError(
                f"response CSeq {response.cseq} does not match request CSeq {self.request.cseq}"
            )
        self._send(response)
        self._on_respond(response, now)

    def transport_error(self, reason: str, now: float) -> None:
        """The transport failed to send our response (§17.2.4, RFC 6026 §7.1).

        Ignored where nothing was sent yet (non-INVITE TRYING, CONFIRMED).
        """
        if self.state in (State.PROCEEDING, State.ACCEPTED, State.COMPLETED):
            self._events.append(TransportFailed(reason))
            if self.state in self._fatal_error_states:
                self._terminate()

    def messages_to_send(self) -> list[SipResponse]:
        """Drain the responses for the transport, in order."""
        out, self._outbound = self._outbound, []
        return out

    def _send(self, response: SipResponse) -> None:
        self._last_response = response
        self._outbound.append(response)

    def _resend_last(self) -> None:
        if self._last_response is not None:
            self._outbound.append(self._last_response)

    def _on_start(self, now: float) -> None:
        return None

    @abstractmethod
    def _response_allowed(self, response: SipResponse) -> bool: ...

    @abstractmethod
    def _on_respond(self, response: SipResponse, now: float) -> None: ...

    @abstractmethod
    def _on_request(self, request: SipRequest, now: float) -> None: ...


class InviteServerTransaction(ServerTransaction):
    """The INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1 and §8.7)."""

    _fatal_error_states = frozenset({State.COMPLETED})

    def _on_start(self, now: float) -> None:
        if self.state is State.PROCEEDING and self._last_response is None:
            self._arm("100", now + self.timers.trying)

    def _response_allowed(self, response: SipResponse) -> bool:
        if self.state is State.PROCEEDING:
            return True
        # RFC 6026: in ACCEPTED the TU's 2xx retransmissions go through us.
        return self.state is State.ACCEPTED and 200 <= response.status < 300

    def _on_respond(self, response: SipResponse, now: float) -> None:
        self._cancel("100")
        if self.state is not State.PROCEEDING or response.status < 200:
            return
        if response.status < 300:
            self.state = State.ACCEPTED
            self._arm("L", now + self.timers.l)
        else:
            self.state = State.COMPLETED
            if not self.reliable:
                self._interval = self.timers.t1
                self._arm("G", now + self.timers.t1)
            self._arm("H", now + self.timers.h)

    def _on_request(self, request: SipRequest, now: float) -> None:
        is_ack = request.method == "ACK"
        if self.state is State.PROCEEDING and not is_ack:
            if self._last_response is None:
                # The client already waited T1 > 200 ms: answer 100 Trying now.
                self._send_trying()
            else:
                self._resend_last()
        elif self.state is State.COMPLETED:
            if is_ack:
                self._cancel("G", "H")
                self.state = State.CONFIRMED
                self._linger("I", self.timers.i, now)
            else:
                self._resend_last()
        elif self.state is State.ACCEPTED and is_ack:
            self._events.append(RequestReceived(request))
        # ACCEPTED INVITE, CONFIRMED anything: absorbed.

    def _send_trying(self) -> None:
        self._cancel("100")
        timestamp = self.request.headers.get("Timestamp")
        extra = [("Timestamp", timestamp)] if timestamp is not None else []
        self._send(make_response(self.request, 100, headers=extra))  # §8.2.6.1

    def _fire(self, name: str, deadline: float, now: float) -> None:
        if name == "100":
            if self.state is State.PROCEEDING and self._last_response is None:
                self._send_trying()
        elif name == "G":
            self._resend_last()
            self._rearm("G", deadline, now, self.timers.t2)
        elif name == "H":
            self._events.append(TimedOut("H"))
            self._terminate()
        else:  # I in CONFIRMED, L in ACCEPTED
            self._terminate()


class NonInviteServerTransaction(ServerTransaction):
    """The non-INVITE server transaction (RFC 3261 §17.2.2)."""

    _fatal_error_states = frozenset({State.PROCEEDING, State.COMPLETED})

    def _response_allowed(self, response: SipResponse) -> bool:
        return self.state in (State.TRYING, State.PROCEEDING)

    def _on_respond(self, response: SipResponse, now: float) -> None:
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._linger("J", self.timers.j, now)

    def _on_request(self, request: SipRequest, now: float) -> None:
        # TRYING: nothing to resend yet, the retransmission is absorbed.
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend_last()

    def _fire(self, name: str, deadline: float, now: float) -> None:
        self._terminate()  # J


# -- the UAS core's 2xx retransmission (§13.3.1.4) -------------------------------


class TwoHundredRetransmitter(_Machine):
    """Retransmits a 2xx to an INVITE until its ACK arrives (RFC 3261 §13.3.1.4).

    ``start(now)`` is called when the 2xx was first sent (through the server
    transaction); it does not send it again. Copies follow at T1, doubling up to
    T2; after 64*T1 without ``ack_received()`` the events are ``TimedOut("2xx")``
    (the UAS core then ends the session with BYE) and ``Terminated``. An ACK
    yields ``Terminated`` alone.

    ``reliable`` is recorded but does not stop retransmission: §13.3.1.4 makes it
    "independent of whatever transport protocols are used", since a reliable
    first hop may be followed by unreliable ones.
    """

    def __init__(self, response: SipResponse, reliable: bool, timers: Timers) -> None:
        super().__init__(reliable=reliable, timers=timers, state=State.ACCEPTED)
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            raise TransactionError(
                f"only a 2xx to INVITE is retransmitted by the core, not {response.status} "
                f"to {response.cseq.method}"
            )
        self.response = response
        self._started = False
        self._outbound: list[SipResponse] = []

    def start(self, now: float) -> None:
        """Arm the retransmission (T1) and give-up (64*T1) timers from ``now``."""
        if self._started:
            raise TransactionError("retransmitter already started")
        self._started = True
        self._arm("2xx", now + self.timers.t1)
        self._arm("64*T1", now + 64 * self.timers.t1)

    def matches_ack(self, ack: SipRequest) -> bool:
        """Whether ``ack`` acknowledges our 2xx: same Call-ID and CSeq number (§13.3.1.4)."""
        return (
            ack.method == "ACK"
            and ack.call_id == self.response.call_id
            and ack.cseq.seq == self.response.cseq.seq
        )

    def ack_received(self, now: float | None = None) -> None:
        """The ACK arrived: stop. ``now`` is accepted for symmetry and unused."""
        if self.state is not State.TERMINATED:
            self._terminate()

    def messages_to_send(self) -> list[SipResponse]:
        """Drain the 2xx copies to send."""
        out, self._outbound = self._outbound, []
        return out

    def _fire(self, name: str, deadline: float, now: float) -> None:
        if name == "2xx":
            self._outbound.append(self.response)
            self._rearm("2xx", deadline, now, self.timers.t2)
        else:
            self._events.append(TimedOut("2xx"))
            self._terminate()
