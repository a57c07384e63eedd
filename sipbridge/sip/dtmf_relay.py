"""The ``application/dtmf-relay`` body of SIP INFO (RFC 6086 "legacy INFO usage").

The format is a de-facto one (Cisco, no RFC): ``Signal=<digit>`` and
``Duration=<ms>`` lines, names case-sensitive, spaces around ``=`` tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["DtmfRelay"]


@dataclass(frozen=True)
class DtmfRelay:
    """One digit as an INFO body: ``Signal=5\\r\\nDuration=160\\r\\n``."""

    CONTENT_TYPE: ClassVar[str] = "application/dtmf-relay"

    signal: str
    duration_ms: int | None = None

    @classmethod
    def parse(cls, body: bytes) -> DtmfRelay:
        """Parse a body; ``ValueError`` when it has no ``Signal``.

        A ``Duration`` that is not a decimal number is taken as absent.
        """
        fields = {
            name.strip(): value
            for name, _, value in (
                line.partition("=")
                for line in body.decode(errors="replace").splitlines()
                if "=" in line
            )
        }
        signal = fields.get("Signal", "").strip()
        if not signal:
            raise ValueError("dtmf-relay body without Signal")
        duration = fields.get("Duration", "").strip()
        return cls(signal, int(duration) if duration.isascii() and duration.isdigit() else None)

    def __bytes__(self) -> bytes:
        lines = f"Signal={self.signal}\r\n"
        if self.duration_ms is not None:
            lines += f"Duration={self.duration_ms}\r\n"
        return lines.encode()
