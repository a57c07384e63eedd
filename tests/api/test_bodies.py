"""The body decoders and converters on their own (no HTTP)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.api.bodies import (
    CALL_ID_DECODER,
    START_CALL_DECODER,
    StartCallBody,
    decode_body,
    parse_dtmf,
    parse_flag,
    parse_port,
    parse_status,
    to_call_request,
)
from sipbridge.callinfo import CallStatus
from sipbridge.errors import InvalidRequest


def test_parse_flag_defaults() -> None:
    assert parse_flag(None, "hasAudio", default=True) is True
    assert parse_flag("", "hasAudio", default=False) is False
    assert parse_flag(" TRUE ", "hasAudio", default=False) is True


def test_parse_flag_error_text() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_flag("yes", "hasVideo", default=True)
    assert info.value.field == "hasVideo"
    assert info.value.message == (
        """hasVideo: expected a boolean (true, false, "true", "false", "1" or "0"), got 'yes'"""
    )


def test_parse_flag_clips_long_values() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_flag("y" * 1000, "hasVideo", default=True)
    assert info.value.message.endswith("got '" + "y" * 40 + "...'")


@given(st.integers(min_value=1, max_value=65535))
def test_parse_port_accepts_every_port_both_ways(port: int) -> None:
    assert parse_port(port, "sipPort") == port
    assert parse_port(str(port), "sipPort") == port


@given(st.integers().filter(lambda n: not 1 <= n <= 65535))
def test_parse_port_refuses_out_of_range(port: int) -> None:
    for value in (port, str(port)):
        with pytest.raises(InvalidRequest) as info:
            parse_port(value, "sipPort")
        assert info.value.field == "sipPort"


@given(st.text(max_size=10))
def test_parse_port_strings_accepted_only_if_ascii_digits(text: str) -> None:
    try:
        port = parse_port(text, "sipPort")
    except InvalidRequest as exc:
        assert exc.field == "sipPort"
    else:
        stripped = text.strip()
        assert port is None if stripped == "" else port == int(stripped)
        assert stripped == "" or stripped.isascii()


def test_parse_dtmf_and_status() -> None:
    assert parse_dtmf("0123456789*#abcd") == "0123456789*#ABCD"
    assert parse_dtmf(7) == "7"
    assert parse_status("ring_media") is CallStatus.RING_MEDIA
    assert parse_status("") is None
    with pytest.raises(InvalidRequest):
        parse_dtmf(1.5)


def test_decode_errors_name_the_field() -> None:
    cases: list[tuple[bytes, str | None, str]] = [
        (b'{"callee": "b", "sipPort": 1.5}', "sipPort", "sipPort: expected a port"),
        (b'{"calee": "b"}', "calee", "calee: unknown field"),
        (b'{"hasVideo": "true"}', "callee", "callee: required field is missing"),
        (b'{"callee": null}', "callee", "callee: expected `str`, got `null`"),
        (b"[]", None, "request body: expected `object`, got `array`"),
        (b"{", None, "malformed JSON: input data was truncated"),
    ]
    for data, field, message in cases:
        with pytest.raises(InvalidRequest) as info:
            to_call_request(decode_body(START_CALL_DECODER, data))
        assert info.value.field == field
        assert info.value.message.startswith(message)


def test_unknown_field_name_is_clipped() -> None:
    name = "k" * 500
    with pytest.raises(InvalidRequest) as info:
        decode_body(CALL_ID_DECODER, msgspec.json.encode({name: 1}))
    assert info.value.field == "k" * 40 + "..."
    assert len(info.value.message) < 100


def test_unknown_field_with_backtick() -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_body(CALL_ID_DECODER, b'{"a`b": 1}')
    assert info.value.field == "a`b"


def test_start_call_body_repr_masks_the_password() -> None:
    body = decode_body(START_CALL_DECODER, b'{"callee": "bob", "sipPassword": "hunter22"}')
    assert isinstance(body, StartCallBody)
    assert "hunter22" not in repr(body)
    assert "sip_password=***" in repr(body)
    assert "hunter22" not in repr(to_call_request(body))


@given(st.binary(max_size=200))
def test_decode_body_only_raises_invalid_request(data: bytes) -> None:
    try:
        body = decode_body(START_CALL_DECODER, data)
        to_call_request(body)
    except InvalidRequest as exc:
        assert exc.status == 400
        assert exc.message
