"""An outbound call from INVITE to BYE (RFC 3261 §9, §13-15, RFC 3264, RFC 4028), sans-IO.

Theory of operation
-------------------
:class:`OutboundCall` is the UAC side of one INVITE session, driven by the
:class:`~sipbridge.sip.ua.UserAgent`. Its status uses the WCS vocabulary:

    NEW -> PENDING (INVITE sent) -> TRYING (100) -> RING / RING_MEDIA (180 without
    / with SDP) / SESSION_PROGRESS (183) -> ESTABLISHED (2xx, ACKed, SDP answer
    negotiated) <-> HOLD -> FINISH (BYE either way, CANCEL) | BUSY (486, 600) |
    FAILED (any other final, timeout, no common codec)

This module holds the initial INVITE; what the call does once its dialog is
confirmed (re-INVITE/UPDATE either way, session timers, INFO, BYE) is
:class:`~sipbridge.sip.invite_session.InviteSession`, which it extends.

- 401/407 to the INVITE are answered once per fresh challenge with digest
  credentials (§22.2); 422 is retried with the larger Min-SE (RFC 4028 §7.4).
- ``terminate()`` before the answer sends CANCEL as soon as a provisional has
  arrived (§9.1); a 2xx that still arrives is ACKed and BYEd (§15). Without a
  final response 64*T1 after the CANCEL the INVITE is given up (§9.1). The
  invite timeout applies until the first 2xx only.
- The ACK for a 2xx is sent by this object, outside any transaction, and is
  sent again for every retransmitted 2xx (§13.2.2.4). A 2xx from another fork
  is ACKed and ended with BYE.

The events, the call timers and the callee helpers live in
:mod:`~sipbridge.sip.call_events` and :mod:`~sipbridge.sip.targets`; they are
re-exported here for the gateway and the tests.
"""

from __future__ import annotations

import logging

from sipbridge.callinfo import CallStatus
from sipbridge.sip.account import SipAccount
from sipbridge.sip.address import SipParseError
from sipbridge.sip.auth import ClientAuth
from sipbridge.sip.call_events import (
    CallEvent,
    CallTimers,
    DtmfReceived,
    MediaUpdated,
    StatusChanged,
)
from sipbridge.sip.crypto import SrtpRequired
from sipbridge.sip.dialog import Dialog, DialogError
from sipbridge.sip.invite_session import NORMAL_CLEARING, SDP, InviteSession
from sipbridge.sip.message import (
    CSeq,
    Headers,
    SipRequest,
    SipResponse,
    generate_call_id,
    generate_tag,
)
from sipbridge.sip.offer_answer import MediaOfferConfig
from sipbridge.sip.sdp import NoCommonCodecs, SdpError
from sipbridge.sip.session_timer import parse_min_se
from sipbridge.sip.targets import callee_uri, display_target, is_ip_literal, uri_target
from sipbridge.sip.transaction import ClientTransaction
from sipbridge.sip.ua import ALLOWED_METHODS, SUPPORTED, UserAgent

__all__ = [
    "CallEvent",
    "CallTimers",
    "DtmfReceived",
    "InviteSession",
    "MediaUpdated",
    "OutboundCall",
    "StatusChanged",
    "callee_uri",
    "display_target",
    "is_ip_literal",
]

log = logging.getLogger(__name__)


