"""Coverage-guided fuzz target: RTP fixed header parsing (RFC 3550 §5.1, §5.3.1).

Contract: :meth:`RtpPacket.parse` raises only :class:`ValueError` (with its
reason); a parsed packet serializes to as many bytes and parses to an equal packet.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from rtp.packet import RtpPacket, is_rtcp


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: one UDP datagram."""
    is_rtcp(data)
    try:
        packet = RtpPacket.parse(data)
    except ValueError:
        return
    wire = bytes(packet)
    assert len(wire) == len(data), (data, wire)
    assert RtpPacket.parse(wire) == packet


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
