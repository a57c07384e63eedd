"""The stream registry: fan-out, GOP cache, drops, keyframe requests, lifecycle, retention.

All on virtual time (an injected clock); no sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp.frame import MediaFrame
from sipbridge.errors import Conflict, InvalidRequest, NotFound
from sipbridge.registry import (
    Stream,
    StreamEnded,
    StreamRegistry,
    StreamStatus,
    Subscription,
    TrackStats,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_seq = iter(range(10**9))


def video(tag: str, *, key: bool = False) -> MediaFrame:
    return MediaFrame("video", "H264", 90000, next(_seq), tag.encode(), keyframe=key)


def audio(tag: str) -> MediaFrame:
    return MediaFrame("audio", "opus", 48000, next(_seq), tag.encode())


def tags(frames: list[MediaFrame]) -> list[str]:
    return [frame.payload.decode() for frame in frames]


def drain(subscription: Subscription) -> list[str]:
    frames = []
    while (frame := subscription.get_nowait()) is not None:
        frames.append(frame)
    return tags(frames)


def new_stream(clock: FakeClock | None = None) -> Stream:
    return Stream("s1", clock=clock or FakeClock())


class Requests:
    """A keyframe requester that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


# ---- fan-out and ordering ------------------------------------------------------------


async def test_subscribers_get_frames_in_publish_order_then_the_end() -> None:
    stream = new_stream()
    first, second = stream.subscribe(), stream.subscribe()
    frames = [video("K1", key=True), audio("a1"), video("P1"), audio("a2")]
    for frame in frames:
        stream.publish(frame)
    stream.end()
    assert [frame async for frame in first] == frames
    assert [frame async for frame in second] == frames
    assert stream.status is StreamStatus.UNPUBLISHED


async def test_waiting_consumer_is_woken_by_publish() -> None:
    stream = new_stream()
    subscription = stream.subscribe()
    getter = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)  # let the getter park on its waiter (a loop turn, not a delay)
    assert not getter.done()
    stream.publish(audio("a1"))
    assert tags([await getter]) == ["a1"]


async def test_end_lets_subscribers_drain_then_stops_them() -> None:
    stream = new_stream()
    subscription = stream.subscribe()
    parked = stream.subscribe()
    waiter = asyncio.ensure_future(parked.get())
    await asyncio.sleep(0)
    stream.publish(audio("a1"))
    stream.publish(audio("a2"))
    stream.end(StreamStatus.FAILED)
    assert tags([await waiter]) == ["a1"]
    assert tags([await parked.get()]) == ["a2"]
    with pytest.raises(StreamEnded, match="stream 's1' has ended"):
        await parked.get()
    assert tags([frame async for frame in subscription]) == ["a1", "a2"]
    assert stream.subscribers == 0
    assert stream.status is StreamStatus.FAILED


async def test_end_wakes_a_consumer_waiting_on_an_empty_queue() -> None:
    stream = new_stream()
    subscription = stream.subscribe()

    async def consume() -> list[MediaFrame]:
        return [frame async for frame in subscription]

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    stream.end()
    assert await consumer == []


async def test_close_ends_a_pending_get_and_leaves_the_stream() -> None:
    stream = new_stream()
    subscription = stream.subscribe()
    stream.publish(audio("a1"))
    assert stream.subscribers == 1
    subscription.close()
    assert stream.subscribers == 0
    assert subscription.get_nowait() is None  # close() drops what was queued
    with pytest.raises(StreamEnded):
        await subscription.get()
    stream.publish(audio("a2"))
    assert len(subscription) == 0


async def test_only_one_task_may_wait() -> None:
    subscription = new_stream().subscribe()
    first = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another task is already waiting"):
        await subscription.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    subscription.stream.publish(audio("a1"))
    assert tags([await subscription.get()]) == ["a1"]  # a cancelled get leaves no waiter


