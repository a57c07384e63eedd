"""sipbridge: an asyncio-native SIP/RTP media gateway.

The embedded library (docs/library.md)::

    from sipbridge import Gateway, Settings

    async with Gateway(settings) as gw:
        call = gw.place_call(callee="bob", sip_domain="example.org", to_stream="bob")
        await call.established()
        async for frame in gw.streams.get("bob").subscribe(): ...

The names below are imported on first use (PEP 562), so ``import sipbridge.settings``
does not load the media stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sipbridge.callinfo import CallInfo, CallRequest, CallStatus
    from sipbridge.calls import Call, CallNotEstablished
    from sipbridge.events import (
        CallStatusEvent,
        Event,
        EventBus,
        EventSubscription,
        StreamStatusEvent,
    )
    from sipbridge.gateway import Gateway
    from sipbridge.registry import Stream, StreamEnded, StreamStatus, Subscription
    from sipbridge.settings import Settings, load_settings

__all__ = [
    "Call",
    "CallInfo",
    "CallNotEstablished",
    "CallRequest",
    "CallStatus",
    "CallStatusEvent",
    "Event",
    "EventBus",
    "EventSubscription",
    "Gateway",
    "Settings",
    "Stream",
    "StreamEnded",
    "StreamStatus",
    "StreamStatusEvent",
    "Subscription",
    "load_settings",
]

_HOMES = {
    "Call": "sipbridge.calls",
    "CallNotEstablished": "sipbridge.calls",
    "CallInfo": "sipbridge.callinfo",
    "CallRequest": "sipbridge.callinfo",
    "CallStatus": "sipbridge.callinfo",
    "CallStatusEvent": "sipbridge.events",
    "Event": "sipbridge.events",
    "EventBus": "sipbridge.events",
    "EventSubscription": "sipbridge.events",
    "StreamStatusEvent": "sipbridge.events",
    "Gateway": "sipbridge.gateway",
    "Stream": "sipbridge.registry",
    "StreamEnded": "sipbridge.registry",
    "StreamStatus": "sipbridge.registry",
    "Subscription": "sipbridge.registry",
    "Settings": "sipbridge.settings",
    "load_settings": "sipbridge.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sipbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
