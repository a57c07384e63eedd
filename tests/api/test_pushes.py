"""``/rest-api/push/*`` against a fake push manager, and once against the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from rtmp.pusher import PushStatus
from sipbridge.api.app import create_app
from sipbridge.errors import InvalidRequest
from sipbridge.pushes import PushManager
from sipbridge.registry import StreamRegistry
from tests.api.conftest import ResponseAudit
from tests.api.fakes import FakeGateway, FakePushes
from tests.test_pushes import FakePusher, FakePusherFactory

STARTUP = "/rest-api/push/startup"
FIND = "/rest-api/push/find"
FIND_ALL = "/rest-api/push/find_all"
TERMINATE = "/rest-api/push/terminate"
MUTE = "/rest-api/push/mute"
UNMUTE = "/rest-api/push/unmute"
PATHS = [STARTUP, FIND, FIND_ALL, TERMINATE, MUTE, UNMUTE]
URL = "rtmp://127.0.0.1:1935/live"


@pytest.fixture
def pushes() -> FakePushes:
    return FakePushes(streams=("stream1", "stream2"))


@pytest.fixture
def client(gateway: FakeGateway, pushes: FakePushes, audit: ResponseAudit) -> TestClient:
    return audit.attach(TestClient(create_app(gateway, pushes=pushes)))


def assert_error(response: Any, status: int, field: str | None, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body.get("field") == field
    for fragment in fragments:
        assert fragment in body["error"]


# ---- startup -----------------------------------------------------------------------------


def test_startup_answers_the_push_with_the_rtmp_name(
    client: TestClient, pushes: FakePushes
) -> None:
    response = client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["mediaSessionId"] == "push-1"
    assert body["streamName"] == "stream1"
    assert body["rtmpUrl"] == URL
    assert body["targetUrl"] == URL + "/rtmp_stream1"
    assert body["publishedName"] == "rtmp_stream1"
    assert body["status"] == "PENDING"
    assert body["rtmpTransponderFullUrl"] is False
    assert pushes.started == [("stream1", URL, False)]


@pytest.mark.parametrize("flag", [True, "true", "1", "TRUE"])
def test_startup_full_url_flag_accepts_wcs_booleans(
    client: TestClient, pushes: FakePushes, flag: object
) -> None:
    body = {"streamName": "stream1", "rtmpUrl": URL, "rtmpTransponderFullUrl": flag}
    response = client.post(STARTUP, json=body)
    assert response.status_code == 200
    assert response.json()["targetUrl"] == URL
    assert response.json()["publishedName"] is None
    assert pushes.started == [("stream1", URL, True)]


def test_startup_url_naming_a_stream_is_used_as_is(client: TestClient) -> None:
    response = client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL + "/key"})
    assert response.status_code == 200
    assert response.json()["targetUrl"] == URL + "/key"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"streamName": "stream1"}, "rtmpUrl: required field is missing"),
        ({"streamName": "stream1", "rtmpUrl": ""}, "rtmpUrl: required field is missing"),
        ({"streamName": "stream1", "rtmpUrl": "http://h/live"}, "expected an rtmp:// or rtmps://"),
        ({"streamName": "stream1", "rtmpUrl": "rtmp:///live"}, "names no host"),
        ({"streamName": "stream1", "rtmpUrl": "rtmp://h"}, "names no RTMP application"),
        ({"streamName": "stream1", "rtmpUrl": "rtmp://h:99999/live"}, "not a valid URL"),
        ({"streamName": "stream1", "rtmpUrl": "rtmp://h/li ve"}, "spaces or control"),
        ({"streamName": "stream1", "rtmpUrl": 5}, "got `int`"),
    ],
)
def test_startup_bad_or_missing_url_is_400(
    client: TestClient, pushes: FakePushes, body: dict[str, object], fragment: str
) -> None:
    assert_error(client.post(STARTUP, json=body), 400, "rtmpUrl", fragment)
    assert pushes.started == []


def test_startup_bad_url_is_400_even_for_an_unknown_stream(client: TestClient) -> None:
    body = {"streamName": "nope", "rtmpUrl": "ftp://h/live"}
    assert_error(client.post(STARTUP, json=body), 400, "rtmpUrl")


def test_startup_missing_stream_name_is_400(client: TestClient) -> None:
    assert_error(
        client.post(STARTUP, json={"rtmpUrl": URL}),
        400,
        "streamName",
        "streamName: required field is missing",
    )


def test_startup_bad_flag_is_400(client: TestClient) -> None:
    body = {"streamName": "stream1", "rtmpUrl": URL, "rtmpTransponderFullUrl": "maybe"}
    assert_error(client.post(STARTUP, json=body), 400, "rtmpTransponderFullUrl", "boolean")


def test_startup_unknown_field_is_400(client: TestClient) -> None:
    body = {"streamName": "stream1", "rtmpUrl": URL, "rtmpUlr": URL}
    assert_error(client.post(STARTUP, json=body), 400, "rtmpUlr", "unknown field")


def test_startup_unknown_stream_is_404(client: TestClient) -> None:
    body = {"streamName": "ghost", "rtmpUrl": URL}
    assert_error(client.post(STARTUP, json=body), 404, "streamName", "ghost")


def test_startup_same_stream_and_url_twice_is_409(client: TestClient) -> None:
    body = {"streamName": "stream1", "rtmpUrl": URL}
    assert client.post(STARTUP, json=body).status_code == 200
    assert_error(client.post(STARTUP, json=body), 409, "rtmpUrl")


def test_startup_same_stream_to_two_urls_and_two_streams_to_one_url(client: TestClient) -> None:
    assert client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL}).status_code == 200
    second = {"streamName": "stream1", "rtmpUrl": "rtmp://127.0.0.1:1936/live"}
    assert client.post(STARTUP, json=second).status_code == 200
    other = {"streamName": "stream2", "rtmpUrl": URL}
    assert client.post(STARTUP, json=other).status_code == 200
    assert len(client.post(FIND_ALL, json={}).json()) == 3


# ---- find / find_all -----------------------------------------------------------------------


def test_find_all_is_404_when_there_is_no_push(client: TestClient) -> None:
    assert_error(client.post(FIND_ALL, json={}), 404, None, "no push matched")
    assert_error(client.post(FIND_ALL, content=b""), 404, None)


def test_find_filters_by_stream_and_url(client: TestClient, pushes: FakePushes) -> None:
    client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL})
    client.post(STARTUP, json={"streamName": "stream2", "rtmpUrl": URL})
    found = client.post(FIND, json={"streamName": "stream2"}).json()
    assert [p["streamName"] for p in found] == ["stream2"]
    by_target = client.post(FIND, json={"rtmpUrl": URL + "/rtmp_stream1"}).json()
    assert [p["mediaSessionId"] for p in by_target] == ["push-1"]
    both = client.post(FIND, json={"streamName": "stream1", "rtmpUrl": URL}).json()
    assert [p["mediaSessionId"] for p in both] == ["push-1"]
    assert pushes.find_filters[-1] == {"stream_name": "stream1", "rtmp_url": URL}
    assert_error(client.post(FIND, json={"streamName": "stream9"}), 404, None)


def test_find_empty_strings_are_no_filter(client: TestClient, pushes: FakePushes) -> None:
    client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL})
    assert len(client.post(FIND, json={"streamName": "", "rtmpUrl": ""}).json()) == 1
    assert pushes.find_filters[-1] == {"stream_name": None, "rtmp_url": None}


def test_find_all_refuses_fields(client: TestClient) -> None:
    assert_error(client.post(FIND_ALL, json={"x": 1}), 400, "x", "unknown field")


# ---- terminate, mute, unmute ---------------------------------------------------------------


def test_terminate_stops_and_answers_the_push(client: TestClient) -> None:
    client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL})
    response = client.post(TERMINATE, json={"mediaSessionId": "push-1"})
    assert response.status_code == 200
    assert response.json()["status"] == "STOPPED"
    again = client.post(TERMINATE, json={"mediaSessionId": "push-1"})
    assert again.status_code == 200 and again.json()["status"] == "STOPPED"
    # Stopped: the same target may be pushed again.
    assert client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL}).status_code == 200


@pytest.mark.parametrize("path", [TERMINATE, MUTE, UNMUTE])
def test_unknown_media_session_id_is_404(client: TestClient, path: str) -> None:
    assert_error(client.post(path, json={"mediaSessionId": "nope"}), 404, "mediaSessionId")


@pytest.mark.parametrize("path", [TERMINATE, MUTE, UNMUTE])
def test_missing_media_session_id_is_400(client: TestClient, path: str) -> None:
    assert_error(client.post(path, json={}), 400, "mediaSessionId", "required field is missing")
    assert_error(client.post(path, json={"mediaSessionId": ""}), 400, "mediaSessionId")


def test_mute_and_unmute(client: TestClient) -> None:
    client.post(STARTUP, json={"streamName": "stream1", "rtmpUrl": URL})
    assert client.post(MUTE, json={"mediaSessionId": "push-1"}).json()["muted"] is True
    assert client.post(UNMUTE, json={"mediaSessionId": "push-1"}).json()["muted"] is False
    client.post(TERMINATE, json={"mediaSessionId": "push-1"})
    assert_error(client.post(MUTE, json={"mediaSessionId": "push-1"}), 409, "mediaSessionId")


# ---- plumbing --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_get_is_405(client: TestClient, path: str) -> None:
    assert_error(client.get(path), 405, None, "method not allowed")


@pytest.mark.parametrize("path", PATHS)
def test_malformed_json_is_400(client: TestClient, path: str) -> None:
    assert_error(client.post(path, content=b"{nope"), 400, None, "malformed JSON")


def test_without_pushes_the_paths_are_404(gateway: FakeGateway, audit: ResponseAudit) -> None:
    client = audit.attach(TestClient(create_app(gateway)))
    assert_error(client.post(FIND_ALL, json={}), 404, None, "no such endpoint")


def test_manager_errors_are_mapped(client: TestClient, pushes: FakePushes) -> None:
    pushes.fail_with = InvalidRequest("rtmpUrl: nope", field="rtmpUrl")
    assert_error(client.post(FIND_ALL, json={}), 400, "rtmpUrl", "rtmpUrl: nope")
    pushes.fail_with = RuntimeError("boom")
    assert_error(client.post(FIND_ALL, json={}), 500, None, "internal error")


def test_bearer_token_protects_push_paths(gateway: FakeGateway, pushes: FakePushes) -> None:
    client = TestClient(create_app(gateway, pushes=pushes, api_token="tok"))
    assert client.post(FIND_ALL, json={}).status_code == 401
    ok = client.post(FIND_ALL, json={}, headers={"Authorization": "Bearer tok"})
    assert ok.status_code == 404  # authorised; simply no push yet


# ---- against the real PushManager ----------------------------------------------------------


async def test_real_manager_over_rest() -> None:
    registry = StreamRegistry()
    stream = registry.reserve("call-stream", call_id="c1")  # reserved, no media yet
    factory = FakePusherFactory()
    manager = PushManager(registry, pusher_factory=factory)
    app = create_app(FakeGateway(), pushes=manager, streams=registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        first = await http.post(STARTUP, json={"streamName": "call-stream", "rtmpUrl": URL})
        assert first.status_code == 200, first.text
        push = first.json()
        assert push["targetUrl"] == URL + "/rtmp_call-stream"
        assert push["callId"] == "c1"
        assert push["status"] == "PENDING"
        assert factory.made[0].config.url == URL + "/rtmp_call-stream"
        assert factory.made[0].started

        dup = await http.post(STARTUP, json={"streamName": "call-stream", "rtmpUrl": URL})
        assert dup.status_code == 409
        second = await http.post(
            STARTUP, json={"streamName": "call-stream", "rtmpUrl": URL + "/key"}
        )
        assert second.status_code == 200

        factory.made[0].report(PushStatus.CONNECTED)
        found = (await http.post(FIND, json={"streamName": "call-stream"})).json()
        assert [p["status"] for p in found] == ["CONNECTED", "PENDING"]
        stream_info = (await http.post("/rest-api/stream/find_all", json={})).json()
        assert stream_info[0]["subscribers"] == 0  # the fake pushers do not subscribe

        stopped = await http.post(TERMINATE, json={"mediaSessionId": push["mediaSessionId"]})
        assert stopped.json()["status"] == "STOPPED"
        assert factory.made[0].stopped

        stream.end()
        await asyncio.sleep(0)
        await manager.stop_stream(stream)
        statuses = [p["status"] for p in (await http.post(FIND_ALL, json={})).json()]
        assert statuses == ["STOPPED", "STOPPED"]
        gone = await http.post(STARTUP, json={"streamName": "call-stream", "rtmpUrl": URL})
        assert gone.status_code == 404
    assert isinstance(factory.made[1], FakePusher)