def test_subscribing_to_an_ended_stream_raises() -> None:
    stream = new_stream()
    stream.end(StreamStatus.STOPPED)
    with pytest.raises(StreamEnded, match=r"stream 's1' has ended \(STOPPED\)"):
        stream.subscribe()


def test_max_queue_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queue must be at least 1, got 0"):
        new_stream().subscribe(max_queue=0)


# ---- the GOP cache -----------------------------------------------------------------------


def test_late_subscriber_starts_on_the_cached_keyframe_with_the_audio_since() -> None:
    stream = new_stream()
    for frame in [audio("a0"), video("P0"), video("K1", key=True), audio("a1"), video("P1")]:
        stream.publish(frame)
    stream.publish(audio("a2"))
    late = stream.subscribe()
    assert not late.waiting_for_keyframe
    stream.publish(video("P2"))
    assert drain(late) == ["K1", "a1", "P1", "a2", "P2"]


def test_a_new_keyframe_replaces_the_cached_gop() -> None:
    stream = new_stream()
    for frame in [video("K1", key=True), audio("a1"), video("P1"), video("K2", key=True)]:
        stream.publish(frame)
    stream.publish(audio("a2"))
    assert drain(stream.subscribe()) == ["K2", "a2"]


def test_audio_keyframe_flags_do_not_start_a_gop() -> None:
    stream = new_stream()
    stream.publish(MediaFrame("audio", "opus", 48000, 0, b"a0", keyframe=True))
    stream.publish(audio("a1"))
    assert drain(stream.subscribe()) == []


def test_from_gop_false_starts_live_and_waits_for_a_keyframe() -> None:
    stream = new_stream()
    stream.publish(video("K1", key=True))
    live = stream.subscribe(from_gop=False)
    assert live.waiting_for_keyframe
    for frame in [audio("a1"), video("P1"), video("K2", key=True), video("P2")]:
        stream.publish(frame)
    assert drain(live) == ["a1", "K2", "P2"]
    assert live.dropped == 1


def test_the_cached_gop_does_not_count_against_the_bound() -> None:
    stream = new_stream()
    gop = [video("K1", key=True), audio("a1"), video("P1"), audio("a2"), video("P2")]
    for frame in gop:
        stream.publish(frame)
    late = stream.subscribe(max_queue=2)
    stream.publish(audio("a3"))
    stream.publish(video("P3"))
    assert len(late) == 7
    stream.publish(audio("a4"))  # full now: 5 cached + 2 live
    assert late.dropped == 1
    assert drain(late) == ["K1", "a1", "P1", "a2", "P2", "a3", "P3"]
    stream.publish(audio("a5"))
    stream.publish(audio("a6"))
    stream.publish(audio("a7"))  # the burst is consumed: the bound is 2 again
    assert drain(late) == ["a5", "a6"]


def test_an_overlong_gop_is_not_cached() -> None:
    requests = Requests()
    stream = Stream("s1", clock=FakeClock(), max_gop_frames=3)
    stream.set_keyframe_requester(requests)
    for frame in [video("K1", key=True), video("P1"), video("P2")]:
        stream.publish(frame)
    assert drain(stream.subscribe()) == ["K1", "P1", "P2"]
    assert requests.count == 0
    stream.publish(video("P3"))  # four frames: over the cap
    late = stream.subscribe()
    assert requests.count == 1
    assert late.waiting_for_keyframe
    assert drain(late) == []


def test_the_gop_cache_is_bounded_in_bytes_too() -> None:
    stream = Stream("s1", clock=FakeClock(), max_gop_bytes=4)
    stream.publish(video("K1", key=True))
    stream.publish(video("P1"))
    assert drain(stream.subscribe()) == ["K1", "P1"]
    stream.publish(video("P2"))  # 6 bytes
    assert drain(stream.subscribe()) == []


# ---- slow subscribers --------------------------------------------------------------------


