"""The asyncio shell around :class:`rtmp.publisher.PublishSession`: one RTMP connection.

Theory of operation
-------------------
:meth:`RtmpConnection.open` connects (``asyncio.open_connection``, TLS for
``rtmps://`` with SNI = host), runs the handshake, ``connect`` and ``publish``,
and returns once the server answered ``NetStream.Publish.Start``: all of it under
one deadline, ``connect_timeout``. Nothing here blocks the event loop or holds the
GIL while waiting on the network (what PyAV's FFmpeg-based output did, see
docs/decisions.md).

After the open, a reader task feeds whatever the server sends into the session
(acknowledgements, pings, a late ``onStatus`` error) and writes the session's
answers. Media goes out through :meth:`send_video` / :meth:`send_audio` (no
waiting: the bytes go to the transport) and :meth:`drain`, which waits only while
the transport holds more than its high-water mark (``send_buffer`` bytes; the
socket's ``SO_SNDBUF`` is set to the same) and fails after ``rw_timeout`` when the
server does not read. Any failure (refusal, protocol error, reset, end of stream,
timeout) becomes :class:`RtmpError` (or the :class:`OSError` of the socket) from
the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from rtmp.amf0 import AmfValue
from rtmp.publisher import (
    Connected,
    Failed,
    PublishSession,
    PublishStarted,
    StatusReceived,
)
from rtmp.urls import RtmpUrl, describe_error

__all__ = ["RtmpConnection", "RtmpError", "RtmpRefused", "TlsOptions", "client_ssl_context"]

log = logging.getLogger(__name__)

#: Bytes read per call from the connection (the server sends little).
_READ_SIZE = 65536
#: The transport's high-water mark when ``send_buffer`` is 0 (asyncio's default).
_DEFAULT_HIGH_WATER = 64 * 1024


class RtmpError(Exception):
    """The connection failed; the message is what a user sees (never the stream key)."""


class RtmpRefused(RtmpError):
    """The server refused (``_error``/``onStatus`` error), with its code and description."""

    def __init__(self, code: str, description: str) -> None:
        self.code = code
        self.description = description
        super().__init__(f"{code}: {description}" if description else code)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Certificate checking for ``rtmps://``: with ``verify``, the server certificate
    must chain to ``ca_file`` (a PEM bundle; ``None``: OpenSSL's default paths) and
    match the URL's host."""

    verify: bool = False
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None and not self.ca_file:
            raise ValueError("TLS CA file path must not be empty")


