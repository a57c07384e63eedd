"""Coverage-guided fuzz target: SIP message parsing and stream framing (RFC 3261 §7, §18.3).

Contract: any bytes make :func:`parse_message` (datagram and stream framing)
and :class:`StreamFramer` either succeed or raise :class:`SipParseError`;
a parsed message's structured views raise nothing else, and it serializes to
bytes that parse again to the same body and start line. Run through
``fuzz/run.py --target sip_message`` (or directly: libFuzzer flags accepted).
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from sipbridge.sip.address import SipParseError
    from sipbridge.sip.message import SipRequest, StreamFramer, parse_message

_VIEWS = ("vias", "from_", "to", "cseq", "contacts", "max_forwards", "top_via")


def _parse_everything(data: bytes, *, stream: bool) -> None:
    try:
        message = parse_message(data, stream=stream)
    except SipParseError:
        return
    for view in _VIEWS:
        with contextlib.suppress(SipParseError):
            getattr(message, view)
    if isinstance(message, SipRequest):
        with contextlib.suppress(SipParseError):
            message.sip_uri  # noqa: B018
    # Serialize -> parse: what was accepted once is accepted again, unchanged.
    again = parse_message(message.to_bytes(), stream=True)
    assert again.body == message.body, (again.body, message.body)
    assert type(again) is type(message)
    assert again.to_bytes() == message.to_bytes()


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: datagram parse, stream parse and split-stream framing."""
    _parse_everything(data, stream=False)
    _parse_everything(data, stream=True)
    # Stream framing with the bytes cut at a data-chosen point: must not matter where.
    cut = data[0] % (len(data) + 1) if data else 0
    framer = StreamFramer(max_size=4096)
    for piece in (data[:cut], data[cut:], b""):
        try:
            framer.feed(piece)
        except SipParseError:
            if framer.broken:
                break


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
