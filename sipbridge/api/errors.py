"""JSON error answers of the REST API.

Every error the API answers has the body ``{"status": N, "error": "...", "field": "..."}``
(``field`` omitted when no single request field is at fault), whatever raised it:
a :class:`~sipbridge.errors.GatewayError` from the gateway or the body decoder, a
Starlette ``HTTPException`` (unknown path 404, wrong method 405), the bearer-token
check (401/403) or a bug (500, with the traceback only in the log).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sipbridge.errors import GatewayError

__all__ = [
    "INTERNAL_ERROR",
    "ErrorBody",
    "PayloadTooLarge",
    "error_response",
    "http_exception_handler",
    "json_response",
]

INTERNAL_ERROR = "internal error"

_encoder = msgspec.json.Encoder()


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON body of every error answer."""

    status: int
    error: str
    field: str | None = None


class PayloadTooLarge(GatewayError):
    """The request body is larger than the configured limit (HTTP 413)."""

    status = 413


def json_response(
    payload: object, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Encode ``payload`` (Structs, lists, dicts) with msgspec as an ``application/json`` answer."""
    return Response(
        content=_encoder.encode(payload),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The JSON error answer ``{"status": status, "error": message, "field": field}``."""
    return json_response(ErrorBody(status=status, error=message, field=field), status, headers)


# Starlette raises HTTPException without a detail for routing failures; these read better.
_HTTP_MESSAGES = {
    404: "no such endpoint",
    405: "method not allowed",
}


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer Starlette's routing errors (404 unknown path, 405 wrong method) as JSON.

    Keeps the ``Allow`` header Starlette puts on a 405 (RFC 9110 §15.5.6).
    """
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return error_response(500, INTERNAL_ERROR)
    message = _HTTP_MESSAGES.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)
