"""SDES ``a=crypto`` (RFC 4568) and SRTP offer/answer: parse/serialize, key handling,
the three ``[sip] srtp`` modes, answers to the peer's SAVP offers, rekeying."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.settings import SipSettings
from sipbridge.sip.crypto import (
    KEY_LENGTH,
    SUITES,
    CryptoAttribute,
    CryptoError,
    SrtpKeys,
    SrtpRequired,
    generate_key,
    mask_crypto_keys,
    offered_cryptos,
)
from sipbridge.sip.local_offer import LocalOffer
from sipbridge.sip.offer_answer import MediaOfferConfig, answer_offer
from sipbridge.sip.sdp import SdpError, SessionDescription

KEY = bytes(range(30))
KEY_B64 = base64.b64encode(KEY).decode()
THEIR_KEY = bytes(range(50, 80))
THEIR_B64 = base64.b64encode(THEIR_KEY).decode()


def _media(srtp: str, video: bool = False) -> MediaOfferConfig:
    return MediaOfferConfig(
        "192.0.2.1",
        40000,
        40002 if video else None,
        session_id=7,
        session_version=1,
        audio_codecs=("PCMU",),
        srtp=srtp,  # type: ignore[arg-type]
    )


def _answer(proto: str = "RTP/AVP", crypto: str | None = None, *, video: bool = False) -> bytes:
    lines = [
        "v=0",
        "o=bob 1 1 IN IP4 192.0.2.50",
        "s=-",
        "c=IN IP4 192.0.2.50",
        "t=0 0",
        f"m=audio 50000 {proto} 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    if crypto is not None:
        lines.append(f"a=crypto:{crypto}")
    if video:
        lines += [f"m=video 50002 {proto} 96", "a=rtpmap:96 H264/90000"]
        lines.append("a=fmtp:96 packetization-mode=1;profile-level-id=42e01f")
        if crypto is not None:
            lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()


# -- the attribute ----------------------------------------------------------------


def test_parse_a_crypto_attribute() -> None:
    crypto = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^31")
    assert (crypto.tag, crypto.suite, crypto.key, crypto.lifetime) == (
        1,
        "AES_CM_128_HMAC_SHA1_80",
        KEY,
        "2^31",
    )
    assert crypto.supported
    assert str(crypto) == f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^31"
    assert KEY_B64 not in repr(crypto) and KEY.hex() not in repr(crypto)


def test_session_parameters_are_kept() -> None:
    text = f"7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64} KDR=1 UNENCRYPTED_SRTCP"
    crypto = CryptoAttribute.parse(text)
    assert crypto.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert str(crypto) == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "crypto attribute needs tag, suite and key: 2 fields"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}", "bad crypto tag 'x'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_B64}", "unsupported key method 'uri'"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!", "key is not base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^20|1:4", "MKI is not supported"),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64};inline:{KEY_B64}",
            "several keys in one crypto attribute are not supported",
        ),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "AES_CM_128_HMAC_SHA1_80 needs a 30-byte key"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|soon", "bad key lifetime 'soon'"),
    ],
)
def test_bad_crypto_attributes(value: str, reason: str) -> None:
    with pytest.raises(CryptoError, match=reason.replace("^", r"\^")):
        CryptoAttribute.parse(value)


def test_unknown_suite_parses_but_is_not_supported() -> None:
    crypto = CryptoAttribute.parse("2 F8_128_HMAC_SHA1_80 inline:AAAA")
    assert not crypto.supported and crypto.key == b"\x00\x00\x00"


_suites = st.sampled_from(SUITES)
_keys = st.binary(min_size=KEY_LENGTH, max_size=KEY_LENGTH)
_params = st.lists(st.from_regex(r"[A-Z_]{1,8}(=[0-9]{1,4})?", fullmatch=True), max_size=3)


@given(st.integers(0, 999_999_999), _suites, _keys, st.one_of(st.none(), st.just("2^31")), _params)
def test_round_trip(
    tag: int, suite: str, key: bytes, lifetime: str | None, params: list[str]
) -> None:
    crypto = CryptoAttribute(tag, suite, key, lifetime, tuple(params))
    assert CryptoAttribute.parse(str(crypto)) == crypto


@given(st.text(max_size=120))
def test_parse_never_fails_otherwise(text: str) -> None:
    try:
        crypto = CryptoAttribute.parse(text)
    except CryptoError as exc:
        assert str(exc)
    else:
        assert CryptoAttribute.parse(str(crypto)).key == crypto.key


def test_generated_keys_are_fresh() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20 and all(len(k) == KEY_LENGTH for k in keys)


def test_mask_crypto_keys() -> None:
    text = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^31\r\na=sendrecv\r\n"
    masked = mask_crypto_keys(text)
    assert KEY_B64 not in masked
    assert masked == "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***|2^31\r\na=sendrecv\r\n"


def test_keys_are_not_in_repr() -> None:
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, THEIR_KEY)
    assert KEY.hex() not in repr(keys) and str(KEY) not in repr(keys)
    local = LocalOffer(_media("mandatory"))
    assert all(k.hex() not in repr(local.media) for k in local.media.srtp_keys.values())


def test_setting() -> None:
    assert SipSettings().srtp == "off"
    assert SipSettings(srtp="mandatory").srtp == "mandatory"


# -- offers --------------------------------------------------------------------------


def test_off_offers_plain_rtp() -> None:
    local = LocalOffer(_media("off"))
    media = local.current.media[0]
    assert media.proto == "RTP/AVP" and media.attribute("crypto") is None
    assert not local.media.srtp_keys


@pytest.mark.parametrize(("mode", "proto"), [("optional", "RTP/AVP"), ("mandatory", "RTP/SAVP")])
def test_offer_carries_a_key_per_stream(mode: str, proto: str) -> None:
    local = LocalOffer(_media(mode, video=True))
    audio, video = local.current.media
    assert audio.proto == video.proto == proto
    offered = [offered_cryptos(m) for m in (audio, video)]
    assert [c.suite for c in offered[0]] == list(SUITES)
    assert [c.tag for c in offered[0]] == [1, 2]
    assert offered[0][0].key == local.media.srtp_keys["audio"]
    assert offered[1][0].key == local.media.srtp_keys["video"]
    assert offered[0][0].key != offered[1][0].key
    # The serialized SDP parses back to the same keys.
    again = SessionDescription.parse(local.current.to_bytes())
    assert offered_cryptos(again.media[0]) == offered[0]


def test_reoffers_keep_the_keys() -> None:
    local = LocalOffer(_media("mandatory"))
    key = offered_cryptos(local.current.media[0])[0].key
    hold = local.reoffer("sendonly")
    assert offered_cryptos(hold.media[0])[0].key == key
    assert hold.media[0].proto == "RTP/SAVP"


# -- answers to our offer ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["optional", "mandatory"])
def test_answer_with_a_matching_crypto(mode: str) -> None:
    local = LocalOffer(_media(mode, video=True))
    proto = "RTP/SAVP" if mode == "mandatory" else "RTP/AVP"
    negotiated = local.negotiate(
        _answer(proto, f"2 AES_CM_128_HMAC_SHA1_32 inline:{THEIR_B64}", video=True)
    )
    assert negotiated.audio is not None and negotiated.video is not None
    assert negotiated.audio.srtp == SrtpKeys(
        "AES_CM_128_HMAC_SHA1_32", local.media.srtp_keys["audio"], THEIR_KEY
    )
    assert negotiated.video.srtp is not None
    assert negotiated.video.srtp.local_key == local.media.srtp_keys["video"]


def test_optional_accepts_a_plain_answer() -> None:
    negotiated = LocalOffer(_media("optional")).negotiate(_answer())
    assert negotiated.audio is not None and negotiated.audio.srtp is None


def test_mandatory_refuses_a_plain_answer() -> None:
    local = LocalOffer(_media("mandatory"))
    with pytest.raises(
        SrtpRequired, match="m= line 1: SRTP required but the answer has no a=crypto"
    ):
        local.negotiate(_answer())
    assert issubclass(SrtpRequired, SdpError)


def test_mandatory_refuses_an_answer_with_a_tag_we_did_not_offer() -> None:
    local = LocalOffer(_media("mandatory"))
    with pytest.raises(SrtpRequired):
        local.negotiate(_answer("RTP/SAVP", f"9 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_B64}"))


def test_off_ignores_a_crypto_in_the_answer() -> None:
    negotiated = LocalOffer(_media("off")).negotiate(
        _answer("RTP/AVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_B64}")
    )
    assert negotiated.audio is not None and negotiated.audio.srtp is None


# -- the peer's re-INVITE offers ---------------------------------------------------


def _reoffer(proto: str, crypto: str | None) -> SessionDescription:
    return SessionDescription.parse(_answer(proto, crypto))


def test_answer_a_savp_reoffer_with_our_key() -> None:
    local = LocalOffer(_media("mandatory"))
    config = local.media
    offer = _reoffer("RTP/SAVP", f"5 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_B64}")
    answer, negotiated = answer_offer(offer, config)
    media = answer.media[0]
    assert media.proto == "RTP/SAVP" and media.port == 40000
    cryptos = offered_cryptos(media)
    assert [(c.tag, c.suite, c.key) for c in cryptos] == [
        (5, "AES_CM_128_HMAC_SHA1_80", config.srtp_keys["audio"])
    ]
    assert negotiated.audio is not None
    assert negotiated.audio.srtp == SrtpKeys(
        "AES_CM_128_HMAC_SHA1_80", config.srtp_keys["audio"], THEIR_KEY
    )


def test_plain_reoffer_is_rejected_when_mandatory() -> None:
    config = LocalOffer(_media("mandatory")).media
    with pytest.raises(SdpError, match="No common codecs"):
        answer_offer(_reoffer("RTP/AVP", None), config)


def test_savp_reoffer_is_rejected_when_off() -> None:
    config = LocalOffer(_media("off")).media
    with pytest.raises(SdpError, match="No common codecs"):
        answer_offer(_reoffer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_B64}"), config)


def test_optional_answers_a_plain_reoffer_plainly() -> None:
    config = LocalOffer(_media("optional")).media
    answer, negotiated = answer_offer(_reoffer("RTP/AVP", None), config)
    assert answer.media[0].attribute("crypto") is None
    assert negotiated.audio is not None and negotiated.audio.srtp is None


def test_masking_hides_the_offered_keys() -> None:
    # The SIP trace passes every message through mask_crypto_keys (transport.py).
    local = LocalOffer(_media("mandatory", video=True))
    masked = mask_crypto_keys(local.current.to_bytes().decode())
    assert masked.count("inline:***") == 4
    for key in local.media.srtp_keys.values():
        assert base64.b64encode(key).decode() not in masked