def test_slow_subscriber_drops_video_to_the_next_keyframe_fast_one_gets_all() -> None:
    stream = new_stream()
    slow = stream.subscribe(max_queue=3)
    fast = stream.subscribe(max_queue=3)
    fast_got: list[str] = []
    sequence = [
        video("K0", key=True),
        video("P1"),
        video("P2"),
        video("P3"),  # slow is full: dropped, its video now waits for a keyframe
        audio("A1"),  # still full: dropped alone
    ]
    for frame in sequence:
        stream.publish(frame)
        fast_got += drain(fast)
    assert drain(slow) == ["K0", "P1", "P2"]
    for frame in [video("P4"), audio("A2"), video("K5", key=True), video("P6")]:
        stream.publish(frame)  # P4 is dropped (no keyframe yet) though there is room
        fast_got += drain(fast)
    assert drain(slow) == ["A2", "K5", "P6"]
    assert slow.dropped == 3
    assert fast_got == ["K0", "P1", "P2", "P3", "A1", "P4", "A2", "K5", "P6"]
    assert fast.dropped == 0


def test_a_keyframe_that_does_not_fit_keeps_the_gap() -> None:
    stream = new_stream()
    slow = stream.subscribe(max_queue=1)
    stream.publish(video("K0", key=True))
    stream.publish(video("K1", key=True))
    assert slow.waiting_for_keyframe
    assert drain(slow) == ["K0"]
    stream.publish(video("P2"))
    stream.publish(video("K3", key=True))
    assert drain(slow) == ["K3"]


def test_the_producer_never_blocks_on_a_stalled_subscriber() -> None:
    # No event loop runs here at all: publish() is plain synchronous code.
    stream = new_stream()
    stalled = stream.subscribe(max_queue=50)
    stream.publish(video("K", key=True))
    for i in range(10_000):
        stream.publish(audio(f"a{i}"))
    assert len(stalled) == 50
    assert stalled.dropped == 10_000 - 49
    assert stream.track("audio").frames == 10_000


# ---- keyframe requests -------------------------------------------------------------------


def test_a_subscriber_without_a_cached_keyframe_requests_one_rate_limited() -> None:
    clock = FakeClock()
    requests = Requests()
    stream = Stream("s1", clock=clock, keyframe_interval=1.0)
    stream.set_keyframe_requester(requests)
    stream.subscribe()
    assert requests.count == 0  # no video known yet: nothing to ask for
    stream.track("video")  # the producer declares its video track
    stream.subscribe()
    stream.subscribe()
    assert requests.count == 1
    clock.now += 0.999
    assert stream.request_keyframe() is False
    clock.now += 0.001
    stream.subscribe()
    assert requests.count == 2


def test_no_request_when_a_keyframe_is_cached() -> None:
    requests = Requests()
    stream = new_stream()
    stream.set_keyframe_requester(requests)
    stream.publish(video("K", key=True))
    stream.subscribe()
    assert requests.count == 0


def test_dropped_video_asks_for_a_keyframe_while_someone_waits() -> None:
    clock = FakeClock()
    requests = Requests()
    stream = Stream("s1", clock=clock)
    stream.set_keyframe_requester(requests)
    waiting = stream.subscribe()  # joined before any media: waits for a keyframe
    assert requests.count == 0
    stream.publish(video("P0"))
    assert requests.count == 1
    stream.publish(video("P1"))
    assert requests.count == 1  # rate-limited
    clock.now += 1.0
    stream.publish(video("P2"))
    assert requests.count == 2
    stream.publish(video("K3", key=True))
    clock.now += 5.0
    stream.publish(video("P4"))
    assert requests.count == 2  # nobody waits any more
    assert drain(waiting) == ["K3", "P4"]


def test_no_requester_and_a_failing_requester() -> None:
    stream = new_stream()
    assert stream.request_keyframe() is False

    def broken() -> None:
        raise OSError("socket closed")

    stream.set_keyframe_requester(broken)
    assert stream.request_keyframe() is True  # logged, not raised into publish()
    stream.set_keyframe_requester(None)
    assert stream.request_keyframe() is False


