"""RTP/RTCP port pairs from the configured range (RFC 3550 §11: RTP even, RTCP odd).

A pair is reserved by binding both UDP sockets, so the ports written in the
SDP offer are really ours until the call releases them; the media session
takes the sockets over.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

__all__ = ["PortPair", "PortRangeExhausted", "RtpPortAllocator"]


class PortRangeExhausted(RuntimeError):
    """No free even/odd pair is left in the configured range."""


@dataclass
class PortPair:
    """A bound RTP socket on an even port and its RTCP socket on the next one."""

    rtp_port: int
    rtcp_port: int
    rtp_socket: socket.socket = field(repr=False)
    rtcp_socket: socket.socket = field(repr=False)

    def close(self) -> None:
        for sock in (self.rtp_socket, self.rtcp_socket):
            sock.close()


class RtpPortAllocator:
    """Hands out even/odd UDP port pairs, round robin over ``[port_min, port_max]``."""

    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        self.host = host
        first = port_min + (port_min % 2)
        self._ports = list(range(first, port_max, 2))
        if not self._ports:
            raise ValueError(f"RTP range {port_min}-{port_max} holds no even/odd pair")
        self._next = 0
        self._in_use: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> PortPair:
        """Bind the next free pair; ports taken by other programs are skipped."""
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if port in self._in_use:
                continue
            pair = self._try_bind(port)
            if pair is not None:
                self._in_use.add(port)
                return pair
        raise PortRangeExhausted(f"no free RTP port pair in {self._ports[0]}-{self._ports[-1] + 1}")

    def release(self, pair: PortPair) -> None:
        pair.close()
        self._in_use.discard(pair.rtp_port)

    def _try_bind(self, port: int) -> PortPair | None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sockets: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((self.host, p))
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            return None
        return PortPair(port, port + 1, sockets[0], sockets[1])
