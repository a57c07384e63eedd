"""sipbridge.pushes: the rtmp_ rule, PushManager with fake pushers, and the gateway wiring."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.pusher import PushConfig, PushStatus
from sipbridge.callinfo import CallRequest, CallStatus
from sipbridge.errors import Conflict, InvalidRequest, NotFound
from sipbridge.gateway import Gateway
from sipbridge.pushes import (
    RTMP_WRITER_ERROR,
    CallPushTarget,
    PushManager,
    StatusCallback,
    call_push_target,
    is_rtmp_url,
    rtmp_target_url,
)
from sipbridge.registry import Stream, StreamRegistry
from sipbridge.settings import RtmpSettings, Settings, SipSettings

URL = "rtmp://127.0.0.1:1935/live"


@dataclass
class FakeStats:
    frames_sent: int = 0
    bytes: int = 0
    reconnects: int = 0
    dropped: int = 0
    connected_at: float | None = None
    first_video_sent_at: float | None = None


class FakePusher:
    """Records what the manager asks; ``report`` plays the pusher's status callback."""

    def __init__(self, stream: Stream, config: PushConfig, on_status: StatusCallback) -> None:
        self.stream = stream
        self.config = config
        self.on_status = on_status
        self.status = PushStatus.PENDING
        self.info: str | None = None
        self.stats = FakeStats()
        self.started = False
        self.stopped = False
        self.muted: list[bool] = []
        self.fail_start: Exception | None = None

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started = True

    async def stop(self) -> None:
        self.stopped = True
        self.status = PushStatus.STOPPED

    @property
    def dropped(self) -> int:
        return self.stats.dropped

    def mute(self, muted: bool) -> None:
        self.muted.append(muted)

    def report(self, status: PushStatus, info: str | None = None) -> None:
        self.status, self.info = status, info
        self.on_status(status, info)


class FakePusherFactory:
    """A ``PusherFactory`` that keeps every pusher it made."""

    def __init__(self) -> None:
        self.made: list[FakePusher] = []
        self.fail_start: Exception | None = None

    def __call__(self, stream: Stream, config: PushConfig, on_status: StatusCallback) -> FakePusher:
        pusher = FakePusher(stream, config, on_status)
        pusher.fail_start = self.fail_start
        self.made.append(pusher)
        return pusher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> StreamRegistry:
    return StreamRegistry(clock=clock, wall_clock=lambda: 1_700_000_000.0)


@pytest.fixture
def factory() -> FakePusherFactory:
    return FakePusherFactory()


@pytest.fixture
def manager(registry: StreamRegistry, factory: FakePusherFactory, clock: Clock) -> PushManager:
    return PushManager(
        registry, pusher_factory=factory, clock=clock, wall_clock=lambda: clock.now + 1e9
    )


# ---- the rtmp_ rule and URL checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "full", "expected", "name"),
    [
        ("rtmp://h/live", False, "rtmp://h/live/rtmp_s1", "rtmp_s1"),
        ("rtmp://h:1935/live/", False, "rtmp://h:1935/live/rtmp_s1", "rtmp_s1"),
        ("rtmps://h:443/app?token=x", False, "rtmps://h:443/app/rtmp_s1?token=x", "rtmp_s1"),
        ("RTMP://h/live", False, "rtmp://h/live/rtmp_s1", "rtmp_s1"),
        ("rtmp://h/live/key", False, "rtmp://h/live/key", None),
        ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh", False, None, None),
        ("rtmp://h/live", True, "rtmp://h/live", None),
        ("rtmp://[::1]:1935/live", False, "rtmp://[::1]:1935/live/rtmp_s1", "rtmp_s1"),
    ],
)
def test_rtmp_target_url(url: str, full: bool, expected: str | None, name: str | None) -> None:
    assert rtmp_target_url(url, "s1", full_url=full) == (expected or url, name)


