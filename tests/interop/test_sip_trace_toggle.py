"""SIP message tracing switched at runtime: SIGUSR2 toggles it in the running service."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.peers import PeerSet
from tests.interop.test_calls import startup_body

pytestmark = pytest.mark.interop


def _busy_call(gateway: GatewayProcess, peers: PeerSet, call_id: str) -> None:
    callee = peers.sipp("uas_busy.xml")
    assert gateway.post("/call/startup", startup_body(call_id, callee)).status_code == 200
    call, _ = gateway.wait_status(call_id, {"BUSY", "FAILED", "FINISH"})
    assert call["status"] == "BUSY"
    assert callee.wait(15) == 0, callee.log_path.read_text()


def _wait_for_line(gateway: GatewayProcess, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in gateway.log_text():
        assert time.monotonic() < deadline, f"{text!r} not logged"
        time.sleep(0.05)


def _traced_invites(gateway: GatewayProcess) -> int:
    """INVITE request lines in the log: only the SIP trace prints whole messages."""
    return sum(1 for line in gateway.log_text().splitlines() if line.startswith("INVITE sip:"))


def test_sigusr2_switches_the_sip_trace_off_and_on(tmp_path: Path, peers: PeerSet) -> None:
    with running_gateway(tmp_path) as gateway:  # starts with [log] sip_trace = true
        assert gateway.process is not None
        _busy_call(gateway, peers, "traced-1")
        traced = _traced_invites(gateway)
        assert traced >= 1, gateway.log_text()[-3000:]

        gateway.process.send_signal(signal.SIGUSR2)
        _wait_for_line(gateway, "SIP message trace off")
        _busy_call(gateway, peers, "untraced")
        assert _traced_invites(gateway) == traced

        gateway.process.send_signal(signal.SIGUSR2)
        _wait_for_line(gateway, "SIP message trace on")
        _busy_call(gateway, peers, "traced-2")
        assert _traced_invites(gateway) > traced
