"""Coverage-guided fuzz target: Digest header parsing (RFC 3261 §22.4, RFC 7616 §3.3-§3.4).

Contract: :func:`parse_challenges`, :func:`parse_challenge` and
:func:`parse_authorization` raise only :class:`DigestError`; a challenge
that parses and formats (unsupported ones may refuse with DigestError)
parses back to an equal challenge.
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from sipbridge.sip.auth import (
        DigestError,
        format_challenge,
        parse_authorization,
        parse_challenge,
        parse_challenges,
    )


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: a WWW-Authenticate or Authorization header value (UTF-8)."""
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(DigestError):
        parse_challenges(text)
    with contextlib.suppress(DigestError):
        parse_authorization(text)
    try:
        challenge = parse_challenge(text)
    except DigestError:
        return
    try:
        formatted = format_challenge(challenge)
    except DigestError:
        return
    assert parse_challenge(formatted) == challenge, (text, formatted)


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
