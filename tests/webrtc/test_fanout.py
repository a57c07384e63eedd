"""StreamFanout: one subscription, one packet per frame, GOP on join, slow viewers, end."""

from __future__ import annotations

import asyncio

import av
import pytest
from av.stream import Stream as AvStream

from rtp.frame import MediaFrame, MediaKind
from sipbridge.registry import Stream, StreamRegistry
from tests.webrtc.media import Clip
from webrtc.fanout import StreamFanout, StreamFanouts, ViewerFeed
from webrtc.schedule import ViewerSchedule
from webrtc.tracks import PassthroughTrack

CODECS: dict[MediaKind, str] = {"video": "H264", "audio": "PCMU"}


class Viewer:
    """A feed with two tracks; ``read()`` starts a sender-like reader on each."""

    def __init__(self, stream: Stream, *, max_queue: int = 300, delay: float = 0.001) -> None:
        self.tracks = {
            "video": PassthroughTrack("video", 90000),
            "audio": PassthroughTrack("audio", 8000),
        }
        self.requests = 0
        self.feed = ViewerFeed(
            ViewerSchedule(CODECS, delay=delay),
            self.tracks,  # type: ignore[arg-type]
            max_queue=max_queue,
            request_keyframe=self._request,
        )
        self.got: dict[str, list[av.Packet[AvStream]]] = {"video": [], "audio": []}
        self._readers: list[asyncio.Task[None]] = []

    def _request(self) -> None:
        self.requests += 1

    def read(self) -> None:
        for kind, track in self.tracks.items():
            self._readers.append(asyncio.create_task(self._reader(kind, track)))

    async def _reader(self, kind: str, track: PassthroughTrack) -> None:
        while True:
            self.got[kind].append(await track.recv())

    async def stop(self) -> None:
        for track in self.tracks.values():
            track.stop()
        await asyncio.gather(*self._readers, return_exceptions=True)


def live(clip: Clip, count: int, *, skip: int = 0) -> list[MediaFrame]:
    """``count`` frames of the clip from ``skip`` on (it starts with a keyframe)."""
    return clip.frames[skip : skip + count]


