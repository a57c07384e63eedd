"""REST hooks against a real HTTP server on 127.0.0.1: delivery, retries, a backend that
never answers (calls and other backends unaffected), bounded queues, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest

from sipbridge.callinfo import CallRequest, CallStatus
from sipbridge.calls import Call
from sipbridge.events import CallStatusEvent, EventBus
from sipbridge.hooks import HookSender, hook_url
from sipbridge.settings import HooksSettings

WAIT = 5.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.body)
        return data


@dataclass
class Backend:
    """A minimal HTTP/1.1 server: answers each request with the next scripted status
    (200 when the script is empty); ``None`` in the script means never answer."""

    script: list[int | None] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hanging: int = 0
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/backend"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(method, path, headers, body))
                self.arrived.set()
                status = self.script.pop(0) if self.script else 200
                if status is None:
                    self.hanging += 1
                    await asyncio.Event().wait()  # never answers; cancelled at close
                    return
                reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(
                    status, "Service Unavailable"
                )
                writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait_requests(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def running(backend: Backend) -> AsyncIterator[Backend]:
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await backend.handle(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    backend.port = server.sockets[0].getsockname()[1]
    try:
        yield backend
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def event(call_id: str, status: CallStatus, app_key: str | None = "app1") -> CallStatusEvent:
    return CallStatusEvent(
        nodeId="node", appKey=app_key, callId=call_id, callee="bob", caller="alice", status=status
    )


class RecordingSleep:
    """Retry delays are recorded, not waited for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_events_are_posted_to_the_backend_of_their_app_key() -> None:
    async with running(Backend()) as backend:
        bus = EventBus(node_id="node")
        sender = HookSender(bus, HooksSettings(apps={"app1": backend.url}))
        await sender.start()
        sent = event("c1", CallStatus.ESTABLISHED)
        bus.publish(sent)
        bus.publish(event("c2", CallStatus.RING, app_key="unknown"))  # no backend: not sent
        await backend.wait_requests(1)
        await sender.stop()
    [request] = backend.received
    assert (request.method, request.path) == ("POST", "/backend/CallStatusEvent")
    assert request.headers["content-type"] == "application/json"
    assert request.body == msgspec.json.encode(sent)
    assert request.json()["callId"] == "c1" and request.json()["status"] == "ESTABLISHED"
    [stats] = sender.stats()
    assert (stats.delivered, stats.failed, stats.retries, stats.dropped) == (1, 0, 0, 0)
    assert sender.unrouted == 1


async def test_a_500_is_retried_with_backoff_then_delivered() -> None:
    sleep = RecordingSleep()
    async with running(Backend(script=[500, 500])) as backend:
        bus = EventBus()
        settings = HooksSettings(
            default_url=backend.url, retries=3, retry_backoff=0.5, retry_backoff_max=0.75
        )
        sender = HookSender(bus, settings, sleep=sleep)
        await sender.start()
        bus.publish(event("c1", CallStatus.FINISH, app_key=None))
        bus.publish(event("c1", CallStatus.NEW, app_key=None))
        await backend.wait_requests(4)
        await sender.stop()
    bodies = [r.json()["status"] for r in backend.received]
    assert bodies == ["FINISH", "FINISH", "FINISH", "NEW"]  # in order, each until delivered
    assert sleep.delays == [0.5, 0.75]  # doubled, capped by retry_backoff_max
    [stats] = sender.stats()
    assert (stats.delivered, stats.failed, stats.retries) == (2, 0, 2)


async def test_a_4xx_is_not_retried_and_too_many_5xx_give_up() -> None:
    async with running(Backend(script=[404, 500, 500])) as backend:
        bus = EventBus()
        settings = HooksSettings(apps={"app1": backend.url}, retries=1, retry_backoff=0.0)
        sender = HookSender(bus, settings)
        await sender.start()
        bus.publish(event("c1", CallStatus.RING))
        bus.publish(event("c1", CallStatus.BUSY))
        bus.publish(event("c1", CallStatus.FINISH))
        await backend.wait_requests(4)
        await sender.stop()
    assert [r.json()["status"] for r in backend.received] == ["RING", "BUSY", "BUSY", "FINISH"]
    [stats] = sender.stats()
    assert (stats.delivered, stats.failed, stats.retries) == (1, 2, 1)


