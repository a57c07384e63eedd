"""The session timer of one dialog (RFC 4028), sans-IO.

Theory of operation
-------------------
A :class:`SessionTimer` holds the interval we ask for (``Session-Expires`` of our
requests, raised by a 422's ``Min-SE``), and after each successful refresh
transaction who refreshes and when:

- when we are the refresher, a refresh is due at half the interval (§10);
- when the peer is, the session is given up ``min(32, interval / 3)`` seconds
  before it expires (§10), so that our BYE still reaches the peer in time.

The owner reads :meth:`get_timer` and asks :meth:`refresh_due` /
:meth:`expiry_due` when it fires; both consume the deadline they report. The
"refresh" itself (re-INVITE or UPDATE) and the BYE are the owner's business.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionExpires", "SessionTimer", "parse_min_se"]


@dataclass(frozen=True)
class SessionExpires:
    """A ``Session-Expires`` value: delta-seconds and the refresher param (RFC 4028 §4).

    ``refresher`` is ``"uac"``, ``"uas"`` or ``None`` when absent; another value is
    kept lower-cased as received, and names neither side.
    """

    interval: int
    refresher: str | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        """Parse a header value; ``ValueError`` when it does not start with delta-seconds."""
        interval_text, _, params = value.partition(";")
        interval_text = interval_text.strip()
        if not (interval_text.isascii() and interval_text.isdigit()):
            raise ValueError(f"Session-Expires is not delta-seconds: {value[:80]!r}")
        refresher: str | None = None
        for param in params.split(";"):
            name, _, param_value = param.partition("=")
            if name.strip().lower() == "refresher":
                refresher = param_value.strip().lower()
        return cls(int(interval_text), refresher)

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher}"


def parse_min_se(value: str | None) -> int | None:
    """The delta-seconds of a ``Min-SE`` value (RFC 4028 §5), ``None`` if absent or malformed."""
    text = (value or "").split(";")[0].strip()
    return int(text) if text.isascii() and text.isdigit() else None


class SessionTimer:
    """RFC 4028 state of one dialog: the interval, who refreshes, and the next deadline."""

    def __init__(self, interval: int, min_se: int) -> None:
        #: The Session-Expires we ask for and, once armed, the one agreed; 0 disables.
        self.interval = interval
        self.min_se = min_se
        self.refresh_at: float | None = None
        self.expire_at: float | None = None

    def headers(self, refresher: str | None = None) -> list[tuple[str, str]]:
        """``Session-Expires`` and ``Min-SE`` for a request we send (§7.1, §7.4).

        Empty when the timer is disabled. ``refresher`` is omitted in an initial
        INVITE, leaving the choice to the answerer (§7.1).
        """
        if not self.interval:
            return []
        return [
            ("Session-Expires", str(SessionExpires(self.interval, refresher))),
            ("Min-SE", str(self.min_se)),
        ]

    def raise_interval(self, min_se: int) -> bool:
        """Adopt a 422's larger ``Min-SE`` (§7.4); whether the interval grew."""
        if min_se <= self.interval:
            return False
        self.interval = min_se
        return True

    def arm(self, header: str | None, now: float, *, we_are: str) -> None:
        """Start the timer from the ``Session-Expires`` of a 2xx (§7.2, §9).

        ``we_are`` is our role in that transaction (``"uac"`` or ``"uas"``); a value
        without ``refresher`` makes the UAC the refresher. An absent or malformed
        value leaves the timer as it was.
        """
        if not header:
            return
        try:
            value = SessionExpires.parse(header)
        except ValueError:
            return
        self.interval = value.interval
        if (value.refresher or "uac") == we_are:
            self.refresh_at = now + value.interval / 2
            self.expire_at = None
        else:
            self.refresh_at = None
            self.expire_at = now + value.interval - min(32.0, value.interval / 3)

    def answer(self, header: str | None, now: float) -> list[tuple[str, str]]:
        """Headers of our 2xx to a peer's refresh request, arming the timer (§9).

        The peer sent the request, so in this transaction it is the UAC: it refreshes
        unless it asked us to. Empty when the request carried no usable
        ``Session-Expires``.
        """
        if header is None:
            return []
        try:
            asked = SessionExpires.parse(header)
        except ValueError:
            return []
        value = SessionExpires(asked.interval, "uas" if asked.refresher == "uas" else "uac")
        self.arm(str(value), now, we_are="uas")
        return [("Require", "timer"), ("Session-Expires", str(value))]

    def stop(self) -> None:
        """No refresh and no expiry any more: the session is ending."""
        self.refresh_at = self.expire_at = None

    def refresh_due(self, now: float) -> bool:
        """Whether our refresh is due; consumes that deadline."""
        if self.refresh_at is None or now < self.refresh_at:
            return False
        self.refresh_at = None
        return True

    def expiry_due(self, now: float) -> bool:
        """Whether the peer missed its refresh and we must end the session; consumes it."""
        if self.expire_at is None or now < self.expire_at:
            return False
        self.expire_at = None
        return True

    def get_timer(self) -> float | None:
        """The next deadline, or ``None``."""
        present = [d for d in (self.refresh_at, self.expire_at) if d is not None]
        return min(present) if present else None
