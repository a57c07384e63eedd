"""A frozen RTMP server: ``rw_timeout`` ends the stalled connection, the push comes back,
and the event loop never stalls.

nginx-rtmp (master and worker) is stopped with SIGSTOP, by PID, while a push runs
with ``rw_timeout`` = :data:`RW_TIMEOUT`. The server's sockets stay open but nobody
reads: our writes fill the TCP buffers and the transport's, and the drain then
waits ``rw_timeout``. The push must leave ``PROCESSED_REMOTE`` for ``PENDING`` with
an error ``info`` within :data:`LEAVE_WITHIN` seconds. nginx then stays frozen
:data:`FROZEN_AFTER_LEAVE` seconds more: reconnection attempts get a TCP connection
(the kernel accepts into the backlog) but no RTMP handshake, and ``connect_timeout``
(:data:`CONNECT_TIMEOUT`) must end them (the pusher logs each failed attempt with
"retrying in"; at least one must be logged while frozen, and the push stays
``PENDING``). All along, a 50 ms ticker on the event loop is never late by more
than :data:`MAX_LOOP_LAG`: the RTMP connection is asyncio, nothing waits on the
network with the GIL held (what PyAV's ``avformat_write_header`` did, stalling
the loop ~2.1 s per attempt; see docs/decisions.md).

Then SIGCONT: the push must be ``PROCESSED_REMOTE`` again (``reconnects`` >= 1)
within :data:`RECONNECT_WITHIN` seconds, and a real ffmpeg pulling the stream must
get several seconds of clean H.264 + AAC. SIGCONT is sent in a ``finally``,
whatever happens. Measured times go to ``rtmp-stall-figures.json`` in the artifacts.

A second test points a push at a socket that accepts TCP and never answers (no
nginx needed, but kept here with its sibling): every attempt must end after
``connect_timeout``, with the loop responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from rtmp.pusher import PushConfig, PushStatus, RtmpPusher
from rtp.frame import MediaFrame
from tests.interop.nginx import NginxRtmp
from tests.interop.peers import PeerSet
from tests.interop.test_rtmp_push import (
    FPS,
    check_pulled,
    live_clip,  # noqa: F401 - the module-scoped fixture, shared
    new_stream,
    start_pull,
    wait_for,
)
from tests.rtmp.media import Clip, feed_realtime, shifted

pytestmark = pytest.mark.interop

#: The push's rw_timeout (s).
RW_TIMEOUT = 2.0
#: The push's connect_timeout (s).
CONNECT_TIMEOUT = 1.5
#: The push must have left PROCESSED_REMOTE this long after SIGSTOP (s): the buffers
#: (transport and socket, both send_buffer, and nginx's receive window) fill first,
#: a few seconds at this clip's 1.1 Mbit/s; then the blocked drain waits rw_timeout.
LEAVE_WITHIN = RW_TIMEOUT + 10.0
#: How long nginx stays frozen after the push left (s): room for failed reconnections.
FROZEN_AFTER_LEAVE = 3 * CONNECT_TIMEOUT
#: The push must be PROCESSED_REMOTE again this long after SIGCONT (s).
RECONNECT_WITHIN = 15.0
#: The event loop must never be later than this on a 50 ms tick (s), while the
#: stalled connection is written to and while attempts hang in the handshake.
MAX_LOOP_LAG = 0.1


class LoopLag:
    """A task ticking every 50 ms on the event loop; ``worst`` is its largest lateness."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)
            self.worst = max(self.worst, time.monotonic() - due)
            self.ticks += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    def take(self) -> float:
        """The worst lateness since the last ``take()``; starts a new period."""
        worst, self.worst = self.worst, 0.0
        return worst

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def test_frozen_server_is_left_and_rejoined(
    peers: PeerSet,
    live_clip: Clip,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rtmp.pusher")
    nginx = NginxRtmp(peers).start()
    statuses: list[tuple[float, PushStatus, str | None]] = []
    stream = new_stream()
    config = PushConfig(
        url=nginx.url("stall"),
        connect_timeout=CONNECT_TIMEOUT,
        rw_timeout=RW_TIMEOUT,
        retry_initial=0.5,
        retry_max=1.0,
        max_retries=None,
    )
    pusher = RtmpPusher(
        stream, config, on_status=lambda s, i: statuses.append((time.monotonic(), s, i))
    )
    # 48 s of media: enough for the freeze, the reconnection and a pull afterwards.
    step = live_clip.seconds + 1 / FPS
    frames: list[MediaFrame] = []
    for index in range(6):
        frames += shifted(live_clip.frames, index * step)
    lag = LoopLag()
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, frames))
    frozen: list[int] = []
    try:
        await wait_for(lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 10, "PROCESSED_REMOTE")
        await asyncio.sleep(2.0)
        lag.start()
        sent_before = pusher.stats.video_frames_sent
        frozen = nginx.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        assert len(frozen) >= 2, frozen  # the master and its worker
        await wait_for(
            lambda: pusher.status is PushStatus.PENDING, LEAVE_WITHIN, "PENDING after the freeze"
        )
        left_after = time.monotonic() - frozen_at
        stall_lag = lag.take()
        pending_info = pusher.info
        assert pending_info, statuses
        retries_before = retry_lines(caplog)
        await asyncio.sleep(FROZEN_AFTER_LEAVE)
        # Still frozen: attempts fail in the RTMP handshake, bounded by connect_timeout.
        assert pusher.status is PushStatus.PENDING, statuses
        failed_while_frozen = retry_lines(caplog) - retries_before
        assert failed_while_frozen >= 1, caplog.text
        open_lag = lag.take()
    finally:
        for pid in frozen:
            nginx_signal_cont(pid)
    try:
        resumed_at = time.monotonic()
        await wait_for(
            lambda: pusher.status is PushStatus.PROCESSED_REMOTE,
            RECONNECT_WITHIN,
            "PROCESSED_REMOTE after SIGCONT",
        )
        rejoined_after = time.monotonic() - resumed_at
        await lag.stop()
        assert pusher.stats.reconnects >= 1
        assert pusher.stats.video_frames_sent > sent_before
        await asyncio.to_thread(nginx.wait_publishing, "stall")
        pull = start_pull(peers, nginx.url("stall"), tmp_path / "after.flv", name="pull-after")
        await asyncio.sleep(8.0)
        stream.end()
        await wait_for(lambda: pusher.status is PushStatus.STOPPED, 15, "STOPPED")
        await asyncio.to_thread(pull.wait, 15)
    finally:
        feeder.cancel()
        await lag.stop()
        await pusher.stop()
    check_pulled(tmp_path / "after.flv", min_seconds=5.0)
    assert lag.ticks > 20
    assert stall_lag < MAX_LOOP_LAG, stall_lag
    assert open_lag < MAX_LOOP_LAG, open_lag
    pending_infos = [i for _, s, i in statuses if s is PushStatus.PENDING]
    sequence = [s for _, s, _ in statuses]
    assert sequence[:3] == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE, PushStatus.PENDING]
    assert sequence[-1] is PushStatus.STOPPED
    (peers.log_dir / "rtmp-stall-figures.json").write_text(
        json.dumps(
            {
                "rw_timeout_s": RW_TIMEOUT,
                "connect_timeout_s": CONNECT_TIMEOUT,
                "left_processed_remote_after_sigstop_s": round(left_after, 3),
                "first_pending_info": pending_info,
                "pending_infos": pending_infos,
                "failed_attempts_while_frozen": failed_while_frozen,
                "processed_remote_after_sigcont_s": round(rejoined_after, 3),
                "reconnects": pusher.stats.reconnects,
                "worst_loop_lag_stalled_write_s": round(stall_lag, 4),
                "worst_loop_lag_frozen_reconnects_s": round(open_lag, 4),
                "worst_loop_lag_after_sigcont_s": round(lag.worst, 4),
                "statuses": [[round(t - frozen_at, 3), s.value, i] for t, s, i in statuses],
            },
            indent=1,
        )
    )