async def test_a_refused_connection_is_retried_then_given_up() -> None:
    async with running(Backend()) as closed:
        url = closed.url
    bus = EventBus()
    sleep = RecordingSleep()
    sender = HookSender(bus, HooksSettings(default_url=url, retries=2), sleep=sleep)
    await sender.start()
    bus.publish(event("c1", CallStatus.NEW, app_key=None))
    async with asyncio.timeout(WAIT):
        while not sender.stats() or sender.stats()[0].failed == 0:
            await asyncio.sleep(0.01)
    await sender.stop()
    assert sleep.delays == [0.5, 1.0]
    assert sender.stats()[0].retries == 2


async def test_a_backend_that_never_answers_slows_no_call_and_no_other_backend() -> None:
    dead = Backend(script=[None, None, None, None])
    async with running(dead), running(Backend()) as alive:
        bus = EventBus(node_id="node")
        settings = HooksSettings(
            apps={"app1": dead.url, "app2": alive.url},
            timeout=0.3,
            retries=1,
            retry_backoff=0.0,
            queue_size=3,
        )
        sender = HookSender(bus, settings)
        await sender.start()
        library = bus.subscribe()
        call = Call(
            CallRequest(call_id="c1", callee="bob", app_key="app1"),
            caller="alice",
            stream_name=None,
            bus=bus,
        )
        established = asyncio.ensure_future(call.established(timeout=WAIT))
        call.set_status(CallStatus.PENDING)
        await dead.wait_requests(1)  # the dead backend holds the first POST...
        for status in (CallStatus.TRYING, CallStatus.RING, CallStatus.ESTABLISHED):
            call.set_status(status)
        # ...while the call's state moves on: its waiter and a library reader see it all.
        info = await asyncio.wait_for(established, WAIT)
        assert info.status is CallStatus.ESTABLISHED
        assert [e.status for e in (library.get_nowait() for _ in range(4)) if e is not None] == [
            CallStatus.PENDING,
            CallStatus.TRYING,
            CallStatus.RING,
            CallStatus.ESTABLISHED,
        ]
        assert dead.hanging == 1 and len(dead.received) == 1
        # Another app's backend is served at once.
        bus.publish(event("c2", CallStatus.ESTABLISHED, app_key="app2"))
        await alive.wait_requests(1)
        assert alive.received[0].json()["callId"] == "c2"
        # The dead backend's queue is bounded: the oldest events went.
        stats = {s.url: s for s in sender.stats()}
        assert stats[dead.url].dropped == 1 and stats[dead.url].queued == 3
        # Each POST ends after `timeout`; one retry, then the next event.
        await dead.wait_requests(3)
        alive_stats = next(s for s in sender.stats() if s.url == alive.url)
        assert (alive_stats.delivered, alive_stats.failed) == (1, 0)
        await sender.stop(drain_timeout=0.0)
    dead_stats = next(s for s in sender.stats() if s.url == dead.url)
    assert dead_stats.failed >= 1 and dead_stats.retries >= 1 and dead_stats.delivered == 0
    assert [r.json()["callId"] for r in dead.received] == ["c1"] * len(dead.received)


async def test_stop_delivers_what_is_queued_and_the_sender_restarts() -> None:
    async with running(Backend()) as backend:
        bus = EventBus()
        sender = HookSender(bus, HooksSettings(default_url=backend.url))
        await sender.start()
        for status in (CallStatus.NEW, CallStatus.PENDING, CallStatus.FINISH):
            bus.publish(event("c1", status, app_key=None))
        await sender.stop(drain_timeout=WAIT)  # nothing awaited in between
        assert [r.json()["status"] for r in backend.received] == ["NEW", "PENDING", "FINISH"]
        assert not sender.running
        await sender.start()
        bus.publish(event("c2", CallStatus.NEW, app_key=None))
        await sender.stop(drain_timeout=WAIT)
    assert backend.received[-1].json()["callId"] == "c2"


async def test_without_backends_nothing_runs() -> None:
    sender = HookSender(EventBus(), HooksSettings())
    await sender.start()
    assert not sender.enabled and not sender.running
    await sender.stop()


def test_hook_url_appends_the_wcs_event_name() -> None:
    assert hook_url("http://h/app/", event("c", CallStatus.NEW)) == "http://h/app/CallStatusEvent"


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(status: int) -> None:
    async with running(Backend(script=[status])) as backend:
        bus = EventBus()
        sender = HookSender(
            bus, HooksSettings(default_url=backend.url, retry_backoff=0.0), sleep=RecordingSleep()
        )
        await sender.start()
        bus.publish(event("c1", CallStatus.NEW, app_key=None))
        await backend.wait_requests(2)
        await sender.stop()
    assert sender.stats()[0].delivered == 1
