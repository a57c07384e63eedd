"""REST hooks from real calls: the real ``sipbridge serve`` process POSTs CallStatusEvent and
StreamStatusEvent to a backend on 127.0.0.1, and the same events reach ``GET /events``.

The seed call (REGISTER 401, INVITE 407 through kamailio) goes to sipp registered
as ``bob``. The backend is a threaded ``http.server`` in this process; it answers
the very first POST with 500, so a real run shows the retry. A second test points
the hooks at a TCP port that accepts connections and never answers, with a 30 s
timeout: the call must still be established, hung up and reported promptly,
which a call path waiting on its hooks could not do within ``wait_status``'s
20 s, and the gateway must still stop cleanly (exit 0) on SIGTERM.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_calls_via_kamailio import seed_body

pytestmark = pytest.mark.interop

WAIT = 10.0


@dataclass
class HookBackend:
    """What the test backend received: ``(path, JSON body)`` in arrival order."""

    fail_first: int = 0
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, predicate: Any, timeout: float = WAIT) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: predicate(self.received), timeout):
                raise AssertionError(f"backend never saw it; received {self.received}")


@contextlib.contextmanager
def hook_backend(fail_first: int = 0) -> Iterator[HookBackend]:
    backend = HookBackend(fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with backend.lock:
                status = 500 if len(backend.received) < backend.fail_first else 200
                backend.received.append((self.path, body))
                backend.answered.append(status)
                backend.lock.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    backend.url = f"http://127.0.0.1:{server.server_address[1]}/wcs-backend"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def sse_reader(gateway: GatewayProcess) -> Iterator[list[str]]:
    """Reads ``GET /events`` in a thread; yields the ``event:``/``data:`` lines so far."""
    lines: list[str] = []
    url = gateway.base_url.removesuffix("/rest-api") + "/events?interval=300"
    opened = threading.Event()
    stop = threading.Event()

    def read() -> None:
        with httpx.stream("GET", url, timeout=httpx.Timeout(5.0, read=None)) as response:
            opened.set()
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith(("event:", "data:")):
                    lines.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert opened.wait(WAIT), "GET /events did not answer"
    try:
        yield lines
    finally:
        stop.set()


def statuses(received: list[tuple[str, dict[str, Any]]], path_end: str) -> list[str]:
    """The statuses posted to ``.../<path_end>``, a retried POST counted once."""
    seen: list[str] = []
    last: dict[str, Any] | None = None
    for path, body in received:
        if path.endswith(path_end) and body != last:
            seen.append(body["status"])
        last = body if path.endswith(path_end) else last
    return seen


def test_hooks_of_a_real_call_reach_the_backend_and_the_sse_feed(
    tmp_path_factory: pytest.TempPathFactory, kamailio: Kamailio, peers: PeerSet
) -> None:
    with hook_backend(fail_first=1) as backend:
        settings = (
            "[hooks]\nretry_backoff = 0.2\n"
            f'[hooks.apps]\ndefaultApp = "{backend.url}"\nother = "http://127.0.0.1:9/none"\n'
        )
        with (
            running_gateway(tmp_path_factory.mktemp("gateway"), extra_settings=settings) as gateway,
            sse_reader(gateway) as sse,
        ):
            callee = peers.registered_callee(kamailio, user="bob")
            assert gateway.post("/call/startup", seed_body("hk1", kamailio)).status_code == 200
            call, _ = gateway.wait_status("hk1", {"ESTABLISHED", "FAILED", "FINISH"})
            assert call["status"] == "ESTABLISHED", call
            assert gateway.post("/call/terminate", {"callId": "hk1"}).status_code == 200
            gateway.wait_status("hk1", {"FINISH"})
            backend.wait_for(lambda r: "FINISH" in statuses(r, "/CallStatusEvent"))
            backend.wait_for(lambda r: "UNPUBLISHED" in statuses(r, "/StreamStatusEvent"))
            assert callee.wait(15) == 0
            backend.wait_for(lambda _: any('"FINISH"' in line for line in sse), timeout=5)
            sse_lines = list(sse)

    paths = {path for path, _ in backend.received}
    assert paths == {"/wcs-backend/CallStatusEvent", "/wcs-backend/StreamStatusEvent"}
    # The first POST was answered 500 and sent again, unchanged.
    assert backend.answered[0] == 500 and backend.answered[1] == 200
    assert backend.received[0] == backend.received[1]
    calls = statuses(backend.received, "/CallStatusEvent")
    assert calls[0] == "NEW" and calls[-1] == "FINISH", calls
    assert calls.index("PENDING") < calls.index("ESTABLISHED") < calls.index("FINISH")
    streams = statuses(backend.received, "/StreamStatusEvent")
    assert streams == ["PENDING", "UNPUBLISHED"], streams  # sipp sends no media
    bodies = [body for path, body in backend.received if path.endswith("/CallStatusEvent")]
    established = next(b for b in bodies if b["status"] == "ESTABLISHED")
    assert established["callId"] == "hk1" and established["appKey"] == "defaultApp"
    assert established["sipStatus"] == 200 and established["callee"] == "bob"
    assert established["nodeId"]
    assert all("sipPassword" not in b and "alice-secret" not in json.dumps(b) for b in bodies)
    stream_body = next(b for p, b in backend.received if p.endswith("/StreamStatusEvent"))
    assert stream_body["name"] == "stream-hk1" and stream_body["mediaProvider"] == "SIP"

    # The SSE feed carried the same events, named callStatus / streamStatus.
    pairs = list(itertools.pairwise(sse_lines))
    sse_calls = [
        json.loads(data.removeprefix("data: "))["status"]
        for name, data in pairs
        if name == "event: callStatus"
    ]
    sse_streams = [
        json.loads(data.removeprefix("data: "))["status"]
        for name, data in pairs
        if name == "event: streamStatus"
    ]
    assert sse_calls == calls, (sse_calls, calls)
    assert sse_streams == streams, (sse_streams, streams)


def test_a_backend_that_never_answers_does_not_slow_a_real_call(
    tmp_path_factory: pytest.TempPathFactory, kamailio: Kamailio, peers: PeerSet
) -> None:
    # Accepts TCP connections (the kernel completes them) and never reads nor answers.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/dead"
    settings = f'[hooks]\ntimeout = 30.0\nretries = 3\ndefault_url = "{url}"\n'
    try:
        workdir: Path = tmp_path_factory.mktemp("gateway")
        with running_gateway(workdir, extra_settings=settings) as gateway:
            callee = peers.registered_callee(kamailio, user="bob")
            body = seed_body("hk-dead", kamailio, appKey="")
            assert gateway.post("/call/startup", body).status_code == 200
            call, seen = gateway.wait_status("hk-dead", {"ESTABLISHED", "FAILED", "FINISH"})
            assert call["status"] == "ESTABLISHED", (call, seen)
            assert gateway.post("/call/terminate", {"callId": "hk-dead"}).status_code == 200
            call, _ = gateway.wait_status("hk-dead", {"FINISH", "FAILED"})
            assert call["status"] == "FINISH" and call["info"] == "Normal call clearing"
            assert callee.wait(15) == 0
            # A second call right after is not queued behind the dead backend either.
            callee2 = peers.registered_callee(kamailio, user="bob")
            body = seed_body("hk-dead2", kamailio, appKey="")
            assert gateway.post("/call/startup", body).status_code == 200
            call, _ = gateway.wait_status("hk-dead2", {"ESTABLISHED", "FAILED", "FINISH"})
            assert call["status"] == "ESTABLISHED", call
            assert gateway.post("/call/terminate", {"callId": "hk-dead2"}).status_code == 200
            gateway.wait_status("hk-dead2", {"FINISH"})
            assert callee2.wait(15) == 0
        # running_gateway checked the exit: SIGTERM -> 0, no traceback, despite the dead hook.
        log = gateway.log_text()
        assert re.search(r"hooks http://127\.0\.0\.1:\d+/dead: \d+ event\(s\) not delivered", log)
    finally:
        silent.close()
