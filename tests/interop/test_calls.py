"""The real ``sipbridge serve`` process places calls to real SIP peers over REST.

sipp plays the callee directly (answer, busy, not found, no answer) over UDP
and TCP. The statuses are read back with ``/call/find`` exactly as a WCS
client would, and sipp's own message trace says what went over the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.peers import PeerSet, Sipp

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway process for the module, on free ports, stopped by PID."""
    with running_gateway(tmp_path_factory.mktemp("gateway"), rtp_ports=40) as process:
        yield process


def startup_body(call_id: str, callee: Sipp, **overrides: Any) -> dict[str, Any]:
    """The seed's /call/startup body, pointed at a sipp callee (no registration)."""
    body: dict[str, Any] = {
        "callId": call_id,
        "callee": "bob",
        "toStream": f"stream-{call_id}",
        "hasAudio": "true",
        "hasVideo": "true",
        "sipLogin": "alice",
        "sipAuthenticationName": "alice",
        "sipPassword": "alice-secret",
        "sipPort": str(callee.local_port),
        "sipDomain": "127.0.0.1",
        "sipOutboundProxy": "127.0.0.1",
        "appKey": "defaultApp",
        "sipRegisterRequired": "false",
    }
    body.update(overrides)
    return body


def sipp_methods(sipp: Sipp, direction: str) -> list[str]:
    return [e.method for e in sipp.trace() if e.direction == direction and not e.is_response]


def test_answer_then_remote_bye_finishes(gateway: GatewayProcess, peers: PeerSet) -> None:
    callee = peers.sipp("uas_answer_then_bye.xml", duration_ms=1500)
    response = gateway.post("/call/startup", startup_body("remote-bye", callee))
    assert response.status_code == 200, response.text
    call, _ = gateway.wait_status("remote-bye", {"ESTABLISHED"})
    assert call["sipStatus"] == 200
    call, seen = gateway.wait_status("remote-bye", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH", seen
    assert call["info"] == "Normal call clearing"
    assert callee.wait(15) == 0, callee.log_path.read_text()
    assert "BYE" in sipp_methods(callee, "sent")
    received = sipp_methods(callee, "received")
    assert received[:2] == ["INVITE", "ACK"], received


def test_busy_callee(gateway: GatewayProcess, peers: PeerSet) -> None:
    callee = peers.sipp("uas_busy.xml")
    assert gateway.post("/call/startup", startup_body("busy", callee)).status_code == 200
    call, _ = gateway.wait_status("busy", {"BUSY", "FAILED", "FINISH"})
    assert call["status"] == "BUSY"
    assert call["sipStatus"] == 486
    assert callee.wait(15) == 0, callee.log_path.read_text()


def test_not_found_fails_with_sip_code(gateway: GatewayProcess, peers: PeerSet) -> None:
    callee = peers.sipp("uas_not_found.xml")
    assert gateway.post("/call/startup", startup_body("not-found", callee)).status_code == 200
    call, _ = gateway.wait_status("not-found", {"BUSY", "FAILED", "FINISH"})
    assert call["status"] == "FAILED"
    assert call["sipStatus"] == 404
    assert call["info"] == "Not Found"
    assert callee.wait(15) == 0, callee.log_path.read_text()


def test_no_answer_then_terminate_cancels(gateway: GatewayProcess, peers: PeerSet) -> None:
    callee = peers.sipp("uas_no_answer.xml")
    assert gateway.post("/call/startup", startup_body("no-answer", callee)).status_code == 200
    gateway.wait_status("no-answer", {"RING"})
    response = gateway.post("/call/terminate", {"callId": "no-answer"})
    assert response.status_code == 200, response.text
    call, _ = gateway.wait_status("no-answer", {"FINISH", "FAILED", "BUSY"})
    assert call["status"] == "FINISH"
    assert call["sipStatus"] == 487
    assert callee.wait(15) == 0, callee.log_path.read_text()
    assert "CANCEL" in sipp_methods(callee, "received")


def test_statuses_and_local_terminate_over_tcp(gateway: GatewayProcess, peers: PeerSet) -> None:
    callee = peers.sipp("uas_slow_answer.xml", transport="t1")
    body = startup_body("tcp-call", callee, sipTransport="TCP")
    assert gateway.post("/call/startup", body).status_code == 200
    call, seen = gateway.wait_status("tcp-call", {"ESTABLISHED"})
    assert {"TRYING", "RING"} <= set(seen), seen
    assert gateway.post("/call/terminate", {"callId": "tcp-call"}).status_code == 200
    call, _ = gateway.wait_status("tcp-call", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"
    assert callee.wait(15) == 0, callee.log_path.read_text()
    assert sipp_methods(callee, "received") == ["INVITE", "ACK", "BYE"]


def test_bad_requests_leave_the_gateway_running(gateway: GatewayProcess, tmp_path: Path) -> None:
    del tmp_path
    assert gateway.post("/call/startup", {"callId": "x"}).status_code == 400
    bad_port = gateway.post("/call/startup", {"callId": "x", "callee": "b", "sipPort": "abc"})
    assert bad_port.status_code == 400
    assert bad_port.json()["field"] == "sipPort"
    assert gateway.post("/call/terminate", {"callId": "nope"}).status_code == 404
    assert gateway.post("/call/find", {"callId": "nope"}).status_code == 404
    assert gateway.post("/call/find_all", {}).status_code in (200, 404)


def test_stream_is_reserved_and_terminating_it_hangs_up(
    gateway: GatewayProcess, peers: PeerSet
) -> None:
    callee = peers.sipp("uas_answer_wait_bye.xml")
    body = startup_body("stream-owner", callee, toStream="shared-name")
    assert gateway.post("/call/startup", body).status_code == 200
    gateway.wait_status("stream-owner", {"ESTABLISHED"})

    clash = gateway.post(
        "/call/startup", startup_body("stream-thief", callee, toStream="shared-name")
    )
    assert clash.status_code == 409, clash.text
    assert clash.json()["field"] == "toStream"

    found = gateway.post("/stream/find", {"name": "shared-name"})
    assert found.status_code == 200, found.text
    [stream] = found.json()
    assert stream["callId"] == "stream-owner"

    assert gateway.post("/stream/terminate", {"name": "shared-name"}).status_code == 200
    call, _ = gateway.wait_status("stream-owner", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"
    assert callee.wait(15) == 0, callee.log_path.read_text()
    assert sipp_methods(callee, "received") == ["INVITE", "ACK", "BYE"]
    [stream] = gateway.post("/stream/find", {"name": "shared-name"}).json()
    assert stream["status"] == "STOPPED"
