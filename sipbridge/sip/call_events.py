"""What an outbound call reports to its owner, and the timers it runs on.

Events are frozen dataclasses queued by :class:`~sipbridge.sip.invite.OutboundCall`
and taken with its ``next_event()``; they are never callbacks fired from inside
the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipbridge.callinfo import CallStatus
from sipbridge.sip.offer_answer import NegotiatedSession

__all__ = ["CallEvent", "CallTimers", "DtmfReceived", "MediaUpdated", "StatusChanged"]


@dataclass(frozen=True)
class StatusChanged:
    """The call moved to ``status`` (WCS vocabulary), after a SIP ``sip_status`` if any."""

    status: CallStatus
    sip_status: int | None
    info: str | None


@dataclass(frozen=True)
class MediaUpdated:
    """A new or changed SDP answer: where the callee's media comes from (RFC 3264 §6, §8)."""

    negotiated: NegotiatedSession


@dataclass(frozen=True)
class DtmfReceived:
    """A digit the peer sent as SIP INFO ``application/dtmf-relay``."""

    digit: str
    duration_ms: int | None


CallEvent = StatusChanged | MediaUpdated | DtmfReceived


@dataclass(frozen=True)
class CallTimers:
    """Call-level timers in seconds (settings ``[sip]``; RFC 4028 for the session timer)."""

    invite_timeout: float = 60.0
    session_expires: int = 1800
    min_se: int = 90
