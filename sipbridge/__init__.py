"""sipbridge: an asyncio-native SIP/RTP media gateway."""

from __future__ import annotations

__version__ = "0.1.0"
