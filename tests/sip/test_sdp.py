"""Tests for sipbridge.sip.sdp: RFC 8866 parse/serialize and RFC 3264 offer/answer."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipbridge.sip.offer_answer import (
    MediaOfferConfig,
    NegotiatedSession,
    answer_offer,
    build_offer,
    codecs_compatible,
    negotiate,
    with_direction,
)
from sipbridge.sip.sdp import (
    DIRECTIONS,
    Attribute,
    Codec,
    MediaDescription,
    NoCommonCodecs,
    SdpError,
    SessionDescription,
    Timing,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "sdp"
VECTOR_NAMES = sorted(p.name for p in VECTORS.glob("*.sdp"))


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def sdp(text: str) -> SessionDescription:
    return SessionDescription.parse(text.strip("\n") + "\n")


def config(**overrides: object) -> MediaOfferConfig:
    values: dict[str, object] = {
        "address": "198.51.100.1",
        "audio_port": 40000,
        "video_port": 40002,
        "session_id": 7,
        "session_version": 1,
    }
    values.update(overrides)
    return MediaOfferConfig(**values)  # type: ignore[arg-type]


def parse_error(text: str) -> str:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(text)
    return str(info.value)


HEAD = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"


# --------------------------------------------------------------------------- vectors


def test_vectors_present() -> None:
    assert len(VECTOR_NAMES) >= 8


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_round_trips_byte_for_byte(name: str) -> None:
    data = vector(name)
    # to_bytes always writes CRLF; normalize in case a checkout turned the vector into LF.
    crlf = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parsed = SessionDescription.parse(data)
    assert parsed.to_bytes() == crlf
    assert SessionDescription.parse(parsed.to_bytes()) == parsed


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_parses_the_same_with_lf_line_ends(name: str) -> None:
    data = vector(name)
    lf = data.replace(b"\r\n", b"\n")
    assert b"\r" not in lf
    assert SessionDescription.parse(lf) == SessionDescription.parse(data)
    assert SessionDescription.parse(lf.decode()) == SessionDescription.parse(data)


def test_baresip_answer_fields() -> None:
    answer = SessionDescription.parse(vector("baresip_answer.sdp"))
    assert (answer.username, answer.session_id, answer.session_version) == (
        "-",
        1476586163,
        1093427612,
    )
    assert answer.address == "203.0.113.20"
    assert answer.connection_address == "203.0.113.20"
    assert answer.attribute("tool") == "baresip 3.10.1"
    audio, video = answer.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == (
        "audio",
        10326,
        "RTP/AVP",
        ["0", "101"],
    )
    assert audio.bandwidths == {"AS": 77}
    assert audio.direction == "sendrecv"
    assert audio.attribute("ptime") == "20"
    assert audio.attribute("rtcp-rsize") == ""
    assert audio.attribute("nope") is None
    assert [(c.payload_type, c.name, c.clock_rate) for c in audio.codecs] == [
        (0, "PCMU", 8000),
        (101, "telephone-event", 8000),
    ]
    assert audio.codecs[1].fmtp == {"0-16": ""}
    (h264,) = video.codecs
    assert h264.fmtp == {"packetization-mode": "0", "profile-level-id": "42e01f"}
    assert list(h264.fmtp) == ["packetization-mode", "profile-level-id"]
    assert h264.rtcp_fb == ["nack pli", "ccm fir"]


def test_chrome_offer_fields() -> None:
    offer = SessionDescription.parse(vector("chrome_offer.sdp"))
    assert offer.session_id == 4611731400430051336
    assert offer.connection_address is None
    assert offer.attribute("group") == "BUNDLE 0 1"
    audio, video = offer.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.connection_address == "0.0.0.0"
    assert (audio.rtcp_port, audio.rtcp_address, audio.rtcp_mux) == (9, "0.0.0.0", True)
    assert all(a.name not in ("rtcp", "rtcp-mux", "sendrecv") for a in audio.attributes)
    opus = audio.codecs[0]
    assert (opus.name, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    assert opus.fmtp == {"minptime": "10", "useinbandfec": "1"}
    assert opus.rtcp_fb == ["transport-cc"]
    assert [c.payload_type for c in audio.codecs] == [111, 63, 9, 0, 8, 13, 110, 126]
    assert [c.name for c in video.codecs] == ["VP8", "rtx", "H264", "rtx", "H264"]
    assert video.codecs[2].rtcp_fb == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert not video.codecs[1].is_media
    assert video.codecs[0].is_media


def test_rfc_examples_fields() -> None:
    example = SessionDescription.parse(vector("rfc8866_example.sdp"))
    assert example.information == "SDP Offer #1"
    assert example.uri == "http://www.jdoe.example.com/home.html"
    assert example.emails == ["Jane Doe <jane@jdoe.example.com>"]
    assert example.phones == ["+1 617 555-6011"]
    assert example.media[2].connection_address == "2001:db8::2"
    assert example.media[2].codecs == [Codec(99, "h263-1998", 90000)]
    multicast = SessionDescription.parse(vector("rfc4566_multicast.sdp"))
    assert multicast.connection_address == "224.2.17.12/127"
    assert multicast.times == [Timing(3034423619, 3042462419, ["604800 3600 0 90000"])]
    assert multicast.time_zones == "2882844526 -1h 2898848070 0"
    assert multicast.encryption_key == "prompt"
    # Session-level a=recvonly is inherited by media without their own attribute.
    assert multicast.direction == "recvonly"
    assert [m.direction for m in multicast.media] == ["recvonly", "recvonly"]
    assert multicast.media[1].port_count == 2


def test_polycom_session_direction_and_bandwidth() -> None:
    offer = SessionDescription.parse(vector("polycom_offer.sdp"))
    assert offer.bandwidths == {"AS": 512}
    assert offer.media[1].bandwidths == {"TIAS": 448000}
    assert offer.media[0].direction == "sendrecv"
    h264 = offer.media[1].codecs[0]
    assert h264.fmtp["max-fs"] == "1344"
    assert list(h264.fmtp) == ["profile-level-id", "max-br", "max-mbps", "max-fs"]
    assert offer.media[1].codecs[1].fmtp == {"CIF": "1", "QCIF": "1", "SQCIF": "1"}


# --------------------------------------------------------------------------- parse details


def test_static_payload_types_need_no_rtpmap() -> None:
    parsed = sdp(HEAD + "m=audio 4000 RTP/AVP 0 8 9 18 96\n")
    codecs = parsed.media[0].codecs
    # PT 96 has no rtpmap and no static meaning: left out.
    assert [(c.payload_type, c.name, c.clock_rate) for c in codecs] == [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (18, "G729", 8000),
    ]


def test_rtpmap_overrides_static_meaning_and_first_rtpmap_wins() -> None:
    parsed = sdp(HEAD + "m=audio 4000 RTP/AVP 8\na=rtpmap:8 X-ODD/16000/2\na=rtpmap:8 PCMA/8000\n")
    assert parsed.media[0].codecs == [Codec(8, "X-ODD", 16000, 2)]


def test_non_rtp_media_has_no_codecs() -> None:
    parsed = sdp(HEAD + "m=application 5000 UDP/BFCP *\na=floorctrl:c-s\n")
    media = parsed.media[0]
    assert media.formats == ["*"]
    assert media.codecs == []
    assert not media.is_rtp


def test_rejected_stream_without_formats_is_tolerated() -> None:
    parsed = sdp(HEAD + "m=audio 4000 RTP/AVP 0\nm=video 0 RTP/AVP\n")
    assert parsed.media[1].port == 0
    assert parsed.media[1].formats == []


def test_trailing_blank_lines_and_whitespace_are_tolerated() -> None:
    parsed = SessionDescription.parse(HEAD + "m=audio 4000 RTP/AVP 0 \na=sendonly  \n\n\r\n")
    assert parsed.media[0].formats == ["0"]
    assert parsed.media[0].direction == "sendonly"


def test_session_name_keeps_spaces() -> None:
    parsed = SessionDescription.parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns= \nt=0 0\n")
    assert parsed.session_name == " "
    assert b"\r\ns= \r\n" in parsed.to_bytes()


def test_session_direction_inherited_then_written_when_changed() -> None:
    parsed = sdp(HEAD + "a=sendonly\nm=audio 4000 RTP/AVP 0\nm=video 4002 RTP/AVP 96\na=inactive\n")
    assert parsed.direction == "sendonly"
    assert [m.direction for m in parsed.media] == ["sendonly", "inactive"]
    assert parsed.to_bytes().count(b"a=sendonly") == 1
    parsed.media[0].direction = "sendrecv"
    again = SessionDescription.parse(parsed.to_bytes())
    assert [m.direction for m in again.media] == ["sendrecv", "inactive"]


def test_address_types_are_kept() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 host.example\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\na=rtcp:4001 IN IP6 host.example\r\n"
        "a=sendrecv\r\n"
    )
    parsed = SessionDescription.parse(text)
    assert parsed.address == "2001:db8::1"
    assert parsed.connection_address == "host.example"
    assert parsed.media[0].rtcp_address == "host.example"
    assert parsed.to_bytes() == text.encode()
    # A changed address gets its type inferred afresh.
    parsed.connection_address = "2001:db8::7"
    assert b"c=IN IP6 2001:db8::7\r\n" in parsed.to_bytes()
    parsed.connection_address = "other.example"
    assert b"c=IN IP4 other.example\r\n" in parsed.to_bytes()


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    data = HEAD.replace("s=-", "s=caf\xe9").encode("latin-1").replace(b"\n", b"\r\n")
    parsed = SessionDescription.parse(data)
    assert parsed.to_bytes() == data


def test_fmtp_and_rtcp_fb_helpers() -> None:
    media = MediaDescription("video", 5000, "RTP/AVP", [])
    media.attributes.append(Attribute("label", "1"))
    codec = Codec(96, "H264", 90000, fmtp={"packetization-mode": "1", "x": ""}, rtcp_fb=["nack"])
    media.set_codecs([codec, Codec(0, "PCMU", 8000)], rtcp_fb_wildcard=["ccm fir"])
    assert media.formats == ["96", "0"]
    assert [str(a) for a in media.attributes] == [
        "rtpmap:96 H264/90000",
        "fmtp:96 packetization-mode=1;x",
        "rtpmap:0 PCMU/8000",
        "rtcp-fb:96 nack",
        "rtcp-fb:* ccm fir",
        "label:1",
    ]
    assert media.codecs[0] == dataclasses.replace(codec, rtcp_fb=["nack", "ccm fir"])
    assert media.codecs[1].rtcp_fb == ["ccm fir"]


# --------------------------------------------------------------------------- parse errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty session description"),
        ("\n\n", "empty session description"),
        (
            "o=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
            "line 1: expected v= line, got 'o=- 1 1 IN IP4 192.0.2.1'",
        ),
        ("v=1\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n", "line 1: unsupported SDP version '1'"),
        ("V=0\n", "line 1: unknown line type 'V'"),
        ("v=0\n", "missing o= line"),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\n", "missing s= line"),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n", "missing t= line"),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nt=0 0\n",
            "line 3: expected s= line, got 't=0 0'",
        ),
        ("v=0\ns=-\nt=0 0\n", "line 2: expected o= line, got 's=-'"),
        (
            "v=0\no=- x 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
            "line 2: bad o= line: 'o=- x 1 IN IP4 192.0.2.1'",
        ),
        ("v=0\no=- 1 1 IN IP4\ns=-\nt=0 0\n", "line 2: bad o= line: 'o=- 1 1 IN IP4'"),
        ("v=0\no=- 1 1 ATM IP4 a\ns=-\nt=0 0\n", "line 2: bad o= line: 'o=- 1 1 ATM IP4 a'"),
        (HEAD + "m=audio x RTP/AVP 0\n", "line 6: bad m= line: 'm=audio x RTP/AVP 0'"),
        (HEAD + "m=audio 70000 RTP/AVP 0\n", "line 6: bad m= line: 'm=audio 70000 RTP/AVP 0'"),
        (HEAD + "m=audio 4000\n", "line 6: bad m= line: 'm=audio 4000'"),
        (HEAD + "m=audio 4000/0 RTP/AVP 0\n", "line 6: bad m= line: 'm=audio 4000/0 RTP/AVP 0'"),
        (
            HEAD + "m=audio 4000 RTP/AVP PCMU\n",
            "line 6: bad m= line: RTP formats must be 0-127: 'm=audio 4000 RTP/AVP PCMU'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP\n",
            "line 6: bad m= line: no formats: 'm=audio 4000 RTP/AVP'",
        ),
        (HEAD + "x=whatever\n", "line 6: unknown line type 'x'"),
        (HEAD + "m=audio 4000 RTP/AVP 0\nx=1\n", "line 7: unknown line type 'x'"),
        (HEAD + "hello\n", "line 6: not a <type>=<value> line: 'hello'"),
        (HEAD + "a =sendrecv\n", "line 6: not a <type>=<value> line: 'a =sendrecv'"),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\nt=0 0\n",
            "line 7: t= line not allowed in a media section",
        ),
        (HEAD + "m=audio 4000 RTP/AVP 0\ns=x\n", "line 7: s= line not allowed in a media section"),
        (HEAD + "c=IN IP4 192.0.2.2\n", "line 6: duplicate c= line"),
        (HEAD + "o=- 1 1 IN IP4 192.0.2.1\n", "line 6: duplicate o= line"),
        (HEAD + "v=0\n", "line 6: duplicate v= line"),
        (HEAD + "b=AS:fast\n", "line 6: bad b= line: 'b=AS:fast'"),
        (
            "v=0\no=- 1 1 IN IP4 h\ns=-\nc=ATM NSAP x\nt=0 0\n",
            "line 4: bad c= line: 'c=ATM NSAP x'",
        ),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nr=1 2 3\nt=0 0\n", "line 4: r= line without a t= line"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 x\n", "line 4: bad t= line: 't=0 x'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\n", "missing t= line"),
        (HEAD + "a=\n", "line 6: bad a= line: 'a='"),
        (HEAD + "a=bad name:1\n", "line 6: bad a= line: 'a=bad name:1'"),
        (
            HEAD + "m=audio 4000 RTP/AVP 96\na=rtpmap:96 opus\n",
            "line 7: bad rtpmap attribute: 'a=rtpmap:96 opus'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 96\na=rtpmap:300 opus/48000\n",
            "line 7: bad rtpmap attribute: 'a=rtpmap:300 opus/48000'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 96\na=fmtp:\n",
            "line 7: bad fmtp attribute: 'a=fmtp:'",
        ),
        (HEAD + "m=audio 4000 RTP/AVP 0\na=rtcp:abc\n", "line 7: bad rtcp attribute: 'a=rtcp:abc'"),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\na=rtcp:9 IN IP4\n",
            "line 7: bad rtcp attribute: 'a=rtcp:9 IN IP4'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\na=rtcp-mux:yes\n",
            "line 7: bad rtcp-mux attribute: 'a=rtcp-mux:yes'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\na=sendonly\na=recvonly\n",
            "line 8: duplicate direction attribute: 'a=recvonly'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\na=rtcp-mux\na=rtcp-mux\n",
            "line 8: duplicate rtcp-mux attribute: 'a=rtcp-mux'",
        ),
        (
            HEAD + "m=audio 4000 RTP/AVP 0\na=sendonly:now\n",
            "line 7: bad direction attribute: 'a=sendonly:now'",
        ),
        (HEAD + "m=audio 4000 RTP/AVP 0\nc=IN IP4 a\nc=IN IP4 b\n", "line 8: duplicate c= line"),
        (HEAD + "a=x\rb\n", "line 6: stray CR or NUL character"),
        (HEAD + "a=x\0\n", "line 6: stray CR or NUL character"),
    ],
)
def test_parse_errors_name_line_and_reason(text: str, message: str) -> None:
    assert parse_error(text) == message


def test_parse_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^line 1: "):
        SessionDescription.parse(b"garbage")


def test_huge_numbers_are_refused_not_crashing() -> None:
    digits = "9" * 5000
    assert parse_error(f"v=0\no=- {digits} 1 IN IP4 h\ns=-\nt=0 0\n").startswith("line 2: bad o=")
    assert parse_error(HEAD + f"b=AS:{digits}\n").startswith("line 6: bad b= line")


def test_unicode_digits_are_not_numbers() -> None:
    assert parse_error(HEAD + "m=audio ٤٠٠٠ RTP/AVP 0\n").startswith("line 6: bad m= line")


# --------------------------------------------------------------------------- serialize


def test_to_bytes_refuses_line_breaks_in_values() -> None:
    parsed = sdp(HEAD)
    parsed.session_name = "x\r\na=evil"
    with pytest.raises(SdpError, match="CR, LF or NUL"):
        parsed.to_bytes()


def test_to_bytes_refuses_spaces_in_words() -> None:
    parsed = sdp(HEAD + "m=audio 4000 RTP/AVP 0\n")
    parsed.media[0].formats = ["0 8"]
    with pytest.raises(SdpError, match=r"^cannot serialize format '0 8'$"):
        parsed.to_bytes()


def test_to_bytes_refuses_typed_attributes_in_the_generic_list() -> None:
    parsed = sdp(HEAD + "m=audio 4000 RTP/AVP 0\n")
    parsed.media[0].attributes.append(Attribute("sendonly"))
    with pytest.raises(SdpError, match="must be set through its field"):
        parsed.to_bytes()
    parsed.media[0].attributes[-1] = Attribute("ptime", "20")
    parsed.media[0].direction = "sideways"
    with pytest.raises(SdpError, match="cannot serialize direction 'sideways'"):
        parsed.to_bytes()


def test_typed_attributes_written_in_default_order_when_built() -> None:
    media = MediaDescription("audio", 4000, "RTP/AVP", ["0"], rtcp_port=4005, rtcp_mux=True)
    media.attributes.append(Attribute("ptime", "20"))
    built = SessionDescription("-", 1, 2, "192.0.2.1", media=[media])
    text = built.to_bytes().decode()
    assert text.endswith("a=ptime:20\r\na=rtcp:4005\r\na=rtcp-mux\r\na=sendrecv\r\n")
    assert text.startswith("v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio")


# --------------------------------------------------------------------------- build_offer

DEFAULT_OFFER = (
    "v=0\r\n"
    "o=sipbridge 7 1 IN IP4 198.51.100.1\r\n"
    "s=sipbridge\r\n"
    "c=IN IP4 198.51.100.1\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 111 0 8 101\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 useinbandfec=1\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=sendrecv\r\n"
    "m=video 40002 RTP/AVP 96 97\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n"
    "a=rtpmap:97 H264/90000\r\n"
    "a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=0\r\n"
    "a=rtcp-fb:* nack\r\n"
    "a=rtcp-fb:* nack pli\r\n"
    "a=rtcp-fb:* ccm fir\r\n"
    "a=sendrecv\r\n"
)


def test_default_offer_bytes() -> None:
    offer = build_offer(config())
    assert offer.to_bytes().decode() == DEFAULT_OFFER
    assert SessionDescription.parse(offer.to_bytes()) == offer


def test_offer_codecs() -> None:
    audio, video = build_offer(config()).media
    assert [c.rtpmap for c in audio.codecs] == [
        "opus/48000/2",
        "PCMU/8000",
        "PCMA/8000",
        "telephone-event/8000",
    ]
    assert [c.fmtp["packetization-mode"] for c in video.codecs] == ["1", "0"]
    assert video.codecs[0].rtcp_fb == ["nack", "nack pli", "ccm fir"]
    assert video.bandwidths == {}


def test_offer_options() -> None:
    offer = build_offer(
        config(
            video_port=None,
            audio_codecs=("pcma", "G722"),
            telephone_event=False,
            rtcp_mux=True,
            direction="recvonly",
            username="gw",
        )
    )
    assert offer.username == "gw"
    (audio,) = offer.media
    assert audio.formats == ["8", "9"]
    assert audio.rtcp_mux
    assert audio.direction == "recvonly"
    assert b"a=rtcp-mux\r\na=recvonly\r\n" in offer.to_bytes()


def test_video_only_offer() -> None:
    offer = build_offer(config(audio_port=None, video_codecs=("H264", "VP8")))
    assert [m.kind for m in offer.media] == ["video"]
    assert offer.media[0].formats == ["96", "97", "98"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"audio_port": 0}, "bad RTP port 0"),
        ({"video_port": 70000}, "bad RTP port 70000"),
        ({"audio_codecs": ("speex",)}, "unsupported codec 'speex'"),
        ({"video_codecs": ("PCMU",)}, "unsupported codec 'PCMU'"),
        ({"direction": "up"}, "bad direction 'up'"),
        ({"address": "a b"}, "bad address 'a b'"),
        ({"session_id": -1}, "session_id and session_version must not be negative"),
    ],
)
def test_config_validation(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        config(**overrides)


def test_offer_needs_a_stream() -> None:
    with pytest.raises(ValueError, match="needs an audio or a video port"):
        build_offer(config(audio_port=None, video_port=None))


# --------------------------------------------------------------------------- negotiate


def answer(media: str, session_c: str = "c=IN IP4 203.0.113.9\n") -> SessionDescription:
    return sdp(f"v=0\no=callee 9 9 IN IP4 203.0.113.9\ns=-\n{session_c}t=0 0\n{media}")


AUDIO_PCMU = "m=audio 20000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=sendrecv\n"
VIDEO_MODE1 = (
    "m=video 20002 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\n"
)


def test_negotiate_baresip_answer() -> None:
    offer = build_offer(config())
    result = negotiate(offer, SessionDescription.parse(vector("baresip_answer.sdp")))
    assert isinstance(result, NegotiatedSession)
    audio, video = result.audio, result.video
    assert audio is not None and video is not None
    assert (audio.remote_address, audio.remote_port, audio.remote_rtcp_port) == (
        "203.0.113.20",
        10326,
        10327,
    )
    assert audio.codec.name == "PCMU"
    assert audio.telephone_event_pt == 101
    assert set(audio.payload_types) == {0, 101}
    assert audio.local_port == 40000
    assert not audio.rtcp_mux
    assert (video.codec.payload_type, video.codec.fmtp["packetization-mode"]) == (97, "0")
    assert video.remote_port == 10138
    assert video.local_port == 40002
    assert result.remote.session_version == 1093427612


def test_negotiate_rejected_video() -> None:
    result = negotiate(
        build_offer(config()),
        SessionDescription.parse(vector("asterisk_answer_video_rejected.sdp")),
    )
    assert result.video is None
    assert result.audio is not None
    assert result.audio.codec == Codec(8, "PCMA", 8000)
    assert result.audio.telephone_event_pt == 101


def test_negotiate_port_zero_audio_keeps_video() -> None:
    result = negotiate(build_offer(config()), answer("m=audio 0 RTP/AVP 0\n" + VIDEO_MODE1))
    assert result.audio is None
    assert result.video is not None
    assert result.video.codec.fmtp["packetization-mode"] == "1"
    assert result.video.direction == "sendrecv"


def test_negotiate_answerer_order_wins() -> None:
    result = negotiate(
        build_offer(config(video_port=None)),
        answer("m=audio 20000 RTP/AVP 8 0 111\na=rtpmap:111 opus/48000/2\n"),
    )
    assert result.audio is not None
    assert result.audio.codec.name == "PCMA"
    assert list(result.audio.payload_types) == [8, 0, 111]
    assert result.audio.telephone_event_pt is None


def test_negotiate_pcma_when_opus_absent() -> None:
    result = negotiate(
        build_offer(config(video_port=None)),
        answer("m=audio 20000 RTP/AVP 18 8\na=rtpmap:18 G729/8000\n"),
    )
    assert result.audio is not None
    assert result.audio.codec.name == "PCMA"
    assert set(result.audio.payload_types) == {8}


def test_negotiate_h264_mode0_only() -> None:
    result = negotiate(
        build_offer(config()),
        answer(
            AUDIO_PCMU + "m=video 20002 RTP/AVP 97\na=rtpmap:97 H264/90000\n"
            "a=fmtp:97 profile-level-id=42e01f\n"
        ),
    )
    assert result.video is not None
    assert result.video.codec.payload_type == 97
    assert result.video.codec.fmtp == {"profile-level-id": "42e01f"}


def test_negotiate_renumbered_payload_types_map_both_numbers() -> None:
    result = negotiate(
        build_offer(config()),
        answer(
            "m=audio 20000 RTP/AVP 96 100\na=rtpmap:96 opus/48000/2\n"
            "a=rtpmap:100 telephone-event/8000\n"
            "m=video 20002 RTP/AVP 100\na=rtpmap:100 H264/90000\n"
            "a=fmtp:100 profile-level-id=42e01f;packetization-mode=1\n"
        ),
    )
    audio, video = result.audio, result.video
    assert audio is not None and video is not None
    assert audio.codec.payload_type == 96
    assert audio.telephone_event_pt == 100
    assert {pt: c.name for pt, c in audio.payload_types.items()} == {
        96: "opus",
        100: "telephone-event",
        111: "opus",
        101: "telephone-event",
    }
    assert all(pt == c.payload_type for pt, c in audio.payload_types.items())
    assert {pt: c.name for pt, c in video.payload_types.items()} == {100: "H264", 96: "H264"}


def test_negotiate_no_common_codecs() -> None:
    with pytest.raises(NoCommonCodecs, match=r"^No common codecs$"):
        negotiate(
            build_offer(config()),
            answer("m=audio 20000 RTP/AVP 18\nm=video 20002 RTP/AVP 34\n"),
        )


def test_telephone_event_alone_is_not_usable() -> None:
    with pytest.raises(NoCommonCodecs):
        negotiate(
            build_offer(config(video_port=None)),
            answer("m=audio 20000 RTP/AVP 101\na=rtpmap:101 telephone-event/8000\n"),
        )


def test_negotiate_everything_rejected() -> None:
    with pytest.raises(NoCommonCodecs):
        negotiate(build_offer(config()), answer("m=audio 0 RTP/AVP 0\nm=video 0 RTP/AVP 96\n"))


def test_negotiate_old_style_hold() -> None:
    result = negotiate(
        build_offer(config(video_port=None)),
        SessionDescription.parse(vector("old_hold_answer.sdp")),
    )
    assert result.audio is not None
    assert result.audio.remote_address == "0.0.0.0"
    assert result.audio.direction == "inactive"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_negotiate_reports_answered_direction(direction: str) -> None:
    result = negotiate(
        build_offer(config(video_port=None)),
        answer(f"m=audio 20000 RTP/AVP 0\na={direction}\n"),
    )
    assert result.audio is not None
    assert result.audio.direction == direction


def test_negotiate_mismatched_line_count() -> None:
    with pytest.raises(SdpError, match=r"^answer has 1 m= lines, offer had 2$") as info:
        negotiate(build_offer(config()), answer(AUDIO_PCMU))
    assert not isinstance(info.value, NoCommonCodecs)


def test_negotiate_mismatched_media_kind() -> None:
    with pytest.raises(SdpError, match=r"^m= line 1: answer has 'video', offer had 'audio'$"):
        negotiate(build_offer(config()), answer(VIDEO_MODE1 + AUDIO_PCMU))


def test_negotiate_rtcp_mux_and_rtcp_attribute() -> None:
    fs = SessionDescription.parse(vector("freeswitch_answer_rtcp_mux.sdp"))
    muxed = negotiate(build_offer(config(rtcp_mux=True)), fs)
    assert muxed.audio is not None and muxed.video is not None
    assert (muxed.audio.rtcp_mux, muxed.audio.remote_rtcp_port) == (True, 24574)
    assert muxed.audio.codec.name == "opus"
    assert muxed.audio.codec.fmtp == {"useinbandfec": "1", "maxplaybackrate": "48000"}
    assert (muxed.video.rtcp_mux, muxed.video.remote_rtcp_port) == (True, 24576)
    # We did not offer rtcp-mux: RTCP goes where a=rtcp says (RFC 3605).
    plain = negotiate(build_offer(config()), fs)
    assert plain.audio is not None
    assert (plain.audio.rtcp_mux, plain.audio.remote_rtcp_port) == (False, 24574)
    other = answer("m=audio 20000 RTP/AVP 0\na=rtcp:20009\nm=video 0 RTP/AVP 96\n")
    assert negotiate(build_offer(config()), other).audio.remote_rtcp_port == 20009  # type: ignore[union-attr]


def test_negotiate_media_connection_overrides_session() -> None:
    result = negotiate(
        build_offer(config(video_port=None)),
        answer("m=audio 20000 RTP/AVP 0\nc=IN IP4 203.0.113.77\n", session_c=""),
    )
    assert result.audio is not None
    assert result.audio.remote_address == "203.0.113.77"


def test_negotiate_needs_a_connection_address() -> None:
    with pytest.raises(SdpError, match=r"^m= line 1: no connection address$"):
        negotiate(build_offer(config(video_port=None)), answer("m=audio 2 RTP/AVP 0\n", ""))


@pytest.mark.parametrize(
    ("fmtp", "accepted"),
    [
        ("profile-level-id=42e01f;packetization-mode=1", True),
        ("profile-level-id=42E034;packetization-mode=1", True),  # level differs
        ("profile-level-id=42c01f;packetization-mode=1", True),  # still Constrained Baseline
        ("profile-level-id=42801f;packetization-mode=1", True),  # Baseline, what phones say
        ("packetization-mode=1", True),  # no profile-level-id: 420010 Baseline
        ("Profile-Level-Id=42e01f; Packetization-Mode=1", True),
        ("profile-level-id=4d001f;packetization-mode=1", False),  # Main
        ("profile-level-id=640c1f;packetization-mode=1", False),  # Constrained High
        ("profile-level-id=zz;packetization-mode=1", False),
        ("profile-level-id=42e01f;packetization-mode=2", False),
    ],
)
def test_h264_profile_compatibility(fmtp: str, accepted: bool) -> None:
    result = negotiate(
        build_offer(config()),
        answer(
            AUDIO_PCMU + f"m=video 20002 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 {fmtp}\n"
        ),
    )
    assert (result.video is not None) is accepted


def test_codecs_compatible_rules() -> None:
    opus = Codec(111, "opus", 48000, 2)
    assert codecs_compatible(opus, Codec(96, "OPUS", 48000, 1))
    assert not codecs_compatible(opus, Codec(96, "opus", 16000, 2))
    assert not codecs_compatible(Codec(11, "L16", 44100, 1), Codec(10, "L16", 44100, 2))
    assert codecs_compatible(Codec(0, "PCMU", 8000), Codec(0, "pcmu", 8000))


def test_negotiate_on_interop_offers_as_answers() -> None:
    # A peer's offer shape used as an answer to an offer with the same line layout.
    linphone = SessionDescription.parse(vector("linphone_offer.sdp"))
    result = negotiate(build_offer(config()), linphone)
    assert result.audio is not None and result.video is not None
    assert result.audio.codec.payload_type == 96
    assert result.audio.codec.name == "opus"
    assert result.audio.telephone_event_pt == 100
    assert result.video.codec.payload_type == 97  # 42801F, mode 0
    grandstream = SessionDescription.parse(vector("grandstream_offer.sdp"))
    result = negotiate(build_offer(config()), grandstream)
    assert result.audio is not None and result.video is not None
    assert result.audio.codec.name == "PCMU"
    assert result.video.codec.fmtp["packetization-mode"] == "1"


# --------------------------------------------------------------------------- answer_offer


REMOTE_OFFER = (
    "v=0\no=peer 100 200 IN IP4 203.0.113.50\ns=-\nc=IN IP4 203.0.113.50\nt=0 0\n"
    "m=audio 30000 RTP/AVP 0 8 96 101\na=rtpmap:96 opus/48000/2\n"
    "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na={direction}\n"
    "m=video 30002 RTP/AVP 120\na=rtpmap:120 H264/90000\n"
    "a=fmtp:120 profile-level-id=42e01f;packetization-mode=1\na={direction}\n"
)


def remote_offer(direction: str = "sendrecv") -> SessionDescription:
    return sdp(REMOTE_OFFER.format(direction=direction))


@pytest.mark.parametrize(
    ("remote", "ours", "expected"),
    [
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "recvonly", "recvonly"),
        ("sendonly", "sendonly", "inactive"),
    ],
)
def test_answer_offer_mirrors_direction(remote: str, ours: str, expected: str) -> None:
    sdp_answer, session = answer_offer(remote_offer(remote), config(direction=ours))
    assert [m.direction for m in sdp_answer.media] == [expected, expected]
    assert session.audio is not None
    assert session.audio.direction == remote


def test_answer_offer_hold_sendonly_to_recvonly() -> None:
    our_answer, session = answer_offer(
        remote_offer("sendonly"), config(session_version=5, video_port=None)
    )
    assert our_answer.session_version == 5
    audio, video = our_answer.media
    assert (audio.port, audio.direction) == (40000, "recvonly")
    # No video port: rejected with port 0, m= lines kept in number and order.
    assert (video.kind, video.port, video.formats) == ("video", 0, ["120"])
    assert session.video is None
    assert session.audio is not None
    assert (session.audio.remote_address, session.audio.remote_port) == ("203.0.113.50", 30000)
    assert session.remote is not None
    assert b"a=recvonly" in our_answer.to_bytes()
    reparsed = SessionDescription.parse(our_answer.to_bytes())
    assert reparsed == our_answer


def test_answer_offer_codecs_follow_remote_order_and_numbers() -> None:
    our_answer, session = answer_offer(remote_offer(), config())
    audio, video = our_answer.media
    assert audio.formats == ["0", "8", "96", "101"]
    assert [c.rtpmap for c in audio.codecs] == [
        "PCMU/8000",
        "PCMA/8000",
        "opus/48000/2",
        "telephone-event/8000",
    ]
    assert audio.codecs[2].fmtp == {"useinbandfec": "1"}
    assert audio.codecs[3].fmtp == {"0-16": ""}
    assert video.formats == ["120"]
    assert video.codecs[0].fmtp["packetization-mode"] == "1"
    assert session.audio is not None and session.video is not None
    assert session.audio.codec.name == "PCMU"
    assert session.audio.telephone_event_pt == 101
    assert session.video.codec.payload_type == 120
    assert session.video.local_port == 40002
    # Our answer is a valid answer to their offer.
    check = negotiate(remote_offer(), our_answer)
    assert check.audio is not None and check.audio.codec.name == "PCMU"


def test_answer_offer_keeps_previous_codec_first() -> None:
    _, first = answer_offer(remote_offer(), config(audio_codecs=("PCMA",)))
    assert first.audio is not None and first.audio.codec.name == "PCMA"
    our_answer, session = answer_offer(remote_offer("sendonly"), config(), previous=first)
    assert our_answer.media[0].formats == ["8", "0", "96", "101"]
    assert session.audio is not None and session.audio.codec.name == "PCMA"


def test_answer_offer_without_telephone_event() -> None:
    our_answer, session = answer_offer(remote_offer(), config(telephone_event=False))
    assert our_answer.media[0].formats == ["0", "8", "96"]
    assert session.audio is not None and session.audio.telephone_event_pt is None


def test_answer_offer_rtcp_mux_only_when_both_want_it() -> None:
    muxed_offer = sdp(
        "v=0\no=peer 1 1 IN IP4 203.0.113.50\ns=-\nc=IN IP4 203.0.113.50\nt=0 0\n"
        "m=audio 30000 RTP/AVP 0\na=rtcp-mux\n"
    )
    plain_answer, plain = answer_offer(muxed_offer, config())
    assert not plain_answer.media[0].rtcp_mux
    assert plain.audio is not None and plain.audio.remote_rtcp_port == 30001
    muxed_answer, muxed = answer_offer(muxed_offer, config(rtcp_mux=True))
    assert muxed_answer.media[0].rtcp_mux
    assert muxed.audio is not None and muxed.audio.remote_rtcp_port == 30000


def test_answer_offer_rejects_unsupported_streams() -> None:
    offer = sdp(
        "v=0\no=peer 1 1 IN IP4 203.0.113.50\ns=-\nc=IN IP4 203.0.113.50\nt=0 0\n"
        "m=audio 30000 RTP/SAVP 0\n"
        "m=audio 30004 RTP/AVP 18 0\n"
        "m=audio 30006 RTP/AVP 8\n"
        "m=application 30008 UDP/BFCP *\n"
        "m=video 0 RTP/AVP 96\n"
    )
    our_answer, session = answer_offer(offer, config())
    assert [m.port for m in our_answer.media] == [0, 40000, 0, 0, 0]
    assert our_answer.media[1].formats == ["0"]
    assert our_answer.media[3].formats == ["*"]
    assert session.audio is not None and session.audio.remote_port == 30004
    assert session.video is None


def test_answer_offer_hold_address() -> None:
    offer = sdp(
        "v=0\no=peer 1 2 IN IP4 203.0.113.50\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\n"
        "m=audio 30000 RTP/AVP 0\na=sendrecv\n"
    )
    our_answer, session = answer_offer(offer, config())
    assert our_answer.media[0].direction == "inactive"
    assert session.audio is not None and session.audio.direction == "inactive"


def test_answer_offer_no_common_codecs() -> None:
    offer = sdp(
        "v=0\no=peer 1 1 IN IP4 203.0.113.50\ns=-\nc=IN IP4 203.0.113.50\nt=0 0\n"
        "m=audio 30000 RTP/AVP 18 101\na=rtpmap:101 telephone-event/8000\n"
    )
    with pytest.raises(NoCommonCodecs, match=r"^No common codecs$"):
        answer_offer(offer, config())


# --------------------------------------------------------------------------- with_direction


def test_with_direction_hold_and_unhold() -> None:
    offer = build_offer(config())
    offer.media.append(MediaDescription("application", 0, "UDP/BFCP", ["*"], direction="inactive"))
    before = copy.deepcopy(offer)
    held = with_direction(offer, "sendonly", 2)
    assert offer == before  # the original is untouched
    assert held.session_version == 2
    assert [m.direction for m in held.media] == ["sendonly", "sendonly", "inactive"]
    assert held.to_bytes().count(b"a=sendonly\r\n") == 2
    resumed = with_direction(held, "sendrecv", 3)
    assert resumed.session_version == 3
    assert [m.direction for m in resumed.media][:2] == ["sendrecv", "sendrecv"]
    assert resumed.media[0].codecs == offer.media[0].codecs


def test_with_direction_writes_previously_implicit_direction() -> None:
    parsed = SessionDescription.parse(vector("polycom_offer.sdp"))
    assert b"a=recvonly" not in parsed.to_bytes()
    held = with_direction(parsed, "sendrecv", 9)
    assert held.to_bytes().count(b"a=sendrecv\r\n") == 3  # session level + each m= line


def test_with_direction_validates() -> None:
    with pytest.raises(ValueError, match="bad direction 'hold'"):
        with_direction(build_offer(config()), "hold", 2)


# --------------------------------------------------------------------------- properties

TOKEN_CHARS = "!#$%&'*+-.^_`{|}~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=8)
free_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0"), max_size=12
)
stripped_text = free_text.map(lambda s: s.rstrip(" \t"))
addresses = st.one_of(
    tokens, st.sampled_from(["192.0.2.1", "2001:db8::1", "0.0.0.0", "224.2.1.1/127"])
)
big = st.integers(min_value=0, max_value=2**64)
ports = st.integers(min_value=0, max_value=65535)
RESERVED = {*DIRECTIONS, "rtcp", "rtcp-mux", "rtpmap", "fmtp", "rtcp-fb"}
attributes = st.builds(
    Attribute,
    tokens.filter(lambda name: name not in RESERVED),
    st.one_of(st.none(), stripped_text),
)
bandwidths = st.dictionaries(tokens, st.integers(0, 10**17), max_size=2)
fmtp_params = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=6),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789,/", max_size=6),
    max_size=3,
)
codecs = st.builds(
    Codec,
    st.integers(0, 127),
    tokens.filter(lambda name: "/" not in name),
    st.integers(1, 10**6),
    st.integers(1, 8),
    fmtp_params,
    st.lists(st.sampled_from(["nack", "nack pli", "ccm fir", "goog-remb"]), max_size=2),
)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    rtp = draw(st.booleans())
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF"]) if rtp else tokens)
    rtcp_port = draw(st.one_of(st.none(), ports))
    media = MediaDescription(
        kind=draw(tokens),
        port=draw(ports),
        proto=proto,
        formats=draw(
            st.lists(st.integers(0, 127).map(str) if rtp else tokens, min_size=1, max_size=4)
        ),
        connection_address=draw(st.one_of(st.none(), addresses)),
        direction=draw(st.sampled_from(DIRECTIONS)),
        rtcp_port=rtcp_port,
        rtcp_mux=draw(st.booleans()),
        bandwidths=draw(bandwidths),
        attributes=draw(st.lists(attributes, max_size=4)),
        rtcp_address=None if rtcp_port is None else draw(st.one_of(st.none(), addresses)),
        port_count=draw(st.one_of(st.none(), st.integers(1, 99999))),
        information=draw(st.one_of(st.none(), free_text)),
        encryption_key=draw(st.one_of(st.none(), stripped_text)),
    )
    if rtp and draw(st.booleans()):
        chosen = draw(st.lists(codecs, min_size=1, max_size=3, unique_by=lambda c: c.payload_type))
        media.set_codecs(chosen, draw(st.lists(st.sampled_from(["nack", "ccm fir"]), max_size=2)))
    return media


descriptions = st.builds(
    SessionDescription,
    username=tokens,
    session_id=big,
    session_version=big,
    address=addresses,
    session_name=free_text,
    connection_address=st.one_of(st.none(), addresses),
    media=st.lists(media_descriptions(), max_size=3),
    attributes=st.lists(
        st.builds(Attribute, tokens, st.one_of(st.none(), stripped_text)), max_size=3
    ),
    bandwidths=bandwidths,
    times=st.lists(
        st.builds(Timing, big, big, st.lists(stripped_text, max_size=2)), min_size=1, max_size=2
    ),
    information=st.one_of(st.none(), free_text),
    uri=st.one_of(st.none(), stripped_text),
    emails=st.lists(stripped_text, max_size=2),
    phones=st.lists(stripped_text, max_size=2),
    time_zones=st.one_of(st.none(), stripped_text),
    encryption_key=st.one_of(st.none(), stripped_text),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(descriptions)
def test_property_round_trip(description: SessionDescription) -> None:
    data = description.to_bytes()
    parsed = SessionDescription.parse(data)
    assert parsed == description
    assert parsed.to_bytes() == data
    for media in parsed.media:
        assert media.codecs == description.media[parsed.media.index(media)].codecs


def _check_parse_only_raises_sdp_error(data: bytes) -> None:
    try:
        parsed = SessionDescription.parse(data)
    except SdpError:
        return
    # Whatever parses also serializes, re-parses to the same model and yields codecs.
    again = SessionDescription.parse(parsed.to_bytes())
    assert again == parsed
    for media in parsed.media:
        assert isinstance(media.codecs, list)
    with contextlib.suppress(SdpError):
        negotiate(build_offer(config()), parsed)
    with contextlib.suppress(SdpError):
        answer_offer(parsed, config())


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_property_random_bytes_raise_only_sdp_error(data: bytes) -> None:
    _check_parse_only_raises_sdp_error(data)


sdp_lines = st.one_of(
    st.from_regex(r"\A[vosiuepcbtrzkam]=[ -~]{0,30}\Z"),
    st.sampled_from(
        [
            "m=audio 4000 RTP/AVP 0 8 96",
            "m=video 0 RTP/AVP",
            "a=rtpmap:96 H264/90000",
            "a=fmtp:96 packetization-mode=1",
            "a=rtcp:4001 IN IP4 192.0.2.1",
            "a=rtcp-mux",
            "a=sendonly",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "b=AS:64",
        ]
    ),
)


@settings(max_examples=300)
@given(st.lists(sdp_lines, max_size=12))
def test_property_sdp_like_lines_raise_only_sdp_error(lines: list[str]) -> None:
    data = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n" + "\r\n".join(lines)
    _check_parse_only_raises_sdp_error(data.encode())


@settings(max_examples=400)
@given(st.sampled_from(VECTOR_NAMES), st.data())
def test_property_mutated_vectors_raise_only_sdp_error(name: str, data: st.DataObject) -> None:
    buf = bytearray(vector(name))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(buf) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            buf[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del buf[position : position + data.draw(st.integers(1, 20))]
        elif action == "insert":
            buf[position:position] = data.draw(st.sampled_from([b" ", b"\n", b"/", b"=", b":"]))
        else:
            del buf[position:]
        if not buf:
            break
    _check_parse_only_raises_sdp_error(bytes(buf))


def test_whitespace_inside_a_connection_address_is_refused() -> None:
    """Found by the random-bytes property: a tab in c= parsed but could not be written."""
    data = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 \t.0.0.0\r\nt=0 0\r\n"
    with pytest.raises(SdpError):
        SessionDescription.parse(data)
