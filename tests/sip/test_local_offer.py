"""Our side of offer/answer in one dialog (RFC 3264 §6, §8): versions, re-offers, rollback."""

from __future__ import annotations

import pytest

from sipbridge.sip.local_offer import LocalOffer
from sipbridge.sip.offer_answer import MediaOfferConfig
from sipbridge.sip.sdp import NoCommonCodecs, SdpError
from tests.sip.peer import G729_AUDIO, sdp_answer, sdp_offer

MEDIA = MediaOfferConfig(
    "192.0.2.1", 40000, None, session_id=7, session_version=1, audio_codecs=("PCMU", "PCMA")
)


def test_initial_offer() -> None:
    local = LocalOffer(MEDIA)
    assert local.version == 1
    assert local.current.session_version == 1
    assert local.direction == "sendrecv"
    assert local.current.media[0].port == 40000


def test_negotiate_an_answer() -> None:
    local = LocalOffer(MEDIA)
    negotiated = local.negotiate(sdp_answer())
    assert negotiated.audio is not None
    assert negotiated.audio.codec.name.upper() == "PCMU"
    assert (negotiated.audio.remote_address, negotiated.audio.remote_port) == ("192.0.2.50", 50000)
    with pytest.raises(NoCommonCodecs):
        local.negotiate(sdp_answer(audio=G729_AUDIO))
    with pytest.raises(SdpError):
        local.negotiate(b"v=0\r\nnot sdp\r\n")


def test_reoffer_with_a_new_direction_takes_a_new_version() -> None:
    local = LocalOffer(MEDIA)
    first = local.current
    hold = local.reoffer("sendonly")
    assert (hold.session_version, local.version, local.direction) == (2, 2, "sendonly")
    assert first.session_version == 1  # the previous offer is not changed in place
    local.accepted()
    assert not local.refused()  # nothing in flight to restore
    assert local.direction == "sendonly"


def test_unchanged_reoffer_keeps_the_version() -> None:
    # A session refresh re-INVITE repeats the offer as it is (RFC 3264 §8).
    local = LocalOffer(MEDIA)
    again = local.reoffer("sendrecv")
    assert again is local.current
    assert (again.session_version, local.version) == (1, 1)


def test_refused_reoffer_restores_the_previous_offer() -> None:
    local = LocalOffer(MEDIA)
    local.reoffer("sendonly")
    assert local.refused()
    assert (local.direction, local.current.session_version) == ("sendrecv", 1)
    # The version stays spent: the next change takes a fresh one.
    assert local.reoffer("inactive").session_version == 3


def test_retried_reoffer_keeps_what_to_restore() -> None:
    local = LocalOffer(MEDIA)
    local.reoffer("sendonly")
    retry = local.reoffer("sendonly")  # after 491: the same offer again
    assert retry.session_version == 2
    assert local.refused()
    assert local.direction == "sendrecv"


def test_answer_keeps_our_direction_and_bumps_the_version() -> None:
    local = LocalOffer(MEDIA)
    local.reoffer("sendonly")
    local.accepted()
    answer, negotiated = local.answer(sdp_offer(direction="sendrecv"), None)
    assert answer.session_version == local.version == 3
    assert answer.media[0].direction == "sendonly"  # we still hold the call (§8.4)
    assert negotiated.audio is not None
    # After an answer of ours, even an unchanged re-offer takes a new version (§8).
    assert local.reoffer("sendonly").session_version == 4


def test_answer_to_unusable_sdp_raises() -> None:
    local = LocalOffer(MEDIA)
    with pytest.raises(SdpError):
        local.answer(b"v=0\r\nthis is not sdp\r\n", None)
    assert local.version == 1  # nothing was answered
