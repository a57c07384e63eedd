"""The typed events and their bus; a call's awaitable state; the gateway's events; SSE relay."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import msgspec
import pytest
from starlette.types import Message

from rtp.frame import MediaFrame
from sipbridge.api.events import EventFeed
from sipbridge.callinfo import CallRequest, CallStatus
from sipbridge.calls import Call, CallNotEstablished
from sipbridge.events import (
    CallStatusEvent,
    Event,
    EventBus,
    EventBusClosed,
    EventSubscription,
    StreamStatusEvent,
    call_status_event,
    stream_status_event,
)
from sipbridge.gateway import Gateway
from sipbridge.registry import StreamRegistry, StreamStatus
from sipbridge.settings import HooksSettings, Settings, SipSettings, settings_from_dict
from tests.api.fakes import FakeGateway

WAIT = 5.0


def request(call_id: str = "c1", port: int = 5060, **fields: object) -> CallRequest:
    return CallRequest(
        call_id=call_id,
        callee="bob",
        to_stream=f"stream-{call_id}",
        sip_login="alice",
        sip_domain="127.0.0.1",
        sip_port=port,
        app_key="app1",
        **fields,  # type: ignore[arg-type]
    )


def event(call_id: str = "c1", status: CallStatus = CallStatus.NEW) -> CallStatusEvent:
    return CallStatusEvent(
        nodeId="n", appKey="app1", callId=call_id, callee="bob", caller="alice", status=status
    )


# --------------------------------------------------------------------------- the bus


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus(node_id="node")
    first, second = bus.subscribe(), bus.subscribe()
    sent = [event(status=s) for s in (CallStatus.NEW, CallStatus.PENDING, CallStatus.TRYING)]
    for item in sent:
        bus.publish(item)
    bus.close()
    assert [e async for e in first] == sent
    assert [e async for e in second] == sent
    assert bus.published == 3 and bus.subscribers == 0


async def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    bus = EventBus()
    slow = bus.subscribe(max_queue=3)
    for status in (CallStatus.NEW, CallStatus.PENDING, CallStatus.TRYING, CallStatus.RING):
        bus.publish(event(status=status))
    bus.publish(event(status=CallStatus.ESTABLISHED))
    assert slow.dropped == 2
    got = [slow.get_nowait() for _ in range(3)]
    assert [e.status for e in got if e is not None] == [
        CallStatus.TRYING,
        CallStatus.RING,
        CallStatus.ESTABLISHED,
    ]
    assert slow.get_nowait() is None


async def test_a_waiting_reader_is_woken_and_close_ends_it() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    reader = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)
    bus.publish(event(status=CallStatus.RING))
    assert (await asyncio.wait_for(reader, WAIT)).status is CallStatus.RING
    waiting = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)
    subscription.close()
    with pytest.raises(EventBusClosed, match=r"^the event subscription is closed$"):
        await asyncio.wait_for(waiting, WAIT)
    assert bus.subscribers == 0


async def test_call_filter_stop_when_initial_and_a_closed_bus() -> None:
    bus = EventBus()
    only_c1 = bus.subscribe(
        call_id="c1",
        stop_when=lambda e: e.status is CallStatus.FINISH,
        initial=[event("c1", CallStatus.NEW)],
    )
    bus.publish(event("c2", CallStatus.PENDING))
    bus.publish(event("c1", CallStatus.FINISH))
    bus.publish(event("c1", CallStatus.NEW))  # after its stop: not for it
    assert [(e.callId, e.status) async for e in only_c1] == [
        ("c1", CallStatus.NEW),
        ("c1", CallStatus.FINISH),
    ]
    bus.close()
    late = bus.subscribe(initial=[event("c3")])
    assert [e.callId async for e in late] == ["c3"]
    bus.open()
    reopened = bus.subscribe()
    bus.publish(event("c4"))
    assert reopened.get_nowait() == event("c4")


async def test_a_reader_on_another_loop_is_woken() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    result: list[Event] = []

    def other_loop() -> None:
        async def read() -> None:
            result.append(await asyncio.wait_for(subscription.get(), WAIT))

        asyncio.run(read())

    thread = asyncio.get_running_loop().run_in_executor(None, other_loop)
    while subscription._waiter is None:
        await asyncio.sleep(0.001)
    bus.publish(event(status=CallStatus.RING))
    await asyncio.wait_for(thread, WAIT)
    assert [e.status for e in result] == [CallStatus.RING]


def test_events_encode_with_wcs_field_names() -> None:
    registry = StreamRegistry(wall_clock=lambda: 1000.0)
    stream = registry.reserve("s1", call_id="c1")
    stream.track("video").codec = "H264"
    stream.track("video").width, stream.track("video").height = 640, 360
    data = msgspec.json.decode(
        msgspec.json.encode(stream_status_event(stream, node_id="node", app_key="app1", now=1001.5))
    )
    assert data == {
        "nodeId": "node",
        "appKey": "app1",
        "mediaSessionId": stream.media_session_id,
        "name": "s1",
        "status": "PENDING",
        "published": False,
        "callId": "c1",
        "hasAudio": False,
        "hasVideo": True,
        "audioCodec": "",
        "videoCodec": "H264",
        "width": 640,
        "height": 360,
        "info": None,
        "createDate": 1_000_000,
        "mediaType": "publish",
        "mediaProvider": "SIP",
        "timestamp": 1_001_500,
    }
    call = Call(request(), caller="alice@127.0.0.1", stream_name="stream-c1")
    info = call_status_event(call.snapshot(), node_id="node", now=2.0)
    encoded = msgspec.json.decode(msgspec.json.encode(info))
    assert encoded["callId"] == "c1" and encoded["status"] == "NEW"
    assert encoded["timestamp"] == 2000 and "hook_method" not in encoded
    assert "sipPassword" not in encoded and "password" not in json.dumps(encoded)
    assert info.hook_method == "CallStatusEvent"


# --------------------------------------------------------------------------- Call


async def test_established_returns_the_call_when_answered() -> None:
    bus = EventBus(node_id="n")
    call = Call(request(), caller="alice@127.0.0.1", stream_name="stream-c1", bus=bus)
    waiter = asyncio.ensure_future(call.established(timeout=WAIT))
    await asyncio.sleep(0)
    call.set_status(CallStatus.RING, 180)
    call.set_status(CallStatus.ESTABLISHED, 200)
    call.set_status(CallStatus.HOLD)  # before the waiter even runs
    info = await waiter
    assert (info.callId, info.sipStatus) == ("c1", 200)


async def test_established_raises_a_clear_error_when_the_call_fails_first() -> None:
    call = Call(request(), caller="alice@127.0.0.1", stream_name=None, bus=EventBus())
    waiter = asyncio.ensure_future(call.established(timeout=WAIT))
    await asyncio.sleep(0)
    call.set_status(CallStatus.RING, 180)
    call.set_status(CallStatus.BUSY, 486, "Busy here")
    with pytest.raises(CallNotEstablished) as caught:
        await waiter
    assert str(caught.value) == (
        "call 'c1' to 'bob' ended BUSY 486 (Busy here) before it was established"
    )
    assert caught.value.info.status is CallStatus.BUSY
    # Already over: raised at once, as often as asked.
    with pytest.raises(CallNotEstablished):
        await call.established(timeout=0.1)
    with pytest.raises(TimeoutError):
        await Call(request("c2"), caller="a", stream_name=None).established(timeout=0.01)


async def test_call_events_follow_the_call_and_its_stream_to_their_end() -> None:
    bus = EventBus(node_id="n")
    registry = StreamRegistry()
    stream = registry.reserve("stream-c1", call_id="c1")
    call = Call(request(), caller="alice@127.0.0.1", stream_name=stream.name, bus=bus)
    call.stream = stream
    mine = call.events()
    call.set_status(CallStatus.PENDING)
    call.set_status(CallStatus.FINISH, None, "Normal call clearing")
    stream.end()
    bus.publish(stream_status_event(stream, node_id="n", app_key="app1"))
    bus.publish(event("c1", CallStatus.NEW))  # after the end: not delivered
    got = [(type(e).__name__, e.status) async for e in mine]
    assert got == [
        ("CallStatusEvent", CallStatus.NEW),
        ("StreamStatusEvent", StreamStatus.PENDING),
        ("CallStatusEvent", CallStatus.PENDING),
        ("CallStatusEvent", CallStatus.FINISH),
        ("StreamStatusEvent", StreamStatus.UNPUBLISHED),
    ]
    with pytest.raises(RuntimeError, match="has no event bus"):
        Call(request("c9"), caller="a", stream_name=None).events()


# --------------------------------------------------------------------------- the gateway


def queued(subscription: EventSubscription) -> list[Event]:
    """What the subscription holds right now, without awaiting."""
    events = []
    while (item := subscription.get_nowait()) is not None:
        events.append(item)
    return events


@pytest.fixture
def silent_callee() -> Iterator[int]:
    """A UDP port that takes SIP requests and never answers (the call stays in TRYING)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_gateway_publishes_call_and_stream_events(silent_callee: int) -> None:
    gw = Gateway(Settings(sip=SipSettings(host="127.0.0.1", port=0)))
    async with gw:
        everything = gw.events()
        call = gw.place_call(request("g1", silent_callee))
        assert call.stream is not None
        await call.wait_for({CallStatus.PENDING}, timeout=WAIT)
        before = queued(everything)
        # The call's NEW comes first, then its stream's PENDING with the call's appKey.
        assert [(type(e).__name__, e.status) for e in before[:2]] == [
            ("CallStatusEvent", CallStatus.NEW),
            ("StreamStatusEvent", StreamStatus.PENDING),
        ]
        assert before[1].appKey == "app1"
        # The media path's first frame: PUBLISHING is queued by publish() itself, in the
        # same loop iteration (no await in between), and once: not per frame.
        call.stream.publish(MediaFrame("audio", "PCMU", 8000, 0, b"\xff" * 160))
        item = everything.get_nowait()
        assert isinstance(item, StreamStatusEvent) and item.published
        for pts in range(1, 50):
            call.stream.publish(MediaFrame("audio", "PCMU", 8000, pts, b"\xff" * 160))
        assert everything.get_nowait() is None
        assert item.name == "stream-g1" and item.appKey == "app1" and item.hasAudio
        assert item.audioCodec == "PCMU" and item.callId == "g1" and item.info is None
        # The callee never answers: stop() CANCELs, waits briefly, then ends the call.
        await gw.stop(timeout=0.2)
    assert call.status is CallStatus.FINISH
    rest = [e async for e in everything]
    calls = [e.status for e in rest if isinstance(e, CallStatusEvent)]
    assert calls[-1] is CallStatus.FINISH
    streams = [e.status for e in rest if isinstance(e, StreamStatusEvent)]
    assert streams == [StreamStatus.UNPUBLISHED]
    assert gw.event_bus.closed


