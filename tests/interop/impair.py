"""A UDP impairment proxy on 127.0.0.1: loss, delay, jitter, reordering, duplication.

Theory of operation
-------------------
The kernel here has no netem, so media tests impair traffic in user space.
An :class:`ImpairmentProxy` owns *links*: each link is one UDP socket on
127.0.0.1 that a sender targets instead of the receiver. Every datagram a
link receives from the sender is copied to each of the link's destinations
(several receivers can thus see the very same impaired stream: the gateway
under test and a reference receiver), after the link's fate for it is drawn:

1. ``drop_rtcp``: a link marked as RTCP drops everything (no RTCP at all).
2. ``loss``: dropped with this probability.
3. Delay: ``delay_ms`` plus a jitter draw in ``[0, jitter_ms]``, uniform, or
   normal with mean ``jitter_ms / 2`` and sigma ``jitter_ms / 4`` (clipped to
   the interval); capped at ``max_delay_ms``. With ``fifo`` (the default) a
   packet never leaves before the one received before it on the same link,
   as in a router queue: jitter then delays but does not reorder, and
   reordering is only what ``reorder`` asks for. Without ``fifo`` each packet
   gets its own delay and may overtake others.
4. ``reorder``: the packet is held back and sent right after the next
   packet of the link (or after ``reorder_hold_ms`` if none comes).
5. ``duplicate``: a second copy leaves ``duplicate_gap_ms`` after the first.

Determinism: each link has its own :class:`random.Random`, seeded from the
proxy's seed and the link's index, and draws the same four numbers for every
datagram, so for a given seed the n-th datagram of a link always meets the
same fate, whatever the timing of other links.

Datagrams that reach a link from one of its destinations (RTCP receiver
reports, NAT keepalives) go back, unimpaired, to the last sender address.

Bounds: at most ``max_pending`` datagrams wait at any time (more are dropped
and counted as ``overflow``), no datagram waits longer than ``max_delay_ms``
plus ``reorder_hold_ms``, and :meth:`ImpairmentProxy.stop` cancels the timer,
forgets what is pending and closes every socket.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

__all__ = ["Impairment", "ImpairmentProxy", "Link", "LinkStats"]

Address = tuple[str, int]
LOCALHOST = "127.0.0.1"
#: Delays kept per link for inspection (a bounded window, newest last).
DELAY_SAMPLES = 10_000


@dataclass(frozen=True)
class Impairment:
    """What a link does to the datagrams it forwards (see the module docstring)."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_distribution: Literal["uniform", "normal"] = "uniform"
    reorder: float = 0.0
    duplicate: float = 0.0
    drop_rtcp: bool = False
    fifo: bool = True
    reorder_hold_ms: float = 100.0
    duplicate_gap_ms: float = 1.0
    max_delay_ms: float = 1000.0
    max_pending: int = 10_000

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in (
            "delay_ms",
            "jitter_ms",
            "reorder_hold_ms",
            "duplicate_gap_ms",
            "max_delay_ms",
        ):
            value = getattr(self, name)
            if not 0.0 <= value < float("inf"):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.jitter_distribution not in ("uniform", "normal"):
            raise ValueError(
                f"jitter_distribution must be 'uniform' or 'normal', "
                f"got {self.jitter_distribution!r}"
            )
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")


@dataclass
class LinkStats:
    """What one link did, counted per datagram received from the sender."""

    received: int = 0
    forwarded: int = 0
    """Datagrams that left (each destination counted once per datagram)."""
    lost: int = 0
    rtcp_dropped: int = 0
    reordered: int = 0
    duplicated: int = 0
    overflow: int = 0
    reverse: int = 0
    """Datagrams from a destination sent back to the sender."""
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=DELAY_SAMPLES))
    """Drawn delay (s, before the FIFO rule) of the latest forwarded datagrams."""

    def summary(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and figures.json)."""
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "lost": self.lost,
            "rtcp_dropped": self.rtcp_dropped,
            "reordered": self.reordered,
            "duplicated": self.duplicated,
            "overflow": self.overflow,
            "reverse": self.reverse,
        }


class _Pending:
    """One datagram waiting in the proxy's schedule."""

    __slots__ = ("cancelled", "data", "link", "original")

    def __init__(self, link: Link, data: bytes, original: bool) -> None:
        self.link = link
        self.data = data
        self.original = original
        self.cancelled = False


class _LinkProtocol(asyncio.DatagramProtocol):
    def __init__(self, link: Link) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.link._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # A destination that is not (or no longer) listening: UDP says so, we go on.
        del exc