# ---- status and statistics ------------------------------------------------------------


def test_status_follows_the_media() -> None:
    registry = StreamRegistry(clock=FakeClock())
    stream = registry.reserve("s1")
    seen = [stream.status]
    stream.publish(audio("a1"))
    seen.append(stream.status)
    stream.end()
    stream.end(StreamStatus.FAILED)  # ending twice keeps the first end
    seen.append(stream.status)
    stream.publish(audio("a2"))  # a late frame from the producer is ignored
    stream.set_status(StreamStatus.PLAYING)  # an ended stream stays ended
    seen.append(stream.status)
    assert seen == ["PENDING", "PUBLISHING", "UNPUBLISHED", "UNPUBLISHED"]
    assert stream.track("audio").frames == 1
    assert stream.ended_at == 100.0


def test_bad_status_changes_are_refused() -> None:
    stream = new_stream()
    with pytest.raises(ValueError, match="not PUBLISHING"):
        stream.end(StreamStatus.PUBLISHING)
    with pytest.raises(ValueError, match="use end"):
        stream.set_status(StreamStatus.STOPPED)


def test_snapshot_reports_tracks_and_producer_figures() -> None:
    stream = Stream("s1", call_id="c1", clock=FakeClock(), wall_clock=lambda: 1234.5678)
    stream.publish(MediaFrame("video", "H264", 90000, 0, b"12345", keyframe=True, pts=0.5))
    stream.publish(MediaFrame("video", "H264", 90000, 3000, b"123", pts=0.533))
    track = stream.track("video")
    track.width, track.height = 640, 480
    track.packets_received, track.packets_lost = 10, 1
    track.jitter_ms, track.buffer_delay_ms = 3.5, 80.0
    stream.av_offset = -0.02
    stream.subscribe()
    info = stream.snapshot()
    assert info.media_session_id == stream.media_session_id
    assert (info.name, info.status, info.call_id, info.published) == (
        "s1",
        StreamStatus.PUBLISHING,
        "c1",
        True,
    )
    assert info.created_at == 1_234_568
    assert info.av_offset_ms == pytest.approx(-20.0)
    assert info.subscribers == 1
    assert info.tracks == [
        TrackStats(
            kind="video",
            codec="H264",
            clock_rate=90000,
            channels=None,
            width=640,
            height=480,
            frames=2,
            keyframes=1,
            bytes=8,
            packets_received=10,
            packets_lost=1,
            jitter_ms=3.5,
            buffer_delay_ms=80.0,
        )
    ]
    assert track.last_pts == 0.533
    assert len(stream.media_session_id) == 36


# ---- the registry --------------------------------------------------------------------------


def test_reserve_conflicts_with_a_live_stream_only() -> None:
    registry = StreamRegistry(clock=FakeClock())
    first = registry.reserve("s1", call_id="c1")
    with pytest.raises(Conflict, match="stream name 's1' is in use"):
        registry.reserve("s1")
    first.end()
    second = registry.reserve("s1")
    assert registry.get("s1") is second
    assert registry.find(name="s1") == [first, second]
    with pytest.raises(InvalidRequest, match="must not be empty"):
        registry.reserve("")


def test_find_and_lookups() -> None:
    registry = StreamRegistry(clock=FakeClock())
    a, b = registry.reserve("a"), registry.reserve("b")
    b.publish(audio("x"))
    assert registry.all() == [a, b]
    assert registry.find(status=StreamStatus.PUBLISHING) == [b]
    assert registry.find(name="a", status=StreamStatus.PUBLISHING) == []
    assert registry.find(media_session_id=a.media_session_id) == [a]
    assert registry.by_media_session_id(b.media_session_id) is b
    assert registry.by_media_session_id("nope") is None
    assert registry.get("nope") is None
    assert [info.name for info in registry.all_streams()] == ["a", "b"]
    assert [info.name for info in registry.find_streams(status=StreamStatus.PENDING)] == ["a"]


