"""``/rest-api/stream/*`` against a fake registry, and once against the real one."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from rtp.frame import MediaFrame
from sipbridge.api.app import create_app
from sipbridge.errors import InvalidRequest
from sipbridge.registry import Stream, StreamRegistry, StreamStatus, TrackStats
from tests.api.conftest import ResponseAudit
from tests.api.fakes import FakeGateway, FakeStreams

FIND = "/rest-api/stream/find"
FIND_ALL = "/rest-api/stream/find_all"
TERMINATE = "/rest-api/stream/terminate"
PATHS = [FIND, FIND_ALL, TERMINATE]
STATUSES = "NEW, PENDING, PUBLISHING, PLAYING, UNPUBLISHED, STOPPED, FAILED"


@pytest.fixture
def streams() -> FakeStreams:
    return FakeStreams()


@pytest.fixture
def client(gateway: FakeGateway, streams: FakeStreams, audit: ResponseAudit) -> TestClient:
    return audit.attach(TestClient(create_app(gateway, streams=streams)))


def assert_error(response: Any, status: int, field: str | None, *fragments: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["status"] == status
    assert body.get("field") == field
    for fragment in fragments:
        assert fragment in body["error"]


# ---- find_all ----------------------------------------------------------------------------


def test_find_all_answers_the_stream_objects(client: TestClient, streams: FakeStreams) -> None:
    video = TrackStats(
        kind="video",
        codec="H264",
        clock_rate=90000,
        channels=None,
        width=1280,
        height=720,
        frames=250,
        keyframes=3,
        bytes=123456,
        packets_received=900,
        packets_lost=2,
        jitter_ms=4.5,
        buffer_delay_ms=120.0,
    )
    streams.add_stream("stream1", media_session_id="m1", call_id="c1", tracks=[video])
    response = client.post(FIND_ALL, json={})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {
            "mediaSessionId": "m1",
            "name": "stream1",
            "status": "PUBLISHING",
            "callId": "c1",
            "published": True,
            "createdAt": 1_700_000_000_000,
            "tracks": [
                {
                    "kind": "video",
                    "codec": "H264",
                    "clockRate": 90000,
                    "channels": None,
                    "width": 1280,
                    "height": 720,
                    "frames": 250,
                    "keyframes": 3,
                    "bytes": 123456,
                    "packetsReceived": 900,
                    "packetsLost": 2,
                    "jitterMs": 4.5,
                    "bufferDelayMs": 120.0,
                }
            ],
            "avOffsetMs": None,
            "subscribers": 0,
        }
    ]


def test_find_all_without_body_lists_every_stream(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a")
    streams.add_stream("b", StreamStatus.PENDING)
    response = client.post(FIND_ALL)
    assert response.status_code == 200
    assert [s["name"] for s in response.json()] == ["a", "b"]


def test_find_all_empty_is_404(client: TestClient) -> None:
    response = client.post(FIND_ALL, json={})
    assert response.json() == {"status": 404, "error": "no stream matched"}
    assert response.status_code == 404


def test_find_all_refuses_fields(client: TestClient) -> None:
    assert_error(client.post(FIND_ALL, json={"name": "a"}), 400, "name", "name: unknown field")


# ---- find ------------------------------------------------------------------------------


def test_find_by_each_filter(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a", media_session_id="m1")
    streams.add_stream("b", StreamStatus.PENDING, media_session_id="m2")
    streams.add_stream("a", StreamStatus.UNPUBLISHED, media_session_id="m3")
    by_name = client.post(FIND, json={"name": "a"}).json()
    assert [s["mediaSessionId"] for s in by_name] == ["m1", "m3"]
    by_status = client.post(FIND, json={"status": "pending"}).json()
    assert [s["mediaSessionId"] for s in by_status] == ["m2"]
    by_id = client.post(FIND, json={"mediaSessionId": "m3"}).json()
    assert [(s["name"], s["status"]) for s in by_id] == [("a", "UNPUBLISHED")]
    both = client.post(FIND, json={"name": "a", "status": "PUBLISHING"}).json()
    assert [s["mediaSessionId"] for s in both] == ["m1"]
    assert streams.find_filters[1] == {
        "name": None,
        "status": StreamStatus.PENDING,
        "media_session_id": None,
    }


def test_find_empty_strings_are_no_filter(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a")
    response = client.post(FIND, json={"name": "", "status": "", "mediaSessionId": ""})
    assert response.status_code == 200
    assert streams.find_filters == [{"name": None, "status": None, "media_session_id": None}]


def test_find_text_plain_body(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a")
    response = client.post(FIND, content=b'{"name":"a"}', headers={"content-type": "text/plain"})
    assert response.status_code == 200


def test_find_nothing_matched_is_404(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a")
    response = client.post(FIND, json={"name": "zzz"})
    assert response.json() == {"status": 404, "error": "no stream matched"}


def test_find_bad_status_is_400(client: TestClient) -> None:
    response = client.post(FIND, json={"status": "RING"})
    assert_error(response, 400, "status", f"status: expected one of {STATUSES}, got 'RING'")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"nmae": "a"}, "nmae", "nmae: unknown field"),
        ({"name": 5}, "name", "name: expected `str | null`, got `int`"),
        ({"mediaSessionId": ["x"]}, "mediaSessionId", "mediaSessionId: expected"),
        ({"name": "x" * 1025}, "name", "name: expected `str` of length <= 1024"),
    ],
)
def test_find_bad_body_is_400(
    client: TestClient, body: dict[str, object], field: str, fragment: str
) -> None:
    assert_error(client.post(FIND, json=body), 400, field, fragment)


def test_find_malformed_json_is_400(client: TestClient) -> None:
    assert_error(client.post(FIND, content=b"{"), 400, None, "malformed JSON")
    assert_error(client.post(FIND, content=b"[]"), 400, None, "request body: expected `object`")


# ---- terminate ---------------------------------------------------------------------------


def test_terminate_by_media_session_id(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a", media_session_id="m1", call_id="c1")
    response = client.post(TERMINATE, json={"mediaSessionId": "m1"})
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["status"], body["published"]) == ("a", "STOPPED", False)
    assert streams.terminated == [(None, "m1")]


def test_terminate_by_name(client: TestClient, streams: FakeStreams) -> None:
    streams.add_stream("a", media_session_id="m1")
    response = client.post(TERMINATE, json={"name": "a", "mediaSessionId": ""})
    assert response.status_code == 200
    assert response.json()["mediaSessionId"] == "m1"
    assert streams.terminated == [("a", None)]


def test_terminate_ended_stream_answers_its_final_state(
    client: TestClient, streams: FakeStreams
) -> None:
    streams.add_stream("a", StreamStatus.UNPUBLISHED, media_session_id="m1")
    response = client.post(TERMINATE, json={"mediaSessionId": "m1"})
    assert (response.status_code, response.json()["status"]) == (200, "UNPUBLISHED")


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": None, "mediaSessionId": ""}])
def test_terminate_needs_a_key(
    client: TestClient, streams: FakeStreams, body: dict[str, object]
) -> None:
    response = client.post(TERMINATE, json=body)
    assert_error(
        response,
        400,
        "mediaSessionId",
        "mediaSessionId: required field is missing (give mediaSessionId or name)",
    )
    assert streams.terminated == []


def test_terminate_unknown_is_404(client: TestClient) -> None:
    assert_error(
        client.post(TERMINATE, json={"mediaSessionId": "nope"}),
        404,
        "mediaSessionId",
        "no stream with mediaSessionId 'nope'",
    )
    assert_error(
        client.post(TERMINATE, json={"name": "nope"}), 404, "name", "no stream named 'nope'"
    )


def test_terminate_refuses_unknown_fields(client: TestClient) -> None:
    response = client.post(TERMINATE, json={"streamName": "a"})
    assert_error(response, 400, "streamName", "streamName: unknown field")


# ---- the application around them -----------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_get_is_405(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.json() == {"status": 405, "error": "method not allowed"}
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", PATHS)
def test_not_mounted_without_a_registry(gateway: FakeGateway, path: str) -> None:
    response = TestClient(create_app(gateway)).post(path, json={})
    assert response.json() == {"status": 404, "error": "no such endpoint"}


def test_token_guards_stream_paths(gateway: FakeGateway, streams: FakeStreams) -> None:
    streams.add_stream("a")
    client = TestClient(create_app(gateway, streams=streams, api_token="tok"))
    assert client.post(FIND_ALL, json={}).status_code == 401
    ok = client.post(FIND_ALL, json={}, headers={"Authorization": "Bearer tok"})
    assert ok.status_code == 200


def test_app_exposes_streams(gateway: FakeGateway, streams: FakeStreams) -> None:
    assert create_app(gateway, streams=streams).state.streams is streams


def test_registry_errors_are_mapped(client: TestClient, streams: FakeStreams) -> None:
    streams.fail_with = InvalidRequest("name: bad", field="name")
    assert_error(client.post(FIND_ALL, json={}), 400, "name", "name: bad")
    streams.fail_with = RuntimeError("secret internals")
    response = client.post(TERMINATE, json={"name": "a"})
    assert response.json() == {"status": 500, "error": "internal error"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
bodies = st.dictionaries(
    st.sampled_from(["name", "status", "mediaSessionId"]) | st.text(max_size=8),
    json_values,
    max_size=4,
)
PROPERTY_STREAMS = FakeStreams()
PROPERTY_STREAMS.add_stream("a", media_session_id="m1")
PROPERTY_CLIENT = TestClient(create_app(FakeGateway(), streams=PROPERTY_STREAMS))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([FIND, FIND_ALL]), body=bodies)
def test_no_body_makes_find_answer_500(path: str, body: dict[str, object]) -> None:
    response = PROPERTY_CLIENT.post(path, json=body)
    assert response.status_code in (200, 400, 404)
    if response.status_code != 200:
        assert response.json()["status"] == response.status_code


# ---- against the real registry ---------------------------------------------------------


def test_real_registry_through_rest(gateway: FakeGateway) -> None:
    registry = StreamRegistry(clock=lambda: 10.0, wall_clock=lambda: 1_700_000_000.5)
    hung_up: list[Stream] = []
    stream = registry.reserve("s1", call_id="c1", on_terminate=hung_up.append)
    stream.publish(MediaFrame("audio", "opus", 48000, 0, b"\x01\x02", pts=0.0))
    stream.track("audio").channels = 2
    stream.av_offset = 0.04
    subscription = stream.subscribe()
    client = TestClient(create_app(gateway, streams=registry))

    [found] = client.post(FIND, json={"name": "s1", "status": "PUBLISHING"}).json()
    assert found["mediaSessionId"] == stream.media_session_id
    assert found["callId"] == "c1"
    assert found["createdAt"] == 1_700_000_000_500
    assert found["subscribers"] == 1
    assert found["avOffsetMs"] == pytest.approx(40.0)
    assert found["tracks"][0]["codec"] == "opus"
    assert found["tracks"][0]["channels"] == 2
    assert found["tracks"][0]["frames"] == 1

    response = client.post(TERMINATE, json={"mediaSessionId": stream.media_session_id})
    assert response.json()["status"] == "STOPPED"
    assert response.json()["subscribers"] == 0
    assert hung_up == [stream]
    assert subscription.get_nowait() is None  # the GOP cache was empty: audio-only stream
    assert client.post(FIND, json={"status": "STOPPED"}).status_code == 200
