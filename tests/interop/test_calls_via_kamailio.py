"""The seed scenario end to end: REST -> REGISTER (401) -> INVITE (407) through
kamailio -> a callee registered there -> ESTABLISHED -> /call/terminate -> FINISH.

kamailio is a real registrar and authenticating proxy (digest on REGISTER with
401 and on INVITE with 407, record-routing); the callee is sipp registered as
``bob``. The REST body is the seed's, unchanged but for ports and passwords.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import Kamailio, PeerSet

pytestmark = pytest.mark.interop


def seed_body(call_id: str, kamailio: Kamailio, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "callId": call_id,
        "callee": "bob",
        "toStream": f"stream-{call_id}",
        "hasAudio": "true",
        "hasVideo": "true",
        "sipLogin": "alice",
        "sipAuthenticationName": "alice",
        "sipPassword": KAMAILIO_USERS["alice"],
        "sipPort": str(kamailio.port),
        "sipDomain": "127.0.0.1",
        "sipOutboundProxy": "127.0.0.1",
        "appKey": "defaultApp",
        "sipRegisterRequired": "true",
    }
    body.update(overrides)
    return body


def test_seed_call_registers_authenticates_and_ends(
    gateway: GatewayProcess, kamailio: Kamailio, peers: PeerSet
) -> None:
    callee = peers.registered_callee(kamailio, user="bob", scenario="uas_slow_answer.xml")
    response = gateway.post("/call/startup", seed_body("seed", kamailio))
    assert response.status_code == 200, response.text
    assert "alice-secret" not in response.text

    call, seen = gateway.wait_status("seed", {"ESTABLISHED"})
    assert {"TRYING", "RING"} <= set(seen), seen
    assert seen.index("RING") < seen.index("ESTABLISHED")
    assert call["sipStatus"] == 200

    harness = kamailio.harness_lines()
    assert any(line.startswith("challenge REGISTER") and "alice" in line for line in harness)
    assert any(line.startswith("registered alice") for line in harness), harness
    assert any(line.startswith("challenge INVITE") and "alice" in line for line in harness)
    assert any(line.startswith("relay INVITE") and "bob" in line for line in harness), harness

    assert gateway.post("/call/terminate", {"callId": "seed"}).status_code == 200
    call, _ = gateway.wait_status("seed", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"
    assert call["info"] == "Normal call clearing"
    assert callee.wait(15) == 0
    assert callee.callee.received_requests() == ["INVITE", "ACK", "BYE"]

    # The BYE went through kamailio (record-route) and alice was un-registered.
    kamailio.wait_for_log(r"harness: request BYE", timeout=5)
    kamailio.wait_for_log(r"harness: registered alice at .*;expires=0", timeout=5)
    log = gateway.log_text()
    assert "alice-secret" not in log


def test_wrong_password_fails_registration(
    gateway: GatewayProcess, kamailio: Kamailio, peers: PeerSet
) -> None:
    del peers
    body = seed_body("bad-password", kamailio, sipPassword="not-the-password")
    assert gateway.post("/call/startup", body).status_code == 200
    call, _ = gateway.wait_status("bad-password", {"FAILED", "FINISH", "BUSY"})
    assert call["status"] == "FAILED"
    assert "registration" in (call["info"] or "").lower()


def test_unregistered_callee_is_not_found(
    gateway: GatewayProcess, kamailio: Kamailio, peers: PeerSet
) -> None:
    del peers
    body = seed_body("nobody", kamailio, callee="carol", sipRegisterRequired="false")
    assert gateway.post("/call/startup", body).status_code == 200
    call, _ = gateway.wait_status("nobody", {"FAILED", "FINISH", "BUSY"})
    assert call["status"] == "FAILED"
    assert call["sipStatus"] == 404
