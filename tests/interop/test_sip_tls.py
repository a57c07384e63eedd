"""SIP over TLS to a real kamailio (RFC 3261 §26.2; issue 7).

kamailio listens for TLS on 127.0.0.1 with a self-signed certificate made here with
the openssl CLI (and, for UDP, on its usual port, where the sipp callee ``bob``
registers). The gateway REGISTERs and INVITEs with digest auth over TLS
(``sipTransport=TLS``): with ``tls_ca_file`` = that certificate the call is
ESTABLISHED and ended with BYE; with the system store the call FAILS with the
verification reason; with ``tls_verify = false`` it works again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.nginx import make_self_signed_cert
from tests.interop.peers import Kamailio, PeerSet

pytestmark = pytest.mark.interop


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "tls"
    directory.mkdir()
    return make_self_signed_cert(directory)


@pytest.fixture
def tls_kamailio(
    peers: PeerSet, tmp_path: Path, artifacts_dir: Path, tls_cert: tuple[Path, Path]
) -> Iterator[Kamailio]:
    workdir = tmp_path / "kamailio-tls"
    workdir.mkdir()
    kam = Kamailio(
        workdir=workdir,
        log_dir=artifacts_dir,
        users=KAMAILIO_USERS,
        name="kamailio-tls",
        tls_cert=tls_cert,
    )
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()


def tls_gateway(workdir: Path, sip_settings: str) -> AbstractContextManager[GatewayProcess]:
    """``running_gateway`` with extra ``[sip]`` keys."""
    workdir.mkdir(parents=True, exist_ok=True)
    return running_gateway(workdir, sip_settings=sip_settings)


def tls_body(call_id: str, kamailio: Kamailio, **overrides: Any) -> dict[str, Any]:
    assert kamailio.tls_port is not None
    body: dict[str, Any] = {
        "callId": call_id,
        "callee": "bob",
        "toStream": f"stream-{call_id}",
        "hasAudio": "true",
        "hasVideo": "false",
        "sipLogin": "alice",
        "sipAuthenticationName": "alice",
        "sipPassword": KAMAILIO_USERS["alice"],
        "sipPort": str(kamailio.tls_port),
        "sipDomain": "127.0.0.1",
        "sipOutboundProxy": "127.0.0.1",
        "sipTransport": "TLS",
        "appKey": "defaultApp",
        "sipRegisterRequired": "true",
    }
    body.update(overrides)
    return body


def _established_then_bye(gateway: GatewayProcess, kamailio: Kamailio, peers: PeerSet) -> None:
    callee = peers.registered_callee(kamailio, user="bob", scenario="uas_slow_answer.xml")
    response = gateway.post("/call/startup", tls_body("tls", kamailio))
    assert response.status_code == 200, response.text

    call, _ = gateway.wait_status("tls", {"ESTABLISHED", "FAILED", "FINISH"})
    assert call["status"] == "ESTABLISHED", call
    assert call["sipStatus"] == 200

    harness = kamailio.harness_lines()
    assert any(line.startswith("challenge REGISTER") for line in harness), harness
    assert any(line.startswith("registered alice") and "transport=tls" in line for line in harness)
    assert any(line.startswith("challenge INVITE") for line in harness), harness
    assert any(line.startswith("request INVITE") and "/tls" in line for line in harness), harness
    assert any(line.startswith("request REGISTER") and "/tls" in line for line in harness)
    assert any(line.startswith("relay INVITE") and "bob" in line for line in harness), harness

    assert gateway.post("/call/terminate", {"callId": "tls"}).status_code == 200
    call, _ = gateway.wait_status("tls", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH", call
    assert callee.wait(15) == 0
    assert callee.callee.received_requests() == ["INVITE", "ACK", "BYE"]
    kamailio.wait_for_log(r"harness: request BYE .*/tls", timeout=5)

    log = gateway.log_text()
    assert "SIP/2.0/TLS 127.0.0.1" in log  # the trace shows our Via over TLS
    assert KAMAILIO_USERS["alice"] not in log


def test_call_over_tls_with_the_test_ca(
    tmp_path: Path, tls_kamailio: Kamailio, peers: PeerSet, tls_cert: tuple[Path, Path]
) -> None:
    settings = f'tls_ca_file = "{tls_cert[0]}"\n'
    with tls_gateway(tmp_path / "gw", settings) as gateway:
        _established_then_bye(gateway, tls_kamailio, peers)


def test_call_over_tls_without_verification(
    tmp_path: Path, tls_kamailio: Kamailio, peers: PeerSet
) -> None:
    with tls_gateway(tmp_path / "gw", "tls_verify = false\n") as gateway:
        _established_then_bye(gateway, tls_kamailio, peers)


def test_self_signed_server_fails_the_call_with_the_reason(
    tmp_path: Path, tls_kamailio: Kamailio, peers: PeerSet
) -> None:
    del peers
    with tls_gateway(tmp_path / "gw", "") as gateway:  # verify against the system store
        body = tls_body("untrusted", tls_kamailio, sipRegisterRequired="false")
        assert gateway.post("/call/startup", body).status_code == 200
        call, _ = gateway.wait_status("untrusted", {"FAILED", "FINISH", "ESTABLISHED"})
        assert call["status"] == "FAILED", call
        assert "TLS certificate verify failed: self-signed certificate" in call["info"], call
        assert not [line for line in tls_kamailio.harness_lines() if "request INVITE" in line]


def test_self_signed_server_fails_the_registration_with_the_reason(
    tmp_path: Path, tls_kamailio: Kamailio, peers: PeerSet
) -> None:
    del peers
    with tls_gateway(tmp_path / "gw", "") as gateway:  # verify against the system store
        body = tls_body("untrusted-reg", tls_kamailio)  # sipRegisterRequired=true
        assert gateway.post("/call/startup", body).status_code == 200
        call, _ = gateway.wait_status("untrusted-reg", {"FAILED", "FINISH", "ESTABLISHED"})
        assert call["status"] == "FAILED", call
        assert call["info"] == (
            "Failed by registration error: TLS certificate verify failed: self-signed certificate"
        ), call
        assert call["sipStatus"] is None, call
        assert KAMAILIO_USERS["alice"] not in call["info"]
        assert not [line for line in tls_kamailio.harness_lines() if "request REGISTER" in line]
