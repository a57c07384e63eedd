"""Browser login for the web pages: a form, a session cookie, a CSRF origin check.

When ``[http] api_token`` is set, :class:`~sipbridge.api.auth.BearerAuthMiddleware`
protects the pages (``/``, ``/player``, ``/web/*``) as well as the API. A browser
cannot add ``Authorization: Bearer`` to a page load, an ``<img>`` or an
``EventSource``, so it logs in once instead:

1. ``GET /`` (or ``/player?...``) without credentials answers ``401`` with
   :func:`login_page`: a self-contained form (inline CSS, no script, no other
   asset) posting to ``login`` with the page asked for in ``next``.
2. ``POST /login`` (``application/x-www-form-urlencoded``, at most
   :data:`MAX_LOGIN_BODY_BYTES`) compares the token in constant time; if right it
   sets the :data:`SESSION_COOKIE` (RFC 6265 §4.1: ``HttpOnly``, ``SameSite=Strict``,
   ``Path=/``, ``Secure`` when the request came over https) and answers ``303``
   back to ``next`` (RFC 9110 §15.4.4); if wrong it shows the form again with ``403``.
   After :data:`~sipbridge.api.ratelimit.MAX_FAILURES` wrong tokens from one client
   address within :data:`~sipbridge.api.ratelimit.WINDOW_SECONDS` it answers ``429``
   with ``Retry-After`` (RFC 6585 §4) and the form, without comparing the token
   (:class:`~sipbridge.api.ratelimit.LoginRateLimiter`).
3. ``POST /logout`` clears the cookie and answers ``303`` to the console. The
   pages served behind the token carry a "Log out" button posting there (the
   middleware marks such requests with :data:`AUTHENTICATED_SCOPE_KEY`).

The cookie holds no token: :class:`SessionCookie` gives an HMAC-SHA256 of the
token under a key drawn at random when the app is built (RFC 2104), so a stolen
cookie does not reveal the token and every cookie dies with the process.

Cookies ride on every request to this host, also those a foreign page triggers,
so besides ``SameSite=Strict`` the middleware refuses cookie-authenticated unsafe
methods coming from another site (``Sec-Fetch-Site``, else ``Origin``: :func:`same_origin`); the
login and logout forms are checked the same way (login CSRF). ``next`` is
accepted only as a same-site path (:func:`safe_next`) so the form cannot be used
as an open redirect; the ``Location`` is relative (``./player?...``, RFC 3986
§5.2) so the redirect also works behind a proxy serving the app under a sub-path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from html import escape
from typing import Final
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from sipbridge.api.endpoint import read_body
from sipbridge.api.errors import PayloadTooLarge, error_response
from sipbridge.api.ratelimit import LoginRateLimiter

__all__ = [
    "AUTHENTICATED_SCOPE_KEY",
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "MAX_LOGIN_BODY_BYTES",
    "SESSION_COOKIE",
    "LoginRoutes",
    "SessionCookie",
    "login_page",
    "page_challenge",
    "safe_next",
    "same_origin",
]

SESSION_COOKIE: Final = "sipbridge_token"
LOGIN_PATH: Final = "/login"
LOGOUT_PATH: Final = "/logout"
#: ASGI scope key the token check sets on a request it let through ("bearer" or
#: "cookie"); the pages then show their "Log out" button.
AUTHENTICATED_SCOPE_KEY: Final = "sipbridge.authenticated"
#: A form with a token and a ``next`` path; anything larger is not a login.
MAX_LOGIN_BODY_BYTES: Final = 4096
#: Longest ``next`` path kept; a longer one falls back to the console.
MAX_NEXT_CHARS: Final = 2048

_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_DEFAULT_PORTS: Final = {"http": "80", "https": "443", "ws": "80", "wss": "443"}

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;background:#f4f4f4;margin:0}"
    "form{max-width:22em;margin:4em auto;padding:1.2em 1.5em;background:#fff;"
    "border:2px solid #f9a825;border-radius:6px}"
    "h1{font-size:1.2em;margin:0 0 .6em}p{margin:0 0 .8em}"
    "label,input,button{display:block;width:100%;box-sizing:border-box}"
    "input{margin:.3em 0 .8em;padding:.4em}button{padding:.5em}"
    ".error{color:#b71c1c}"
)
# The page's one inline style is allowed by its hash; nothing else may load (CSP 3 §8.3).
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
LOGIN_CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'self'"
)
_LOGIN_HEADERS: Final = {
    "Content-Security-Policy": LOGIN_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it the form's POST carries "Origin: null" (Fetch §3.1).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SessionCookie:
    """The value of :data:`SESSION_COOKIE` for one API token, and its check.

    The value is ``HMAC-SHA256(key, token)`` in hex (RFC 2104); ``key`` defaults to
    32 random bytes, so cookies issued by one process are refused by the next.
    """

    def __init__(self, token: str, *, key: bytes | None = None) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._token = token.encode("utf-8")
        self._key = secrets.token_bytes(32) if key is None else key
        self._value = hmac.new(self._key, self._token, hashlib.sha256).hexdigest()

    def value(self) -> str:
        """The cookie value a logged-in browser holds."""
        return self._value

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the API token (constant-time)."""
        return hmac.compare_digest(candidate.encode("utf-8"), self._token)

    def cookie_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is a cookie value this process issued (constant-time)."""
        # Cookies are latin-1 decoded by Starlette; re-encoding gives the bytes sent.
        return hmac.compare_digest(
            candidate.encode("latin-1", "replace"), self._value.encode("ascii")
        )


def same_origin(scope: Scope) -> bool:
    """Whether the request comes from a page of this host (a CSRF check).

    The browser's own word first: ``Sec-Fetch-Site`` (Fetch Metadata Request
    Headers §2.4), when present, must be ``same-origin`` or ``none`` (typed by the
    user). Without it, the ``Origin`` (RFC 6454 §7), when present, must be this
    host: its host and port are compared with the ``Host`` header, default ports
    ignored; the scheme is not, as a TLS-terminating proxy in front changes it.
    ``Origin: null`` (sandboxed frames, cross-origin redirects) is refused. A
    request with neither (a client that is no browser) passes.
    """
    headers = Headers(scope=scope)
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return False
    host = headers.get("host", "").strip().lower()
    if not host:
        return False
    # Without a port the Host inherits the Origin's default one: a TLS proxy may sit between.
    suffix = f":{_DEFAULT_PORTS[parts.scheme]}"
    return parts.netloc.lower().removesuffix(suffix) == host.removesuffix(suffix)


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this site (``/player?stream=s``), else ``"/"``.

    Refused: anything with a scheme or authority (``https://evil``, ``//evil``),
    backslashes (browsers read ``/\\evil`` as ``//evil``), control characters and
    whitespace, or more than :data:`MAX_NEXT_CHARS` characters.
    """
    if not value or len(value) > MAX_NEXT_CHARS or not value.startswith("/"):
        return "/"
    if value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _relative(path: str) -> str:
    # "./player?..." resolves against /login to the app's /player, also under a prefix.
    return "." + path


