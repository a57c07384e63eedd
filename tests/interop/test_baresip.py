"""The gateway against a real softphone: baresip 1.0 registered at kamailio as ``bob``.

The gateway (the real ``sipbridge serve`` process, driven over REST with the
seed body, registering as ``alice``) calls ``bob`` through kamailio, which
authenticates the INVITE (407) and relays it to baresip's registered Contact;
baresip answers by itself. What each side did is read from the wire: the
gateway's SIP trace (``sip_trace = true``), baresip's ``-s`` trace and its
log lines ("Call established", "received DTMF", "session closed").

baresip 1.0 facts these tests rely on (see ``tests/interop/baresip.py``):
it answers SIP INFO ``application/dtmf-relay`` with 200 and logs
``call: received DTMF: 'D'``; a remote hold (``a=sendonly``) is answered with
``a=recvonly`` and no log line of its own; a BYE it receives is logged as
``session closed: Connection reset by peer``. ``baresip-core`` has no H.264
(that is ``avcodec.so`` in ``baresip-ffmpeg``), so it declines the gateway's
H.264-only video stream with port 0 unless that module is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.baresip import Baresip, BaresipSipMessage
from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import GatewayProcess
from tests.interop.peers import Kamailio, PeerSet
from tests.interop.test_calls_via_kamailio import seed_body

pytestmark = pytest.mark.interop


# --------------------------------------------------------------------------- fixtures


def start_bob(peers: PeerSet, kamailio: Kamailio, tmp_path: Path, **options: Any) -> Baresip:
    """baresip registered at ``kamailio`` as bob, stopped by the ``peers`` fixture."""
    phone = Baresip(
        tmp_path / "bob",
        peers.log_dir,
        user="bob",
        password=KAMAILIO_USERS["bob"],
        registrar=kamailio,
        **options,
    )
    return phone.start(peers)


@pytest.fixture
def bob(peers: PeerSet, kamailio: Kamailio, tmp_path: Path) -> Baresip:
    """baresip with every codec it has, answering automatically."""
    return start_bob(peers, kamailio, tmp_path)


# --------------------------------------------------------------------------- wire helpers


@dataclass(frozen=True)
class GatewayTraceEntry:
    """One SIP message from the gateway's ``sipbridge.sip.trace`` log lines."""

    direction: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def cseq_method(self) -> str:
        match = re.search(r"^CSeq:\s*\d+\s+(\S+)", self.text, re.MULTILINE | re.IGNORECASE)
        return match.group(1) if match else ""

    @property
    def body(self) -> str:
        return self.text.partition("\n\n")[2]


_GATEWAY_TRACE = re.compile(
    r"sipbridge\.sip\.trace: (?P<dir>send|recv) \d+ bytes (?:to|from) \S+\n"
    r"(?P<message>.*?)\n direction=(?:send|recv) peer=",
    re.DOTALL,
)


def gateway_trace(gateway: GatewayProcess) -> list[GatewayTraceEntry]:
    """The SIP messages the gateway sent and received, in order."""
    return [
        GatewayTraceEntry(m["dir"], m["message"].replace("\r\n", "\n").strip("\n"))
        for m in _GATEWAY_TRACE.finditer(gateway.log_text())
    ]


@dataclass(frozen=True)
class MediaLine:
    """An SDP media description reduced to what the tests check (RFC 4566 §5.14)."""

    kind: str
    port: int
    encodings: list[str]
    direction: str


def media_lines(sdp: str) -> dict[str, MediaLine]:
    """``kind -> MediaLine`` of an SDP body; encodings in ``m=`` order (``opus/48000/2``)."""
    result: dict[str, MediaLine] = {}
    for section in re.split(r"\n(?=m=)", sdp.replace("\r\n", "\n"))[1:]:
        head = re.match(r"m=(\w+) (\d+) \S+ ?(.*)", section)
        assert head is not None, section
        rtpmap = dict(re.findall(r"^a=rtpmap:(\d+) (\S+)", section, re.MULTILINE))
        direction = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\b", section, re.M)
        result[head[1]] = MediaLine(
            kind=head[1],
            port=int(head[2]),
            encodings=[rtpmap.get(pt, pt) for pt in head[3].split()],
            direction=direction[1] if direction else "sendrecv",
        )
    return result


