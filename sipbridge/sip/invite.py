"""An outbound call from INVITE to BYE (RFC 3261 §13-15, RFC 3264, RFC 4028), sans-IO.

Theory of operation
-------------------
:class:`OutboundCall` is the UAC side of one INVITE session, driven by the
:class:`~sipbridge.sip.ua.UserAgent`. Its status uses the WCS vocabulary:

    NEW -> PENDING (INVITE sent) -> TRYING (100) -> RING / RING_MEDIA (180 without
    / with SDP) / SESSION_PROGRESS (183) -> ESTABLISHED (2xx, ACKed, SDP answer
    negotiated) <-> HOLD -> FINISH (BYE either way, CANCEL) | BUSY (486, 600) |
    FAILED (any other final, timeout, no common codec)

- 401/407 to the INVITE are answered once per fresh challenge with digest
  credentials (§22.2); 422 is retried with the larger Min-SE (RFC 4028 §7.4).
- ``terminate()`` before the answer sends CANCEL as soon as a provisional has
  arrived (§9.1); a 2xx that still arrives is ACKed and BYEd (§15). Without a
  final response 64*T1 after the CANCEL the INVITE is given up (§9.1). The
  invite timeout applies until the first 2xx only.
- hold/unhold and session refreshes are one re-INVITE at a time (§14.1): a
  direction asked for meanwhile is sent when the pending one completes; a
  refused re-offer leaves the previous offer in force; 491 is retried after
  2.1-4 s.
- The ACK for a 2xx is sent by this object, outside any transaction, and is
  sent again for every retransmitted 2xx (§13.2.2.4). A 2xx from another fork
  is ACKed and ended with BYE.
- Session timers (RFC 4028): when the 2xx names us the refresher we refresh at
  half the interval (UPDATE when the peer allows it, else re-INVITE); when the
  peer refreshes and does not, we send BYE before the session expires (§10).
- Requests from the peer in the dialog: BYE ends the call; re-INVITE and UPDATE
  are answered with :func:`~sipbridge.sip.sdp.answer_offer` (hold included);
  INFO, OPTIONS and NOTIFY are answered 200.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass, replace

from sipbridge.callinfo import CallStatus
from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import NameAddr, SipParseError, SipUri, Target, format_host
from sipbridge.sip.auth import ClientAuth
from sipbridge.sip.dialog import Dialog, DialogError
from sipbridge.sip.message import (
    CSeq,
    Headers,
    SipRequest,
    SipResponse,
    generate_call_id,
    generate_tag,
    make_response,
)
from sipbridge.sip.sdp import (
    MediaOfferConfig,
    NegotiatedSession,
    NoCommonCodecs,
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    negotiate,
    with_direction,
)
from sipbridge.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TwoHundredRetransmitter,
)
from sipbridge.sip.ua import ALLOWED_METHODS, SUPPORTED, UserAgent

__all__ = ["CallEvent", "DtmfReceived", "MediaUpdated", "OutboundCall", "StatusChanged"]

log = logging.getLogger(__name__)

SDP = "application/sdp"
NORMAL_CLEARING = "Normal call clearing"


@dataclass(frozen=True)
class StatusChanged:
    status: CallStatus
    sip_status: int | None
    info: str | None


@dataclass(frozen=True)
class MediaUpdated:
    """A new or changed SDP answer: where the callee's media comes from."""

    negotiated: NegotiatedSession


@dataclass(frozen=True)
class DtmfReceived:
    digit: str
    duration_ms: int | None


CallEvent = StatusChanged | MediaUpdated | DtmfReceived


