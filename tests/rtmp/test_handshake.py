"""The simple RTMP handshake, client side."""

from __future__ import annotations

import pytest

from rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake, HandshakeError


def test_c0_c1_c2_and_leftover() -> None:
    hs = ClientHandshake(random=lambda n: b"\xab" * n)
    c0c1 = hs.start(0x01020304)
    assert len(c0c1) == 1 + HANDSHAKE_SIZE
    assert c0c1[:9] == b"\x03\x01\x02\x03\x04\x00\x00\x00\x00"
    assert set(c0c1[9:]) == {0xAB}
    s1 = bytes(range(256)) * 6
    s2 = c0c1[1:]
    send, rest = hs.receive(b"\x03" + s1[:100])
    assert (send, rest, hs.done) == (b"", b"", False)
    send, rest = hs.receive(s1[100:] + s2[:10])
    assert send == s1 and not hs.done  # C2 echoes S1
    send, rest = hs.receive(s2[10:] + b"chunks")
    assert (send, rest, hs.done) == (b"", b"chunks", True)
    assert hs.receive(b"more") == (b"", b"more")


def test_all_at_once() -> None:
    hs = ClientHandshake()
    hs.start(0)
    s1 = b"\x01" * HANDSHAKE_SIZE
    send, rest = hs.receive(b"\x03" + s1 + b"\x02" * HANDSHAKE_SIZE)
    assert send == s1 and rest == b"" and hs.done


def test_wrong_version() -> None:
    hs = ClientHandshake()
    hs.start(0)
    with pytest.raises(HandshakeError, match="server RTMP version 6, expected 3"):
        hs.receive(b"\x06" + bytes(HANDSHAKE_SIZE))
