"""The pages behind the API token: 401 login form, 403 on wrong credentials, POST /login
(cookie flags, safe redirects, body limits, login CSRF), POST /logout and the pages' "Log out"
form, no token -> public (without that form)."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.login import (
    LOGIN_CONTENT_SECURITY_POLICY,
    MAX_LOGIN_BODY_BYTES,
    SESSION_COOKIE,
    SessionCookie,
    login_page,
    safe_next,
)
from sipbridge.api.pages import ASSET_PREFIX, PAGE_FILES
from tests.api.fakes import FakeGateway

TOKEN = "t0ken-for-pages"
WEB = Path(__file__).resolve().parents[2] / "sipbridge" / "web"
PAGES = {"/": "console.html", "/player?stream=stream1": "player.html"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Form(HTMLParser):
    """The login page's tags: every start tag, and whether it has a <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def parse(html: str) -> Form:
    form = Form()
    form.feed(html)
    return form


def hidden_next(html: str) -> str | None:
    for tag, attrs in parse(html).tags:
        if tag == "input" and attrs.get("name") == "next":
            return attrs.get("value")
    raise AssertionError("no next field")


def assert_login_form(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    page = parse(response.text)
    names = [tag for tag, _ in page.tags]
    # Self-contained: no script, no stylesheet, no image, nothing to fetch.
    assert not {"script", "img", "iframe"} & set(names)
    assert all(
        not (attrs.get("src") or "") and (attrs.get("href") or "data:").startswith("data:")
        for _, attrs in page.tags
    )
    forms = [attrs for tag, attrs in page.tags if tag == "form"]
    assert forms == [{"id": "login-form", "method": "post", "action": "login"}]
    token_inputs = [a for t, a in page.tags if t == "input" and a.get("name") == "token"]
    assert token_inputs and token_inputs[0]["type"] == "password"
    # The inline style is allowed by its hash and nothing else loads.
    digest = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    csp = response.headers["content-security-policy"]
    assert csp == LOGIN_CONTENT_SECURITY_POLICY
    assert f"style-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    # Under no-referrer a browser's form POST would carry "Origin: null" and be refused.
    assert response.headers["referrer-policy"] == "same-origin"
    # No data of the gateway, and never the token.
    assert TOKEN not in response.text


@pytest.fixture
def client(gateway: FakeGateway) -> TestClient:
    return TestClient(create_app(gateway, api_token=TOKEN))


def log_in(client: TestClient, next_path: str = "/") -> httpx.Response:
    response: httpx.Response = client.post(
        "/login", data={"token": TOKEN, "next": next_path}, follow_redirects=False
    )
    return response


# ---- without credentials ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), PAGES.items())
def test_page_without_credentials_is_401_login_form(
    client: TestClient, path: str, name: str
) -> None:
    response = client.get(path)
    assert_login_form(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.content != (WEB / name).read_bytes()
    assert hidden_next(response.text) == path


@pytest.mark.parametrize("name", PAGE_FILES)
def test_assets_without_credentials_are_401(client: TestClient, name: str) -> None:
    response = client.get(f"{ASSET_PREFIX}/{name}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"status": 401, "error": "missing bearer token"}


def test_unknown_asset_is_401_too(client: TestClient) -> None:
    assert client.get(f"{ASSET_PREFIX}/nope.js").status_code == 401


def test_head_of_a_page_is_401(client: TestClient) -> None:
    response = client.head("/player")
    assert response.status_code == 401
    assert response.content == b""


# ---- wrong credentials -----------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_page_with_wrong_cookie_is_403_form_and_clears_it(client: TestClient, path: str) -> None:
    client.cookies.set(SESSION_COOKIE, SessionCookie(TOKEN).value())  # another process's
    response = client.get(path)
    assert_login_form(response, 403)
    assert "www-authenticate" not in response.headers
    cleared = response.headers["set-cookie"]
    assert cleared.startswith(f'{SESSION_COOKIE}="";') or cleared.startswith(f"{SESSION_COOKIE}=;")
    assert "Max-Age=0" in cleared


@pytest.mark.parametrize("path", PAGES)
def test_page_with_wrong_bearer_is_403(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Authorization": "Bearer wrong"})
    assert_login_form(response, 403)


def test_asset_with_wrong_cookie_is_403(client: TestClient) -> None:
    client.cookies.set(SESSION_COOKIE, "forged")
    response = client.get(f"{ASSET_PREFIX}/api.js")
    assert response.status_code == 403
    assert response.json()["error"] == "invalid session cookie"


# ---- right credentials -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), PAGES.items())
def test_page_with_bearer_is_served(client: TestClient, path: str, name: str) -> None:
    response = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.content == (WEB / name).read_bytes()


def test_login_then_pages_and_assets_are_served(client: TestClient) -> None:
    log_in(client)
    for path, name in PAGES.items():
        response = client.get(path)
        assert response.status_code == 200
        assert response.content == (WEB / name).read_bytes()
    for name in PAGE_FILES:
        assert client.get(f"{ASSET_PREFIX}/{name}").status_code == 200
    assert client.get(f"{ASSET_PREFIX}/nope.js").status_code == 404


def test_login_sets_the_cookie_with_its_flags(client: TestClient) -> None:
    response = log_in(client, "/player?stream=stream1")
    assert response.status_code == 303
    assert response.headers["location"] == "./player?stream=stream1"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    value, *attributes = [part.strip() for part in rest.split(";")]
    assert name == SESSION_COOKIE
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert TOKEN not in cookie
    flags = {a.split("=")[0].lower(): a.partition("=")[2] for a in attributes}
    assert flags["httponly"] == ""
    assert flags["samesite"].lower() == "strict"
    assert flags["path"] == "/"
    assert "secure" not in flags  # plain http
    assert "max-age" not in flags and "expires" not in flags  # a session cookie


def test_login_over_https_sets_a_secure_cookie(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway, api_token=TOKEN), base_url="https://testserver")
    response = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"].split("; ")
    assert response.headers["location"] == "./"


def test_login_follows_to_the_page(client: TestClient) -> None:
    response = client.post("/login", data={"token": TOKEN, "next": "/player?stream=stream1"})
    assert response.status_code == 200
    assert str(response.url) == "http://testserver/player?stream=stream1"
    assert response.content == (WEB / "player.html").read_bytes()


def test_wrong_token_reshows_the_form_with_403(client: TestClient) -> None:
    response = client.post(
        "/login", data={"token": "wrong", "next": "/player?stream=s"}, follow_redirects=False
    )
    assert_login_form(response, 403)
    assert "set-cookie" not in response.headers
    assert hidden_next(response.text) == "/player?stream=s"
    assert "Wrong token" in response.text
    assert SESSION_COOKIE not in client.cookies


def test_empty_token_is_401_form(client: TestClient) -> None:
    response = client.post("/login", data={"token": "  "}, follow_redirects=False)
    assert_login_form(response, 401)
    assert "set-cookie" not in response.headers


def test_login_form_is_also_served_by_get(client: TestClient) -> None:
    response = client.get("/login", params={"next": "//evil.example/"})
    assert_login_form(response, 200)
    assert hidden_next(response.text) == "/"


@pytest.mark.parametrize(
    "next_path",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/ok\r\nSet-Cookie: x=y",
        "/\tevil",
        "player",
        "",
        "/" + "a" * 3000,
    ],
)
def test_unsafe_next_redirects_to_the_console(client: TestClient, next_path: str) -> None:
    response = client.post(
        "/login", data={"token": TOKEN, "next": next_path}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "./"


@pytest.mark.parametrize(
    ("next_path", "location"),
    [
        ("/", "./"),
        ("/player?stream=a%20b", "./player?stream=a%20b"),
        ("/player?stream=caf\u00e9", "./player?stream=caf%C3%A9"),
        ("/web/api.js", "./web/api.js"),
    ],
)
def test_safe_next_redirects_there(client: TestClient, next_path: str, location: str) -> None:
    response = client.post(
        "/login", data={"token": TOKEN, "next": next_path}, follow_redirects=False
    )
    assert response.headers["location"] == location


@given(st.text(max_size=60))
def test_safe_next_never_leaves_the_site(value: str) -> None:
    result = safe_next(value)
    assert result == "/" or result == value
    assert result.startswith("/") and not result.startswith("//")
    assert "\\" not in result
    assert not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in result)
    # Resolved against the login URL the relative Location stays on this host.
    assert urlsplit(urljoin("http://gw.example/login", "." + result)).netloc == "gw.example"


def test_login_next_is_html_escaped(client: TestClient) -> None:
    response = client.get('/player?stream="><script>alert(1)</script>')
    assert response.status_code == 401
    assert "<script>" not in response.text
    sent = response.request.url.raw_path.decode()
    assert hidden_next(response.text) == sent
    # Whatever reaches the page (a raw query from some client) is escaped, the message too.
    page = login_page(401, next_path='/player?s="><b>&', message="<i>x</i>")
    text = bytes(page.body).decode()
    assert "<b>" not in text and "<i>" not in text
    assert 'value="/player?s=&quot;&gt;&lt;b&gt;&amp;"' in text
    assert hidden_next(text) == '/player?s="><b>&'


def test_login_body_is_bounded(client: TestClient) -> None:
    big = "token=" + "x" * MAX_LOGIN_BODY_BYTES
    response = client.post("/login", content=big, headers=FORM)
    assert response.status_code == 413
    assert SESSION_COOKIE not in client.cookies


def test_login_wants_a_form(client: TestClient) -> None:
    response = client.post("/login", json={"token": TOKEN})
    assert response.status_code == 415
    assert SESSION_COOKIE not in client.cookies


def test_login_refuses_a_malformed_form(client: TestClient) -> None:
    response = client.post("/login", content=b"token=\xff\xfe", headers=FORM)
    assert response.status_code == 400


def test_login_from_a_foreign_origin_is_refused(client: TestClient) -> None:
    response = client.post(
        "/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "cross-origin request refused"
    assert SESSION_COOKIE not in client.cookies


def test_logout_clears_the_cookie(client: TestClient) -> None:
    log_in(client)
    assert client.get("/").status_code == 200
    response = client.post("/logout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "./"
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/").status_code == 401


def test_logout_from_a_foreign_origin_is_refused(client: TestClient) -> None:
    log_in(client)
    response = client.post("/logout", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert client.get("/").status_code == 200


def test_login_from_a_cross_site_fetch_is_refused(client: TestClient) -> None:
    response = client.post(
        "/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_pages_send_a_real_origin_on_their_posts(client: TestClient) -> None:
    log_in(client)
    response = client.get("/")
    assert response.headers["referrer-policy"] == "same-origin"


def test_page_cookie_post_with_foreign_origin_is_refused(client: TestClient) -> None:
    log_in(client)
    response = client.post("/", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert client.post("/", headers={"Origin": "http://testserver"}).status_code == 405


# ---- the "Log out" form ---------------------------------------------------------------------


def logout_forms(html: str) -> list[dict[str, str | None]]:
    """The attributes of every form posting to ``logout``, each with its submit button's."""
    found: list[dict[str, str | None]] = []
    inside: dict[str, str | None] | None = None
    for tag, attrs in parse(html).tags:
        if tag == "form":
            inside = dict(attrs) if attrs.get("action") == "logout" else None
            if inside is not None:
                found.append(inside)
        elif tag == "button" and inside is not None:
            inside["button-type"] = attrs.get("type")
            inside["button-id"] = attrs.get("id")
    return found


def without_logout_form(html: str) -> str:
    return re.sub(r'[ \t]*<form id="logout-form"[^>]*>.*?</form>[ \t]*\n?', "", html, flags=re.S)


@pytest.mark.parametrize(("path", "name"), PAGES.items())
def test_pages_behind_the_token_have_a_logout_form(
    client: TestClient, path: str, name: str
) -> None:
    log_in(client)
    response = client.get(path)
    assert response.status_code == 200
    assert response.content == (WEB / name).read_bytes()
    # A plain same-origin form POST (no script): the CSRF check accepts it; _top so the
    # player inside the console's iframe logs the whole console out.
    assert logout_forms(response.text) == [
        {
            "id": "logout-form",
            "class": "logout-form",
            "method": "post",
            "action": "logout",
            "target": "_top",
            "button-type": "submit",
            "button-id": "logout",
        }
    ]
    assert "Log out" in response.text


@pytest.mark.parametrize("path", PAGES)
def test_pages_by_bearer_have_the_logout_form_too(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert len(logout_forms(response.text)) == 1


@pytest.mark.parametrize("path", PAGES)
def test_logout_form_posts_and_lands_on_the_login_form(client: TestClient, path: str) -> None:
    log_in(client)
    page = client.get(path)
    action = logout_forms(page.text)[0]["action"]
    assert action is not None
    url = urljoin(str(page.url), action)
    assert urlsplit(url).path == "/logout"
    # What a browser sends for a form on this page: Sec-Fetch-Site and Origin of this host.
    response = client.post(
        url, headers={"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    )
    assert [r.status_code for r in response.history] == [303]
    assert str(response.url) == "http://testserver/"
    assert_login_form(response, 401)
    assert SESSION_COOKIE not in client.cookies


# ---- login brute-force limit (unit tests of the limiter: test_login_ratelimit.py) -------------


def test_login_is_locked_out_after_ten_wrong_tokens(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="sipbridge.api.ratelimit")
    for _ in range(10):
        response = client.post("/login", data={"token": "wrong"}, follow_redirects=False)
        assert_login_form(response, 403)
        assert "retry-after" not in response.headers
    locked = client.post(
        "/login", data={"token": TOKEN, "next": "/player?stream=s"}, follow_redirects=False
    )
    assert_login_form(locked, 429)
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    assert "set-cookie" not in locked.headers
    assert "Too many failed logins" in locked.text
    assert hidden_next(locked.text) == "/player?stream=s"
    assert SESSION_COOKIE not in client.cookies
    # One WARNING, when the tenth failure locked the address; it names no token.
    warnings = [r for r in caplog.records if r.name == "sipbridge.api.ratelimit"]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "testclient" in warnings[0].getMessage()
    assert "wrong" not in warnings[0].getMessage() and TOKEN not in warnings[0].getMessage()
    # Only the form is limited: a Bearer client still gets the page.
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


# ---- without a token -------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), PAGES.items())
def test_without_a_token_pages_are_public(gateway: FakeGateway, path: str, name: str) -> None:
    client = TestClient(create_app(gateway))
    response = client.get(path)
    assert response.status_code == 200
    # The file, but for its "Log out" form: nothing to log out of.
    assert logout_forms(response.text) == []
    assert "logout" not in response.text
    assert without_logout_form((WEB / name).read_text()) == response.text
    assert client.get(f"{ASSET_PREFIX}/api.js").status_code == 200
    assert client.get("/login").status_code == 404
    assert client.post("/logout").status_code == 404


def test_pages_off_means_no_login_routes(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway, api_token=TOKEN, pages=False))
    # Behind the token nothing is served at / (404 after the check passes).
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert client.get("/login").status_code == 404
