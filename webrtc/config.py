"""WebRTC egress configuration: what :class:`~webrtc.whep.WhepSessions` is built with.

Kept free of aiortc imports so :mod:`sipbridge.settings` can build one cheaply.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["WebRtcConfig", "parse_stun_server"]


def parse_stun_server(value: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` for IPv6) -> ``(host, port)``; ValueError says why."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c in host for c in "/[]@ "):
        raise ValueError(f"expected host:port, got {value!r}")
    return host, port


@dataclass(frozen=True)
class WebRtcConfig:
    """Limits and ICE options of the WHEP egress.

    ``ice_addresses``: the local addresses offered as ICE host candidates
    (RFC 8445 §5.1.1.1); empty means every interface but loopback, aioice's
    default. ``stun_server`` (``"host:port"``) adds a server-reflexive candidate
    per IPv4 host candidate. ``max_viewers`` bounds the whole gateway,
    ``max_viewers_per_stream`` one stream. ``viewer_queue_frames`` bounds each
    viewer's subscription queue (frames). A session not connected (ICE and
    DTLS) ``connect_timeout`` seconds after its answer is closed. A stream that
    declares no codec yet (a call still ringing) is waited for ``media_wait``
    seconds before the request is refused.
    """

    ice_addresses: tuple[str, ...] = ()
    stun_server: str | None = None
    max_viewers: int = 200
    max_viewers_per_stream: int = 50
    viewer_queue_frames: int = 300
    connect_timeout: float = 20.0
    media_wait: float = 5.0

    def __post_init__(self) -> None:
        for address in self.ice_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"ice_addresses: {address!r} is not an IPv4 or IPv6 address"
                ) from None
        if self.stun_server is not None:
            parse_stun_server(self.stun_server)
        if self.max_viewers < 1 or self.max_viewers_per_stream < 1:
            raise ValueError("max_viewers and max_viewers_per_stream must be at least 1")
        if self.viewer_queue_frames < 1:
            raise ValueError(
                f"viewer_queue_frames must be at least 1, got {self.viewer_queue_frames}"
            )
        if self.connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, got {self.connect_timeout}")
        if self.media_wait < 0:
            raise ValueError(f"media_wait must be >= 0, got {self.media_wait}")
