"""A brute-force limit on ``POST /login``: failed logins per client address (sans-IO).

Theory of operation. Each client address has the times of its recent failed
logins. A failure older than the sliding window no longer counts. An address
with :data:`MAX_FAILURES` failures inside the window is locked out: the login
handler answers ``429 Too Many Requests`` with ``Retry-After`` (RFC 6585 §4,
RFC 9110 §10.2.3) *without comparing the token at all*, until the oldest of those
failures leaves the window. A success clears the address's failures.

The address is the ASGI ``client`` host, i.e. the peer of the TCP connection.
Behind a reverse proxy that is the proxy, so every browser shares one count and
one lock-out; the proxy should then limit logins itself. ``X-Forwarded-For`` is
not trusted, as any client can send one.

Memory is bounded: at most :data:`MAX_CLIENTS` addresses are tracked (the one
whose last failure is oldest is dropped for a new one), an address holds at most
``max_failures`` times, and an address whose last failure left the window is
forgotten. The entries sit in last-failure order, so the forgotten ones are
always at the front and each call drops them in amortized constant time.

No asyncio, no wall clock: ``now`` is passed in (seconds on a monotonic clock).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from typing import Final

__all__ = ["MAX_CLIENTS", "MAX_FAILURES", "WINDOW_SECONDS", "LoginRateLimiter"]

_log = logging.getLogger(__name__)

#: Failed logins from one address allowed within :data:`WINDOW_SECONDS`.
MAX_FAILURES: Final = 10
#: The sliding window over which failures count, in seconds.
WINDOW_SECONDS: Final = 300.0
#: Addresses tracked at most; the least recently failing one is dropped beyond.
MAX_CLIENTS: Final = 10_000


class LoginRateLimiter:
    """Counts failed logins per client address in a sliding window; locks out beyond it.

    ``retry_after(client, now)`` says whether the address may try (``None``) or
    for how many whole seconds it must wait (RFC 9110 §10.2.3 ``Retry-After``);
    ``record_failure`` and ``record_success`` report the outcome of a try.
    """

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {max_failures}")
        if not window > 0:
            raise ValueError(f"window must be positive, not {window}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        self._max_failures = max_failures
        self._window = window
        self._max_clients = max_clients
        # address -> failure times (oldest first); ordered by last failure, oldest first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """The number of addresses tracked."""
        return len(self._failures)

    def __contains__(self, client: object) -> bool:
        return client in self._failures

    def _forget_expired(self, now: float) -> None:
        horizon = now - self._window
        while self._failures:
            client, times = next(iter(self._failures.items()))
            if times[-1] > horizon:
                return
            del self._failures[client]

    def _recent(self, client: str, now: float) -> deque[float] | None:
        """The failure times of ``client`` still inside the window, or ``None``."""
        self._forget_expired(now)
        times = self._failures.get(client)
        if times is None:
            return None
        horizon = now - self._window
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def retry_after(self, client: str, now: float) -> int | None:
        """``None`` when ``client`` may try to log in, else the seconds to wait (at least 1)."""
        times = self._recent(client, now)
        if times is None or len(times) < self._max_failures:
            return None
        # The lock lifts when the oldest counted failure leaves the window.
        return max(1, math.ceil(times[0] + self._window - now))

    def record_failure(self, client: str, now: float) -> bool:
        """Count a failed login of ``client``; ``True`` when this one locks it out.

        The lock-out is logged once, as a WARNING naming the address only.
        """
        times = self._recent(client, now)
        if times is None:
            while len(self._failures) >= self._max_clients:
                self._failures.popitem(last=False)
            times = deque(maxlen=self._max_failures)
            self._failures[client] = times
        else:
            self._failures.move_to_end(client)
        was_locked = len(times) >= self._max_failures
        times.append(now)
        locked = not was_locked and len(times) >= self._max_failures
        if locked:
            _log.warning(
                "login: %s locked out after %d failed logins within %g s",
                client,
                len(times),
                self._window,
            )
        return locked

    def record_success(self, client: str) -> None:
        """A right token from ``client``: its failures no longer count."""
        self._failures.pop(client, None)
