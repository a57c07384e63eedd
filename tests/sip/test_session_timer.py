"""The RFC 4028 session timer: Session-Expires / Min-SE values, who refreshes, and when."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.sip.session_timer import SessionExpires, SessionTimer, parse_min_se


# ------------------------------------------------------------------ SessionExpires
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("90;refresher=uac", SessionExpires(90, "uac")),
        ("90 ; Refresher = UAS", SessionExpires(90, "uas")),
        ("4000;x=1;refresher=uas;y", SessionExpires(4000, "uas")),
        ("120;foo=bar", SessionExpires(120)),
        ("120;refresher=other", SessionExpires(120, "other")),
    ],
)
def test_session_expires_parse(text: str, expected: SessionExpires) -> None:
    assert SessionExpires.parse(text) == expected


@pytest.mark.parametrize("text", ["", "abc", ";refresher=uac", "-5", "1.5;refresher=uac", "²"])
def test_session_expires_rejects_what_is_not_delta_seconds(text: str) -> None:
    with pytest.raises(ValueError, match=r"^Session-Expires is not delta-seconds: "):
        SessionExpires.parse(text)


def test_session_expires_str() -> None:
    assert str(SessionExpires(1800)) == "1800"
    assert str(SessionExpires(90, "uac")) == "90;refresher=uac"


@given(st.integers(0, 2**31), st.sampled_from([None, "uac", "uas"]))
def test_session_expires_round_trip(interval: int, refresher: str | None) -> None:
    value = SessionExpires(interval, refresher)
    assert SessionExpires.parse(str(value)) == value


@given(st.text(max_size=40))
def test_session_expires_parse_fails_only_with_value_error(text: str) -> None:
    try:
        value = SessionExpires.parse(text)
    except ValueError:
        return
    assert value.interval >= 0
    assert value.refresher is None or value.refresher == value.refresher.strip().lower()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), (" 120 ;x=y", 120), (None, None), ("", None), ("soon", None), ("¹²", None)],
)
def test_parse_min_se(text: str | None, expected: int | None) -> None:
    assert parse_min_se(text) == expected


# ------------------------------------------------------------------ SessionTimer
def test_headers_for_requests() -> None:
    timer = SessionTimer(1800, 90)
    assert timer.headers() == [("Session-Expires", "1800"), ("Min-SE", "90")]
    assert timer.headers("uac") == [("Session-Expires", "1800;refresher=uac"), ("Min-SE", "90")]
    assert SessionTimer(0, 90).headers("uac") == []  # disabled
    assert timer.get_timer() is None


def test_we_refresh_at_half_the_interval() -> None:
    timer = SessionTimer(1800, 90)
    timer.arm("90;refresher=uac", 100.0, we_are="uac")
    assert timer.interval == 90
    assert (timer.refresh_at, timer.expire_at) == (145.0, None)
    assert timer.get_timer() == 145.0
    assert not timer.refresh_due(144.99)
    assert timer.refresh_due(145.0)
    assert not timer.refresh_due(145.0)  # consumed
    assert timer.get_timer() is None


@pytest.mark.parametrize(
    ("interval", "expire_at"),
    [(90, 60.0), (1800, 1768.0)],  # min(32, interval / 3) before expiry (§10)
)
def test_peer_refreshes_and_we_give_up_before_expiry(interval: int, expire_at: float) -> None:
    timer = SessionTimer(1800, 90)
    timer.arm(f"{interval};refresher=uas", 0.0, we_are="uac")
    assert (timer.refresh_at, timer.expire_at) == (None, expire_at)
    assert not timer.expiry_due(expire_at - 0.01)
    assert not timer.refresh_due(expire_at)
    assert timer.expiry_due(expire_at)
    assert timer.get_timer() is None


def test_without_refresher_the_uac_refreshes() -> None:
    ours, theirs = SessionTimer(1800, 90), SessionTimer(1800, 90)
    ours.arm("600", 0.0, we_are="uac")
    theirs.arm("600", 0.0, we_are="uas")
    assert (ours.refresh_at, ours.expire_at) == (300.0, None)
    assert (theirs.refresh_at, theirs.expire_at) == (None, 568.0)


@pytest.mark.parametrize("header", [None, "", "never"])
def test_arm_with_nothing_usable_keeps_the_timer(header: str | None) -> None:
    timer = SessionTimer(1800, 90)
    timer.arm("90;refresher=uac", 0.0, we_are="uac")
    timer.arm(header, 10.0, we_are="uac")
    assert (timer.interval, timer.refresh_at) == (90, 45.0)


def test_rearming_switches_roles() -> None:
    timer = SessionTimer(1800, 90)
    timer.arm("90;refresher=uac", 0.0, we_are="uac")
    timer.arm("120;refresher=uac", 40.0, we_are="uas")
    # 40 + 120 - min(32, 120 / 3)
    assert (timer.interval, timer.refresh_at, timer.expire_at) == (120, None, 128.0)


@pytest.mark.parametrize(
    ("asked", "echoed", "refresh_at", "expire_at"),
    [
        ("90;refresher=uac", "90;refresher=uac", None, 60.0),  # the peer refreshes
        ("90", "90;refresher=uac", None, 60.0),
        ("90;refresher=uas", "90;refresher=uas", 45.0, None),  # it asks us to
        ("90;refresher=UAS", "90;refresher=uas", 45.0, None),
    ],
)
def test_answer_to_a_peer_refresh(
    asked: str, echoed: str, refresh_at: float | None, expire_at: float | None
) -> None:
    timer = SessionTimer(1800, 90)
    headers = timer.answer(asked, 0.0)
    assert headers == [("Require", "timer"), ("Session-Expires", echoed)]
    assert (timer.refresh_at, timer.expire_at) == (refresh_at, expire_at)


@pytest.mark.parametrize("header", [None, "", "later;refresher=uac"])
def test_answer_without_usable_session_expires(header: str | None) -> None:
    timer = SessionTimer(1800, 90)
    assert timer.answer(header, 0.0) == []
    assert timer.get_timer() is None


def test_raise_interval_from_422() -> None:
    timer = SessionTimer(60, 30)
    assert timer.raise_interval(90)
    assert timer.interval == 90
    assert not timer.raise_interval(90)
    assert not timer.raise_interval(45)
    assert timer.interval == 90


def test_stop_clears_both_deadlines() -> None:
    timer = SessionTimer(1800, 90)
    timer.arm("90;refresher=uas", 0.0, we_are="uac")
    timer.stop()
    assert timer.get_timer() is None
    assert not timer.expiry_due(1000.0)
