"""sd_notify and the watchdog (sipbridge.systemd) against real AF_UNIX datagram sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipbridge.systemd import (
    NOTIFY_SOCKET_ENV,
    WATCHDOG_PID_ENV,
    WATCHDOG_USEC_ENV,
    NotifyError,
    SystemdNotifier,
    Watchdog,
    notify_address,
    watchdog_interval,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sbn", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket, and its NOTIFY_SOCKET value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(short_dir / "notify")
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield sock, path
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, without blocking."""
    found: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            found.append(sock.recv(4096).decode())
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(2.0)


# --------------------------------------------------------------------------- addresses


def test_notify_address_path_and_abstract() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sipbridge/notify") == b"\0sipbridge/notify"


@pytest.mark.parametrize("value", ["run/notify", "@", "vsock:2:1234", ""])
def test_notify_address_rejects_others(value: str) -> None:
    with pytest.raises(NotifyError) as err:
        notify_address(value)
    assert str(err.value) == (
        "NOTIFY_SOCKET must be an absolute path or an abstract socket name "
        f"starting with '@', got {value!r}"
    )


def test_watchdog_interval_from_usec() -> None:
    assert watchdog_interval({}, 10) is None
    assert watchdog_interval({WATCHDOG_USEC_ENV: ""}, 10) is None
    assert watchdog_interval({WATCHDOG_USEC_ENV: "30000000"}, 10) == 30.0
    assert watchdog_interval({WATCHDOG_USEC_ENV: "500000", WATCHDOG_PID_ENV: "10"}, 10) == 0.5


def test_watchdog_of_another_process_is_not_ours() -> None:
    assert watchdog_interval({WATCHDOG_USEC_ENV: "500000", WATCHDOG_PID_ENV: "11"}, 10) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({WATCHDOG_USEC_ENV: "0"}, "WATCHDOG_USEC must be a positive integer, got '0'"),
        ({WATCHDOG_USEC_ENV: "1.5"}, "WATCHDOG_USEC must be a positive integer, got '1.5'"),
        (
            {WATCHDOG_USEC_ENV: "1", WATCHDOG_PID_ENV: "x"},
            "WATCHDOG_PID must be a process id, got 'x'",
        ),
    ],
)
def test_watchdog_interval_rejects_garbage(env: dict[str, str], message: str) -> None:
    with pytest.raises(NotifyError) as err:
        watchdog_interval(env, 10)
    assert str(err.value) == message


# --------------------------------------------------------------------------- environment


def test_from_environ_reads_and_unsets_the_variables() -> None:
    env = {
        NOTIFY_SOCKET_ENV: "@x",
        WATCHDOG_USEC_ENV: "2000000",
        WATCHDOG_PID_ENV: "42",
        "PATH": "/bin",
    }
    notifier = SystemdNotifier.from_environ(env, pid=42)
    assert notifier.enabled
    assert notifier.address == b"\0x"
    assert notifier.watchdog_interval == 2.0
    assert env == {"PATH": "/bin"}  # hooks started later inherit none of them


def test_from_environ_without_systemd_is_disabled() -> None:
    notifier = SystemdNotifier.from_environ({}, pid=1)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.sent == []


def test_watchdog_without_notify_socket_is_off() -> None:
    notifier = SystemdNotifier.from_environ({WATCHDOG_USEC_ENV: "1000000"}, pid=1)
    assert notifier.watchdog_interval is None


def test_from_environ_bad_values_disable_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    env = {NOTIFY_SOCKET_ENV: "relative", WATCHDOG_USEC_ENV: "soon"}
    with caplog.at_level(logging.WARNING, logger="sipbridge.systemd"):
        notifier = SystemdNotifier.from_environ(env, pid=1)
    assert not notifier.enabled
    assert env == {}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "systemd notifications disabled: NOTIFY_SOCKET must be an absolute path or an "
        "abstract socket name starting with '@', got 'relative'",
        "systemd watchdog disabled: WATCHDOG_USEC must be a positive integer, got 'soon'",
    ]


