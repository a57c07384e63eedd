"""The real ``sipbridge serve`` as systemd runs it, where systemd itself cannot run.

The test stands in for the service manager: it binds the ``AF_UNIX`` datagram
socket that ``$NOTIFY_SOCKET`` names and sets ``$WATCHDOG_USEC``, exactly what
systemd hands a ``Type=notify`` service with ``WatchdogSec=``, then starts the
console entry point with them. It checks what systemd would see: ``READY=1``
once the REST port answers, ``WATCHDOG=1`` again and again (each gap below the
interval, or systemd would kill the service), ``STOPPING=1`` after SIGTERM.

A real callee (sipp answering, then waiting for the caller's BYE) holds a call
through the stop: sipp's own message trace must show the BYE it received and
its 200 OK, and the process must exit 0 within ``[service] stop_timeout``.
A second callee never answers the BYE, so the gateway's stop cannot finish:
the process must then exit 1 within the same bound instead of hanging.

Figures (shutdown time with one call, ping gaps) go to
``artifacts/<test>/figures.json`` and stdout.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import PeerSet, Sipp, free_port
from tests.interop.test_calls import startup_body

pytestmark = pytest.mark.interop

#: ``WATCHDOG_USEC`` handed to the gateway: 1 s, so pings are due every 0.5 s.
WATCHDOG_USEC = 1_000_000
#: ``[service] stop_timeout``: the bound on SIGTERM -> exit that the tests hold it to.
STOP_TIMEOUT = 6.0

#: Answers (PCMU), takes the ACK and the BYE, and never answers the BYE: the
#: gateway's BYE transaction runs for 64*T1 (32 s), longer than its whole stop bound.
DEAF_TO_BYE_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas_deaf_to_bye">
  <recv request="INVITE"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv
      m=video 0 RTP/AVP 96
    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE" timeout="300000"/>
  <pause milliseconds="20000"/>
</scenario>
"""


