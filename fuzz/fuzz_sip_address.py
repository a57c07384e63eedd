"""Coverage-guided fuzz target: SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1).

Contract: :meth:`SipUri.parse` and :meth:`NameAddr.parse` raise only
:class:`SipParseError`; what parses prints to text that parses to the same value.
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from sipbridge.sip.address import NameAddr, SipParseError, SipUri, split_list_value


def test_one_input(data: bytes) -> None:
    """One libFuzzer input, decoded as UTF-8 (as header values are after message parsing)."""
    text = data.decode("utf-8", "replace")
    try:
        uri = SipUri.parse(text)
    except SipParseError:
        pass
    else:
        assert SipUri.parse(str(uri)) == uri, (text, str(uri))
    try:
        address = NameAddr.parse(text)
    except SipParseError:
        pass
    else:
        assert NameAddr.parse(str(address)) == address, (text, str(address))
    with contextlib.suppress(SipParseError):
        split_list_value(text)


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
