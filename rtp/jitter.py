"""Jitter buffer: reorder, dedupe, loss detection and adaptive playout delay.

Theory of operation
-------------------

One :class:`JitterBuffer` serves one RTP stream (one track of a call). It is
sans-IO: the caller feeds packets with :meth:`JitterBuffer.push` together with
the local time they arrived, arms one timer at :meth:`JitterBuffer.get_timer`
and collects the packets whose playout time has come with
:meth:`JitterBuffer.pop`.

Sequence numbers are extended to 64 bits as in RFC 3550 A.1, except that the
first packet is accepted at once (no probation: latching happens upstream).
A forward jump of ``max_dropout`` or more, or a packet far behind the stream,
is set aside; if the very next packet continues it, the sender restarted
(A.1 ``bad_seq``) and the buffer resets, else it was a stray and is discarded.
Timestamps are extended the same way around the highest packet (wrap at 2**32).

Pending packets sit in a dict keyed by extended sequence number, with a heap of
those keys; release is in key order, so a packet costs O(log n).

Playout: every packet gives a delay sample ``d = arrival - ts / clock_rate``
(the unknown clock offset cancels out of all differences). The anchor is the
minimum ``d`` over the last ``window`` seconds (the fastest recent path) and a
packet plays out at ``anchor + ts / clock_rate + target_delay``. The target
covers the spread of the samples: the ``quantile`` of ``d - anchor`` plus
``margin``, clamped to ``[min_delay, max_delay]``. As in WebRTC's NetEq, the
spread is measured per frame (the latest packet of each timestamp), so a
100-packet keyframe burst is one sample, not a hundred. The target grows at
once (and at once to cover a packet that came too late) but shrinks by at most
``shrink_rate`` seconds per second. The anchor moves later freely (clock drift,
a slower route) with the target lowered by the same amount so playout stays
continuous; it moves earlier (a faster route) by at most ``shrink_rate`` per
second once something has been released, so scheduled playout times do not
jump back. Released playout times are never decreasing, whatever happens.
A packet never waits more than ``max_delay`` after it arrived, and a jump of
``d`` by more than a second (a timestamp jump, a long stall) re-anchors.

A missing packet is waited for until the playout time of the packet after it,
then declared lost (``lost_before`` of that packet). Packets of a frame share
a timestamp, hence a playout time, and leave in the same :meth:`pop`.

Resets: on a new SSRC, a sequence restart or a timestamp jump, the packets
still pending are *flushed*, not dropped: they are released by the next
:meth:`pop` (their playout time capped at the time of the reset), and the
first packet of the new stream carries ``discontinuity=True``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from heapq import heappop, heappush

from rtp.packet import RtpPacket

__all__ = ["JitterBuffer", "JitterConfig", "JitterStats", "Released"]

# A path cannot suddenly gain or lose more than this much delay: a larger move of
# ``arrival - ts / clock_rate`` is a timestamp jump or a stall, and re-anchors.
_JUMP = 1.0
_SEQ_HALF = 0x8000
_TS_HALF = 0x80000000


@dataclass(frozen=True, slots=True)
class JitterConfig:
    """Settings of one :class:`JitterBuffer`; delays in seconds.

    ``max_dropout`` and ``max_misorder`` are RFC 3550 A.1's MAX_DROPOUT and
    MAX_MISORDER. ``quantile``, ``margin``, ``window`` and ``shrink_rate``
    tune the adaptive target (see the module docstring).
    """

    clock_rate: int
    min_delay: float = 0.02
    max_delay: float = 0.5
    initial_delay: float = 0.06
    max_packets: int = 2000
    max_dropout: int = 3000
    max_misorder: int = 100
    quantile: float = 0.97
    margin: float = 0.01
    window: float = 2.0
    shrink_rate: float = 0.005

    def __post_init__(self) -> None:
        if self.clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {self.clock_rate}")
        if not 0.0 <= self.min_delay <= self.max_delay:
            raise ValueError(
                f"need 0 <= min_delay <= max_delay, got {self.min_delay} and {self.max_delay}"
            )
        if not self.min_delay <= self.initial_delay <= self.max_delay:
            raise ValueError(
                f"initial_delay {self.initial_delay} is outside "
                f"[{self.min_delay}, {self.max_delay}]"
            )
        if self.max_packets < 1:
            raise ValueError(f"max_packets must be at least 1, got {self.max_packets}")
        if not 1 <= self.max_dropout <= _SEQ_HALF:
            raise ValueError(f"max_dropout must be in [1, 32768], got {self.max_dropout}")
        if not 0 <= self.max_misorder < _SEQ_HALF:
            raise ValueError(f"max_misorder must be in [0, 32767], got {self.max_misorder}")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")
        if self.margin < 0.0 or self.shrink_rate < 0.0 or self.window <= 0.0:
            raise ValueError("margin and shrink_rate must be >= 0 and window > 0")


@dataclass(frozen=True, slots=True)
class Released:
    """One packet leaving the buffer, in sequence order.

    ``extended_seq`` is the RFC 3550 A.1 extended sequence number and
    ``extended_timestamp`` the unwrapped RTP timestamp (both restart with a new
    stream). ``lost_before`` counts the sequence numbers skipped just before this
    packet; ``discontinuity`` is set on the first packet after a new SSRC, a
    sequence restart or a timestamp jump: consumers reset their state.
    ``playout`` is the local time this packet was scheduled for (never
    decreasing from one release to the next).
    """

    packet: RtpPacket
    extended_seq: int
    extended_timestamp: int
    arrival: float
    lost_before: int = 0
    discontinuity: bool = False
    playout: float = 0.0


@dataclass(slots=True)
class JitterStats:
    """Counters of one buffer.

    ``received`` counts every packet pushed for the stream, duplicates and late
    ones included (as RFC 3550 A.1 counts them); ``lost`` counts the sequence
    numbers skipped in the released sequence (never arrived, arrived late, or
    dropped by overflow); ``discarded`` counts strays set aside by the A.1 jump
    rule and never confirmed; ``resets`` counts stream restarts. These are
    totals over the buffer's life. ``jitter_seconds`` (RFC 3550 A.8),
    ``highest_extended_seq`` and ``expected`` (A.3) describe the current stream.
    """

    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    reordered: int = 0
    overflow_dropped: int = 0
    discarded: int = 0
    resets: int = 0
    jitter_seconds: float = 0.0
    highest_extended_seq: int = 0
    expected: int = 0


class _DelayQuantile:
    """A quantile of delay samples over a sliding time window, O(1) amortized.

    Samples are integer keys (milliseconds) counted in a dict, with the distinct
    keys also in a sorted list; the quantile is a pointer ``pos`` with ``below``
    = number of samples under it, walked up or down the present keys after every
    change. (Walking every millisecond instead made this the top line of
    bench/ingest.py's profile under overload, when samples spread over a second.)
    """

    __slots__ = ("_below", "_counts", "_keys", "_n", "_pos", "_q", "_samples", "_window")

    def __init__(self, quantile: float, window: float) -> None:
        self._q = quantile
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self._counts: dict[int, int] = {}
        self._keys: list[int] = []  # the keys of _counts, sorted
        self._n = 0
        self._pos = 0
        self._below = 0

    def clear(self) -> None:
        self._samples.clear()
        self._counts.clear()
        self._keys.clear()
        self._n = 0

    def add(self, now: float, key: int) -> None:
        self._samples.append((now, key))
        counts = self._counts
        keys = self._keys
        count = counts.get(key)
        if count is None:
            counts[key] = 1
            insort(keys, key)
        else:
            counts[key] = count + 1
        self._n += 1
        if self._n == 1:
            self._pos = key
            self._below = 0
        elif key < self._pos:
            self._below += 1
        horizon = now - self._window
        samples = self._samples
        while samples[0][0] < horizon:
            _, old = samples.popleft()
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
                del keys[bisect_left(keys, old)]
            self._n -= 1
            if old < self._pos:
                self._below -= 1
        # The quantile is the need-th smallest sample: walk from the old position
        # over the keys present (the same stop as stepping 1 ms at a time).
        need = math.ceil(self._q * self._n)
        if need < 1:
            need = 1
        below = self._below
        index = bisect_left(keys, self._pos)
        if below >= need:
            while below >= need:
                index -= 1
                below -= counts[keys[index]]
        else:
            while below + counts[keys[index]] < need:
                below += counts[keys[index]]
                index += 1
        self._pos = keys[index]
        self._below = below

    def value(self) -> int | None:
        """The quantile's key, or None without samples."""
        return self._pos if self._n else None


class JitterBuffer:
    """Reorder, dedupe and schedule one RTP stream (RFC 3550 A.1, A.3, A.8).

    See the module docstring for the playout model and the reset policy.
    """

    def __init__(self, config: JitterConfig) -> None:
        self.config = config
        self.stats = JitterStats()
        self._clock = float(config.clock_rate)
        ring_size = 1024
        while ring_size <= config.max_misorder:
            ring_size <<= 1
        self._ring_mask = ring_size - 1
        self._pending: dict[int, tuple[int, float, RtpPacket]] = {}
        self._heap: list[int] = []
        self._ready: list[Released] = []
        self._ready_time: float | None = None
        # get_timer() is asked after every datagram and every wakeup (2.3 times per
        # packet in bench/ingest.py's profile); the deadline only moves in push(),
        # pop() and flush(), so it is computed once after each of them.
        self._deadline: float | None = None
        self._deadline_stale = False
        self.changes = 0
        """Counts push(), pop() and flush() calls: a caller caching get_timer() compares it."""
        self._target = config.initial_delay
        self._target_time: float | None = None
        self._last_playout = -math.inf
        self._discontinuity = False
        self._ssrc: int | None = None
        self._prev_ssrc: int | None = None
        self._switch_time = -math.inf
        self._candidate: tuple[RtpPacket, float] | None = None
        self._delays = _DelayQuantile(config.quantile, config.window)
        self._mins: deque[tuple[float, float]] = deque()
        # Per stream (RFC 3550 A.1), reset by _reset_source().
        self._ring = bytearray(ring_size)  # received flags of the last extended seqs
        self._max_ext: int | None = None
        self._base_ext = 0
        self._ts_ref = 0
        self._released_upto: int | None = None
        self._floor: int | None = None  # packets at or below this one come too late
        self._src_received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        # Per timing epoch, reset by _reset_timing().
        self._anchor: float | None = None
        self._anchor_time = -math.inf
        self._released_any = False
        self._transit: float | None = None
        self._run_ts: int | None = None
        self._run_max = 0.0
        self._goal: float | None = None
        self._goal_key: int | None = None  # the quantile key and anchor _goal was made of
        self._goal_anchor = 0.0

    def __len__(self) -> int:
        """Packets pending (not counting flushed ones waiting for the next pop)."""
        return len(self._pending)

    @property
    def target_delay(self) -> float:
        """The playout delay above the anchor, in seconds."""
        return self._target

    @property
    def current_delay(self) -> float:
        """The delay a packet on the fastest recent path spends in the buffer.

        Equal to :attr:`target_delay` in steady state, above it while the anchor
        is still moving earlier toward a faster path.
        """
        if self._anchor is None or not self._mins:
            return self._target
        return self._anchor + self._target - self._mins[0][1]

    # -- input ---------------------------------------------------------------

    def push(self, packet: RtpPacket, now: float) -> None:
        """Take one packet that arrived at ``now``.

        Duplicates are dropped and counted; a packet at or behind one already
        released (or declared lost) is dropped and counted late. A new SSRC
        resets the buffer (pending packets are flushed to the next pop), and so
        does a confirmed sequence restart (RFC 3550 A.1). Packets of the previous
        SSRC within ``max_delay`` of a switch are its reordered tail: counted late.
        """
        self._deadline_stale = True
        self.changes += 1
        ssrc = packet.ssrc
        if ssrc != self._ssrc:
            if self._ssrc is None:
                self._ssrc = ssrc
            elif ssrc == self._prev_ssrc and now - self._switch_time < self.config.max_delay:
                # The old stream's tail, reordered past the switch: too late for it.
                self.stats.received += 1
                self.stats.late += 1
                return
            else:
                self._restart(now)
                self._prev_ssrc, self._ssrc, self._switch_time = self._ssrc, ssrc, now
        max_ext = self._max_ext
        if max_ext is None:
            seq = packet.sequence_number
            self._max_ext = self._base_ext = seq
            self._ts_ref = packet.timestamp
            self.stats.highest_extended_seq = seq
            self.stats.expected = 1
            self._accept(packet, now, seq, True)
            return
        delta = ((packet.sequence_number - max_ext + _SEQ_HALF) & 0xFFFF) - _SEQ_HALF
        ext = max_ext + delta
        if delta == 1:
            # The next packet in sequence, nearly every packet: _advance_seq() inlined.
            self._ring[ext & self._ring_mask] = 0
            self._max_ext = ext
            stats = self.stats
            stats.highest_extended_seq = ext
            stats.expected = ext - self._base_ext + 1
            self._accept(packet, now, ext, True)
            return
        if delta > 0:
            if delta >= self.config.max_dropout:
                self._stray(packet, now)
                return
            self._advance_seq(max_ext, ext)
            self._accept(packet, now, ext, True)
            return
        if ext in self._pending:
            self._count_received(ext)
            self.stats.duplicates += 1
            return
        floor = self._floor
        far = -delta > self.config.max_misorder
        # A.1 would take a packet far behind for a restart; one whose timestamp
        # fits the stream's timing is just very late (a high-rate video burst).
        if floor is not None and ext <= floor:
            if not far:
                self._late(packet, now, ext, True)
            elif self._fits_timing(packet, now):
                self._late(packet, now, ext, -delta <= self._ring_mask)
            else:
                self._stray(packet, now)
            return
        if floor is None and far and not self._fits_timing(packet, now):
            self._stray(packet, now)
            return
        self.stats.reordered += 1
        if ext < self._base_ext:
            self._base_ext = ext
            self.stats.expected = max_ext - ext + 1
        self._accept(packet, now, ext, False)

    def _count_received(self, ext: int) -> None:
        self._src_received += 1
        self.stats.received += 1
        if ext < self._base_ext:
            self._base_ext = ext
            self.stats.expected = self.stats.highest_extended_seq - ext + 1

    def _advance_seq(self, old: int, new: int) -> None:
        ring = self._ring
        mask = self._ring_mask
        gap = new - old
        if gap == 1:
            ring[new & mask] = 0
        elif gap >= len(ring):
            ring[:] = bytes(len(ring))
        else:
            start = (old + 1) & mask
            end = start + gap
            if end <= len(ring):
                ring[start:end] = bytes(gap)
            else:
                ring[start:] = bytes(len(ring) - start)
                ring[: end - len(ring)] = bytes(end - len(ring))
        self._max_ext = new
        self.stats.highest_extended_seq = new
        self.stats.expected = new - self._base_ext + 1

    def _unwrap_ts(self, timestamp: int) -> int:
        ref = self._ts_ref
        return ref + (((timestamp - ref + _TS_HALF) & 0xFFFFFFFF) - _TS_HALF)

    def _accept(self, packet: RtpPacket, now: float, ext: int, advancing: bool) -> None:
        ref = self._ts_ref  # _unwrap_ts() inlined (every packet)
        ext_ts = ref + (((packet.timestamp - ref + _TS_HALF) & 0xFFFFFFFF) - _TS_HALF)
        clock = self._clock
        d = now - ext_ts / clock
        if advancing:
            anchor = self._anchor
            if anchor is not None and (
                d - anchor > self.config.max_delay + _JUMP or anchor - d > _JUMP
            ):
                self._restart_timing(now)
            self._ts_ref = ext_ts
        self._ring[ext & self._ring_mask] = 1
        self._src_received += 1
        stats = self.stats
        stats.received += 1
        # RFC 3550 A.8: interarrival jitter, in timestamp units, in arrival order.
        transit = now * clock - ext_ts
        if self._transit is not None:
            self._jitter += (abs(transit - self._transit) - self._jitter) / 16.0
            stats.jitter_seconds = self._jitter / clock
        self._transit = transit
        self._observe(d, ext_ts, now)
        self._pending[ext] = (ext_ts, now, packet)
        heappush(self._heap, ext)
        if len(self._pending) > self.config.max_packets:
            self._overflow()

    def _observe(self, d: float, ext_ts: int, now: float) -> None:
        """Feed one delay sample to the anchor and the target."""
        # Runs for every packet (the top jitter line of bench/ingest.py's profile):
        # comparisons instead of min()/max() calls, same values.
        cfg = self.config
        anchor = self._anchor
        if anchor is not None:
            # Bounded, so one wild packet cannot stretch the quantile's walk.
            bound = anchor - _JUMP
            if d < bound:
                d = bound
            bound = anchor + cfg.max_delay + _JUMP
            if d > bound:
                d = bound
        mins = self._mins
        while mins and mins[-1][1] >= d:
            mins.pop()
        mins.append((now, d))
        horizon = now - cfg.window
        while mins[0][0] < horizon:
            mins.popleft()
        # One quantile sample per frame: its latest packet, committed when the
        # next frame starts, so a keyframe burst weighs as one frame.
        if ext_ts == self._run_ts:
            if d > self._run_max:
                self._run_max = d
        else:
            if self._run_ts is not None:
                self._delays.add(now, math.floor(self._run_max * 1000.0))
            self._run_ts = ext_ts
            self._run_max = d
        low = mins[0][1]
        if anchor is None:
            anchor = low
        elif low > anchor:
            # Later freely; the target gives the move back so playout stays put
            # when it already covered the slower path.
            self._target = max(self._target - (low - anchor), cfg.min_delay)
            anchor = low
        elif low < anchor:
            if not self._released_any:
                anchor = low
            elif now > self._anchor_time:
                anchor = max(low, anchor - cfg.shrink_rate * (now - self._anchor_time))
        self._anchor = anchor
        if now > self._anchor_time:
            self._anchor_time = now
        # The goal is a function of the quantile (delays.value(), inlined) and the
        # anchor, which stay put for most packets of a frame: recomputed only when
        # one of them moved.
        delays = self._delays
        key = delays._pos
        if delays._n and (key != self._goal_key or anchor != self._goal_anchor):
            self._goal_key = key
            self._goal_anchor = anchor
            spread = (key + 1) / 1000.0 - anchor
            self._goal = min(max(spread + cfg.margin, cfg.min_delay), cfg.max_delay)
        self._update_target(now)

    def _update_target(self, now: float) -> None:
        last = self._target_time
        if last is None or now > last:
            self._target_time = now
        goal = self._goal
        if goal is None:
            return
        target = self._target
        if goal >= target:
            self._target = goal
        elif last is not None and now > last:
            shrunk = target - self.config.shrink_rate * (now - last)
            self._target = goal if goal >= shrunk else shrunk

    def _fits_timing(self, packet: RtpPacket, now: float) -> bool:
        anchor = self._anchor
        if anchor is None:
            return False
        d = now - self._unwrap_ts(packet.timestamp) / self._clock
        return anchor - _JUMP <= d <= anchor + self.config.max_delay + _JUMP

    def _late(self, packet: RtpPacket, now: float, ext: int, tracked: bool) -> None:
        """A packet behind the released ones; ``tracked``: the ring still knows its slot."""
        self._count_received(ext)
        if tracked:
            slot = ext & self._ring_mask
            if self._ring[slot]:
                self.stats.duplicates += 1
                return
            self._ring[slot] = 1
        self.stats.late += 1
        anchor = self._anchor
        if anchor is not None:
            # Grow at once to what would have saved it.
            d = now - self._unwrap_ts(packet.timestamp) / self._clock
            wanted = min(d - anchor + self.config.margin, self.config.max_delay)
            if wanted > self._target:
                self._target = wanted

    def _stray(self, packet: RtpPacket, now: float) -> None:
        """RFC 3550 A.1 ``bad_seq``: restart only if the next packet follows this one."""
        candidate = self._candidate
        if candidate is not None and packet.sequence_number == (
            (candidate[0].sequence_number + 1) & 0xFFFF
        ):
            self._candidate = None
            self._restart(now)
            self.push(candidate[0], candidate[1])
            self.push(packet, now)
            return
        if candidate is not None:
            self.stats.discarded += 1
        self._candidate = (packet, now)

    def _overflow(self) -> None:
        ext = heappop(self._heap)
        del self._pending[ext]
        if self._released_upto is None:
            self._released_upto = ext - 1  # so the next release reports it lost
        if self._floor is None or ext > self._floor:
            self._floor = ext
        self.stats.overflow_dropped += 1

    # -- resets --------------------------------------------------------------

    def _restart(self, now: float) -> None:
        """A new stream: flush what is pending, forget the sequence state."""
        self._drain_to_ready(now)
        if self._candidate is not None:
            self._candidate = None
            self.stats.discarded += 1
        self._ring = bytearray(len(self._ring))
        self._max_ext = None
        self._base_ext = 0
        self._ts_ref = 0
        self._released_upto = None
        self._floor = None
        self._src_received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        stats = self.stats
        stats.jitter_seconds = 0.0
        stats.highest_extended_seq = 0
        stats.expected = 0
        self._reset_timing()

    def _restart_timing(self, now: float) -> None:
        """A timestamp jump in a continuing sequence: flush and re-anchor."""
        self._drain_to_ready(now)
        self._reset_timing()

    def _reset_timing(self) -> None:
        self._anchor = None
        self._released_any = False
        self._transit = None
        self._mins.clear()
        self._delays.clear()
        self._run_ts = None
        self._goal = None
        self._goal_key = None
        self._discontinuity = True
        self.stats.resets += 1

    def _drain_to_ready(self, now: float) -> None:
        heap = self._heap
        pending = self._pending
        while heap:
            ext = heappop(heap)
            ext_ts, arrival, packet = pending.pop(ext)
            due = min(self._due(ext_ts, arrival), now)
            self._ready.append(self._release(packet, ext, ext_ts, arrival, due))
        if self._ready and self._ready_time is None:
            self._ready_time = now

    # -- output --------------------------------------------------------------

    def _due(self, ext_ts: int, arrival: float) -> float:
        assert self._anchor is not None  # set by the first packet pending
        offset = self._anchor + self._target
        due = offset + ext_ts / self._clock
        cap = arrival + self.config.max_delay
        return cap if cap < due else due

    def _release(
        self, packet: RtpPacket, ext: int, ext_ts: int, arrival: float, due: float
    ) -> Released:
        upto = self._released_upto
        lost = ext - upto - 1 if upto is not None else 0
        if lost:
            self.stats.lost += lost
        self._released_upto = ext
        if self._floor is None or ext > self._floor:
            self._floor = ext
        if due < self._last_playout:
            due = self._last_playout
        self._last_playout = due
        discontinuity = self._discontinuity
        self._discontinuity = False
        self._released_any = True
        return Released(packet, ext, ext_ts, arrival, lost, discontinuity, due)

    def get_timer(self) -> float | None:
        """When :meth:`pop` next has something to release, or None when empty."""
        if not self._deadline_stale:
            return self._deadline
        self._deadline_stale = False
        if self._ready:
            deadline = self._ready_time
        elif not self._heap:
            deadline = None
        else:
            ext_ts, arrival, _ = self._pending[self._heap[0]]
            deadline = self._due(ext_ts, arrival)
        self._deadline = deadline
        return deadline

    def pop(self, now: float) -> list[Released]:
        """Every packet whose playout time has come, in sequence order.

        A gap is waited for until the playout time of the packet after it, which
        then carries the count of the missing ones in ``lost_before``.
        """
        self._deadline_stale = True
        self.changes += 1
        out = self._ready
        if out:
            self._ready = []
            self._ready_time = None
        else:
            out = []
        self._update_target(now)
        heap = self._heap
        if not heap:
            return out
        assert self._anchor is not None
        pending = self._pending
        offset = self._anchor + self._target
        clock = self._clock
        max_delay = self.config.max_delay
        while heap:
            ext = heap[0]
            ext_ts, arrival, packet = pending[ext]
            due = offset + ext_ts / clock
            cap = arrival + max_delay
            if cap < due:
                due = cap
            if due > now:
                break
            heappop(heap)
            del pending[ext]
            out.append(self._release(packet, ext, ext_ts, arrival, due))
        return out

    def flush(self) -> list[Released]:
        """Release everything pending now, in order (call end).

        The stream state is kept: later packets continue the sequence, and any
        older than the last flushed one count as late. A stray held by the
        A.1 jump rule is discarded.
        """
        self._deadline_stale = True
        self.changes += 1
        out = self._ready
        self._ready = []
        self._ready_time = None
        heap = self._heap
        pending = self._pending
        while heap:
            ext = heappop(heap)
            ext_ts, arrival, packet = pending.pop(ext)
            out.append(self._release(packet, ext, ext_ts, arrival, self._due(ext_ts, arrival)))
        if self._candidate is not None:
            self._candidate = None
            self.stats.discarded += 1
        return out

    # -- RTCP ----------------------------------------------------------------

    def report_block_values(self) -> tuple[int, int, int, int]:
        """``(fraction_lost, cumulative_lost, extended_highest_seq, jitter)`` for an RR.

        RFC 3550 A.3: the fraction is over the interval since the previous call
        (which this call starts anew), the cumulative loss is clamped to the
        24-bit signed field, the jitter is in timestamp units (A.8).
        """
        if self._max_ext is None:
            return 0, 0, 0, 0
        expected = self._max_ext - self._base_ext + 1
        received = self._src_received
        cumulative = max(-0x800000, min(0x7FFFFF, expected - received))
        expected_interval = expected - self._expected_prior
        received_interval = received - self._received_prior
        self._expected_prior = expected
        self._received_prior = received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        return fraction, cumulative, self._max_ext & 0xFFFFFFFF, int(self._jitter)
