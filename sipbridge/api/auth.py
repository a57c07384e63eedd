"""Bearer-token check for the REST API, WHEP and the event feed (RFC 6750 §2.1 header form).

When the operator sets ``[http] api_token``, every request under a protected
prefix (:data:`PROTECTED_PREFIXES`: ``/rest-api``, ``/whep``, ``/events``) must
carry ``Authorization: Bearer <token>``: no (or a non-Bearer) credential is 401
with ``WWW-Authenticate: Bearer``, a wrong token is 403. The comparison is
constant-time (``hmac.compare_digest``) so response timing does not reveal how
much of a guess was right. Readiness probes (``/rest-api/health``) are exempt,
and so is every ``OPTIONS`` request: a browser's CORS preflight never carries
credentials (Fetch standard, "CORS-preflight request"), and it reveals nothing.
The web pages (``/``, ``/player``, ``/web/*``) are not protected: they hold no
data and ask the user for the token themselves.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sipbridge.api.errors import error_response

__all__ = ["EXEMPT_PATHS", "PROTECTED_PREFIXES", "BearerAuthMiddleware"]

PROTECTED_PREFIXES = ("/rest-api", "/whep", "/events")
EXEMPT_PATHS = ("/rest-api/health",)


class BearerAuthMiddleware:
    """ASGI middleware refusing requests under ``protected_prefixes`` without the token."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        protected_prefixes: Iterable[str] = PROTECTED_PREFIXES,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._app = app
        self._token = token.encode("utf-8")
        self._prefixes = tuple(prefix.rstrip("/") for prefix in protected_prefixes)
        self._exempt = frozenset(exempt_paths)

    def _is_protected(self, method: str, path: str) -> bool:
        if method == "OPTIONS" or path in self._exempt:
            return False
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self._prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_protected(scope["method"], scope["path"]):
            await self._app(scope, receive, send)
            return
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            response = error_response(
                401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        # Headers are latin-1 decoded by Starlette; re-encoding gives the bytes sent.
        elif not hmac.compare_digest(credentials.strip().encode("latin-1"), self._token):
            response = error_response(403, "invalid bearer token")
        else:
            await self._app(scope, receive, send)
            return
        await response(scope, receive, send)