def test_published_name_is_percent_encoded_and_may_be_replaced() -> None:
    assert rtmp_target_url(URL, "a/b?c") == (URL + "/rtmp_a%2Fb%3Fc", "rtmp_a/b?c")
    assert rtmp_target_url(URL, "s1", published_name="mykey") == (URL + "/mykey", "mykey")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("http://h/live", "expected an rtmp:// or rtmps:// URL, got scheme 'http'"),
        ("h/live", "got scheme ''"),
        ("rtmp:///live", "names no host"),
        ("rtmp://h", "names no RTMP application"),
        ("rtmp://h/", "names no RTMP application"),
        ("rtmp://h:0/live", "port must be 1-65535"),
        ("rtmp://h:70000/live", "not a valid URL"),
        ("rtmp://h:x/live", "not a valid URL"),
        ("rtmp://h/live\n", "spaces or control characters"),
    ],
)
def test_bad_urls_are_invalid_requests(url: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        rtmp_target_url(url, "s1", field="toStream")
    assert fragment in info.value.message
    assert info.value.message.startswith("toStream: ")
    assert info.value.field == "toStream"


@given(st.text(max_size=200), st.text(min_size=1, max_size=50), st.booleans())
def test_target_url_only_raises_invalid_request(url: str, name: str, full: bool) -> None:
    try:
        target, published = rtmp_target_url(url, name, full_url=full)
    except InvalidRequest:
        return
    assert is_rtmp_url(target)
    assert published is None or published == "rtmp_" + name
    assert (published is None) == (target == url)


def test_is_rtmp_url() -> None:
    assert is_rtmp_url("rtmp://h/a") and is_rtmp_url("RTMPS://h/a")
    assert not is_rtmp_url("stream1") and not is_rtmp_url(None) and not is_rtmp_url("rtmpx://")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"to_stream": "s1"}, None),
        ({"rtmp_url": URL}, CallPushTarget(URL, "rtmpUrl")),
        ({"rtmp_url": URL, "rtmp_stream": "key"}, CallPushTarget(URL, "rtmpUrl", "key")),
        ({"rtmp_url": URL, "rtmp_stream": URL + "/x"}, CallPushTarget(URL, "rtmpUrl")),
        ({"rtmp_stream": URL + "/x"}, CallPushTarget(URL + "/x", "rtmpStream")),
        ({"rtmp_stream": "plain"}, None),
        ({"to_stream": URL + "/x"}, CallPushTarget(URL + "/x", "toStream")),
    ],
)
def test_call_push_target(fields: dict[str, Any], expected: CallPushTarget | None) -> None:
    request = CallRequest(call_id="c1", callee="bob", **fields)
    assert call_push_target(request) == expected


# ---- PushManager ---------------------------------------------------------------------------


