"""Tests for sipbridge.sip.transport: real UDP/TCP sockets on 127.0.0.1 (RFC 3261 §18)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.logs import SIP_TRACE_LOGGER
from sipbridge.sip.address import Target
from sipbridge.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
)
from sipbridge.sip.transport import SipTransport, TransportStats, bad_request_response

HOST = "127.0.0.1"
TIMEOUT = 5.0

Received = tuple[SipRequest | SipResponse, Target]


def request_bytes(
    method: str = "OPTIONS",
    *,
    seq: int = 1,
    body: bytes = b"",
    extra: str = "",
    cseq: str | None = None,
) -> bytes:
    head = (
        f"{method} sip:bob@{HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:5999;branch=z9hG4bK-{method}-{seq};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{HOST}>;tag=a1\r\n"
        f"To: <sip:bob@{HOST}>\r\n"
        f"Call-ID: call-{seq}@{HOST}\r\n"
        f"CSeq: {cseq if cseq is not None else f'{seq} {method}'}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def request(method: str = "OPTIONS", seq: int = 1) -> SipRequest:
    message = parse_message(request_bytes(method, seq=seq))
    assert isinstance(message, SipRequest)
    return message


class Endpoint:
    """A SipTransport with queues for what its callbacks got."""

    def __init__(self, **kwargs: Any) -> None:
        self.messages: asyncio.Queue[Received] = asyncio.Queue()
        self.errors: asyncio.Queue[tuple[Target, str]] = asyncio.Queue()
        self.transport = SipTransport(
            HOST, 0, on_message=self._on_message, on_error=self._on_error, **kwargs
        )
        self.fail_next = False

    def _on_message(self, message: SipRequest | SipResponse, source: Target) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("bug in the core")
        self.messages.put_nowait((message, source))

    def _on_error(self, target: Target, reason: str) -> None:
        self.errors.put_nowait((target, reason))

    async def message(self) -> Received:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def error(self) -> tuple[Target, str]:
        return await asyncio.wait_for(self.errors.get(), TIMEOUT)

    @property
    def udp(self) -> Target:
        return Target("udp", HOST, self.transport.local_port)

    @property
    def tcp(self) -> Target:
        return Target("tcp", HOST, self.transport.local_port)


EndpointFactory = Callable[..., Awaitable[Endpoint]]


@pytest.fixture
async def endpoint() -> AsyncIterator[EndpointFactory]:
    started: list[Endpoint] = []

    async def make(**kwargs: Any) -> Endpoint:
        ep = Endpoint(**kwargs)
        await ep.transport.start()
        started.append(ep)
        return ep

    yield make
    for ep in started:
        await ep.transport.stop()


@pytest.fixture(autouse=True)
def _restore_trace_level() -> Iterator[None]:
    logger = logging.getLogger(SIP_TRACE_LOGGER)
    level = logger.level
    yield
    logger.setLevel(level)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


async def read_message(reader: asyncio.StreamReader) -> SipRequest | SipResponse:
    framer = StreamFramer()
    while True:
        data = await asyncio.wait_for(reader.read(4096), TIMEOUT)
        assert data, "connection closed before a message arrived"
        messages = framer.feed(data)
        if messages:
            assert len(messages) == 1
            return messages[0]


async def udp_client() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((HOST, 0))
    return sock, sock.getsockname()[1]


# -- UDP --------------------------------------------------------------------------------------


async def _udp_and_tcp_round_trip() -> None:
    a = Endpoint()
    b = Endpoint()
    await a.transport.start()
    await b.transport.start()
    try:
        for kind in ("udp", "tcp"):
            target = b.udp if kind == "udp" else b.tcp
            a.transport.send(request(seq=7), target)
            got, source = await b.message()
            assert isinstance(got, SipRequest)
            assert (got.method, got.call_id) == ("OPTIONS", f"call-7@{HOST}")
            assert source.transport == kind and source.host == HOST
            if kind == "udp":
                assert source.port == a.transport.local_port
            b.transport.send(make_response(got, 200, to_tag="b1"), source)
            answer, answer_source = await a.message()
            assert isinstance(answer, SipResponse)
            assert answer.status == 200 and answer.to.tag == "b1"
            assert answer_source == target
        assert a.transport.stats == TransportStats(received=2, sent=2)
        assert b.transport.stats == TransportStats(received=2, sent=2)
    finally:
        await a.transport.stop()
        await b.transport.stop()


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_request_response_between_two_transports(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_udp_and_tcp_round_trip())


async def test_port_zero_gives_one_port_for_udp_and_tcp(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    port = ep.transport.local_port
    assert port > 0 and ep.transport.local_host == HOST
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError):
        udp.bind((HOST, port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, pytest.raises(OSError):
        tcp.bind((HOST, port))


async def test_garbage_and_oversized_datagrams_are_counted(endpoint: EndpointFactory) -> None:
    ep = await endpoint(max_message_size=8192)
    sock, _ = await udp_client()
    loop = asyncio.get_running_loop()
    with sock:
        for datagram in (
            b"garbage",
            bytes(range(256)),
            b"INVITE sip:x SIP/2.0\r\n\r\n",  # no mandatory headers
            b"\r\n\r\n",  # keep-alive: ignored, not an error
            b"OPTIONS sip:bob@h SIP/2.0\r\nVia: x" + b"a" * 60_000 + b"\r\n\r\n",
        ):
            await loop.sock_sendto(sock, datagram, (HOST, ep.transport.local_port))
        await loop.sock_sendto(sock, request_bytes(seq=2), (HOST, ep.transport.local_port))
        message, _ = await ep.message()  # datagrams from one socket arrive in order on lo
    assert isinstance(message, SipRequest) and message.call_id == f"call-2@{HOST}"
    assert ep.transport.stats.parse_errors == 4
    assert ep.transport.stats.received == 1


async def test_malformed_request_is_answered_400(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    sock, _ = await udp_client()
    loop = asyncio.get_running_loop()
    with sock:
        bad = request_bytes(cseq="x OPTIONS")
        await loop.sock_sendto(sock, bad, (HOST, ep.transport.local_port))
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), TIMEOUT)
    lines = data.decode().split("\r\n")
    assert lines[0] == "SIP/2.0 400 Bad Request - bad CSeq number: 'x'"
    assert lines[1].startswith(f"Via: SIP/2.0/UDP {HOST}:5999;branch=")
    assert lines[2:4] == [
        f"From: <sip:alice@{HOST}>;tag=a1",
        f"To: <sip:bob@{HOST}>;tag=" + lines[3][-12:],
    ]
    assert lines[4:] == [f"Call-ID: call-1@{HOST}", "CSeq: x OPTIONS", "Content-Length: 0", "", ""]
    assert len(lines[3][-12:]) == 12 and lines[3][-13] == "="
    assert ep.transport.stats.parse_errors == 1
    assert ep.transport.stats.sent == 1


async def test_exception_in_on_message_does_not_stop_reception(
    endpoint: EndpointFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ep = await endpoint()
    sender = await endpoint()
    ep.fail_next = True
    with caplog.at_level(logging.ERROR, logger="sipbridge.sip.transport"):
        sender.transport.send(request(seq=1), ep.udp)
        sender.transport.send(request(seq=2), ep.udp)
        message, _ = await ep.message()
    assert isinstance(message, SipRequest) and message.call_id == f"call-2@{HOST}"
    assert any("on_message callback failed" in r.getMessage() for r in caplog.records)
    assert ep.transport.stats.received == 2


# -- TCP --------------------------------------------------------------------------------------


async def test_tcp_message_in_one_byte_writes_is_framed(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    _, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    client_port = writer.get_extra_info("sockname")[1]
    data = request_bytes("MESSAGE", body=b"hello there")
    writer.transport.set_write_buffer_limits(0)
    for index in range(len(data)):
        writer.write(data[index : index + 1])
        await writer.drain()
    message, source = await ep.message()
    writer.close()
    await writer.wait_closed()
    assert isinstance(message, SipRequest)
    assert (message.method, message.body) == ("MESSAGE", b"hello there")
    assert source == Target("tcp", HOST, client_port)


async def test_tcp_two_messages_in_one_write(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    _, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    writer.write(request_bytes(seq=1, body=b"v=0\r\n") + b"\r\n" + request_bytes(seq=2))
    first, source1 = await ep.message()
    second, source2 = await ep.message()
    writer.close()
    await writer.wait_closed()
    assert [first.call_id, second.call_id] == [f"call-1@{HOST}", f"call-2@{HOST}"]
    assert first.body == b"v=0\r\n"
    assert source1 == source2


async def test_tcp_response_goes_back_on_the_inbound_connection(
    endpoint: EndpointFactory,
) -> None:
    ep = await endpoint()
    reader, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    writer.write(request_bytes("INVITE"))
    got, source = await ep.message()
    assert isinstance(got, SipRequest)
    ep.transport.send(make_response(got, 180, to_tag="t"), source)
    answer = await read_message(reader)
    writer.close()
    await writer.wait_closed()
    assert isinstance(answer, SipResponse)
    assert answer.status == 180 and answer.call_id == got.call_id
    assert ep.transport.stats.send_errors == 0


async def test_tcp_send_reuses_its_connection(endpoint: EndpointFactory) -> None:
    a = await endpoint()
    b = await endpoint()
    a.transport.send(request(seq=1), b.tcp)  # queued while connecting
    a.transport.send(request(seq=2), b.tcp)
    _, source1 = await b.message()
    _, source2 = await b.message()
    assert source1 == source2 and source1.transport == "tcp"
    assert source1.port != a.transport.local_port  # an ephemeral port, not the listener


async def test_tcp_connect_refused_reports_the_target(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    target = Target("tcp", HOST, free_port())
    ep.transport.send(request(), target)
    failed, reason = await ep.error()
    assert failed == target
    assert reason == "TCP connect failed: Connection refused"
    assert ep.transport.stats.send_errors == 1
    ep.transport.send(request(), target)  # the failed connection is forgotten: a new try
    failed, _ = await ep.error()
    assert failed == target and ep.transport.stats.send_errors == 2


async def test_tcp_connect_timeout_reports_the_target(endpoint: EndpointFactory) -> None:
    # A listener that never accepts, with its backlog full, drops further SYNs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex((HOST, port))
            fillers.append(filler)
        try:
            ep = await endpoint(connect_timeout=0.2)
            target = Target("tcp", HOST, port)
            ep.transport.send(request(), target)
            failed, reason = await ep.error()
        finally:
            for filler in fillers:
                filler.close()
    assert failed == target
    assert reason == "TCP connect timed out after 0.2 s"


async def test_tcp_oversized_message_closes_the_connection(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    reader, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    writer.write(request_bytes(body=b"x" * 70_000))
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the transport
    writer.close()
    await writer.wait_closed()
    assert ep.transport.stats.parse_errors == 1
    _, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    writer.write(request_bytes(seq=3))
    message, _ = await ep.message()
    writer.close()
    await writer.wait_closed()
    assert message.call_id == f"call-3@{HOST}"


async def test_tcp_keepalive_ping_gets_a_pong(endpoint: EndpointFactory) -> None:
    ep = await endpoint()
    reader, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\r\n"
    writer.close()
    await writer.wait_closed()
    assert ep.transport.stats.parse_errors == 0


async def test_idle_tcp_connection_is_closed(endpoint: EndpointFactory) -> None:
    ep = await endpoint(idle_timeout=0.1)
    reader, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
    writer.write(request_bytes())
    await ep.message()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()
    await writer.wait_closed()


async def test_disabled_transport_is_an_error(endpoint: EndpointFactory) -> None:
    ep = await endpoint(udp=False)
    target = Target("udp", HOST, 5060)
    ep.transport.send(request(), target)
    assert await ep.error() == (target, "transport 'udp' is not enabled")


# -- lifecycle and tracing ----------------------------------------------------------------------


async def test_stop_releases_sockets_and_tasks() -> None:
    ep = Endpoint(connect_timeout=TIMEOUT)
    peer = Endpoint()
    await ep.transport.start()
    await peer.transport.start()
    port = ep.transport.local_port
    _, writer = await asyncio.open_connection(HOST, port)  # an inbound connection
    writer.write(request_bytes())
    await ep.message()
    ep.transport.send(request(), peer.tcp)  # an outbound connection
    await peer.message()
    await ep.transport.stop()
    await ep.transport.stop()  # idempotent
    await peer.transport.stop()
    writer.close()
    await writer.wait_closed()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((HOST, port))
    ep.transport.send(request(), peer.udp)  # after stop: dropped and counted, no raise
    assert ep.transport.stats.send_errors == 1
    assert ep.errors.empty()


async def test_stop_cancels_a_pending_connect() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex((HOST, port))
        try:
            ep = Endpoint(connect_timeout=60.0)
            await ep.transport.start()
            ep.transport.send(request(), Target("tcp", HOST, port))
            assert len(asyncio.all_tasks()) == 2
            await asyncio.wait_for(ep.transport.stop(), TIMEOUT)
        finally:
            for filler in fillers:
                filler.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert ep.errors.empty()


async def test_trace_logs_each_message_with_digest_response_masked(
    endpoint: EndpointFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = await endpoint(trace=True)
    b = await endpoint()
    auth = (
        'Authorization: Digest username="alice", realm="x", nonce="n", '
        'uri="sip:bob@127.0.0.1", response="0123456789abcdef0123456789abcdef"\r\n'
    )
    message = parse_message(request_bytes("REGISTER", extra=auth))
    with caplog.at_level(logging.DEBUG, logger=SIP_TRACE_LOGGER):
        a.transport.send(message, b.udp)
        got, source = await b.message()
        assert isinstance(got, SipRequest)
        b.transport.send(make_response(got, 200), source)  # b does not trace
        await a.message()
        a.transport.set_trace(False)
        a.transport.send(message, b.udp)
        await b.message()
    records = [r for r in caplog.records if r.name == SIP_TRACE_LOGGER]
    assert [getattr(r, "direction", None) for r in records] == ["send", "recv"]
    assert [getattr(r, "peer", None) for r in records] == [str(b.udp), str(b.udp)]
    sent = records[0].getMessage()
    assert sent.startswith(f"send {len(message.to_bytes())} bytes to {b.udp}\nREGISTER ")
    assert "0123456789abcdef" not in sent
    assert 'response="***"' in sent
    first_line, _, text = records[1].getMessage().partition("\n")
    assert first_line.startswith("recv ") and first_line.endswith(f"bytes from {b.udp}")
    assert text.startswith("SIP/2.0 200 OK\r\n")


# -- bad_request_response ---------------------------------------------------------------------


def test_bad_request_is_not_sent_for_ack_responses_or_missing_headers() -> None:
    assert bad_request_response(request_bytes("ACK"), "x") is None
    assert bad_request_response(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", "x") is None
    no_call_id = request_bytes().replace(b"Call-ID", b"X-Call-ID")
    assert bad_request_response(no_call_id, "x") is None


def test_bad_request_copies_compact_and_folded_headers_and_keeps_a_to_tag() -> None:
    data = (
        b"BYE sip:bob@h SIP/2.0\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bK1\n"
        b"f: <sip:a@h>;tag=1\n"
        b"t: <sip:b@h>;tag=2\n"
        b"i: c1\n"
        b"CSeq: 4\n BYE\n"
        b"Bogus: \x01\n\n"
    )
    answer = bad_request_response(data, "bad\r\nreason\x00")
    assert answer is not None
    assert answer.startswith(b"SIP/2.0 400 Bad Request - badreason\r\n")
    parsed = parse_message(answer)
    assert isinstance(parsed, SipResponse)
    assert parsed.to.tag == "2" and str(parsed.cseq) == "4 BYE"
    assert "Bogus" not in parsed.headers


@given(st.binary(max_size=600), st.text(max_size=300))
def test_bad_request_never_raises(data: bytes, reason: str) -> None:
    answer = bad_request_response(data, reason)
    assert answer is None or answer.startswith(b"SIP/2.0 400 Bad Request - ")


async def test_ipv6_socket_reports_and_reaches_ipv4_peers_unmapped() -> None:
    # A v4-mapped bind exercises the dual-stack paths while listening on loopback only.
    ep = Endpoint()
    ep.transport = SipTransport(
        "::ffff:127.0.0.1", 0, on_message=ep._on_message, on_error=ep._on_error
    )
    try:
        await ep.transport.start()
    except OSError as exc:  # pragma: no cover - host without IPv6
        pytest.skip(f"no IPv6 socket: {exc}")
    try:
        sock, client_port = await udp_client()
        loop = asyncio.get_running_loop()
        with sock:
            await loop.sock_sendto(sock, request_bytes(), (HOST, ep.transport.local_port))
            got, source = await ep.message()
            assert source == Target("udp", HOST, client_port)
            assert isinstance(got, SipRequest)
            ep.transport.send(make_response(got, 200), source)
            answer = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65535), TIMEOUT))
        assert isinstance(answer, SipResponse) and answer.status == 200
        reader, writer = await asyncio.open_connection(HOST, ep.transport.local_port)
        writer.write(request_bytes(seq=2))
        got, source = await ep.message()
        assert source == Target("tcp", HOST, writer.get_extra_info("sockname")[1])
        assert isinstance(got, SipRequest)
        ep.transport.send(make_response(got, 200), source)  # found by its unmapped key
        answer = await read_message(reader)
        writer.close()
        await writer.wait_closed()
        assert isinstance(answer, SipResponse) and answer.call_id == got.call_id
        assert ep.transport.stats.send_errors == 0
    finally:
        await ep.transport.stop()


async def test_send_before_start_is_dropped_and_counted() -> None:
    ep = Endpoint()
    ep.transport.send(request(), Target("udp", HOST, 5060))
    assert ep.transport.stats == TransportStats(send_errors=1)
    assert ep.transport.local_port == 0 and ep.transport.local_host == HOST
    await ep.transport.stop()  # stop without start releases nothing and does not raise
    assert ep.errors.empty()
