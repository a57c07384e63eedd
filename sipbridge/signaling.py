"""The asyncio shell around the sans-IO SIP core.

:class:`SipEndpoint` owns the :class:`~sipbridge.sip.transport.SipTransport`
and the :class:`~sipbridge.sip.ua.UserAgent`. It feeds the core every message
and transport error with the loop's time, sends what the core produced, and
keeps one ``loop.call_at`` timer armed at the core's next deadline (the
aioquic pattern). Code that acts on a sans-IO flow does it through
:meth:`SipEndpoint.act`, so the output is flushed and the timer re-armed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from sipbridge.settings import SipSettings
from sipbridge.sip.address import Target
from sipbridge.sip.message import SipRequest, SipResponse
from sipbridge.sip.transaction import Timers
from sipbridge.sip.transport import SipTransport
from sipbridge.sip.ua import LocalEndpoint, UserAgent

__all__ = ["SipEndpoint"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SipEndpoint:
    """One SIP listening address, its transport and its user agent core."""

    def __init__(self, settings: SipSettings, *, on_activity: Callable[[], None]) -> None:
        self.settings = settings
        self._on_activity = on_activity
        self._transport = SipTransport(
            settings.host,
            settings.port,
            on_message=self._on_message,
            on_error=self._on_error,
            max_message_size=settings.max_message_size,
        )
        self.ua: UserAgent | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._transport.start()
        port = self._transport.local_port
        local = LocalEndpoint(
            host=self.settings.host,
            port=port,
            public_host=self.settings.public_address,
            public_port=self.settings.public_port,
            user_agent=self.settings.user_agent,
        )
        timers = Timers(t1=self.settings.t1, t2=self.settings.t2, t4=self.settings.t4)
        self.ua = UserAgent(local, timers=timers)
        log.info("SIP listening on %s:%d (udp, tcp)", self.settings.host, port)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._transport.stop()

    @property
    def local_port(self) -> int:
        return self._transport.local_port

    def set_trace(self, enabled: bool) -> None:
        self._transport.set_trace(enabled)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def act(self, action: Callable[[float], T]) -> T:
        """Run ``action(now)`` on the core, then send its output and re-arm the timer."""
        try:
            return action(self.now())
        finally:
            self._flush()

    # -- transport callbacks ---------------------------------------------------
    def _on_message(self, message: SipRequest | SipResponse, source: Target) -> None:
        if self.ua is None:
            return
        self.ua.receive(message, source, self.now())
        self._flush()

    def _on_error(self, target: Target, reason: str) -> None:
        if self.ua is None:
            return
        self.ua.transport_error(target, reason, self.now())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        if self.ua is None:
            return
        self.ua.handle_timer(self.now())
        self._flush()

    def _flush(self) -> None:
        if self.ua is None or self._loop is None:
            return
        for message, target in self.ua.messages_to_send():
            self._transport.send(message, target)
        try:
            self._on_activity()
        except Exception:
            log.exception("error while dispatching SIP events")
        for message, target in self.ua.messages_to_send():
            self._transport.send(message, target)
        deadline = self.ua.get_timer()
        if self._timer is not None:
            if deadline is not None and abs(self._timer_deadline - deadline) < 1e-6:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            # uvloop returns a plain Handle (no .when()) for a deadline already past.
            self._timer_deadline = deadline
            self._timer = self._loop.call_at(max(deadline, self._loop.time()), self._on_timer)
