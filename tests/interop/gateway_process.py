"""The real ``sipbridge serve`` process, started by a test and driven over REST.

The gateway runs as users run it: the console entry point, a settings file,
uvicorn and uvloop. Tests talk to it with httpx and read its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.interop.peers import free_port


class GatewayProcess:
    """``python -m sipbridge serve --config FILE`` on free ports of 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        http_port: int,
        sip_port: int,
        rtp_range: tuple[int, int],
        extra_settings: str = "",
        rtp_settings: str = "",
        sip_settings: str = "",
        t1: float = 0.5,
    ) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.sip_port = sip_port
        self.config_path = workdir / "settings.toml"
        self.log_path = workdir / "sipbridge.log"
        self.config_path.write_text(
            "[http]\n"
            f'host = "127.0.0.1"\nport = {http_port}\n'
            "[sip]\n"
            f'host = "127.0.0.1"\nport = {sip_port}\n'
            f"t1 = {t1}\ninvite_timeout = 30.0\n" + sip_settings + "[rtp]\n"
            f"port_min = {rtp_range[0]}\nport_max = {rtp_range[1]}\n" + rtp_settings + "[log]\n"
            'level = "DEBUG"\nsip_trace = true\n' + extra_settings
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = f"http://127.0.0.1:{http_port}/rest-api"

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sipbridge", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sipbridge exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"sipbridge did not answer on {self.base_url}:\n{self.log_text()[-3000:]}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            return None

    @property
    def pid(self) -> int:
        """PID of the running ``sipbridge serve`` (for /proc readings)."""
        if self.process is None:
            raise RuntimeError("sipbridge was not started")
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- REST ------------------------------------------------------------------
    def post(self, method: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{self.base_url}{method}", json=body or {}, timeout=10.0)

    def find(self, call_id: str) -> dict[str, Any] | None:
        response = self.post("/call/find", {"callId": call_id})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()
        return calls[0] if calls else None

    def wait_status(
        self, call_id: str, statuses: Iterable[str], timeout: float = 20.0
    ) -> tuple[dict[str, Any], list[str]]:
        """Poll ``/call/find`` until the call reaches one of ``statuses``.

        Returns the last call object and every status seen on the way.
        """
        wanted = set(statuses)
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        call: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            call = self.find(call_id)
            if call is not None:
                if not seen or seen[-1] != call["status"]:
                    seen.append(call["status"])
                if call["status"] in wanted:
                    return call, seen
            time.sleep(0.05)
        raise AssertionError(
            f"call {call_id} never reached {sorted(wanted)}; last {json.dumps(call)}, seen {seen}"
        )


#: Passwords and tokens the interop tests give the gateway (kamailio users' passwords,
#: wrong passwords tried on purpose). None may appear in its log.
TEST_SECRETS: tuple[str, ...] = (
    "alice-secret",
    "bob-secret",
    "carol:secret",
    "not-the-password",
)


@contextlib.contextmanager
def running_gateway(
    workdir: Path,
    *,
    rtp_ports: int = 20,
    rtp_settings: str = "",
    extra_settings: str = "",
    sip_settings: str = "",
    t1: float = 0.5,
    log_check: Callable[[str], None] | None = None,
) -> Iterator[GatewayProcess]:
    """A started gateway on free ports of 127.0.0.1, stopped by PID afterwards.

    ``extra_settings`` is TOML appended to the settings file after ``[log]``
    (whole tables, e.g. ``[webrtc]`` with ``ice_addresses = ["127.0.0.1"]``);
    ``sip_settings`` more ``[sip]`` keys (lines ending in a newline); ``t1`` the
    SIP timer T1. On the way out it must exit 0 on SIGTERM and must have logged
    no traceback and no test password; ``log_check(log)`` may assert more.
    """
    rtp = free_port("udp", span=rtp_ports)
    process = GatewayProcess(
        workdir,
        http_port=free_port("tcp"),
        sip_port=free_port("sip"),
        rtp_range=(rtp, rtp + rtp_ports - 1),
        rtp_settings=rtp_settings,
        sip_settings=sip_settings,
        t1=t1,
        extra_settings=extra_settings,
    )
    process.start()
    try:
        yield process
    finally:
        code = process.stop()
        log = process.log_text()
        assert code == 0, f"gateway exit code {code}\n{log[-2000:]}"
        assert "Traceback" not in log, log[-4000:]
        # The log is at DEBUG with the SIP trace on: every password a test hands the
        # gateway must still never appear in it (issue 7: "no password in any log").
        leaked = [secret for secret in TEST_SECRETS if secret in log]
        assert not leaked, f"gateway log contains secrets {leaked}: {process.log_path}"
        if log_check is not None:
            log_check(log)
