"""SRTP/SRTCP (RFC 3711) between a call's sockets and its sans-IO media core.

Theory of operation
-------------------
:class:`SrtpFilter` is itself a :class:`~rtp.session.MediaCore`: it sits between
the asyncio shell (:class:`~rtp.session.RtpSession`) and the call's
:class:`~rtp.media.CallMedia`, so neither needs to know about encryption.
Datagrams that arrive on a protected track's sockets are authenticated and
decrypted with the peer's key (RFC 3711 §3.3) before the core parses them;
datagrams the core sends (RTCP RR/PLI/FIR, keepalives, RFC 4733 DTMF) are
protected with our key (§3.3, §3.4) on the way out. Tracks without keys pass
through untouched.

On an RTP socket, RTP and RTCP are told apart by the second byte as in RFC 5761
§4 (RTCP packet types 192-223), which also covers rtcp-mux and the RTCP
keepalives sent to the RTP port. A packet that fails authentication or the
replay check is dropped and counted in :class:`SrtpStats`; it never reaches the
core and never raises. pylibsrtp does the cryptography; all of this is sans-IO.

A datagram too short to hold what RFC 3711 makes mandatory (§3.1: the RTP header
and the authentication tag; §3.4: the RTCP header, the E flag + 31-bit SRTCP
index and the tag) cannot be SRTP at all: it is counted apart
(``SrtpStats.short_drops``) and logged at DEBUG, without asking libsrtp (which
would only say "unsupported parameter"). baresip 1.0 sends one such packet per
stream as a call starts: its NAT pinhole opener, a 16-byte RTCP APP "PING"/"PONG"
that it leaves unprotected (docs/media.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pylibsrtp

from rtp.session import MediaCore

__all__ = ["SrtpContext", "SrtpFilter", "SrtpStats", "srtp_profile"]

log = logging.getLogger(__name__)

Address = tuple[str, int]

_PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
#: Replay window (RFC 3711 §3.3.2) wide enough for the reordering the jitter buffer
#: absorbs anyway: a keyframe burst can overtake itself by a few hundred packets.
REPLAY_WINDOW = 1024
_AUTH_FAILURE = "authentication failure"
_RTP_HEADER = 12  # RFC 3550 §5.1, without CSRCs
_RTCP_HEADER = 8  # RFC 3550 §6.4: the first header and the sender's SSRC
_SRTCP_INDEX = 4  # RFC 3711 §3.4: E flag + 31-bit SRTCP index
#: Authentication tag lengths (SRTP, SRTCP) in bytes (RFC 4568 §6.2.1: the _32
#: suite shortens the SRTP tag only; SRTCP keeps 80 bits).
_TAG_LENGTHS: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (10, 10),
    "AES_CM_128_HMAC_SHA1_32": (4, 10),
}
_REPLAY_FAILURES = ("replay check failed (bad index)", "replay check failed (index too old)")


def srtp_profile(suite: str) -> int:
    """The libsrtp profile of an RFC 4568 §6.2 crypto suite; ValueError when unsupported."""
    try:
        return _PROFILES[suite]
    except KeyError:
        raise ValueError(f"unsupported SRTP crypto suite {suite!r}") from None


def _is_rtcp(data: bytes) -> bool:
    # RFC 5761 §4: RTCP packet types 192-223 occupy the RTP marker+payload type byte.
    return len(data) >= 2 and 192 <= data[1] <= 223


def _describe(data: bytes) -> str:
    """What a datagram too short for SRTP/SRTCP looks like, for the DEBUG log."""
    if len(data) >= 4 and data[0] >> 6 == 2 and 192 <= data[1] <= 223:
        words = int.from_bytes(data[2:4], "big")
        if (words + 1) * 4 == len(data):
            # Its length field covers the whole datagram: no SRTCP index, no tag.
            return f"an unprotected RTCP packet (type {data[1]})"
    return "not SRTP"


@dataclass
class SrtpStats:
    """What the filter did with one track's packets."""

    unprotected: int = 0
    protected: int = 0
    auth_failures: int = 0
    replay_failures: int = 0
    other_failures: int = 0
    protect_failures: int = 0
    #: Datagrams shorter than the smallest SRTP/SRTCP packet (RFC 3711 §3.1, §3.4),
    #: e.g. baresip's plain RTCP APP "PING" at stream start: dropped, not failures.
    short_drops: int = 0

    @property
    def failures(self) -> int:
        """Inbound packets libsrtp refused (authentication, replay or other)."""
        return self.auth_failures + self.replay_failures + self.other_failures

    @property
    def dropped(self) -> int:
        """Inbound packets that failed to unprotect, whatever the reason."""
        return self.failures + self.short_drops


