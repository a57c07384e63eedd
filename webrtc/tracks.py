"""Pre-encoded media into aiortc: passthrough tracks, their release timer, the keyframe hook.

aiortc's :class:`~aiortc.RTCRtpSender` runs one task per sender that awaits
``track.recv()``; when that returns an :class:`av.Packet` instead of a frame,
the sender skips its encoder and calls the codec's ``pack(packet)``
(``RTCRtpSender._next_encoded_frame``):

* H.264 (``aiortc.codecs.h264.H264Encoder.pack``): splits the payload on
  Annex-B start codes and packetizes the NAL units (single NAL, STAP-A, FU-A,
  RFC 6184 §5.6-5.8); so the payload must be exactly one Annex-B access unit,
  which is what :class:`~rtp.frame.MediaFrame` carries. The marker bit is set
  on the access unit's last packet (RFC 6184 §5.1);
* PCMU/PCMA and Opus (``PcmEncoder.pack``, ``OpusEncoder.pack``): the bytes as
  one RTP payload.

In every case the RTP timestamp is ``packet.pts`` converted from
``packet.time_base`` to the codec clock (90 kHz, 8 kHz, 48 kHz) plus the
sender's random origin. :func:`make_packet` sets ``time_base`` to exactly the
codec clock and ``pts`` from the frame's presentation time, so no rounding
happens inside aiortc and both tracks derive from one clock. ``pack()`` only
reads the packet (``bytes(packet)``, ``pts``, ``time_base``; aiortc 1.16), so
one packet per frame is shared by every viewer of a stream.

Releasing
---------
A :class:`PassthroughTrack` holds frames and their due times in due order
(:meth:`PassthroughTrack.push`, never blocking). ``recv()`` returns the head
as soon as it is due, without waiting when it already is; otherwise it waits
on a future that the :class:`ReleaseTimer` shared by the stream's tracks
resolves at the due time. One timer per stream (a wheel of millisecond slots)
replaces a sleep per frame and viewer, and tracks whose frames fall due in the
same millisecond (:data:`DUE_EPSILON`) share its wakeup.

Waking a sender makes it pack, encrypt and send its frame: the costly part of
the egress, paid N times per frame for N viewers. The timer therefore wakes at
most about :data:`SLICE_PACKETS` RTP packets' worth of senders per turn of the
event loop, and continues in the next turn: between slices the loop polls its
sockets, so the call's incoming RTP is read on time instead of waiting in the
socket behind the whole burst (which the adaptive jitter buffer would take for
network jitter).

PLI and FIR from the browser (RFC 4585 §6.3.1, RFC 5104 §4.3.1) make the sender
call its own ``_send_keyframe()``, which only flags its *encoder*; with
packets there is none. :func:`hook_keyframe_requests` replaces that method on
one sender instance so the request reaches the source instead.
"""

from __future__ import annotations

import asyncio
import fractions
import heapq
import math
from collections import deque
from collections.abc import Callable

import av
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.stream import Stream as AvStream

from rtp.frame import MediaFrame, MediaKind
from webrtc.schedule import rtp_timestamp

__all__ = [
    "DUE_EPSILON",
    "PACKET_PAYLOAD",
    "SLICE_PACKETS",
    "TRACK_QUEUE",
    "PassthroughTrack",
    "ReleaseGate",
    "ReleaseTimer",
    "SharedFrame",
    "hook_keyframe_requests",
    "make_packet",
]

#: Frames :meth:`PassthroughTrack.put` lets queue before it waits. Entries pushed by the
#: stream's fan-out are bounded by the viewer's queue instead (``viewer_queue_frames``).
TRACK_QUEUE = 16
#: A frame due within this many seconds counts as due: uvloop's timers have millisecond
#: resolution, and frames due in the same millisecond share one wakeup.
DUE_EPSILON = 0.001
#: RTP packets' worth of senders woken per turn of the event loop (about 2 ms of
#: packing, SRTP and ``sendto()`` at ~50 µs per packet; docs/performance.md).
SLICE_PACKETS = 40
#: Payload bytes per RTP packet, to estimate how many packets a frame makes.
PACKET_PAYLOAD = 1200

#: ``gate(kind, due, keyframe, now)``: True to send the frame the sender takes, False to
#: drop it (the viewer's :meth:`~webrtc.schedule.ViewerSchedule.release`).
ReleaseGate = Callable[[MediaKind, float, bool, float], bool]

