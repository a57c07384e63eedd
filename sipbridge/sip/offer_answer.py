"""RFC 3264 offer/answer over :mod:`sipbridge.sip.sdp` descriptions.

The gateway places outbound calls and mostly receives media: :func:`build_offer` makes its
offer, :func:`negotiate` reads the callee's answer into :class:`NegotiatedSession`, and
:func:`answer_offer` answers an offer the peer sends in a re-INVITE (hold, refresh).
:func:`with_direction` makes the gateway's own hold/unhold re-offers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace

from sipbridge.sip.crypto import (
    SrtpKeys,
    SrtpMode,
    SrtpRequired,
    crypto_attributes,
    offered_cryptos,
)
from sipbridge.sip.sdp import (
    _HEX6_RE,
    _HOLD_ADDRESSES,
    DIRECTIONS,
    Codec,
    MediaDescription,
    NoCommonCodecs,
    SdpError,
    SessionDescription,
    _fmtp_get,
)

__all__ = [
    "MediaOfferConfig",
    "NegotiatedSession",
    "NegotiatedStream",
    "answer_offer",
    "build_offer",
    "codecs_compatible",
    "negotiate",
    "with_direction",
]


def _h264_profile(params: dict[str, str]) -> str | None:
    """The H.264 profile named by profile-level-id (RFC 6184 §8.1; absent = 420010),
    classified by profile_idc and the constraint flags as libwebrtc does."""
    plid = _fmtp_get(params, "profile-level-id", "420010")
    if not _HEX6_RE.fullmatch(plid):
        return None
    idc, iop = int(plid[0:2], 16), int(plid[2:4], 16)
    for profile_idc, mask, value, profile in _H264_PROFILES:
        if idc == profile_idc and iop & mask == value:
            return profile
    return plid[:4].lower()


# (profile_idc, constraint mask, constraint value, profile), cf. H.264 Annex A.2.
_H264_PROFILES = (
    (0x42, 0x4F, 0x40, "constrained-baseline"),
    (0x4D, 0x8F, 0x80, "constrained-baseline"),
    (0x58, 0xCF, 0xC0, "constrained-baseline"),
    (0x42, 0x4F, 0x00, "baseline"),
    (0x58, 0xCF, 0x80, "baseline"),
    (0x4D, 0xAF, 0x00, "main"),
    (0x64, 0xFF, 0x00, "high"),
    (0x64, 0xFF, 0x0C, "constrained-high"),
    (0xF4, 0xFF, 0x00, "high-444"),
)
_BASELINE_FAMILY = frozenset({"baseline", "constrained-baseline"})


def codecs_compatible(ours: Codec, theirs: Codec) -> bool:
    """Whether ``theirs`` is the same payload format as ``ours`` (RFC 3264 §6.1): encoding
    name (case-insensitive) and clock rate, channels (not for opus, always /2 per RFC 7587),
    and for H.264 the packetization-mode and profile (RFC 6184 §8.2.2; the level may
    differ). Baseline and Constrained Baseline are taken as one: SIP phones commonly answer
    42801f or omit profile-level-id (= Baseline) and send streams any CB decoder plays."""
    name = ours.name.lower()
    if name != theirs.name.lower() or ours.clock_rate != theirs.clock_rate:
        return False
    if name != "opus" and ours.channels != theirs.channels:
        return False
    if name == "h264":
        mode_ours = _fmtp_get(ours.fmtp, "packetization-mode", "0")
        if mode_ours != _fmtp_get(theirs.fmtp, "packetization-mode", "0"):
            return False
        a, b = _h264_profile(ours.fmtp), _h264_profile(theirs.fmtp)
        return a is not None and b is not None and (a == b or {a, b} <= _BASELINE_FAMILY)
    return True


_H264_FMTP = {"profile-level-id": "42e01f", "level-asymmetry-allowed": "1"}
_VIDEO_RTCP_FB = ("nack", "nack pli", "ccm fir")
_CATALOG: dict[str, tuple[Codec, ...]] = {
    "opus": (Codec(111, "opus", 48000, 2, {"useinbandfec": "1"}),),
    "pcmu": (Codec(0, "PCMU", 8000),),
    "pcma": (Codec(8, "PCMA", 8000),),
    "g722": (Codec(9, "G722", 8000),),
    "g729": (Codec(18, "G729", 8000, 1, {"annexb": "no"}),),
    "h264": (
        Codec(96, "H264", 90000, 1, {**_H264_FMTP, "packetization-mode": "1"}),
        Codec(97, "H264", 90000, 1, {**_H264_FMTP, "packetization-mode": "0"}),
    ),
    "vp8": (Codec(98, "VP8", 90000),),
}
_AUDIO_NAMES = frozenset({"opus", "pcmu", "pcma", "g722", "g729"})
_VIDEO_NAMES = frozenset({"h264", "vp8"})
_TELEPHONE_EVENT = Codec(101, "telephone-event", 8000, 1, {"0-16": ""})


@dataclass(frozen=True)
class MediaOfferConfig:
    """What the gateway offers or accepts: its public address and RTP ports (None = no such
    stream), codec preference, RFC 4733 telephone-event, RFC 5761 rtcp-mux, direction, and
    the o= line's id and version (RFC 3264 §8: bump the version on every new offer)."""

    address: str
    audio_port: int | None
    video_port: int | None
    _: KW_ONLY
    session_id: int
    session_version: int
    audio_codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")
    video_codecs: tuple[str, ...] = ("H264",)
    telephone_event: bool = True
    rtcp_mux: bool = False
    direction: str = "sendrecv"
    username: str = "sipbridge"
    #: RFC 4568 SDES-SRTP (see :mod:`sipbridge.sip.crypto`) and our master key||salt per
    #: kind ("audio", "video"); :class:`~sipbridge.sip.local_offer.LocalOffer` fills it.
    srtp: SrtpMode = "off"
    srtp_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.address or any(c.isspace() for c in self.address):
            raise ValueError(f"bad address {self.address!r}")
        for port in (self.audio_port, self.video_port):
            if port is not None and not 0 < port <= 65535:
                raise ValueError(f"bad RTP port {port}")
        for names, known in ((self.audio_codecs, _AUDIO_NAMES), (self.video_codecs, _VIDEO_NAMES)):
            for name in names:
                if name.lower() not in known:
                    raise ValueError(f"unsupported codec {name!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"bad direction {self.direction!r}")
        if self.session_id < 0 or self.session_version < 0:
            raise ValueError("session_id and session_version must not be negative")
        if self.srtp not in ("off", "optional", "mandatory"):
            raise ValueError(f"bad srtp mode {self.srtp!r}")

    def codecs(self, kind: str) -> list[Codec]:
        """Our codecs for ``kind`` in preference order, with their offer payload types."""
        names = self.audio_codecs if kind == "audio" else self.video_codecs
        codecs = [copy.deepcopy(c) for name in names for c in _CATALOG[name.lower()]]
        if kind == "audio" and self.telephone_event:
            codecs.append(copy.deepcopy(_TELEPHONE_EVENT))
        return codecs

    def port(self, kind: str) -> int | None:
        return {"audio": self.audio_port, "video": self.video_port}.get(kind)


def _session(config: MediaOfferConfig) -> SessionDescription:
    return SessionDescription(
        username=config.username,
        session_id=config.session_id,
        session_version=config.session_version,
        address=config.address,
        session_name="sipbridge",
        connection_address=config.address,
    )


def build_offer(config: MediaOfferConfig) -> SessionDescription:
    """The gateway's initial offer (RFC 3264 §5): an audio and/or a video RTP/AVP stream
    with the configured codecs, always an explicit direction attribute. With SRTP the
    streams carry ``a=crypto`` (RFC 4568 §6), on RTP/SAVP when SRTP is mandatory."""
    if config.audio_port is None and config.video_port is None:
        raise ValueError("an offer needs an audio or a video port")
    sdp = _session(config)
    for kind in ("audio", "video"):
        port = config.port(kind)
        if port is None:
            continue
        proto = "RTP/SAVP" if config.srtp == "mandatory" else "RTP/AVP"
        media = MediaDescription(kind, port, proto, [], direction=config.direction)
        media.rtcp_mux = config.rtcp_mux
        media.set_codecs(config.codecs(kind), _VIDEO_RTCP_FB if kind == "video" else ())
        if config.srtp != "off":
            media.attributes.extend(crypto_attributes(_srtp_key(config, kind)))
        sdp.media.append(media)
    return sdp


@dataclass
class NegotiatedStream:
    """One accepted stream (RFC 3264 §6.1). ``payload_types`` maps the answer's numbers to
    codecs, and also our offered numbers where the answer renumbered a codec and left the
    number free: RFC 3264 §5.1 has the callee send with ours, many send with theirs."""

    kind: str
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    rtcp_mux: bool
    codec: Codec
    payload_types: dict[int, Codec]
    telephone_event_pt: int | None
    direction: str
    local_port: int
    #: The stream's SRTP keys (RFC 4568), None for plain RTP.
    srtp: SrtpKeys | None = None


@dataclass
class NegotiatedSession:
    """The outcome of an offer/answer exchange: at most one audio and one video stream."""

    audio: NegotiatedStream | None
    video: NegotiatedStream | None
    remote: SessionDescription


def _hold_direction(address: str, direction: str) -> str:
    # RFC 3264 §8.4: c=0.0.0.0 is the RFC 2543 way to put a stream on hold; we treat it as
    # "inactive" whatever the direction attribute says.
    return "inactive" if address in _HOLD_ADDRESSES else direction


def _stream(
    index: int,
    remote: MediaDescription,
    remote_session: SessionDescription,
    accepted: list[tuple[Codec, Codec]],
    local_port: int,
    local_rtcp_mux: bool,
) -> NegotiatedStream | None:
    """Build the stream from (remote codec, our codec) pairs in the remote's order."""
    codec = next((theirs for theirs, _ in accepted if theirs.is_media), None)
    if codec is None:
        return None
    address = remote.connection_address or remote_session.connection_address
    if address is None:
        raise SdpError(f"m= line {index}: no connection address")
    rtcp_mux = local_rtcp_mux and remote.rtcp_mux
    if rtcp_mux:
        rtcp_port = remote.port
    else:
        rtcp_port = remote.rtcp_port if remote.rtcp_port is not None else remote.port + 1
    payload_types: dict[int, Codec] = {}
    for theirs, _ in accepted:
        payload_types.setdefault(theirs.payload_type, theirs)
    for theirs, ours in accepted:
        payload_types.setdefault(ours.payload_type, replace(theirs, payload_type=ours.payload_type))
    telephone_event = next(
        (t.payload_type for t, _ in accepted if t.name.lower() == "telephone-event"), None
    )
    return NegotiatedStream(
        kind=remote.kind,
        remote_address=address,
        remote_port=remote.port,
        remote_rtcp_port=rtcp_port,
        rtcp_mux=rtcp_mux,
        codec=codec,
        payload_types=payload_types,
        telephone_event_pt=telephone_event,
        direction=_hold_direction(address, remote.direction),
        local_port=local_port,
    )


def _srtp_key(config: MediaOfferConfig, kind: str) -> bytes:
    key = config.srtp_keys.get(kind)
    if key is None:
        raise ValueError(f"srtp is {config.srtp!r} but there is no key for {kind}")
    return key


def _answer_srtp(index: int, ours: MediaDescription, theirs: MediaDescription) -> SrtpKeys | None:
    """The keys of one answered stream (RFC 4568 §7.1.3): the answer's ``a=crypto`` must
    carry a tag and suite we offered. A plain answer to a mandatory (RTP/SAVP) offer
    raises :class:`SrtpRequired`."""
    offered = {(c.tag, c.suite): c for c in offered_cryptos(ours)}
    if not offered:
        return None
    chosen = next((c for c in offered_cryptos(theirs) if (c.tag, c.suite) in offered), None)
    if chosen is not None:
        return SrtpKeys(chosen.suite, offered[chosen.tag, chosen.suite].key, chosen.key)
    if ours.proto.startswith("RTP/SAVP") or theirs.proto.startswith("RTP/SAVP"):
        raise SrtpRequired(
            f"m= line {index}: SRTP required but the answer has no a=crypto matching our offer"
        )
    return None


def _accept(remote: Sequence[Codec], ours: Sequence[Codec]) -> list[tuple[Codec, Codec]]:
    pairs: list[tuple[Codec, Codec]] = []
    for theirs in remote:
        mine = next((c for c in ours if codecs_compatible(c, theirs)), None)
        if mine is not None:
            pairs.append((theirs, mine))
    return pairs


def negotiate(offer: SessionDescription, answer: SessionDescription) -> NegotiatedSession:
    """Read the callee's answer to our offer (RFC 3264 §6, §8).

    The answer must keep the offer's m= lines in number, order and media type. Port 0
    rejects a stream. The stream codec is the answer's first media codec that we offered
    (the answerer's preference wins); telephone-event alone is not usable. A connection
    address of 0.0.0.0 (RFC 2543 hold, RFC 3264 §8.4; "::" likewise) makes the stream's
    direction "inactive" whatever its direction attribute says. Raises
    :class:`NoCommonCodecs` when neither audio nor video is left, :class:`SrtpRequired`
    when a stream offered as RTP/SAVP is answered without a matching ``a=crypto``.
    """
    if len(offer.media) != len(answer.media):
        raise SdpError(f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)}")
    streams: dict[str, NegotiatedStream] = {}
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True), 1):
        if ours.kind != theirs.kind:
            raise SdpError(f"m= line {index}: answer has {theirs.kind!r}, offer had {ours.kind!r}")
        if ours.kind not in ("audio", "video") or ours.kind in streams:
            continue
        if ours.port == 0 or theirs.port == 0:
            continue
        accepted = _accept(theirs.codecs, ours.codecs)
        stream = _stream(index, theirs, answer, accepted, ours.port, ours.rtcp_mux)
        if stream is not None:
            stream.srtp = _answer_srtp(index, ours, theirs)
            streams[ours.kind] = stream
    if not streams:
        raise NoCommonCodecs("No common codecs")
    return NegotiatedSession(streams.get("audio"), streams.get("video"), answer)


