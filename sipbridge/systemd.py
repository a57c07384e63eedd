"""systemd integration without libsystemd: ``sd_notify`` and the service's unit file.

Theory of operation
-------------------
A ``Type=notify`` service tells systemd about itself by datagrams on the
``AF_UNIX`` socket named in ``$NOTIFY_SOCKET`` (``sd_notify(3)``): newline
separated ``KEY=VALUE`` assignments, e.g. ``READY=1\\nSTATUS=serving``. The
name is a filesystem path (``/run/systemd/notify``) or, when it starts with
``@``, a name in Linux's abstract socket namespace (the ``@`` stands for a
leading NUL byte). :class:`SystemdNotifier` sends them from a non-blocking
socket, so a notification never stalls the event loop; a failure to send is a
log line, never an exception: the gateway must run the same with or without
systemd.

``WatchdogSec=`` in the unit makes systemd pass ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``, the process meant): unless ``WATCHDOG=1`` arrives at least
that often, systemd kills and (``Restart=on-failure``) restarts the service.
:class:`Watchdog` sends it from a task *on the event loop*, at half the
interval as ``sd_watchdog_enabled(3)`` advises: the pings prove the loop
itself turns, so a loop stuck in a blocking call is caught, where a helper
thread would keep pinging for a dead service.

:meth:`SystemdNotifier.from_environ` removes the three variables from the
environment, like ``sd_notify(unset_environment=1)``: child processes (the
recorder's ``on_finish_command`` hooks) must not notify or feed the watchdog
on the gateway's behalf.

The second half of the module renders the packaged unit file
(``sipbridge/data/sipbridge.service``) for one installation and installs it
(``sipbridge install-service``): it only writes files (and runs ``useradd``
when asked), so it works, and is tested, without systemd, into any root.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sipbridge.settings import SettingsError, load_settings

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_USER",
    "NOTIFY_SOCKET_ENV",
    "STATE_DIRECTORY",
    "UNIT_NAME",
    "WATCHDOG_PID_ENV",
    "WATCHDOG_USEC_ENV",
    "InstallError",
    "InstallPlan",
    "NotifyError",
    "SystemdNotifier",
    "Watchdog",
    "default_exec_start",
    "install_service",
    "notify_address",
    "packaged_unit",
    "render_unit",
    "useradd_command",
    "watchdog_interval",
]

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


class NotifyError(ValueError):
    """``$NOTIFY_SOCKET`` or ``$WATCHDOG_USEC``/``$WATCHDOG_PID`` hold an invalid value."""


def notify_address(value: str) -> str | bytes:
    """The socket address named by ``$NOTIFY_SOCKET`` (``sd_notify(3)``).

    An absolute path is returned as is; ``@name`` becomes ``b"\\0name"``, the
    abstract namespace address. Anything else raises :class:`NotifyError`.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise NotifyError(
        f"{NOTIFY_SOCKET_ENV} must be an absolute path or an abstract socket name "
        f"starting with '@', got {value!r}"
    )


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog interval in seconds asked for by systemd (``sd_watchdog_enabled(3)``).

    None when ``$WATCHDOG_USEC`` is unset or ``$WATCHDOG_PID`` names another
    process (the variables were inherited, the watchdog is not ours).
    """
    raw = environ.get(WATCHDOG_USEC_ENV)
    if raw is None or raw == "":
        return None
    owner = environ.get(WATCHDOG_PID_ENV)
    if owner:
        if not owner.isdigit():
            raise NotifyError(f"{WATCHDOG_PID_ENV} must be a process id, got {owner!r}")
        if int(owner) != pid:
            return None
    if not raw.isdigit() or int(raw) == 0:
        raise NotifyError(f"{WATCHDOG_USEC_ENV} must be a positive integer, got {raw!r}")
    return int(raw) / 1_000_000


def _status_line(text: str) -> str:
    # One assignment per line: a newline inside STATUS= would start a bogus one.
    return "STATUS=" + " ".join(text.split())


class SystemdNotifier:
    """Sends ``sd_notify(3)`` state changes to the socket systemd named.

    ``address`` None disables it: every method then does nothing and returns
    False, so callers never test whether systemd is there.
    """

    def __init__(self, address: str | bytes | None, *, watchdog_interval: float | None = None):
        self.address = address
        self.watchdog_interval = watchdog_interval if address is not None else None
        self.sent: list[str] = []  # every message sent, for logs and tests
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, pid: int | None = None
    ) -> SystemdNotifier:
        """A notifier for ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (default: ``os.environ``).

        The variables are removed from ``environ`` (module doc: why). An invalid
        value is logged and disables that part, never fails the service.
        """
        env = os.environ if environ is None else environ
        raw = env.pop(NOTIFY_SOCKET_ENV, "")
        interval_env = {k: env.pop(k) for k in (WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV) if k in env}
        address: str | bytes | None = None
        interval: float | None = None
        if raw:
            try:
                address = notify_address(raw)
            except NotifyError as exc:
                log.warning("systemd notifications disabled: %s", exc)
        try:
            interval = watchdog_interval(interval_env, os.getpid() if pid is None else pid)
        except NotifyError as exc:
            log.warning("systemd watchdog disabled: %s", exc)
        return cls(address, watchdog_interval=interval)

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False if disabled or it failed."""
        if self.address is None:
            return False
        message = "\n".join(assignments)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never wait on systemd: a full queue drops this message, not the loop's time.
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            log.warning("systemd notification %r not sent: %s", message.split("\n")[0], exc)
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished, the service serves."""
        return self.send("READY=1", *([_status_line(status)] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the service began its shutdown."""
        return self.send("STOPPING=1", *([_status_line(status)] if status else []))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """``STATUS=``: free text shown by ``systemctl status``."""
        return self.send(_status_line(text))

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Sends ``WATCHDOG=1`` from the event loop every half watchdog interval.

    Does nothing when the notifier has no watchdog interval. ``start()`` and
    ``stop()`` own the task; the first ping goes out at once.
    """

    def __init__(self, notifier: SystemdNotifier) -> None:
        self.notifier = notifier
        interval = notifier.watchdog_interval
        self.period = interval / 2 if interval is not None else None
        self.pings = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pinging (idempotent; a no-op without a watchdog)."""
        if self.period is None or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="systemd-watchdog")

    async def stop(self) -> None:
        """Stop pinging; returns once the task has ended."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        assert self.period is not None
        while True:
            if self.notifier.watchdog():
                self.pings += 1
            await asyncio.sleep(self.period)


# --------------------------------------------------------------------------- the unit file

UNIT_NAME = "sipbridge.service"
DEFAULT_USER = "sipbridge"
DEFAULT_CONFIG = "/etc/sipbridge/settings.toml"
#: ``StateDirectory=sipbridge``: the service's working directory, writable under
#: ``ProtectSystem=strict``; relative recording directories land here.
STATE_DIRECTORY = "/var/lib/sipbridge"
#: Directories ``ProtectHome=yes`` hides from the service.
_HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")

_STARTER_CONFIG = """\
# sipbridge settings; docs/settings.md lists every key (all optional).
# Written by `sipbridge install-service`; it never overwrites this file.
[http]
host = "127.0.0.1"
port = 8081