def _request_path(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    path: str = scope["path"]
    return path + ("?" + query if query else "")


def login_page(
    status: int, *, next_path: str, message: str, clear_cookie: bool = False
) -> Response:
    """The self-contained login form (``status`` 401, 403 or 429, or 200 on ``GET /login``).

    ``next_path`` is escaped into a hidden field; ``clear_cookie`` also deletes a
    stale :data:`SESSION_COOKIE` (one from before a restart).
    """
    reason_class = ' class="error"' if status in (403, 429) else ""
    body = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<title>sipbridge login</title>\n<link rel="icon" href="data:,">\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        '<form id="login-form" method="post" action="login">\n'
        "<h1>sipbridge</h1>\n"
        f'<p id="login-reason"{reason_class}>'
        f"{escape(message)}</p>\n"
        '<label for="login-token">API token</label>\n'
        '<input id="login-token" name="token" type="password" autocomplete="current-password"'
        " required autofocus>\n"
        f'<input type="hidden" name="next" value="{escape(safe_next(next_path), quote=True)}">\n'
        '<button type="submit">Log in</button>\n</form>\n</body>\n</html>\n'
    )
    headers = dict(_LOGIN_HEADERS)
    if status == 401:
        # RFC 9110 §15.5.2: a 401 names a scheme; API clients may still send Bearer.
        headers["WWW-Authenticate"] = "Bearer"
    response = Response(body, status_code=status, headers=headers, media_type="text/html")
    if clear_cookie:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _locked_out(next_path: str, wait: int) -> Response:
    """429 with the form and ``Retry-After: wait`` (RFC 6585 §4, RFC 9110 §10.2.3)."""
    unit = "second" if wait == 1 else "seconds"
    response = login_page(
        429,
        next_path=next_path,
        message=f"Too many failed logins from this address. Wait {wait} {unit}, then try again.",
    )
    response.headers["Retry-After"] = str(wait)
    return response


