"""Plumbing for peers: errors, binaries, free ports, waiting, managed processes."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import pytest

LOCALHOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[3]
SCENARIOS_DIR = Path(__file__).resolve().parents[1] / "scenarios"

#: Debian package that provides each peer binary (named in failures).
DEBIAN_PACKAGES: dict[str, str] = {
    "kamailio": "kamailio",
    "sipp": "sip-tester",
    "baresip": "baresip-core",
    "nginx": "nginx",
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "chromium": "chromium",
    "tshark": "tshark",
}

PortKind = Literal["udp", "tcp", "sip"]
"""``sip`` means the port must be free for UDP and TCP alike (SIP uses both)."""

_POLL_INTERVAL = 0.05


class PeerError(Exception):
    """A peer could not be started, configured or observed as expected."""


class PeerTimeout(PeerError):
    """A peer did not reach the awaited state within its time limit."""


# --------------------------------------------------------------------------- binaries


def require_binary(name: str, package: str | None = None) -> str:
    """Return the absolute path of the peer program ``name``.

    A missing peer fails the test (never skips it): CI installs the peers with
    ``make peers``, so their absence is a broken environment, not an option.
    """
    path = shutil.which(name)
    if path is None:
        pkg = package or DEBIAN_PACKAGES.get(name, name)
        pytest.fail(
            f"peer program {name!r} not found on PATH: install the Debian package "
            f"{pkg!r} (run `make peers`)",
            pytrace=False,
        )
    return path


# --------------------------------------------------------------------------- ports


def _candidate_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, where nothing binds by chance."""
    low, high = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(v) for v in text.split())
    if low - 1 - 10000 >= 2000:
        return 10000, low - 1
    return high + 1, 65535


def port_is_free(port: int, kind: PortKind = "udp", host: str = LOCALHOST) -> bool:
    """Whether ``port`` can be bound on ``host`` for ``kind`` right now.

    No ``SO_REUSEADDR``: a port in TIME_WAIT or bound with reuse by another
    program counts as taken, which errs on the safe side.
    """
    types = {
        "udp": (socket.SOCK_DGRAM,),
        "tcp": (socket.SOCK_STREAM,),
        "sip": (socket.SOCK_DGRAM, socket.SOCK_STREAM),
    }[kind]
    for sock_type in types:
        with socket.socket(socket.AF_INET, sock_type) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
_rng = random.SystemRandom()


def free_port(kind: PortKind = "udp", span: int = 1) -> int:
    """Return the first of ``span`` consecutive ports free for ``kind`` on 127.0.0.1.

    Races are narrowed, not closed: candidates are drawn at random below the
    ephemeral range (where the kernel never assigns ports on its own), and a
    port is never handed out twice by one test process.
    """
    if span < 1:
        raise ValueError(f"span must be at least 1, got {span}")
    low, high = _candidate_range()
    for _ in range(500):
        base = _rng.randrange(low, high - span + 1)
        ports = range(base, base + span)
        with _handed_out_lock:
            if any(p in _handed_out for p in ports):
                continue
            if all(port_is_free(p, kind) for p in ports):
                _handed_out.update(ports)
                return base
    raise PeerError(f"no {span} consecutive free {kind} ports in {low}-{high}")


# --------------------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; raise :class:`PeerTimeout` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise PeerTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_POLL_INTERVAL)


def tcp_port_answers(port: int, host: str = LOCALHOST) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_is_bound(port: int, kind: Literal["udp", "tcp"] = "udp", host: str = LOCALHOST) -> bool:
    """Whether a socket is bound to ``host:port`` (TCP: listening), from /proc/net.

    Reading the kernel's tables instead of test-binding the port leaves no
    window in which the program we wait for could find its port taken by us.
    """
    wanted_host = socket.inet_aton(host)[::-1].hex().upper()
    wildcard = "00000000"
    try:
        lines = Path(f"/proc/net/{kind}").read_text().splitlines()[1:]
    except FileNotFoundError:
        return not port_is_free(port, kind, host)
    for line in lines:
        fields = line.split()
        local_host, local_port = fields[1].split(":")
        state = fields[3]
        if int(local_port, 16) != port or local_host not in (wanted_host, wildcard):
            continue
        if kind == "udp" or state == "0A":  # 0A: TCP_LISTEN
            return True
    return False


