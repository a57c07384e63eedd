"""Registration of a contact at a registrar (RFC 3261 §10.2), sans-IO.

One :class:`Registration` keeps one binding alive: REGISTER with digest
authentication (§22), refresh before the granted expiry, 423 Interval Too Brief
answered with the registrar's Min-Expires (§10.2.8), and removal with
``Expires: 0`` (§10.2.2). All REGISTERs of one registration share a Call-ID and
increase CSeq (§10.2.4).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import NameAddr, SipParseError, SipUri, Target
from sipbridge.sip.auth import ClientAuth
from sipbridge.sip.message import (
    CSeq,
    Headers,
    SipRequest,
    SipResponse,
    generate_call_id,
    generate_tag,
    make_response,
)
from sipbridge.sip.transaction import ClientTransaction, ServerTransaction
from sipbridge.sip.ua import ALLOWED_METHODS, UserAgent

__all__ = ["Registration", "RegistrationEvent", "RegistrationState"]

log = logging.getLogger(__name__)


class RegistrationState(enum.Enum):
    NEW = "NEW"
    REGISTERING = "REGISTERING"
    REGISTERED = "REGISTERED"
    UNREGISTERING = "UNREGISTERING"
    UNREGISTERED = "UNREGISTERED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RegistrationEvent:
    """The registration changed state; ``status``/``reason`` of the last response."""

    state: RegistrationState
    status: int | None = None
    reason: str = ""
    expires: int | None = None


class Registration:
    """Keeps one contact registered for an account (RFC 3261 §10.2)."""

    #: Refresh this many seconds before expiry, or at half the interval when shorter.
    REFRESH_MARGIN = 30.0
    #: Wait before trying again after a failed refresh.
    RETRY_INTERVAL = 30.0

    def __init__(
        self,
        ua: UserAgent,
        account: SipAccount,
        *,
        expires: int = 3600,
        auth: ClientAuth | None = None,
    ) -> None:
        self.ua = ua
        self.account = account
        self.expires = expires
        self.call_id = generate_call_id(ua.local.advertised_host)
        self.state = RegistrationState.NEW
        self.granted: int | None = None
        #: Why the last REGISTER failed, as calls report it: the registrar's final
        #: answer (``403 Forbidden``), ``timeout`` (Timer F, §17.1.2.2) or the
        #: transport's reason (``TLS certificate verify failed: ...``); None after a 2xx.
        self.failure_reason: str | None = None
        #: The registrar's final status code behind ``failure_reason`` (None for a
        #: timeout or a transport error: nobody answered).
        self.failure_status: int | None = None
        self._auth = auth or ClientAuth(account.username, account.password)
        self._tag = generate_tag()
        self._cseq = 0
        self._refresh_at: float | None = None
        self._events: list[RegistrationEvent] = []
        self._requested = expires
        # The REGISTER in flight: answers to an earlier one (a removal sent while the
        # first REGISTER was pending) must not be taken for its answer.
        self._txn: ClientTransaction | None = None

    # -- control -------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send the first REGISTER."""
        self.ua.add_session(self)
        self._set_state(RegistrationState.REGISTERING)
        self._send(self.expires, now)

    def unregister(self, now: float) -> None:
        """Remove our binding (``Expires: 0``); a no-op when never registered."""
        self._refresh_at = None
        if self.state in (RegistrationState.REGISTERED, RegistrationState.REGISTERING):
            self._set_state(RegistrationState.UNREGISTERING)
            self._send(0, now)
        else:
            self._finish(RegistrationState.UNREGISTERED)

    def next_event(self) -> RegistrationEvent | None:
        return self._events.pop(0) if self._events else None

    # -- Session protocol ----------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: SipResponse, now: float) -> None:
        status = response.status
        if status < 200 or txn is not self._txn:
            return
        self._txn = None
        if status in (401, 407):
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            if self._auth.on_challenge(status, response.headers.get_all(header)):
                self._send(self._requested, now)
                return
        elif status == 423:
            min_expires = response.headers.get("Min-Expires", "")
            if min_expires and min_expires.isdigit() and int(min_expires) > self._requested:
                # Refreshes must ask for at least this much too, or each earns a 423.
                self.expires = int(min_expires)
                self._send(self.expires, now)
                return
        elif 200 <= status < 300:
            self._auth.reset_failures()
            self._on_success(response, now)
            return
        failure = f"{status} {response.reason}".rstrip()
        self._on_failure(status, response.reason, now, failure=failure, answered=True)

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        if txn is self._txn:
            self._txn = None
            self._on_failure(408, "Request Timeout", now, failure="timeout", answered=False)

    def on_transport_error(self, txn: ClientTransaction, reason: str, now: float) -> None:
        if txn is self._txn:
            self._txn = None
            self._on_failure(503, f"transport error: {reason}", now, failure=reason, answered=False)

    def on_request(
        self, txn: ServerTransaction | None, request: SipRequest, source: Target, now: float
    ) -> None:
        del source  # a registration has no dialog: nothing to receive
        if txn is not None:
            self.ua.respond(txn, make_response(request, 481), now)

    def on_stray_response(self, response: SipResponse, now: float) -> None:
        del response, now

    def get_timer(self) -> float | None:
        return self._refresh_at

    def handle_timer(self, now: float) -> None:
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._send(self.expires, now)

    # -- internals -----------------------------------------------------------
    def _send(self, expires: int, now: float) -> None:
        self._requested = expires
        self._cseq += 1
        account = self.account
        uri = f"sip:{account.domain_hostport}"
        headers = Headers()
        headers.add("Max-Forwards", "70")
        if account.proxy_uri:
            headers.add("Route", f"<{account.proxy_uri}>")
        headers.add("From", account.from_header(self._tag))
        headers.add("To", f"<{account.aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", str(CSeq(self._cseq, "REGISTER")))
        headers.add(
            "Contact", f"{self.ua.contact(account.login, account.transport)};expires={expires}"
        )
        headers.add("Expires", str(expires))
        headers.add("Allow", ALLOWED_METHODS)
        for name, value in self._auth.authorization_headers("REGISTER", uri):
            headers.add(name, value)
        request = SipRequest(headers=headers, method="REGISTER", uri=uri)
        self._txn = self.ua.send_request(self, request, account.proxy, now)

    def _granted_expiry(self, response: SipResponse) -> int:
        ours = SipUri.parse(self.ua.contact(self.account.login, self.account.transport)[1:-1])
        for value in response.headers.get_all("Contact"):
            try:
                contact = NameAddr.parse(value)
                uri = contact.sip_uri
            except SipParseError:
                continue
            expires = contact.params.get("expires")
            # Registrars may add URI parameters or change case (§19.1.4): compare the
            # parts that identify the binding.
            same = (uri.user, uri.host.lower(), uri.port) == (
                ours.user,
                ours.host.lower(),
                ours.port,
            )
            if same and expires and expires.isdigit():
                return int(expires)
        header = response.headers.get("Expires", "")
        return int(header) if header and header.isdigit() else self._requested

    def _on_success(self, response: SipResponse, now: float) -> None:
        if self.state is RegistrationState.UNREGISTERING:
            self._finish(RegistrationState.UNREGISTERED, response.status, response.reason)
            return
        granted = self._granted_expiry(response)
        self.granted = granted
        self.failure_reason = self.failure_status = None
        margin = min(self.REFRESH_MARGIN, granted / 2)
        self._refresh_at = now + max(granted - margin, 1.0)
        self._set_state(RegistrationState.REGISTERED, response.status, response.reason, granted)

    def _on_failure(
        self, status: int, reason: str, now: float, *, failure: str, answered: bool
    ) -> None:
        log.info("REGISTER for %s failed: %s %s", self.account.aor, status, reason)
        self.failure_reason = failure
        # 408/503 for a timeout or transport error are ours (§8.1.3.1), not the registrar's.
        self.failure_status = status if answered else None
        if self.state is RegistrationState.UNREGISTERING:
            self._finish(RegistrationState.UNREGISTERED, status, reason)
        elif self.state is RegistrationState.REGISTERED:
            # A failed refresh: the binding may still live until it expires; try again.
            self._refresh_at = now + self.RETRY_INTERVAL
            self._events.append(RegistrationEvent(self.state, status, reason))
        else:
            self._finish(RegistrationState.FAILED, status, reason)

    def _finish(
        self, state: RegistrationState, status: int | None = None, reason: str = ""
    ) -> None:
        self._refresh_at = None
        self._set_state(state, status, reason)
        self.ua.remove_session(self)

    def _set_state(
        self,
        state: RegistrationState,
        status: int | None = None,
        reason: str = "",
        expires: int | None = None,
    ) -> None:
        self.state = state
        self._events.append(RegistrationEvent(state, status, reason, expires))
