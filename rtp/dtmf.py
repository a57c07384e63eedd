"""DTMF as RTP telephone-events (RFC 4733), sans-IO.

Theory of operation. One key press is one *event*. Its sender (§2.5.1)
stamps every packet of the event with the RTP timestamp of the event's start
and reports the duration so far: a first packet with the marker bit, updates
every packet interval with a growing duration, then the final duration with
the E bit, sent three times. A receiver therefore sees the same event many
times over; the RTP timestamp, not the packet, identifies it (§2.5.2.2).
Events too long for the 16-bit duration continue in a new *segment* whose
timestamp is the previous one plus the maximum duration (§2.5.1.3, §2.5.2.3).

:class:`TelephoneEvent` is the 4-byte payload (§2.3), :class:`DtmfReceiver`
turns the packet stream into one digit per key press, :class:`DtmfSender`
computes the packets of one key press. Neither touches a socket or a clock:
the caller sends what the sender returns, one packet per interval.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

__all__ = ["DIGITS", "MAX_DURATION", "DtmfReceiver", "DtmfSender", "TelephoneEvent"]

#: Event codes 0-15 are the DTMF digits in this order (RFC 4733 §3.2).
DIGITS = "0123456789*#ABCD"

#: The duration field is 16 bits; longer events are segmented (§2.5.1.3).
MAX_DURATION = 0xFFFF

_PAYLOAD = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 §2.3)::

        event(8) | E(1) | R(1) | volume(6) | duration(16)

    ``event`` is any code 0-255 (digits are 0-15, other codes come from
    RFC 4734/5244); ``volume`` is the power level in -dBm0 (0-63);
    ``duration`` is in RTP timestamp units since the event's timestamp.
    The reserved R bit is written as 0 and ignored when read (§2.3).
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    DIGITS = DIGITS

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse a 4-byte payload; ValueError names what is wrong."""
        if len(payload) != _PAYLOAD.size:
            raise ValueError(f"telephone-event payload is {len(payload)} bytes, not 4")
        event, flags, duration = _PAYLOAD.unpack(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    @classmethod
    def from_digit(
        cls, digit: str, *, end: bool = False, volume: int = 10, duration: int = 0
    ) -> TelephoneEvent:
        """The event for a DTMF digit (``0-9 * # A-D``, lower-case letters accepted)."""
        code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
        if code < 0:
            raise ValueError(f"{digit!r} is not a DTMF digit")
        return cls(event=code, end=end, volume=volume, duration=duration)

    @property
    def digit(self) -> str | None:
        """The DTMF digit of this event, or ``None`` for a non-DTMF event code."""
        return DIGITS[self.event] if 0 <= self.event < len(DIGITS) else None

    def __bytes__(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} does not fit in 8 bits")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume {self.volume} is not 0-63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"telephone-event duration {self.duration} does not fit in 16 bits")
        flags = (0x80 if self.end else 0) | self.volume
        return _PAYLOAD.pack(self.event, flags, self.duration)


class DtmfReceiver:
    """Turn received telephone-event packets into digits, one per key press.

    RFC 4733 §2.5.2.2: packets with the timestamp of the current event are
    updates or the repeated end packets and report nothing new; a packet with
    the timestamp of one of the last ``memory`` events is a late straggler of
    a finished event. A set of recent timestamps rather than an "older than"
    test keeps working when the peer's timestamps jump (a new SSRC after a
    re-INVITE or transfer starts at a random timestamp). A new timestamp with
    the same event code, while the current event has not ended, exactly
    ``MAX_DURATION`` after it, is the next segment of a long event
    (§2.5.1.3, §2.5.2.3), not a new key press.

    A digit is returned at the first packet seen of its event, even if that
    is an update or an end packet (the earlier ones were lost). Non-DTMF
    event codes are tracked the same way but never returned.
    """

    def __init__(self, memory: int = 16) -> None:
        self._recent: deque[int] = deque(maxlen=memory)
        self._timestamp: int | None = None
        self._event = -1
        self._ended = False

    def feed(self, packet_timestamp: int, event: TelephoneEvent) -> str | None:
        """Account one packet (its RTP timestamp and payload); return a new digit or None."""
        previous = self._timestamp
        if packet_timestamp == previous:
            if event.event == self._event:
                self._ended = self._ended or event.end
            return None
        if packet_timestamp in self._recent:
            return None
        continues = (
            previous is not None
            and not self._ended
            and event.event == self._event
            and (packet_timestamp - previous) & 0xFFFF_FFFF == MAX_DURATION
        )
        self._recent.append(packet_timestamp)
        self._timestamp = packet_timestamp
        self._event = event.event
        self._ended = event.end
        return None if continues else event.digit

    def reset(self) -> None:
        """Forget every event: the stream restarted (new SSRC) and old timestamps mean nothing."""
        self._recent.clear()
        self._timestamp = None
        self._event = -1
        self._ended = False


@dataclass(frozen=True, slots=True)
class DtmfSender:
    """Compute the telephone-event packets of one key press (RFC 4733 §2.5.1).

    ``clock_rate`` is the telephone-event clock (8000 for the usual
    ``telephone-event/8000``); ``volume`` goes into every packet.
    """

    clock_rate: int = 8000
    volume: int = 10

    def packets_for(
        self, digit: str, start_timestamp: int, duration_ms: int = 160, interval_ms: int = 20
    ) -> list[tuple[bool, int, TelephoneEvent]]:
        """(marker, RTP timestamp, payload) of every packet for ``digit``, in send order.

        Send one packet per ``interval_ms`` (the stream's ptime, §2.5.1.2).
        The first packet carries the marker bit and one interval of duration;
        each update adds an interval; the final duration is sent three times
        with the E bit (§2.5.1.4). An event longer than ``MAX_DURATION``
        units is split into segments (§2.5.1.3): each full segment ends with
        three packets of the maximum duration *without* the E bit, and the
        next starts ``MAX_DURATION`` later, without the marker bit.
        """
        if duration_ms <= 0 or interval_ms <= 0:
            raise ValueError("DTMF duration and interval must be positive")
        template = TelephoneEvent.from_digit(digit, volume=self.volume)
        total = duration_ms * self.clock_rate // 1000
        step = max(1, interval_ms * self.clock_rate // 1000)
        packets: list[tuple[bool, int, TelephoneEvent]] = []
        segment_start = 0
        while True:
            remaining = total - segment_start
            last_segment = remaining <= MAX_DURATION
            length = remaining if last_segment else MAX_DURATION
            timestamp = (start_timestamp + segment_start) & 0xFFFF_FFFF
            elapsed = min(step, length)
            while elapsed < length:
                marker = not packets
                update = TelephoneEvent(template.event, False, self.volume, elapsed)
                packets.append((marker, timestamp, update))
                elapsed += step
            final = TelephoneEvent(template.event, last_segment, self.volume, length)
            for _ in range(3):
                packets.append((not packets, timestamp, final))
            if last_segment:
                return packets
            segment_start += MAX_DURATION
