"""No media from the callee: the gateway opens the NAT path and then gives up.

sipp answers but sends no RTP. The gateway must send its NAT keepalives (RTP
silence in the answered codec, and RTCP) to the ports in sipp's SDP answer
from the moment of the answer, and end the call with FAILED "Failed by RTP
activity" once ``inactivity_timeout`` passes without media.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from rtp.packet import RtpPacket, is_rtcp
from tests.interop.gateway_process import GatewayProcess, running_gateway
from tests.interop.peers import PeerSet, free_port
from tests.interop.test_calls import startup_body

pytestmark = pytest.mark.interop


@pytest.fixture
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    settings = "inactivity_timeout = 2.0\nkeepalive_interval = 0.5\n"
    with running_gateway(
        tmp_path_factory.mktemp("gateway"), rtp_ports=10, rtp_settings=settings
    ) as process:
        yield process


def test_keepalives_then_failed_by_rtp_activity(gateway: GatewayProcess, peers: PeerSet) -> None:
    # sipp answers with m=audio on a port the test listens on, to see what the
    # gateway sends there.
    media_port = free_port("udp", span=2)
    rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp_sock.bind(("127.0.0.1", media_port))
    rtcp_sock.bind(("127.0.0.1", media_port + 1))
    rtp_sock.settimeout(5)
    rtcp_sock.settimeout(5)
    try:
        callee = peers.sipp("uas_answer_media_port.xml", variables={"audio_port": str(media_port)})
        assert gateway.post("/call/startup", startup_body("silent", callee)).status_code == 200
        gateway.wait_status("silent", {"ESTABLISHED"})

        first, _ = rtp_sock.recvfrom(2048)
        packet = RtpPacket.parse(first)
        assert packet.payload_type == 0  # PCMU, what sipp answered
        assert packet.payload == b"\xff" * 160  # 20 ms of u-law silence
        second = RtpPacket.parse(rtp_sock.recvfrom(2048)[0])
        assert second.ssrc == packet.ssrc
        assert second.sequence_number == (packet.sequence_number + 1) & 0xFFFF
        rtcp, _ = rtcp_sock.recvfrom(2048)
        assert is_rtcp(rtcp) and rtcp[1] == 201  # a receiver report

        call, _ = gateway.wait_status("silent", {"FAILED", "FINISH"}, timeout=10)
        assert call["status"] == "FAILED"
        assert call["info"] == "Failed by RTP activity"
        assert callee.wait(15) == 0, callee.log_path.read_text()
        assert callee.received_requests() == ["INVITE", "ACK", "BYE"]
    finally:
        rtp_sock.close()
        rtcp_sock.close()
