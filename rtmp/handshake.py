"""The RTMP simple handshake, client side (Adobe RTMP spec 1.0 §5.2).

C0 is the version byte (3); C1 is 1536 bytes: our time (4 bytes), four zero bytes
(which tells servers this is the simple handshake, not the digest one Flash
Player 9+ uses) and 1528 random bytes. The server answers S0 + S1 + S2; we send
C2, an echo of S1 (§5.2.4: time, time2 and random echo), and the handshake is
done once S2 has arrived. Sans-IO: :meth:`ClientHandshake.receive` takes bytes and
returns what to send, time is passed in, the random bytes can be injected.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

__all__ = ["HANDSHAKE_SIZE", "RTMP_VERSION", "ClientHandshake", "HandshakeError"]

RTMP_VERSION: Final = 3
HANDSHAKE_SIZE: Final = 1536


class HandshakeError(ValueError):
    """The server's handshake bytes are not an RTMP version 3 handshake."""


class ClientHandshake:
    """C0/C1 out, S0/S1/S2 in, C2 out. ``done`` once S2 arrived; bytes after S2 (the
    first chunks) are returned by :meth:`receive` in ``leftover``."""

    def __init__(self, random: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random
        self._buffer = bytearray()
        self._sent_c2 = False
        self.done = False

    def start(self, now_ms: int) -> bytes:
        """C0 + C1, with ``now_ms`` (our epoch, ms) as C1's time."""
        c1 = (now_ms & 0xFFFFFFFF).to_bytes(4, "big") + bytes(4) + self._random(1528)
        return bytes([RTMP_VERSION]) + c1

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Take server bytes: (bytes to send, bytes received beyond the handshake)."""
        if self.done:
            return b"", bytes(data)
        self._buffer += data
        send = b""
        if not self._sent_c2 and len(self._buffer) >= 1 + HANDSHAKE_SIZE:
            version = self._buffer[0]
            if version != RTMP_VERSION:
                raise HandshakeError(f"server RTMP version {version}, expected {RTMP_VERSION}")
            send = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])  # C2 = S1 echoed
            self._sent_c2 = True
        total = 1 + 2 * HANDSHAKE_SIZE
        if self._sent_c2 and len(self._buffer) >= total:
            self.done = True
            leftover = bytes(self._buffer[total:])
            self._buffer.clear()
            return send, leftover
        return send, b""
