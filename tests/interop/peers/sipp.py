"""sipp runs, their scenarios and their message traces."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.interop.peers.base import (
    LOCALHOST,
    SCENARIOS_DIR,
    ManagedProcess,
    PeerError,
    PeerTimeout,
    free_port,
    port_is_bound,
    require_binary,
    wait_until,
)
from tests.interop.peers.kamailio import Kamailio


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