async def wait_for(predicate, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@pytest.fixture
def stream() -> Stream:
    return StreamRegistry(keyframe_interval=0.0).reserve("cam")


async def test_one_subscription_and_one_shared_packet_per_frame(stream: Stream, clip: Clip) -> None:
    fanouts = StreamFanouts(queue_frames=300)
    viewers = [Viewer(stream) for _ in range(3)]
    for viewer in viewers:
        fanouts.join(stream, viewer.feed)
        viewer.read()
    assert stream.subscribers == 1 and len(fanouts) == 1
    frames = live(clip, 12)
    for frame in frames:
        stream.publish(frame)
    count = {k: sum(1 for f in frames if f.kind == k) for k in ("video", "audio")}
    assert await wait_for(lambda: all(len(v.got["video"]) == count["video"] for v in viewers))
    assert await wait_for(lambda: all(len(v.got["audio"]) == count["audio"] for v in viewers))
    for kind in ("video", "audio"):
        for index in range(count[kind]):
            shared = {id(v.got[kind][index]) for v in viewers}
            assert len(shared) == 1, "every viewer sent the same av.Packet"
    assert [bytes(p) for p in viewers[0].got["video"]] == [
        f.payload for f in frames if f.kind == "video"
    ]
    for viewer in viewers:
        viewer.feed.leave()
        await viewer.stop()
    assert stream.subscribers == 0 and len(fanouts) == 0
    await fanouts.close()


async def test_a_joining_viewer_starts_on_the_cached_gop(stream: Stream, clip: Clip) -> None:
    fanouts = StreamFanouts(queue_frames=300)
    first = Viewer(stream)
    fanouts.join(stream, first.feed)
    first.read()
    frames = live(clip, 20)
    for frame in frames[:10]:
        stream.publish(frame)
    late = Viewer(stream)
    fanouts.join(stream, late.feed)  # joins on the GOP: the keyframe and all since
    late.read()
    for frame in frames[10:]:
        stream.publish(frame)
    video = [f.payload for f in frames if f.kind == "video"]
    assert await wait_for(lambda: len(late.got["video"]) == len(video))
    assert [bytes(p) for p in late.got["video"]] == video  # no gap, no duplicate
    assert await wait_for(lambda: len(first.got["video"]) == len(video))
    assert late.requests == 0
    for viewer in (first, late):
        viewer.feed.leave()
        await viewer.stop()
    await fanouts.close()


async def test_without_a_cached_gop_the_stream_is_asked_for_a_keyframe(clip: Clip) -> None:
    stream = StreamRegistry(keyframe_interval=0.0).reserve("cam")
    asked: list[int] = []
    stream.set_keyframe_requester(lambda: asked.append(1))
    stream.publish(clip.audio[0])
    stream.publish(next(f for f in clip.video if not f.keyframe))  # declares video, no GOP
    fanout = StreamFanout(stream, queue_frames=50)
    viewer = Viewer(stream)
    before = len(asked)
    fanout.join(viewer.feed)
    assert len(asked) > before
    viewer.feed.leave()
    assert fanout.closed
    await fanout.wait_closed()
    await viewer.stop()


async def test_a_viewer_that_stops_reading_loses_frames_not_the_others(
    stream: Stream, clip: Clip
) -> None:
    fanouts = StreamFanouts(queue_frames=300)
    slow, fast = Viewer(stream, max_queue=8), Viewer(stream)
    fanouts.join(stream, slow.feed)
    fanouts.join(stream, fast.feed)
    fast.read()  # the slow viewer's tracks are never read
    frames = live(clip, 60)
    for frame in frames:
        stream.publish(frame)
    assert await wait_for(lambda: len(fast.got["video"]) == sum(f.kind == "video" for f in frames))
    assert fast.feed.dropped == 0
    assert len(slow.feed) == 8
    assert slow.feed.dropped == len(frames) - 8
    assert slow.feed.schedule.overflowed == len(frames) - 8
    assert slow.requests >= 1  # it lost video: a keyframe was asked for
    for viewer in (slow, fast):
        viewer.feed.leave()
        await viewer.stop()
    await fanouts.close()


async def test_stream_end_reaches_every_viewer_and_the_last_to_leave_closes(
    stream: Stream, clip: Clip
) -> None:
    fanouts = StreamFanouts(queue_frames=300)
    viewers = [Viewer(stream) for _ in range(2)]
    for viewer in viewers:
        fanouts.join(stream, viewer.feed)
    fanout = fanouts.get(stream)
    assert fanout is not None
    stream.publish(clip.frames[0])
    stream.end()
    ends = await asyncio.wait_for(asyncio.gather(*(v.feed.ended for v in viewers)), 2.0)
    assert ends == ["closed", "closed"]
    assert not fanout.closed  # the viewers may still play out what they hold
    viewers[0].feed.leave()
    assert not fanout.closed
    viewers[1].feed.leave()
    assert fanout.closed and len(fanouts) == 0
    await fanout.wait_closed()
    for viewer in viewers:
        await viewer.stop()


async def test_many_viewers_are_woken_in_slices(stream: Stream, clip: Clip) -> None:
    fanouts = StreamFanouts(queue_frames=300, slice_packets=4)
    viewers = [Viewer(stream) for _ in range(20)]
    for viewer in viewers:
        fanouts.join(stream, viewer.feed)
        viewer.read()
    for frame in live(clip, 6):
        stream.publish(frame)
    assert await wait_for(
        lambda: all(len(v.got["audio"]) + len(v.got["video"]) == 6 for v in viewers)
    )
    fanout = fanouts.get(stream)
    assert fanout is not None and fanout.timer.slices > 0
    for viewer in viewers:
        viewer.feed.leave()
        await viewer.stop()
    await fanouts.close()
