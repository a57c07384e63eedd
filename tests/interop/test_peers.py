"""Self-tests of the interop harness (tests/interop/peers.py) without the gateway.

They prove that the peers the gateway's interop tests rely on behave as
documented: Kamailio's registrar and authenticating proxy, and each sipp
callee scenario, driven by sipp callers.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

import pytest

from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.peers import (
    SCENARIOS_DIR,
    Kamailio,
    PeerSet,
    SipTraceEntry,
    free_port,
    parse_sipp_trace,
    port_is_bound,
    port_is_free,
    require_binary,
    sip_ping,
)

pytestmark = pytest.mark.interop


def _final_invite_response(entries: list[SipTraceEntry], direction: str) -> int:
    codes = [
        e.status_code
        for e in entries
        if e.direction == direction and e.status_code is not None and e.status_code >= 200
        if e.method == "INVITE"
    ]
    assert codes, f"no final INVITE response {direction}"
    return codes[-1]


# --------------------------------------------------------------------------- plumbing


def test_free_port_returns_consecutive_ports_free_for_udp_and_tcp() -> None:
    first = free_port("sip", span=4)
    second = free_port("sip", span=4)
    assert not set(range(first, first + 4)) & set(range(second, second + 4))
    for port in range(first, first + 4):
        assert port_is_free(port, "sip")


def test_port_is_bound_sees_udp_and_listening_tcp() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp_port = tcp.getsockname()[1]
        assert port_is_bound(udp.getsockname()[1], "udp")
        assert not port_is_bound(tcp_port, "tcp")  # bound but not listening yet
        tcp.listen()
        assert port_is_bound(tcp_port, "tcp")


def test_require_binary_fails_naming_the_debian_package() -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        require_binary("no-such-peer-program", "some-debian-package")
    message = str(failure.value)
    assert "'some-debian-package'" in message
    assert "make peers" in message


def test_managed_process_logs_and_is_stopped_by_pid(peers: PeerSet) -> None:
    proc = peers.process(["sh", "-c", "echo ready; exec sleep 60"], name="sleeper")
    match = proc.wait_for_log(r"(?m)^ready$", timeout=5)
    assert match.group(0) == "ready"
    pid = proc.pid
    assert proc.poll() is None
    assert proc.stop() == -15  # SIGTERM was enough
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert proc.read_log().startswith("$ sh -c echo ready; exec sleep 60\n")
    assert proc.log_path.parent == peers.log_dir


def test_parse_sipp_trace_reads_directions_codes_and_bodies() -> None:
    text = (
        "----------------------------------------------- 2026-01-01 00:00:00.000000\n"
        "UDP message sent (30 bytes):\n\n"
        "INVITE sip:bob@127.0.0.1 SIP/2.0\nCSeq: 1 INVITE\nContent-Length: 3\n\nv=0\n\n"
        "----------------------------------------------- 2026-01-01 00:00:00.100000\n"
        "UDP message received [20] bytes :\n\n"
        "SIP/2.0 486 Busy Here\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
    )
    sent, received = parse_sipp_trace(text)
    assert (sent.direction, sent.method, sent.status_code, sent.body) == (
        "sent",
        "INVITE",
        None,
        "v=0",
    )
    assert (received.direction, received.status_code, received.method) == (
        "received",
        486,
        "INVITE",
    )
    assert received.header("cseq") == "1 INVITE"
    assert str(received) == "<- SIP/2.0 486 Busy Here"


# --------------------------------------------------------------------------- kamailio


def test_kamailio_accepts_its_config_and_answers_udp_and_tcp(kamailio: Kamailio) -> None:
    assert "Listening on" in kamailio.check_config()
    config = kamailio.config_path.read_text()
    assert f"listen=udp:127.0.0.1:{kamailio.port}" in config
    assert f"listen=tcp:127.0.0.1:{kamailio.port}" in config
    assert (kamailio.log_path.parent / "kamailio.cfg").read_text() == config
    assert sip_ping(kamailio.port) == "SIP/2.0 200 OK"
    assert port_is_bound(kamailio.port, "tcp")
    kamailio.wait_for_log(r"harness: request OPTIONS sip:127\.0\.0\.1:\d+ from 127\.0\.0\.1")
    subscriber = (kamailio.db_dir / "subscriber").read_text()
    assert "ha1(string,null) ha1b(string,null)" in subscriber
    assert r"carol:127.0.0.1:carol\:secret::" in subscriber  # db_text escapes ':'


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_registers_with_digest_auth(
    kamailio: Kamailio, peers: PeerSet, transport: Literal["u1", "t1"]
) -> None:
    reg = peers.sipp(
        "uac_register.xml",
        remote=kamailio.address,
        service="alice",
        auth=("alice", KAMAILIO_USERS["alice"]),
        transport=transport,
    )
    assert reg.wait() == 0, reg.diagnostics()
    assert reg.received_status_codes() == [401, 200]
    challenge = reg.trace()[1].header("WWW-Authenticate")
    assert challenge is not None
    assert 'realm="127.0.0.1"' in challenge
    assert 'qop="auth"' in challenge
    ok = reg.trace()[-1]
    assert ok.header("Contact") is not None
    assert f"sip:alice@127.0.0.1:{reg.local_port}" in (ok.header("Contact") or "")
    kamailio.wait_for_log(rf"harness: registered alice at <sip:alice@127\.0\.0\.1:{reg.local_port}")


def test_sipp_register_with_a_wrong_password_is_refused(kamailio: Kamailio, peers: PeerSet) -> None:
    reg = peers.sipp(
        "uac_register.xml",
        remote=kamailio.address,
        service="alice",
        auth=("alice", "wrong password"),
    )
    assert reg.wait() == 1, reg.diagnostics()
    assert reg.received_status_codes()[:2] == [401, 401]
    assert "harness: registered alice" not in kamailio.read_log()


def test_call_through_kamailio_with_proxy_auth(kamailio: Kamailio, peers: PeerSet) -> None:
    bob = peers.registered_callee(kamailio, user="bob", scenario="uas_answer_wait_bye.xml")
    assert bob.registration.received_status_codes() == [401, 200]

    alice = peers.sipp(
        "uac_call_auth.xml",
        remote=kamailio.address,
        service="bob",
        caller="alice",
        auth=("alice", KAMAILIO_USERS["alice"]),
        duration_ms=200,
    )
    assert alice.wait() == 0, alice.diagnostics()
    assert bob.wait() == 0, bob.callee.diagnostics()

    codes = alice.received_status_codes()
    assert codes[0] in (100, 407)
    assert 407 in codes
    assert codes.index(407) < codes.index(200)
    assert codes[-1] == 200  # the BYE's
    assert bob.callee.received_requests() == ["INVITE", "ACK", "BYE"]

    invite = bob.callee.trace()[0]
    assert invite.header("Record-Route") is not None
    assert f"127.0.0.1:{kamailio.port};lr" in (invite.header("Record-Route") or "")
    assert invite.header("Proxy-Authorization") is None  # consumed by the proxy
    answer = next(e for e in alice.trace() if e.status_code == 200 and e.method == "INVITE")
    assert re.search(r"^m=audio [1-9]\d* RTP/AVP 0$", answer.body, re.MULTILINE)
    assert re.search(r"^m=video 0 RTP/AVP 96$", answer.body, re.MULTILINE)

    lines = kamailio.harness_lines()
    assert any(
        line.startswith("challenge INVITE from sip:alice@127.0.0.1 with 407") for line in lines
    )
    assert any(line.startswith("relay BYE") for line in lines)  # loose-routed in dialog


def test_call_to_an_unregistered_user_gets_404_from_kamailio(
    kamailio: Kamailio, peers: PeerSet, tmp_path: Path
) -> None:
    # uac_call_auth.xml expects a 200; the same flow up to the final response
    # is enough here, with a 404 accepted instead.
    text = (SCENARIOS_DIR / "uac_call_auth.xml").read_text()
    head, _ = text.split('  <recv response="200" rrs="true"/>', 1)
    scenario = tmp_path / "uac_call_auth_404.xml"
    scenario.write_text(
        head
        + '  <recv response="404"/>\n'
        + "  <send><![CDATA[\n"
        + "      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        + "      [last_Via:]\n"
        + "      From: <sip:[$caller]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]\n"
        + "      [last_To:]\n      Call-ID: [call_id]\n      CSeq: 2 ACK\n"
        + "      Content-Length: 0\n\n  ]]></send>\n</scenario>\n"
    )
    alice = peers.sipp(
        scenario,
        remote=kamailio.address,
        service="nobody",
        caller="alice",
        auth=("alice", KAMAILIO_USERS["alice"]),
    )
    assert alice.wait() == 0, alice.diagnostics()
    assert _final_invite_response(alice.trace(), "received") == 404
    kamailio.wait_for_log("harness: nobody is not registered")


def test_cancel_through_kamailio_from_a_foreign_caller(
    kamailio: Kamailio, peers: PeerSet, tmp_path: Path
) -> None:
    # A caller outside the domain is not challenged and may reach local users.
    text = (SCENARIOS_DIR / "uac_cancel.xml").read_text()
    local_from = "From: <sip:[$caller]@[remote_ip]>"
    assert local_from in text
    scenario = tmp_path / "uac_cancel_foreign.xml"
    scenario.write_text(text.replace(local_from, "From: <sip:[$caller]@elsewhere.invalid>"))

    bob = peers.registered_callee(kamailio, user="bob", scenario="uas_no_answer.xml")
    mallory = peers.sipp(scenario, remote=kamailio.address, service="bob", caller="mallory")
    assert mallory.wait() == 0, mallory.diagnostics()
    assert bob.wait() == 0, bob.callee.diagnostics()

    assert 407 not in mallory.received_status_codes()
    assert _final_invite_response(mallory.trace(), "received") == 487
    assert bob.callee.received_requests() == ["INVITE", "CANCEL", "ACK"]
    # The 487 carries the INVITE's two Vias (Kamailio's and the caller's),
    # saved before the CANCEL arrived with Kamailio's only.
    busy = next(e for e in bob.callee.trace() if e.status_code == 487)
    vias = busy.headers("Via")
    assert len(vias) == 2
    assert vias[1].startswith(f"SIP/2.0/UDP 127.0.0.1:{mallory.local_port};")
    relayed = next(e for e in mallory.trace() if e.status_code == 487)
    assert relayed.headers("Via") == vias[1:]
    kamailio.wait_for_log("harness: relay CANCEL to sip:bob@127.0.0.1")


# --------------------------------------------------------------------------- sipp callees


@pytest.mark.parametrize(
    ("callee_scenario", "caller_scenario", "final_code", "callee_requests"),
    [
        ("uas_answer_then_bye.xml", "uac_expect_bye.xml", 200, ["INVITE", "ACK"]),
        ("uas_answer_wait_bye.xml", "uac_call.xml", 200, ["INVITE", "ACK", "BYE"]),
        ("uas_busy.xml", "uac_expect_failure.xml", 486, ["INVITE", "ACK"]),
        ("uas_not_found.xml", "uac_expect_failure.xml", 404, ["INVITE", "ACK"]),
        ("uas_no_answer.xml", "uac_cancel.xml", 487, ["INVITE", "CANCEL", "ACK"]),
    ],
)
def test_sipp_callee_scenario_gives_the_expected_outcome(
    peers: PeerSet,
    callee_scenario: str,
    caller_scenario: str,
    final_code: int,
    callee_requests: list[str],
) -> None:
    callee = peers.sipp(callee_scenario, service="bob", duration_ms=200, name="callee")
    caller = peers.sipp(
        caller_scenario,
        remote=callee.address,
        service="bob",
        caller="alice",
        duration_ms=200,
        name="caller",
    )
    assert caller.wait() == 0, caller.diagnostics()
    assert callee.wait() == 0, callee.diagnostics()
    assert _final_invite_response(caller.trace(), "received") == final_code
    assert _final_invite_response(callee.trace(), "sent") == final_code
    assert callee.received_requests() == callee_requests
    if callee_scenario == "uas_answer_then_bye.xml":
        assert caller.received_requests() == ["BYE"]
        bye = next(e for e in caller.trace() if e.method == "BYE" and not e.is_response)
        assert bye.first_line.startswith(f"BYE sip:alice@127.0.0.1:{caller.local_port}")
    if callee_scenario == "uas_no_answer.xml":
        ringing = caller.received_status_codes()
        assert ringing.index(180) < ringing.index(487)


_AUDIO_LINES = (
    "      m=audio [media_port] RTP/AVP 0 8\n"
    "      a=rtpmap:0 PCMU/8000\n"
    "      a=rtpmap:8 PCMA/8000\n"
    "      a=sendrecv\n"
)
_VIDEO_LINES = (
    "      m=video [media_port+2] RTP/AVP 96\n"
    "      a=rtpmap:96 H264/90000\n"
    "      a=fmtp:96 packetization-mode=1\n"
    "      a=sendrecv\n"
)


@pytest.mark.parametrize(
    ("offer", "expected_media"),
    [
        ("audio+video", ["m=audio {audio} RTP/AVP 0", "m=video 0 RTP/AVP 96"]),
        ("audio", ["m=audio {audio} RTP/AVP 0"]),
        ("video", ["m=video {video} RTP/AVP 96"]),
    ],
)
def test_sipp_callee_answer_mirrors_the_offered_m_lines(
    peers: PeerSet, tmp_path: Path, offer: str, expected_media: list[str]
) -> None:
    text = (SCENARIOS_DIR / "uac_call.xml").read_text()
    assert _AUDIO_LINES in text and _VIDEO_LINES in text
    if offer == "audio":
        text = text.replace(_VIDEO_LINES, "")
    elif offer == "video":
        text = text.replace(_AUDIO_LINES, "")
    scenario = tmp_path / f"uac_call_{offer.replace('+', '_')}.xml"
    scenario.write_text(text)

    callee = peers.sipp("uas_answer_wait_bye.xml", service="bob", name="callee")
    caller = peers.sipp(scenario, remote=callee.address, service="bob", caller="alice")
    assert caller.wait() == 0, caller.diagnostics()
    assert callee.wait() == 0, callee.diagnostics()

    answer = next(e for e in caller.trace() if e.status_code == 200 and e.method == "INVITE")
    media = [line for line in answer.body.splitlines() if line.startswith("m=")]
    audio, video = callee.media_port, callee.media_port + 2
    assert media == [m.format(audio=audio, video=video) for m in expected_media]
