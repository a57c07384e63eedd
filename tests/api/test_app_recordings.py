"""create_app(recordings=...) mounts the recording methods under /rest-api, token included."""

from __future__ import annotations

import httpx
import pytest

from sipbridge.api.app import create_app
from tests.api.fakes import FakeGateway
from tests.api.test_recordings import FakeRecordings

PATHS = [
    "/rest-api/stream/startRecording",
    "/rest-api/recorder/startup",
    "/rest-api/stream/stopRecording",
    "/rest-api/recorder/terminate",
    "/rest-api/recorder/find_all",
]


def client_for(app: object, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)


async def test_recording_methods_are_mounted() -> None:
    fake = FakeRecordings()
    app = create_app(FakeGateway(), recordings=fake)
    assert app.state.recordings is fake
    async with client_for(app) as http:
        started = await http.post(PATHS[0], json={"name": "stream1", "config": {"rotation": 2}})
        assert started.status_code == 200, started.text
        assert started.json()["streamName"] == "stream1"
        listed = await http.post(PATHS[4], json={})
        assert [r["recordingId"] for r in listed.json()] == ["rec-1"]
        stopped = await http.post(PATHS[2], json={"name": "stream1"})
        assert stopped.json()["status"] == "STOPPED"
    assert fake.started == [("stream1", None, None, 2)]
    assert fake.stopped == [("stream1", None)]


@pytest.mark.parametrize("path", PATHS)
async def test_without_a_manager_the_paths_are_404(path: str) -> None:
    async with client_for(create_app(FakeGateway())) as http:
        assert (await http.post(path, json={"name": "stream1"})).status_code == 404


async def test_the_token_guards_the_recording_methods() -> None:
    app = create_app(FakeGateway(), recordings=FakeRecordings(), api_token="s3cret")
    async with client_for(app) as http:
        assert (await http.post(PATHS[4], json={})).status_code == 401
    async with client_for(app, Authorization="Bearer s3cret") as http:
        assert (await http.post(PATHS[4], json={})).status_code == 404  # none yet: WCS's 404