#: What a frame is to every track it is pushed to: ``(packet, keyframe, payload bytes)``,
#: made once per frame and shared (no object per viewer and frame: fewer survivors for
#: the garbage collector, whose pauses delay the call's RTP; docs/performance.md).
SharedFrame = tuple["av.Packet[AvStream]", bool, int]

_TIME_BASES: dict[int, fractions.Fraction] = {}


def make_packet(frame: MediaFrame, clock_rate: int) -> av.Packet[AvStream]:
    """``frame`` (which must have a ``pts``) as the packet aiortc's ``pack()`` sends."""
    assert frame.pts is not None
    time_base = _TIME_BASES.get(clock_rate)
    if time_base is None:
        time_base = _TIME_BASES[clock_rate] = fractions.Fraction(1, clock_rate)
    packet = av.Packet(frame.payload)
    packet.pts = rtp_timestamp(frame.pts, clock_rate)
    packet.time_base = time_base
    return packet


class ReleaseTimer:
    """One timer for many tracks: wakes each waiting ``recv()`` when its frame is due.

    A timing wheel of millisecond slots (uvloop's timer resolution): tracks due in
    the same millisecond share a slot and one wakeup. Wakes at most
    ``slice_packets`` estimated RTP packets' worth of tracks per turn of the event
    loop (see the module docstring). ``wakeups`` counts tracks woken, ``slices``
    the turns that were cut short because more were due.
    """

    def __init__(self, *, slice_packets: int = SLICE_PACKETS) -> None:
        if slice_packets < 1:
            raise ValueError(f"slice_packets must be at least 1, got {slice_packets}")
        self.slice_packets = slice_packets
        self.wakeups = 0
        self.slices = 0
        self._loop = asyncio.get_running_loop()
        self._slots: dict[int, list[PassthroughTrack]] = {}  # ms -> tracks due then
        self._order: list[int] = []  # heap of the slots' ms
        self._handle: asyncio.Handle | None = None
        self._armed_at = math.inf  # ms
        self._closed = False

    def __len__(self) -> int:
        return sum(len(tracks) for tracks in self._slots.values())

    def wake_at(self, due: float, track: PassthroughTrack) -> None:
        """Wake ``track``'s waiting ``recv()`` at ``due`` (monotonic, the loop's clock)."""
        if self._closed:
            return
        slot = math.ceil(due * 1000.0)
        tracks = self._slots.get(slot)
        if tracks is None:
            tracks = self._slots[slot] = []
            heapq.heappush(self._order, slot)
        tracks.append(track)
        if slot < self._armed_at:
            self._arm(slot)

    def close(self) -> None:
        """Forget every pending wakeup; later ones are ignored."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()
        self._order.clear()

    def _arm(self, slot: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = slot
        self._handle = self._loop.call_at(slot / 1000.0, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        order, slots = self._order, self._slots
        horizon = (self._loop.time() + DUE_EPSILON) * 1000.0
        budget = self.slice_packets
        while order and order[0] <= horizon:
            slot = order[0]
            tracks = slots[slot]
            while tracks and budget > 0:
                cost = tracks.pop()._wake()
                if cost:
                    self.wakeups += 1
                    budget -= cost
            if tracks:
                break  # the slice is spent
            heapq.heappop(order)
            del slots[slot]
            if budget <= 0:
                break
        if not order:
            return
        if order[0] <= horizon:
            # More are due: the rest in the next turn, after the loop has polled its sockets.
            self.slices += 1
            self._armed_at = -math.inf  # nothing can be due sooner than "next turn"
            self._handle = self._loop.call_soon(self._fire)
        else:
            self._arm(order[0])


class PassthroughTrack(MediaStreamTrack):
    """An aiortc track whose ``recv()`` returns its due frames as :class:`av.Packet`.

    Fed by :meth:`push` (the stream's fan-out: due time and shared packet) or by
    :meth:`put` (a frame due at once; waits while ``max_queue`` are queued).
    :meth:`attach` gives it the stream's :class:`ReleaseTimer` and the viewer's
    :data:`ReleaseGate`; without a timer it makes its own.
    """

    def __init__(self, kind: MediaKind, clock_rate: int, *, max_queue: int = TRACK_QUEUE) -> None:
        super().__init__()
        self.kind = kind
        self.media_kind: MediaKind = kind  # ``kind`` is a plain str on aiortc's base class
        self.clock_rate = clock_rate
        self.max_queue = max_queue
        self.frames_sent = 0
        self.bytes_sent = 0
        # Parallel queues: due times (floats) and the frames' shared items.
        self._dues: deque[float] = deque()
        self._frames: deque[SharedFrame] = deque()
        self._timer: ReleaseTimer | None = None
        self._gate: ReleaseGate | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._finished = False

    @property
    def queued(self) -> int:
        """Frames held for the sender (due or not yet)."""
        return len(self._dues)

    @property
    def last_due(self) -> float:
        """Due time of the last frame held, ``-inf`` when none."""
        return self._dues[-1] if self._dues else -math.inf

    def attach(self, timer: ReleaseTimer, gate: ReleaseGate | None = None) -> None:
        """Wait on ``timer`` (the stream's) and ask ``gate`` before sending each frame."""
        self._timer = timer
        self._gate = gate

    def push(self, due: float, frame: SharedFrame) -> None:
        """Queue ``frame`` (``(packet, keyframe, payload bytes)``) for release at ``due``;
        never waits. ``due`` must not be earlier than that of the frame pushed before."""
        if self._finished:
            return
        dues = self._dues
        dues.append(due)
        self._frames.append(frame)
        if len(dues) == 1 and self._waiter is not None:
            self._timer_for().wake_at(due, self)

    async def put(self, frame: MediaFrame) -> None:
        """Hand ``frame`` to the sender at once; waits while ``max_queue`` frames are queued.

        A frame without ``pts`` cannot be timestamped: it is not sent.
        """
        while not self._finished and len(self._dues) >= self.max_queue:
            space = asyncio.get_running_loop().create_future()
            self._space = space
            try:
                await space
            finally:
                self._space = None
        if self._finished or frame.pts is None:
            return
        loop = asyncio.get_running_loop()
        packet = make_packet(frame, self.clock_rate)
        self.push(loop.time(), (packet, frame.keyframe, len(frame.payload)))

    def finish(self) -> None:
        """No more frames: the sender's pending and next ``recv()`` end its RTP loop."""
        if self._finished:
            return
        self._finished = True
        self._dues.clear()
        self._frames.clear()
        for future in (self._waiter, self._space):
            if future is not None and not future.done():
                future.set_result(None)

    async def recv(self) -> av.Packet[AvStream]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        dues, frames = self._dues, self._frames
        while True:
            if self._finished:
                raise MediaStreamError
            if dues:
                due = dues[0]
                now = loop.time()
                if due <= now + DUE_EPSILON:
                    dues.popleft()
                    packet, keyframe, size = frames.popleft()
                    space = self._space
                    if space is not None and not space.done():
                        space.set_result(None)
                    gate = self._gate
                    if gate is not None and not gate(self.media_kind, due, keyframe, now):
                        continue
                    self.frames_sent += 1
                    self.bytes_sent += size
                    return packet
            waiter = loop.create_future()
            self._waiter = waiter
            if dues:
                self._timer_for().wake_at(dues[0], self)
            try:
                await waiter
            finally:
                self._waiter = None

    def stop(self) -> None:
        self.finish()
        super().stop()

    def _timer_for(self) -> ReleaseTimer:
        if self._timer is None:
            self._timer = ReleaseTimer()
        return self._timer

    def _wake(self) -> int:
        """Called by the timer: wake a waiting ``recv()``; the RTP packets it will send
        (estimated), 0 when nothing was waiting."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return 0
        waiter.set_result(None)
        size = self._frames[0][2] if self._frames else 0
        return 1 + size // PACKET_PAYLOAD


def hook_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Make PLI/FIR received for ``sender`` call ``on_request()``.

    Shadows ``RTCRtpSender._send_keyframe`` on this instance (aiortc 1.16 calls
    ``self._send_keyframe()`` from ``_handle_rtcp_packet``). The original only sets
    a flag for aiortc's own encoder, unused with pre-encoded packets, so nothing
    is lost by not calling it.
    """
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise RuntimeError("aiortc's RTCRtpSender has no _send_keyframe(): version mismatch")
    setattr(sender, "_send_keyframe", on_request)  # noqa: B010 - assigning a method, on purpose