def wait_for_port(
    port: int,
    kind: Literal["udp", "tcp"] = "udp",
    *,
    timeout: float = 10.0,
    host: str = LOCALHOST,
) -> None:
    """Wait until something listens on ``port``.

    TCP: a connection is accepted. UDP has no handshake, so "listens" means a
    socket is bound there; use :func:`sip_ping` to see a SIP server answer.
    """
    if kind == "tcp":
        wait_until(
            lambda: tcp_port_answers(port, host),
            timeout=timeout,
            what=f"tcp {host}:{port}",
        )
    else:
        wait_until(
            lambda: port_is_bound(port, "udp", host),
            timeout=timeout,
            what=f"udp {host}:{port}",
        )


def sip_ping(port: int, *, host: str = LOCALHOST, timeout: float = 0.5) -> str | None:
    """Send one SIP OPTIONS over UDP; return the response's status line, or None.

    RFC 3261 section 11: any response, even an error, shows a live SIP server.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        local_port = sock.getsockname()[1]
        token = f"{os.getpid()}-{time.monotonic_ns()}"
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCALHOST}:{local_port};branch=z9hG4bK-ping-{token};rport\r\n"
            f"From: <sip:ping@ping.invalid>;tag={token}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: ping-{token}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        try:
            sock.sendto(request.encode(), (host, port))
            data = sock.recv(65535)
        except OSError:
            return None
    first_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return first_line if first_line.startswith("SIP/2.0 ") else None


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """One program started by a test and stopped by its PID.

    Output (stdout and stderr, interleaved) goes to ``log_dir/NAME.log``, whose
    first line is the command. The program runs in its own session, so
    :meth:`stop` signals its process group: the program and whatever it forked
    (Kamailio's workers), nothing else.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_dir: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._cwd = cwd
        self._env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the started program."""
        return self._running().pid

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self._popen is not None

    def _running(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise PeerError(f"{self.name} was not started")
        return self._popen

    def start(self) -> ManagedProcess:
        """Start the program with stdin closed and output to :attr:`log_path`."""
        if self._popen is not None:
            raise PeerError(f"{self.name} was already started (pid {self._popen.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(self.argv) + "\n").encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
            )
        return self

    def poll(self) -> int | None:
        """The exit code, or None while the program runs."""
        return self._running().poll()

    def wait(self, timeout: float) -> int:
        """Wait for the program to exit by itself; return its exit code."""
        try:
            return self._running().wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PeerTimeout(
                f"{self.name} (pid {self.pid}) still running after {timeout:g} s; "
                f"log: {self.log_path}"
            ) from None

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the program: SIGTERM, ``grace`` seconds, then SIGKILL. Idempotent.

        Returns the exit code (negative: killed by that signal), None if never
        started.
        """
        if self._popen is None:
            return None
        popen = self._popen
        if popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                popen.wait(timeout=grace)
        # Children that outlived their parent (same group) must not leak.
        self._signal_group(signal.SIGKILL)
        return popen.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        popen = self._running()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, sig)

    def read_log(self) -> str:
        """Everything the program wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log, for failure messages."""
        return "\n".join(self.read_log().splitlines()[-lines:])

    def wait_for_log(
        self, pattern: str | re.Pattern[str], *, timeout: float = 10.0
    ) -> re.Match[str]:
        """Wait until the log matches ``pattern`` (a regex, searched in the whole log)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.read_log())
            if match is not None:
                return match
            code = self.poll()
            if code is not None:
                raise PeerError(
                    f"{self.name} exited with {code} before logging {regex.pattern!r}:\n"
                    + self.log_tail()
                )
            if time.monotonic() >= deadline:
                raise PeerTimeout(
                    f"{self.name} did not log {regex.pattern!r} within {timeout:g} s:\n"
                    + self.log_tail()
                )
            time.sleep(_POLL_INTERVAL)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
