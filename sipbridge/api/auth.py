"""The API token check for the REST API, WHEP, the event feed and the pages.

Credentials are either the header form of RFC 6750 §2.1 (``Authorization:
Bearer <token>``, for API clients) or the session cookie a browser receives from
``POST /login`` (:mod:`sipbridge.api.login`; RFC 6265), which the pages' own
``fetch()`` and ``EventSource`` carry without setting any header.

When the operator sets ``[http] api_token``, every request under a protected
prefix (:data:`PROTECTED_PREFIXES`: ``/rest-api``, ``/whep``, ``/events``; the app
adds ``/metrics`` and ``/web``) and every request for a page path (``/``,
``/player``) must carry one of them: none (or a non-Bearer header and no cookie)
is 401 with ``WWW-Authenticate: Bearer``, a wrong token or a cookie this process
did not issue is 403. A page path answers those with the login form instead of
JSON (:func:`~sipbridge.api.login.page_challenge`). A Bearer header, when
present, decides alone. The comparisons are constant-time
(``hmac.compare_digest``) so response timing does not reveal how much of a
guess was right.

Cookies ride on requests a foreign page triggers too (CSRF). Besides the
cookie's ``SameSite=Strict``, a cookie-authenticated unsafe method (RFC 9110
§9.2.1: anything but GET, HEAD, OPTIONS, TRACE) from another site
(``Sec-Fetch-Site``, else an ``Origin`` that is not this host) is 403
(:func:`~sipbridge.api.login.same_origin`); Bearer requests are not subject to
it, as no browser adds that header on its own.

A request let through carries :data:`~sipbridge.api.login.AUTHENTICATED_SCOPE_KEY`
in its ASGI scope (``"bearer"`` or ``"cookie"``): the pages then show their
"Log out" button.

Readiness probes (``/rest-api/health``) are exempt, and so is every ``OPTIONS``
request: a browser's CORS preflight never carries credentials (Fetch standard,
"CORS-preflight request"), and it reveals nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sipbridge.api.errors import error_response
from sipbridge.api.login import (
    AUTHENTICATED_SCOPE_KEY,
    SESSION_COOKIE,
    SessionCookie,
    page_challenge,
    same_origin,
)

__all__ = ["EXEMPT_PATHS", "PAGE_PATHS", "PROTECTED_PREFIXES", "BearerAuthMiddleware"]

PROTECTED_PREFIXES = ("/rest-api", "/whep", "/events")
EXEMPT_PATHS = ("/rest-api/health",)
#: Exact paths answered with the login form (HTML) instead of a JSON error.
PAGE_PATHS = ("/", "/player")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class BearerAuthMiddleware:
    """ASGI middleware refusing protected requests without the token or the session cookie.

    ``session`` issues and checks the cookie (one is made from ``token`` when not
    given; pass the same one to :class:`~sipbridge.api.login.LoginRoutes`).
    ``page_paths`` are protected too and answered with the login form.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        protected_prefixes: Iterable[str] = PROTECTED_PREFIXES,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
        page_paths: Iterable[str] = (),
        session: SessionCookie | None = None,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._app = app
        self._token = token.encode("utf-8")
        self._prefixes = tuple(prefix.rstrip("/") for prefix in protected_prefixes)
        self._exempt = frozenset(exempt_paths)
        self._pages = frozenset(page_paths)
        self._session = SessionCookie(token) if session is None else session

    def _is_protected(self, method: str, path: str) -> bool:
        if method == "OPTIONS" or path in self._exempt:
            return False
        if path in self._pages:
            return True
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self._prefixes)

    def _authenticate(self, scope: Scope) -> str | Response:
        """``"bearer"`` or ``"cookie"`` when the request may pass, else the 401/403 answer."""
        connection = HTTPConnection(scope)
        page = scope["path"] in self._pages
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            # Headers are latin-1 decoded by Starlette; re-encoding gives the bytes sent.
            if hmac.compare_digest(credentials.strip().encode("latin-1"), self._token):
                return "bearer"
            if page:
                return page_challenge(scope, wrong=True)
            return error_response(403, "invalid bearer token")
        cookie = connection.cookies.get(SESSION_COOKIE)
        if not cookie:
            if page:
                return page_challenge(scope, wrong=False)
            return error_response(
                401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        if not self._session.cookie_matches(cookie):
            if page:
                return page_challenge(scope, wrong=True)
            return error_response(403, "invalid session cookie")
        if scope["method"] not in _SAFE_METHODS and not same_origin(scope):
            return error_response(403, "cross-origin request refused")
        return "cookie"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_protected(scope["method"], scope["path"]):
            await self._app(scope, receive, send)
            return
        outcome = self._authenticate(scope)
        if isinstance(outcome, str):
            await self._app({**scope, AUTHENTICATED_SCOPE_KEY: outcome}, receive, send)
            return
        await outcome(scope, receive, send)
