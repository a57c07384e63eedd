"""The token check on the API with the session cookie: cookie on /rest-api, /whep, /events
and /metrics, Bearer precedence, the CSRF origin guard, and the exempt paths."""

from __future__ import annotations

import asyncio

import pytest
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.login import SESSION_COOKIE, SessionCookie, same_origin
from tests.api.conftest import SEED_BODY
from tests.api.fakes import FakeGateway
from tests.api.test_events import FeedClient
from tests.api.test_whep import OFFER, SDP, FakeViewers

TOKEN = "t0ken-for-auth"
WAIT = 5.0


@pytest.fixture
def viewers() -> FakeViewers:
    return FakeViewers(streams=("stream1",))


@pytest.fixture
def secured(gateway: FakeGateway, viewers: FakeViewers) -> TestClient:
    return TestClient(create_app(gateway, viewers=viewers, api_token=TOKEN))


def log_in(client: TestClient) -> str:
    """POST /login with the right token; the cookie value the client now holds."""
    response = client.post("/login", data={"token": TOKEN, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303
    value = client.cookies.get(SESSION_COOKIE)
    assert isinstance(value, str) and value
    return value


def test_cookie_authorises_rest_api(secured: TestClient, gateway: FakeGateway) -> None:
    assert secured.post("/rest-api/call/startup", json=SEED_BODY).status_code == 401
    log_in(secured)
    response = secured.post("/rest-api/call/startup", json=SEED_BODY)
    assert response.status_code == 200
    assert len(gateway.requests) == 1


def test_cookie_authorises_whep(secured: TestClient, viewers: FakeViewers) -> None:
    assert secured.post("/whep/stream1", content=OFFER, headers=SDP).status_code == 401
    log_in(secured)
    created = secured.post("/whep/stream1", content=OFFER, headers=SDP)
    assert created.status_code == 201, created.text
    session_url = created.headers["location"]
    assert list(viewers.sessions) == ["sess-1"]
    # The player's DELETE on pagehide: same origin, cookie only.
    deleted = secured.delete(session_url, headers={"Origin": "http://testserver"})
    assert deleted.status_code == 200, deleted.text
    assert viewers.sessions == {}


def test_cookie_authorises_metrics_like_the_api(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway, api_token=TOKEN))
    log_in(client)
    # No metrics mounted: past the check, the router's 404 (not 401).
    assert client.get("/metrics").status_code == 404
    client.cookies.clear()
    assert client.get("/metrics").status_code == 401


async def test_cookie_authorises_the_event_feed(gateway: FakeGateway) -> None:
    app = create_app(gateway, api_token=TOKEN)
    cookie = SessionCookie(TOKEN)  # another process's key: refused
    stale = FeedClient(app, headers={"Cookie": f"{SESSION_COOKIE}={cookie.value()}"})
    assert (await stale.start())["status"] == 403
    await asyncio.wait_for(stale.task, WAIT)
    with TestClient(app) as client:
        value = log_in(client)
    allowed = FeedClient(app, headers={"Cookie": f"{SESSION_COOKIE}={value}"})
    assert (await allowed.start())["status"] == 200
    assert (await allowed.event())[0] == "state"
    await allowed.disconnect()


@pytest.mark.parametrize("value", ["nope", "0" * 64, "", "é"])
def test_wrong_cookie_on_the_api(secured: TestClient, value: str) -> None:
    cookie = f"{SESSION_COOKIE}={value}".encode("latin-1")
    response = secured.post("/rest-api/call/find_all", json={}, headers={"Cookie": cookie})
    if value:
        assert response.status_code == 403
        assert response.json() == {"status": 403, "error": "invalid session cookie"}
    else:  # an empty cookie is no credential
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_bearer_decides_when_both_are_sent(secured: TestClient) -> None:
    log_in(secured)
    wrong = secured.post("/rest-api/call/find_all", json={}, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "invalid bearer token"
    # A non-Bearer Authorization header is ignored; the cookie still counts.
    basic = secured.post("/rest-api/call/find_all", json={}, headers={"Authorization": "Basic x"})
    assert basic.status_code != 401 and basic.status_code != 403


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://testserver.evil.example",
        "http://testserver:8080",
        "null",
        "file://",
    ],
)
def test_csrf_guard_refuses_foreign_origin_with_cookie(
    secured: TestClient, gateway: FakeGateway, origin: str
) -> None:
    log_in(secured)
    response = secured.post("/rest-api/call/startup", json=SEED_BODY, headers={"Origin": origin})
    assert response.status_code == 403
    assert response.json() == {"status": 403, "error": "cross-origin request refused"}
    assert gateway.requests == []