class SrtpContext:
    """The SRTP state of one track (RFC 3711 §3.2): the peer's key for what we receive,
    ours for what we send, any SSRC on each side."""

    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        profile = srtp_profile(suite)
        inbound = pylibsrtp.Policy(
            key=remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        inbound.window_size = REPLAY_WINDOW
        outbound = pylibsrtp.Policy(
            key=local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        # RFC 4733 sends the end of an event three times with one sequence number.
        outbound.allow_repeat_tx = True
        self.suite = suite
        rtp_tag, rtcp_tag = _TAG_LENGTHS[suite]
        self._min_srtp = _RTP_HEADER + rtp_tag
        self._min_srtcp = _RTCP_HEADER + _SRTCP_INDEX + rtcp_tag
        self._rx = pylibsrtp.Session(inbound)
        self._tx = pylibsrtp.Session(outbound)
        self.stats = SrtpStats()

    def __repr__(self) -> str:
        return f"SrtpContext(suite={self.suite!r}, stats={self.stats!r})"

    def unprotect(self, data: bytes, rtcp: bool) -> bytes | None:
        """The plain packet, or None (counted) when it is too short to be SRTP/SRTCP
        or fails authentication or replay (RFC 3711 §3.3)."""
        if len(data) < (self._min_srtcp if rtcp else self._min_srtp):
            self.stats.short_drops += 1
            short = self.stats.short_drops
            if short in (1, 10, 100, 1000) or short % 10000 == 0:
                log.debug(
                    "%s: dropped a %d-byte datagram, too short to be protected "
                    "(RFC 3711 %s): %s (%d so far)",
                    "SRTCP" if rtcp else "SRTP",
                    len(data),
                    "§3.4" if rtcp else "§3.1",
                    _describe(data),
                    short,
                )
            return None
        try:
            plain = self._rx.unprotect_rtcp(data) if rtcp else self._rx.unprotect(data)
        except pylibsrtp.Error as exc:
            reason = str(exc)
            if reason == _AUTH_FAILURE:
                self.stats.auth_failures += 1
            elif reason in _REPLAY_FAILURES:
                self.stats.replay_failures += 1
            else:
                self.stats.other_failures += 1
            failures = self.stats.failures
            if failures in (1, 10, 100, 1000) or failures % 10000 == 0:
                log.warning(
                    "%s packet dropped: %s (%d so far)",
                    "SRTCP" if rtcp else "SRTP",
                    reason,
                    failures,
                )
            return None
        self.stats.unprotected += 1
        return plain

    def protect(self, data: bytes, rtcp: bool) -> bytes | None:
        """The protected packet, or None (counted) when libsrtp refuses it."""
        try:
            packet = self._tx.protect_rtcp(data) if rtcp else self._tx.protect(data)
        except pylibsrtp.Error as exc:
            self.stats.protect_failures += 1
            log.debug("could not protect an outbound %s packet: %s", "RTCP" if rtcp else "RTP", exc)
            return None
        self.stats.protected += 1
        return packet


class SrtpFilter:
    """A :class:`~rtp.session.MediaCore` that protects ``core``'s traffic on the sockets
    named in ``contexts`` (socket name -> the track's :class:`SrtpContext`)."""

    def __init__(self, core: MediaCore, contexts: Mapping[str, SrtpContext]) -> None:
        self.core = core
        self.contexts = dict(contexts)

    def rekey(self, sockets: Mapping[str, SrtpContext]) -> None:
        """Use new contexts for these sockets (the peer's answer changed its key).

        A new context starts from a copy of the counters of the one it replaces, so
        a track's :class:`SrtpStats` cover the whole call whatever the re-INVITEs did."""
        seeded: set[int] = set()  # a track's RTP and RTCP sockets share one context
        for name, context in sockets.items():
            old = self.contexts.get(name)
            if old is not None and old is not context and id(context) not in seeded:
                context.stats = dataclasses.replace(old.stats)
                seeded.add(id(context))
        self.contexts.update(sockets)

    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None:
        context = self.contexts.get(socket_name)
        if context is not None:
            rtcp = socket_name.endswith("-rtcp") or _is_rtcp(data)
            plain = context.unprotect(data, rtcp)
            if plain is None:
                return
            data = plain
        self.core.receive(socket_name, data, source, now)

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]:
        datagrams = self.core.datagrams_to_send()
        if not datagrams or not self.contexts:
            return datagrams
        out: list[tuple[str, bytes, Address]] = []
        for name, data, address in datagrams:
            context = self.contexts.get(name)
            if context is None:
                out.append((name, data, address))
                continue
            packet = context.protect(data, name.endswith("-rtcp") or _is_rtcp(data))
            if packet is not None:
                out.append((name, packet, address))
        return out

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
