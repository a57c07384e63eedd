"""The application around the routes: auth, methods, unknown paths, body limit, health."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.auth import BearerAuthMiddleware
from sipbridge.callinfo import CallStatus
from tests.api.conftest import SEED_BODY, ResponseAudit
from tests.api.fakes import FakeGateway

TOKEN = "t0ken-for-tests"
CALL_PATHS = [
    "/rest-api/call/startup",
    "/rest-api/call/terminate",
    "/rest-api/call/find",
    "/rest-api/call/find_all",
    "/rest-api/call/hold",
    "/rest-api/call/unhold",
    "/rest-api/call/send_dtmf",
]


@pytest.fixture
def secured(gateway: FakeGateway, audit: ResponseAudit) -> TestClient:
    return audit.attach(TestClient(create_app(gateway, api_token=TOKEN)))


def test_health(client: TestClient) -> None:
    response = client.get("/rest-api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", CALL_PATHS)
def test_get_is_405_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405
    assert response.json() == {"status": 405, "error": "method not allowed"}
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(client: TestClient, method: str) -> None:
    response = client.request(method, "/rest-api/call/startup", json=SEED_BODY)
    assert response.status_code == 405
    assert response.json()["status"] == 405


@pytest.mark.parametrize("path", ["/rest-api/call/nope", "/rest-api/nope", "/nope"])
def test_unknown_path_is_404_json(client: TestClient, path: str) -> None:
    response = client.post(path, json={})
    assert response.status_code == 404
    assert response.json() == {"status": 404, "error": "no such endpoint"}


def test_body_over_limit_is_413(client: TestClient, gateway: FakeGateway) -> None:
    body = {**SEED_BODY, "custom": "x" * (64 * 1024)}
    response = client.post("/rest-api/call/startup", json=body)
    assert response.status_code == 413
    assert response.json() == {"status": 413, "error": "request body larger than 65536 bytes"}
    assert gateway.requests == []


def test_chunked_body_over_limit_is_413(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway, max_body_bytes=100))

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 50

    response = client.post("/rest-api/call/find_all", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "request body larger than 100 bytes"


def test_body_at_limit_is_read(gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.NEW)
    client = TestClient(create_app(gateway, max_body_bytes=100))
    response = client.post("/rest-api/call/find_all", content=b"{}" + b" " * 98)
    assert response.status_code == 200


def test_token_missing_is_401(secured: TestClient, gateway: FakeGateway) -> None:
    response = secured.post("/rest-api/call/startup", json=SEED_BODY)
    assert response.status_code == 401
    assert response.json() == {"status": 401, "error": "missing bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert gateway.requests == []


@pytest.mark.parametrize("header", [f"Basic {TOKEN}", "Bearer", "Bearer   ", TOKEN])
def test_token_not_bearer_is_401(secured: TestClient, header: str) -> None:
    response = secured.post("/rest-api/call/find_all", headers={"Authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize("token", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "é"])
def test_token_wrong_is_403(secured: TestClient, gateway: FakeGateway, token: str) -> None:
    response = secured.post(
        "/rest-api/call/startup",
        json=SEED_BODY,
        headers={"Authorization": f"Bearer {token}".encode()},
    )
    assert response.status_code == 403
    assert response.json() == {"status": 403, "error": "invalid bearer token"}
    assert gateway.requests == []


def test_token_right_passes(secured: TestClient, gateway: FakeGateway) -> None:
    for scheme in ("Bearer", "bearer"):
        gateway.calls.clear()
        response = secured.post(
            "/rest-api/call/startup",
            json=SEED_BODY,
            headers={"Authorization": f"{scheme} {TOKEN}"},
        )
        assert response.status_code == 200
    assert len(gateway.requests) == 2


def test_token_guards_405_and_404_too(secured: TestClient) -> None:
    assert secured.get("/rest-api/call/startup").status_code == 401
    assert secured.post("/rest-api/nope").status_code == 401


def test_health_needs_no_token(secured: TestClient) -> None:
    response = secured.get("/rest-api/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_empty_token_disables_auth(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway, api_token=""))
    assert client.post("/rest-api/call/startup", json=SEED_BODY).status_code == 200


def test_middleware_refuses_empty_token() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match="token must not be empty"):
        BearerAuthMiddleware(app, token="")


def test_app_exposes_gateway(gateway: FakeGateway) -> None:
    assert create_app(gateway).state.gateway is gateway
