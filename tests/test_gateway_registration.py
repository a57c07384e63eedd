"""A failed REGISTER before a call (``sipRegisterRequired``): the call's ``info`` says why.

WCS reports ``Failed by registration error``; sipbridge keeps that prefix and adds
the reason (the registrar's status line, ``timeout`` or the transport's error), so
``/call/find`` tells a wrong password from an untrusted certificate without the
log. Real sockets on 127.0.0.1: a scripted UDP registrar and a TLS server with a
self-signed certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from sipbridge.callinfo import CallRequest, CallStatus
from sipbridge.gateway import Gateway
from sipbridge.settings import Settings, SipSettings
from sipbridge.sip.auth import DigestChallenge, format_challenge
from sipbridge.sip.message import SipRequest, make_response, parse_message
from tests.sip.test_transport_tls import TlsPeer, make_cert

HOST = "127.0.0.1"
PASSWORD = "pw-never-shown"
TIMEOUT = 10.0


class Registrar(asyncio.DatagramProtocol):
    """Answers REGISTER: 401 with a challenge, then ``final`` to the authorized retry;
    ``final=None`` answers nothing."""

    def __init__(self, final: tuple[int, str] | None) -> None:
        self.final = final
        self.requests: list[SipRequest] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not always a DatagramTransport subclass (selector transports), but one in use.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        if not isinstance(request, SipRequest) or request.method != "REGISTER":
            return
        self.requests.append(request)
        if self.final is None:
            return
        assert self.transport is not None
        if "Authorization" not in request.headers:
            challenge = format_challenge(DigestChallenge(realm=HOST, nonce="n1", qop=("auth",)))
            response = make_response(
                request, 401, to_tag="reg", headers=[("WWW-Authenticate", challenge)]
            )
        else:
            response = make_response(request, self.final[0], self.final[1], to_tag="reg")
        self.transport.sendto(response.to_bytes(), addr)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway(Settings(sip=SipSettings(host=HOST, port=0, default_domain=HOST)))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(timeout=1.0)


async def _registrar(final: tuple[int, str] | None) -> tuple[Registrar, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Registrar(final), local_addr=(HOST, 0)
    )
    return protocol, int(transport.get_extra_info("sockname")[1])


def _request(call_id: str, port: int, transport: str | None = None) -> CallRequest:
    return CallRequest(
        call_id=call_id,
        callee="bob",
        sip_login="alice",
        sip_password=PASSWORD,
        sip_domain=HOST,
        sip_port=port,
        sip_register_required=True,
        sip_transport=transport,
    )


async def _failed_call(gateway: Gateway, request: CallRequest) -> tuple[str, int | None]:
    call = await gateway.start_call(request)
    assert await call.ended(timeout=TIMEOUT) is CallStatus.FAILED
    info = call.snapshot()
    assert info.info is not None
    assert PASSWORD not in info.info
    assert call.flow is None  # no INVITE after a failed REGISTER
    return info.info, info.sipStatus


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ((403, "Forbidden"), "Failed by registration error: 403 Forbidden"),
        ((404, "Not Found"), "Failed by registration error: 404 Not Found"),
        ((401, "Unauthorized"), "Failed by registration error: 401 Unauthorized"),
    ],
)
async def test_registrar_refusal_is_the_reason(
    gateway: Gateway, final: tuple[int, str], expected: str
) -> None:
    registrar, port = await _registrar(final)
    try:
        info, sip_status = await _failed_call(gateway, _request("r1", port))
    finally:
        assert registrar.transport is not None
        registrar.transport.close()
    assert info == expected
    assert sip_status == final[0]
    assert [r.method for r in registrar.requests] == ["REGISTER", "REGISTER"]


async def test_no_answer_is_a_timeout(gateway: Gateway) -> None:
    gateway.register_timeout = 0.3  # the registrar never answers: do not wait for Timer F
    registrar, port = await _registrar(None)
    try:
        info, sip_status = await _failed_call(gateway, _request("r2", port))
    finally:
        assert registrar.transport is not None
        registrar.transport.close()
    assert info == "Failed by registration error: timeout"
    assert sip_status is None
    assert registrar.requests  # the REGISTER went out


async def test_untrusted_tls_certificate_is_the_reason(gateway: Gateway, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    peer = TlsPeer(cert, key)
    port = await peer.start()
    try:
        info, sip_status = await _failed_call(gateway, _request("r3", port, "TLS"))
    finally:
        await peer.stop()
    assert info == (
        "Failed by registration error: TLS certificate verify failed: self-signed certificate"
    )
    assert sip_status is None
    assert not peer.requests  # nothing was sent over the rejected connection
