"""WebRTC egress (WHEP)."""
