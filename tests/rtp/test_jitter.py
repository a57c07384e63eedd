"""Tests for rtp.jitter, on virtual time."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.jitter import JitterBuffer, JitterConfig, Released
from rtp.packet import RtpPacket

PTIME = 0.02  # 20 ms audio packets
STEP = 160  # at 8 kHz


def pkt(seq: int, ts: int, ssrc: int = 1, payload: bytes = b"") -> RtpPacket:
    return RtpPacket(
        payload_type=0,
        sequence_number=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload or seq.to_bytes(4, "big", signed=True),
    )


def audio(k: int, seq0: int = 0, ts0: int = 0, ssrc: int = 1) -> RtpPacket:
    return pkt(seq0 + k, ts0 + k * STEP, ssrc)


def drive(
    buf: JitterBuffer, events: Iterable[tuple[float, RtpPacket]], until: float | None = None
) -> list[tuple[float, Released]]:
    """Push events (arrival order) and pop exactly at every timer; (pop time, release)."""
    out: list[tuple[float, Released]] = []

    def run_timers(limit: float | None) -> None:
        timer = buf.get_timer()
        while timer is not None and (limit is None or timer <= limit):
            released = buf.pop(timer)
            assert released, "a timer fired with nothing to release"
            out.extend((timer, r) for r in released)
            timer = buf.get_timer()

    for arrival, packet in sorted(events, key=lambda e: e[0]):
        run_timers(arrival)
        buf.push(packet, arrival)
    run_timers(until)
    return out


def config(**kwargs: Any) -> JitterConfig:
    return JitterConfig(clock_rate=8000, **kwargs)


def test_in_order_stream_released_at_constant_delay() -> None:
    buf = JitterBuffer(config(min_delay=0.04, initial_delay=0.04))
    events = [(10.0 + k * PTIME, audio(k)) for k in range(200)]
    out = drive(buf, events)
    assert [r.extended_seq for _, r in out] == list(range(200))
    for when, r in out:
        assert when - r.arrival == pytest.approx(0.04, abs=1e-9)
        assert r.playout == pytest.approx(r.arrival + 0.04, abs=1e-9)
        assert r.lost_before == 0
        assert not r.discontinuity
    assert buf.target_delay == pytest.approx(0.04)
    assert buf.stats.received == 200
    assert buf.stats.lost == buf.stats.late == buf.stats.reordered == 0
    assert buf.get_timer() is None
    assert len(buf) == 0


def test_reordering_within_delay_is_released_in_order() -> None:
    buf = JitterBuffer(config())
    events = []
    for k in range(100):
        # Swap every pair: the odd one arrives 5 ms before the even one.
        arrival = 1.0 + k * PTIME + (0.0 if k % 2 else 0.025)
        events.append((arrival, audio(k)))
    out = drive(buf, events)
    assert [r.extended_seq for _, r in out] == list(range(100))
    assert all(r.lost_before == 0 for _, r in out)
    assert buf.stats.reordered == 50
    assert buf.stats.lost == buf.stats.late == 0
    playouts = [r.playout for _, r in out]
    assert playouts == sorted(playouts)


def test_loss_declared_at_playout_time_of_next_packet() -> None:
    buf = JitterBuffer(config(min_delay=0.05, initial_delay=0.05))
    buf.push(audio(0), 0.0)
    buf.push(audio(1), 0.02)
    buf.push(audio(3), 0.06)  # 2 never comes
    assert buf.get_timer() == pytest.approx(0.05)
    assert [r.extended_seq for r in buf.pop(0.07)] == [0, 1]
    timer = buf.get_timer()
    assert timer == pytest.approx(0.11)  # the playout time of 3, not of 2
    assert buf.pop(0.105) == []
    assert timer is not None
    (third,) = buf.pop(timer)
    assert third.extended_seq == 3
    assert third.lost_before == 1
    assert buf.stats.lost == 1
    # 2 arriving now is late: dropped, counted, and the target grows to cover it.
    buf.push(audio(2), 0.2)
    assert buf.stats.late == 1
    assert buf.get_timer() is None
    assert buf.target_delay > 0.1


def test_duplicates_are_dropped_and_counted() -> None:
    buf = JitterBuffer(config())
    buf.push(audio(0), 0.0)
    buf.push(audio(1), 0.02)
    buf.push(audio(1), 0.021)  # duplicate while pending
    released = buf.pop(1.0)
    assert [r.extended_seq for r in released] == [0, 1]
    buf.push(audio(0), 1.01)  # duplicate after release: not late
    buf.push(audio(1), 1.02)
    assert buf.stats.duplicates == 3
    assert buf.stats.late == 0
    assert buf.get_timer() is None
    assert buf.stats.received == 5  # RFC 3550 A.1 counts duplicates as received


def test_late_packet_after_release_is_not_released() -> None:
    buf = JitterBuffer(config(min_delay=0.02, initial_delay=0.02))
    events = [(k * PTIME, audio(k)) for k in range(10) if k != 4]
    out = drive(buf, events)
    assert [r.extended_seq for _, r in out] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert out[4][1].lost_before == 1
    buf.push(audio(4), 0.5)
    buf.push(audio(4), 0.51)  # the late one again: now a duplicate
    assert buf.stats.late == 1
    assert buf.stats.duplicates == 1
    assert buf.pop(10.0) == []
    assert buf.flush() == []


def test_sequence_wraparound_is_seamless() -> None:
    buf = JitterBuffer(config())
    seqs = [*range(65530, 65536), *range(11)]
    events = [(k * PTIME, pkt(s, k * STEP)) for k, s in enumerate(seqs)]
    # 65535 arrives after 0: reordered across the wrap.
    (t5, p5), (t6, p6) = events[5], events[6]
    events[5], events[6] = (t6 + 0.001, p5), (t5, p6)
    out = drive(buf, events)
    assert [r.extended_seq for _, r in out] == list(range(65530, 65547))
    assert [r.packet.sequence_number for _, r in out] == seqs
    assert all(r.lost_before == 0 for _, r in out)
    assert buf.stats.reordered == 1
    assert buf.stats.highest_extended_seq == 65546
    assert buf.report_block_values()[2] == 65546


def test_timestamp_wraparound_is_seamless() -> None:
    buf = JitterBuffer(config(min_delay=0.04, initial_delay=0.04))
    ts0 = 2**32 - 3 * STEP
    events = [(k * PTIME, pkt(k, ts0 + k * STEP)) for k in range(10)]
    out = drive(buf, events)
    assert [r.extended_timestamp for _, r in out] == [ts0 + k * STEP for k in range(10)]
    assert out[5][1].packet.timestamp == 2 * STEP  # wrapped on the wire
    whens = [when - r.arrival for when, r in out]
    assert max(whens) - min(whens) < 1e-6  # no jump in delay at the wrap
    assert buf.stats.resets == 0


def test_ssrc_change_flushes_and_marks_discontinuity() -> None:
    buf = JitterBuffer(config())
    old = [(k * PTIME, audio(k, seq0=100, ts0=5000, ssrc=1)) for k in range(5)]
    first = drive(buf, old, until=0.05)
    assert len(buf) > 0  # some of the old stream still pending
    buf.push(audio(0, seq0=40000, ts0=123456, ssrc=2), 0.1)
    flushed = buf.pop(0.1)  # the old stream's rest, at once
    assert [r.packet.ssrc for r in flushed] == [1] * (5 - len(first))
    assert not any(r.discontinuity for r in flushed)
    new = drive(
        buf, [((k + 6) * PTIME, audio(k, seq0=40000, ts0=123456, ssrc=2)) for k in range(1, 5)]
    )
    assert [r.extended_seq for _, r in new] == list(range(40000, 40005))
    assert new[0][1].discontinuity
    assert not any(r.discontinuity for _, r in new[1:])
    assert buf.stats.resets == 1
    assert buf.stats.highest_extended_seq == 40004
    playouts = [r.playout for _, r in first] + [r.playout for r in flushed]
    playouts += [r.playout for _, r in new]
    assert playouts == sorted(playouts)
    # The old stream's tail, reordered past the switch, is late, not a switch back.
    buf.push(audio(5, seq0=100, ts0=5000, ssrc=1), 0.2)
    assert buf.stats.late == 1
    assert buf.stats.resets == 1


def test_big_sequence_jump_restarts_on_second_packet() -> None:
    buf = JitterBuffer(config())
    before = drive(buf, [(k * PTIME, audio(k)) for k in range(5)], until=1.0)
    assert len(before) == 5
    after = drive(buf, [(1.0 + k * PTIME, audio(k, seq0=20000, ts0=999)) for k in range(5)])
    assert [r.extended_seq for _, r in after] == list(range(20000, 20005))
    assert after[0][1].discontinuity
    assert all(r.lost_before == 0 for _, r in after)
    assert buf.stats.resets == 1
    assert buf.stats.discarded == 0


def test_backward_restart_with_new_timing_restarts() -> None:
    buf = JitterBuffer(config())
    drive(buf, [(k * PTIME, audio(k, seq0=50000)) for k in range(300)], until=7.0)
    after = drive(buf, [(7.0 + k * PTIME, audio(k, seq0=100, ts0=42)) for k in range(5)])
    assert [r.extended_seq for _, r in after] == list(range(100, 105))
    assert after[0][1].discontinuity
    assert buf.stats.resets == 1


def test_very_late_burst_of_a_fast_stream_is_late_not_a_restart() -> None:
    buf = JitterBuffer(JitterConfig(clock_rate=90000))
    # 1000 packets/s, 10 per 10 ms frame; 120..122 arrive 150 ms late, together.
    events = [
        (k * 0.001 + (0.15 if 120 <= k <= 122 else 0.0), pkt(k, k // 10 * 900)) for k in range(400)
    ]
    out = drive(buf, events)
    assert buf.stats.resets == 0
    assert buf.stats.late == 3
    assert [r.extended_seq for _, r in out] == [k for k in range(400) if not 120 <= k <= 122]
    assert not any(r.discontinuity for _, r in out)


def test_single_stray_jump_is_discarded() -> None:
    buf = JitterBuffer(config())
    events = [(k * PTIME, audio(k)) for k in range(10)]
    events.insert(4, (0.071, pkt(30000, 777)))  # one stray from nowhere
    out = drive(buf, events)
    assert [r.extended_seq for _, r in out] == list(range(10))
    assert not any(r.discontinuity for _, r in out)
    assert buf.stats.resets == 0
    assert buf.flush() == []
    assert buf.stats.discarded == 1


def test_keyframe_burst_released_together() -> None:
    buf = JitterBuffer(JitterConfig(clock_rate=90000))
    events = []
    for frame in range(10):
        t = frame / 30
        count = 100 if frame == 3 else 3
        for i in range(count):
            events.append((t + i * 0.005 / count, (frame, i)))
    packets = [
        (arrival, pkt(seq, frame * 3000)) for seq, (arrival, (frame, _)) in enumerate(events)
    ]
    out = drive(buf, packets)
    assert [r.extended_seq for _, r in out] == list(range(len(packets)))
    keyframe = [(when, r) for when, r in out if r.extended_timestamp == 9000]
    assert len(keyframe) == 100
    assert len({when for when, _ in keyframe}) == 1  # one pop
    assert len({r.playout for _, r in keyframe}) == 1
    assert buf.target_delay <= 0.06  # no spike from a 5 ms burst


def test_timestamp_jump_reanchors() -> None:
    buf = JitterBuffer(config())
    events = [(k * PTIME, audio(k)) for k in range(10)]
    # The sequence goes on but the timestamp leaps an hour ahead.
    events += [(k * PTIME, pkt(k, 3600 * 8000 + k * STEP)) for k in range(10, 20)]
    out = drive(buf, events)
    assert [r.extended_seq for _, r in out] == list(range(20))
    assert out[10][1].discontinuity
    assert sum(r.discontinuity for _, r in out) == 1
    assert all(when - r.arrival < 0.1 for when, r in out)  # nobody waits an hour


def test_adaptive_delay_grows_fast_and_shrinks_slowly() -> None:
    cfg = config()
    buf = JitterBuffer(cfg)
    rng = random.Random(7)
    events = []
    for k in range(50 * 50):
        send = k * PTIME
        jitter = rng.uniform(0.0, 0.06) if 10.0 <= send < 20.0 else 0.0
        events.append((send + jitter, audio(k)))
    trace: dict[int, tuple[float, float, int]] = {}
    out: list[tuple[float, Released]] = []
    for second in range(1, 51):
        out += drive(buf, [e for e in events if second - 1 <= e[0] < second], until=second)
        trace[second] = (buf.target_delay, buf.current_delay, buf.stats.late)
    # Calm start: from initial_delay down toward min_delay, slowly.
    assert trace[1][0] > 0.05
    assert trace[5][0] == pytest.approx(cfg.initial_delay - 5 * cfg.shrink_rate, abs=0.002)
    assert trace[10][0] == pytest.approx(cfg.min_delay)
    # Jitter of 60 ms from t=10: within a second the delay covers it...
    assert 0.06 <= trace[11][1] <= 0.09
    assert trace[10][2] == 0
    assert trace[11][2] <= 5  # the first jittered packets may come too late
    # ...and while it lasts (500 packets), hardly anything else is.
    assert trace[20][2] - trace[11][2] <= 5
    assert 0.06 <= trace[19][0] <= 0.09
    assert buf.stats.late == trace[20][2]
    # After it stops (t=20) the delay shrinks slowly, never below min_delay.
    assert trace[22][0] > 0.05
    for second in range(21, 50):
        before, after = trace[second][0], trace[second + 1][0]
        assert before - after <= 2 * cfg.shrink_rate + 1e-9
        assert after >= cfg.min_delay
    assert trace[50][0] == pytest.approx(cfg.min_delay)
    assert [r.extended_seq for _, r in out] == sorted({r.extended_seq for _, r in out})
    playouts = [r.playout for _, r in out]
    assert playouts == sorted(playouts)


def test_overflow_drops_oldest_and_reports_it() -> None:
    buf = JitterBuffer(config(max_packets=10))
    for k in range(16):
        if k != 7:
            buf.push(audio(k), k * 0.001)
        assert len(buf) <= 10
    assert buf.stats.overflow_dropped == 5
    released = buf.pop(10.0)
    assert [r.extended_seq for r in released] == [5, 6, *range(8, 16)]
    assert [r.lost_before for r in released[:3]] == [5, 0, 1]
    assert buf.stats.lost == 6
    buf.push(audio(7), 10.1)  # never came: late
    buf.push(audio(2), 10.1)  # came and was dropped: a duplicate now
    assert buf.stats.late == 1
    assert buf.stats.duplicates == 1
    assert buf.pop(20.0) == []


def test_flush_releases_everything_in_order() -> None:
    buf = JitterBuffer(config())
    for k in (3, 0, 1, 5):
        buf.push(audio(k), 0.0)
    out = buf.flush()
    assert [r.extended_seq for r in out] == [0, 1, 3, 5]
    assert [r.lost_before for r in out] == [0, 0, 1, 1]
    assert len(buf) == 0
    assert buf.get_timer() is None
    buf.push(audio(6), 0.1)  # the stream goes on
    (nxt,) = buf.pop(1.0)
    assert nxt.extended_seq == 6
    assert not nxt.discontinuity


def test_interarrival_jitter_rfc3550_a8() -> None:
    buf = JitterBuffer(config())
    buf.push(audio(0), 0.0)
    buf.push(audio(1), 0.02)  # on time: D = 0
    assert buf.stats.jitter_seconds == 0.0
    buf.push(audio(2), 0.05)  # 10 ms late: D = 80 units, J = 80 / 16
    assert buf.report_block_values()[3] == 5
    assert buf.stats.jitter_seconds == pytest.approx(5 / 8000)


def test_report_block_values_rfc3550_a3() -> None:
    buf = JitterBuffer(config())
    assert buf.report_block_values() == (0, 0, 0, 0)
    # First interval: 1000..1099 expected, 10 missing.
    for k in range(100):
        if k % 10 != 3:
            buf.push(audio(k, seq0=1000), k * PTIME)
    fraction, cumulative, highest, _ = buf.report_block_values()
    assert (fraction, cumulative, highest) == (25, 10, 1099)  # 10 * 256 // 100
    # Second interval: 50 expected, all received: fraction 0, cumulative kept.
    for k in range(100, 150):
        buf.push(audio(k, seq0=1000), k * PTIME)
    assert buf.report_block_values()[:3] == (0, 10, 1149)
    # Third: 1150..1169 expected (20), 5 received.
    for k in range(150, 170):
        if k % 4 == 1:
            buf.push(audio(k, seq0=1000), k * PTIME)
    assert buf.report_block_values()[:3] == (192, 25, 1169)  # 15 * 256 // 20
    # Duplicates count as received (A.1): cumulative loss may go down, fraction stays 0.
    for _ in range(30):
        buf.push(audio(169, seq0=1000), 4.0)
    assert buf.report_block_values()[:3] == (0, -5, 1169)
    assert buf.stats.expected == 170


def test_report_block_fraction_all_lost_fits_eight_bits() -> None:
    buf = JitterBuffer(config())
    buf.push(audio(0), 0.0)
    buf.report_block_values()
    buf.push(audio(50), 1.0)
    assert buf.report_block_values()[:2] == (250, 49)  # 49 * 256 // 50
    buf.push(audio(51), 1.02)
    assert buf.report_block_values()[0] == 0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"^clock_rate must be positive, got 0$"):
        JitterConfig(clock_rate=0)
    with pytest.raises(ValueError, match=r"^initial_delay 0.9 is outside \[0.02, 0.5\]$"):
        JitterConfig(clock_rate=8000, initial_delay=0.9)
    with pytest.raises(ValueError, match=r"^max_packets must be at least 1, got 0$"):
        JitterConfig(clock_rate=8000, max_packets=0)


@given(
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    jitters=st.lists(st.floats(0.0, 0.12), min_size=1, max_size=150),
    lost=st.sets(st.integers(0, 149), max_size=30),
    dups=st.sets(st.integers(0, 149), max_size=20),
    max_packets=st.sampled_from([3, 8, 2000]),
    extra_pops=st.lists(st.floats(0.0, 3.5), max_size=10),
)
def test_property_order_accounting_and_bounds(
    seq0: int,
    ts0: int,
    jitters: list[float],
    lost: set[int],
    dups: set[int],
    max_packets: int,
    extra_pops: list[float],
) -> None:
    buf = JitterBuffer(JitterConfig(clock_rate=8000, max_packets=max_packets))
    events: list[tuple[float, int]] = []
    for k, jitter in enumerate(jitters):
        if k in lost:
            continue
        events.append((k * PTIME + jitter, k))
        if k in dups:
            events.append((k * PTIME + jitter + 0.013, k))
    events += [(t, -1) for t in extra_pops]
    events.sort()
    out: list[Released] = []
    for now, k in events:
        timer = buf.get_timer()
        while timer is not None and timer <= now:
            out += buf.pop(timer)
            timer = buf.get_timer()
        if k < 0:
            out += buf.pop(now)
        else:
            buf.push(audio(k, seq0, ts0), now)
        assert len(buf) <= max_packets
    out += buf.flush()
    stats = buf.stats
    distinct = {k for _, k in events if k >= 0}
    # Strictly increasing, consistent with lost_before; playout never goes back.
    for a, b in itertools.pairwise(out):
        assert b.extended_seq == a.extended_seq + 1 + b.lost_before
        assert b.playout >= a.playout
        assert b.extended_timestamp - a.extended_timestamp == (
            (b.extended_seq - a.extended_seq) * STEP
        )
    for r in out:
        assert (r.extended_seq - r.packet.sequence_number) % 0x10000 == 0
        assert r.extended_timestamp & 0xFFFFFFFF == r.packet.timestamp
        assert not r.discontinuity
    released = {int.from_bytes(r.packet.payload, "big", signed=True) for r in out}
    assert len(released) == len(out)
    # Every distinct packet is released, late, or dropped by overflow; nothing else.
    assert len(distinct) == len(out) + stats.late + stats.overflow_dropped
    assert stats.received == sum(1 for _, k in events if k >= 0)
    assert stats.duplicates == stats.received - len(distinct)
    assert stats.lost == sum(r.lost_before for r in out)
    assert stats.discarded == stats.resets == 0
    if max_packets == 2000:
        assert stats.overflow_dropped == 0


@given(
    segments=st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(1, 30)),
        min_size=1,
        max_size=6,
    )
)
def test_property_new_sources_flush_in_order_and_mark_discontinuity(
    segments: list[tuple[int, int, int]],
) -> None:
    buf = JitterBuffer(config())
    events: list[tuple[float, RtpPacket]] = []
    for ssrc, (seq0, ts0, count) in enumerate(segments, start=1):
        for k in range(count):
            events.append((len(events) * PTIME, audio(k, seq0, ts0, ssrc)))
    out = [r for _, r in drive(buf, events)]
    assert len(out) == len(events)
    assert [r.packet for r in out] == [p for _, p in events]
    assert [r.discontinuity for r in out] == [
        i > 0 and p.ssrc != events[i - 1][1].ssrc for i, (_, p) in enumerate(events)
    ]
    assert all(b.playout >= a.playout for a, b in itertools.pairwise(out))
    assert buf.stats.resets == len(segments) - 1
    assert buf.stats.lost == buf.stats.late == 0
