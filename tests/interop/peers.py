"""Real third-party SIP peers for interop tests: Kamailio, sipp, any program.

Theory of operation
-------------------
Every peer is a child process started by a test, bound to 127.0.0.1 on free
ports, with its stdout and stderr in one log file under the test's artifacts
directory. A :class:`ManagedProcess` remembers the PID of what it started and
stops exactly that (its own process group: SIGTERM, a grace period, SIGKILL);
fixtures call :meth:`ManagedProcess.stop` in their finalizers, so nothing
outlives a test even when it fails.

Readiness and outcomes are observed the way a user would: a port that answers,
a line in a log, an exit code, sipp's message trace. Polling with short sleeps
is deliberate here: these tests drive real programs on the wall clock, unlike
the sans-IO unit tests that run on virtual time.

Facts about the peers that shaped this module:

* sipp maps every message to a call by Call-ID. A UAC scenario (one that
  starts with ``<send>``) discards a request with an unknown Call-ID, so one
  scenario cannot REGISTER and then take the INVITE a proxy forwards from
  another UA. :class:`RegisteredCallee` therefore registers with one sipp
  (``uac_register.xml``) and answers with a second one, in server mode, on the
  same local port, i.e. on the registered Contact.
* sipp exits 0 when every call succeeded, 1 when one failed, 255 when the
  global ``-timeout`` passed (with ``-timeout_error``) or on a fatal error. It
  listens on 0.0.0.0 unless given ``-bind_local``, and opens a UDP control
  socket on 0.0.0.0:8888 unless given ``-ci``/``-cp``. With ``-mp P`` it binds
  the audio and video echo ports P and P+2 (not the RTCP ports).
* Kamailio 5.6's ``db_text`` needs the ``ha1``/``ha1b`` columns declared
  ``(string,null)`` when ``calculate_ha1`` is on, or every REGISTER fails.
"""

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

LOCALHOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"

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
    port: int, kind: Literal["udp", "tcp"] = "udp", *, timeout: float = 10.0, host: str = LOCALHOST
) -> None:
    """Wait until something listens on ``port``.

    TCP: a connection is accepted. UDP has no handshake, so "listens" means a
    socket is bound there; use :func:`sip_ping` to see a SIP server answer.
    """
    if kind == "tcp":
        wait_until(lambda: tcp_port_answers(port, host), timeout=timeout, what=f"tcp {host}:{port}")
    else:
        wait_until(
            lambda: port_is_bound(port, "udp", host), timeout=timeout, what=f"udp {host}:{port}"
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


# --------------------------------------------------------------------------- kamailio


def _dbtext_escape(value: str) -> str:
    """Escape a value for a db_text row (``:`` separates columns)."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("\n", "\\n").replace("\r", "\\r")


_KAMAILIO_CFG = r"""#!KAMAILIO
# Generated by tests/interop/peers.py: registrar + authenticating stateful proxy.
debug=2
log_stderror=yes
log_prefix="{$mt $hdr(CSeq) $ci} "
fork=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
sip_warning=0
server_header="Server: kamailio-interop"
listen=udp:127.0.0.1:%(port)d
listen=tcp:127.0.0.1:%(port)d
%(alias)s

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "default_expires", 300)
modparam("registrar", "max_expires", 3600)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 60000)
modparam("auth_db", "db_url", "text://%(db_dir)s")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
modparam("auth_db", "load_credentials", "")

