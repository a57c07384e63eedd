"""The web pages: the console (``GET /``), the player (``GET /player``) and their assets.

The pages are plain HTML with JavaScript modules and one stylesheet, shipped
in the ``sipbridge/web`` directory (package data of ``sipbridge``) and served by this
application only: no build step, no CDN. Every file is read once, when the
routes are built; :data:`PAGE_FILES` lists what is served, so nothing else in
the package directory is ever exposed.

The pages carry no data; the data they show comes from ``/events``,
``/rest-api/*`` and ``/whep/*``. Still, when ``[http] api_token`` is set the
pages and their files are behind the token like the API (a gateway's console is
nothing to show the world): :class:`~sipbridge.api.auth.BearerAuthMiddleware`
answers a browser without credentials with the login form of
:mod:`sipbridge.api.login`, whose session cookie the pages' own requests then
carry. Pages served behind the token keep their "Log out" form (``#logout-form``,
a plain same-origin form ``POST logout``, so the CSRF check accepts it and the
browser lands on the login form); without a token the pages are public and that
form is cut out of them. A ``Content-Security-Policy``
limits every page to this origin, so a stray external reference fails loudly in
the browser instead of silently depending on the network.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sipbridge.api.errors import error_response
from sipbridge.api.login import AUTHENTICATED_SCOPE_KEY

__all__ = ["ASSET_PREFIX", "CONTENT_TYPES", "PAGE_FILES", "PageRoutes"]

ASSET_PREFIX: Final = "/web"

#: Every file served under :data:`ASSET_PREFIX` (the pages too, for completeness).
PAGE_FILES: Final = (
    "console.html",
    "player.html",
    "api.js",
    "console.js",
    "graphs.js",
    "player.js",
    "sipbridge.css",
)

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    # RFC 9239 §6: text/javascript is the one JavaScript media type; modules need it.
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# 'self' only; media from blob: (the player's MediaStream) and the player in an iframe.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; frame-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'"
)

_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Nothing leaves for other origins; same-origin POSTs (fetch) then carry a real
    # Origin header, not "null" as under no-referrer (Fetch §3.1), for the CSRF check.
    "Referrer-Policy": "same-origin",
    # The files change with the package; a reload must get the new ones.
    "Cache-Control": "no-cache",
}


# The pages' "Log out" form, with its indentation and line end: cut when there is no token.
_LOGOUT_FORM: Final = re.compile(
    rb'[ \t]*<form id="logout-form"[^>]*>.*?</form>[ \t]*\n?', re.DOTALL
)
#: The pages whose "Log out" form is shown only behind the token.
_PAGES_WITH_LOGOUT: Final = ("console.html", "player.html")


def _content_type(name: str) -> str:
    suffix = name[name.rfind(".") :]
    return CONTENT_TYPES[suffix]


class PageRoutes:
    """``GET /``, ``GET /player`` and ``GET /web/{name}`` from the package's ``web`` files."""

    def __init__(self, package: str = "sipbridge", directory: str = "web") -> None:
        root = resources.files(package).joinpath(directory)
        self._files = {name: root.joinpath(name).read_bytes() for name in PAGE_FILES}
        self._public_pages = {
            name: _LOGOUT_FORM.sub(b"", self._files[name]) for name in _PAGES_WITH_LOGOUT
        }

    def routes(self) -> list[BaseRoute]:
        """The page routes (GET and HEAD; other methods 405)."""
        return [
            Route("/", self.console, methods=["GET"]),
            Route("/player", self.player, methods=["GET"]),
            Route(ASSET_PREFIX + "/{name}", self.asset, methods=["GET"]),
        ]

    def _file(self, name: str) -> Response:
        return Response(content=self._files[name], headers=_HEADERS, media_type=_content_type(name))

    def _page(self, request: Request, name: str) -> Response:
        # Only a request the token check let through has anything to log out of.
        if request.scope.get(AUTHENTICATED_SCOPE_KEY):
            return self._file(name)
        return Response(
            content=self._public_pages[name], headers=_HEADERS, media_type=_content_type(name)
        )

    async def console(self, request: Request) -> Response:
        """``GET /``: the console (calls, streams, pushes, viewers, graphs)."""
        return self._page(request, "console.html")

    async def player(self, request: Request) -> Response:
        """``GET /player?stream=NAME``: plays the stream by WHEP (the page reads ``stream``)."""
        return self._page(request, "player.html")

    async def asset(self, request: Request) -> Response:
        """``GET /web/{name}``: one of :data:`PAGE_FILES`; anything else is 404."""
        name = request.path_params["name"]
        if name not in self._files:
            return error_response(404, "no such file")
        return self._file(name)
