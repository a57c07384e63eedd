"""One confirmed INVITE dialog usage (RFC 3261 §12-15, RFC 3264, RFC 3311, RFC 4028), sans-IO.

Theory of operation
-------------------
:class:`InviteSession` is what a call does inside its confirmed dialog;
:class:`~sipbridge.sip.invite.OutboundCall` adds the initial INVITE, CANCEL and
forking on top and sets :attr:`dialog` from the first 2xx. We own the Call-ID
(we sent the INVITE), which decides the 491 retry delay (§14.1).

- hold/unhold and session refreshes are one re-INVITE (or UPDATE) at a time
  (§14.1): a direction asked for meanwhile is sent when the pending one
  completes; a refused re-offer leaves the previous offer in force
  (:class:`~sipbridge.sip.local_offer.LocalOffer`); 491 is retried after 2.1-4 s;
  408 and 481 end the call (§12.2.1.2).
- Session timers (RFC 4028, :class:`~sipbridge.sip.session_timer.SessionTimer`):
  when a 2xx names us the refresher we refresh at half the interval (UPDATE when
  the peer allows it, else re-INVITE); when the peer refreshes and does not, we
  send BYE before the session expires (§10).
- Requests from the peer: BYE ends the call; re-INVITE and UPDATE are answered
  with :func:`~sipbridge.sip.sdp.answer_offer` (hold included), or 491 when they
  cross an offer of ours (§14.2, RFC 3311 §5.2); our 2xx to a re-INVITE is
  retransmitted over UDP until its ACK (§13.3.1.4), and an offerless re-INVITE
  gets our offer, answered in the ACK (§14.2); INFO (``application/dtmf-relay``
  read as digits), OPTIONS and NOTIFY are answered 200, other methods 405.
- DTMF goes out as one INFO at a time; a BYE we send ends the call on any final
  response, or none (§15.1.1).
"""

from __future__ import annotations

import logging
import random

from sipbridge.callinfo import CallStatus
from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import SipParseError, Target
from sipbridge.sip.auth import ClientAuth
from sipbridge.sip.call_events import (
    CallEvent,
    CallTimers,
    DtmfReceived,
    MediaUpdated,
    StatusChanged,
)
from sipbridge.sip.dialog import Dialog, DialogError
from sipbridge.sip.dtmf_relay import DtmfRelay
from sipbridge.sip.local_offer import LocalOffer
from sipbridge.sip.message import SipRequest, SipResponse, make_response
from sipbridge.sip.offer_answer import MediaOfferConfig, NegotiatedSession
from sipbridge.sip.sdp import SdpError, SessionDescription
from sipbridge.sip.session_timer import SessionTimer, parse_min_se
from sipbridge.sip.targets import uri_target
from sipbridge.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TwoHundredRetransmitter,
)
from sipbridge.sip.ua import ALLOWED_METHODS, SUPPORTED, UserAgent

__all__ = ["NORMAL_CLEARING", "SDP", "InviteSession"]

log = logging.getLogger(__name__)

SDP = "application/sdp"
NORMAL_CLEARING = "Normal call clearing"
#: RFC 5168 §4: "XML Schema for Media Control", the fast-update request phones know.
MEDIA_CONTROL = "application/media_control+xml"
PICTURE_FAST_UPDATE = (
    b'<?xml version="1.0" encoding="utf-8" ?>\r\n'
    b"<media_control><vc_primitive><to_encoder><picture_fast_update/>"
    b"</to_encoder></vc_primitive></media_control>\r\n"
)