request_route {
    xlog("L_INFO", "harness: request $rm $ru from $si:$sp/$pr\n");
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (!sanity_check()) {
        xlog("L_WARN", "harness: malformed request from $si:$sp\n");
        exit;
    }
    # Keepalive / readiness probe: OPTIONS to the proxy itself.
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    if (!is_method("ACK")) {
        if (t_precheck_trans()) {
            t_check_trans();
            exit;
        }
        t_check_trans();
    }
    if (has_totag()) {
        route(WITHINDLG);
        exit;
    }
    if (is_method("ACK")) {
        # ACK of a non-2xx final response: absorbed by tm (hop by hop).
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    remove_hf("Route");
    if (is_method("REGISTER")) {
        route(REGISTRAR);
        exit;
    }
    route(AUTH);
    if (is_method("INVITE|SUBSCRIBE|REFER")) {
        record_route();
    }
    if ($rU == $null) {
        sl_send_reply("484", "Address Incomplete");
        exit;
    }
    route(LOCATION);
}

route[RELAY] {
    t_on_reply("REPLY");
    t_on_failure("FAILURE");
    xlog("L_INFO", "harness: relay $rm to $ru\n");
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}

route[WITHINDLG] {
    if (loose_route()) {
        route(RELAY);
    }
    if (is_method("ACK")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    sl_send_reply("404", "Not here");
    exit;
}

route[REGISTRAR] {
    if (!www_authorize("%(realm)s", "subscriber")) {
        xlog("L_INFO", "harness: challenge REGISTER $tu with 401\n");
        auth_challenge("%(realm)s", "%(challenge_flags)s");
        exit;
    }
    if ($au != $tU) {
        sl_send_reply("403", "Forbidden auth ID");
        exit;
    }
    if (!save("location")) {
        sl_reply_error();
        exit;
    }
    xlog("L_INFO", "harness: registered $tU at $ct\n");
    exit;
}

# Requests from local users must authenticate (407); requests from elsewhere
# may only reach local users. "Local" compares the host only: every peer
# lives on 127.0.0.1, so "myself" (host and port) must stay this proxy's own
# address, or loose_route() would take a peer's Contact for a strict router.
route[AUTH] {
    if ($fd == "%(domain)s") {
        if (!proxy_authorize("%(realm)s", "subscriber")) {
            xlog("L_INFO", "harness: challenge $rm from $fu with 407\n");
            auth_challenge("%(realm)s", "%(challenge_flags)s");
            exit;
        }
        if ($au != $fU) {
            sl_send_reply("403", "Forbidden auth ID");
            exit;
        }
        consume_credentials();
    } else if ($rd != "%(domain)s") {
        sl_send_reply("403", "Not relaying");
        exit;
    }
}

route[LOCATION] {
    if (!lookup("location")) {
        xlog("L_INFO", "harness: $rU is not registered\n");
        t_newtran();
        t_reply("404", "Not Found");
        exit;
    }
    route(RELAY);
}

onreply_route[REPLY] {
    xlog("L_INFO", "harness: reply $rs $rr for $rm\n");
}

failure_route[FAILURE] {
    xlog("L_INFO", "harness: failure $T_reply_code for $rm\n");
}
"""


class Kamailio:
    """A private Kamailio 5.6: registrar plus authenticating stateful proxy.

    Behaviour (RFC 3261 sections 10, 16, 22):

    * REGISTER is challenged with 401 (``www_authorize``/``auth_challenge``);
      the authenticated user must be the To user; contacts live in memory
      (usrloc ``db_mode=0``).
    * Initial requests whose From host is the domain (any port) are
      challenged with 407 (``proxy_authorize``), must authenticate as the
      From user, and have their credentials consumed. Requests from other
      domains are not challenged but may only target the domain (else 403).
    * ``myself`` is only 127.0.0.1:PORT: 127.0.0.1 is never an alias without
      a port, since every peer's Contact is on 127.0.0.1 too.
    * INVITE is record-routed; the Request-URI is looked up in the location
      table (404 when not registered) and relayed statefully (``t_relay``);
      in-dialog requests are loose-routed; CANCEL follows its INVITE.
    * Digest challenges carry ``qop="auth"`` unless ``qop=False``; the realm
      is the domain.

    Its log (``kamailio.log`` in ``log_dir``) has one ``harness:`` line per
    request, relay, challenge, registration and reply, for assertions.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        log_dir: Path,
        domain: str = LOCALHOST,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        qop: bool = True,
        name: str = "kamailio",
    ) -> None:
        self.binary = require_binary("kamailio")
        self.domain = domain
        self.port = port if port is not None else free_port("sip")
        self.users = dict(users) if users is not None else {"alice": "secret", "bob": "secret"}
        self.qop = qop
        self.workdir = workdir
        self.db_dir = workdir / "db"
        self.config_path = workdir / "kamailio.cfg"
        self.log_dir = log_dir
        self._process = ManagedProcess(
            [
                self.binary,
                "-DD",
                "-E",
                "-f",
                str(self.config_path),
                "-Y",
                str(workdir / "run"),
                "-m",
                "32",
                "-M",
                "8",
            ],
            name=name,
            log_dir=log_dir,
            cwd=workdir,
        )

    @property
    def log_path(self) -> Path:
        """Kamailio's stderr log."""
        return self._process.log_path

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the proxy's address."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def realm(self) -> str:
        """The digest realm (the domain)."""
        return self.domain

    @property
    def process(self) -> ManagedProcess:
        """The running Kamailio."""
        return self._process

    def uri(self, user: str) -> str:
        """The address-of-record of ``user`` in this domain."""
        return f"sip:{user}@{self.domain}"

    def render_config(self) -> str:
        """The kamailio.cfg text for these settings."""
        return _KAMAILIO_CFG % {
            "port": self.port,
            "domain": self.domain,
            # Never alias 127.0.0.1 without a port: see route[AUTH].
            "alias": "" if self.domain == LOCALHOST else f'alias="{self.domain}"',
            "realm": self.realm,
            "db_dir": self.db_dir,
            "challenge_flags": "1" if self.qop else "0",
        }

    def write_config(self) -> Path:
        """Write kamailio.cfg and the db_text tables (``version``, ``subscriber``)."""
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(parents=True, exist_ok=True)
        (self.db_dir / "version").write_text(
            "id(int,auto) table_name(string) table_version(int) \n0:subscriber:7\n"
        )
        rows = [
            "id(int,auto) username(string) domain(string) password(string) "
            "ha1(string,null) ha1b(string,null) "
        ]
        for index, (user, password) in enumerate(sorted(self.users.items()), start=1):
            rows.append(
                f"{index}:{_dbtext_escape(user)}:{_dbtext_escape(self.domain)}:"
                f"{_dbtext_escape(password)}::"
            )
        (self.db_dir / "subscriber").write_text("\n".join(rows) + "\n")
        self.config_path.write_text(self.render_config())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.config_path, self.log_dir / f"{self._process.name}.cfg")
        return self.config_path

    def check_config(self) -> str:
        """Run ``kamailio -c`` on the written config; return its output.

        Raises :class:`PeerError` with that output when Kamailio rejects it.
        """
        result = subprocess.run(
            [self.binary, "-c", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise PeerError(f"kamailio -c rejected {self.config_path}:\n{output}")
        return output

    def start(self, *, timeout: float = 15.0) -> Kamailio:
        """Write and check the config, start Kamailio, wait until UDP and TCP answer."""
        self.write_config()
        self.check_config()
        self._process.start()
        try:
            wait_until(
                lambda: self._exited_early() or sip_ping(self.port) is not None,
                timeout=timeout,
                what=f"kamailio to answer OPTIONS on udp {self.address}",
            )
            if self._exited_early():
                raise PeerError(
                    f"kamailio exited with {self._process.poll()}:\n{self._process.log_tail()}"
                )
            wait_for_port(self.port, "tcp", timeout=timeout)
        except PeerError:
            self.stop()
            raise
        return self

    def _exited_early(self) -> bool:
        return self._process.poll() is not None

    def stop(self) -> None:
        """Stop Kamailio (SIGTERM to its process group, SIGKILL after 5 s)."""
        self._process.stop()

    def read_log(self) -> str:
        """Kamailio's log so far."""
        return self._process.read_log()

    def harness_lines(self) -> list[str]:
        """The ``harness:`` lines of the log, without Kamailio's prefixes."""
        return [
            line.split("harness: ", 1)[1]
            for line in self.read_log().splitlines()
            if "harness: " in line
        ]

    def wait_for_log(
        self, pattern: str | re.Pattern[str], *, timeout: float = 10.0
    ) -> re.Match[str]:
        """Wait until Kamailio's log matches ``pattern``."""
        return self._process.wait_for_log(pattern, timeout=timeout)


# --------------------------------------------------------------------------- sipp


@dataclass(frozen=True)
class SipTraceEntry:
    """One SIP message from sipp's ``-trace_msg`` log."""

    direction: Literal["sent", "received"]
    transport: str
    text: str

    @property
    def first_line(self) -> str:
        """Request line or status line."""
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_response(self) -> bool:
        """Whether this is a response."""
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status_code(self) -> int | None:
        """The status code of a response, None for a request."""
        if not self.is_response:
            return None
        return int(self.first_line.split()[1])

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response."""
        if not self.is_response:
            return self.first_line.split()[0]
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else ""

    def headers(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), one per header line."""
        prefix = name.lower() + ":"
        values: list[str] = []
        for line in self.text.split("\n")[1:]:
            if not line.strip():
                break
            if line.lower().startswith(prefix):
                values.append(line.split(":", 1)[1].strip())
        return values

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), None if absent."""
        values = self.headers(name)
        return values[0] if values else None

    @property
    def body(self) -> str:
        """The message body (SDP), empty when none."""
        parts = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)
        return parts[1].strip() if len(parts) == 2 else ""

    def __str__(self) -> str:
        arrow = "->" if self.direction == "sent" else "<-"
        return f"{arrow} {self.first_line}"


_TRACE_SPLIT = re.compile(r"^-{20,} [^\n]*\n", re.MULTILINE)
_TRACE_HEAD = re.compile(
    # "UDP message sent (321 bytes):" / "UDP message received [398] bytes :"
    r"^(?P<transport>\S+) message (?P<dir>sent|received) (?:\(\d+ bytes\)|\[\d+\] bytes ?):"
    r"[ \t]*\n\n?",
)


def parse_sipp_trace(text: str) -> list[SipTraceEntry]:
    """Parse a sipp ``-trace_msg`` file into messages, in order."""
    entries: list[SipTraceEntry] = []
    for chunk in _TRACE_SPLIT.split(text):
        head = _TRACE_HEAD.match(chunk)
        if head is None:
            continue
        direction: Literal["sent", "received"] = "sent" if head["dir"] == "sent" else "received"
        body = chunk[head.end() :].replace("\r\n", "\n").strip("\n")
        entries.append(SipTraceEntry(direction, head["transport"], body))
    return entries


def scenario_path(scenario: str | Path) -> Path:
    """Resolve a scenario: a bare file name means ``tests/interop/scenarios/NAME``."""
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS_DIR / path
    if not path.is_file():
        raise PeerError(f"no sipp scenario at {path}")
    return path


class Sipp:
    """One sipp run of a scenario, in the background.

    ``remote`` (``HOST:PORT``) makes sipp a client that sends the scenario's
    first message there; without it the scenario must start with ``<recv>`` and
    sipp waits, in server mode, on ``local_port``. Everything binds 127.0.0.1
    (``-i``, ``-bind_local``, ``-mi``, ``-ci``); media uses 4 ports from
    ``media_port`` (audio RTP/RTCP, video RTP/RTCP); the control socket one
    more (:attr:`control_port`).

    ``service`` is ``-s`` (the callee's user, or our own user in a Contact),
    ``auth`` is ``-au``/``-ap`` for ``[authentication]``, ``caller`` sets the
    ``caller`` variable the UAC scenarios declare, ``duration_ms`` is ``-d``
    (the length of a ``<pause/>``), ``variables`` more ``-set NAME VALUE``.
    ``timeout`` is sipp's global ``-timeout``: past it sipp gives up and exits
    with an error code, so a test never hangs on it.

    The message trace is ``NAME_messages.log`` in ``log_dir``; unexpected
    messages go to ``NAME_errors.log``; sipp's screen to ``NAME.log``.
    """

    def __init__(
        self,
        scenario: str | Path,
        *,
        log_dir: Path,
        local_port: int | None = None,
        remote: str | None = None,
        service: str | None = None,
        caller: str | None = None,
        auth: tuple[str, str] | None = None,
        media_port: int | None = None,
        calls: int = 1,
        duration_ms: int | None = None,
        transport: Literal["u1", "t1"] = "u1",
        variables: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        self.binary = require_binary("sipp")
        self.scenario = scenario_path(scenario)
        self.name = name or self.scenario.stem
        self.remote = remote
        self.transport = transport
        self.local_port = (
            local_port
            if local_port is not None
            else free_port("udp" if transport == "u1" else "tcp")
        )
        self.media_port = media_port if media_port is not None else free_port("udp", span=4)
        # sipp always opens a UDP control socket, on 0.0.0.0:8888 unless told.
        self.control_port = free_port("udp")
        self.timeout = timeout
        self.messages_path = log_dir / f"{self.name}_messages.log"
        self.errors_path = log_dir / f"{self.name}_errors.log"
        argv: list[str] = [self.binary]
        if remote is not None:
            argv.append(remote)
        argv += ["-sf", str(self.scenario), "-t", transport]
        argv += ["-i", LOCALHOST, "-bind_local", "-p", str(self.local_port)]
        argv += ["-mi", LOCALHOST, "-mp", str(self.media_port)]
        argv += ["-ci", LOCALHOST, "-cp", str(self.control_port)]
        argv += ["-m", str(calls), "-nostdin"]
        argv += ["-trace_msg", "-message_file", str(self.messages_path)]
        argv += ["-trace_err", "-error_file", str(self.errors_path)]
        argv += ["-timeout", f"{max(1, round(timeout))}s", "-timeout_error"]
        if service is not None:
            argv += ["-s", service]
        if auth is not None:
            argv += ["-au", auth[0], "-ap", auth[1]]
        if caller is not None:
            argv += ["-set", "caller", caller]
        for key, value in (variables or {}).items():
            argv += ["-set", key, value]
        if duration_ms is not None:
            argv += ["-d", str(duration_ms)]
        argv += list(extra_args)
        self._process = ManagedProcess(argv, name=self.name, log_dir=log_dir)

    @property
    def process(self) -> ManagedProcess:
        """The sipp process."""
        return self._process

    @property
    def log_path(self) -> Path:
        """sipp's stdout/stderr (its screen and fatal errors)."""
        return self._process.log_path

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` where this sipp sends from and listens."""
        return f"{LOCALHOST}:{self.local_port}"

    def start(self, *, timeout: float = 10.0) -> Sipp:
        """Start sipp and wait until its SIP port is bound (UDP) or listening (TCP)."""
        self._process.start()
        kind: Literal["udp", "tcp"] = "udp" if self.transport == "u1" else "tcp"
        try:
            wait_until(
                lambda: self._process.poll() is not None or port_is_bound(self.local_port, kind),
                timeout=timeout,
                what=f"sipp {self.name} to bind {kind} {self.address}",
            )
        except PeerTimeout:
            self.stop()
            raise
        code = self._process.poll()
        if code is not None and self.remote is None:
            raise PeerError(f"sipp {self.name} exited with {code} at start:\n{self.diagnostics()}")
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for sipp to finish; return its exit code (0: every call succeeded)."""
        return self._process.wait(timeout if timeout is not None else self.timeout + 10.0)

    def stop(self) -> int | None:
        """Stop sipp if it still runs (idempotent); return its exit code."""
        return self._process.stop()

    def poll(self) -> int | None:
        """sipp's exit code, None while it runs."""
        return self._process.poll()

    def trace(self) -> list[SipTraceEntry]:
        """The SIP messages sipp sent and received so far."""
        try:
            text = self.messages_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return parse_sipp_trace(text)

    def flow(self) -> list[str]:
        """The trace as ``-> INVITE sip:...`` / ``<- SIP/2.0 200 OK`` lines."""
        return [str(entry) for entry in self.trace()]

    def received_status_codes(self) -> list[int]:
        """Status codes of the responses received, in order."""
        return [e.status_code for e in self.trace() if e.direction == "received" and e.status_code]

    def sent_status_codes(self) -> list[int]:
        """Status codes of the responses sent, in order."""
        return [e.status_code for e in self.trace() if e.direction == "sent" and e.status_code]

    def received_requests(self) -> list[str]:
        """Methods of the requests received, in order."""
        return [e.method for e in self.trace() if e.direction == "received" and not e.is_response]

    def errors(self) -> str:
        """sipp's error log (unexpected messages, timeouts), empty if none."""
        try:
            return self.errors_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self) -> str:
        """Flow, errors and the screen's tail, for assertion messages."""
        return (
            f"sipp {self.name} flow:\n  "
            + "\n  ".join(self.flow())
            + f"\nerrors:\n{self.errors()[-2000:]}\nscreen tail:\n{self._process.log_tail(15)}"
        )


class RegisteredCallee:
    """A sipp callee registered at a :class:`Kamailio` as ``user``.

    Step 1 runs ``uac_register.xml`` from ``local_port``, so the registered
    Contact is ``sip:USER@127.0.0.1:local_port`` (401, then 200 with digest
    credentials). Step 2 runs ``scenario`` in server mode on the same port to
    take the calls Kamailio forwards there. Two sipp runs because sipp drops a
    request whose Call-ID belongs to no call of a client scenario.
    """

    def __init__(
        self,
        kamailio: Kamailio,
        *,
        user: str,
        log_dir: Path,
        password: str | None = None,
        scenario: str | Path = "uas_answer_wait_bye.xml",
        calls: int = 1,
        duration_ms: int | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kamailio = kamailio
        self.user = user
        self.password = password if password is not None else kamailio.users[user]
        self.local_port = free_port("udp")
        self.registration = Sipp(
            "uac_register.xml",
            log_dir=log_dir,
            remote=kamailio.address,
            local_port=self.local_port,
            service=user,
            auth=(user, self.password),
            timeout=10.0,
            name=f"register_{user}",
        )
        self.callee = Sipp(
            scenario,
            log_dir=log_dir,
            local_port=self.local_port,
            service=user,
            calls=calls,
            duration_ms=duration_ms,
            timeout=timeout,
            extra_args=extra_args,
            name=f"callee_{user}",
        )

    @property
    def contact(self) -> str:
        """The registered Contact URI."""
        return f"sip:{self.user}@{LOCALHOST}:{self.local_port};transport=UDP"

    def start(self) -> RegisteredCallee:
        """Register (fails with the flow if Kamailio does not answer 200), then listen."""
        self.registration.start()
        code = self.registration.wait(20.0)
        if code != 0:
            raise PeerError(
                f"{self.user} could not register at {self.kamailio.address} (sipp exit {code})\n"
                + self.registration.diagnostics()
            )
        self.callee.start()
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the callee scenario to finish; return sipp's exit code."""
        return self.callee.wait(timeout)

    def stop(self) -> None:
        """Stop both sipp runs (idempotent)."""
        self.callee.stop()
        self.registration.stop()


class PeerSet:
    """The peers of one test; :meth:`stop_all` stops them, newest first.

    The ``peers`` fixture owns one and calls :meth:`stop_all` in its
    finalizer, whatever the test's outcome.
    """

    def __init__(self, *, log_dir: Path, workdir: Path) -> None:
        self.log_dir = log_dir
        self.workdir = workdir
        self._stoppers: list[Callable[[], object]] = []

    def process(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        """Start any program (its binary must be on PATH)."""
        require_binary(str(argv[0]))
        proc = ManagedProcess(argv, name=name, log_dir=self.log_dir, cwd=cwd, env=env)
        self._stoppers.append(proc.stop)
        return proc.start()

    def kamailio(
        self,
        *,
        domain: str = LOCALHOST,
        users: Mapping[str, str] | None = None,
        qop: bool = True,
        name: str = "kamailio",
    ) -> Kamailio:
        """Start a :class:`Kamailio` on a free port."""
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        kam = Kamailio(
            workdir=workdir, log_dir=self.log_dir, domain=domain, users=users, qop=qop, name=name
        )
        self._stoppers.append(kam.stop)
        return kam.start()

    def sipp(
        self,
        scenario: str | Path,
        *,
        local_port: int | None = None,
        remote: str | None = None,
        service: str | None = None,
        caller: str | None = None,
        auth: tuple[str, str] | None = None,
        media_port: int | None = None,
        calls: int = 1,
        duration_ms: int | None = None,
        transport: Literal["u1", "t1"] = "u1",
        variables: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        name: str | None = None,
    ) -> Sipp:
        """Start a :class:`Sipp` (the arguments are the class's, but ``log_dir``)."""
        sipp = Sipp(
            scenario,
            log_dir=self.log_dir,
            local_port=local_port,
            remote=remote,
            service=service,
            caller=caller,
            auth=auth,
            media_port=media_port,
            calls=calls,
            duration_ms=duration_ms,
            transport=transport,
            variables=variables,
            timeout=timeout,
            extra_args=extra_args,
            name=name,
        )
        self._stoppers.append(sipp.stop)
        return sipp.start()

    def registered_callee(
        self,
        kamailio: Kamailio,
        *,
        user: str,
        password: str | None = None,
        scenario: str | Path = "uas_answer_wait_bye.xml",
        calls: int = 1,
        duration_ms: int | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> RegisteredCallee:
        """Register ``user`` at ``kamailio`` and start its callee scenario."""
        callee = RegisteredCallee(
            kamailio,
            user=user,
            log_dir=self.log_dir,
            password=password,
            scenario=scenario,
            calls=calls,
            duration_ms=duration_ms,
            timeout=timeout,
            extra_args=extra_args,
        )
        self._stoppers.append(callee.stop)
        return callee.start()

    def stop_all(self) -> None:
        """Stop every peer started here, newest first; errors do not stop the sweep."""
        errors: list[BaseException] = []
        while self._stoppers:
            stop = self._stoppers.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others, report afterwards
                errors.append(exc)
        if errors:
            raise PeerError(f"{len(errors)} peer(s) failed to stop: {errors!r}")


@contextlib.contextmanager
def peer_set(log_dir: Path, workdir: Path) -> Iterator[PeerSet]:
    """A :class:`PeerSet` stopped on exit, for use outside pytest fixtures."""
    peers = PeerSet(log_dir=log_dir, workdir=workdir)
    try:
        yield peers
    finally:
        peers.stop_all()