@dataclass
class NotifyListener:
    """A stand-in for systemd's notify socket: every datagram, with its arrival time."""

    path: str
    sock: socket.socket
    messages: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:  # closed at teardown
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def received(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def times_of(self, assignment: str) -> list[float]:
        return [t for t, m in self.received() if assignment in m.split("\n")]

    def wait_for(self, assignment: str, timeout: float, count: int = 1) -> list[float]:
        deadline = time.monotonic() + timeout
        while len(found := self.times_of(assignment)) < count:
            assert time.monotonic() < deadline, (assignment, count, self.received())
            time.sleep(0.02)
        return found


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """A bound datagram socket named by ``$NOTIFY_SOCKET`` (and ``$WATCHDOG_USEC``) for the
    gateway the test starts; a short path under /tmp (AF_UNIX paths hold 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="sbn", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    listener = NotifyListener(path, sock)
    thread = threading.Thread(target=listener.run, name="notify-listener", daemon=True)
    thread.start()
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    try:
        yield listener
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(2.0)
        shutil.rmtree(directory, ignore_errors=True)


def started_gateway(workdir: Path) -> GatewayProcess:
    rtp = free_port("udp", span=10)
    gateway = GatewayProcess(
        workdir,
        http_port=free_port("tcp"),
        sip_port=free_port("sip"),
        rtp_range=(rtp, rtp + 9),
        extra_settings=f"[service]\nstop_timeout = {STOP_TIMEOUT}\n",
    )
    gateway.start()
    return gateway


def establish(gateway: GatewayProcess, callee: Sipp, call_id: str) -> None:
    response = gateway.post("/call/startup", startup_body(call_id, callee))
    assert response.status_code == 200, response.text
    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, callee.diagnostics())


def sigterm_and_wait(gateway: GatewayProcess, bound: float) -> tuple[int | None, float]:
    """SIGTERM by PID; (exit code or None if still running after ``bound``, seconds taken)."""
    assert gateway.process is not None
    sent = time.monotonic()
    os.kill(gateway.pid, signal.SIGTERM)
    try:
        code: int | None = gateway.process.wait(bound)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - sent


def record_figures(artifacts_dir: Path, figures: dict[str, object]) -> None:
    text = json.dumps(figures, indent=2, sort_keys=True)
    (artifacts_dir / "figures.json").write_text(text + "\n")
    print(text)


def test_notify_watchdog_and_sigterm_with_a_call(
    notify_socket: NotifyListener,
    peers: PeerSet,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
) -> None:
    gateway = started_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        health_ok = time.monotonic()
        [ready_at] = notify_socket.wait_for("READY=1", timeout=5.0)
        assert ready_at <= health_ok + 0.5  # sent once uvicorn listens, before we asked
        [ready] = [m for _, m in notify_socket.received() if "READY=1" in m.split("\n")]
        assert f"SIP port {gateway.sip_port}" in ready, ready
        assert f"REST http://127.0.0.1:{gateway.http_port}" in ready, ready

        pings = notify_socket.wait_for("WATCHDOG=1", timeout=5.0, count=4)
        callee = peers.sipp("uas_answer_wait_bye.xml", timeout=60)
        establish(gateway, callee, "svc-term")
        notify_socket.wait_for("WATCHDOG=1", timeout=5.0, count=len(pings) + 2)

        signalled = time.monotonic()
        code, took = sigterm_and_wait(gateway, bound=STOP_TIMEOUT)
        log = gateway.log_text()
        assert code == 0, (code, took, log[-3000:])
        assert took < STOP_TIMEOUT
    finally:
        gateway.stop()
    [stopping_at] = notify_socket.times_of("STOPPING=1")
    [stopping] = [m for _, m in notify_socket.received() if "STOPPING=1" in m.split("\n")]
    assert stopping == "STOPPING=1\nSTATUS=stopping: 1 call(s), 0 recording(s)"
    assert signalled < stopping_at
    # The callee saw the BYE and answered it: its scenario completed, exit 0.
    assert callee.wait(10) == 0, callee.diagnostics()
    assert callee.received_requests() == ["INVITE", "ACK", "BYE"], callee.diagnostics()
    assert callee.sent_status_codes()[-1] == 200
    assert "stopping: finishing 0 recording(s), hanging up 1 call(s)" in log
    assert "Traceback" not in log, log[-4000:]

    ping_times = notify_socket.times_of("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(ping_times)]
    # systemd kills a service whose pings are further apart than WATCHDOG_USEC.
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
    record_figures(
        artifacts_dir,
        {
            "sigterm_to_exit_s": round(took, 3),
            "sigterm_to_stopping_s": round(stopping_at - signalled, 3),
            "watchdog_pings": len(ping_times),
            "watchdog_gap_max_s": round(max(gaps), 3),
            "watchdog_gap_min_s": round(min(gaps), 3),
            "stop_timeout_s": STOP_TIMEOUT,
        },
    )


def test_a_stop_that_cannot_finish_exits_1_within_the_bound(
    notify_socket: NotifyListener,
    peers: PeerSet,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
) -> None:
    scenario = tmp_path / "uas_deaf_to_bye.xml"
    scenario.write_text(DEAF_TO_BYE_SCENARIO)
    gateway = started_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        notify_socket.wait_for("READY=1", timeout=5.0)
        callee = peers.sipp(scenario, timeout=60)
        establish(gateway, callee, "svc-deaf")
        code, took = sigterm_and_wait(gateway, bound=STOP_TIMEOUT + 2.0)
    finally:
        gateway.stop()
    log = gateway.log_text()
    assert code == 1, (code, took, log[-3000:])
    assert took < STOP_TIMEOUT, took
    assert "stop: the gateway did not stop within" in log, log[-3000:]
    assert notify_socket.times_of("STOPPING=1"), notify_socket.received()
    assert "BYE" in callee.received_requests(), callee.diagnostics()
    record_figures(artifacts_dir, {"sigterm_to_exit_s": round(took, 3), "exit_code": code})
