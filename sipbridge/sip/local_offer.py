"""Our side of the SDP offer/answer exchange in one dialog (RFC 3264 §5, §6, §8), sans-IO.

Theory of operation
-------------------
:class:`LocalOffer` holds the offer in force (the last one the peer accepted, or
the one in flight) and the ``o=`` version of the last SDP we sent, offer or
answer. A re-offer that changes something, or that follows an answer of ours,
takes a new version (§8); the offer it replaces is kept until the peer answers,
so that a refused re-offer leaves the previous one in force (RFC 3261 §14.1).
Our answers to the peer's offers keep our own direction, so a call we hold stays
held when the peer re-offers (§8.4).
"""

from __future__ import annotations

from dataclasses import replace

from sipbridge.sip.crypto import generate_key
from sipbridge.sip.offer_answer import (
    MediaOfferConfig,
    NegotiatedSession,
    answer_offer,
    build_offer,
    negotiate,
    with_direction,
)
from sipbridge.sip.sdp import SessionDescription

__all__ = ["LocalOffer"]


class LocalOffer:
    """The offer in force, its ``o=`` version, and the one to restore on refusal (RFC 3264)."""

    def __init__(self, media: MediaOfferConfig) -> None:
        if media.srtp != "off" and not media.srtp_keys:
            # One master key per stream for the dialog's life (RFC 4568 §6.1); re-offers and
            # answers to re-INVITEs keep it, so only the peer ever rekeys.
            keys = {kind: generate_key() for kind in ("audio", "video") if media.port(kind)}
            media = replace(media, srtp_keys=keys)
        self.media = media
        self.current: SessionDescription = build_offer(media)
        #: The ``o=`` version of the last SDP we sent, offer or answer.
        self.version = media.session_version
        self._before: SessionDescription | None = None

    @property
    def direction(self) -> str:
        """The direction of our offer (``sendonly`` while we hold the call)."""
        return next((m.direction for m in self.current.media if m.port != 0), "sendrecv")

    def reoffer(self, direction: str) -> SessionDescription:
        """The offer to send for ``direction``, with a new version when needed (§8).

        A retry of a re-offer (after 491 or 422) keeps the version and the offer to
        restore of the first attempt.
        """
        if direction != self.direction or self.version != self.current.session_version:
            self.version += 1
            if self._before is None:
                self._before = self.current
            self.current = with_direction(self.current, direction, self.version)
        return self.current

    def accepted(self) -> None:
        """The peer answered the offer in flight: it is the one in force now."""
        self._before = None

    def refused(self) -> bool:
        """The peer refused the re-offer: restore the previous one; whether there was one."""
        if self._before is None:
            return False
        self.current = self._before
        self._before = None
        return True

    def negotiate(self, answer: bytes) -> NegotiatedSession:
        """Match the peer's SDP answer against our offer (§6); raises ``SdpError``."""
        return negotiate(self.current, SessionDescription.parse(answer))

    def answer(
        self, offer: bytes, negotiated: NegotiatedSession | None
    ) -> tuple[SessionDescription, NegotiatedSession]:
        """Our answer to the peer's offer, in our own direction (§6, §8.4); raises ``SdpError``.

        ``negotiated`` is the session so far, whose codecs the answer keeps when it can.
        """
        remote = SessionDescription.parse(offer)
        self.version += 1
        config = replace(self.media, session_version=self.version, direction=self.direction)
        return answer_offer(remote, config, negotiated)
