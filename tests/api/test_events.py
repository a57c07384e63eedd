"""``GET /events``: the state feed (server-sent events) through the ASGI interface.

Starlette's and httpx's test clients collect a whole response before returning,
which an endless feed never finishes, so :class:`FeedClient` drives the app as
an ASGI server does: it reads the chunks as they are sent and plays the
client's ``http.disconnect`` when the test closes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import Message

from rtmp.pusher import PushStatus
from sipbridge.api.app import create_app
from sipbridge.api.events import KEEPALIVE, EventFeed
from sipbridge.callinfo import CallStatus
from sipbridge.recording import RecordingFileInfo, RecordingStatus
from sipbridge.service import GatewayServer
from tests.api.fakes import FakeGateway, FakePushes, FakeStreams
from tests.api.test_recordings import FakeRecordings, info
from tests.api.test_whep import FakeViewerInfo, FakeViewers

TOKEN = "t0ken-for-events"
WAIT = 5.0  # seconds before a test gives up on a chunk that should come at once


class FeedClient:
    """One ASGI request to ``app``; chunks as they come; :meth:`disconnect` leaves."""

    def __init__(
        self,
        app: Any,
        path: str = "/events",
        query: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sent: asyncio.Queue[Message] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._requested = False
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8081),
        }
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        await self.sent.put(message)

    async def start(self) -> Message:
        message = await asyncio.wait_for(self.sent.get(), WAIT)
        assert message["type"] == "http.response.start"
        return message

    async def chunk(self) -> Message:
        message = await asyncio.wait_for(self.sent.get(), WAIT)
        assert message["type"] == "http.response.body"
        return message

    async def event(self) -> tuple[str, Any]:
        """The next event block that carries data (``retry:`` hints and comments skipped)."""
        while True:
            block = (await self.chunk())["body"].decode()
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if line and ":" in line[1:]
            )
            if "data" in fields:
                return fields.get("event", "message"), json.loads(fields["data"])

    async def disconnect(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
def streams() -> FakeStreams:
    streams = FakeStreams()
    streams.add_stream("stream1", call_id="c1")
    return streams


@pytest.fixture
def pushes() -> FakePushes:
    return FakePushes(streams=("stream1",))


@pytest.fixture
def viewers() -> FakeViewers:
    viewers = FakeViewers()
    viewers.sessions["sess-9"] = FakeViewerInfo(session_id="sess-9", stream_name="stream1")
    return viewers


@pytest.fixture
def recordings() -> FakeRecordings:
    return FakeRecordings()


@pytest.fixture
def app(
    gateway: FakeGateway,
    streams: FakeStreams,
    pushes: FakePushes,
    viewers: FakeViewers,
    recordings: FakeRecordings,
) -> Starlette:
    gateway.add_call("c1", CallStatus.ESTABLISHED, streamName="stream1")
    return create_app(
        gateway, streams=streams, pushes=pushes, viewers=viewers, recordings=recordings
    )


def headers_of(start: Message) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in start["headers"]}


def other_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current}


# ---- the feed --------------------------------------------------------------------------------


async def test_first_state_event_comes_at_once(app: Starlette, pushes: FakePushes) -> None:
    await pushes.start_push("stream1", "rtmp://127.0.0.1/live")
    client = FeedClient(app)
    start = await client.start()
    assert start["status"] == 200
    headers = headers_of(start)
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert "content-length" not in headers
    assert (await client.chunk())["body"] == b"retry: 2000\n\n"
    kind, state = await client.event()
    assert kind == "state"
    assert set(state) == {"calls", "streams", "pushes", "viewers", "recordings", "time"}
    assert [c["callId"] for c in state["calls"]] == ["c1"]
    assert state["calls"][0]["status"] == "ESTABLISHED"
    assert state["streams"][0]["name"] == "stream1"
    assert state["streams"][0]["mediaSessionId"] == "msid-1"
    assert state["pushes"][0]["status"] == PushStatus.PENDING.value
    assert state["pushes"][0]["streamName"] == "stream1"
    assert state["viewers"] == [
        {
            "sessionId": "sess-9",
            "streamName": "stream1",
            "state": "new",
            "createdAt": 1_700_000_000_000,
            "videoCodec": "H264",
            "audioCodec": "opus",
            "videoFramesSent": 0,
            "audioFramesSent": 0,
            "dropped": 0,
            "keyframeRequests": 0,
        }
    ]
    assert state["recordings"] == []
    assert isinstance(state["time"], int) and state["time"] > 1_600_000_000_000
    await client.disconnect()


async def test_state_lists_the_recordings_with_their_files(
    app: Starlette, recordings: FakeRecordings
) -> None:
    finished = RecordingFileInfo(
        file_name="stream1-1700000000000-1700000002000.mkv",
        start_time=1_700_000_000_000,
        end_time=1_700_000_002_000,
        duration=2.0,
        bytes=123_456,
        finished=True,
        error=None,
    )
    recordings.recordings.append(
        info(
            status=RecordingStatus.RECORDING,
            file_name="stream1-1700000002000-partial.mkv",
            files=[finished],
            frames_written=150,
        )
    )
    client = FeedClient(app)
    await client.start()
    _, state = await client.event()
    [recording] = state["recordings"]
    assert recording["recordingId"] == "rec-1"
    assert recording["mediaSessionId"] == "msid-1"
    assert recording["streamName"] == "stream1"
    assert recording["status"] == "RECORDING"
    assert recording["fileName"] == "stream1-1700000002000-partial.mkv"
    assert recording["framesWritten"] == 150
    assert recording["files"] == [
        {
            "fileName": "stream1-1700000000000-1700000002000.mkv",
            "startTime": 1_700_000_000_000,
            "endTime": 1_700_000_002_000,
            "duration": 2.0,
            "bytes": 123_456,
            "finished": True,
            "error": None,
        }
    ]
    # Without a recording manager the list is there and empty.
    assert json.loads(EventFeed(FakeGateway()).state().split(b"data: ", 1)[1])["recordings"] == []
    await client.disconnect()


async def test_feed_ends_when_the_client_goes_away(app: Starlette) -> None:
    before = other_tasks()
    client = FeedClient(app, query="interval=60")
    await client.start()
    kind, _ = await client.event()
    assert kind == "state"
    feed: EventFeed = app.state.events
    assert feed.open_feeds == 1
    await client.disconnect()  # returns only once the app's coroutine has returned
    assert client.task.done() and client.task.exception() is None
    assert feed.open_feeds == 0
    assert client.sent.empty()  # nothing written after the disconnect
    assert other_tasks() - before == set()  # no task left behind


async def test_close_ends_open_feeds_and_later_ones(app: Starlette) -> None:
    feed: EventFeed = app.state.events
    client = FeedClient(app)
    await client.start()
    await client.event()
    feed.close()
    await asyncio.wait_for(client.task, WAIT)
    last = await client.chunk()
    assert last == {"type": "http.response.body", "body": b"", "more_body": False}
    assert feed.open_feeds == 0
    late = FeedClient(app)
    await late.start()
    assert (await late.event())[0] == "state"
    await asyncio.wait_for(late.task, WAIT)
    assert (await late.chunk())["more_body"] is False


async def test_state_then_keepalives_on_a_long_interval(
    gateway: FakeGateway, streams: FakeStreams
) -> None:
    slept: list[float] = []
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await ticks.get()

    feed = EventFeed(gateway, streams=streams, sleep=sleep, clock=lambda: 1234.5)
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        chunks.append(message.get("body", b""))
        if len(chunks) == 7:  # the server's write fails: the client is gone
            raise ConnectionResetError("peer gone")

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never leaves by itself
        raise AssertionError("unreachable")

    runner = asyncio.ensure_future(feed.run(KEEPALIVE * 4, receive, send))
    for _ in range(5):
        await asyncio.sleep(0)
        ticks.put_nowait(None)
    await asyncio.wait_for(runner, WAIT)
    assert chunks[0] == b"retry: 2000\n\n"
    assert chunks[1].startswith(b"event: state\ndata: {")
    assert chunks[2:5] == [b": keepalive\n\n"] * 3
    assert chunks[5].startswith(b"event: state\n")
    assert json.loads(chunks[5].split(b"data: ", 1)[1])["time"] == 1_234_500
    assert slept[:5] == [KEEPALIVE] * 5
    assert feed.open_feeds == 0


async def test_short_interval_sends_a_state_every_tick(
    gateway: FakeGateway,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    feed = EventFeed(gateway, sleep=sleep)
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        chunks.append(message["body"])
        if len(chunks) == 4:
            raise ConnectionResetError

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    await asyncio.wait_for(feed.run(0.5, receive, send), WAIT)
    assert all(c.startswith(b"event: state\n") for c in chunks[1:])
    assert json.loads(chunks[1].split(b"data: ", 1)[1])["calls"] == []
    assert slept == [0.5, 0.5]


async def test_snapshot_bug_ends_the_feed_cleanly(
    app: Starlette, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.fail_with = RuntimeError("boom inside")
    client = FeedClient(app)
    await client.start()
    await client.chunk()  # retry
    last = await client.chunk()
    assert last == {
        "type": "http.response.body",
        "body": b": internal error\n\n",
        "more_body": False,
    }
    await asyncio.wait_for(client.task, WAIT)
    assert "cannot take a snapshot" in caplog.text


# ---- parameters, methods, token --------------------------------------------------------------


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    yield TestClient(app)


@pytest.mark.parametrize("interval", ["abc", "0", "0.1", "301", "nan", "inf", "-1", "1e999"])
def test_bad_interval_is_400(client: TestClient, interval: str) -> None:
    response = client.get("/events", params={"interval": interval})
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "interval"
    assert body["error"].startswith("interval: expected seconds between 0.2 and 300")


def test_head_answers_the_headers_only(client: TestClient) -> None:
    response = client.head("/events")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""


def test_post_is_405(client: TestClient) -> None:
    response = client.post("/events")
    assert response.status_code == 405
    assert response.json() == {"status": 405, "error": "method not allowed"}


async def test_token_is_required(gateway: FakeGateway) -> None:
    app = create_app(gateway, api_token=TOKEN)
    refused = FeedClient(app)
    start = await refused.start()
    assert start["status"] == 401
    assert json.loads((await refused.chunk())["body"])["error"] == "missing bearer token"
    await asyncio.wait_for(refused.task, WAIT)
    wrong = FeedClient(app, headers={"Authorization": "Bearer nope"})
    assert (await wrong.start())["status"] == 403
    await asyncio.wait_for(wrong.task, WAIT)
    allowed = FeedClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    assert (await allowed.start())["status"] == 200
    assert (await allowed.event())[0] == "state"
    await allowed.disconnect()


# ---- behind a real uvicorn on 127.0.0.1 ------------------------------------------------------


async def eventually(condition: Any, what: str) -> None:
    """Poll ``condition()`` until true (a wait for the server's side, not a timing check)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def first_state(lines: AsyncIterator[str]) -> dict[str, Any]:
    kind = None
    async for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "state":
            state: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return state
    raise AssertionError("the feed ended before a state event")


async def test_uvicorn_feed_ends_on_disconnect_and_on_shutdown(app: Starlette) -> None:
    feed: EventFeed = app.state.events
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=60,
    )
    server = GatewayServer(config, on_shutdown=feed.close)
    serving = asyncio.ensure_future(server.serve())
    try:
        await eventually(lambda: server.started, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async with http.stream("GET", "/events") as response:
                assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                state = await first_state(response.aiter_lines())
                assert state["calls"][0]["callId"] == "c1"
                assert feed.open_feeds == 1
            # The client closed its connection: uvicorn says http.disconnect, the feed ends.
            await eventually(lambda: feed.open_feeds == 0, "the feed to see the disconnect")

            async with http.stream("GET", "/events", params={"interval": "300"}) as response:
                lines = response.aiter_lines()
                await first_state(lines)
                server.should_exit = True
                # Without GatewayServer's close() uvicorn would wait out the 60 s grace.
                await asyncio.wait_for(asyncio.shield(serving), 10)
                # The feed ended with the shutdown: what is left is the last block's end.
                assert [line async for line in lines] == [""]
        assert feed.open_feeds == 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
