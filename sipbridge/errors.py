"""Typed errors of the gateway's public API.

The REST layer maps each to an HTTP status and a JSON body
``{"status": N, "error": "...", "field": "..."}``; a library user catches
them by class.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of the errors the :class:`~sipbridge.gateway.Gateway` raises to its callers."""

    status: int = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(GatewayError):
    """The request names a bad value (HTTP 400)."""

    status = 400


class NotFound(GatewayError):
    """No object with that id (HTTP 404)."""

    status = 404


class Conflict(GatewayError):
    """The request clashes with an object that already exists (HTTP 409)."""

    status = 409


class NotSupported(GatewayError):
    """Valid, but not available in this build or this call's state (HTTP 501)."""

    status = 501
