"""SIP over UDP, TCP and TLS: the SIP stack's only asyncio module (RFC 3261 §18, §26.2).

Theory of operation
-------------------
:class:`SipTransport` binds one UDP socket and one TCP listening socket on the
same local address and port. It turns received bytes into parsed messages for
the sans-IO core (``on_message(message, source)``) and writes what the core
gives to :meth:`SipTransport.send`. It decides nothing about SIP itself: the
core chooses the transport and the target (§18.1.1, §18.2.2, RFC 3581).

- UDP: one datagram is one message (§18.3). CRLF keep-alives are ignored,
  datagrams above ``max_message_size`` are dropped, parse errors are logged and
  counted; a malformed request whose Via, From, To, Call-ID and CSeq lines are
  still present is answered ``400`` with the reason (§21.4.1), except ACK.
- TCP: every connection, ours or the peer's, has one
  :class:`~sipbridge.sip.message.StreamFramer` and is keyed by the remote
  (host, port), so a response to a request that came in over TCP goes back on
  that connection (§18.2.2). A send to a remote without a connection opens one
  and queues the bytes until it is up. A framing or parse error closes the
  connection (the framer cannot tell us where the next message starts). Idle
  connections are closed after ``idle_timeout``; a double-CRLF ping is
  answered with a CRLF pong (RFC 5626 §4.4.1).
- TLS (RFC 3261 §26.2, RFC 5630): outbound only, when a client
  :class:`ssl.SSLContext` is given (:func:`client_tls_context`). A TLS
  connection is a TCP connection with the same framing, reuse and idle rules,
  keyed by ``("tls", host, port)``; the TCP connect and the handshake together
  are bounded by ``connect_timeout``. The server name checked against the
  certificate (and sent as SNI when it is a name) is the one given to
  :meth:`SipTransport.set_tls_server_name` for that address, else the address
  itself. A failed verification is reported as ``TLS certificate verify
  failed: <OpenSSL's reason>``.
- Network failures never raise out of :meth:`SipTransport.send`: they are
  counted and reported through ``on_error(target, reason)``, always from a
  later loop iteration, never from inside ``send`` (the core may not be
  re-entrant). Neither callback is called after :meth:`SipTransport.stop`.
- Exceptions raised by the callbacks are logged, never propagated: a bug in
  the core must not close the sockets.

ICMP errors on UDP are not visible: Linux reports them only to connected
sockets (or through ``IP_RECVERR``'s error queue, which asyncio does not read),
and an unconnected socket's ``error_received`` carries no address to blame.

Message traces go to the ``sipbridge.sip.trace`` logger at DEBUG, one record
per message, with digest responses, passwords and registered secrets masked
by :func:`sipbridge.logs.redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from sipbridge.logs import SIP_TRACE_LOGGER, redact
from sipbridge.sip.address import Target
from sipbridge.sip.crypto import mask_crypto_keys
from sipbridge.sip.message import SipRequest, SipResponse, StreamFramer, parse_message

__all__ = [
    "UDP_RECEIVE_BUFFER",
    "ErrorHandler",
    "MessageHandler",
    "SipTransport",
    "TransportStats",
    "bad_request_response",
    "client_tls_context",
]

MessageHandler: TypeAlias = Callable[[SipRequest | SipResponse, Target], None]
ErrorHandler: TypeAlias = Callable[[Target, str], None]

log = logging.getLogger(__name__)
trace_log = logging.getLogger(SIP_TRACE_LOGGER)

#: SO_RCVBUF asked for on the UDP socket: a burst of INVITE retransmissions or
#: NOTIFYs must not be dropped by the kernel while the loop is busy.
UDP_RECEIVE_BUFFER = 1 << 20
#: The largest UDP payload IPv4 can carry (65535 - 20 IP - 8 UDP header bytes).
MAX_UDP_PAYLOAD = 65507
#: Bytes one TCP connection may hold unsent before we give up on the peer.
MAX_TCP_BACKLOG = 4 << 20
_BIND_ATTEMPTS = 10
_CLOSE_GRACE = 1.0
_REASON_LIMIT = 200


@dataclass
class TransportStats:
    """Counters of one :class:`SipTransport`.

    ``parse_errors`` counts every received message that was not delivered:
    malformed, oversized, or a broken TCP framing.
    """

    received: int = 0
    sent: int = 0
    parse_errors: int = 0
    send_errors: int = 0


_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def client_tls_context(
    *,
    verify: bool = True,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
    min_version: str = "1.2",
) -> ssl.SSLContext:
    """A client context for SIP over TLS (RFC 3261 §26.2.1, §26.3.1).

    ``verify`` checks the server's chain and name; ``ca_file`` ("" = the
    system store) holds the trusted CAs; ``cert_file``/``key_file`` are an
    optional client certificate (``key_file`` "" = the key is in
    ``cert_file``); ``min_version`` is "1.2" or "1.3". Raises
    :class:`ValueError` for an unknown version, :class:`OSError` or
    :class:`ssl.SSLError` for files that cannot be loaded.
    """
    version = _TLS_VERSIONS.get(min_version)
    if version is None:
        raise ValueError(f"TLS min version must be 1.2 or 1.3, got {min_version!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = version
    if verify:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _tls_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message or exc.reason}"
    return f"TLS handshake failed: {exc.reason or exc}"


def _short(text: str, limit: int = _REASON_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _normalize_host(host: str) -> str:
    """One spelling per address: ``[0::1]`` is ``::1``, ``::ffff:10.0.0.1`` is ``10.0.0.1``.

    Connections are keyed by it, and the core sees peers on a dual-stack socket
    with their IPv4 address rather than the mapped form.
    """
    if ":" not in host:
        return host  # IPv4 (or a name): one spelling already
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


# -- 400 for requests we cannot parse (RFC 3261 §8.2.6, §21.4.1) ------------------------------

_COPIED_HEADERS: dict[bytes, bytes] = {
    b"via": b"via",
    b"v": b"via",
    b"from": b"from",
    b"f": b"from",
    b"to": b"to",
    b"t": b"to",
    b"call-id": b"call-id",
    b"i": b"call-id",
    b"cseq": b"cseq",
}
_REQUIRED_HEADERS = frozenset(_COPIED_HEADERS.values())


def bad_request_response(data: bytes, reason: str) -> bytes | None:
    """A ``400 Bad Request`` for the malformed request ``data`` (RFC 3261 §8.2.6, §21.4.1).

    Works on the raw lines, since the message did not parse: Via, From, To,
    Call-ID and CSeq are copied as they are and To gets a tag when it has none
    (§8.2.6.2). The reason phrase carries ``reason`` (printable ASCII only).
    Returns None when ``data`` is a response, an ACK (never answered, §17.2.3),
    or lacks any of those five headers, since the sender could not match the
    answer to its transaction anyway.
    """
    data = data.lstrip(b"\r\n")
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = data.find(separator)
        if end >= 0:
            data = data[:end]
            break
    lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
    request_line = lines[0].split(b" ")
    if (
        len(request_line) != 3
        or request_line[0].upper().startswith(b"SIP/")
        or request_line[0].upper() == b"ACK"
        or not request_line[2].upper().startswith(b"SIP/")
    ):
        return None
    copied: list[bytes] = []
    found: set[bytes] = set()
    to_index = -1
    keep = False
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if keep:
                copied.append(line)  # a folded continuation of a copied header (§7.3.1)
            continue
        name, colon, _ = line.partition(b":")
        key = _COPIED_HEADERS.get(name.strip().lower()) if colon else None
        keep = key is not None
        if key is not None:
            if key == b"to" and to_index < 0:
                to_index = len(copied)
            copied.append(line)
            found.add(key)
    if found != _REQUIRED_HEADERS:
        return None
    to_line = copied[to_index]
    folded = to_index + 1 < len(copied) and copied[to_index + 1][:1] in (b" ", b"\t")
    if b";tag=" not in to_line.lower().replace(b" ", b"") and not folded:
        copied[to_index] = to_line.rstrip() + b";tag=" + secrets.token_hex(6).encode()
    detail = "".join(ch for ch in _short(reason, 100) if " " <= ch <= "~")
    status_line = f"SIP/2.0 400 Bad Request - {detail}".encode()
    return b"\r\n".join([status_line, *copied, b"Content-Length: 0", b"", b""])


# -- asyncio protocols ------------------------------------------------------------------------


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands datagrams to the owning transport; tells it when the socket is closed."""

    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = Target("udp", _normalize_host(str(addr[0])), int(addr[1]))
        self._owner._udp_received(data, source)

    def error_received(self, exc: Exception) -> None:
        self._owner._udp_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or opened by us, with its framer and idle timer."""

    def __init__(self, owner: SipTransport, target: Target | None) -> None:
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self.target = target  # None until an accepted connection knows its peer
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()  # bytes sent before our connect completed
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._framer = StreamFramer(max_size=owner._max_message_size)
        self._last_activity = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TCP transport does not derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if self.target is None:
            peer = self.transport.get_extra_info("peername")
            self.target = Target("tcp", _normalize_host(str(peer[0])), int(peer[1]))
        if not self._owner._connection_made(self):
            self.transport.abort()
            return
        self._touch()
        self._arm_idle()
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            self.write(data)

    def data_received(self, data: bytes) -> None:
        self._touch()
        if data == b"\r\n\r\n" and self.transport is not None:
            self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 pong; a stray CRLF is harmless
        try:
            messages = self._framer.feed(data)
        except ValueError as exc:  # SipParseError: the stream cannot be resynchronised
            self._owner._tcp_broken(self, str(exc))
            return
        except Exception:
            log.exception("SIP parser failed on TCP data from %s", self.target)
            self._owner._tcp_broken(self, "parser failure")
            return
        for message in messages:
            self._owner._tcp_message(message, self)

    def eof_received(self) -> bool | None:
        return None  # the peer is done with the connection: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._owner._connection_lost(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- used by SipTransport ----------------------------------------------------------------
    def write(self, data: bytes) -> str | None:
        """Write or queue ``data``; the reason when the connection had to be given up."""
        if self.transport is None:
            if len(self.pending) + len(data) > MAX_TCP_BACKLOG:
                return f"more than {MAX_TCP_BACKLOG} bytes queued while connecting"
            self.pending += data
            return None
        self._touch()
        try:
            self.transport.write(data)
        except (OSError, RuntimeError) as exc:  # uvloop may raise on a transport being closed
            self.transport.abort()
            return f"write failed: {exc}"
        if self.transport.get_write_buffer_size() > MAX_TCP_BACKLOG:
            self.transport.abort()
            return f"peer is not reading: more than {MAX_TCP_BACKLOG} bytes unsent"
        return None

    def is_usable(self) -> bool:
        return self.transport is None or not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def _arm_idle(self) -> None:
        # One timer per connection re-armed lazily, rather than one reset per message.
        deadline = self._last_activity + self._owner._idle_timeout
        self._idle_handle = self._loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._loop.time() - self._last_activity >= self._owner._idle_timeout - 1e-3:
            log.debug("closing idle SIP connection %s", self.target)
            self.close()
        else:
            self._arm_idle()


# -- the transport ----------------------------------------------------------------------------


class SipTransport:
    """asyncio UDP + TCP listener/sender on one local address (RFC 3261 §18).

    ``on_message(message, source)`` gets every parsed message with where it
    came from; ``on_error(target, reason)`` every failed send (connection
    refused, reset or timed out, a message too large for UDP). See the module
    docstring for the rules.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_message: MessageHandler,
        on_error: ErrorHandler | None = None,
        udp: bool = True,
        tcp: bool = True,
        max_message_size: int = 65535,
        connect_timeout: float = 5.0,
        idle_timeout: float = 600.0,
        trace: bool = False,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not (udp or tcp):
            raise ValueError("at least one of udp and tcp must be enabled")
        if not 0 <= port < 65536:
            raise ValueError(f"port out of range: {port}")
        self._host = host
        self._port = port
        self._on_message = on_message
        self._on_error = on_error
        self._use_udp = udp
        self._use_tcp = tcp
        self._max_message_size = max_message_size
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._tls_context = tls_context
        self._tls_names: dict[tuple[str, int], str] = {}
        self._trace = False
        self.set_trace(trace)
        self.stats = TransportStats()
        self._local: tuple[str, int] | None = None
        self._family = socket.AF_INET
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[tuple[str, str, int], _TcpConnection] = {}
        self._all_connections: set[_TcpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._stopping: asyncio.Future[None] | None = None

    # -- properties ----------------------------------------------------------------------------
    @property
    def local_port(self) -> int:
        """The bound port (the one picked when 0 was asked for); 0 before :meth:`start`."""
        return self._local[1] if self._local else 0

    @property
    def local_host(self) -> str:
        """The bound address (the host given before :meth:`start`)."""
        return self._local[0] if self._local else self._host

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind UDP and TCP on host:port; port 0 picks one port free for both."""
        if self._running or self._stopping is not None:
            raise RuntimeError("SipTransport.start() called twice")
        loop = asyncio.get_running_loop()
        self._family = family = await self._resolve_family()
        udp_sock, tcp_sock = self._bind(family)
        try:
            if udp_sock is not None:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), sock=udp_sock
                )
                udp_sock = None  # owned by the transport now
                self._udp_transport, self._udp_protocol = transport, protocol
            if tcp_sock is not None:
                self._server = await loop.create_server(
                    lambda: _TcpConnection(self, None), sock=tcp_sock
                )
                tcp_sock = None
        except BaseException:
            for sock in (udp_sock, tcp_sock):
                if sock is not None:
                    sock.close()
            self._running = True  # so that stop() releases what was created
            await self.stop()
            raise
        self._running = True
        log.info("SIP transport listening on %s:%d", self.local_host, self.local_port)

    async def stop(self) -> None:
        """Close every socket, cancel every task and wait for them (idempotent)."""
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        self._stopping = asyncio.get_running_loop().create_future()
        self._running = False
        try:
            await self._release()
        finally:
            self._stopping.set_result(None)

    async def _release(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
        if self._udp_transport is not None:
            self._udp_transport.close()
        for conn in list(self._all_connections):
            conn.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        pending = [c.closed for c in self._all_connections if c.transport is not None]
        if pending:
            _, late = await asyncio.wait(pending, timeout=_CLOSE_GRACE)
            if late:  # peers that do not read our last bytes do not get to hold us up
                for conn in list(self._all_connections):
                    conn.abort()
                await asyncio.wait(late)
        if self._udp_protocol is not None:
            await self._udp_protocol.closed
        self._connections.clear()
        self._all_connections.clear()

    def set_tls_server_name(self, host: str, port: int, name: str) -> None:
        """Check the certificate of TLS peer ``host``:``port`` against ``name`` (§26.3.1).

        ``name`` is also sent as SNI (RFC 6066 §3). The default is the address itself,
        which a certificate matches only with an IP subjectAltName.
        """
        self._tls_names[(_normalize_host(host), port)] = name

    # -- tracing ------------------------------------------------------------------------------
    def set_trace(self, enabled: bool) -> None:
        """Switch message tracing on or off at runtime.

        Switching it on also lowers the ``sipbridge.sip.trace`` logger to DEBUG
        when it is set higher (``configure_logging`` sets it off unless
        ``[log] sip_trace``), since asking for traces means wanting to see them.
        """
        self._trace = enabled
        if enabled and not trace_log.isEnabledFor(logging.DEBUG):
            trace_log.setLevel(logging.DEBUG)

    def _trace_bytes(self, direction: str, peer: Target, data: bytes) -> None:
        if not (self._trace and trace_log.isEnabledFor(logging.DEBUG)):
            return
        where = "from" if direction == "recv" else "to"
        text = mask_crypto_keys(redact(data.decode("utf-8", "replace")))
        trace_log.debug(
            "%s %d bytes %s %s\n%s",
            direction,
            len(data),
            where,
            peer,
            text,
            extra={"direction": direction, "peer": str(peer)},
        )

    # -- sending -------------------------------------------------------------------------------
    def send(self, message: SipRequest | SipResponse, target: Target) -> None:
        """Send ``message`` to ``target``; network failures go to ``on_error`` (§18.1, §18.2.2).

        UDP: one ``sendto``. TCP: written on the connection to that remote, the
        one the peer opened to us included, or on a new one (bytes queued until
        it is up). TLS: like TCP, on connections we open (§26.2). ``target.host``
        must be an IP address. Before :meth:`start` and after :meth:`stop` messages
        are dropped and counted in ``stats.send_errors`` without calling ``on_error``.
        """
        self._send_bytes(message.to_bytes(), target)

    def _send_bytes(self, data: bytes, target: Target) -> None:
        if not self._running:
            self._fail(target, "transport is not running")
            return
        kind = target.transport.lower()
        host = _normalize_host(target.host)
        if kind == "udp" and self._udp_transport is not None:
            if len(data) > MAX_UDP_PAYLOAD:
                self._fail(target, f"message of {len(data)} bytes is too large for UDP")
                return
            try:
                version = ipaddress.ip_address(host).version
            except ValueError:
                self._fail(target, f"not an IP address: {target.host!r}")
                return
            if version == 4 and self._family == socket.AF_INET6:
                host = "::ffff:" + host  # a dual-stack socket reaches IPv4 peers mapped
            elif version == 6 and self._family == socket.AF_INET:
                self._fail(target, "IPv6 target on an IPv4 socket")
                return
            self._trace_bytes("send", target, data)
            try:
                self._udp_transport.sendto(data, (host, target.port))
            except (OSError, ValueError) as exc:  # uvloop checks the address eagerly
                self._fail(target, f"UDP send failed: {exc}")
                return
            self.stats.sent += 1
        elif (kind == "tcp" and self._server is not None) or (
            kind == "tls" and self._tls_context is not None
        ):
            self._send_tcp(data, target, (kind, host, target.port))
        else:
            self._fail(target, f"transport {target.transport!r} is not enabled")

    def _send_tcp(self, data: bytes, target: Target, key: tuple[str, str, int]) -> None:
        conn = self._connections.get(key)
        if conn is not None and not conn.is_usable():
            del self._connections[key]
            conn = None
        if conn is None:
            conn = _TcpConnection(self, Target(key[0], key[1], key[2]))
            self._connections[key] = conn
            self._all_connections.add(conn)
            self._spawn(self._connect(conn))
        self._trace_bytes("send", target, data)
        error = conn.write(data)
        if error is not None:
            self._fail(target, error)
            return
        self.stats.sent += 1

    async def _connect(self, conn: _TcpConnection) -> None:
        assert conn.target is not None
        target = conn.target
        loop = asyncio.get_running_loop()
        local = _normalize_host(self.local_host)
        local_addr = None if _is_wildcard(self.local_host) else (local, 0)
        tls = target.transport == "tls"
        kind = "TLS" if tls else "TCP"
        try:
            if tls:
                assert self._tls_context is not None
                name = self._tls_names.get((target.host, target.port), target.host)
                # One deadline for connect and handshake: wait_for bounds both.
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn,
                        target.host,
                        target.port,
                        local_addr=local_addr,
                        ssl=self._tls_context,
                        server_hostname=name,
                        ssl_handshake_timeout=self._connect_timeout,
                    ),
                    self._connect_timeout,
                )
            else:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn, target.host, target.port, local_addr=local_addr
                    ),
                    self._connect_timeout,
                )
        except TimeoutError:
            reason = f"{kind} connect timed out after {self._connect_timeout:g} s"
        except ssl.SSLError as exc:  # before OSError: SSLError derives from it
            reason = _tls_failure(exc)
        except OSError as exc:
            # asyncio's text is "Connect call failed (...)"; the errno says why.
            reason = f"{kind} connect failed: {os.strerror(exc.errno) if exc.errno else exc}"
        else:
            return
        self._forget(conn)
        self._fail(target, reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, target: Target, reason: str) -> None:
        self.stats.send_errors += 1
        log.info("SIP send to %s failed: %s", target, reason)
        if self._on_error is not None and self._running:
            asyncio.get_running_loop().call_soon(self._report_error, target, reason)

    def _report_error(self, target: Target, reason: str) -> None:
        if not self._running or self._on_error is None:
            return
        try:
            self._on_error(target, reason)
        except Exception:
            log.exception("on_error callback failed for %s", target)

    # -- receiving -----------------------------------------------------------------------------
    def _deliver(self, message: SipRequest | SipResponse, source: Target) -> None:
        self.stats.received += 1
        try:
            self._on_message(message, source)
        except Exception:
            log.exception("on_message callback failed for %r from %s", message, source)

    def _udp_received(self, data: bytes, source: Target) -> None:
        if not self._running:
            return
        if len(data) > self._max_message_size:
            self.stats.parse_errors += 1
            log.warning(
                "dropped a %d-byte datagram from %s: larger than %d",
                len(data),
                source,
                self._max_message_size,
            )
            return
        if not data.strip(b"\r\n\t \x00"):
            return  # keep-alive
        self._trace_bytes("recv", source, data)
        try:
            message = parse_message(data)
        except ValueError as exc:  # SipParseError, or a number the parser could not convert
            self.stats.parse_errors += 1
            reason = str(exc)
            log.warning("bad SIP datagram from %s: %s", source, _short(reason))
            answer = bad_request_response(data, reason)
            if answer is not None:
                self._send_bytes(answer, source)
            return
        except Exception:
            self.stats.parse_errors += 1
            log.exception("SIP parser failed on a datagram from %s", source)
            return
        self._deliver(message, source)

    def _udp_error(self, exc: Exception) -> None:
        # The kernel does not say which destination the error is about.
        log.warning("UDP socket error: %s", exc)

    def _tcp_message(self, message: SipRequest | SipResponse, conn: _TcpConnection) -> None:
        assert conn.target is not None
        if not self._running:
            return
        if self._trace:
            self._trace_bytes("recv", conn.target, message.to_bytes())
        self._deliver(message, conn.target)

    def _tcp_broken(self, conn: _TcpConnection, reason: str) -> None:
        self.stats.parse_errors += 1
        log.warning("closing SIP connection %s: %s", conn.target, _short(reason))
        conn.close()

    def _connection_made(self, conn: _TcpConnection) -> bool:
        """Register a connection that is up; False when we are stopping."""
        if not self._running:
            return False
        assert conn.target is not None
        key = (conn.target.transport, _normalize_host(conn.target.host), conn.target.port)
        self._connections[key] = conn
        self._all_connections.add(conn)
        return True

    def _connection_lost(self, conn: _TcpConnection, exc: Exception | None) -> None:
        self._forget(conn)
        if exc is not None and conn.target is not None and self._running:
            kind = "TLS" if conn.target.transport == "tls" else "TCP"
            self._fail(conn.target, f"{kind} connection lost: {exc}")

    def _forget(self, conn: _TcpConnection) -> None:
        if conn.target is not None:
            key = (conn.target.transport, _normalize_host(conn.target.host), conn.target.port)
            if self._connections.get(key) is conn:
                del self._connections[key]
        if self._running:
            # While stopping, stop() still awaits this connection's ``closed``.
            self._all_connections.discard(conn)

    # -- binding -------------------------------------------------------------------------------
    async def _resolve_family(self) -> socket.AddressFamily:
        host = self._host.strip("[]")
        if host == "":
            return socket.AF_INET
        try:
            return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
            if not infos:
                raise OSError(f"cannot resolve {host!r}") from None
            family, _, _, _, sockaddr = infos[0]
            self._host = str(sockaddr[0])
            return family

    def _bind(
        self, family: socket.AddressFamily
    ) -> tuple[socket.socket | None, socket.socket | None]:
        """Bind both sockets; with port 0 retry until UDP's free port is free for TCP too."""
        host = self._host.strip("[]")
        attempts = _BIND_ATTEMPTS if self._port == 0 else 1
        for attempt in range(attempts):
            udp_sock: socket.socket | None = None
            tcp_sock: socket.socket | None = None
            try:
                port = self._port
                if self._use_udp:
                    udp_sock = socket.socket(family, socket.SOCK_DGRAM)
                    udp_sock.setblocking(False)
                    with contextlib.suppress(OSError):  # a smaller buffer still works
                        udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
                    udp_sock.bind((host, port))
                    port = udp_sock.getsockname()[1]
                if self._use_tcp:
                    tcp_sock = socket.socket(family, socket.SOCK_STREAM)
                    tcp_sock.setblocking(False)
                    # TIME_WAIT connections of a previous run must not block a restart.
                    tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    tcp_sock.bind((host, port))
                    port = tcp_sock.getsockname()[1]
            except OSError as exc:
                for sock in (udp_sock, tcp_sock):
                    if sock is not None:
                        sock.close()
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
                continue
            bound_sock = udp_sock if udp_sock is not None else tcp_sock
            assert bound_sock is not None
            bound = bound_sock.getsockname()
            self._local = (str(bound[0]), int(bound[1]))
            return udp_sock, tcp_sock
        raise AssertionError("unreachable")
