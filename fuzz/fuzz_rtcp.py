"""Coverage-guided fuzz target: compound RTCP parsing (RFC 3550 §6.4-6.6, RFC 4585, RFC 5104).

Contract: :func:`parse_compound` raises only :class:`ValueError`; what parses
serializes canonically, and the canonical form is a fixed point.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from rtp.rtcp import parse_compound, serialize_compound


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: one RTCP datagram."""
    try:
        packets = parse_compound(data)
    except ValueError:
        return
    canonical = serialize_compound(packets)
    assert serialize_compound(parse_compound(canonical)) == canonical, (data, canonical)


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