def page_challenge(scope: Scope, *, wrong: bool) -> Response:
    """The answer to a page request without (401) or with wrong (403) credentials."""
    if wrong:
        return login_page(
            403,
            next_path=_request_path(scope),
            message="The session or token is not valid (any more). Log in again.",
            clear_cookie=True,
        )
    return login_page(
        401, next_path=_request_path(scope), message="This server needs its API token."
    )


class LoginRoutes:
    """``GET``/``POST /login`` and ``POST /logout`` for one :class:`SessionCookie`.

    ``limiter`` counts failed logins per client address (a default
    :class:`~sipbridge.api.ratelimit.LoginRateLimiter` when not given); ``clock``
    gives its ``now`` (monotonic seconds).
    """

    def __init__(
        self,
        session: SessionCookie,
        *,
        limiter: LoginRateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._limiter = LoginRateLimiter() if limiter is None else limiter
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        """The login routes (``GET /login`` shows the form; other methods 405)."""
        return [
            Route(LOGIN_PATH, self.form, methods=["GET"]),
            Route(LOGIN_PATH, self.login, methods=["POST"]),
            Route(LOGOUT_PATH, self.logout, methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        """``GET /login?next=PATH``: the form, 200."""
        return login_page(
            200,
            next_path=safe_next(request.query_params.get("next")),
            message="This server needs its API token.",
        )

    async def login(self, request: Request) -> Response:
        """``POST /login`` (``token``, ``next``): 303 to ``next`` with the cookie, or 403.

        429 with ``Retry-After`` (RFC 6585 §4) while the client address is locked
        out for too many failures; the token is then not even compared.
        """
        if not same_origin(request.scope):
            return error_response(403, "cross-origin request refused")
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != _FORM_TYPE:
            return error_response(415, f"content type must be {_FORM_TYPE}")
        try:
            raw = await read_body(request, MAX_LOGIN_BODY_BYTES)
        except PayloadTooLarge as exc:
            return error_response(413, str(exc))
        try:
            fields = parse_qs(raw.decode("utf-8"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return error_response(400, "malformed form")
        token = fields.get("token", [""])[0].strip()
        next_path = safe_next(fields.get("next", ["/"])[0])
        # The TCP peer: behind a reverse proxy every browser shares the proxy's count.
        client = request.client.host if request.client is not None else ""
        now = self._clock()
        wait = self._limiter.retry_after(client, now)
        if wait is not None:
            return _locked_out(next_path, wait)
        if not token:
            return login_page(401, next_path=next_path, message="Enter the API token.")
        if not self._session.token_matches(token):
            self._limiter.record_failure(client, now)
            return login_page(403, next_path=next_path, message="Wrong token. Try again.")
        self._limiter.record_success(client)
        # RedirectResponse percent-encodes what a Location may not hold (RFC 3986 §2.1).
        response = RedirectResponse(
            _relative(next_path), status_code=303, headers={"Cache-Control": "no-store"}
        )
        response.set_cookie(
            SESSION_COOKIE,
            self._session.value(),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """``POST /logout``: clears the cookie, 303 to the console (its login form)."""
        if not same_origin(request.scope):
            return error_response(403, "cross-origin request refused")
        response = RedirectResponse("./", status_code=303, headers={"Cache-Control": "no-store"})
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