class Link:
    """One forwarded UDP port: senders send to :attr:`port`, destinations receive."""

    def __init__(
        self,
        proxy: ImpairmentProxy,
        index: int,
        destinations: Sequence[Address],
        *,
        rtcp: bool,
        name: str,
    ) -> None:
        self.proxy = proxy
        self.index = index
        self.name = name
        self.rtcp = rtcp
        self.destinations = list(destinations)
        self.stats = LinkStats()
        self.port = 0
        self._rng = random.Random(f"{proxy.seed}/{index}")
        self._transport: asyncio.DatagramTransport | None = None
        self._client: Address | None = None
        self._last_departure = 0.0
        self._held: tuple[_Pending, float] | None = None

    async def _open(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((LOCALHOST, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _LinkProtocol(self), sock=sock)
        self._transport = transport

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._held = None

    def _on_datagram(self, data: bytes, source: Address) -> None:
        if self._transport is None:
            return
        if source in self.destinations:
            if self._client is not None:
                self.stats.reverse += 1
                self._transport.sendto(data, self._client)
            return
        self._client = source
        self.stats.received += 1
        config = self.proxy.impairment
        # Always the same four draws per datagram: fates do not depend on timing.
        lose, jitter, hold, duplicate = (self._rng.random() for _ in range(4))
        if self.rtcp and config.drop_rtcp:
            self.stats.rtcp_dropped += 1
            return
        if lose < config.loss:
            self.stats.lost += 1
            return
        now = self.proxy.now()
        delay = min(config.delay_ms + self._jitter(jitter), config.max_delay_ms) / 1000
        self.stats.delays.append(delay)
        departure = now + delay
        if config.fifo:
            departure = max(departure, self._last_departure)
        self._last_departure = max(self._last_departure, departure)
        held, self._held = self._held, None
        if held is None and hold < config.reorder:
            # Held back behind the next packet; this entry sends it anyway if none comes.
            fallback = _Pending(self, data, original=True)
            if self.proxy._schedule(departure + config.reorder_hold_ms / 1000, fallback):
                self._held = (fallback, departure)
        elif not self.proxy._schedule(departure, _Pending(self, data, original=True)):
            self._held = held  # this one overflowed: the held one waits for the next
        elif held is not None:
            # The held packet leaves right after this one (schedule order breaks ties).
            fallback, held_departure = held
            fallback.cancelled = True
            released = _Pending(self, fallback.data, original=True)
            self.proxy._schedule(max(departure, held_departure), released)
            self.stats.reordered += 1
        if duplicate < config.duplicate:
            copy = _Pending(self, data, original=False)
            if self.proxy._schedule(departure + config.duplicate_gap_ms / 1000, copy):
                self.stats.duplicated += 1

    def _jitter(self, draw: float) -> float:
        config = self.proxy.impairment
        if config.jitter_ms <= 0:
            return 0.0
        if config.jitter_distribution == "uniform":
            return draw * config.jitter_ms
        # Inverse CDF of the normal law, so one uniform draw decides (determinism).
        clipped = min(max(draw, 1e-9), 1 - 1e-9)
        value = NormalDist(config.jitter_ms / 2, config.jitter_ms / 4).inv_cdf(clipped)
        return min(max(value, 0.0), config.jitter_ms)

    def _send(self, pending: _Pending) -> None:
        if self._transport is None:
            return
        if self._held is not None and self._held[0] is pending:
            self._held = None  # the fallback fired: nothing came after it in time
        for destination in self.destinations:
            self._transport.sendto(pending.data, destination)
        self.stats.forwarded += 1


class ImpairmentProxy:
    """Forwards UDP ports on 127.0.0.1 through one :class:`Impairment` (module docstring).

    Use inside a running event loop::

        proxy = ImpairmentProxy(Impairment(loss=0.05), seed=7)
        link = await proxy.forward([("127.0.0.1", 40000)], name="video-rtp")
        ...  # the sender targets link.port
        await proxy.stop()
    """

    def __init__(self, impairment: Impairment, *, seed: int | str = 0) -> None:
        self.impairment = impairment
        self.seed = seed
        self.links: list[Link] = []
        self._heap: list[tuple[float, int, _Pending]] = []
        self._order = itertools.count()
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    def now(self) -> float:
        """The event loop's clock (the proxy runs on it)."""
        assert self._loop is not None
        return self._loop.time()

    async def forward(
        self,
        destinations: Sequence[Address],
        *,
        rtcp: bool = False,
        port: int = 0,
        name: str | None = None,
    ) -> Link:
        """Open a link on ``127.0.0.1:port`` (0: any free port) copying to ``destinations``."""
        if self._stopped:
            raise RuntimeError("the proxy was stopped")
        if not destinations:
            raise ValueError("a link needs at least one destination")
        self._loop = asyncio.get_running_loop()
        index = len(self.links)
        link = Link(self, index, destinations, rtcp=rtcp, name=name or f"link{index}")
        await link._open(port)
        self.links.append(link)
        return link

    async def forward_pair(
        self,
        rtp_destinations: Sequence[Address],
        rtcp_destinations: Sequence[Address],
        *,
        name: str = "media",
    ) -> tuple[Link, Link]:
        """An RTP link and its RTCP link (the latter subject to ``drop_rtcp``)."""
        rtp = await self.forward(rtp_destinations, name=f"{name}-rtp")
        rtcp = await self.forward(rtcp_destinations, rtcp=True, name=f"{name}-rtcp")
        return rtp, rtcp

    def totals(self) -> dict[str, int]:
        """Every link's counters summed."""
        total: dict[str, int] = {}
        for link in self.links:
            for key, value in link.stats.summary().items():
                total[key] = total.get(key, 0) + value
        return total

    @property
    def pending(self) -> int:
        """Datagrams waiting to leave."""
        return self._pending

    async def stop(self) -> None:
        """Cancel the timer, forget pending datagrams, close every socket (idempotent)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._pending = 0
        for link in self.links:
            link._close()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    # -- schedule ----------------------------------------------------------------
    def _schedule(self, when: float, pending: _Pending) -> bool:
        if self._stopped or self._loop is None:
            return False
        if self._pending >= self.impairment.max_pending:
            pending.link.stats.overflow += 1
            return False
        heapq.heappush(self._heap, (when, next(self._order), pending))
        self._pending += 1
        self._arm()
        return True

    def _arm(self) -> None:
        assert self._loop is not None
        if not self._heap:
            return
        head = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= head:
                return
            self._timer.cancel()
        self._timer_at = head
        self._timer = self._loop.call_at(head, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._stopped or self._loop is None:
            return
        now = self._loop.time()
        while self._heap and self._heap[0][0] <= now:
            _, _, pending = heapq.heappop(self._heap)
            self._pending -= 1
            if not pending.cancelled:
                pending.link._send(pending)
        self._arm()