async def test_terminating_a_calls_stream_is_heard_before_the_call_ends(
    silent_callee: int,
) -> None:
    async with Gateway(Settings(sip=SipSettings(host="127.0.0.1", port=0))) as gw:
        call = gw.place_call(request("t1", silent_callee))
        await call.wait_for({CallStatus.PENDING}, timeout=WAIT)
        everything = gw.events()
        stopped = gw.streams.terminate(name="stream-t1")
        # Synchronously from terminate(), before the call hears of it.
        item = everything.get_nowait()
        assert everything.get_nowait() is None
        assert isinstance(item, StreamStatusEvent)
        assert (item.status, item.appKey, item.mediaSessionId) == (
            StreamStatus.STOPPED,
            "app1",
            stopped.media_session_id,
        )
        # The callee never answers the CANCEL: stop() ends the call.
        await gw.stop(timeout=0.2)
    assert call.status is CallStatus.FINISH
    rest = [(type(e).__name__, e.status) async for e in everything]
    # The call's end does not repeat the stream's final status.
    assert [s for kind, s in rest if kind == "StreamStatusEvent"] == []
    assert rest[-1] == ("CallStatusEvent", CallStatus.FINISH)


async def test_a_failed_calls_stream_fails_with_the_calls_info(silent_callee: int) -> None:
    gw = Gateway(Settings(sip=SipSettings(host="127.0.0.1", port=0)))
    gw.register_timeout = 0.05  # the registrar never answers
    async with gw:
        mine = gw.events(call_id="f1")
        call = gw.place_call(request("f1", silent_callee, sip_register_required=True))
        assert await call.ended(timeout=WAIT) is CallStatus.FAILED
        events = [(type(e).__name__, e) async for e in call.events()]
    streams = [e for kind, e in events if kind == "StreamStatusEvent"]
    assert [e.status for e in streams] == [StreamStatus.FAILED]  # its current status
    seen = queued(mine)
    kinds = [(type(e).__name__, e.status) for e in seen]
    assert kinds[:2] == [
        ("CallStatusEvent", CallStatus.NEW),
        ("StreamStatusEvent", StreamStatus.PENDING),
    ]
    # The call fails first, then its stream, carrying the call's reason.
    assert kinds[-2:] == [
        ("CallStatusEvent", CallStatus.FAILED),
        ("StreamStatusEvent", StreamStatus.FAILED),
    ]
    failed = seen[-1]
    assert isinstance(failed, StreamStatusEvent)
    assert failed.info == call.info and failed.info and failed.appKey == "app1"
    assert [s for kind, s in kinds if kind == "StreamStatusEvent"] == ["PENDING", "FAILED"]


