"""The bounded stop of sipbridge.service: StopDeadline and stop_within."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import cast

import pytest

from sipbridge.gateway import Gateway
from sipbridge.service import (
    EXIT_RESERVE,
    StopDeadline,
    freeze_startup_objects,
    stop_within,
)
from sipbridge.settings import ServiceSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class StoppingGateway:
    """Stands in for a Gateway whose stop takes ``hold`` (None: forever)."""

    def __init__(self, hold: float | None) -> None:
        self.hold = hold
        self.stop_began = False
        self.stop_ended = False

    async def stop(self) -> None:
        self.stop_began = True
        if self.hold is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(self.hold)
        self.stop_ended = True


def test_remaining_counts_from_begin() -> None:
    clock = FakeClock()
    deadline = StopDeadline(20.0, clock=clock)
    clock.now += 50
    assert deadline.remaining() == 20.0  # not begun: the whole bound
    deadline.begin(at=clock.now - 2.0)  # the signal came 2 s ago
    assert deadline.started_at == 148.0
    assert deadline.remaining() == 18.0
    deadline.begin()  # idempotent
    assert deadline.started_at == 148.0
    clock.now += 30
    assert deadline.remaining() == 0.0


def test_expiry_thread_fires_after_the_bound() -> None:
    fired = threading.Event()
    deadline = StopDeadline(0.05, on_expiry=fired.set)
    deadline.begin()
    assert fired.wait(5.0)
    assert deadline._timer is not None
    assert deadline._timer.daemon  # never holds the interpreter's exit up itself


def test_cancel_disarms_the_expiry_thread() -> None:
    fired = threading.Event()
    deadline = StopDeadline(0.05, on_expiry=fired.set)
    deadline.begin()
    deadline.cancel()
    assert not fired.wait(0.2)


def test_without_on_expiry_no_thread_starts() -> None:
    deadline = StopDeadline(0.01)
    deadline.begin()
    assert deadline._timer is None


async def test_a_stop_within_the_bound_is_not_missed() -> None:
    gateway = StoppingGateway(hold=0.01)
    deadline = StopDeadline(5.0)
    deadline.begin()
    await stop_within(cast(Gateway, gateway), deadline)
    assert gateway.stop_ended
    assert not deadline.missed


async def test_a_stop_without_a_deadline_is_awaited_whole() -> None:
    gateway = StoppingGateway(hold=0.01)
    await stop_within(cast(Gateway, gateway), None)
    assert gateway.stop_ended


async def test_a_hanging_stop_is_cut_short_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    gateway = StoppingGateway(hold=None)
    deadline = StopDeadline(3.0, clock=clock)
    deadline.begin(at=clock.now - (2.0 - 0.05))  # 0.05 s left once EXIT_RESERVE is kept back
    assert deadline.remaining() - EXIT_RESERVE == pytest.approx(0.05)
    with caplog.at_level(logging.ERROR, logger="sipbridge.service"):
        await asyncio.wait_for(stop_within(cast(Gateway, gateway), deadline), 5.0)
    assert gateway.stop_began
    assert not gateway.stop_ended
    assert deadline.missed
    [record] = caplog.records
    assert record.getMessage() == (
        "stop: the gateway did not stop within 0.05 s ([service] stop_timeout = 3 s); "
        "exiting with status 1"
    )


async def test_an_error_inside_stop_is_not_taken_for_the_bound() -> None:
    class Failing:
        async def stop(self) -> None:
            raise TimeoutError("a peer's own timeout")

    deadline = StopDeadline(10.0)
    with pytest.raises(TimeoutError, match="a peer's own timeout"):
        await stop_within(cast(Gateway, Failing()), deadline)
    assert not deadline.missed


def test_freeze_startup_objects_takes_them_out_of_collections() -> None:
    gc.unfreeze()
    try:
        kept = [object() for _ in range(10)]
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > len(kept)
    finally:
        gc.unfreeze()


def test_gc_freeze_is_on_by_default_and_can_be_turned_off() -> None:
    assert ServiceSettings().gc_freeze is True
    assert ServiceSettings(gc_freeze=False).gc_freeze is False
