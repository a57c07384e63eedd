"""Coverage-guided fuzz target: SDP parsing and serializing (RFC 8866, RFC 3264).

Contract: :meth:`SessionDescription.parse` raises only :class:`SdpError`; a
parsed description either serializes (or refuses with :class:`SdpError`) to
bytes that parse to an equal model and serialize to the same bytes, and its
codecs can be listed.
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from sipbridge.sip.sdp import SdpError, SessionDescription


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: the bytes of an SDP body."""
    try:
        parsed = SessionDescription.parse(data)
    except SdpError:
        return
    for media in parsed.media:
        with contextlib.suppress(SdpError):
            media.codecs  # noqa: B018
    try:
        wire = parsed.to_bytes()
    except SdpError:
        return
    again = SessionDescription.parse(wire)
    assert again == parsed, (data, wire)
    assert again.to_bytes() == wire


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
