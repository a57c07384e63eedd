"""Codec choice: the answer carries only the stream's codecs, or the request is refused."""

from __future__ import annotations

import pytest

from rtp.frame import MediaKind
from sipbridge.errors import InvalidRequest
from webrtc.codecs import canonical_codec, choose_codecs, parse_offer

# What Chromium offers for recvonly audio + video (trimmed to the codec lines that matter).
CHROME_VIDEO = [
    ("96", "VP8/90000", None),
    ("97", "rtx/90000", "apt=96"),
    ("102", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
    ("103", "rtx/90000", "apt=102"),
    ("104", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f"),
    ("106", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    ("107", "rtx/90000", "apt=106"),
    ("112", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"),
    ("98", "VP9/90000", "profile-id=0"),
    ("45", "AV1/90000", None),
]
CHROME_AUDIO = [
    ("111", "opus/48000/2", "minptime=10;useinbandfec=1"),
    ("63", "red/48000/2", "111/111"),
    ("9", "G722/8000", None),
    ("0", "PCMU/8000", None),
    ("8", "PCMA/8000", None),
    ("13", "CN/8000", None),
    ("126", "telephone-event/8000", None),
]


def media(kind: str, codecs: list[tuple[str, str, str | None]], direction: str = "recvonly") -> str:
    pts = " ".join(pt for pt, _, _ in codecs)
    lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF {pts}", "c=IN IP4 0.0.0.0", f"a={direction}"]
    lines += [f"a=mid:{kind}", "a=rtcp-mux", "a=ice-ufrag:abcd", "a=ice-pwd:" + "p" * 22]
    lines += ["a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass"]
    for pt, name, fmtp in codecs:
        lines.append(f"a=rtpmap:{pt} {name}")
        if name.startswith(("VP8", "H264")):
            lines.append(f"a=rtcp-fb:{pt} nack pli")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    return "\r\n".join(lines) + "\r\n"


def offer(*sections: str) -> str:
    head = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    return head + "".join(sections)


STREAM: dict[MediaKind, str] = {"video": "H264", "audio": "PCMU"}


def test_chrome_offer_gets_h264_and_the_streams_g711() -> None:
    choices = choose_codecs(
        STREAM, parse_offer(offer(media("video", CHROME_VIDEO), media("audio", CHROME_AUDIO)))
    )
    video = choices["video"]
    assert (video.codec, video.clock_rate) == ("H264", 90000)
    names = [(c.mimeType, c.parameters.get("profile-level-id")) for c in video.preferences]
    # Only H.264 (in the offer's order) and RTX: never VP8.
    assert names == [("video/H264", "42001f"), ("video/H264", "42e01f"), ("video/rtx", None)]
    audio = choices["audio"]
    assert (audio.codec, audio.clock_rate) == ("PCMU", 8000)
    assert [c.mimeType for c in audio.preferences] == ["audio/PCMU"]


@pytest.mark.parametrize(
    ("codec", "mime", "rate"), [("PCMA", "audio/PCMA", 8000), ("opus", "audio/opus", 48000)]
)
def test_audio_codec_follows_the_stream(codec: str, mime: str, rate: int) -> None:
    choices = choose_codecs({"audio": codec}, parse_offer(offer(media("audio", CHROME_AUDIO))))
    assert [c.mimeType for c in choices["audio"].preferences] == [mime]
    assert choices["audio"].clock_rate == rate


def test_offer_without_h264_is_refused_naming_both_sides() -> None:
    vp8_only = [c for c in CHROME_VIDEO if not c[1].startswith("H264")]
    with pytest.raises(InvalidRequest) as err:
        choose_codecs(
            STREAM, parse_offer(offer(media("video", vp8_only), media("audio", CHROME_AUDIO)))
        )
    message = err.value.message
    assert message.startswith(
        "no video codec in common: the stream sends H264, the offer accepts VP8"
    )
    assert "AV1" in message and "packetization-mode 1" in message


def test_only_packetization_mode_0_or_high_profile_is_refused() -> None:
    h264 = [c for c in CHROME_VIDEO if c[0] in ("104", "112")]
    with pytest.raises(
        InvalidRequest, match=r"H264 \(42001f, packetization-mode 0\), H264 \(64001f"
    ):
        choose_codecs({"video": "H264"}, parse_offer(offer(media("video", h264))))


def test_offer_without_the_streams_audio_codec_is_refused() -> None:
    opus_only = [CHROME_AUDIO[0]]
    with pytest.raises(InvalidRequest, match="the stream sends PCMA, the offer accepts opus"):
        choose_codecs({"audio": "PCMA"}, parse_offer(offer(media("audio", opus_only))))


def test_kinds_missing_on_either_side_are_skipped() -> None:
    # Audio-only stream, A/V offer: video gets no choice (answered inactive).
    choices = choose_codecs(
        {"audio": "PCMU"},
        parse_offer(offer(media("video", CHROME_VIDEO), media("audio", CHROME_AUDIO))),
    )
    assert set(choices) == {"audio"}
    # A/V stream, audio-only offer.
    choices = choose_codecs(STREAM, parse_offer(offer(media("audio", CHROME_AUDIO))))
    assert set(choices) == {"audio"}


def test_nothing_to_send_is_refused() -> None:
    with pytest.raises(
        InvalidRequest,
        match=r"nothing to send: the stream has audio PCMU, the offer receives video \(recvonly\)",
    ):
        choose_codecs({"audio": "PCMU"}, parse_offer(offer(media("video", CHROME_VIDEO))))
    with pytest.raises(InvalidRequest, match=r"the offer receives audio \(sendonly\)"):
        choose_codecs(STREAM, parse_offer(offer(media("audio", CHROME_AUDIO, "sendonly"))))


def test_stream_codec_that_needs_transcoding_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="audio codec G722 cannot be sent over WebRTC"):
        choose_codecs({"audio": "G722"}, parse_offer(offer(media("audio", CHROME_AUDIO))))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the offer is empty"),
        ("hello", "the offer has no audio or video m-line"),
        (
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264\r\n",
            "the offer is not valid SDP",
        ),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0\r\n", "the offer is not valid SDP"),
    ],
)
def test_unparseable_offers(text: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        parse_offer(text)


def test_canonical_codec_names() -> None:
    assert canonical_codec("h264") == "H264"
    assert canonical_codec("OPUS") == "opus"
    assert canonical_codec("pcmu") == "PCMU"
    assert canonical_codec("VP8") is None