@dataclass(frozen=True)
class CallTimers:
    """Call-level timers in seconds (settings ``[sip]``)."""

    invite_timeout: float = 60.0
    session_expires: int = 1800
    min_se: int = 90


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (brackets allowed), not a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class OutboundCall:
    """The UAC side of one call (RFC 3261 §13)."""

    def __init__(
        self,
        ua: UserAgent,
        account: SipAccount,
        callee: str,
        media: MediaOfferConfig,
        *,
        timers: CallTimers | None = None,
        auth: ClientAuth | None = None,
    ) -> None:
        self.ua = ua
        self.account = account
        self.callee_uri = callee
        self.media = media
        self.timers = timers or CallTimers()
        self.call_id = generate_call_id(ua.local.advertised_host)
        self.status = CallStatus.NEW
        self.sip_status: int | None = None
        self.info: str | None = None
        self.dialog: Dialog | None = None
        self.negotiated: NegotiatedSession | None = None
        self._auth = auth or ClientAuth(account.username, account.password)
        self._tag = generate_tag()
        self._cseq = 0
        self._session_expires = self.timers.session_expires
        self._offer: SessionDescription = build_offer(media)
        self._sdp_version = media.session_version
        self._invite: SipRequest | None = None
        self._invite_txn: ClientTransaction | None = None
        self._provisional = False
        self._cancel_wanted = False
        self._cancelled = False
        self._ack: SipRequest | None = None
        self._bye_txn: ClientTransaction | None = None
        self._reinvite_txn: ClientTransaction | None = None
        self._reinvite_direction: str | None = None
        self._reinvite_retry_at: float | None = None
        self._reinvite_retry_method = "INVITE"
        # Our offer before the re-offer in flight, restored if the peer refuses it (§14.1).
        self._offer_before: SessionDescription | None = None
        # The ACK of the last 2xx to a re-INVITE, re-sent for its retransmissions.
        self._reinvite_ack: SipRequest | None = None
        self._info_txn: ClientTransaction | None = None
        self._dtmf_queue: list[str] = []
        # The invite timeout while no final response came; after a CANCEL, the 64*T1
        # after which the INVITE is given up (§9.1).
        self._invite_deadline: float | None = None
        self._refresh_at: float | None = None
        self._expire_at: float | None = None
        self._peer_allows_update = False
        self._ok_retransmitter: TwoHundredRetransmitter | None = None
        self._ok_target: Target | None = None
        self._awaiting_ack_answer = False
        # What the call ends with once the BYE we sent completes.
        self._pending_end: tuple[CallStatus, int | None, str] | None = None
        self._ended = False
        self._events: list[CallEvent] = []

    # -- control -------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send the INVITE (§13.2.1)."""
        self.ua.add_session(self)
        self._invite_deadline = now + self.timers.invite_timeout
        self._send_invite(now)
        self._set_status(CallStatus.PENDING)

    def terminate(self, now: float) -> None:
        """Hang up: BYE when answered, CANCEL while ringing (§9.1, §15)."""
        if self._ended or self._bye_txn is not None:
            return
        if self.dialog is not None and not self.dialog.early:
            self._send_bye(now, CallStatus.FINISH, NORMAL_CLEARING)
        elif self._invite_txn is not None:
            self._cancel_wanted = True
            if self._provisional:
                self._send_cancel(now)
        else:
            self._end(CallStatus.FINISH, None, NORMAL_CLEARING)

    def hold(self, now: float) -> bool:
        """Put the call on hold with a ``sendonly`` re-INVITE (RFC 3264 §8.4)."""
        return self._start_reinvite("sendonly", now)

    def unhold(self, now: float) -> bool:
        """Resume with a ``sendrecv`` re-INVITE."""
        return self._start_reinvite("sendrecv", now)

    def send_dtmf_info(self, digits: str, now: float) -> None:
        """Send digits as SIP INFO ``application/dtmf-relay``, one request at a time."""
        self._dtmf_queue.extend(digits)
        self._next_info(now)

    def next_event(self) -> CallEvent | None:
        return self._events.pop(0) if self._events else None

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def offer(self) -> SessionDescription:
        return self._offer

    # -- requests we send ------------------------------------------------------
    def _send_invite(self, now: float) -> None:
        self._cseq += 1
        account = self.account
        body = self._offer.to_bytes()
        headers = Headers()
        headers.add("Max-Forwards", "70")
        if account.proxy_uri:
            headers.add("Route", f"<{account.proxy_uri}>")
        headers.add("From", account.from_header(self._tag))
        headers.add("To", f"<{self.callee_uri}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", str(CSeq(self._cseq, "INVITE")))
        headers.add("Contact", self.ua.contact(account.login, account.transport))
        headers.add("Allow", ALLOWED_METHODS)
        headers.add("Supported", SUPPORTED)
        if self._session_expires:
            headers.add("Session-Expires", str(self._session_expires))
            headers.add("Min-SE", str(self.timers.min_se))
        for name, value in self._auth.authorization_headers("INVITE", self.callee_uri, body):
            headers.add(name, value)
        headers.add("Content-Type", SDP)
        self._invite = SipRequest(headers=headers, body=body, method="INVITE", uri=self.callee_uri)
        # A provisional to an earlier (challenged) INVITE does not allow CANCEL of this one.
        self._provisional = False
        self._invite_txn = self.ua.send_request(self, self._invite, account.proxy, now)

    def _send_cancel(self, now: float) -> None:
        """CANCEL with the INVITE's Request-URI, Via, Call-ID, From, To, Route (§9.1)."""
        if self._cancelled or self._invite is None or self._invite_txn is None:
            return
        self._cancelled = True
        invite = self._invite
        headers = Headers()
        headers.add("Via", invite.headers.get("Via") or "")
        headers.add("Max-Forwards", "70")
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", str(CSeq(invite.cseq.seq, "CANCEL")))
        cancel = SipRequest(headers=headers, method="CANCEL", uri=invite.uri)
        self.ua.send_request(self, cancel, self._invite_txn.target, now, keep_via=True)
        # §9.1: without a final response 64*T1 after the CANCEL, the INVITE is given up.
        self._invite_deadline = now + 64 * self.ua.timers.t1

    def _dialog_target(self) -> Target:
        """Next hop of an in-dialog request: first route, else the remote target (§12.2.1.1)."""
        assert self.dialog is not None
        try:
            uri = self.dialog.next_hop_uri()
        except SipParseError:
            return self.account.proxy
        if not self.dialog.route_set and self.account.proxy_uri:
            return self.account.proxy  # keep using the configured outbound proxy
        if not is_ip_literal(uri.host):
            return self.account.proxy
        transport = uri.transport or self.account.transport
        return Target(transport, uri.host.strip("[]"), uri.port or 5060)

    def _in_dialog(
        self,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> ClientTransaction:
        assert self.dialog is not None
        target = self._dialog_target()
        request = self.dialog.create_request(
            method,
            via=self.ua.via(target.transport),
            contact=self.ua.contact(self.account.login, self.account.transport)
            if method in ("INVITE", "UPDATE")
            else None,
            extra=extra,
            body=body,
            content_type=content_type,
        )
        for name, value in self._auth.authorization_headers(method, request.uri, body):
            request.headers.add(name, value)
        return self.ua.send_request(self, request, target, now)

    def _send_ack(self, response: SipResponse, now: float) -> None:
        """ACK a 2xx, outside any transaction (§13.2.2.4)."""
        del now
        assert self.dialog is not None and self._invite is not None
        target = self._dialog_target()
        ack = self.dialog.create_request(
            "ACK", via=self.ua.via(target.transport), cseq=response.cseq.seq
        )
        for name in ("Authorization", "Proxy-Authorization"):
            for value in self._invite.headers.get_all(name):
                ack.headers.add(name, value)
        ack.headers.add("User-Agent", self.ua.local.user_agent)
        self._ack = ack
        self.ua.send_stateless(ack, target)

    def _send_bye(
        self, now: float, status: CallStatus, info: str, sip_status: int | None = None
    ) -> None:
        self._pending_end = (status, sip_status, info)
        self._refresh_at = self._expire_at = None
        self._bye_txn = self._in_dialog("BYE", now)

    def _can_reoffer(self) -> bool:
        return (
            self.dialog is not None
            and not self.dialog.early
            and not self._ended
            and self._bye_txn is None
        )

    def _start_reinvite(self, direction: str, now: float) -> bool:
        if not self._can_reoffer():
            return False
        self._reinvite_direction = direction
        if self._reinvite_txn is None and self._reinvite_retry_at is None:
            self._send_reoffer(now)
        # else: sent when the pending re-INVITE completes (§14.1: one at a time)
        return True

    def _offer_direction(self) -> str:
        """The direction of our last offer (``sendonly`` while we hold the call)."""
        return next((m.direction for m in self._offer.media if m.port != 0), "sendrecv")

    def _send_reoffer(self, now: float) -> None:
        """re-INVITE with our offer in the wanted direction (RFC 3264 §8)."""
        self._reinvite_retry_at = None
        direction = self._reinvite_direction or self._offer_direction()
        if direction != self._offer_direction() or self._sdp_version != self._offer.session_version:
            # Changed, or we sent an answer since: a new o= version (RFC 3264 §8).
            self._sdp_version += 1
            if self._offer_before is None:  # else a retry (491): keep the agreed one
                self._offer_before = self._offer
            self._offer = with_direction(self._offer, direction, self._sdp_version)
        self._reinvite_txn = self._in_dialog(
            "INVITE",
            now,
            body=self._offer.to_bytes(),
            content_type=SDP,
            extra=self._session_timer_headers("uac"),
        )

    def _refresh_session(self, now: float) -> None:
        if not self._can_reoffer():
            return
        if self._reinvite_txn is not None or self._reinvite_retry_at is not None:
            return  # the pending re-INVITE refreshes the session as well
        if self._peer_allows_update:
            self._reinvite_txn = self._in_dialog(
                "UPDATE", now, extra=self._session_timer_headers("uac")
            )
        else:
            self._send_reoffer(now)

    def _session_timer_headers(self, refresher: str) -> list[tuple[str, str]]:
        if not self._session_expires:
            return []
        return [
            ("Supported", SUPPORTED),
            ("Session-Expires", f"{self._session_expires};refresher={refresher}"),
            ("Min-SE", str(self.timers.min_se)),
        ]

    def _next_info(self, now: float) -> None:
        if self._info_txn is not None or not self._dtmf_queue or self.dialog is None:
            return
        if self._ended or self._bye_txn is not None:
            self._dtmf_queue.clear()
            return
        digit = self._dtmf_queue.pop(0)
        body = f"Signal={digit}\r\nDuration=160\r\n".encode()
        self._info_txn = self._in_dialog(
            "INFO", now, body=body, content_type="application/dtmf-relay"
        )

    # -- responses -------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: SipResponse, now: float) -> None:
        status = response.status
        if txn is self._invite_txn:
            self._on_invite_response(response, now)
        elif txn is self._bye_txn:
            if status < 200:
                return
            if status in (401, 407) and self._challenge(response):
                self._bye_txn = self._in_dialog("BYE", now)
            else:  # any final answer, a refused challenge included, ends the call (§15.1.1)
                self._finish_bye()
        elif txn is self._reinvite_txn:
            self._on_reinvite_response(txn, response, now)
        elif txn is self._info_txn and status >= 200:
            self._info_txn = None
            if status in (401, 407) and self._challenge(response):
                self._dtmf_queue.insert(0, txn.request.body.decode().split("\r\n")[0][7:])
            self._next_info(now)
        elif 200 <= status < 300 and response.cseq.method == "INVITE":
            self._reack(response)

    def _reack(self, response: SipResponse) -> None:
        """A retransmitted 2xx to one of our re-INVITEs: its ACK was lost (§13.2.2.4)."""
        ack = self._reinvite_ack
        if ack is not None and self.dialog is not None and ack.cseq.seq == response.cseq.seq:
            self.ua.send_stateless(ack, self._dialog_target())

    def _challenge(self, response: SipResponse) -> bool:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        return self._auth.on_challenge(response.status, response.headers.get_all(header))

    def _on_invite_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        if not self._ended:  # a late 487 must not overwrite the 408 of the invite timeout
            self.sip_status = status
        if status < 200:
            self._on_provisional(response, now)
        elif status < 300:
            self._on_invite_2xx(response, now)
        else:
            self._invite_txn = None
            self._on_invite_failure(response, now)

    def _on_provisional(self, response: SipResponse, now: float) -> None:
        status = response.status
        # Any provisional, 100 included, allows CANCEL (§9.1).
        self._provisional = True
        if self._ended:
            pass
        elif status == 100:
            if self.status is CallStatus.PENDING:
                self._set_status(CallStatus.TRYING)
        elif status == 183:
            self._set_status(CallStatus.SESSION_PROGRESS)
        elif response.body and status in (180, 181, 182):
            self._set_status(CallStatus.RING_MEDIA)
        else:
            self._set_status(CallStatus.RING)
        if self._cancel_wanted:
            self._send_cancel(now)

    def _on_invite_2xx(self, response: SipResponse, now: float) -> None:
        assert self._invite is not None
        # Answered: neither the invite timeout nor the CANCEL give-up applies any more.
        self._invite_deadline = None
        to_tag = response.to.tag
        if self.dialog is not None and not self.dialog.early:
            if to_tag == self.dialog.remote_tag:
                if self._ack is not None:  # retransmitted 2xx: our ACK was lost
                    self.ua.send_stateless(self._ack, self._dialog_target())
                return
            self._ack_and_bye_fork(response, now)
            return
        try:
            self.dialog = Dialog.from_response(self._invite, response)
        except (DialogError, SipParseError) as exc:
            log.warning("call %s: unusable 2xx: %s", self.call_id, exc)
            self._end(CallStatus.FAILED, response.status, "Failed by error")
            return
        self._peer_allows_update = "UPDATE" in {
            m.strip().upper() for m in response.headers.get_all("Allow")
        }
        self._send_ack(response, now)
        self._auth.reset_failures()
        if self._cancel_wanted:
            self._send_bye(now, CallStatus.FINISH, NORMAL_CLEARING)
            return
        try:
            self.negotiated = negotiate(self._offer, SessionDescription.parse(response.body))
        except NoCommonCodecs:
            self._send_bye(now, CallStatus.FAILED, "No common codecs", response.status)
            return
        except SdpError as exc:
            log.warning("call %s: bad SDP answer: %s", self.call_id, exc)
            self._send_bye(now, CallStatus.FAILED, "Failed by error", response.status)
            return
        self._events.append(MediaUpdated(self.negotiated))
        self._arm_session_timer(response.headers.get("Session-Expires"), now, we_are="uac")
        self._set_status(CallStatus.ESTABLISHED, response.status, None)

    def _ack_and_bye_fork(self, response: SipResponse, now: float) -> None:
        """A 2xx from a second fork: confirm, then end that dialog at once (§13.2.2.4)."""
        assert self._invite is not None
        try:
            fork = Dialog.from_response(self._invite, response)
            uri = fork.next_hop_uri()
        except (DialogError, SipParseError) as exc:
            log.warning("call %s: unusable 2xx from another fork: %s", self.call_id, exc)
            return
        target = (
            Target(uri.transport or self.account.transport, uri.host.strip("[]"), uri.port or 5060)
            if is_ip_literal(uri.host)
            else self.account.proxy
        )
        ack = fork.create_request("ACK", via=self.ua.via(target.transport), cseq=response.cseq.seq)
        self.ua.send_stateless(ack, target)
        # Through a transaction, so that the BYE is retransmitted; its answer is ignored.
        bye = fork.create_request("BYE", via=self.ua.via(target.transport))
        self.ua.send_request(self, bye, target, now)

    def _on_invite_failure(self, response: SipResponse, now: float) -> None:
        status = response.status
        if status in (401, 407) and not self._cancel_wanted and self._challenge(response):
            self._send_invite(now)
            return
        if status == 422 and not self._cancel_wanted:
            min_se = (response.headers.get("Min-SE") or "").split(";")[0].strip()
            if min_se.isdigit() and int(min_se) > self._session_expires:
                self._session_expires = int(min_se)
                self._send_invite(now)
                return
        if self._cancel_wanted:
            self._end(CallStatus.FINISH, status, NORMAL_CLEARING)
        elif status in (486, 600):
            self._end(CallStatus.BUSY, status, response.reason or "Busy")
        else:
            self._end(CallStatus.FAILED, status, response.reason or "Failed by error")

    def _on_reinvite_response(
        self, txn: ClientTransaction, response: SipResponse, now: float
    ) -> None:
        """The answer to our re-INVITE or UPDATE (hold, unhold, session refresh)."""
        status = response.status
        if status < 200:
            return
        self._reinvite_txn = None
        method = txn.request.method
        if 200 <= status < 300:
            self._offer_before = None
            if method == "INVITE" and self.dialog is not None:
                target = self._dialog_target()
                ack = self.dialog.create_request(
                    "ACK", via=self.ua.via(target.transport), cseq=response.cseq.seq
                )
                self._reinvite_ack = ack
                self.ua.send_stateless(ack, target)
            self._arm_session_timer(response.headers.get("Session-Expires"), now, we_are="uac")
            if response.body:
                try:
                    self.negotiated = negotiate(
                        self._offer, SessionDescription.parse(response.body)
                    )
                    self._events.append(MediaUpdated(self.negotiated))
                except SdpError as exc:
                    log.warning("call %s: bad SDP in re-INVITE answer: %s", self.call_id, exc)
            if txn.request.body:
                if self._offer_direction() in ("sendonly", "inactive"):
                    self._set_status(CallStatus.HOLD, status, None)
                elif self.negotiated is not None and _held_by_peer(self.negotiated):
                    self._set_status(CallStatus.HOLD, status, "Held by peer")
                else:
                    self._set_status(CallStatus.ESTABLISHED, status, None)
            self._after_reinvite(now)
            return
        if status in (401, 407) and self._challenge(response):
            self._resend_reinvite(txn, now)
            return
        if status in (408, 481):
            # The dialog is gone (§14.1, §12.2.1.2).
            self._send_bye(now, CallStatus.FAILED, response.reason or "Failed by error", status)
            return
        if status == 491:
            # Glare: we own the Call-ID, so retry after 2.1-4 s (§14.1).
            self._reinvite_retry_at = now + random.uniform(2.1, 4.0)
            self._reinvite_retry_method = method
            return
        if status == 422:
            min_se = (response.headers.get("Min-SE") or "").split(";")[0].strip()
            if min_se.isdigit():
                self._session_expires = max(self._session_expires, int(min_se))
                self._resend_reinvite(txn, now)
                return
        # Refused: the session stays as it was before the offer (§14.1).
        if self._offer_before is not None:
            self._offer = self._offer_before
            self._offer_before = None
            self._reinvite_direction = None  # our hold/unhold was refused: do not insist
        else:
            self._after_reinvite(now)

    def _resend_reinvite(self, txn: ClientTransaction, now: float) -> None:
        request = txn.request
        self._reinvite_txn = self._in_dialog(
            request.method,
            now,
            body=request.body,
            content_type=SDP if request.body else None,
            extra=self._session_timer_headers("uac"),
        )

    def _after_reinvite(self, now: float) -> None:
        """Send a hold/unhold that was asked for while another re-INVITE was pending."""
        wanted = self._reinvite_direction
        if wanted is not None and wanted != self._offer_direction() and self._can_reoffer():
            self._send_reoffer(now)

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        if txn is self._invite_txn:
            self._invite_txn = None
            if self.dialog is None or self.dialog.early:
                info = NORMAL_CLEARING if self._cancel_wanted else "Failed by request timeout"
                status = CallStatus.FINISH if self._cancel_wanted else CallStatus.FAILED
                self._end(status, 408, info)
        elif txn is self._bye_txn:
            self._finish_bye()
        elif txn is self._reinvite_txn:
            self._reinvite_txn = None
            self._send_bye(now, CallStatus.FAILED, "Failed by request timeout", 408)
        elif txn is self._info_txn:
            self._info_txn = None
            self._next_info(now)

    def on_transport_error(self, txn: ClientTransaction, reason: str, now: float) -> None:
        log.warning("call %s: transport error: %s", self.call_id, reason)
        if txn is self._bye_txn:
            self._finish_bye()
        elif txn is self._invite_txn and (self.dialog is None or self.dialog.early):
            self._invite_txn = None
            self._end(CallStatus.FAILED, 503, "Failed by error")
        elif txn is self._reinvite_txn:
            self._reinvite_txn = None
            self._send_bye(now, CallStatus.FAILED, "Failed by error", 503)
        elif txn is self._info_txn:
            self._info_txn = None
            self._next_info(now)

    def on_stray_response(self, response: SipResponse, now: float) -> None:
        """A 2xx retransmission after the INVITE transaction ended: ACK it again."""
        if response.status // 100 == 2 and response.cseq.method == "INVITE":
            if self.dialog is not None and response.to.tag == self.dialog.remote_tag:
                ack = self._ack
                if ack is not None and ack.cseq.seq == response.cseq.seq:
                    self.ua.send_stateless(ack, self._dialog_target())
                else:
                    self._reack(response)
            elif self._invite is not None and response.cseq.seq == self._invite.cseq.seq:
                self._ack_and_bye_fork(response, now)

    # -- requests from the peer ------------------------------------------------
    def on_request(
        self, txn: ServerTransaction | None, request: SipRequest, source: Target, now: float
    ) -> None:
        if txn is None:  # ACK for our 2xx to a re-INVITE
            self._on_ack(request)
            return
        dialog = self.dialog
        if dialog is None or not dialog.matches(request):
            self.ua.respond(txn, make_response(request, 481), now)
            return
        try:
            dialog.check_request(request)
        except DialogError as exc:
            self.ua.respond(txn, make_response(request, exc.status, str(exc)), now)
            return
        method = request.method
        if method == "BYE":
            self.ua.respond(txn, make_response(request, 200), now)
            self._end(CallStatus.FINISH, None, NORMAL_CLEARING)
        elif method in ("INVITE", "UPDATE"):
            self._on_offer_request(txn, request, source, now)
        elif method == "INFO":
            self.ua.respond(txn, make_response(request, 200), now)
            self._on_info(request)
        elif method in ("OPTIONS", "NOTIFY"):
            self.ua.respond(
                txn, make_response(request, 200, headers=[("Allow", ALLOWED_METHODS)]), now
            )
        else:
            self.ua.respond(
                txn, make_response(request, 405, headers=[("Allow", ALLOWED_METHODS)]), now
            )

    def _on_offer_request(
        self, txn: ServerTransaction, request: SipRequest, source: Target, now: float
    ) -> None:
        """re-INVITE or UPDATE from the peer: hold/resume, new media, session refresh."""
        if self._reinvite_txn is not None and request.method == "INVITE":
            self.ua.respond(txn, make_response(request, 491), now)
            return
        if self._ended or self._bye_txn is not None:
            self.ua.respond(txn, make_response(request, 481), now)
            return
        extra: list[tuple[str, str]] = [("Allow", ALLOWED_METHODS)]
        se = request.headers.get("Session-Expires")
        if se is not None:
            refresher = "uac" if "refresher=uas" not in se.replace(" ", "") else "uas"
            # The peer sent the request, so in this transaction it is the UAC.
            interval = se.split(";")[0].strip()
            extra += [
                ("Require", "timer"),
                ("Session-Expires", f"{interval};refresher={refresher}"),
            ]
            self._arm_session_timer(f"{interval};refresher={refresher}", now, we_are="uas")
        body = b""
        if request.body:
            try:
                remote = SessionDescription.parse(request.body)
                self._sdp_version += 1
                # Answer within our own direction: a call we hold stays held (RFC 3264 §8.4).
                config = replace(
                    self.media,
                    session_version=self._sdp_version,
                    direction=self._offer_direction(),
                )
                answer, negotiated = answer_offer(remote, config, self.negotiated)
            except SdpError as exc:
                self.ua.respond(
                    txn,
                    make_response(
                        request,
                        488,
                        "Not Acceptable Here",
                        headers=[("Warning", f'399 sipbridge "{exc}"')],
                    ),
                    now,
                )
                return
            self.negotiated = negotiated
            self._events.append(MediaUpdated(negotiated))
            body = answer.to_bytes()
            self._update_hold_from_peer(negotiated)
        elif request.method == "INVITE":
            body = self._offer.to_bytes()  # offerless re-INVITE: our offer in the 2xx (§14.2)
            self._awaiting_ack_answer = True
        contact = self.ua.contact(self.account.login, self.account.transport)
        headers = [("Contact", contact), *extra]
        if body:
            headers.append(("Content-Type", SDP))
        response = make_response(request, 200, headers=headers, body=body)
        self.ua.respond(txn, response, now)
        if request.method == "INVITE" and source.transport == "udp":
            self._ok_retransmitter = TwoHundredRetransmitter(
                response, reliable=False, timers=self.ua.timers
            )
            self._ok_target = source
            self._ok_retransmitter.start(now)

    def _update_hold_from_peer(self, negotiated: NegotiatedSession) -> None:
        on_hold = _held_by_peer(negotiated)
        if on_hold and self.status is CallStatus.ESTABLISHED:
            self._set_status(CallStatus.HOLD, self.sip_status, "Held by peer")
        elif (
            not on_hold
            and self.status is CallStatus.HOLD
            and self._offer_direction() not in ("sendonly", "inactive")
        ):
            self._set_status(CallStatus.ESTABLISHED, self.sip_status, None)

    def _on_ack(self, request: SipRequest) -> None:
        if self._ok_retransmitter is not None:
            if not self._ok_retransmitter.matches_ack(request):
                return  # a late ACK of an earlier 2xx (§13.3.1.4: same CSeq number)
            self._ok_retransmitter.ack_received()
            self._ok_retransmitter = None
        if self._awaiting_ack_answer and request.body:
            self._awaiting_ack_answer = False
            try:
                self.negotiated = negotiate(self._offer, SessionDescription.parse(request.body))
                self._events.append(MediaUpdated(self.negotiated))
            except SdpError as exc:
                log.warning("call %s: bad SDP answer in ACK: %s", self.call_id, exc)

    def _on_info(self, request: SipRequest) -> None:
        content_type = (request.headers.get("Content-Type") or "").lower()
        if "dtmf-relay" not in content_type:
            return
        fields = {
            name.strip(): value
            for name, _, value in (
                line.partition("=")
                for line in request.body.decode(errors="replace").splitlines()
                if "=" in line
            )
        }
        signal = fields.get("Signal", "").strip()
        duration = fields.get("Duration", "").strip()
        if signal:
            self._events.append(DtmfReceived(signal, int(duration) if duration.isdigit() else None))

    # -- timers ------------------------------------------------------------------
    def _arm_session_timer(self, header: str | None, now: float, *, we_are: str) -> None:
        """RFC 4028 §7.2/§9: who refreshes, and when the session expires."""
        if not header:
            return
        interval_text, _, params = header.partition(";")
        if not interval_text.strip().isdigit():
            return
        interval = int(interval_text.strip())
        refresher = "uac"
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "refresher":
                refresher = value.strip().lower()
        self._session_expires = interval
        if refresher == we_are:
            self._refresh_at = now + interval / 2
            self._expire_at = None
        else:
            self._refresh_at = None
            self._expire_at = now + interval - min(32.0, interval / 3)

    def get_timer(self) -> float | None:
        deadlines = [
            self._refresh_at,
            self._expire_at,
            self._reinvite_retry_at,
            self._invite_deadline if self._invite_txn is not None else None,
            self._ok_retransmitter.get_timer() if self._ok_retransmitter else None,
        ]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        if self._ok_retransmitter is not None and self._ok_target is not None:
            deadline = self._ok_retransmitter.get_timer()
            if deadline is not None and deadline <= now:
                self._ok_retransmitter.handle_timer(now)
            for message in self._ok_retransmitter.messages_to_send():
                self.ua.send_stateless(message, self._ok_target)
            if self._ok_retransmitter.next_event() is not None:  # TimedOut: no ACK (§13.3.1.4)
                self._ok_retransmitter = None
                self._send_bye(now, CallStatus.FAILED, "Failed by request timeout", 408)
                return
        if self._invite_deadline is not None and now >= self._invite_deadline:
            self._invite_deadline = None
            if self._invite_txn is not None and self.dialog is None:
                self._on_invite_deadline(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._refresh_session(now)
        if self._expire_at is not None and now >= self._expire_at:
            self._expire_at = None
            self._send_bye(now, CallStatus.FAILED, "Failed by session timer expiry", 408)
        if self._reinvite_retry_at is not None and now >= self._reinvite_retry_at:
            self._reinvite_retry_at = None
            if self._reinvite_txn is None and self._can_reoffer():
                if self._reinvite_retry_method == "UPDATE":
                    self._refresh_session(now)
                else:
                    self._send_reoffer(now)

    def _on_invite_deadline(self, now: float) -> None:
        if self._cancelled:
            # §9.1: 64*T1 after our CANCEL and still no final response: give the INVITE up.
            log.info("call %s: no final response after CANCEL", self.call_id)
            self._invite_txn = None
            self._end(CallStatus.FINISH, None, NORMAL_CLEARING)
            return
        log.info("call %s: no answer in %.0f s", self.call_id, self.timers.invite_timeout)
        self._cancel_wanted = True
        if self._provisional:
            self._send_cancel(now)
        # The session stays until the INVITE transaction ends: a 2xx may still come (§15).
        self._end(CallStatus.FAILED, 408, "Failed by request timeout", keep_session=True)

    # -- endings -----------------------------------------------------------------
    def _finish_bye(self) -> None:
        status, sip_status, info = self._pending_end or (CallStatus.FINISH, None, NORMAL_CLEARING)
        self._end(status, sip_status if sip_status is not None else self.sip_status, info)

    def _end(
        self,
        status: CallStatus,
        sip_status: int | None,
        info: str | None,
        *,
        keep_session: bool = False,
    ) -> None:
        if not self._ended:
            self._ended = True
            self._refresh_at = self._expire_at = self._reinvite_retry_at = None
            self._ok_retransmitter = None
            self._set_status(status, sip_status, info)
        if not keep_session:
            # Also when already ended with keep_session (invite timeout): this is the
            # later end of the INVITE transaction, and the session must go.
            self._invite_deadline = None
            self.ua.remove_session(self)

    def _set_status(
        self, status: CallStatus, sip_status: int | None = None, info: str | None = None
    ) -> None:
        if sip_status is not None:
            self.sip_status = sip_status
        if status is self.status and info == self.info:
            return
        self.status = status
        self.info = info
        self._events.append(StatusChanged(status, self.sip_status, info))


def _held_by_peer(negotiated: NegotiatedSession) -> bool:
    """Whether the peer's SDP stops its receiving on every stream (RFC 3264 §8.4)."""
    directions = {s.direction for s in (negotiated.audio, negotiated.video) if s is not None}
    return bool(directions) and directions <= {"sendonly", "inactive"}


def callee_uri(callee: str, domain: str, port: int | None = None) -> str:
    """The Request-URI for a WCS ``callee``: a user part, ``user@host`` or a SIP URI."""
    callee = callee.strip()
    if callee.lower().startswith(("sip:", "sips:")):
        return str(SipUri.parse(callee))
    if callee.lower().startswith("tel:"):
        callee = callee[4:]
    if "@" in callee:
        return str(SipUri.parse(f"sip:{callee}"))
    host = format_host(domain)
    host = f"{host}:{port}" if port not in (None, 5060) else host
    return str(SipUri.parse(f"sip:{callee}@{host}"))


def display_target(uri: str) -> str:
    """The callee as shown in reports: ``user@host`` without scheme or params."""
    try:
        parsed = NameAddr.parse(f"<{uri}>").sip_uri
    except SipParseError:
        return uri
    return f"{parsed.user}@{parsed.host}" if parsed.user else parsed.host