def test_ended_streams_are_kept_for_the_retention_period() -> None:
    clock = FakeClock()
    registry = StreamRegistry(clock=clock, retention=300.0)
    old, live = registry.reserve("old"), registry.reserve("live")
    old.end()
    clock.now += 299.0
    assert registry.get("old") is old
    assert registry.by_media_session_id(old.media_session_id) is old
    clock.now += 1.0
    assert registry.get("old") is None
    assert registry.by_media_session_id(old.media_session_id) is None
    clock.now += 10_000.0
    assert registry.all() == [live]  # live streams are never forgotten


async def test_terminate_stops_the_stream_and_tells_its_owner() -> None:
    registry = StreamRegistry(clock=FakeClock())
    owner_told: list[Stream] = []
    stream = registry.reserve("s1", call_id="c1", on_terminate=owner_told.append)
    subscription = stream.subscribe()
    stream.publish(audio("a1"))
    assert registry.terminate(name="s1") is stream
    assert stream.status is StreamStatus.STOPPED
    assert owner_told == [stream]
    assert tags([frame async for frame in subscription]) == ["a1"]
    # Again: the final state, the owner is not told twice.
    info = await registry.terminate_stream(media_session_id=stream.media_session_id)
    assert info.status is StreamStatus.STOPPED
    assert owner_told == [stream]


def test_terminate_lookups_and_errors() -> None:
    registry = StreamRegistry(clock=FakeClock())
    stream = registry.reserve("s1")
    with pytest.raises(NotFound, match="no stream named 'x'") as named:
        registry.terminate(name="x")
    assert named.value.field == "name"
    with pytest.raises(NotFound, match="no stream with mediaSessionId 'x'") as by_id:
        registry.terminate(media_session_id="x")
    assert by_id.value.field == "mediaSessionId"
    with pytest.raises(NotFound):  # both given: both must match
        registry.terminate(name="other", media_session_id=stream.media_session_id)
    with pytest.raises(InvalidRequest, match="needs a name or a media_session_id"):
        registry.terminate()
    assert stream.status is StreamStatus.PENDING
    assert registry.terminate(name="s1", media_session_id=stream.media_session_id) is stream


def test_a_failing_owner_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = StreamRegistry(clock=FakeClock())

    def hang_up(stream: Stream) -> None:
        raise RuntimeError("no such call")

    stream = registry.reserve("s1", on_terminate=hang_up)
    with caplog.at_level(logging.ERROR, logger="sipbridge.registry"):
        assert registry.terminate(name="s1") is stream
    assert stream.status is StreamStatus.STOPPED
    assert "stream s1: on_terminate failed" in caplog.text


async def test_remove_forgets_at_once_without_telling_the_owner() -> None:
    registry = StreamRegistry(clock=FakeClock())
    owner_told: list[Stream] = []
    ended = registry.reserve("s1")
    ended.end()
    live = registry.reserve("s1", on_terminate=owner_told.append)
    subscription = live.subscribe()
    assert registry.remove("s1") is live
    assert live.status is StreamStatus.STOPPED
    assert live.subscribers == 0
    with pytest.raises(StreamEnded):
        await subscription.get()
    assert registry.all() == []
    assert owner_told == []
    assert registry.remove("s1") is None


# ---- status listeners -----------------------------------------------------------------


class StatusLog:
    """A status listener that records ``(name, status, status seen on the stream)``."""

    def __init__(self, registry: StreamRegistry | None = None) -> None:
        self.calls: list[tuple[str, StreamStatus, StreamStatus]] = []
        self.registry = registry
        self.found_in_registry: list[bool] = []

    def __call__(self, stream: Stream, status: StreamStatus) -> None:
        self.calls.append((stream.name, status, stream.status))
        if self.registry is not None:
            self.found_in_registry.append(self.registry.get(stream.name) is stream)

    @property
    def statuses(self) -> list[str]:
        return [status.value for _, status, _ in self.calls]