def invite_answers(messages: list[BaresipSipMessage]) -> list[BaresipSipMessage]:
    """baresip's 200 OK responses to INVITEs (the initial one, then re-INVITEs)."""
    return [
        m
        for m in messages
        if m.direction == "send"
        and m.first_line.startswith("SIP/2.0 200")
        and m.cseq_method == "INVITE"
    ]


def establish(
    gateway: GatewayProcess, kamailio: Kamailio, bob: Baresip, call_id: str
) -> dict[str, Any]:
    """Start the seed call to bob; wait until both sides have it established."""
    response = gateway.post("/call/startup", seed_body(call_id, kamailio))
    assert response.status_code == 200, response.text
    call, seen = gateway.wait_status(call_id, {"ESTABLISHED", "FAILED", "FINISH", "BUSY"})
    assert call["status"] == "ESTABLISHED", (seen, call, bob.diagnostics())
    bob.wait_for_log(r"Call established: sip:alice@127\.0\.0\.1", timeout=5)
    return call


# --------------------------------------------------------------------------- tests


def test_gateway_calls_baresip_and_terminates(
    gateway: GatewayProcess, kamailio: Kamailio, bob: Baresip
) -> None:
    call = establish(gateway, kamailio, bob, "bs-terminate")
    assert call["sipStatus"] == 200
    harness = kamailio.harness_lines()
    assert any(line.startswith("registered alice") for line in harness), harness
    assert any(line.startswith("relay INVITE") and "bob" in line for line in harness), harness
    assert bob.received_requests()[:2] == ["INVITE", "ACK"], bob.diagnostics()

    mark = bob.log_mark()
    assert gateway.post("/call/terminate", {"callId": "bs-terminate"}).status_code == 200
    call, _ = gateway.wait_status("bs-terminate", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"
    assert call["info"] == "Normal call clearing"

    # baresip got the BYE (through kamailio's Record-Route), answered 200 and closed.
    bob.wait_for_log(r"session closed: Connection reset by peer", since=mark, timeout=5)
    assert bob.received_requests(mark) == ["BYE"]
    byes = [m for m in bob.sip_messages(mark) if m.direction == "send" and m.cseq_method == "BYE"]
    assert [m.first_line for m in byes] == ["SIP/2.0 200 OK"]
    kamailio.wait_for_log(r"harness: request BYE", timeout=5)


def test_baresip_hangs_up(gateway: GatewayProcess, kamailio: Kamailio, bob: Baresip) -> None:
    establish(gateway, kamailio, bob, "bs-hangup")
    mark = bob.log_mark()
    bob.hangup()
    bob.wait_for_log(r"call: terminate call '\S+' with sip:alice@", since=mark, timeout=5)

    call, _ = gateway.wait_status("bs-hangup", {"FINISH", "FAILED"}, timeout=10)
    assert call["status"] == "FINISH"
    assert call["info"] == "Normal call clearing"
    # baresip sent the BYE, the gateway answered it 200.
    sent = [m.first_line.split(" ", 1)[0] for m in bob.sip_messages(mark) if m.direction == "send"]
    assert sent == ["BYE"], bob.diagnostics()
    byes = [m for m in gateway_trace(gateway) if m.cseq_method == "BYE"]
    assert [(m.direction, m.first_line.split(" ")[0]) for m in byes] == [
        ("recv", "BYE"),
        ("send", "SIP/2.0"),
    ], [m.first_line for m in byes]
    assert byes[1].first_line == "SIP/2.0 200 OK"


def test_hold_and_unhold(gateway: GatewayProcess, kamailio: Kamailio, bob: Baresip) -> None:
    establish(gateway, kamailio, bob, "bs-hold")
    mark = bob.log_mark()
    response = gateway.post("/call/hold", {"callId": "bs-hold"})
    assert response.status_code == 200, response.text
    call, _ = gateway.wait_status("bs-hold", {"HOLD", "FINISH", "FAILED"}, timeout=10)
    assert call["status"] == "HOLD"

    # baresip took the sendonly re-INVITE and answered recvonly (RFC 3264 §8.4).
    bob.wait_for_log(r"call: got re-INVITE \(SDP Offer\)", since=mark, timeout=5)
    reinvite = [m for m in bob.sip_messages(mark) if m.direction == "recv"]
    assert reinvite[0].first_line.startswith("INVITE "), bob.diagnostics()
    assert media_lines(reinvite[0].body)["audio"].direction == "sendonly"
    answers = invite_answers(bob.sip_messages(mark))
    assert len(answers) == 1, bob.diagnostics()
    assert media_lines(answers[0].body)["audio"].direction == "recvonly"

    assert gateway.post("/call/hold", {"callId": "bs-hold"}).status_code == 409

    mark = bob.log_mark()
    response = gateway.post("/call/unhold", {"callId": "bs-hold"})
    assert response.status_code == 200, response.text
    call, _ = gateway.wait_status("bs-hold", {"ESTABLISHED", "FINISH", "FAILED"}, timeout=10)
    assert call["status"] == "ESTABLISHED"
    bob.wait_for_log(r"call: got re-INVITE \(SDP Offer\)", since=mark, timeout=5)
    answers = invite_answers(bob.sip_messages(mark))
    assert len(answers) == 1, bob.diagnostics()
    assert media_lines(answers[0].body)["audio"].direction == "sendrecv"
    assert gateway.post("/call/unhold", {"callId": "bs-hold"}).status_code == 409

    assert gateway.post("/call/terminate", {"callId": "bs-hold"}).status_code == 200
    call, _ = gateway.wait_status("bs-hold", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"


def test_baresip_holds_and_resumes(
    gateway: GatewayProcess, kamailio: Kamailio, bob: Baresip
) -> None:
    establish(gateway, kamailio, bob, "bs-peer-hold")
    mark = bob.log_mark()
    bob.hold()
    call, _ = gateway.wait_status("bs-peer-hold", {"HOLD", "FINISH", "FAILED"}, timeout=10)
    assert call["status"] == "HOLD"
    assert call["info"] == "Held by peer"
    # The gateway answered baresip's sendonly re-INVITE with recvonly (RFC 3264 §8.4);
    # the H.264 video stream stays accepted.
    bob.wait_for_log(r"call: got SDP answer", since=mark, timeout=5)
    answers = [
        m
        for m in bob.sip_messages(mark)
        if m.direction == "recv" and m.first_line.startswith("SIP/2.0 200")
        if m.cseq_method == "INVITE"
    ]
    assert len(answers) == 1, bob.diagnostics()
    held = media_lines(answers[0].body)
    assert held["audio"].direction == "recvonly"
    # baresip-ffmpeg gives baresip H.264: video stays accepted while held.
    assert held["video"].port != 0

    mark = bob.log_mark()
    bob.resume()
    call, _ = gateway.wait_status("bs-peer-hold", {"ESTABLISHED", "FINISH", "FAILED"}, timeout=10)
    assert call["status"] == "ESTABLISHED"
    bob.wait_for_log(r"call: got SDP answer", since=mark, timeout=5)
    answers = [
        m
        for m in bob.sip_messages(mark)
        if m.direction == "recv" and m.first_line.startswith("SIP/2.0 200")
        if m.cseq_method == "INVITE"
    ]
    assert [media_lines(m.body)["audio"].direction for m in answers] == ["sendrecv"]

    assert gateway.post("/call/terminate", {"callId": "bs-peer-hold"}).status_code == 200
    call, _ = gateway.wait_status("bs-peer-hold", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"


def test_dtmf_by_sip_info_reaches_baresip(
    gateway: GatewayProcess, kamailio: Kamailio, bob: Baresip
) -> None:
    establish(gateway, kamailio, bob, "bs-dtmf")
    mark = bob.log_mark()
    response = gateway.post("/call/send_dtmf", {"callId": "bs-dtmf", "dtmf": "12#", "type": "INFO"})
    assert response.status_code == 200, response.text

    bob.wait_for_log(r"received DTMF: '#'", since=mark, timeout=5)
    digits = re.findall(r"call: received DTMF: '(.)'", bob.read_log()[mark:])
    assert digits == ["1", "2", "#"]
    # One INFO per digit, each answered 200 by baresip (RFC 6086 §4.2 via dtmf-relay).
    infos = [m for m in bob.sip_messages(mark) if m.cseq_method == "INFO"]
    assert [m.first_line.split(" ", 1)[0] for m in infos if m.direction == "recv"] == ["INFO"] * 3
    assert [m.first_line for m in infos if m.direction == "send"] == ["SIP/2.0 200 OK"] * 3
    assert all("Signal=" in m.body for m in infos if m.direction == "recv")
    gateway_infos = [m for m in gateway_trace(gateway) if m.cseq_method == "INFO"]
    assert [m.first_line for m in gateway_infos if m.direction == "recv"] == ["SIP/2.0 200 OK"] * 3

    assert gateway.post("/call/terminate", {"callId": "bs-dtmf"}).status_code == 200
    call, _ = gateway.wait_status("bs-dtmf", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"


@pytest.mark.parametrize(
    ("audio_codecs", "expected_audio"),
    [(None, "opus/48000/2"), (("PCMA",), "PCMA/8000")],
    ids=["all-codecs", "pcma-only"],
)
def test_sdp_negotiation_with_a_real_phone(
    gateway: GatewayProcess,
    kamailio: Kamailio,
    peers: PeerSet,
    tmp_path: Path,
    audio_codecs: tuple[str, ...] | None,
    expected_audio: str,
) -> None:
    bob = start_bob(peers, kamailio, tmp_path, audio_codecs=audio_codecs)
    call = establish(gateway, kamailio, bob, "bs-sdp")
    assert call["hasAudio"] is True
    assert call["hasVideo"] is True

    trace = gateway_trace(gateway)
    offers = [
        m for m in trace if m.direction == "send" and m.first_line.startswith("INVITE ") and m.body
    ]
    answers = [
        m
        for m in trace
        if m.direction == "recv"
        and m.first_line.startswith("SIP/2.0 200")
        and m.cseq_method == "INVITE"
    ]
    assert offers and len(answers) == 1, [m.first_line for m in trace]
    offer, answer = media_lines(offers[-1].body), media_lines(answers[0].body)
    assert offer["audio"].encodings[:3] == ["opus/48000/2", "PCMU/8000", "PCMA/8000"]
    assert [e.split("/")[0] for e in offer["video"].encodings] == ["H264", "H264"]

    # Audio: baresip answers with the codecs it shares, in the offer's order (RFC 3264 §6.1).
    assert answer["audio"].port != 0
    assert answer["audio"].encodings[0] == expected_audio, answer
    assert answer["audio"].direction == "sendrecv"
    # Video: H.264 from baresip-ffmpeg's avcodec.so (installed by scripts/install-peers.sh).
    assert bob.has_h264, "baresip has no avcodec.so: run `make peers` (baresip-ffmpeg)"
    assert answer["video"].port != 0
    assert answer["video"].encodings[0].startswith("H264/"), answer
    bob.wait_for_log(
        rf"audio: Set audio encoder: {re.escape(expected_audio.split('/')[0])} ", timeout=5
    )

    assert gateway.post("/call/terminate", {"callId": "bs-sdp"}).status_code == 200
    call, _ = gateway.wait_status("bs-sdp", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH"