@pytest.mark.parametrize(
    "origin", [None, "http://testserver", "https://testserver", "HTTP://TestServer:80"]
)
def test_csrf_guard_accepts_same_origin_with_cookie(
    secured: TestClient, gateway: FakeGateway, origin: str | None
) -> None:
    log_in(secured)
    headers = {} if origin is None else {"Origin": origin}
    response = secured.post("/rest-api/call/startup", json=SEED_BODY, headers=headers)
    assert response.status_code == 200, response.text
    assert len(gateway.requests) == 1


def test_csrf_guard_spares_safe_methods(secured: TestClient) -> None:
    log_in(secured)
    # GET is past the check (405 from the route), even from a foreign page.
    response = secured.get("/rest-api/call/startup", headers={"Origin": "http://evil.example"})
    assert response.status_code == 405


def test_csrf_guard_does_not_apply_to_bearer(secured: TestClient, gateway: FakeGateway) -> None:
    response = secured.post(
        "/rest-api/call/startup",
        json=SEED_BODY,
        headers={"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200
    assert len(gateway.requests) == 1


def test_exempt_paths_stay_open(secured: TestClient) -> None:
    assert secured.get("/rest-api/health").status_code == 200
    assert secured.get("/rest-api/openapi.json").status_code == 200
    preflight = secured.options(
        "/whep/stream1",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code in (200, 204)


def test_no_token_no_check(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway))
    response = client.post(
        "/rest-api/call/startup", json=SEED_BODY, headers={"Origin": "http://evil.example"}
    )
    assert response.status_code == 200
    assert client.post("/login", data={"token": "x"}).status_code == 404


def test_session_cookie_is_an_hmac_not_the_token() -> None:
    one = SessionCookie(TOKEN, key=b"k" * 32)
    assert one.value() == SessionCookie(TOKEN, key=b"k" * 32).value()
    assert TOKEN not in one.value() and len(one.value()) == 64
    assert one.value() != SessionCookie(TOKEN).value()  # a fresh random key per process
    assert one.value() != SessionCookie(TOKEN + "x", key=b"k" * 32).value()
    assert one.cookie_matches(one.value())
    assert not one.cookie_matches(one.value()[:-1])
    assert one.token_matches(TOKEN) and not one.token_matches(TOKEN.upper())
    with pytest.raises(ValueError, match="token must not be empty"):
        SessionCookie("")


def scope(headers: dict[str, str]) -> dict[str, object]:
    return {
        "type": "http",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"host": "gw.example"}, True),
        ({"host": "gw.example", "origin": "https://gw.example"}, True),
        ({"host": "gw.example:443", "origin": "https://gw.example"}, True),
        ({"host": "gw.example", "origin": "https://gw.example:443"}, True),
        ({"host": "gw.example:8081", "origin": "http://gw.example:8081"}, True),
        ({"host": "[::1]:8081", "origin": "http://[::1]:8081"}, True),
        ({"host": "gw.example:8081", "origin": "http://gw.example"}, False),
        ({"host": "gw.example", "origin": "https://gw.example.evil"}, False),
        ({"host": "gw.example", "origin": "https://user@gw.example"}, False),
        ({"host": "gw.example", "origin": "null"}, False),
        ({"host": "gw.example", "origin": "chrome-extension://abc"}, False),
        ({"origin": "https://gw.example"}, False),
        # Fetch metadata first: the browser's word beats an Origin made "null" by policy.
        ({"host": "gw.example", "origin": "null", "sec-fetch-site": "same-origin"}, True),
        ({"host": "gw.example", "sec-fetch-site": "none"}, True),
        (
            {"host": "gw.example", "origin": "https://gw.example", "sec-fetch-site": "same-site"},
            False,
        ),
        ({"host": "gw.example", "sec-fetch-site": "cross-site"}, False),
    ],
)
def test_same_origin(headers: dict[str, str], expected: bool) -> None:
    assert same_origin(scope(headers)) is expected