async def test_streams_of_the_registry_not_placed_by_a_call_are_heard_too() -> None:
    async with Gateway(Settings(sip=SipSettings(host="127.0.0.1", port=0))) as gw:
        everything = gw.events()
        side = gw.streams.reserve("side")
        side.publish(MediaFrame("audio", "PCMU", 8000, 0, b"\xff" * 160))
        gw.streams.remove("side")
        got = queued(everything)
        assert [(e.name, e.status, e.appKey) for e in got if isinstance(e, StreamStatusEvent)] == [
            ("side", StreamStatus.PENDING, None),
            ("side", StreamStatus.PUBLISHING, None),
            ("side", StreamStatus.STOPPED, None),
        ]
    # Stopped: the gateway no longer listens (and its bus is closed).
    gw.streams.reserve("after")
    assert [e async for e in everything] == []
    assert gw.streams._status_listeners == []


async def test_place_call_takes_the_startup_fields_as_keywords(silent_callee: int) -> None:
    async with Gateway(Settings(sip=SipSettings(host="127.0.0.1", port=0))) as gw:
        call = gw.place_call(callee="bob", sip_domain="127.0.0.1", sip_port=silent_callee)
        assert len(call.call_id) == 36  # a UUID
        assert call.stream_name == call.call_id
        with pytest.raises(Exception, match="bad call field"):
            gw.place_call(callee="bob", sip_domian="x")
        with pytest.raises(Exception, match="not both"):
            gw.place_call(request("k2", silent_callee), callee="bob")