def test_a_listener_hears_each_change_once_not_each_frame() -> None:
    registry = StreamRegistry(clock=FakeClock())
    heard = StatusLog(registry)
    registry.add_status_listener(heard)
    stream = registry.reserve("s1")
    assert heard.statuses == ["PENDING"]
    for n in range(200):
        stream.publish(audio(f"a{n}"))
        stream.publish(video(f"v{n}", key=n % 50 == 0))
    assert heard.statuses == ["PENDING", "PUBLISHING"]
    stream.set_status(StreamStatus.PUBLISHING)  # no change, no call
    stream.end()
    stream.end(StreamStatus.FAILED)  # ending twice keeps the first end
    stream.publish(audio("late"))
    stream.set_status(StreamStatus.PLAYING)  # an ended stream stays ended
    assert heard.statuses == ["PENDING", "PUBLISHING", "UNPUBLISHED"]
    # Told after the change, with the stream already in the registry at PENDING.
    assert all(status is now for _, status, now in heard.calls)
    assert heard.found_in_registry == [True, True, True]


def test_the_first_frame_is_counted_before_publishing_is_heard() -> None:
    registry = StreamRegistry(clock=FakeClock())
    tracks: list[tuple[str, int]] = []

    def on_status(stream: Stream, status: StreamStatus) -> None:
        if status is StreamStatus.PUBLISHING:
            audio_track = stream.tracks["audio"]
            tracks.append((audio_track.codec, audio_track.frames))

    registry.add_status_listener(on_status)
    stream = registry.reserve("s1")
    subscription = stream.subscribe()
    stream.publish(audio("a1"))
    assert tracks == [("opus", 1)]
    assert drain(subscription) == ["a1"]


def test_terminate_and_remove_are_heard() -> None:
    registry = StreamRegistry(clock=FakeClock())
    heard = StatusLog()
    registry.add_status_listener(heard)
    order: list[str] = []
    registry.reserve("s1", on_terminate=lambda s: order.append(f"owner saw {s.status}"))
    registry.add_status_listener(lambda s, status: order.append(f"heard {status}"))
    registry.terminate(name="s1")
    assert order == ["heard STOPPED", "owner saw STOPPED"]
    registry.terminate(name="s1")  # already final: nothing new
    live = registry.reserve("s2")
    live.publish(audio("a1"))
    registry.remove("s2")
    registry.remove("s2")
    assert heard.calls == [
        ("s1", StreamStatus.PENDING, StreamStatus.PENDING),
        ("s1", StreamStatus.STOPPED, StreamStatus.STOPPED),
        ("s2", StreamStatus.PENDING, StreamStatus.PENDING),
        ("s2", StreamStatus.PUBLISHING, StreamStatus.PUBLISHING),
        ("s2", StreamStatus.STOPPED, StreamStatus.STOPPED),
    ]


def test_unsubscribe_stops_the_calls_and_is_idempotent() -> None:
    registry = StreamRegistry(clock=FakeClock())
    kept, dropped = StatusLog(), StatusLog()
    registry.add_status_listener(kept)
    unsubscribe = registry.add_status_listener(dropped)
    stream = registry.reserve("s1")
    unsubscribe()
    unsubscribe()
    stream.publish(audio("a1"))
    stream.end(StreamStatus.FAILED)
    assert kept.statuses == ["PENDING", "PUBLISHING", "FAILED"]
    assert dropped.statuses == ["PENDING"]


