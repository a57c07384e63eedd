"""``/stream/startRecording``, ``/stream/stopRecording``, ``/recorder/*`` on a small app.

The routes are mounted on their own Starlette app (the lead wires them into
``create_app``): against a fake manager for the request shapes and errors, and
once against the real :class:`RecordingManager` recording a real clip.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from sipbridge.api.errors import http_exception_handler
from sipbridge.api.recordings import RecordingRoutes, RecordingsAPI
from sipbridge.errors import Conflict, InvalidRequest, NotFound
from sipbridge.recording import RecordingInfo, RecordingManager, RecordingStatus
from sipbridge.registry import StreamRegistry, StreamStatus
from sipbridge.settings import RecordSettings
from tests.rtmp.media import Clip, load_clip, make_clip

START_PATHS = ["/rest-api/stream/startRecording", "/rest-api/recorder/startup"]
STOP_PATHS = ["/rest-api/stream/stopRecording", "/rest-api/recorder/terminate"]
FIND_ALL = "/rest-api/recorder/find_all"


def info(**fields: Any) -> RecordingInfo:
    base: dict[str, Any] = {
        "recording_id": "rec-1", "media_session_id": "msid-1", "stream_name": "stream1",
        "call_id": None, "status": RecordingStatus.PENDING, "info": None, "file_name": None,
        "files": [], "created_at": 1_700_000_000_000, "frames_written": 0, "bytes_written": 0,
        "dropped": 0,
    }  # fmt: skip
    base.update(fields)
    return RecordingInfo(**base)


class FakeRecordings:
    """Structurally a ``RecordingsAPI``: records calls, answers canned infos."""

    def __init__(self) -> None:
        self.started: list[tuple[str | None, str | None, str | None, object]] = []
        self.stopped: list[tuple[str | None, str | None]] = []
        self.recordings: list[RecordingInfo] = []
        self.fail_with: Exception | None = None

    async def start(
        self,
        stream_name: str | None = None,
        media_session_id: str | None = None,
        *,
        file_template: str | None = None,
        rotation: object = None,
    ) -> RecordingInfo:
        if self.fail_with is not None:
            raise self.fail_with
        self.started.append((stream_name, media_session_id, file_template, rotation))
        found = info(stream_name=stream_name or "stream1")
        self.recordings.append(found)
        return found

    async def stop(
        self, stream_name: str | None = None, media_session_id: str | None = None
    ) -> RecordingInfo:
        if self.fail_with is not None:
            raise self.fail_with
        self.stopped.append((stream_name, media_session_id))
        return info(status=RecordingStatus.STOPPED)

    def find_all(self) -> list[RecordingInfo]:
        return list(self.recordings)


def app_for(recordings: RecordingsAPI) -> Starlette:
    return Starlette(
        routes=[Mount("/rest-api", routes=RecordingRoutes(recordings).routes())],
        exception_handlers={HTTPException: http_exception_handler},
    )


@pytest.fixture
def fake() -> FakeRecordings:
    return FakeRecordings()


@pytest.fixture
async def client(fake: FakeRecordings) -> Any:
    transport = httpx.ASGITransport(app=app_for(fake))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def assert_error(response: httpx.Response, status: int, field: str | None, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body.get("field") == field
    assert fragment in body["error"]


@pytest.mark.parametrize("path", START_PATHS)
async def test_start_by_name_with_config(
    client: httpx.AsyncClient, fake: FakeRecordings, path: str
) -> None:
    body = {"name": "stream1", "config": {"fileTemplate": "{streamName}-{startTime}",
                                          "rotation": "20M"}}  # fmt: skip
    response = await client.post(path, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["recordingId"] == "rec-1"
    assert answer["mediaSessionId"] == "msid-1"
    assert answer["status"] == "PENDING"
    assert fake.started == [("stream1", None, "{streamName}-{startTime}", "20M")]


async def test_start_by_media_session_id_and_stream_name_alias(
    client: httpx.AsyncClient, fake: FakeRecordings
) -> None:
    await client.post(START_PATHS[0], json={"mediaSessionId": "msid-1"})
    await client.post(START_PATHS[1], json={"streamName": "s2", "config": {"rotation": 600}})
    assert fake.started == [(None, "msid-1", None, None), ("s2", None, None, 600)]


@pytest.mark.parametrize(
    ("body", "status", "field", "fragment"),
    [
        ({}, 400, "mediaSessionId", "a mediaSessionId or a name is required"),
        ({"name": ""}, 400, "mediaSessionId", "a mediaSessionId or a name is required"),
        ({"name": "a", "streamName": "b"}, 400, "streamName", "name and streamName differ"),
        ({"name": "a", "bogus": 1}, 400, "bogus", "bogus"),
        ({"name": "a", "config": {"template": "x"}}, 400, "config.template", "unknown field"),
        ({"name": "a", "config": {"fileTemplate": 5}}, 400, "config.fileTemplate", "got `int`"),
        ({"name": "a", "config": "x"}, 400, "config", "got `str`"),
        ({"name": 5}, 400, "name", "got `int`"),
    ],
)
async def test_bad_start_bodies(
    client: httpx.AsyncClient,
    fake: FakeRecordings,
    body: dict[str, object],
    status: int,
    field: str,
    fragment: str,
) -> None:
    assert_error(await client.post(START_PATHS[0], json=body), status, field, fragment)
    assert fake.started == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequest("rotation: bad", field="config.rotation"), 400),
        (NotFound("no stream named 'x'", field="name"), 404),
        (Conflict("the recorder is shutting down"), 409),
    ],
)
async def test_manager_errors_are_json(
    client: httpx.AsyncClient, fake: FakeRecordings, error: Exception, status: int
) -> None:
    fake.fail_with = error
    response = await client.post(START_PATHS[0], json={"name": "x"})
    assert response.status_code == status
    assert response.json()["error"] == str(error)


@pytest.mark.parametrize("path", STOP_PATHS)
async def test_stop(client: httpx.AsyncClient, fake: FakeRecordings, path: str) -> None:
    response = await client.post(path, json={"mediaSessionId": "msid-1"})
    assert response.status_code == 200
    assert response.json()["status"] == "STOPPED"
    assert fake.stopped == [(None, "msid-1")]
    assert_error(await client.post(path, json={}), 400, "mediaSessionId", "required")


async def test_find_all(client: httpx.AsyncClient, fake: FakeRecordings) -> None:
    assert_error(await client.post(FIND_ALL, json={}), 404, None, "no recording matched")
    await client.post(START_PATHS[0], json={"name": "stream1"})
    response = await client.post(FIND_ALL)
    assert response.status_code == 200
    [found] = response.json()
    assert {"fileName", "mediaSessionId"} <= found.keys()  # WCS's find_all fields
    assert_error(await client.post(FIND_ALL, json={"x": 1}), 400, "x", "x")
    assert (await client.get(FIND_ALL)).status_code == 405


async def test_against_the_real_manager(tmp_path: Path) -> None:
    clip: Clip = load_clip(make_clip(tmp_path / "clip.mkv", seconds=2.0))
    registry = StreamRegistry()
    manager = RecordingManager(registry, RecordSettings(directory=str(tmp_path / "rec")))
    stream = registry.reserve("stream1")
    transport = httpx.ASGITransport(app=app_for(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        body = {"name": "stream1", "config": {"fileTemplate": "/etc/x"}}
        bad = await http.post(START_PATHS[0], json=body)
        assert_error(bad, 400, "config.fileTemplate", "must be relative")
        assert_error(
            await http.post(START_PATHS[0], json={"name": "nope"}), 404, "name", "no stream named"
        )
        started = await http.post(START_PATHS[0], json={"mediaSessionId": stream.media_session_id})
        assert started.status_code == 200, started.text
        for index, frame in enumerate(clip.frames):
            stream.publish(frame)
            if index % 20 == 0:
                await asyncio.sleep(0)
        stopped = await http.post(STOP_PATHS[1], json={"name": "stream1"})
        assert stopped.status_code == 200
        body = stopped.json()
        assert body["status"] == "STOPPED"
        [file] = body["files"]
        assert (tmp_path / "rec" / file["fileName"]).is_file()
        assert file["duration"] == pytest.approx(clip.seconds, abs=0.1)
        [listed] = (await http.post(FIND_ALL, json={})).json()
        assert listed["fileName"] == file["fileName"]
        assert listed["mediaSessionId"] == stream.media_session_id
    assert stream.status is StreamStatus.PUBLISHING
    await manager.close()
