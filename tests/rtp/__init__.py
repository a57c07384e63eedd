"""Tests for the rtp package; ``read_hex`` loads the vectors under tests/vectors/rtp/."""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "rtp"


def read_hex(name: str) -> list[bytes]:
    """The datagrams of an annotated hex vector file (format: tests/vectors/rtp/README.md)."""
    datagrams: list[bytes] = []
    digits: list[str] = []
    for line in (VECTORS / name).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text == "--":
            datagrams.append(bytes.fromhex("".join(digits)))
            digits = []
        else:
            digits.append(text)
    datagrams.append(bytes.fromhex("".join(digits)))
    return datagrams


def read_one(name: str) -> bytes:
    """The single datagram of a vector file."""
    (datagram,) = read_hex(name)
    return datagram
