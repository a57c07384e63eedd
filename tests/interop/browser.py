"""A real browser for interop tests: Debian's Chromium, headless, driven by Playwright.

Theory of operation
-------------------
:class:`Chromium` starts ``/usr/bin/chromium`` itself, as a
:class:`~tests.interop.peers.ManagedProcess` in its own session: headless with
the flags of ``/work/shared/PEERS.md`` (:data:`PEERS_FLAGS`), the flags WebRTC
on loopback needs (:data:`WEBRTC_LOOPBACK_FLAGS`), a fresh ``--user-data-dir``
under the test's ``tmp_path`` and a DevTools port chosen by Chromium
(``--remote-debugging-port=0``, read back from the profile's
``DevToolsActivePort`` file). Playwright (async API) then attaches over CDP
with ``connect_over_cdp``. Starting the process here rather than through
``BrowserType.launch`` means the browser's PID is known and owned by the test:
:meth:`Chromium.stop` closes Playwright's connection, then signals the process
group (SIGTERM, grace, SIGKILL), whatever the test's outcome. Playwright never
downloads a browser here; a missing ``/usr/bin/chromium`` fails the test.

Every page opened with :meth:`Chromium.new_page` logs its console messages,
page errors and failed requests to ``ARTIFACTS/<page>.console.log`` (and keeps
them in :attr:`BrowserPage.console`), and :meth:`BrowserPage.screenshot`
writes PNG files next to it. Chromium's own output goes to
``ARTIFACTS/chromium.log``.

Facts about Chromium 156 (Debian 12) that shaped this module:

* ``/usr/bin/chromium`` is a shell wrapper that ``exec``s
  ``/usr/lib/chromium/chromium``: the PID stays the browser's.
* After the browser process exits on SIGTERM some of its children (zygote,
  utility processes) linger for a moment, still in its process group: the
  group is killed after the grace period (``ManagedProcess.stop``).
  ``chrome_crashpad_handler`` detaches (its own session) and exits by itself
  once its clients are gone.
* Without ``--allow-loopback-in-peer-connection`` Chromium gathers no
  candidate on 127.0.0.1; without disabling ``WebRtcHideLocalIpsWithMdns`` a
  page that did not ask for camera/microphone permission hides its host
  addresses behind random ``.local`` mDNS names, which aiortc would have to
  resolve by multicast DNS (off limits here: traffic stays on 127.0.0.1).
* A video element with audio does not start playing without a user gesture
  unless ``--autoplay-policy=no-user-gesture-required``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    async_playwright,
)

from tests.interop.peers import LOCALHOST, ManagedProcess, PeerError, PeerTimeout

#: The browser binary (Debian package ``chromium``); never a downloaded one.
CHROMIUM_BINARY = Path("/usr/bin/chromium")

#: Headless as root, no first-run work, no traffic to Google (PEERS.md).
PEERS_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: What WebRTC between Chromium and a peer on 127.0.0.1 needs (module docstring).
WEBRTC_LOOPBACK_FLAGS: tuple[str, ...] = (
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
)

#: Quiet, reproducible runs: no sound card, a fixed window for screenshots.
QUIET_FLAGS: tuple[str, ...] = (
    "--mute-audio",
    "--no-default-browser-check",
    "--disable-breakpad",
    "--window-size=1280,720",
)

#: Grace between SIGTERM and SIGKILL when the browser is stopped (s).
STOP_GRACE = 3.0

#: JavaScript: ``(pc) => {audio: {...}, video: {...}}``, the inbound-rtp
#: statistics (W3C webrtc-stats §7.3, RTCInboundRtpStreamStats) per kind.
INBOUND_RTP_JS = """
async (pc) => {
  const result = {};
  if (!pc) { return result; }
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") { return; }
    const codec = s.codecId ? report.get(s.codecId) : undefined;
    result[s.kind] = {
      packetsReceived: s.packetsReceived || 0,
      packetsLost: s.packetsLost || 0,
      bytesReceived: s.bytesReceived || 0,
      framesDecoded: s.framesDecoded || 0,
      framesReceived: s.framesReceived || 0,
      keyFramesDecoded: s.keyFramesDecoded || 0,
      frameWidth: s.frameWidth || 0,
      frameHeight: s.frameHeight || 0,
      totalSamplesReceived: s.totalSamplesReceived || 0,
      mimeType: codec ? codec.mimeType : null,
    };
  });
  return result;
}
"""

#: JavaScript: ``(pc) => [{local, remote, state}]`` for the candidate pairs in use
#: (webrtc-stats §7.12): which addresses the media flows between.
SELECTED_PAIRS_JS = """
async (pc) => {
  const report = await pc.getStats();
  const pairs = [];
  report.forEach((s) => {
    if (s.type !== "transport" || !s.selectedCandidatePairId) { return; }
    const pair = report.get(s.selectedCandidatePairId);
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    pairs.push({
      state: pair.state,
      local: local.address + ":" + local.port,
      remote: remote.address + ":" + remote.port,
      localType: local.candidateType,
      remoteType: remote.candidateType,
    });
  });
  return pairs;
}
"""

#: JavaScript: ``(video) => {...}`` what a ``<video>`` element shows.
VIDEO_ELEMENT_JS = """
(v) => ({
  videoWidth: v.videoWidth,
  videoHeight: v.videoHeight,
  paused: v.paused,
  readyState: v.readyState,
  currentTime: v.currentTime,
  error: v.error ? v.error.message || String(v.error.code) : null,
})
"""


def require_chromium() -> Path:
    """The Chromium binary; fails the test (never skips it) when it is missing."""
    if not os.access(CHROMIUM_BINARY, os.X_OK):
        pytest.fail(
            f"{CHROMIUM_BINARY} not found: install the Debian package 'chromium' "
            "(run `make peers`); tests never download a browser",
            pytrace=False,
        )
    return CHROMIUM_BINARY


@dataclass
class BrowserPage:
    """One Playwright page whose console goes to ``ARTIFACTS/<name>.console.log``."""

    name: str
    page: Page
    artifacts_dir: Path
    console: list[str] = field(default_factory=list)
    """Every console message, page error and failed request, as logged."""
    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions of the page (``pageerror``) and ``console.error`` lines."""

    @property
    def console_path(self) -> Path:
        """Where the console is logged."""
        return self.artifacts_dir / f"{self.name}.console.log"

    def _log(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        self.console.append(stamped)
        with self.console_path.open("a") as log:
            log.write(stamped + "\n")

    def _on_console(self, message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        self._log(f"[{message.type}] {message.text}" + (f" ({url})" if url else ""))
        # Chromium fetches /favicon.ico for every page by itself: not the page's error.
        if message.type == "error" and not url.endswith("/favicon.ico"):
            self.errors.append(message.text)

    def _on_page_error(self, error: Exception) -> None:
        self._log(f"[pageerror] {error}")
        self.errors.append(str(error))

    def _on_request_failed(self, request: Request) -> None:
        self._log(f"[requestfailed] {request.method} {request.url}: {request.failure}")

    def attach(self) -> BrowserPage:
        """Start logging the page's console, errors and failed requests."""
        self.console_path.touch()
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_page_error)
        self.page.on("requestfailed", self._on_request_failed)
        return self

    async def screenshot(self, label: str, *, selector: str | None = None) -> Path:
        """A PNG of the page (or of one element) saved as ``ARTIFACTS/<name>-<label>.png``."""
        path = self.artifacts_dir / f"{self.name}-{label}.png"
        if selector is None:
            await self.page.screenshot(path=str(path))
        else:
            await self.page.locator(selector).screenshot(path=str(path))
        return path

    async def inbound_rtp(self, pc_expression: str) -> dict[str, dict[str, Any]]:
        """Inbound-rtp stats per kind of the RTCPeerConnection ``pc_expression`` names."""
        handle = await self.page.evaluate_handle(pc_expression)
        try:
            stats: dict[str, dict[str, Any]] = await self.page.evaluate(INBOUND_RTP_JS, handle)
        finally:
            await handle.dispose()
        return stats

    async def selected_pairs(self, pc_expression: str) -> list[dict[str, str]]:
        """The ICE candidate pairs the RTCPeerConnection ``pc_expression`` sends media on."""
        handle = await self.page.evaluate_handle(pc_expression)
        try:
            pairs: list[dict[str, str]] = await self.page.evaluate(SELECTED_PAIRS_JS, handle)
        finally:
            await handle.dispose()
        return pairs

    async def video_element(self, selector: str) -> dict[str, Any]:
        """Size and playback state of the ``<video>`` element ``selector``."""
        state: dict[str, Any] = await self.page.locator(selector).evaluate(VIDEO_ELEMENT_JS)
        return state


class Chromium:
    """Headless Chromium started by the test, attached to by Playwright over CDP.

    ``extra_flags`` are appended to :data:`PEERS_FLAGS`,
    :data:`WEBRTC_LOOPBACK_FLAGS` and :data:`QUIET_FLAGS`.
    """

    def __init__(
        self, artifacts_dir: Path, workdir: Path, *, extra_flags: tuple[str, ...] = ()
    ) -> None:
        self.binary = require_chromium()
        self.artifacts_dir = artifacts_dir
        self.profile_dir = workdir / "chromium-profile"
        self.extra_flags = extra_flags
        self.process = ManagedProcess(self.argv, name="chromium", log_dir=artifacts_dir)
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.pages: list[BrowserPage] = []

    @property
    def argv(self) -> list[str]:
        """The command line: a fresh profile and a DevTools port of Chromium's choosing."""
        return [
            str(self.binary),
            *PEERS_FLAGS,
            *WEBRTC_LOOPBACK_FLAGS,
            *QUIET_FLAGS,
            *self.extra_flags,
            f"--user-data-dir={self.profile_dir}",
            f"--remote-debugging-address={LOCALHOST}",
            "--remote-debugging-port=0",
            "about:blank",
        ]

    @property
    def pid(self) -> int:
        """PID of the browser process."""
        return self.process.pid

    @property
    def browser(self) -> Browser:
        """The Playwright browser attached over CDP."""
        if self._browser is None:
            raise PeerError("chromium was not started")
        return self._browser

    async def _devtools_port(self, timeout: float) -> int:
        # Chromium writes "PORT\n/devtools/browser/ID" once DevTools listens.
        port_file = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                lines = port_file.read_text().splitlines()
                if len(lines) >= 2 and lines[0].isdigit():
                    return int(lines[0])
            code = self.process.poll()
            if code is not None:
                raise PeerError(
                    f"chromium exited with {code} before DevTools listened:\n"
                    + self.process.log_tail()
                )
            if time.monotonic() >= deadline:
                raise PeerTimeout(
                    f"chromium wrote no {port_file} within {timeout:g} s:\n"
                    + self.process.log_tail()
                )
            await asyncio.sleep(0.05)

    async def start(self, timeout: float = 20.0) -> Chromium:
        """Start the browser and attach Playwright to it."""
        self.profile_dir.mkdir(parents=True, exist_ok=False)
        self.process.start()
        port = await self._devtools_port(timeout)
        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.connect_over_cdp(
            f"http://{LOCALHOST}:{port}", timeout=timeout * 1000
        )
        return self

    async def new_page(self, name: str) -> BrowserPage:
        """A new tab in the default context, its console logged under ``name``."""
        context = self.browser.contexts[0]
        page = BrowserPage(name, await context.new_page(), self.artifacts_dir).attach()
        self.pages.append(page)
        return page

    async def stop(self) -> int | None:
        """Detach Playwright, then stop the browser by PID (group); idempotent.

        Returns Chromium's exit code (negative: killed by that signal).
        """
        try:
            if self._browser is not None:
                with contextlib.suppress(Exception):  # the browser may already be gone
                    await asyncio.wait_for(self._browser.close(), 5.0)
            if self._playwright is not None:
                await self._playwright.stop()
        finally:
            self._browser = None
            self._playwright = None
            code: int | None = None
            if self.process.started:
                code = await asyncio.to_thread(self.process.stop, STOP_GRACE)
                self._kill_leftovers()
        return code

    def _kill_leftovers(self) -> None:
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def leftover_pids(self) -> list[int]:
        """PIDs of processes still running with this browser's profile (should be none).

        The profile directory is unique to this instance, so every process naming
        it on its command line is one this test started.
        """
        marker = f"--user-data-dir={self.profile_dir}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline.split(b"\0"):
                pids.append(int(entry.name))
        return pids


@contextlib.asynccontextmanager
async def running_chromium(
    artifacts_dir: Path, workdir: Path, *, extra_flags: tuple[str, ...] = ()
) -> AsyncIterator[Chromium]:
    """A started :class:`Chromium`, stopped by PID on the way out whatever happens."""
    browser = Chromium(artifacts_dir, workdir, extra_flags=extra_flags)
    try:
        yield await browser.start()
    finally:
        await browser.stop()


async def wait_for_js(
    page: BrowserPage, expression: str, *, timeout: float, what: str, poll: float = 0.1
) -> Any:
    """Evaluate ``expression`` until it is truthy; return its value or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.page.evaluate(expression)
        if value:
            return value
        if time.monotonic() >= deadline:
            tail = "\n".join(page.console[-20:])
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} ({expression!r} = {value!r});"
                f" console tail:\n{tail}"
            )
        await asyncio.sleep(poll)
