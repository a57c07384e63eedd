"""Which codec each WebRTC track sends: the stream's own, if the offer accepts it.

No transcoding happens on the way out, so the answer (RFC 8829 §5.3) may only
list the codec the stream carries for each kind: H.264 video (RFC 6184,
packetization-mode 1), and PCMU, PCMA (RFC 3551 §4.5.14) or Opus (RFC 7587)
audio. When the offer accepts it, the transceiver's codec preferences
(``setCodecPreferences``, W3C webrtc-pc §5.4) are set to exactly that codec
(plus RTX, RFC 4588, for H.264 when offered), so aiortc's defaults (VP8 first,
Opus first) never reach the answer. When it does not, the request is refused
with a message naming both sides: never a silently black video or mute audio.

aiortc can send H.264 with the constrained baseline (``42e01f``) or baseline
(``42001f``) ``profile-level-id`` and packetization mode 1 only
(``aiortc.codecs.init_codecs``); the offer's H.264 entries are matched against
those by :func:`aiortc.rtcpeerconnection.find_common_codecs`, the same rule
``setRemoteDescription`` applies. The access units are sent as the phone coded
them, whatever profile their SPS says; browsers decode what the SPS declares.

Everything here is pure: an offer parsed with :mod:`aiortc.sdp` in, choices out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiortc import sdp
from aiortc.codecs import CODECS, is_rtx
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender

from rtp.frame import MediaKind
from sipbridge.errors import InvalidRequest

__all__ = [
    "CLOCK_RATES",
    "CodecChoice",
    "canonical_codec",
    "choose_codecs",
    "parse_offer",
]

#: Stream codec name (lower case) -> (kind, canonical name, RTP clock rate of the WebRTC codec).
_SUPPORTED: dict[str, tuple[MediaKind, str, int]] = {
    "h264": ("video", "H264", 90000),
    "pcmu": ("audio", "PCMU", 8000),
    "pcma": ("audio", "PCMA", 8000),
    "opus": ("audio", "opus", 48000),
}

#: RTP clock rate by canonical codec name: 90 kHz video, 8 kHz G.711, 48 kHz Opus
#: (RFC 6184 §8.2.1, RFC 3551 §4.5.14, RFC 7587 §4.1).
CLOCK_RATES: dict[str, int] = {name: rate for _, name, rate in _SUPPORTED.values()}

_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, AssertionError)


def canonical_codec(name: str) -> str | None:
    """The canonical spelling of a stream codec this egress can send, else ``None``."""
    entry = _SUPPORTED.get(name.lower())
    return None if entry is None else entry[1]


@dataclass(frozen=True)
class CodecChoice:
    """What one track sends: the stream's ``codec`` and the transceiver's preferences."""

    kind: MediaKind
    codec: str
    clock_rate: int
    preferences: tuple[RTCRtpCodecCapability, ...]


def parse_offer(offer_sdp: str) -> sdp.SessionDescription:
    """Parse a WHEP offer; :class:`InvalidRequest` when it is not usable SDP."""
    if not offer_sdp.strip():
        raise InvalidRequest("the offer is empty: expected an SDP offer (application/sdp)")
    try:
        description = sdp.SessionDescription.parse(offer_sdp)
    except _PARSE_ERRORS as exc:
        raise InvalidRequest(f"the offer is not valid SDP: {exc or type(exc).__name__}") from None
    if not any(media.kind in ("audio", "video") for media in description.media):
        raise InvalidRequest("the offer has no audio or video m-line")
    return description


def _offered_names(codecs: list[RTCRtpCodecParameters]) -> str:
    names: list[str] = []
    for codec in codecs:
        label = codec.name
        if codec.name.lower() == "h264":
            mode = codec.parameters.get("packetization-mode", "0")
            profile = codec.parameters.get("profile-level-id", "")
            label = f"H264 ({profile or 'no profile-level-id'}, packetization-mode {mode})"
        if label not in names:
            names.append(label)
    return ", ".join(names) or "nothing"


def _capability(codec: RTCRtpCodecParameters) -> RTCRtpCodecCapability:
    kind = "video" if codec.mimeType.lower().startswith("video/") else "audio"
    for capability in RTCRtpSender.getCapabilities(kind).codecs:
        if (
            capability.mimeType.lower() == codec.mimeType.lower()
            and capability.parameters == codec.parameters
            and capability.clockRate == codec.clockRate
        ):
            return capability
    raise AssertionError(f"aiortc has no capability for its own codec {codec}")  # unreachable


def _choose(kind: MediaKind, codec: str, media: sdp.MediaDescription) -> CodecChoice:
    common = find_common_codecs(CODECS[kind], media.rtp.codecs)
    wanted = [c for c in common if not is_rtx(c) and c.name.lower() == codec.lower()]
    if not wanted:
        raise InvalidRequest(
            f"no {kind} codec in common: the stream sends {codec}, "
            f"the offer accepts {_offered_names(media.rtp.codecs)}"
            + (
                " (H264 must be packetization-mode 1, baseline or constrained baseline)"
                if codec == "H264"
                else ""
            ),
            field="sdp",
        )
    preferences: list[RTCRtpCodecCapability] = []
    for choice in wanted:
        capability = _capability(choice)
        if capability not in preferences:
            preferences.append(capability)
    if any(is_rtx(c) for c in common):
        # aiortc keeps the RTX entry whose apt names a kept codec (RFC 4588 §8.6).
        preferences.append(next(c for c in RTCRtpSender.getCapabilities(kind).codecs if is_rtx(c)))
    return CodecChoice(
        kind=kind, codec=codec, clock_rate=CLOCK_RATES[codec], preferences=tuple(preferences)
    )


def choose_codecs(
    stream_codecs: Mapping[MediaKind, str], offer: sdp.SessionDescription
) -> dict[MediaKind, CodecChoice]:
    """One :class:`CodecChoice` per kind the stream has and the offer receives.

    ``stream_codecs`` maps kind -> the stream's codec name. An offered m-line
    of a kind the stream lacks, or one the offer does not receive on
    (``sendonly``/``inactive``), gets no choice (its answer is ``inactive``).
    Raises :class:`InvalidRequest` when a kind both have shares no codec, when
    the stream's codec cannot be sent, or when nothing at all would be sent.
    """
    choices: dict[MediaKind, CodecChoice] = {}
    seen: set[str] = set()
    for media in offer.media:
        if media.kind not in ("audio", "video") or media.kind in seen:
            continue  # a second m-line of a kind gets no track: aiortc answers it inactive
        seen.add(media.kind)
        kind: MediaKind = "video" if media.kind == "video" else "audio"
        name = stream_codecs.get(kind)
        if not name or (media.direction or "sendrecv") not in ("recvonly", "sendrecv"):
            continue
        codec = canonical_codec(name)
        if codec is None or _SUPPORTED[codec.lower()][0] != kind:
            raise InvalidRequest(
                f"the stream's {kind} codec {name} cannot be sent over WebRTC without "
                f"transcoding (supported: H264 video; PCMU, PCMA, opus audio)"
            )
        choices[kind] = _choose(kind, codec, media)
    if not choices:
        has = ", ".join(f"{k} {v}" for k, v in sorted(stream_codecs.items()) if v) or "no media"
        receives = ", ".join(
            f"{m.kind} ({m.direction or 'sendrecv'})"
            for m in offer.media
            if m.kind in ("audio", "video")
        )
        raise InvalidRequest(
            f"nothing to send: the stream has {has}, the offer receives {receives}", field="sdp"
        )
    return choices
