"""The console (``/``), the player (``/player``) and their files: content types, headers,
every referenced asset served, the forms' field names matching the REST contract."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.bodies import StartCallBody
from sipbridge.api.pages import ASSET_PREFIX, PAGE_FILES
from sipbridge.api.push_bodies import StartPushBody
from tests.api.fakes import FakeGateway

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "sipbridge" / "web"
PAGES = {"/": "console.html", "/player?stream=stream1": "player.html"}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


class Tags(HTMLParser):
    """Every start tag's attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def html_references(html: str) -> list[str]:
    return [
        value
        for tag, attrs in tags(html)
        for name in ("src", "href")
        if tag in ("script", "link", "img", "iframe")
        and (value := attrs.get(name))
        and not value.startswith("data:")  # inline: nothing to fetch
    ]


IMPORT = re.compile(r"""^\s*import\s[^;]*?from\s+["']([^"']+)["']""", re.MULTILINE)


@pytest.fixture
def client(gateway: FakeGateway) -> TestClient:
    """Logged in to an app with a token (the login itself: test_page_login.py)."""
    client = TestClient(create_app(gateway, api_token="secret-token"))
    assert client.post("/login", data={"token": "secret-token"}).status_code == 200
    return client


@pytest.mark.parametrize(("path", "name"), PAGES.items())
def test_pages_are_served_as_html(client: TestClient, path: str, name: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == TYPES[".html"]
    assert response.content == (WEB / name).read_bytes()
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", PAGE_FILES)
def test_every_page_file_is_served_with_its_type(client: TestClient, name: str) -> None:
    response = client.get(f"{ASSET_PREFIX}/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == TYPES[Path(name).suffix]
    assert response.content == (WEB / name).read_bytes()


def test_every_referenced_asset_is_served(client: TestClient) -> None:
    """Crawl from the pages: HTML src/href, then the modules' imports; nothing is 404."""
    seen: set[str] = set()
    queue = [f"http://testserver{path}" for path in PAGES]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, url
        kind = response.headers["content-type"]
        if kind.startswith("text/html"):
            refs = html_references(response.text)
        elif kind.startswith("text/javascript"):
            refs = IMPORT.findall(response.text)
        else:
            refs = []
        for ref in refs:
            target = urljoin(url, ref)
            assert urlsplit(target).netloc == "testserver", f"{url} loads {ref} from elsewhere"
            queue.append(target)
    served = {urlsplit(url).path for url in seen}
    assert {f"{ASSET_PREFIX}/{name}" for name in PAGE_FILES if not name.endswith(".html")} <= served


def test_web_directory_holds_exactly_the_served_files() -> None:
    assert sorted(p.name for p in WEB.iterdir()) == sorted(PAGE_FILES)


@pytest.mark.parametrize("name", PAGE_FILES)
def test_no_external_urls(name: str) -> None:
    text = (WEB / name).read_text()
    assert re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text) is None
    assert re.search(r"""from\s+["'](https?:)?//""", text) is None
    assert "cdn" not in text.lower()


@pytest.mark.parametrize("path", [f"{ASSET_PREFIX}/nope.js", f"{ASSET_PREFIX}/..%2Fapp.py"])
def test_unknown_files_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_pages_answer_post_with_405(client: TestClient) -> None:
    response = client.post("/")
    assert response.status_code == 405
    assert response.headers["allow"] in ("GET, HEAD", "HEAD, GET")


def test_pages_can_be_left_out(gateway: FakeGateway) -> None:
    client = TestClient(create_app(gateway, pages=False))
    assert client.get("/").status_code == 404
    assert client.get("/player").status_code == 404
    assert client.get(f"{ASSET_PREFIX}/api.js").status_code == 404


def test_package_data_ships_every_page_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["sipbridge"]
    for name in PAGE_FILES:
        assert any(fnmatch.fnmatch(f"web/{name}", p) for p in patterns), name


# ---- what the pages contain ------------------------------------------------------------------


def element_ids(name: str) -> dict[str, tuple[str, dict[str, str | None]]]:
    return {
        str(attrs["id"]): (tag, attrs)
        for tag, attrs in tags((WEB / name).read_text())
        if attrs.get("id")
    }


def test_player_has_the_video_element_and_controls() -> None:
    ids = element_ids("player.html")
    tag, attrs = ids["video"]
    assert tag == "video"
    assert {"autoplay", "playsinline", "muted"} <= set(attrs)
    assert {"state", "unmute", "token-form", "token-input"} <= set(ids)
    script = (WEB / "player.js").read_text()
    assert "window.sipbridgePlayer = player" in script
    assert 'direction: "recvonly"' in script
    assert "iceGatheringState" in script
    assert '"pagehide"' in script and 'method: "DELETE"' in script


def test_console_has_the_stable_ids() -> None:
    ids = element_ids("console.html")
    expected = {
        "call-form",
        "start-call",
        "call-result",
        "calls",
        "streams",
        "pushes",
        "viewers",
        "graphs",
        "player-frame",
        "push-form",
        "start-push",
        "push-result",
        "recordings",
        "events-status",
        "token-form",
        "token-input",
    }
    assert expected <= set(ids)


def form_fields(name: str, form_id: str) -> set[str]:
    inside = False
    names: set[str] = set()
    for tag, attrs in tags((WEB / name).read_text()):
        if tag == "form":
            inside = attrs.get("id") == form_id
        elif inside and tag in ("input", "select", "textarea") and attrs.get("name"):
            names.add(str(attrs["name"]))
    return names


def test_call_form_uses_the_contract_field_names() -> None:
    fields = form_fields("console.html", "call-form")
    contract = {
        "callId",
        "callee",
        "toStream",
        "rtmpUrl",
        "rtmpStream",
        "hasAudio",
        "hasVideo",
        "sipLogin",
        "sipAuthenticationName",
        "sipPassword",
        "sipDomain",
        "sipOutboundProxy",
        "sipPort",
        "sipRegisterRequired",
        "appKey",
        "visibleName",
    }
    assert contract <= fields
    assert fields <= set(StartCallBody.__struct_encode_fields__)


def test_push_form_uses_the_contract_field_names() -> None:
    fields = form_fields("console.html", "push-form")
    assert fields == {"streamName", "rtmpUrl", "rtmpTransponderFullUrl"}
    assert fields <= set(StartPushBody.__struct_encode_fields__)


def test_console_calls_only_existing_endpoints() -> None:
    """Every REST method a console button calls is one the API serves."""
    script = (WEB / "console.js").read_text()
    methods = set(re.findall(r"""(?:restCall|act)\(\s*"([A-Za-z_]+/[A-Za-z_]+)\"""", script))
    assert methods == {
        "call/startup",
        "call/terminate",
        "push/startup",
        "push/terminate",
        "stream/terminate",
        "stream/startRecording",
        "stream/stopRecording",
    }


def test_server_values_never_become_html() -> None:
    for name in ("console.js", "player.js", "graphs.js", "api.js"):
        text = (WEB / name).read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
