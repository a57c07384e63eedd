"""Fixtures for interop tests: real peers, stopped by PID whatever the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
