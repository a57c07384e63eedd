"""Fixtures for the REST tests: a fake gateway and a TestClient that audits every answer.

Every response any test receives through :func:`client`, and every log record
of the ``sipbridge`` loggers, is checked after the test not to contain
:data:`SECRET` (the SIP password the tests send).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from tests.api.fakes import FakeGateway

SECRET = "pw-Sup3rS3cret!"

SEED_BODY: dict[str, object] = {
    "callId": "c1",
    "callee": "bob",
    "toStream": "stream1",
    "hasAudio": "true",
    "hasVideo": "true",
    "sipLogin": "alice",
    "sipAuthenticationName": "alice",
    "sipPassword": SECRET,
    "sipPort": "5060",
    "sipDomain": "127.0.0.1",
    "sipOutboundProxy": "127.0.0.1",
    "appKey": "defaultApp",
    "sipRegisterRequired": "true",
}


class ResponseAudit:
    """Collects every response body a test client received."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.content)

    def attach(self, client: TestClient) -> TestClient:
        client.event_hooks = {"request": [], "response": [self.hook]}
        return client


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> Iterator[ResponseAudit]:
    """After the test: the password is in no response body and no log record (even DEBUG)."""
    caplog.set_level(logging.DEBUG, logger="sipbridge")
    audit = ResponseAudit()
    yield audit
    for body in audit.bodies:
        assert SECRET.encode() not in body
    assert SECRET not in caplog.text


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(gateway: FakeGateway, audit: ResponseAudit) -> TestClient:
    return audit.attach(TestClient(create_app(gateway)))
