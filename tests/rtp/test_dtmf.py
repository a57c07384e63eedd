"""Tests for rtp.dtmf: RFC 4733 telephone-event payloads, receiver dedupe, sender schedule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.dtmf import DIGITS, MAX_DURATION, DtmfReceiver, DtmfSender, TelephoneEvent
from rtp.packet import RtpPacket
from tests.rtp import read_hex

# ---------------------------------------------------------------- payload


def test_parse_and_serialize_the_payload() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("050a00a0"))
    assert event == TelephoneEvent(event=5, end=False, volume=10, duration=160)
    assert event.digit == "5"
    assert bytes(event) == bytes.fromhex("050a00a0")
    end = TelephoneEvent.parse(bytes.fromhex("0bbfffff"))
    assert end == TelephoneEvent(event=11, end=True, volume=63, duration=0xFFFF)
    assert end.digit == "#"
    assert bytes(end) == bytes.fromhex("0bbfffff")


def test_reserved_bit_is_ignored_and_written_as_zero() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("054a00a0"))
    assert (event.end, event.volume) == (False, 10)
    assert bytes(event) == bytes.fromhex("050a00a0")


@pytest.mark.parametrize("size", [0, 3, 5, 8])
def test_payload_must_be_four_bytes(size: int) -> None:
    with pytest.raises(ValueError) as caught:
        TelephoneEvent.parse(bytes(size))
    assert str(caught.value) == f"telephone-event payload is {size} bytes, not 4"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (TelephoneEvent(256), "telephone-event code 256 does not fit in 8 bits"),
        (TelephoneEvent(-1), "telephone-event code -1 does not fit in 8 bits"),
        (TelephoneEvent(1, volume=64), "telephone-event volume 64 is not 0-63"),
        (
            TelephoneEvent(1, duration=65536),
            "telephone-event duration 65536 does not fit in 16 bits",
        ),
        (TelephoneEvent(1, duration=-1), "telephone-event duration -1 does not fit in 16 bits"),
    ],
)
def test_out_of_range_fields_are_value_errors(event: TelephoneEvent, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        bytes(event)
    assert str(caught.value) == message


def test_digits_and_event_codes() -> None:
    assert TelephoneEvent.DIGITS == DIGITS == "0123456789*#ABCD"
    assert [TelephoneEvent.from_digit(d).event for d in "0129*#AD"] == [0, 1, 2, 9, 10, 11, 12, 15]
    assert TelephoneEvent.from_digit("b").event == 13
    assert [TelephoneEvent(code).digit for code in range(16)] == list(DIGITS)
    assert TelephoneEvent(16).digit is None  # flash (RFC 4734), not a DTMF digit
    assert TelephoneEvent.from_digit("7", end=True, volume=3, duration=9) == TelephoneEvent(
        7, True, 3, 9
    )


@pytest.mark.parametrize("text", ["", "x", "55", "E", " "])
def test_from_digit_rejects_non_digits(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        TelephoneEvent.from_digit(text)
    assert str(caught.value) == f"{text!r} is not a DTMF digit"


# ---------------------------------------------------------------- the vector stream


def vector_stream() -> list[RtpPacket]:
    return [RtpPacket.parse(data) for data in read_hex("dtmf_digit_5.hex")]


def test_vector_stream_gives_one_digit() -> None:
    receiver = DtmfReceiver()
    results = [receiver.feed(p.timestamp, TelephoneEvent.parse(p.payload)) for p in vector_stream()]
    assert results == ["5", None, None, None, None, None, None]


def test_sender_reproduces_the_vector_stream() -> None:
    sent = DtmfSender(clock_rate=8000, volume=10).packets_for("5", 48000, 100, 20)
    stream = vector_stream()
    assert [(p.marker, p.timestamp, p.payload) for p in stream] == [
        (marker, timestamp, bytes(event)) for marker, timestamp, event in sent
    ]
    assert {p.payload_type for p in stream} == {101}


# ---------------------------------------------------------------- receiver


def event(code: int, duration: int, end: bool = False) -> TelephoneEvent:
    return TelephoneEvent(code, end, 10, duration)


def test_first_packets_lost_reports_at_the_first_seen() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, event(3, 480)) == "3"
    assert receiver.feed(1000, event(3, 800, end=True)) is None
    assert receiver.feed(1000, event(3, 800, end=True)) is None


def test_only_the_end_packets_arrive() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, event(10, 800, end=True)) == "*"
    assert receiver.feed(1000, event(10, 800, end=True)) is None


def test_same_digit_twice_is_two_key_presses() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, event(1, 160)) == "1"
    assert receiver.feed(1000, event(1, 800, end=True)) is None
    assert receiver.feed(2600, event(1, 160)) == "1"


def test_late_straggler_of_a_finished_event_is_ignored() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, event(1, 160)) == "1"
    assert receiver.feed(2600, event(2, 160)) == "2"
    assert receiver.feed(1000, event(1, 800, end=True)) is None
    assert receiver.feed(2600, event(2, 320)) is None


def test_timestamps_jumping_backwards_still_report() -> None:
    # A new SSRC (re-INVITE, transfer) starts at a random timestamp.
    receiver = DtmfReceiver()
    assert receiver.feed(3_000_000_000, event(4, 160)) == "4"
    assert receiver.feed(12_000, event(4, 160)) == "4"
    assert receiver.feed(0xFFFF_FF00, event(9, 160)) == "9"
    assert receiver.feed(0x0000_0100, event(8, 160)) == "8"


def test_memory_of_old_timestamps_is_bounded() -> None:
    receiver = DtmfReceiver(memory=2)
    assert [receiver.feed(ts, event(0, 160)) for ts in (100, 200, 300)] == ["0", "0", "0"]
    assert receiver.feed(200, event(0, 160)) is None
    assert receiver.feed(100, event(0, 160)) == "0"  # forgotten: looks like a new press


def test_non_dtmf_events_are_tracked_but_not_reported() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, event(16, 160)) is None
    assert receiver.feed(1000, event(16, 320, end=True)) is None
    assert receiver.feed(2000, event(6, 160)) == "6"


def test_reset_forgets_everything() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(1000, event(1, 160)) == "1"
    receiver.reset()
    assert receiver.feed(1000, event(1, 320)) == "1"


def test_long_event_segments_are_one_key_press() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(5000, event(0, MAX_DURATION)) == "0"
    assert receiver.feed(5000 + MAX_DURATION, event(0, 160)) is None
    assert receiver.feed(5000 + MAX_DURATION, event(0, 800, end=True)) is None
    # Once the event ended, the same code at the same distance is a new press.
    assert receiver.feed(5000 + 2 * MAX_DURATION, event(0, 160)) == "0"


def test_segment_rule_needs_the_same_code() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(5000, event(0, MAX_DURATION)) == "0"
    assert receiver.feed(5000 + MAX_DURATION, event(1, 160)) == "1"


# ---------------------------------------------------------------- sender


def test_short_event_is_three_end_packets_the_first_marked() -> None:
    sent = DtmfSender().packets_for("#", 7, duration_ms=20, interval_ms=20)
    assert sent == [
        (True, 7, TelephoneEvent(11, True, 10, 160)),
        (False, 7, TelephoneEvent(11, True, 10, 160)),
        (False, 7, TelephoneEvent(11, True, 10, 160)),
    ]


def test_default_digit_schedule() -> None:
    sent = DtmfSender().packets_for("1", 0)
    assert [e.duration for _, _, e in sent] == [
        160,
        320,
        480,
        640,
        800,
        960,
        1120,
        1280,
        1280,
        1280,
    ]
    assert [m for m, _, _ in sent] == [True] + [False] * 9
    assert [e.end for _, _, e in sent] == [False] * 7 + [True] * 3
    assert {ts for _, ts, _ in sent} == {0}


def test_interval_and_clock_rate() -> None:
    sent = DtmfSender(clock_rate=16000, volume=20).packets_for(
        "9", 100, duration_ms=120, interval_ms=50
    )
    assert [(e.duration, e.end) for _, _, e in sent] == [
        (800, False),
        (1600, False),
        (1920, True),
        (1920, True),
        (1920, True),
    ]
    assert {e.volume for _, _, e in sent} == {20}
    assert {e.event for _, _, e in sent} == {9}


def test_timestamp_wraps() -> None:
    sent = DtmfSender().packets_for("2", 2**32 + 5)
    assert {ts for _, ts, _ in sent} == {5}


def test_long_event_is_segmented() -> None:
    sent = DtmfSender().packets_for("0", 2**32 - 10, duration_ms=10_000)
    first = [(m, e) for m, ts, e in sent if ts == 2**32 - 10]
    second = [(m, e) for m, ts, e in sent if ts == MAX_DURATION - 10]
    assert len(first) + len(second) == len(sent)
    # Segment 1 ends with the maximum duration three times, without the E bit.
    assert [(e.duration, e.end) for _, e in first[-3:]] == [(MAX_DURATION, False)] * 3
    assert [m for m, _ in first] == [True] + [False] * (len(first) - 1)
    # Segment 2 starts without the marker and ends the event.
    assert not any(m for m, _ in second)
    assert [(e.duration, e.end) for _, e in second[-3:]] == [(80_000 - MAX_DURATION, True)] * 3
    receiver = DtmfReceiver()
    assert [d for _, ts, e in sent if (d := receiver.feed(ts, e))] == ["0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", 0, 100, 20), "'x' is not a DTMF digit"),
        (("1", 0, 0, 20), "DTMF duration and interval must be positive"),
        (("1", 0, 100, 0), "DTMF duration and interval must be positive"),
    ],
)
def test_sender_rejects_bad_arguments(args: tuple[str, int, int, int], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        DtmfSender().packets_for(*args)
    assert str(caught.value) == message


# ---------------------------------------------------------------- properties


@given(st.binary(max_size=8))
def test_random_payloads_raise_only_value_error(data: bytes) -> None:
    try:
        event = TelephoneEvent.parse(data)
    except ValueError:
        assert len(data) != 4
        return
    assert TelephoneEvent.parse(bytes(event)) == event
    assert bytes(event) == bytes([data[0], data[1] & 0xBF, data[2], data[3]])


@given(
    st.builds(
        TelephoneEvent,
        st.integers(0, 255),
        st.booleans(),
        st.integers(0, 63),
        st.integers(0, 0xFFFF),
    )
)
def test_generated_events_round_trip(event: TelephoneEvent) -> None:
    assert TelephoneEvent.parse(bytes(event)) == event


@given(
    st.lists(st.sampled_from(DIGITS), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
    st.integers(40, 400),
    st.sampled_from([10, 20, 30, 50]),
    st.randoms(use_true_random=False),
)
def test_sender_to_receiver_survives_loss_and_duplicates(
    digits: list[str], start: int, duration_ms: int, interval_ms: int, rng: random.Random
) -> None:
    sender = DtmfSender()
    receiver = DtmfReceiver()
    received: list[str] = []
    timestamp = start
    for digit in digits:
        packets = sender.packets_for(digit, timestamp, duration_ms, interval_ms)
        kept = [p for p in packets if rng.random() < 0.6] or [rng.choice(packets)]
        kept += rng.sample(kept, k=min(2, len(kept)))  # duplicates, out of order
        for _, ts, event in kept:
            if (found := receiver.feed(ts, event)) is not None:
                received.append(found)
        timestamp += duration_ms * 8 + 400  # the next press starts after a gap
    assert received == digits
