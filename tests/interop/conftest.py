"""Fixtures for interop tests: real peers, stopped by PID whatever the outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.interop.browser import Chromium, running_chromium
from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.peers import Kamailio, PeerSet

#: Users known to the ``kamailio`` fixture (user -> password).
KAMAILIO_USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol:secret"}


@pytest.fixture
def peers(artifacts_dir: Path, tmp_path: Path) -> Iterator[PeerSet]:
    """Starts peers for one test; logs go to ``artifacts_dir``; all stopped at teardown."""
    peer_set = PeerSet(log_dir=artifacts_dir, workdir=tmp_path)
    try:
        yield peer_set
    finally:
        peer_set.stop_all()


@pytest.fixture
def kamailio(peers: PeerSet) -> Kamailio:
    """A running Kamailio registrar/proxy for domain 127.0.0.1 with :data:`KAMAILIO_USERS`."""
    return peers.kamailio(users=KAMAILIO_USERS)


@pytest.fixture
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The real ``sipbridge serve`` on free ports; must exit 0 with no traceback logged."""
    with running_gateway(tmp_path_factory.mktemp("gateway")) as process:
        yield process


#: ``[webrtc]`` settings for tests with WHEP viewers on this machine: host candidates on
#: 127.0.0.1 only (aioice leaves loopback out by default), so WebRTC stays on loopback.
WEBRTC_LOOPBACK_SETTINGS = '[webrtc]\nice_addresses = ["127.0.0.1"]\n'


@pytest.fixture
def webrtc_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Like ``gateway``, with :data:`WEBRTC_LOOPBACK_SETTINGS` for WHEP viewers."""
    with running_gateway(
        tmp_path_factory.mktemp("gateway"), extra_settings=WEBRTC_LOOPBACK_SETTINGS
    ) as process:
        yield process


@pytest.fixture
async def chromium(artifacts_dir: Path, tmp_path: Path) -> AsyncIterator[Chromium]:
    """Headless Debian Chromium driven by Playwright; stopped by PID at teardown.

    Its own output, every page's console and the screenshots go to ``artifacts_dir``.
    """
    async with running_chromium(artifacts_dir, tmp_path) as browser:
        yield browser

