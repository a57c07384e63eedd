"""``/whep/*`` (RFC 9725) against a fake of ``webrtc.whep.WhepSessions``: statuses, headers,
CORS, the token rule and bad bodies; then once through HTTP to the real sessions with an
aiortc player on loopback."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame, VideoFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.whep import CORS_HEADERS
from sipbridge.errors import Conflict, InvalidRequest, NotFound
from sipbridge.registry import StreamRegistry
from tests.api.fakes import FakeGateway
from tests.webrtc.media import feed_realtime, looped, make_clip
from webrtc.config import WebRtcConfig
from webrtc.ice import host_addresses
from webrtc.whep import WhepSessions

TOKEN = "t0ken-for-whep"
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=rtpmap:96 H264/90000\r\n"
)
ANSWER = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
SDP = {"Content-Type": "application/sdp"}


class FakeViewerInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """Shaped like ``webrtc.whep.ViewerInfo``."""

    session_id: str
    stream_name: str
    state: str = "new"
    created_at: int = 1_700_000_000_000
    video_codec: str | None = "H264"
    audio_codec: str | None = "opus"
    video_frames_sent: int = 0
    audio_frames_sent: int = 0
    dropped: int = 0
    keyframe_requests: int = 0


class FakeAnswer(msgspec.Struct, kw_only=True):
    """Shaped like ``webrtc.whep.WhepAnswer``."""

    session_id: str
    stream_name: str
    sdp: str


class FakeViewers:
    """Structurally a ``ViewersAPI``: the contract's errors, no WebRTC."""

    def __init__(self, streams: tuple[str, ...] = ("stream1",), limit: int = 10) -> None:
        self.streams = set(streams)
        self.limit = limit
        self.sessions: dict[str, FakeViewerInfo] = {}
        self.offers: list[tuple[str, str]] = []
        self.fail_with: BaseException | None = None
        self._next = 0

    async def create(self, stream_name: str, offer_sdp: str) -> FakeAnswer:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        if stream_name not in self.streams:
            raise NotFound(f"no live stream named {stream_name!r}")
        if "m=" not in offer_sdp:
            raise InvalidRequest("the offer has no media section")
        if len(self.sessions) >= self.limit:
            raise Conflict(f"viewer limit reached ({self.limit})")
        self.offers.append((stream_name, offer_sdp))
        self._next += 1
        session_id = f"sess-{self._next}"
        self.sessions[session_id] = FakeViewerInfo(session_id=session_id, stream_name=stream_name)
        return FakeAnswer(session_id=session_id, stream_name=stream_name, sdp=ANSWER)

    async def delete(self, session_id: str) -> FakeViewerInfo:
        try:
            info = self.sessions.pop(session_id)
        except KeyError:
            raise NotFound(f"no WHEP session {session_id!r}") from None
        info.state = "closed"
        return info

    def get(self, session_id: str) -> FakeViewerInfo | None:
        return self.sessions.get(session_id)

    def viewers(self, stream_name: str | None = None) -> list[FakeViewerInfo]:
        return [v for v in self.sessions.values() if stream_name in (None, v.stream_name)]


@pytest.fixture
def viewers() -> FakeViewers:
    return FakeViewers(streams=("stream1", "my stream"))


@pytest.fixture
def client(gateway: FakeGateway, viewers: FakeViewers) -> TestClient:
    return TestClient(create_app(gateway, viewers=viewers), raise_server_exceptions=False)


@pytest.fixture
def secured(gateway: FakeGateway, viewers: FakeViewers) -> TestClient:
    return TestClient(create_app(gateway, viewers=viewers, api_token=TOKEN))


def assert_cors(response: Any) -> None:
    for name, value in CORS_HEADERS.items():
        assert response.headers[name] == value, name
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"Location", "ETag", "Link"} <= exposed