def test_from_environ_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    monkeypatch.setenv(NOTIFY_SOCKET_ENV, path)
    monkeypatch.setenv(WATCHDOG_USEC_ENV, "4000000")
    monkeypatch.setenv(WATCHDOG_PID_ENV, str(os.getpid()))
    notifier = SystemdNotifier.from_environ()
    assert NOTIFY_SOCKET_ENV not in os.environ
    assert WATCHDOG_USEC_ENV not in os.environ
    assert notifier.watchdog_interval == 4.0
    assert notifier.status("up")
    assert sock.recv(4096) == b"STATUS=up"
    notifier.close()


# --------------------------------------------------------------------------- sending


def test_messages_arrive_on_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier(notify_address(path))
    assert notifier.ready("serving: REST\nhttp://x")
    assert notifier.watchdog()
    assert notifier.stopping("stopping: 1 call(s)")
    assert notifier.send("EXTEND_TIMEOUT_USEC=1000000")
    received = [sock.recv(4096).decode() for _ in range(4)]
    assert received == [
        "READY=1\nSTATUS=serving: REST http://x",  # a newline would start a bogus assignment
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping: 1 call(s)",
        "EXTEND_TIMEOUT_USEC=1000000",
    ]
    assert notifier.sent == received
    notifier.close()


def test_messages_arrive_on_an_abstract_socket() -> None:
    name = f"sipbridge-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        notifier = SystemdNotifier(notify_address("@" + name))
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        notifier.close()


def test_a_missing_socket_is_a_warning_not_an_error(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier(str(short_dir / "gone"))
    with caplog.at_level(logging.WARNING, logger="sipbridge.systemd"):
        assert notifier.ready("x") is False
    assert notifier.sent == []
    [record] = caplog.records
    assert record.getMessage().startswith("systemd notification 'READY=1' not sent: ")
    assert "No such file or directory" in record.getMessage()
    notifier.close()


def test_the_socket_is_non_blocking_and_reopened_after_close(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = SystemdNotifier(path)
    assert notifier.watchdog()
    assert notifier._sock is not None
    assert notifier._sock.getblocking() is False  # systemd's queue full drops, never waits
    notifier.close()
    assert notifier._sock is None
    assert notifier.watchdog()
    assert drain(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    notifier.close()


# --------------------------------------------------------------------------- watchdog


async def test_watchdog_pings_at_half_the_interval(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier(path, watchdog_interval=0.1)
    watchdog = Watchdog(notifier)
    assert watchdog.period == 0.05
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    watchdog.start()
    watchdog.start()  # idempotent: still one task
    try:
        pings = [await asyncio.wait_for(loop.sock_recv(sock, 4096), 2.0) for _ in range(3)]
    finally:
        await watchdog.stop()
    assert pings == [b"WATCHDOG=1"] * 3
    assert watchdog.pings >= 3
    count = watchdog.pings
    await asyncio.sleep(0.12)  # stopped: no more pings
    assert watchdog.pings == count
    notifier.close()


async def test_watchdog_pings_only_while_the_loop_turns(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = SystemdNotifier(path, watchdog_interval=0.02)
    watchdog = Watchdog(notifier)
    watchdog.start()
    await asyncio.sleep(0)  # the first ping goes out at once
    time.sleep(0.3)  # a blocked event loop: 30 periods pass without a ping
    assert drain(sock) == ["WATCHDOG=1"]
    await watchdog.stop()
    notifier.close()


async def test_watchdog_without_interval_starts_nothing() -> None:
    watchdog = Watchdog(SystemdNotifier("/nonexistent", watchdog_interval=None))
    watchdog.start()
    assert watchdog.period is None
    assert watchdog._task is None
    await watchdog.stop()
    assert watchdog.pings == 0


def test_a_disabled_notifier_has_no_watchdog() -> None:
    assert SystemdNotifier(None, watchdog_interval=5.0).watchdog_interval is None