[sip]
host = "127.0.0.1"
port = 5060

[record]
# Relative to the service's working directory, /var/lib/sipbridge.
directory = "recordings"

[service]
# Longest stop (SIGTERM to exit), seconds; keep TimeoutStopSec= in the unit above it.
stop_timeout = 20.0
"""


class InstallError(Exception):
    """``install-service`` could not complete; the message says what and where."""


def packaged_unit() -> str:
    """The unit file shipped in the package (``sipbridge/data/sipbridge.service``)."""
    return (importlib.resources.files("sipbridge") / "data" / UNIT_NAME).read_text()


def _unit_quote(arg: str) -> str:
    """One ``ExecStart=`` word (``systemd.service(5)``, "Command lines")."""
    # '%' starts a specifier and '$' a variable in ExecStart=; both are doubled.
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not re.search(r'[\s"\'\\;]', escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_exec_start(config: str) -> list[str]:
    """``sipbridge serve --config CONFIG`` for this installation's interpreter.

    The console script beside ``sys.executable`` (a virtualenv's ``bin/``) when
    there is one, else ``python -m sipbridge``.
    """
    script = Path(sys.executable).parent / "sipbridge"
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "sipbridge"]
    return [*program, "serve", "--config", config]


def render_unit(
    template: str,
    *,
    exec_start: Sequence[str],
    user: str,
    read_write_paths: Sequence[str] = (),
) -> str:
    """The unit ``template`` with its ``ExecStart=``, ``User=``, ``Group=`` set, and one
    ``ReadWritePaths=`` line per directory in ``read_write_paths`` after the
    ``#ReadWritePaths=`` placeholder line."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise InstallError(f"not a valid user name: {user!r}")
    values = {
        "ExecStart": " ".join(_unit_quote(arg) for arg in exec_start),
        "User": user,
        "Group": user,
    }
    lines: list[str] = []
    seen: set[str] = set()
    for line in template.splitlines():
        key = line.split("=", 1)[0]
        if key in values and "=" in line:
            line = f"{key}={values[key]}"
            seen.add(key)
        lines.append(line)
        if line.startswith("#ReadWritePaths=") and read_write_paths:
            lines += [f"ReadWritePaths={_unit_quote(p)}" for p in read_write_paths]
            read_write_paths = ()
    missing = sorted(set(values) - seen) + (["#ReadWritePaths"] if read_write_paths else [])
    if missing:
        raise InstallError(f"the unit template has no {', '.join(k + '=' for k in missing)} line")
    return "\n".join(lines) + "\n"


def useradd_command(user: str, *, prefix: str = "/") -> list[str]:
    """``useradd`` for the dedicated system user: no login, no home of its own (the state
    directory is its home), its own group; ``--prefix`` for an alternative root."""
    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", STATE_DIRECTORY, "--shell", "/usr/sbin/nologin"]
    command += ["--comment", "sipbridge SIP/RTP media gateway"]
    if os.path.abspath(prefix) != "/":
        command += ["--prefix", os.path.abspath(prefix)]
    return [*command, user]


def _user_ids(user: str, root: Path) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``user`` in the install root's user database, None if absent."""
    if root == Path("/"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid
    passwd = root / "etc" / "passwd"
    if not passwd.is_file():
        return None
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user and fields[2].isdigit() and fields[3].isdigit():
            return int(fields[2]), int(fields[3])
    return None


def _chown(path: Path, uid: int, gid: int) -> None:
    # Only root may give files away; an unprivileged install (a staging root) keeps its own.
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def _under(root: Path, absolute: str) -> Path:
    """``absolute`` (a path on the target system) inside the install root ``root``."""
    return root / PurePosixPath(absolute).relative_to("/")


@dataclass
class InstallPlan:
    """What :func:`install_service` did: files written, user created, advice printed."""

    unit_path: Path
    config_path: Path
    config_written: bool = False
    user_created: bool = False
    read_write_paths: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def install_service(
    *,
    user: str = DEFAULT_USER,
    config: str = DEFAULT_CONFIG,
    prefix: str | Path = "/",
    exec_start: Sequence[str] | None = None,
    create_user: bool = False,
    run: Callable[[list[str]], None] | None = None,
) -> InstallPlan:
    """Install the service into the root ``prefix``: the unit in ``etc/systemd/system/``,
    a starter settings file at ``config`` unless one is there (never overwritten), and,
    with ``create_user``, the system user (``useradd``, run by ``run``).

    An absolute ``[record] directory`` of the settings becomes a ``ReadWritePaths=``
    line (``ProtectSystem=strict`` makes everything else read-only) and is created.
    Never calls ``systemctl``: the caller reloads systemd (docs/operations.md).
    """
    if not PurePosixPath(config).is_absolute():
        raise InstallError(f"--config must be an absolute path, got {config!r}")
    root = Path(prefix).resolve()
    unit_path = _under(root, f"/etc/systemd/system/{UNIT_NAME}")
    config_path = _under(root, config)
    plan = InstallPlan(unit_path=unit_path, config_path=config_path)

    if create_user and _user_ids(user, root) is None:
        command = useradd_command(user, prefix=str(root))
        if run is None:
            if shutil.which(command[0]) is None:
                raise InstallError("useradd not found: create the user yourself (see --help)")
            run = _run_checked
        run(command)
        plan.user_created = True

    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(_STARTER_CONFIG)
        config_path.chmod(0o640)  # it may hold api_token and SIP passwords
        plan.config_written = True
        ids = _user_ids(user, root)
        if ids is not None:
            _chown(config_path, 0, ids[1])  # root-owned, readable by the service's group
    try:
        settings = load_settings(config_path, env={})
    except SettingsError as exc:
        raise InstallError(str(exc)) from None

    record_dir = settings.record.directory
    if PurePosixPath(record_dir).is_absolute() and not PurePosixPath(record_dir).is_relative_to(
        STATE_DIRECTORY
    ):
        plan.read_write_paths.append(record_dir)
        directory = _under(root, record_dir)
        if not directory.exists():
            directory.mkdir(parents=True)
            ids = _user_ids(user, root)
            if ids is not None:
                _chown(directory, *ids)

    argv = list(exec_start) if exec_start is not None else default_exec_start(config)
    if any(argv[0] == d or argv[0].startswith(d + "/") for d in _HIDDEN_BY_PROTECT_HOME):
        plan.warnings.append(
            f"{argv[0]} is under a directory ProtectHome=yes hides from the service: "
            "install sipbridge elsewhere (e.g. a virtualenv in /opt/sipbridge)"
        )
    unit = render_unit(
        packaged_unit(), exec_start=argv, user=user, read_write_paths=plan.read_write_paths
    )
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(unit)
    unit_path.chmod(0o644)
    return plan


def _run_checked(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(
            f"{shlex.join(command)} failed with status {result.returncode}: "
            + (result.stderr.strip() or result.stdout.strip())
        )
