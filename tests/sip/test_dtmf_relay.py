"""The application/dtmf-relay INFO body (Cisco format, RFC 6086 legacy INFO usage)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.sip.dtmf_relay import DtmfRelay


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"Signal=5\r\nDuration=160\r\n", DtmfRelay("5", 160)),
        (b"Signal = *\r\nDuration = 250\r\n", DtmfRelay("*", 250)),
        (b"Signal=#\r\n", DtmfRelay("#", None)),
        (b"Signal=1\nDuration=100", DtmfRelay("1", 100)),  # bare LF, no final newline
        (b"Duration=100\r\nSignal=A\r\n", DtmfRelay("A", 100)),
        (b"Signal=9\r\nDuration=long\r\n", DtmfRelay("9", None)),
        (b"Signal=9\r\nDuration=\xc2\xb2\r\n", DtmfRelay("9", None)),  # "2" superscript
        (b"junk line\r\nSignal=0\r\n", DtmfRelay("0", None)),
    ],
)
def test_parse(body: bytes, expected: DtmfRelay) -> None:
    assert DtmfRelay.parse(body) == expected


@pytest.mark.parametrize(
    "body", [b"", b"Duration=160\r\n", b"Signal=\r\n", b"Signal=  \r\n", b"signal=5\r\n"]
)
def test_parse_without_signal(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"^dtmf-relay body without Signal$"):
        DtmfRelay.parse(body)


def test_bytes() -> None:
    assert bytes(DtmfRelay("5", 160)) == b"Signal=5\r\nDuration=160\r\n"
    assert bytes(DtmfRelay("#")) == b"Signal=#\r\n"
    assert DtmfRelay.CONTENT_TYPE == "application/dtmf-relay"


@given(
    st.sampled_from(list("0123456789*#ABCD")),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_round_trip(signal: str, duration: int | None) -> None:
    relay = DtmfRelay(signal, duration)
    assert DtmfRelay.parse(bytes(relay)) == relay


@given(st.binary(max_size=80))
def test_parse_fails_only_with_value_error(body: bytes) -> None:
    try:
        relay = DtmfRelay.parse(body)
    except ValueError:
        return
    assert relay.signal and relay.signal == relay.signal.strip()
    assert relay.duration_ms is None or relay.duration_ms >= 0