class InviteSession:
    """A call inside its INVITE dialog: re-offers, session timer, INFO, BYE (RFC 3261 §12-15)."""

    def __init__(
        self,
        ua: UserAgent,
        account: SipAccount,
        media: MediaOfferConfig,
        *,
        call_id: str,
        timers: CallTimers | None = None,
        auth: ClientAuth | None = None,
    ) -> None:
        self.ua = ua
        self.account = account
        self.media = media
        self.timers = timers or CallTimers()
        self.call_id = call_id
        self.status = CallStatus.NEW
        self.sip_status: int | None = None
        self.info: str | None = None
        #: Set once the dialog is confirmed; in-dialog requests need it.
        self.dialog: Dialog | None = None
        self.negotiated: NegotiatedSession | None = None
        self._auth = auth or ClientAuth(account.username, account.password)
        self._session_timer = SessionTimer(self.timers.session_expires, self.timers.min_se)
        self._local = LocalOffer(media)
        self._bye_txn: ClientTransaction | None = None
        self._reinvite_txn: ClientTransaction | None = None
        self._reinvite_direction: str | None = None
        self._reinvite_retry_at: float | None = None
        self._reinvite_retry_method = "INVITE"
        # The ACK of the last 2xx to a re-INVITE, re-sent for its retransmissions.
        self._reinvite_ack: SipRequest | None = None
        self._info_txn: ClientTransaction | None = None
        self._info_queue: list[tuple[str, bytes]] = []
        self._peer_allows_update = False
        self._ok_retransmitter: TwoHundredRetransmitter | None = None
        self._ok_target: Target | None = None
        # Our offer went in the 2xx to an offerless re-INVITE; its answer comes in the ACK.
        self._awaiting_ack_answer = False
        # What the call ends with once the BYE we sent completes.
        self._pending_end: tuple[CallStatus, int | None, str] | None = None
        self._ended = False
        self._events: list[CallEvent] = []

    # -- control -------------------------------------------------------------
    def hold(self, now: float) -> bool:
        """Put the call on hold with a ``sendonly`` re-INVITE (RFC 3264 §8.4)."""
        return self._start_reinvite("sendonly", now)

    def unhold(self, now: float) -> bool:
        """Resume with a ``sendrecv`` re-INVITE."""
        return self._start_reinvite("sendrecv", now)

    def send_dtmf_info(self, digits: str, now: float) -> None:
        """Send digits as SIP INFO ``application/dtmf-relay``, one request at a time."""
        self._info_queue.extend(
            (DtmfRelay.CONTENT_TYPE, bytes(DtmfRelay(digit, 160))) for digit in digits
        )
        self._next_info(now)

    def request_picture_fast_update(self, now: float) -> None:
        """Ask the callee's encoder for a keyframe with SIP INFO (RFC 5168), for
        phones that ignore RTCP PLI/FIR; one pending request at most."""
        if any(kind == MEDIA_CONTROL for kind, _ in self._info_queue):
            return
        self._info_queue.append((MEDIA_CONTROL, PICTURE_FAST_UPDATE))
        self._next_info(now)

    def next_event(self) -> CallEvent | None:
        """The oldest event not yet taken, or ``None``."""
        return self._events.pop(0) if self._events else None

    @property
    def ended(self) -> bool:
        """Whether the call is over (its last :class:`StatusChanged` is queued)."""
        return self._ended

    @property
    def offer(self) -> SessionDescription:
        """Our offer in force (the last one the peer accepted, or the one in flight)."""
        return self._local.current

    # -- requests we send ------------------------------------------------------
    def _dialog_target(self) -> Target:
        """Next hop of an in-dialog request: first route, else the remote target (§12.2.1.1)."""
        assert self.dialog is not None
        try:
            uri = self.dialog.next_hop_uri()
        except SipParseError:
            return self.account.proxy
        if not self.dialog.route_set and self.account.proxy_uri:
            return self.account.proxy  # keep using the configured outbound proxy
        return uri_target(uri, self.account.transport) or self.account.proxy

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

    def _send_bye(
        self, now: float, status: CallStatus, info: str, sip_status: int | None = None
    ) -> None:
        self._pending_end = (status, sip_status, info)
        self._session_timer.stop()
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

    def _send_reoffer(self, now: float) -> None:
        """re-INVITE with our offer in the wanted direction (RFC 3264 §8)."""
        self._reinvite_retry_at = None
        offer = self._local.reoffer(self._reinvite_direction or self._local.direction)
        self._reinvite_txn = self._in_dialog(
            "INVITE",
            now,
            body=offer.to_bytes(),
            content_type=SDP,
            extra=self._session_timer_headers(),
        )

    def _refresh_session(self, now: float) -> None:
        if not self._can_reoffer():
            return
        if self._reinvite_txn is not None or self._reinvite_retry_at is not None:
            return  # the pending re-INVITE refreshes the session as well
        if self._peer_allows_update:
            self._reinvite_txn = self._in_dialog("UPDATE", now, extra=self._session_timer_headers())
        else:
            self._send_reoffer(now)

    def _session_timer_headers(self) -> list[tuple[str, str]]:
        """For our re-INVITE or UPDATE: we send it, so as its UAC we refresh (RFC 4028 §7.3)."""
        headers = self._session_timer.headers("uac")
        return [("Supported", SUPPORTED), *headers] if headers else []

    def _next_info(self, now: float) -> None:
        if self._info_txn is not None or not self._info_queue or self.dialog is None:
            return
        if self._ended or self._bye_txn is not None:
            self._info_queue.clear()
            return
        content_type, body = self._info_queue.pop(0)
        self._info_txn = self._in_dialog("INFO", now, body=body, content_type=content_type)

    # -- responses -------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: SipResponse, now: float) -> None:
        """A response to one of our in-dialog requests."""
        status = response.status
        if txn is self._bye_txn:
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
                content_type = txn.request.headers.get("Content-Type") or DtmfRelay.CONTENT_TYPE
                self._info_queue.insert(0, (content_type, txn.request.body))
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
            self._local.accepted()
            if method == "INVITE" and self.dialog is not None:
                target = self._dialog_target()
                ack = self.dialog.create_request(
                    "ACK", via=self.ua.via(target.transport), cseq=response.cseq.seq
                )
                self._reinvite_ack = ack
                self.ua.send_stateless(ack, target)
            self._session_timer.arm(response.headers.get("Session-Expires"), now, we_are="uac")
            if response.body:
                try:
                    self.negotiated = self._local.negotiate(response.body)
                    self._events.append(MediaUpdated(self.negotiated))
                except SdpError as exc:
                    log.warning("call %s: bad SDP in re-INVITE answer: %s", self.call_id, exc)
            if txn.request.body:
                if self._local.direction in ("sendonly", "inactive"):
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
            min_se = parse_min_se(response.headers.get("Min-SE"))
            if min_se is not None:
                self._session_timer.raise_interval(min_se)
                self._resend_reinvite(txn, now)
                return
        # Refused: the session stays as it was before the offer (§14.1).
        if self._local.refused():
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
            extra=self._session_timer_headers(),
        )

    def _after_reinvite(self, now: float) -> None:
        """Send a hold/unhold that was asked for while another re-INVITE was pending."""
        wanted = self._reinvite_direction
        if wanted is not None and wanted != self._local.direction and self._can_reoffer():
            self._send_reoffer(now)

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        """No final response to one of our in-dialog requests (Timer B or F, §17.1)."""
        if txn is self._bye_txn:
            self._finish_bye()
        elif txn is self._reinvite_txn:
            self._reinvite_txn = None
            self._send_bye(now, CallStatus.FAILED, "Failed by request timeout", 408)
        elif txn is self._info_txn:
            self._info_txn = None
            self._next_info(now)

    def on_transport_error(self, txn: ClientTransaction, reason: str, now: float) -> None:
        """One of our in-dialog requests could not be sent (§8.1.3.1)."""
        log.warning("call %s: transport error: %s", self.call_id, reason)
        if txn is self._bye_txn:
            self._finish_bye()
        elif txn is self._reinvite_txn:
            self._reinvite_txn = None
            self._send_bye(now, CallStatus.FAILED, "Failed by error", 503)
        elif txn is self._info_txn:
            self._info_txn = None
            self._next_info(now)

    def on_stray_response(self, response: SipResponse, now: float) -> None:
        """A 2xx retransmission after our re-INVITE's transaction ended: ACK it again."""
        del now
        if response.status // 100 != 2 or response.cseq.method != "INVITE":
            return
        if self.dialog is not None and response.to.tag == self.dialog.remote_tag:
            self._reack(response)

    # -- requests from the peer ------------------------------------------------
    def on_request(
        self, txn: ServerTransaction | None, request: SipRequest, source: Target, now: float
    ) -> None:
        """A request from the peer in the dialog; ``txn`` is ``None`` for an ACK (§17.2.1)."""
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

    def _crosses_our_offer(self, request: SipRequest) -> bool:
        """Glare: the peer's re-INVITE or UPDATE offer meets one of ours (§14.2, RFC 3311 §5.2).

        A re-INVITE while our re-INVITE or UPDATE is pending; an UPDATE with an offer
        while an offer of ours awaits its answer: in our re-INVITE or UPDATE, or in our
        2xx to an offerless re-INVITE (the answer comes in the ACK).
        """
        ours = self._reinvite_txn
        if request.method == "INVITE":
            return ours is not None
        if not request.body:
            return False  # a bare session refresh (RFC 4028 §9)
        return (ours is not None and bool(ours.request.body)) or self._awaiting_ack_answer

    def _on_offer_request(
        self, txn: ServerTransaction, request: SipRequest, source: Target, now: float
    ) -> None:
        """re-INVITE or UPDATE from the peer: hold/resume, new media, session refresh."""
        if self._crosses_our_offer(request):
            self.ua.respond(txn, make_response(request, 491), now)
            return
        if self._ended or self._bye_txn is not None:
            self.ua.respond(txn, make_response(request, 481), now)
            return
        extra = [("Allow", ALLOWED_METHODS)]
        extra += self._session_timer.answer(request.headers.get("Session-Expires"), now)
        body = b""
        if request.body:
            try:
                answer, negotiated = self._local.answer(request.body, self.negotiated)
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
            # Offerless re-INVITE: our offer in the 2xx, the answer in the ACK (§14.2).
            body = self._local.current.to_bytes()
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
            and self._local.direction not in ("sendonly", "inactive")
        ):
            self._set_status(CallStatus.ESTABLISHED, self.sip_status, None)

    def _on_ack(self, request: SipRequest) -> None:
        if self._ok_retransmitter is not None:
            if not self._ok_retransmitter.matches_ack(request):
                return  # a late ACK of an earlier 2xx (§13.3.1.4: same CSeq number)
            self._ok_retransmitter.ack_received()
            self._ok_retransmitter = None
        if not self._awaiting_ack_answer:
            return
        # This ACK ends our offer in the 2xx, answered or not (§14.2).
        self._awaiting_ack_answer = False
        if not request.body:
            log.warning("call %s: ACK without the SDP answer to our offer", self.call_id)
            return
        try:
            self.negotiated = self._local.negotiate(request.body)
            self._events.append(MediaUpdated(self.negotiated))
        except SdpError as exc:
            log.warning("call %s: bad SDP answer in ACK: %s", self.call_id, exc)

    def _on_info(self, request: SipRequest) -> None:
        content_type = (request.headers.get("Content-Type") or "").lower()
        if "dtmf-relay" not in content_type:
            return
        try:
            relay = DtmfRelay.parse(request.body)
        except ValueError:
            return  # no digit in it: nothing to report
        self._events.append(DtmfReceived(relay.signal, relay.duration_ms))

    # -- timers ------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The next deadline in the dialog (session timer, re-offer retry, 2xx retransmission)."""
        deadlines = [
            self._session_timer.get_timer(),
            self._reinvite_retry_at,
            self._ok_retransmitter.get_timer() if self._ok_retransmitter else None,
        ]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at ``now``."""
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
        if self._session_timer.refresh_due(now):
            self._refresh_session(now)
        if self._session_timer.expiry_due(now):
            self._send_bye(now, CallStatus.FAILED, "Failed by session timer expiry", 408)
        if self._reinvite_retry_at is not None and now >= self._reinvite_retry_at:
            self._reinvite_retry_at = None
            if self._reinvite_txn is None and self._can_reoffer():
                if self._reinvite_retry_method == "UPDATE":
                    self._refresh_session(now)
                else:
                    self._send_reoffer(now)

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
        """The call is over; ``keep_session`` leaves it with the UA for a pending transaction."""
        if not self._ended:
            self._ended = True
            self._session_timer.stop()
            self._reinvite_retry_at = None
            self._ok_retransmitter = None
            self._set_status(status, sip_status, info)
        if not keep_session:
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