def assert_error(response: Any, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    for fragment in fragments:
        assert fragment in body["error"]
    assert_cors(response)


def post_offer(client: TestClient, stream: str = "stream1", **kwargs: Any) -> Any:
    kwargs.setdefault("headers", SDP)
    kwargs.setdefault("content", OFFER)
    return client.post(f"/whep/{stream}", **kwargs)


# ---- POST: the WHEP endpoint ---------------------------------------------------------------


def test_post_offer_answers_201_with_sdp_and_location(
    client: TestClient, viewers: FakeViewers
) -> None:
    response = post_offer(client)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/sdp"
    assert response.text == ANSWER
    assert response.headers["location"] == "/whep/stream1/sess-1"
    assert_cors(response)
    assert viewers.offers == [("stream1", OFFER)]


def test_location_quotes_the_stream_name(client: TestClient, viewers: FakeViewers) -> None:
    response = post_offer(client, "my%20stream")
    assert response.status_code == 201
    assert response.headers["location"] == "/whep/my%20stream/sess-1"
    assert viewers.offers[0][0] == "my stream"
    assert client.delete(response.headers["location"]).status_code == 200


@pytest.mark.parametrize(
    "content_type", ["application/sdp; charset=utf-8", "Application/SDP", " application/sdp "]
)
def test_sdp_content_type_variants_are_accepted(client: TestClient, content_type: str) -> None:
    response = post_offer(client, headers={"Content-Type": content_type})
    assert response.status_code == 201


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain", "sdp"])
def test_wrong_content_type_is_415(
    client: TestClient, viewers: FakeViewers, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/whep/stream1", content=OFFER.encode(), headers=headers)
    assert_error(response, 415, "Content-Type: application/sdp")
    assert response.headers["accept-post"] == "application/sdp"
    assert viewers.offers == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty SDP offer"),
        (b"  \r\n", "empty SDP offer"),
        (b"v=0\r\n\xff\xfe", "not UTF-8 (byte 5)"),
        (b'{"sdp": "v=0"}', "it must start with v=0"),
        (b"hello", "it must start with v=0"),
    ],
)
def test_bad_offer_is_400(
    client: TestClient, viewers: FakeViewers, body: bytes, message: str
) -> None:
    assert_error(post_offer(client, content=body), 400, message)
    assert viewers.offers == []


def test_offer_the_engine_refuses_is_400(client: TestClient) -> None:
    assert_error(post_offer(client, content="v=0\r\ns=-\r\n"), 400, "no media section")


def test_unknown_stream_is_404(client: TestClient) -> None:
    assert_error(post_offer(client, "nope"), 404, "no live stream named 'nope'")


def test_viewer_limit_is_409(client: TestClient, viewers: FakeViewers) -> None:
    viewers.limit = 1
    assert post_offer(client).status_code == 201
    assert_error(post_offer(client), 409, "viewer limit reached")


def test_offer_over_the_body_limit_is_413(gateway: FakeGateway, viewers: FakeViewers) -> None:
    client = TestClient(create_app(gateway, viewers=viewers, max_body_bytes=100))
    assert_error(post_offer(client, content=OFFER + "a=x\r\n" * 50), 413, "larger than 100")
    assert viewers.offers == []


def test_engine_bug_is_500_without_details(client: TestClient, viewers: FakeViewers) -> None:
    viewers.fail_with = RuntimeError("secret internals")
    response = post_offer(client)
    assert_error(response, 500, "internal error")
    assert "secret" not in response.text


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_the_endpoint_are_405(client: TestClient, method: str) -> None:
    response = client.request(method, "/whep/stream1")
    assert_error(response, 405, "method not allowed")
    assert response.headers["allow"] == "POST, OPTIONS"


def test_without_viewers_whep_is_404(gateway: FakeGateway) -> None:
    response = TestClient(create_app(gateway)).post("/whep/stream1", content=OFFER, headers=SDP)
    assert response.status_code == 404
    assert response.json() == {"status": 404, "error": "no such endpoint"}


# ---- DELETE / PATCH: the WHEP session ------------------------------------------------------


def test_delete_the_location_ends_the_session(client: TestClient, viewers: FakeViewers) -> None:
    location = post_offer(client).headers["location"]
    response = client.delete(location)
    assert response.status_code == 200
    assert response.json()["sessionId"] == "sess-1"
    assert response.json()["state"] == "closed"
    assert_cors(response)
    assert viewers.sessions == {}
    assert_error(client.delete(location), 404, "no WHEP session 'sess-1'")


def test_delete_unknown_session_is_404(client: TestClient) -> None:
    assert_error(client.delete("/whep/stream1/nope"), 404, "no WHEP session 'nope'")


def test_delete_under_another_stream_is_404(client: TestClient, viewers: FakeViewers) -> None:
    post_offer(client)
    assert_error(client.delete("/whep/my%20stream/sess-1"), 404, "playing stream 'my stream'")
    assert "sess-1" in viewers.sessions


