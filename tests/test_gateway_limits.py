"""Gateway limits: ``[sip] max_calls`` refuses calls beyond it, before reserving anything."""

from __future__ import annotations

import pytest

from sipbridge.callinfo import CallRequest
from sipbridge.errors import Conflict
from sipbridge.gateway import Gateway
from sipbridge.settings import Settings, SipSettings


def _request(call_id: str) -> CallRequest:
    # Port 9 (discard): nobody answers; the call stays in progress until stopped.
    return CallRequest(call_id=call_id, callee="bob", sip_domain="127.0.0.1", sip_port=9)


async def test_calls_beyond_max_calls_are_refused_until_one_ends() -> None:
    settings = Settings(
        sip=SipSettings(host="127.0.0.1", port=0, default_domain="127.0.0.1", max_calls=2)
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        first = await gateway.start_call(_request("c1"))
        await gateway.start_call(_request("c2"))
        with pytest.raises(Conflict, match=r"too many calls: 2 active, \[sip\] max_calls is 2"):
            await gateway.start_call(_request("c3"))
        assert gateway.streams.get("c3") is None  # nothing reserved for the refused call
        await gateway.terminate_call(first.call_id)
        await first.ended(timeout=5)
        third = await gateway.start_call(_request("c3"))
        assert not third.is_final
    finally:
        await gateway.stop(timeout=1.0)
