"""Coverage-guided fuzz target: AMF0 decoding (Adobe AMF0 spec §2), what RTMP servers send.

Contract: :func:`decode_all` raises only :class:`AmfError` (never recursion,
memory or struct errors); what decodes encodes again, and the encoding is a
fixed point (bytes, not values: NaN is not equal to itself).
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from rtmp.amf0 import AmfError, decode_all, encode_all


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: the payload of an AMF0 command or data message."""
    try:
        values = decode_all(data)
    except AmfError:
        return
    wire = encode_all(*values)
    assert encode_all(*decode_all(wire)) == wire, (data, wire)


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