def retry_lines(caplog: pytest.LogCaptureFixture) -> int:
    """How many failed attempts the pusher has logged so far."""
    return sum("retrying in" in record.getMessage() for record in caplog.records)


def nginx_signal_cont(pid: int) -> None:
    """SIGCONT one frozen nginx process (it may have been killed meanwhile)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


async def test_connect_timeout_bounds_a_server_that_never_answers(
    live_clip: Clip,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listening socket that is never accepted from: the kernel completes the TCP
    handshake, nothing answers C0/C1. Each attempt must fail after connect_timeout
    (not sooner, not much later) while the loop stays responsive."""
    connect_timeout = 1.0
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    statuses: list[tuple[float, PushStatus, str | None]] = []
    stream = new_stream()
    config = PushConfig(
        url=f"rtmp://127.0.0.1:{port}/live/silent",
        connect_timeout=connect_timeout,
        retry_initial=0.2,
        retry_max=0.2,
        max_retries=2,
    )
    pusher = RtmpPusher(
        stream, config, on_status=lambda s, i: statuses.append((time.monotonic(), s, i))
    )
    caplog.set_level(logging.INFO, logger="rtmp.pusher")
    lag = LoopLag()
    lag.start()
    started = time.time()  # log records carry wall-clock times
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, live_clip.frames))
    try:
        await wait_for(lambda: pusher.status is PushStatus.FAILED, 15, "FAILED")
    finally:
        feeder.cancel()
        await lag.stop()
        await pusher.stop()
        silent.close()
    reason = f"no publish within connect_timeout ({connect_timeout:g} s)"
    assert [s for _, s, _ in statuses] == [PushStatus.PENDING, PushStatus.FAILED], statuses
    assert statuses[0][2] == reason
    # One log line ends each attempt: the first one and two retries.
    ends = [
        r.created
        for r in caplog.records
        if reason in r.getMessage()
        and ("retrying in" in r.getMessage() or "giving up" in r.getMessage())
    ]
    assert len(ends) == 3, caplog.text
    # The first attempt starts on the clip's first keyframe, at once.
    assert connect_timeout <= ends[0] - started < connect_timeout + 0.5, ends[0] - started
    for a, b in itertools.pairwise(ends):
        # backoff (0.2 s) + the wait for the next keyframe (GOP: 1 s) + one bounded attempt
        assert connect_timeout + 0.2 <= b - a < connect_timeout + 0.2 + 1.0 + 0.5, b - a
    assert lag.ticks > 20
    assert lag.worst < MAX_LOOP_LAG, lag.worst
