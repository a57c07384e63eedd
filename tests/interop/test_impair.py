"""The UDP impairment proxy itself: loss, reordering, delay, duplication, RTCP drop, stop.

These run on the real event loop over 127.0.0.1 (the proxy is an I/O tool),
with short waits and statistical bounds several sigmas wide.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
from typing import Any

import pytest

from tests.interop.impair import Impairment, ImpairmentProxy, Link

LOCALHOST = "127.0.0.1"


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[int, float]] = []
        self.sources: list[tuple[str, int]] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        (number,) = struct.unpack("!I", data[:4])
        self.received.append((number, asyncio.get_running_loop().time()))
        self.sources.append((str(addr[0]), int(addr[1])))


class _Endpoint:
    """A UDP socket on 127.0.0.1 that records the numbered datagrams it gets."""

    def __init__(self, transport: asyncio.DatagramTransport, collector: _Collector) -> None:
        self.transport = transport
        self.collector = collector
        self.address: tuple[str, int] = transport.get_extra_info("sockname")[:2]

    @classmethod
    async def open(cls) -> _Endpoint:
        loop = asyncio.get_running_loop()
        transport, collector = await loop.create_datagram_endpoint(
            _Collector, local_addr=(LOCALHOST, 0)
        )
        return cls(transport, collector)

    @property
    def numbers(self) -> list[int]:
        return [number for number, _ in self.collector.received]

    def send(self, number: int, port: int) -> None:
        self.transport.sendto(struct.pack("!I", number) + b"x" * 60, (LOCALHOST, port))

    def close(self) -> None:
        self.transport.close()


async def _run(
    impairment: Impairment,
    count: int,
    *,
    seed: int = 1,
    spacing: float = 0.0,
    settle: float = 0.3,
    rtcp: bool = False,
) -> tuple[list[int], Link, list[tuple[int, float]], list[float]]:
    """Send ``count`` numbered datagrams through one link; return what arrived."""
    receiver = await _Endpoint.open()
    sender = await _Endpoint.open()
    proxy = ImpairmentProxy(impairment, seed=seed)
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    try:
        link = await proxy.forward([receiver.address], rtcp=rtcp)
        for number in range(count):
            sent_at.append(loop.time())
            sender.send(number, link.port)
            if spacing:
                await asyncio.sleep(spacing)
            elif number % 50 == 49:
                await asyncio.sleep(0.002)  # let the kernel buffers drain
        await asyncio.sleep(settle)
        return receiver.numbers, link, list(receiver.collector.received), sent_at
    finally:
        await proxy.stop()
        receiver.close()
        sender.close()


async def test_loss_ratio_matches_the_probability_and_the_seed_decides() -> None:
    numbers, link, _, _ = await _run(Impairment(loss=0.1), 2000, seed=42)
    lost = 2000 - len(numbers)
    assert link.stats.lost == lost
    assert link.stats.received == 2000
    assert 0.07 * 2000 < lost < 0.13 * 2000  # binomial sigma is 0.0067 * 2000
    again, _, _, _ = await _run(Impairment(loss=0.1), 2000, seed=42)
    assert again == numbers  # same seed, same fate for every datagram
    other, _, _, _ = await _run(Impairment(loss=0.1), 2000, seed=43)
    assert other != numbers


async def test_reordering_holds_a_packet_behind_the_next_one() -> None:
    numbers, link, _, _ = await _run(Impairment(reorder=0.1), 500, spacing=0.001)
    assert sorted(numbers) == list(range(500))  # nothing lost or duplicated
    inversions = [i for i in range(len(numbers) - 1) if numbers[i] > numbers[i + 1]]
    assert len(inversions) == link.stats.reordered
    assert 20 <= link.stats.reordered <= 80
    for i in inversions:
        # A held packet goes out right behind its successor: an adjacent swap.
        assert numbers[i] == numbers[i + 1] + 1


async def test_a_held_packet_leaves_after_the_hold_time_when_nothing_follows() -> None:
    numbers, link, received, sent_at = await _run(
        Impairment(reorder=1.0, reorder_hold_ms=50), 1, settle=0.2
    )
    assert numbers == [0]
    assert received[0][1] - sent_at[0] >= 0.045
    assert link.stats.reordered == 0


async def test_uniform_delay_is_spread_over_the_jitter_range() -> None:
    impairment = Impairment(delay_ms=20, jitter_ms=40, fifo=False)
    numbers, link, received, sent_at = await _run(impairment, 300, spacing=0.002)
    drawn = list(link.stats.delays)
    assert len(drawn) == 300
    assert min(drawn) >= 0.020 and max(drawn) <= 0.060
    assert 0.037 < statistics.mean(drawn) < 0.043  # uniform: mean 40 ms, sigma 0.67 ms
    assert 0.0105 < statistics.pstdev(drawn) < 0.0125  # 40 / sqrt(12) = 11.5 ms
    measured = [at - sent_at[number] for number, at in received]
    assert min(measured) >= 0.019
    assert 0.035 < statistics.median(measured) < 0.050  # loop latency adds a little
    # Independent delays (no FIFO) reorder packets sent 2 ms apart.
    assert any(numbers[i] > numbers[i + 1] for i in range(len(numbers) - 1))


async def test_normal_jitter_and_fifo_keep_order() -> None:
    impairment = Impairment(jitter_ms=40, jitter_distribution="normal")
    numbers, link, _, _ = await _run(impairment, 300, spacing=0.002)
    drawn = list(link.stats.delays)
    assert 0.018 < statistics.mean(drawn) < 0.022
    assert 0.008 < statistics.pstdev(drawn) < 0.012  # sigma = jitter / 4 = 10 ms
    assert numbers == list(range(300))  # FIFO: jitter delays but never reorders


async def test_duplicates_are_counted_and_delivered() -> None:
    numbers, link, _, _ = await _run(Impairment(duplicate=0.2), 500)
    extra = len(numbers) - 500
    assert extra == link.stats.duplicated
    assert 60 <= extra <= 140
    assert sorted(set(numbers)) == list(range(500))


async def test_drop_rtcp_drops_only_rtcp_links() -> None:
    numbers, link, _, _ = await _run(Impairment(drop_rtcp=True), 20, rtcp=True)
    assert numbers == []
    assert link.stats.rtcp_dropped == 20
    numbers, link, _, _ = await _run(Impairment(drop_rtcp=True), 20, rtcp=False)
    assert numbers == list(range(20))


async def test_fan_out_and_reverse_traffic() -> None:
    first, second, sender = [await _Endpoint.open() for _ in range(3)]
    proxy = ImpairmentProxy(Impairment(loss=0.3), seed=5)
    try:
        link = await proxy.forward([first.address, second.address])
        for number in range(200):
            sender.send(number, link.port)
        await asyncio.sleep(0.2)
        assert first.numbers == second.numbers  # both see the same impaired stream
        assert 200 - len(first.numbers) == link.stats.lost
        first.send(7, link.port)  # e.g. an RTCP receiver report
        await asyncio.sleep(0.1)
        assert sender.numbers == [7]
        assert link.stats.reverse == 1
        assert first.collector.sources[0] == (LOCALHOST, link.port)
    finally:
        await proxy.stop()
        for endpoint in (first, second, sender):
            endpoint.close()


async def test_pending_is_bounded() -> None:
    impairment = Impairment(delay_ms=300, max_pending=10)
    numbers, link, _, _ = await _run(impairment, 50, settle=0.5)
    assert link.stats.overflow == 40
    assert numbers == list(range(10))


async def test_stop_releases_sockets_and_drops_pending() -> None:
    receiver = await _Endpoint.open()
    sender = await _Endpoint.open()
    proxy = ImpairmentProxy(Impairment(delay_ms=200), seed=3)
    link = await proxy.forward([receiver.address])
    for number in range(5):
        sender.send(number, link.port)
    await asyncio.sleep(0.05)
    assert proxy.pending == 5
    await proxy.stop()
    await proxy.stop()  # idempotent
    assert proxy.pending == 0
    await asyncio.sleep(0.3)
    assert receiver.numbers == []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCALHOST, link.port))  # the port is free again
    with pytest.raises(RuntimeError, match="the proxy was stopped"):
        await proxy.forward([receiver.address])
    receiver.close()
    sender.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": 1.5}, "loss must be a probability in [0, 1], got 1.5"),
        ({"jitter_ms": -1.0}, "jitter_ms must be finite and >= 0, got -1.0"),
        ({"max_pending": 0}, "max_pending must be at least 1, got 0"),
    ],
)
def test_impairment_validates(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        Impairment(**kwargs)
    assert str(excinfo.value) == message
