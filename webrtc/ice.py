"""The one place where aioice's choice of ICE host addresses is overridden.

aioice 0.13 gathers host candidates (RFC 8445 §5.1.1.1) on the addresses its
module-level ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)`` returns:
every interface address except ``127.0.0.1`` and ``::1``. aiortc offers no
option to choose them. :func:`install` replaces that function once, process
wide, by one that returns the addresses set in a :class:`contextvars.ContextVar`
when one is set, and aioice's own answer otherwise; :func:`host_addresses`
sets it for the code (and the tasks it starts) inside a ``with`` block.

A context variable, not a plain global, because several peer connections may
gather at once in one process with different wishes (the gateway's sessions
with ``ice_addresses``, a test's client on loopback, other aioice users that
keep the default). aiortc gathers inside ``setLocalDescription`` through
``asyncio.gather``, whose tasks copy the caller's context, so the value set
around that call reaches aioice.

Relies on: ``aioice.ice.Connection.gather_candidates`` looking the function up
in the ``aioice.ice`` module namespace at call time (true in 0.13, pinned).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import aioice.ice

__all__ = ["host_addresses", "install"]

_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "sipbridge_ice_addresses", default=None
)
_original: Callable[[bool, bool], list[str]] | None = None


def _patched(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    wanted = _ADDRESSES.get()
    if wanted is not None:
        return list(wanted)
    assert _original is not None
    return _original(use_ipv4, use_ipv6)


def install() -> None:
    """Route aioice's host address lookup through :func:`host_addresses`. Idempotent."""
    global _original
    if _original is None:
        _original = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _patched


@contextlib.contextmanager
def host_addresses(addresses: tuple[str, ...]) -> Iterator[None]:
    """Within the block, ICE gathering offers exactly ``addresses`` as host candidates;
    an empty tuple keeps aioice's default (every non-loopback interface)."""
    install()
    token = _ADDRESSES.set(addresses or None)
    try:
        yield
    finally:
        _ADDRESSES.reset(token)