def test_a_listener_may_unsubscribe_itself_while_called() -> None:
    registry = StreamRegistry(clock=FakeClock())
    once: list[str] = []
    after = StatusLog()

    def first_only(stream: Stream, status: StreamStatus) -> None:
        once.append(status.value)
        unsubscribe()

    unsubscribe = registry.add_status_listener(first_only)
    registry.add_status_listener(after)
    registry.reserve("s1").publish(audio("a1"))
    assert once == ["PENDING"]
    assert after.statuses == ["PENDING", "PUBLISHING"]  # the one after it was not skipped


def test_a_failing_listener_never_breaks_publishing(caplog: pytest.LogCaptureFixture) -> None:
    registry = StreamRegistry(clock=FakeClock())

    def broken(stream: Stream, status: StreamStatus) -> None:
        raise RuntimeError("listener bug")

    registry.add_status_listener(broken)
    heard = StatusLog()
    registry.add_status_listener(heard)
    with caplog.at_level(logging.ERROR, logger="sipbridge.registry"):
        stream = registry.reserve("s1")
        subscription = stream.subscribe()
        stream.publish(audio("a1"))
        stream.publish(audio("a2"))
        registry.terminate(name="s1")
    assert heard.statuses == ["PENDING", "PUBLISHING", "STOPPED"]
    assert drain(subscription) == ["a1", "a2"]
    assert stream.status is StreamStatus.STOPPED
    failures = [r for r in caplog.records if "status listener" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info is not None for r in failures)
    assert failures[0].getMessage().startswith("stream s1: status listener <function")


def test_a_streams_own_failing_on_status_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(stream: Stream, status: StreamStatus) -> None:
        raise RuntimeError("listener bug")

    stream = Stream("s1", clock=FakeClock(), on_status=broken)
    subscription = stream.subscribe()
    with caplog.at_level(logging.ERROR, logger="sipbridge.registry"):
        stream.publish(audio("a1"))
        stream.end()
    assert drain(subscription) == ["a1"]
    assert stream.status is StreamStatus.UNPUBLISHED
    assert caplog.text.count("stream s1: status listener failed") == 2


# ---- property: what a subscriber receives ---------------------------------------------

operations = st.lists(
    st.sampled_from(["key", "p", "audio", "read1", "read_all"]), min_size=1, max_size=120
)


@given(ops=operations, max_queue=st.integers(1, 6), prefix=st.lists(st.booleans(), max_size=8))
def test_a_subscriber_sees_an_ordered_decodable_subsequence(
    ops: list[str], max_queue: int, prefix: list[bool]
) -> None:
    stream = new_stream()
    published: list[MediaFrame] = []
    for key in prefix:  # some history before the subscriber joins
        frame = video("h", key=key)
        stream.publish(frame)
        published.append(frame)
    subscription = stream.subscribe(max_queue=max_queue)
    primed = len(subscription)  # the cached GOP
    received: list[MediaFrame] = []
    for op in ops:
        if op in ("key", "p", "audio"):
            frame = audio("a") if op == "audio" else video("v", key=op == "key")
            stream.publish(frame)
            published.append(frame)
        elif op == "read1":
            if (got := subscription.get_nowait()) is not None:
                received.append(got)
        else:
            while (got := subscription.get_nowait()) is not None:
                received.append(got)
    while (got := subscription.get_nowait()) is not None:
        received.append(got)
    # Received frames are published ones, in order, each once.
    positions = [next(i for i, f in enumerate(published) if f is r) for r in received]
    assert positions == sorted(set(positions))
    # Video starts on a keyframe, and after any skipped video frame resumes on one.
    video_positions = [p for p in positions if published[p].kind == "video"]
    if video_positions:
        assert published[video_positions[0]].keyframe
    for before, after in itertools.pairwise(video_positions):
        skipped = [f for f in published[before + 1 : after] if f.kind == "video"]
        if skipped:
            assert published[after].keyframe
    # Every live frame was either received or counted as dropped.
    live = len(published) - len(prefix)
    assert subscription.dropped == live - (len(received) - primed)