_CAN = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}


def _direction(send: bool, recv: bool) -> str:
    return next(name for name, can in _CAN.items() if can == (send, recv))


def answer_offer(
    remote_offer: SessionDescription,
    config: MediaOfferConfig,
    previous: NegotiatedSession | None = None,
) -> tuple[SessionDescription, NegotiatedSession]:
    """Answer an offer from the peer, e.g. a re-INVITE for hold or refresh (RFC 3264 §6).

    One m= line per offered one, in order; a stream is rejected (port 0) when we have no
    port for its kind, its profile is not RTP/AVP(F) or RTP/SAVP(F), or no codec is in
    common. With SRTP on, the first supported ``a=crypto`` is accepted and answered with
    our key (RFC 4568 §7.1.2); RTP/SAVP without one, or a plain offer while SRTP is
    mandatory, is rejected.
    Codecs keep the offer's order and payload numbers, the previously used codec first
    while still offered. The direction mirrors the offer's (§6.1: sendonly -> recvonly,
    recvonly -> sendonly, inactive -> inactive) within ``config.direction``; c=0.0.0.0
    counts as inactive. ``config.session_version`` must already be bumped by the caller.
    Raises :class:`NoCommonCodecs` when nothing is accepted (answer 488).
    """
    answer = _session(config)
    streams: dict[str, NegotiatedStream] = {}
    for index, remote in enumerate(remote_offer.media, 1):
        port = config.port(remote.kind)
        accepted: list[tuple[Codec, Codec]] = []
        crypto = next(iter(offered_cryptos(remote)), None) if config.srtp != "off" else None
        secure = remote.proto in ("RTP/SAVP", "RTP/SAVPF")
        usable = (
            port is not None
            and remote.port != 0
            and remote.kind not in streams
            and remote.proto in ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
            and (crypto is not None or not (secure or config.srtp == "mandatory"))
        )
        if usable:
            accepted = _accept(remote.codecs, config.codecs(remote.kind))
            before = getattr(previous, remote.kind, None) if previous is not None else None
            if isinstance(before, NegotiatedStream):
                first = [p for p in accepted if codecs_compatible(before.codec, p[0])][:1]
                accepted = first + [p for p in accepted if p not in first]
        stream = None
        if port is not None and accepted:
            stream = _stream(index, remote, remote_offer, accepted, port, config.rtcp_mux)
        if stream is None or port is None:  # rejected: RFC 3264 §6, port 0, formats kept
            answer.media.append(
                MediaDescription(
                    remote.kind,
                    0,
                    remote.proto,
                    list(remote.formats) or ["0"],
                    direction="inactive",
                )
            )
            continue
        streams[remote.kind] = stream
        if crypto is not None:
            local_key = _srtp_key(config, remote.kind)
            stream.srtp = SrtpKeys(crypto.suite, local_key, crypto.key)
        remote_send, remote_recv = _CAN[stream.direction]
        our_send, our_recv = _CAN[config.direction]
        media = MediaDescription(
            remote.kind,
            port,
            remote.proto,
            [],
            direction=_direction(remote_recv and our_send, remote_send and our_recv),
            rtcp_mux=stream.rtcp_mux,
        )
        media.set_codecs(
            [replace(theirs, fmtp=dict(mine.fmtp), rtcp_fb=[]) for theirs, mine in accepted],
            _VIDEO_RTCP_FB if remote.kind == "video" else (),
        )
        if stream.srtp is not None and crypto is not None:
            key = stream.srtp.local_key
            media.attributes.extend(crypto_attributes(key, crypto.tag, crypto.suite))
        answer.media.append(media)
    if not streams:
        raise NoCommonCodecs("No common codecs")
    return answer, NegotiatedSession(streams.get("audio"), streams.get("video"), remote_offer)


def with_direction(sdp: SessionDescription, direction: str, version: int) -> SessionDescription:
    """A copy of our own description with every active m= line set to ``direction`` and the
    o= version set to ``version`` (RFC 3264 §8.4 hold = sendonly, unhold = sendrecv)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    result = copy.deepcopy(sdp)
    result.session_version = version
    for media in result.media:
        if media.port != 0:
            media.direction = direction
            media._layout.direction_implicit = False
    return result