def client_ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    """The client context for ``tls``: verifying (chain + host name) or not at all."""
    if tls.verify:
        return ssl.create_default_context(cafile=tls.ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    return f"TLS error: {exc.reason or exc}"


class RtmpConnection:
    """One publishing connection (module doc). Build it with :meth:`open`."""

    def __init__(self, session: PublishSession, *, rw_timeout: float, high_water: int) -> None:
        self.session = session
        self.rw_timeout = rw_timeout
        self.bytes_sent = 0
        self.error: BaseException | None = None
        self._high_water = high_water
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_connected: Callable[[], None] | None = None

    @classmethod
    async def open(
        cls,
        url: RtmpUrl,
        *,
        connect_timeout: float,
        rw_timeout: float,
        send_buffer: int = 0,
        tls: TlsOptions | None = None,
        chunk_size: int = 4096,
        on_connected: Callable[[], None] | None = None,
    ) -> RtmpConnection:
        """Connect and publish within ``connect_timeout`` (TCP + TLS + handshake +
        ``connect`` + ``publish``); ``on_connected`` runs at NetConnection.Connect.Success.
        Raises :class:`RtmpError` (:class:`RtmpRefused` for a refusal) or :class:`OSError`."""
        session = PublishSession(
            app=url.app, tc_url=url.tc_url, stream_name=url.playpath, chunk_size=chunk_size
        )
        high_water = send_buffer if send_buffer > 0 else _DEFAULT_HIGH_WATER
        connection = cls(session, rw_timeout=rw_timeout, high_water=high_water)
        connection._on_connected = on_connected
        context = client_ssl_context(tls or TlsOptions()) if url.tls else None
        try:
            async with asyncio.timeout(connect_timeout):
                try:
                    reader, writer = await asyncio.open_connection(
                        url.host,
                        url.port,
                        ssl=context,
                        server_hostname=url.host if context is not None else None,
                    )
                except ssl.SSLError as exc:
                    raise RtmpError(_ssl_reason(exc)) from None
                connection._attach(reader, writer, send_buffer)
                session.initiate(int(time.monotonic() * 1000))
                connection._flush()
                await connection._published
        except TimeoutError:
            connection.abort()
            raise RtmpError(f"no publish within connect_timeout ({connect_timeout:g} s)") from None
        except BaseException:
            connection.abort()
            raise
        return connection

    # -- media ------------------------------------------------------------------------------
    def send_metadata(self, values: dict[str, AmfValue]) -> None:
        self._check()
        self.session.send_metadata(values)
        self._flush()

    def send_video(self, timestamp: int, body: bytes) -> None:
        """Queue one FLV video tag body; :meth:`drain` applies the backpressure."""
        self._check()
        self.session.send_video(timestamp, body)
        self._flush()

    def send_audio(self, timestamp: int, body: bytes) -> None:
        self._check()
        self.session.send_audio(timestamp, body)
        self._flush()

    async def drain(self) -> None:
        """Wait while the transport holds more than ``send_buffer`` bytes; fails after
        ``rw_timeout`` of a server that does not read."""
        self._check()
        writer = self._writer
        assert writer is not None
        if writer.transport.get_write_buffer_size() <= self._high_water:
            return
        try:
            await asyncio.wait_for(writer.drain(), self.rw_timeout)
        except TimeoutError:
            self._set_error(
                RtmpError(f"write timed out after {self.rw_timeout:g} s (server not reading)")
            )
        except (ConnectionError, OSError) as exc:
            self._set_error(exc)
        self._check()

    async def close(self) -> None:
        """``FCUnpublish`` + ``deleteStream``, then close; bounded by ``rw_timeout``.
        Errors while closing are logged, not raised (the push is over anyway)."""
        writer = self._writer
        if writer is None or self.error is not None:
            self.abort()
            return
        try:
            self.session.close()
            self._flush()
            async with asyncio.timeout(self.rw_timeout):
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.debug("closing an RTMP connection: %s", describe_error(exc))
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection now (no goodbye)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.transport.abort()
        if not self._published.done():
            self._published.cancel()

    # -- internals --------------------------------------------------------------------------
    def _attach(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, send_buffer: int
    ) -> None:
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        if send_buffer > 0 and sock is not None:
            # Bounds the data in flight, hence how long a frozen server goes unnoticed.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        writer.transport.set_write_buffer_limits(high=self._high_water)
        self._task = asyncio.create_task(self._read(), name="rtmp-connection-read")

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self._writer is None:
            raise RtmpError("the connection is closed")

    def _set_error(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not self._published.done():
            self._published.set_exception(self.error)
            self._published.exception()  # retrieved: no "never retrieved" warning

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and self._writer is not None and not self._writer.transport.is_closing():
            self._writer.write(data)
            self.bytes_sent += len(data)

    async def _read(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    self._set_error(RtmpError("connection closed by the server"))
                    return
                self.session.receive_data(data)
                self._flush()
                self._events()
                if self.error is not None:
                    return
        except ssl.SSLError as exc:
            self._set_error(RtmpError(_ssl_reason(exc)))
        except OSError as exc:
            self._set_error(exc)

    def _events(self) -> None:
        while (event := self.session.next_event()) is not None:
            if isinstance(event, Connected):
                if self._on_connected is not None:
                    self._on_connected()
            elif isinstance(event, PublishStarted):
                if not self._published.done():
                    self._published.set_result(None)
            elif isinstance(event, Failed):
                self._set_error(RtmpRefused(event.code, event.description))
            elif isinstance(event, StatusReceived):
                log.info("RTMP server status %s: %s", event.code, event.description)