def test_patch_is_405_trickle_not_supported(client: TestClient, viewers: FakeViewers) -> None:
    location = post_offer(client).headers["location"]
    response = client.patch(
        location,
        content="a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    )
    assert_error(response, 405, "trickle ICE")
    assert response.headers["allow"] == "DELETE, OPTIONS"
    assert "sess-1" in viewers.sessions


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT"])
def test_other_methods_on_the_session_are_405(client: TestClient, method: str) -> None:
    location = post_offer(client).headers["location"]
    response = client.request(method, location)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, OPTIONS"
    assert_cors(response)
    if method != "HEAD":
        assert response.json() == {"status": 405, "error": "method not allowed"}


# ---- CORS preflight ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/whep/stream1", "/whep/stream1/sess-1"])
def test_options_is_204_with_cors(client: TestClient, path: str) -> None:
    response = client.options(
        path,
        headers={
            "Origin": "https://player.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert_cors(response)
    assert {"POST", "DELETE", "PATCH"} <= {
        m.strip() for m in response.headers["access-control-allow-methods"].split(",")
    }


def test_options_on_the_endpoint_advertises_sdp(client: TestClient) -> None:
    response = client.options("/whep/stream1")
    assert response.headers["accept-post"] == "application/sdp"
    assert response.headers["allow"] == "POST, OPTIONS"


def test_rest_api_has_no_cors_headers(client: TestClient) -> None:
    response = client.post("/rest-api/call/find_all", json={})
    assert "access-control-allow-origin" not in response.headers


# ---- the API token -------------------------------------------------------------------------


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_post_without_token_is_401_with_cors(secured: TestClient, viewers: FakeViewers) -> None:
    response = post_offer(secured)
    assert_error(response, 401, "missing bearer token")
    assert response.headers["www-authenticate"] == "Bearer"
    assert viewers.offers == []


def test_post_with_wrong_token_is_403(secured: TestClient, viewers: FakeViewers) -> None:
    assert_error(post_offer(secured, headers={**SDP, **bearer("nope")}), 403, "invalid")
    assert viewers.offers == []


def test_token_rules_for_the_session(secured: TestClient, viewers: FakeViewers) -> None:
    response = post_offer(secured, headers={**SDP, **bearer()})
    assert response.status_code == 201
    location = response.headers["location"]
    assert_error(secured.delete(location), 401, "missing bearer token")
    assert_error(secured.patch(location, content="x"), 401, "missing bearer token")
    assert "sess-1" in viewers.sessions
    assert secured.patch(location, content="x", headers=bearer()).status_code == 405
    assert secured.delete(location, headers=bearer()).status_code == 200
    assert viewers.sessions == {}


@pytest.mark.parametrize("path", ["/whep/stream1", "/whep/stream1/sess-1"])
def test_preflight_needs_no_token(secured: TestClient, path: str) -> None:
    response = secured.options(path, headers={"Access-Control-Request-Method": "DELETE"})
    assert response.status_code == 204
    assert_cors(response)


# ---- bad input never crashes ---------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    content_type=st.sampled_from(["application/sdp", "application/json", "", "text/plain"]),
    stream=st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"),
        min_size=1,
        max_size=20,
    ),
)
def test_any_post_is_answered_without_500(
    client: TestClient, body: bytes, content_type: str, stream: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"/whep/{quote(stream, safe='')}", content=body, headers=headers)
    assert response.status_code in (201, 400, 404, 409, 415), response.text
    if response.status_code != 201:
        assert response.json()["error"]
    assert response.headers["access-control-allow-origin"] == "*"


# ---- through HTTP to the real WhepSessions, with a real aiortc player --------------------------


async def test_real_aiortc_player_receives_frames_over_whep() -> None:
    registry = StreamRegistry()
    stream = registry.reserve("cam")
    clip = make_clip(seconds=1.0)
    for frame in clip.frames[:3]:  # declares the codecs, caches a keyframe
        stream.publish(frame)
    sessions = WhepSessions(registry, WebRtcConfig(ice_addresses=("127.0.0.1",)))
    app = create_app(FakeGateway(), streams=registry, viewers=sessions)
    publisher = asyncio.ensure_future(feed_realtime(stream, looped(clip, 20)[3:]))
    pc = RTCPeerConnection()
    tracks: dict[str, MediaStreamTrack] = {}
    pc.on("track", lambda track: tracks.__setitem__(track.kind, track))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    try:
        with host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.post("/whep/cam", content=pc.localDescription.sdp, headers=SDP)
            assert response.status_code == 201, response.text
            assert response.headers["content-type"] == "application/sdp"
            location = response.headers["location"]
            assert location.startswith("/whep/cam/")
            await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            assert set(tracks) == {"video", "audio"}
            sizes = set()
            for _ in range(5):
                picture = await asyncio.wait_for(tracks["video"].recv(), 10)
                assert isinstance(picture, VideoFrame)
                sizes.add((picture.width, picture.height))
            assert sizes == {(clip.width, clip.height)}
            sound = await asyncio.wait_for(tracks["audio"].recv(), 10)
            assert isinstance(sound, AudioFrame)
            [viewer] = sessions.viewers("cam")
            assert viewer.video_codec == "H264"
            assert viewer.video_frames_sent >= 5
            deleted = await http.delete(location)
            assert deleted.status_code == 200
            assert deleted.json()["sessionId"] == location.rsplit("/", 1)[1]
            assert sessions.viewers() == []
            assert (await http.delete(location)).status_code == 404
    finally:
        publisher.cancel()
        await pc.close()
        await sessions.close()
