"""The sans-IO SIP user agent core (RFC 3261 §8, §17, §18.2.2, RFC 3581).

Theory of operation
-------------------
:class:`UserAgent` sits between the transport and the call flows. It owns the
transaction table and routes every message:

- a response goes to the client transaction whose key (top Via branch, CSeq
  method) matches (§17.1.3); a 2xx to INVITE whose transaction is gone goes to
  the session by Call-ID, which re-sends its ACK (§13.2.2.4);
- a request that matches a server transaction (§17.2.3) is a retransmission
  and goes to it; a new request creates a server transaction (except ACK) and
  goes to the session that owns its Call-ID, or is answered statelessly here
  (OPTIONS 200, out-of-dialog INVITE 480, unknown dialog 481, others 405).

Sessions (:class:`Session`: a registration or a call) create requests and
send them through :meth:`UserAgent.send_request`, which builds the top Via and
starts a client transaction; their responses, timeouts and transport errors
come back to the session's ``on_*`` methods. The asyncio shell feeds
:meth:`receive`, :meth:`transport_error` and :meth:`handle_timer`, sends what
:meth:`messages_to_send` returns and re-arms one timer at :meth:`get_timer`,
the aioquic way.

Responses to requests the peer sent go back where the request came from
(symmetric response routing, RFC 3581 §4, and the same TCP connection, §18.2.2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sipbridge.sip.address import SipParseError, Target, format_host
from sipbridge.sip.message import (
    SipRequest,
    SipResponse,
    generate_branch,
    generate_tag,
    make_response,
)
from sipbridge.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    ServerTransaction,
    State,
    Terminated,
    TimedOut,
    Timers,
    TransportFailed,
    client_key,
    server_key,
)

__all__ = ["ALLOWED_METHODS", "LocalEndpoint", "Session", "UserAgent"]

log = logging.getLogger(__name__)

ALLOWED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"
SUPPORTED = "timer, replaces"


@dataclass(frozen=True)
class LocalEndpoint:
    """Where this UA listens and what it tells peers (Via sent-by, Contact).

    ``public_host``/``public_port`` are what a peer behind the NAT must use to
    reach us; they default to the bound address.
    """

    host: str
    port: int
    public_host: str | None = None
    public_port: int | None = None
    user_agent: str = "sipbridge"

    @property
    def advertised_host(self) -> str:
        return self.public_host or self.host

    @property
    def advertised_port(self) -> int:
        return self.public_port or self.port

    def sent_by(self) -> str:
        return f"{format_host(self.advertised_host)}:{self.advertised_port}"


class Session(Protocol):
    """A registration or call flow driven by the :class:`UserAgent`."""

    call_id: str

    def on_response(self, txn: ClientTransaction, response: SipResponse, now: float) -> None: ...

    def on_timeout(self, txn: ClientTransaction, now: float) -> None: ...

    def on_transport_error(self, txn: ClientTransaction, reason: str, now: float) -> None: ...

    def on_request(
        self, txn: ServerTransaction | None, request: SipRequest, source: Target, now: float
    ) -> None: ...

    def on_stray_response(self, response: SipResponse, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class UserAgent:
    """Transaction table and message routing of one SIP endpoint (sans-IO)."""

    def __init__(self, local: LocalEndpoint, *, timers: Timers | None = None) -> None:
        self.local = local
        self.timers = timers or Timers()
        self._clients: dict[tuple[str, str], tuple[ClientTransaction, Session]] = {}
        self._servers: dict[tuple[str, str, str], tuple[ServerTransaction, Session | None]] = {}
        self._sessions: dict[str, Session] = {}
        self._outbox: list[tuple[SipRequest | SipResponse, Target]] = []

    # -- sessions -----------------------------------------------------------
    def add_session(self, session: Session) -> None:
        self._sessions[session.call_id] = session

    def remove_session(self, session: Session) -> None:
        """Forget a finished session and abandon its pending client transactions.

        Transactions that already have their final response (INVITE in ACCEPTED or
        COMPLETED, non-INVITE in COMPLETED) run on to their own end: they absorb
        retransmitted responses and re-send the ACK of a non-2xx (§17.1.1.2).
        """
        if self._sessions.get(session.call_id) is session:
            del self._sessions[session.call_id]
        for key, (txn, owner) in list(self._clients.items()):
            if owner is session and txn.state not in (State.ACCEPTED, State.COMPLETED):
                del self._clients[key]

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # -- building blocks for sessions --------------------------------------
    def via(self, transport: str, branch: str | None = None) -> str:
        """A top Via for a new request: our sent-by, ``rport`` (RFC 3581 §3), a new branch."""
        branch = branch or generate_branch()
        return f"SIP/2.0/{transport.upper()} {self.local.sent_by()};rport;branch={branch}"

    def contact(self, user: str | None, transport: str) -> str:
        """Our Contact header value (§8.1.1.8), with ``transport`` when not UDP."""
        userpart = f"{user}@" if user else ""
        param = "" if transport.lower() == "udp" else f";transport={transport.lower()}"
        return f"<sip:{userpart}{self.local.sent_by()}{param}>"

    def send_request(
        self,
        session: Session,
        request: SipRequest,
        target: Target,
        now: float,
        *,
        keep_via: bool = False,
    ) -> ClientTransaction:
        """Start a client transaction for ``request``.

        Its top Via is made here with a new branch, unless ``keep_via`` (a
        CANCEL must carry the INVITE's Via, §9.1).
        """
        if not keep_via:
            request.headers.remove("Via")
            request.headers.prepend("Via", self.via(target.transport))
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.local.user_agent)
        reliable = target.transport != "udp"
        txn_class = (
            InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        )
        txn: ClientTransaction = txn_class(request, target, reliable=reliable, timers=self.timers)
        self._clients[txn.key] = (txn, session)
        txn.start(now)
        self._pump_client(txn, session, now)
        return txn

    def send_stateless(self, message: SipRequest | SipResponse, target: Target) -> None:
        """Send without a transaction: the ACK for a 2xx (§13.2.2.4), 2xx retransmissions."""
        self._outbox.append((message, target))

    def respond(self, txn: ServerTransaction, response: SipResponse, now: float) -> None:
        """Send the TU's response through its server transaction."""
        if "User-Agent" not in response.headers and "Server" not in response.headers:
            response.headers.add("Server", self.local.user_agent)
        txn.respond(response, now)
        self._pump_server(txn, now)

    # -- I/O in --------------------------------------------------------------
    def receive(self, message: SipRequest | SipResponse, source: Target, now: float) -> None:
        """A parsed message from the transport."""
        try:
            if isinstance(message, SipResponse):
                self._receive_response(message, now)
            else:
                self._receive_request(message, source, now)
        except SipParseError as exc:
            log.warning("dropping message from %s: %s", source, exc)

    def transport_error(self, target: Target, reason: str, now: float) -> None:
        """The transport could not send to ``target`` (§17.1.4)."""
        for txn, session in list(self._clients.values()):
            if txn.target == target:
                txn.transport_error(reason, now)
                self._pump_client(txn, session, now)

    def handle_timer(self, now: float) -> None:
        """Fire every expired timer of every transaction and session."""
        for txn, session in list(self._clients.values()):
            deadline = txn.get_timer()
            if deadline is not None and deadline <= now:
                txn.handle_timer(now)
                self._pump_client(txn, session, now)
        for stxn, _ in list(self._servers.values()):
            deadline = stxn.get_timer()
            if deadline is not None and deadline <= now:
                stxn.handle_timer(now)
                self._pump_server(stxn, now)
        for session in list(self._sessions.values()):
            deadline = session.get_timer()
            if deadline is not None and deadline <= now:
                session.handle_timer(now)

    def get_timer(self) -> float | None:
        """The earliest deadline of anything this UA drives, or None."""
        deadlines: Iterable[float | None] = [
            *(t.get_timer() for t, _ in self._clients.values()),
            *(t.get_timer() for t, _ in self._servers.values()),
            *(s.get_timer() for s in self._sessions.values()),
        ]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    # -- I/O out -------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[SipRequest | SipResponse, Target]]:
        """Drain everything to be sent, in order."""
        out, self._outbox = self._outbox, []
        return out

    # -- routing -------------------------------------------------------------
    def _receive_response(self, response: SipResponse, now: float) -> None:
        via = response.top_via
        ours = {
            format_host(self.local.advertised_host).lower(),
            format_host(self.local.host).lower(),
        }
        if format_host(via.host).lower() not in ours:
            log.debug("response for another sent-by %s dropped (§18.1.2)", via.host)
            return
        entry = self._clients.get(client_key(response))
        if entry is not None:
            txn, session = entry
            txn.receive_response(response, now)
            self._pump_client(txn, session, now)
            return
        session_or_none = self._sessions.get(response.call_id)
        if session_or_none is not None:
            session_or_none.on_stray_response(response, now)

    def _receive_request(self, request: SipRequest, source: Target, now: float) -> None:
        key = server_key(request)
        existing = self._servers.get(key)
        if existing is not None and not (
            request.method == "ACK" and existing[0].state is State.ACCEPTED
        ):
            stxn = existing[0]
            stxn.receive_request(request, now)
            self._pump_server(stxn, now)
            return
        session = self._sessions.get(request.call_id)
        if request.method == "ACK":
            if session is not None:
                session.on_request(None, request, source, now)
            return
        reliable = source.transport != "udp"
        txn_class = (
            InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        )
        stxn = txn_class(request, source, reliable=reliable, timers=self.timers, now=now)
        self._servers[stxn.key] = (stxn, session)
        if request.method == "CANCEL":
            self._receive_cancel(stxn, request, now)
        elif session is not None and request.to.tag is not None:
            session.on_request(stxn, request, source, now)
        else:
            self._answer_out_of_dialog(stxn, request, now)
        self._pump_server(stxn, now)

    def _receive_cancel(self, stxn: ServerTransaction, request: SipRequest, now: float) -> None:
        """CANCEL of a server transaction (§9.2): we answer re-INVITEs at once, so
        the INVITE is already final and the CANCEL has no effect but its 200."""
        invite_key = (request.top_via.branch or "", stxn.key[1], "INVITE")
        status = 200 if invite_key in self._servers else 481
        self.respond(stxn, make_response(request, status), now)

    def _answer_out_of_dialog(
        self, stxn: ServerTransaction, request: SipRequest, now: float
    ) -> None:
        allow = [("Allow", ALLOWED_METHODS)]
        tag = generate_tag()  # §8.2.6.2: a final response gets a To tag
        if request.to.tag is not None:
            response = make_response(request, 481)
        elif request.method == "OPTIONS":
            response = make_response(
                request,
                200,
                to_tag=tag,
                headers=[*allow, ("Accept", "application/sdp"), ("Supported", SUPPORTED)],
            )
        elif request.method == "INVITE":
            response = make_response(request, 480, "Incoming Calls Not Supported", to_tag=tag)
        else:
            response = make_response(request, 405, to_tag=tag, headers=allow)
        self.respond(stxn, response, now)

    def _pump_client(self, txn: ClientTransaction, session: Session, now: float) -> None:
        for request in txn.messages_to_send():
            self._outbox.append((request, txn.target))
        while (event := txn.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                session.on_response(txn, event.response, now)
            elif isinstance(event, TimedOut):
                session.on_timeout(txn, now)
            elif isinstance(event, TransportFailed):
                session.on_transport_error(txn, event.reason, now)
            elif isinstance(event, Terminated):
                self._clients.pop(txn.key, None)

    def _pump_server(self, stxn: ServerTransaction, now: float) -> None:
        for response in stxn.messages_to_send():
            self._outbox.append((response, stxn.source))
        while (event := stxn.next_event()) is not None:
            if isinstance(event, Terminated):
                self._servers.pop(stxn.key, None)
            elif isinstance(event, TimedOut | TransportFailed):
                log.info("server transaction %s ended: %s", stxn.key, type(event).__name__)
