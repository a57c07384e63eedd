"""``/rest-api/call/*``: WCS's call methods (see the shared REST contract, ``/call/*``).

Each handler reads the bounded body, decodes it with the endpoint's msgspec
decoder, calls one :class:`~sipbridge.api.protocol.GatewayAPI` method and encodes
the answer: the affected ``CallInfo`` for actions, a JSON array for ``find*``
(404 when it would be empty, as WCS does). Errors are mapped by
:func:`~sipbridge.api.endpoint.json_endpoint`.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from sipbridge.api.bodies import (
    CALL_ID_DECODER,
    EMPTY_DECODER,
    FIND_CALLS_DECODER,
    SEND_DTMF_DECODER,
    START_CALL_DECODER,
    CallIdBody,
    EmptyBody,
    FindCallsBody,
    SendDtmfBody,
    StartCallBody,
    decode_body,
    parse_dtmf,
    parse_dtmf_method,
    require_call_id,
    to_call_filter,
    to_call_request,
)
from sipbridge.api.endpoint import (
    DEFAULT_MAX_BODY_BYTES,
    Handler,
    PostRoutes,
)
from sipbridge.api.errors import json_response
from sipbridge.api.protocol import GatewayAPI
from sipbridge.callinfo import CallInfo
from sipbridge.errors import GatewayError, NotFound

__all__ = ["CallRoutes"]

logger = logging.getLogger("sipbridge.api.calls")


class CallRoutes(PostRoutes):
    """The ``/call/*`` handlers bound to one gateway; :meth:`routes` lists them for a Mount."""

    schemas = {
        "/call/startup": (StartCallBody, CallInfo),
        "/call/terminate": (CallIdBody, CallInfo),
        "/call/find": (FindCallsBody, list[CallInfo]),
        "/call/find_all": (EmptyBody, list[CallInfo]),
        "/call/hold": (CallIdBody, CallInfo),
        "/call/unhold": (CallIdBody, CallInfo),
        "/call/send_dtmf": (SendDtmfBody, CallInfo),
    }
    # 501: the gateway is not started, or the DTMF method is not available for the call.
    error_statuses = (*PostRoutes.error_statuses, 501)

    def __init__(
        self, gateway: GatewayAPI, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes)
        self._gateway = gateway

    def handlers(self) -> dict[str, Handler]:
        return {
            "/call/startup": self.startup,
            "/call/terminate": self.terminate,
            "/call/find": self.find,
            "/call/find_all": self.find_all,
            "/call/hold": self.hold,
            "/call/unhold": self.unhold,
            "/call/send_dtmf": self.send_dtmf,
        }

    async def startup(self, request: Request) -> Response:
        """``/call/startup``: start an outbound call; answers at once (NEW/PENDING)."""
        body = decode_body(START_CALL_DECODER, await self._body(request))
        call_request = to_call_request(body)
        logger.debug("call startup: %r", call_request)  # CallRequest's repr masks the password
        try:
            info = (await self._gateway.start_call(call_request)).snapshot()
        except GatewayError as exc:
            # Belt and braces: the gateway's message must not carry the password either.
            secret = call_request.sip_password
            if len(secret) >= 4 and secret in exc.message:
                exc.message = exc.message.replace(secret, "***")
                exc.args = (exc.message,)
            raise
        logger.info("call %s to %s started (%s)", info.callId, info.callee, info.status.value)
        return json_response(info)

    async def terminate(self, request: Request) -> Response:
        """``/call/terminate``: BYE, or CANCEL before the answer; an ended call answers as is."""
        body = decode_body(CALL_ID_DECODER, await self._body(request))
        return json_response(await self._gateway.terminate_call(require_call_id(body.call_id)))

    async def find(self, request: Request) -> Response:
        """``/call/find``: the calls matching every given filter; 404 when none does."""
        wanted = to_call_filter(decode_body(FIND_CALLS_DECODER, await self._body(request)))
        calls = self._gateway.find_calls(
            call_id=wanted.call_id,
            callee=wanted.callee,
            rtmp_url=wanted.rtmp_url,
            status=wanted.status,
        )
        return _found(calls)

    async def find_all(self, request: Request) -> Response:
        """``/call/find_all``: every call; 404 when there is none."""
        decode_body(EMPTY_DECODER, await self._body(request))
        return _found(self._gateway.all_calls())

    async def hold(self, request: Request) -> Response:
        """``/call/hold``: re-INVITE sendonly (RFC 3264 §8.4); 409 unless ESTABLISHED."""
        body = decode_body(CALL_ID_DECODER, await self._body(request))
        return json_response(await self._gateway.hold_call(require_call_id(body.call_id)))

    async def unhold(self, request: Request) -> Response:
        """``/call/unhold``: re-INVITE sendrecv; 409 unless on HOLD."""
        body = decode_body(CALL_ID_DECODER, await self._body(request))
        return json_response(await self._gateway.unhold_call(require_call_id(body.call_id)))

    async def send_dtmf(self, request: Request) -> Response:
        """``/call/send_dtmf``: ``dtmf`` digits by ``type`` RFC2833 (RFC 4733) or SIP INFO."""
        body = decode_body(SEND_DTMF_DECODER, await self._body(request))
        call_id = require_call_id(body.call_id)
        digits = parse_dtmf(body.dtmf)
        method = parse_dtmf_method(body.type)
        return json_response(await self._gateway.send_dtmf(call_id, digits, method))


def _found(calls: list[CallInfo]) -> Response:
    if not calls:
        raise NotFound("no call matched")
    return json_response(calls)