class OutboundCall(InviteSession):
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
        super().__init__(
            ua,
            account,
            media,
            call_id=generate_call_id(ua.local.advertised_host),
            timers=timers,
            auth=auth,
        )
        self.callee_uri = callee
        self._tag = generate_tag()
        self._cseq = 0
        self._invite: SipRequest | None = None
        self._invite_txn: ClientTransaction | None = None
        self._provisional = False
        self._cancel_wanted = False
        self._cancelled = False
        # The ACK of the 2xx to the INVITE, re-sent for its retransmissions.
        self._ack: SipRequest | None = None
        # The invite timeout while no final response came; after a CANCEL, the 64*T1
        # after which the INVITE is given up (§9.1).
        self._invite_deadline: float | None = None

    # -- control -------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send the INVITE (§13.2.1)."""
        self.ua.add_session(self)
        self._invite_deadline = now + self.timers.invite_timeout
        self._send_invite(now)
        self._set_status(CallStatus.PENDING)

    def terminate(
        self,
        now: float,
        *,
        status: CallStatus = CallStatus.FINISH,
        info: str = NORMAL_CLEARING,
    ) -> None:
        """Hang up: BYE when answered, CANCEL while ringing (§9.1, §15).

        ``status``/``info`` say why when the gateway ends an answered call
        itself (e.g. FAILED "Failed by RTP activity").
        """
        if self._ended or self._bye_txn is not None:
            return
        if self.dialog is not None and not self.dialog.early:
            self._send_bye(now, status, info)
        elif self._invite_txn is not None:
            self._cancel_wanted = True
            if self._provisional:
                self._send_cancel(now)
        else:
            self._end(CallStatus.FINISH, None, NORMAL_CLEARING)

    # -- requests we send ------------------------------------------------------
    def _send_invite(self, now: float) -> None:
        self._cseq += 1
        account = self.account
        body = self._local.current.to_bytes()
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
        # No refresher: the answerer chooses (RFC 4028 §7.1).
        for name, value in self._session_timer.headers():
            headers.add(name, value)
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

    # -- responses -------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: SipResponse, now: float) -> None:
        """A response to the INVITE, or to one of our in-dialog requests."""
        if txn is self._invite_txn:
            self._on_invite_response(response, now)
        else:
            super().on_response(txn, response, now)

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
            self.negotiated = self._local.negotiate(response.body)
        except NoCommonCodecs:
            self._send_bye(now, CallStatus.FAILED, "No common codecs", response.status)
            return
        except SrtpRequired as exc:
            log.warning("call %s: %s", self.call_id, exc)
            self._send_bye(now, CallStatus.FAILED, "SRTP required", response.status)
            return
        except SdpError as exc:
            log.warning("call %s: bad SDP answer: %s", self.call_id, exc)
            self._send_bye(now, CallStatus.FAILED, "Failed by error", response.status)
            return
        self._events.append(MediaUpdated(self.negotiated))
        self._session_timer.arm(response.headers.get("Session-Expires"), now, we_are="uac")
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
        target = uri_target(uri, self.account.transport) or self.account.proxy
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
            min_se = parse_min_se(response.headers.get("Min-SE"))
            if min_se is not None and self._session_timer.raise_interval(min_se):
                self._send_invite(now)
                return
        if self._cancel_wanted:
            self._end(CallStatus.FINISH, status, NORMAL_CLEARING)
        elif status in (486, 600):
            self._end(CallStatus.BUSY, status, response.reason or "Busy")
        else:
            self._end(CallStatus.FAILED, status, response.reason or "Failed by error")

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        """Timer B of the INVITE (§17.1.1.2), or an in-dialog request timed out."""
        if txn is not self._invite_txn:
            super().on_timeout(txn, now)
            return
        self._invite_txn = None
        if self.dialog is None or self.dialog.early:
            info = NORMAL_CLEARING if self._cancel_wanted else "Failed by request timeout"
            status = CallStatus.FINISH if self._cancel_wanted else CallStatus.FAILED
            self._end(status, 408, info)

    def on_transport_error(self, txn: ClientTransaction, reason: str, now: float) -> None:
        """The INVITE, or an in-dialog request, could not be sent (§8.1.3.1)."""
        super().on_transport_error(txn, reason, now)
        if txn is self._invite_txn and (self.dialog is None or self.dialog.early):
            self._invite_txn = None
            self._end(CallStatus.FAILED, 503, f"Failed by error: {reason}")

    def on_stray_response(self, response: SipResponse, now: float) -> None:
        """A 2xx retransmission after the INVITE transaction ended: ACK it again."""
        if response.status // 100 != 2 or response.cseq.method != "INVITE":
            return
        if self.dialog is not None and response.to.tag == self.dialog.remote_tag:
            ack = self._ack
            if ack is not None and ack.cseq.seq == response.cseq.seq:
                self.ua.send_stateless(ack, self._dialog_target())
            else:
                super().on_stray_response(response, now)  # one to a re-INVITE of ours
        elif self._invite is not None and response.cseq.seq == self._invite.cseq.seq:
            self._ack_and_bye_fork(response, now)

    # -- timers ------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The next deadline: the invite timeout or CANCEL give-up, else the dialog's."""
        deadlines = [
            self._invite_deadline if self._invite_txn is not None else None,
            super().get_timer(),
        ]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at ``now``."""
        if self._invite_deadline is not None and now >= self._invite_deadline:
            self._invite_deadline = None
            if self._invite_txn is not None and self.dialog is None:
                self._on_invite_deadline(now)
        super().handle_timer(now)

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
    def _end(
        self,
        status: CallStatus,
        sip_status: int | None,
        info: str | None,
        *,
        keep_session: bool = False,
    ) -> None:
        if not keep_session:
            # Also when already ended with keep_session (invite timeout): this is the
            # later end of the INVITE transaction, and the session must go.
            self._invite_deadline = None
        super()._end(status, sip_status, info, keep_session=keep_session)
