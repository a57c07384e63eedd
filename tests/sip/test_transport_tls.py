"""Tests for SIP over TLS in sipbridge.sip.transport (RFC 3261 §26.2, RFC 5630).

A real asyncio TLS server on 127.0.0.1 with a self-signed certificate made by the
openssl CLI plays the SIP peer.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop

from sipbridge.sip.address import SipUri, Target
from sipbridge.sip.message import SipRequest, SipResponse, StreamFramer, parse_message
from sipbridge.sip.targets import uri_target
from sipbridge.sip.transport import SipTransport, client_tls_context

HOST = "127.0.0.1"
TIMEOUT = 5.0

Received = tuple[SipRequest | SipResponse, Target]


def make_cert(directory: Path, host: str = HOST) -> tuple[Path, Path]:
    """A self-signed certificate for IP ``host`` that is also its own CA."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl CLI missing: run scripts/install-peers.sh"
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


def options(seq: int = 1, password: str = "") -> SipRequest:
    auth = f'Authorization: Digest username="alice", password="{password}"\r\n' if password else ""
    message = parse_message(
        (
            f"OPTIONS sip:bob@{HOST} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {HOST}:5999;branch=z9hG4bK-tls-{seq};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@{HOST}>;tag=a1\r\n"
            f"To: <sip:bob@{HOST}>\r\n"
            f"Call-ID: tls-{seq}@{HOST}\r\n"
            f"CSeq: {seq} OPTIONS\r\n"
            f"{auth}"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, SipRequest)
    return message


def ok_for(request: SipRequest) -> bytes:
    headers = "".join(
        f"{name}: {request.headers.get(name)}\r\n" for name in ("Via", "From", "To", "Call-ID")
    )
    return (
        f"SIP/2.0 200 OK\r\n{headers}CSeq: {request.cseq.seq} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class TlsPeer:
    """A SIP-over-TLS server: frames what it reads, answers every request 200."""

    cert: Path
    key: Path
    answer: bool = True
    connections: int = 0
    requests: list[SipRequest] = field(default_factory=list)
    server: asyncio.Server | None = None
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self.server = await asyncio.start_server(self._serve, HOST, 0, ssl=context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for message in framer.feed(data):
                    assert isinstance(message, SipRequest)
                    self.requests.append(message)
                    self.got.set()
                    if self.answer:
                        writer.write(ok_for(message))
        except (ConnectionError, ssl.SSLError):
            pass  # the client rejected our certificate
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Client:
    def __init__(self, context: ssl.SSLContext | None, connect_timeout: float = TIMEOUT) -> None:
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.errors: asyncio.Queue[tuple[Target, str]] = asyncio.Queue()
        self.transport = SipTransport(
            HOST,
            0,
            on_message=lambda m, s: self.received.put_nowait((m, s)),
            on_error=lambda t, r: self.errors.put_nowait((t, r)),
            tls_context=context,
            connect_timeout=connect_timeout,
        )

    async def error(self) -> tuple[Target, str]:
        return await asyncio.wait_for(self.errors.get(), TIMEOUT)

    async def message(self) -> Received:
        return await asyncio.wait_for(self.received.get(), TIMEOUT)


# ---- client_tls_context --------------------------------------------------------------------


def test_context_defaults_verify_with_system_store() -> None:
    context = client_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_context_without_verification_and_tls13_minimum() -> None:
    context = client_tls_context(verify=False, min_version="1.3")
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_context_rejects_unknown_version() -> None:
    with pytest.raises(ValueError, match=r"TLS min version must be 1.2 or 1.3, got '1.1'"):
        client_tls_context(min_version="1.1")


def test_context_loads_ca_and_client_certificate(cert: tuple[Path, Path]) -> None:
    context = client_tls_context(
        ca_file=str(cert[0]), cert_file=str(cert[0]), key_file=str(cert[1])
    )
    assert context.cert_store_stats()["x509_ca"] == 1


def test_context_missing_ca_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        client_tls_context(ca_file=str(tmp_path / "nope.pem"))


# ---- sending over TLS ----------------------------------------------------------------------


async def _round_trip(cert: tuple[Path, Path]) -> None:
    peer = TlsPeer(*cert)
    port = await peer.start()
    client = Client(client_tls_context(ca_file=str(cert[0])))
    await client.transport.start()
    target = Target("tls", HOST, port)
    try:
        # Two requests before the handshake ends: queued, then framed apart by the peer.
        client.transport.send(options(1), target)
        client.transport.send(options(2), target)
        first, source = await client.message()
        second, _ = await client.message()
        assert isinstance(first, SipResponse) and isinstance(second, SipResponse)
        assert (first.status, first.cseq.seq, second.cseq.seq) == (200, 1, 2)
        assert source == target
        # The connection is reused for the next request (§18.1.1; one per target).
        client.transport.send(options(3), target)
        third, _ = await client.message()
        assert isinstance(third, SipResponse) and third.cseq.seq == 3
        assert peer.connections == 1
        assert [r.cseq.seq for r in peer.requests] == [1, 2, 3]
        assert peer.requests[0].top_via.transport == "TLS"
        assert client.errors.empty()
        assert client.transport.stats.sent == 3
    finally:
        await client.transport.stop()
        await peer.stop()


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_round_trip_with_ca_file(
    cert: tuple[Path, Path], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_round_trip(cert))


async def _verify_fails(cert: tuple[Path, Path]) -> None:
    peer = TlsPeer(*cert)
    port = await peer.start()
    client = Client(client_tls_context())  # the system store: our CA is not in it
    await client.transport.start()
    target = Target("tls", HOST, port)
    try:
        client.transport.send(options(), target)
        failed, reason = await client.error()
        assert failed == target
        assert reason == "TLS certificate verify failed: self-signed certificate"
        assert peer.requests == []
        assert client.transport.stats.send_errors == 1
        # A new send tries again on a new connection rather than a dead one.
        client.transport.send(options(2), target)
        _, reason = await client.error()
        assert reason.startswith("TLS certificate verify failed")
    finally:
        await client.transport.stop()
        await peer.stop()


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_self_signed_certificate_fails_with_the_reason(
    cert: tuple[Path, Path], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_verify_fails(cert))


async def test_server_name_must_match_certificate(cert: tuple[Path, Path]) -> None:
    peer = TlsPeer(*cert)
    port = await peer.start()
    client = Client(client_tls_context(ca_file=str(cert[0])))
    await client.transport.start()
    client.transport.set_tls_server_name(HOST, port, "sip.example.test")
    try:
        client.transport.send(options(), Target("tls", HOST, port))
        _, reason = await client.error()
        assert reason.startswith("TLS certificate verify failed: Hostname mismatch"), reason
        assert "sip.example.test" in reason
    finally:
        await client.transport.stop()
        await peer.stop()


async def test_without_verification_self_signed_works(cert: tuple[Path, Path]) -> None:
    peer = TlsPeer(*cert)
    port = await peer.start()
    client = Client(client_tls_context(verify=False))
    await client.transport.start()
    try:
        client.transport.send(options(), Target("tls", HOST, port))
        response, source = await client.message()
        assert isinstance(response, SipResponse) and response.status == 200
        assert source.transport == "tls"
    finally:
        await client.transport.stop()
        await peer.stop()


async def test_handshake_is_bounded_by_connect_timeout() -> None:
    # A TCP server that accepts and never speaks TLS: the handshake hangs.
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    client = Client(client_tls_context(verify=False), connect_timeout=0.3)
    await client.transport.start()
    try:
        client.transport.send(options(), Target("tls", HOST, port))
        _, reason = await client.error()
        assert reason == "TLS connect timed out after 0.3 s"
    finally:
        await client.transport.stop()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_refused_connection_is_reported_as_tls() -> None:
    client = Client(client_tls_context(verify=False))
    await client.transport.start()
    try:
        # A port that was just free: nothing listens there.
        server = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = int(server.sockets[0].getsockname()[1])
        server.close()
        await server.wait_closed()
        client.transport.send(options(), Target("tls", HOST, port))
        _, reason = await client.error()
        assert reason == "TLS connect failed: Connection refused"
    finally:
        await client.transport.stop()


async def test_tls_without_context_is_not_enabled() -> None:
    client = Client(None)
    await client.transport.start()
    try:
        client.transport.send(options(), Target("tls", HOST, 5061))
        _, reason = await client.error()
        assert reason == "transport 'tls' is not enabled"
    finally:
        await client.transport.stop()


async def test_trace_masks_passwords_over_tls(
    cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    peer = TlsPeer(*cert)
    port = await peer.start()
    client = Client(client_tls_context(ca_file=str(cert[0])))
    client.transport.set_trace(True)
    await client.transport.start()
    try:
        with caplog.at_level("DEBUG", logger="sipbridge.sip.trace"):
            client.transport.send(options(password="hunter2-secret"), Target("tls", HOST, port))
            await client.message()
        traces = [r.getMessage() for r in caplog.records if r.name == "sipbridge.sip.trace"]
        assert any("tls:127.0.0.1" in text for text in traces), traces
        assert not any("hunter2-secret" in text for text in traces)
    finally:
        await client.transport.stop()
        await peer.stop()


# ---- targets ---------------------------------------------------------------------------------


def test_sips_uri_goes_over_tls_on_5061() -> None:
    assert uri_target(SipUri.parse("sips:bob@127.0.0.1"), "udp") == Target("tls", HOST, 5061)
    assert uri_target(SipUri.parse("sip:bob@127.0.0.1;transport=tls"), "udp") == Target(
        "tls", HOST, 5061
    )
    assert uri_target(SipUri.parse("sip:bob@127.0.0.1:5070"), "tls") == Target("tls", HOST, 5070)
    assert uri_target(SipUri.parse("sip:bob@127.0.0.1"), "udp") == Target("udp", HOST, 5060)