async def test_start_pushes_a_reserved_stream_with_the_settings(
    registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    settings = RtmpSettings(audio="copy", audio_bitrate=64000, max_retries=-1, still_video=True)
    manager = PushManager(registry, settings, pusher_factory=factory)
    stream = registry.reserve("s1", call_id="c1")
    info = await manager.start_push("s1", URL)
    assert info.status is PushStatus.PENDING
    assert (info.stream_name, info.call_id, info.rtmp_url) == ("s1", "c1", URL)
    assert (info.target_url, info.published_name) == (URL + "/rtmp_s1", "rtmp_s1")
    assert info.stream_media_session_id == stream.media_session_id
    (pusher,) = factory.made
    assert pusher.started and pusher.stream is stream
    assert pusher.config == PushConfig(
        url=URL + "/rtmp_s1",
        audio="copy",
        audio_bitrate=64000,
        still_video=True,
        max_retries=None,
    )


async def test_tls_and_send_buffer_settings_reach_the_pusher(
    registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    settings = RtmpSettings(
        tls_verify=True, tls_ca_file="/etc/sipbridge/ca.pem", send_buffer=65536, rw_timeout=2.5
    )
    manager = PushManager(registry, settings, pusher_factory=factory)
    registry.reserve("s1")
    await manager.start_push("s1", "rtmps://h/live/key")
    (pusher,) = factory.made
    assert pusher.config == PushConfig(
        url="rtmps://h/live/key",
        tls_verify=True,
        tls_ca_file="/etc/sipbridge/ca.pem",
        send_buffer=65536,
        rw_timeout=2.5,
    )
    # "" in the settings: the system CA bundle, chosen when the connection opens.
    default = PushManager(registry, RtmpSettings(tls_verify=True), pusher_factory=factory)
    assert default.config("rtmps://h/live/k2").tls_ca_file is None


async def test_processed_remote_is_reported(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    registry.reserve("s1")
    await manager.start_push("s1", URL)
    pusher = factory.made[0]
    pusher.report(PushStatus.CONNECTED)
    pusher.report(PushStatus.PROCESSED_REMOTE)
    assert manager.find_pushes()[0].status is PushStatus.PROCESSED_REMOTE
    pusher.report(PushStatus.PENDING, "Connection timed out")  # lost, retrying
    found = manager.find_pushes()[0]
    assert (found.status, found.info) == (PushStatus.PENDING, "Connection timed out")


async def test_errors_400_then_404_then_409(manager: PushManager, registry: StreamRegistry) -> None:
    with pytest.raises(InvalidRequest):
        await manager.start_push("ghost", "http://h/live")
    with pytest.raises(NotFound) as missing:
        await manager.start_push("ghost", URL)
    assert missing.value.field == "streamName"
    registry.reserve("s1")
    first = await manager.start_push("s1", URL)
    with pytest.raises(Conflict) as dup:
        await manager.start_push("s1", URL)
    assert first.media_session_id in dup.value.message
    # The same target spelt as a full URL is the same push.
    with pytest.raises(Conflict):
        await manager.start_push("s1", URL + "/rtmp_s1", full_url=True)


async def test_several_pushes_of_one_stream(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    registry.reserve("s1")
    registry.reserve("s2")
    a = await manager.start_push("s1", URL)
    b = await manager.start_push("s1", "rtmp://other/live")
    c = await manager.start_push("s2", URL)
    assert len({a.media_session_id, b.media_session_id, c.media_session_id}) == 3
    assert len(factory.made) == 3
    assert [p.media_session_id for p in manager.find_pushes(stream_name="s1")] == [
        a.media_session_id,
        b.media_session_id,
    ]
    assert [p.stream_name for p in manager.find_pushes(rtmp_url=URL)] == ["s1", "s2"]
    assert [p.stream_name for p in manager.find_pushes(rtmp_url=URL + "/rtmp_s2")] == ["s2"]
    assert len(manager.all_pushes()) == 3


async def test_status_follows_the_pusher_and_failure_says_writer_error(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory, clock: Clock
) -> None:
    registry.reserve("s1")
    info = await manager.start_push("s1", URL)
    pusher = factory.made[0]
    pusher.stats.connected_at = clock.now - 2.0
    pusher.stats.frames_sent = 50
    pusher.report(PushStatus.CONNECTED)
    found = manager.find_pushes()[0]
    assert found.status is PushStatus.CONNECTED
    assert found.frames_sent == 50
    assert found.connected_at == round((clock.now + 1e9 - 2.0) * 1000)
    pusher.report(PushStatus.FAILED)
    failed = manager.find_pushes()[0]
    assert (failed.status, failed.info) == (PushStatus.FAILED, RTMP_WRITER_ERROR)
    pusher.report(PushStatus.CONNECTED)  # a final status is never left
    assert manager.find_pushes()[0].status is PushStatus.FAILED
    # Terminating a failed push answers it as it is.
    assert (await manager.terminate_push(info.media_session_id)).status is PushStatus.FAILED
    # ... and frees the target for a new push.
    assert (await manager.start_push("s1", URL)).status is PushStatus.PENDING


async def test_status_reported_from_a_worker_thread_lands_on_the_loop(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    registry.reserve("s1")
    await manager.start_push("s1", URL)
    worker = threading.Thread(target=factory.made[0].report, args=(PushStatus.CONNECTED,))
    worker.start()
    worker.join()
    await asyncio.sleep(0)
    assert manager.find_pushes()[0].status is PushStatus.CONNECTED


async def test_a_pusher_that_cannot_start_fails_its_push_only(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    registry.reserve("s1")
    factory.fail_start = RuntimeError("no PyAV")
    info = await manager.start_push("s1", URL)
    assert info.status is PushStatus.FAILED
    assert info.info == f"{RTMP_WRITER_ERROR}: no PyAV"


async def test_terminate_mute_unmute(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    registry.reserve("s1")
    info = await manager.start_push("s1", URL)
    msid = info.media_session_id
    assert (await manager.mute_push(msid)).muted is True
    assert (await manager.unmute_push(msid)).muted is False
    assert factory.made[0].muted == [True, False]
    stopped = await manager.terminate_push(msid)
    assert stopped.status is PushStatus.STOPPED and factory.made[0].stopped
    assert (await manager.terminate_push(msid)).status is PushStatus.STOPPED
    with pytest.raises(Conflict):
        await manager.mute_push(msid)
    with pytest.raises(NotFound) as unknown:
        await manager.terminate_push("nope")
    assert unknown.value.field == "mediaSessionId"


async def test_pushes_stop_when_their_stream_ends(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    s1 = registry.reserve("s1")
    registry.reserve("s2")
    await manager.start_push("s1", URL)
    await manager.start_push("s1", "rtmp://other/live")
    await manager.start_push("s2", URL)
    s1.end()
    await manager.stop_stream(s1)
    statuses = [(p.stream_name, p.status) for p in manager.all_pushes()]
    assert statuses == [
        ("s1", PushStatus.STOPPED),
        ("s1", PushStatus.STOPPED),
        ("s2", PushStatus.PENDING),
    ]
    with pytest.raises(NotFound):
        await manager.start_push("s1", URL)


async def test_an_ended_stream_is_noticed_at_the_next_look_up(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    stream = registry.reserve("s1")
    await manager.start_push("s1", URL)
    stream.end()
    manager.all_pushes()  # schedules the stop
    await manager.stop_all()
    assert factory.made[0].stopped
    assert manager.all_pushes()[0].status is PushStatus.STOPPED


async def test_ended_pushes_are_forgotten_after_retention(
    manager: PushManager, registry: StreamRegistry, clock: Clock
) -> None:
    registry.reserve("s1")
    info = await manager.start_push("s1", URL)
    await manager.terminate_push(info.media_session_id)
    clock.now += manager.retention - 1
    assert len(manager.all_pushes()) == 1
    clock.now += 2
    assert manager.all_pushes() == []


async def test_stop_all(
    manager: PushManager, registry: StreamRegistry, factory: FakePusherFactory
) -> None:
    registry.reserve("s1")
    registry.reserve("s2")
    await manager.start_push("s1", URL)
    await manager.start_push("s2", URL)
    await manager.stop_all()
    assert all(p.stopped for p in factory.made)
    assert {p.status for p in manager.all_pushes()} == {PushStatus.STOPPED}


# ---- the gateway: "SIP as RTMP" at /call/startup ------------------------------------------


@pytest.fixture
async def gateway(factory: FakePusherFactory) -> Gateway:
    settings = Settings(sip=SipSettings(host="127.0.0.1", port=0, default_domain="127.0.0.1"))
    gw = Gateway(settings)
    gw.pushes = PushManager(gw.streams, settings.rtmp, pusher_factory=factory)
    await gw.start()
    return gw


def _request(**fields: Any) -> CallRequest:
    # Port 9 (discard): nobody answers; the call stays in progress until stopped.
    return CallRequest(call_id="c1", callee="bob", sip_domain="127.0.0.1", sip_port=9, **fields)


async def test_call_with_rtmp_url_is_pushed_until_it_ends(
    gateway: Gateway, factory: FakePusherFactory
) -> None:
    try:
        info = (await gateway.start_call(_request(rtmp_url=URL, to_stream="s1"))).snapshot()
        assert info.rtmpUrl == URL
        (push,) = gateway.pushes.find_pushes()
        assert (push.stream_name, push.call_id, push.target_url) == ("s1", "c1", URL + "/rtmp_s1")
        assert factory.made[0].stream is gateway.streams.get("s1")
        # The same stream cannot be pushed to the same URL again, but elsewhere it can.
        with pytest.raises(Conflict):
            await gateway.pushes.start_push("s1", URL)
        await gateway.pushes.start_push("s1", "rtmp://other/live")
        # Nobody answers, so end the call the hard way: its task ends as a hang-up does.
        call = gateway.get_call("c1")
        assert call.task is not None
        call.task.cancel()
        await asyncio.wait([call.task], timeout=5)
        assert call.status is CallStatus.FINISH
        assert {p.status for p in gateway.pushes.all_pushes()} == {PushStatus.STOPPED}
        assert all(p.stopped for p in factory.made)
    finally:
        await gateway.stop(timeout=1.0)


async def test_rtmp_url_in_to_stream_pushes_there_under_the_call_id(
    gateway: Gateway, factory: FakePusherFactory
) -> None:
    try:
        info = (await gateway.start_call(_request(to_stream=URL + "/key"))).snapshot()
        assert info.streamName == "c1"
        assert info.rtmpUrl == URL + "/key"
        (push,) = gateway.pushes.find_pushes()
        assert (push.stream_name, push.target_url, push.published_name) == (
            "c1",
            URL + "/key",
            None,
        )
    finally:
        await gateway.stop(timeout=1.0)
    assert gateway.pushes.all_pushes()[0].status is PushStatus.STOPPED


async def test_rtmp_stream_names_the_published_stream(gateway: Gateway) -> None:
    try:
        await gateway.start_call(_request(rtmp_url=URL, rtmp_stream="mykey"))
        (push,) = gateway.pushes.find_pushes()
        assert (push.target_url, push.published_name) == (URL + "/mykey", "mykey")
    finally:
        await gateway.stop(timeout=1.0)


async def test_bad_rtmp_url_is_400_and_reserves_nothing(
    gateway: Gateway, factory: FakePusherFactory
) -> None:
    try:
        with pytest.raises(InvalidRequest) as info:
            await gateway.start_call(_request(rtmp_url="http://h/live", to_stream="s1"))
        assert info.value.field == "rtmpUrl"
        assert gateway.streams.get("s1") is None
        assert gateway.all_calls() == []
        assert factory.made == []
    finally:
        await gateway.stop(timeout=1.0)


async def test_a_failing_push_leaves_the_call_alone(
    gateway: Gateway, factory: FakePusherFactory
) -> None:
    try:
        await gateway.start_call(_request(rtmp_url=URL))
        factory.made[0].report(PushStatus.FAILED)
        await asyncio.sleep(0.05)
        call = gateway.get_call("c1")
        assert not call.is_final
        assert call.status is not CallStatus.FAILED
        assert gateway.pushes.all_pushes()[0].info == RTMP_WRITER_ERROR
    finally:
        await gateway.stop(timeout=1.0)
