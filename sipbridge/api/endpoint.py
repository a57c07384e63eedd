"""Plumbing shared by the JSON endpoints: bounded body reading and error mapping.

A handler wrapped by :func:`json_endpoint` may raise any
:class:`~sipbridge.errors.GatewayError`; it becomes the JSON error answer of its
``status``. Anything else is a bug: it is logged with its traceback and answered
``{"status": 500, "error": "internal error"}``, so no handler can leak a
traceback (or what a traceback holds) to a client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sipbridge.api.errors import INTERNAL_ERROR, PayloadTooLarge, error_response
from sipbridge.errors import GatewayError

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Handler", "json_endpoint", "read_body"]

logger = logging.getLogger("sipbridge.api")

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`PayloadTooLarge` once it exceeds ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before reading anything;
    a chunked body is refused as soon as the running total passes it.
    """
    declared = request.headers.get("content-length", "")
    # The length check first: int() of thousands of digits is slow (and refused past 4300).
    if (
        declared.isascii()
        and declared.isdecimal()
        and (len(declared) > 18 or int(declared) > limit)
    ):
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
    return bytes(body)


def json_endpoint(handler: Handler) -> Handler:
    """Wrap ``handler`` so every exception becomes a JSON error answer (see module doc)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            logger.info(
                "%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message
            )
            return error_response(exc.status, exc.message, exc.field)
        except ClientDisconnect:
            # Nobody is left to read an answer; not a server fault worth a traceback.
            logger.info("%s %s: client disconnected", request.method, request.url.path)
            return error_response(400, "client disconnected")
        except Exception:
            logger.exception("%s %s: unhandled error", request.method, request.url.path)
            return error_response(500, INTERNAL_ERROR)

    return endpoint


class PostRoutes:
    """Base of a route module: POST handlers that read a bounded JSON body.

    Subclasses list their handlers in :meth:`handlers`; :meth:`routes` wraps each
    with :func:`json_endpoint` for the ``/rest-api`` mount (anything but POST: 405).
    They declare, for the OpenAPI document (:mod:`sipbridge.api.openapi`), each path's
    request body Struct and ``200`` answer type in :attr:`schemas`, and the error
    statuses their handlers answer in :attr:`error_statuses`.
    """

    #: path -> (request body Struct, type of the ``200`` answer's JSON).
    schemas: ClassVar[Mapping[str, tuple[type, object]]] = {}
    #: Error statuses the handlers answer (besides 401/403 of the token check).
    error_statuses: ClassVar[tuple[int, ...]] = (400, 404, 409, 413, 500)

    def __init__(self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._max_body_bytes = max_body_bytes

    def handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def routes(self) -> list[BaseRoute]:
        """Routes relative to the ``/rest-api`` mount; POST only (anything else: 405)."""
        return [
            Route(path, json_endpoint(handler), methods=["POST"])
            for path, handler in self.handlers().items()
        ]

    async def _body(self, request: Request) -> bytes:
        # Content-Type is not checked: WCS clients post JSON as text/plain.
        return await read_body(request, self._max_body_bytes)
