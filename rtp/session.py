"""The asyncio shell of a call's media: UDP sockets in, the sans-IO core, UDP out.

:class:`RtpSession` takes the already-bound sockets of a call (RTP and RTCP per
track, reserved when the SDP offer was made), wraps each in an asyncio
datagram endpoint, feeds every datagram to the sans-IO :class:`MediaCore`
with the loop's time, sends what the core wants sent, and keeps one timer
armed at the core's next deadline (the aioquic pattern, like the SIP side).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["MediaCore", "RtpSession"]

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Large enough for a burst of a few keyframes at high bitrate (~1.5 MB).
RECEIVE_BUFFER = 4 * 1024 * 1024


class MediaCore(Protocol):
    """What :class:`RtpSession` drives (see :class:`rtp.media.CallMedia`)."""

    def receive(self, socket_name: str, data: bytes, source: Address, now: float) -> None: ...

    def datagrams_to_send(self) -> list[tuple[str, bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession, name: str) -> None:
        self.session = session
        self.name = name

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.session._on_datagram(self.name, data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("media socket %s: %s", self.name, exc)


class RtpSession:
    """Runs one call's :class:`MediaCore` on its sockets until :meth:`stop`."""

    def __init__(
        self,
        core: MediaCore,
        sockets: Mapping[str, socket.socket],
        *,
        on_activity: Callable[[], None] | None = None,
    ) -> None:
        self.core = core
        self._sockets = dict(sockets)
        self._on_activity = on_activity
        self._transports: dict[str, asyncio.DatagramTransport] = {}
        self._timer: asyncio.Handle | None = None
        self._timer_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name, sock in self._sockets.items():
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                log.debug("could not enlarge the receive buffer of %s", name)
            transport, _ = await self._loop.create_datagram_endpoint(
                functools.partial(_Endpoint, self, name), sock=sock
            )
            self._transports[name] = transport
        self._flush()

    async def stop(self) -> None:
        """Close every socket (idempotent)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    def now(self) -> float:
        """The loop's clock (the time the core is given)."""
        return self._loop.time() if self._loop is not None else 0.0

    def act(self, action: Callable[[float], object]) -> None:
        """Run ``action(now)`` on the core (e.g. a keyframe request), then flush."""
        if self._loop is None or self._stopped:
            return
        action(self._loop.time())
        self._flush()

    def _on_datagram(self, name: str, data: bytes, source: Address) -> None:
        loop = self._loop
        if loop is None or self._stopped:
            return
        try:
            self.core.receive(name, data, source, loop.time())
        except Exception:
            log.exception("media core failed on a datagram from %s", source)
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        if self._loop is None or self._stopped:
            return
        try:
            self.core.handle_timer(self._loop.time())
        except Exception:
            log.exception("media core failed in its timer")
        self._flush()

    def _flush(self) -> None:
        # Runs after every datagram (33 % of the ingest CPU in bench/ingest.py's first
        # profile): locals, and no work for what the datagram did not produce.
        loop = self._loop
        if loop is None or self._stopped:
            return
        core = self.core
        datagrams = core.datagrams_to_send()
        if datagrams:
            transports = self._transports
            for name, data, address in datagrams:
                transport = transports.get(name)
                if transport is not None:
                    transport.sendto(data, address)
        if self._on_activity is not None:
            try:
                self._on_activity()
            except Exception:
                log.exception("error while dispatching media events")
        deadline = core.get_timer()
        timer = self._timer
        if timer is not None:
            if deadline is not None and abs(self._timer_deadline - deadline) < 1e-4:
                return
            timer.cancel()
            self._timer = None
        if deadline is not None:
            # uvloop returns a plain Handle (no .when()) for a deadline already past.
            self._timer_deadline = deadline
            # uvloop's clock has 1 ms steps and runs a timer up to 0.5 ms early; a core
            # woken before its deadline does nothing and asks again: a spin. Waking on
            # the next whole millisecond after the deadline avoids it (bench/ingest.py).
            wake = math.ceil(deadline * 1000.0) / 1000.0 + 0.001
            now = loop.time()
            self._timer = loop.call_at(wake if wake > now else now, self._on_timer)