# --------------------------------------------------------------------------- /events (SSE)


async def test_event_feed_relays_bus_events_between_states() -> None:
    bus = EventBus(node_id="n")
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        await ticks.get()

    feed = EventFeed(FakeGateway(), bus=bus, sleep=sleep)
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def send(message: Message) -> None:
        await chunks.put(message.get("body", b""))

    gone = asyncio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    runner = asyncio.ensure_future(feed.run(1.0, receive, send))
    assert await asyncio.wait_for(chunks.get(), WAIT) == b"retry: 2000\n\n"
    assert (await asyncio.wait_for(chunks.get(), WAIT)).startswith(b"event: state\n")
    bus.publish(event("c1", CallStatus.RING))
    chunk = await asyncio.wait_for(chunks.get(), WAIT)
    head, data = chunk.split(b"\ndata: ")
    assert head == b"event: callStatus"
    assert json.loads(data)["status"] == "RING" and data.endswith(b"\n\n")
    registry = StreamRegistry()
    bus.publish(stream_status_event(registry.reserve("s"), node_id="n", app_key=None))
    assert (await asyncio.wait_for(chunks.get(), WAIT)).startswith(b"event: streamStatus\n")
    ticks.put_nowait(None)  # the periodic state goes on
    assert (await asyncio.wait_for(chunks.get(), WAIT)).startswith(b"event: state\n")
    assert bus.subscribers == 1
    gone.set()
    await asyncio.wait_for(runner, WAIT)
    assert bus.subscribers == 0 and feed.open_feeds == 0


def test_event_feed_finds_the_gateways_bus() -> None:
    gw = Gateway(Settings(sip=SipSettings(host="127.0.0.1", port=0)))
    assert EventFeed(gw)._bus is gw.event_bus
    assert EventFeed(FakeGateway())._bus is None


# --------------------------------------------------------------------------- settings


def test_hooks_settings() -> None:
    hooks = settings_from_dict(
        {"hooks": {"apps": {"app1": "http://127.0.0.1:9/a"}, "default_url": ""}}
    ).hooks
    assert hooks.url_for("app1") == "http://127.0.0.1:9/a"
    assert hooks.url_for("other") is None and hooks.url_for(None) is None
    assert HooksSettings(default_url="https://b").url_for("other") == "https://b"
    with pytest.raises(ValueError, match=r"hooks\.apps: app1: must be an http:// or https:// URL"):
        settings_from_dict({"hooks": {"apps": {"app1": "ftp://x"}}})
    with pytest.raises(ValueError, match=r"hooks\.retry_backoff_max: must be >= retry_backoff"):
        settings_from_dict({"hooks": {"retry_backoff": 5.0, "retry_backoff_max": 1.0}})
