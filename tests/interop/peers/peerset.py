"""The peers of one test, stopped together."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from tests.interop.peers.base import LOCALHOST, ManagedProcess, PeerError, require_binary
from tests.interop.peers.kamailio import Kamailio
from tests.interop.peers.sipp import RegisteredCallee, Sipp


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
            workdir=workdir,
            log_dir=self.log_dir,
            domain=domain,
            users=users,
            qop=qop,
            name=name,
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
