"""SDES key exchange for SRTP in SDP: the ``a=crypto`` attribute (RFC 4568), sans-IO.

Theory of operation
-------------------
With ``[sip] srtp`` on, each offered audio/video stream carries one fresh 30-byte
master key||salt (RFC 3711 §8.2, from :func:`secrets.token_bytes`) in two
``a=crypto`` lines, one per supported suite (RFC 4568 §6.2):

    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<base64 key||salt>
    a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:<same key||salt>

Only the suite the answerer picks is ever used, so sharing the key between the
two alternatives reuses nothing. The answer's line with an offered tag and suite
names the callee's key (RFC 4568 §5.1.2): inbound SRTP/SRTCP is decrypted with
the callee's key, our outbound RTCP (and keepalives, DTMF) protected with ours.

Keys never reach a log line: :class:`CryptoAttribute` and :class:`SrtpKeys`
hide them from ``repr`` and :func:`mask_crypto_keys` masks ``inline:`` values
in SIP traces.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from sipbridge.sip.sdp import Attribute, MediaDescription, SdpError

__all__ = [
    "KEY_LENGTH",
    "SUITES",
    "CryptoAttribute",
    "CryptoError",
    "SrtpKeys",
    "SrtpMode",
    "SrtpRequired",
    "crypto_attributes",
    "generate_key",
    "mask_crypto_keys",
    "offered_cryptos",
]

#: ``[sip] srtp``: off = plain RTP/AVP; optional = RTP/AVP with a=crypto, either answer
#: accepted; mandatory = RTP/SAVP with a=crypto, a plain answer ends the call.
SrtpMode = Literal["off", "optional", "mandatory"]

#: AES-CM 128-bit master key + 112-bit master salt (RFC 3711 §8.2, RFC 4568 §6.2.1).
KEY_LENGTH = 30

#: The suites we offer, in preference order (RFC 4568 §6.2).
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

_TAG_RE = re.compile(r"[0-9]{1,9}")
_SUITE_RE = re.compile(r"[A-Za-z0-9_]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_INLINE_RE = re.compile(r"(inline:)[A-Za-z0-9+/=]+")
# RFC 4568 §6.1: lifetime as a decimal or 2^n, MKI as value:length; we take no MKI.
_LIFETIME_RE = re.compile(r"(?:[0-9]{1,20}|2\^[0-9]{1,2})")


class CryptoError(SdpError):
    """A malformed or unsupported ``a=crypto`` value (the reason is in the message)."""


class SrtpRequired(SdpError):
    """``[sip] srtp = "mandatory"`` and the answer has no usable ``a=crypto``."""


def generate_key() -> bytes:
    """A fresh master key||salt for one stream (RFC 3711 §8.2, RFC 4568 §6.2.1)."""
    return secrets.token_bytes(KEY_LENGTH)


def mask_crypto_keys(text: str) -> str:
    """``text`` with every ``inline:<key>`` replaced by ``inline:***`` (for SIP traces)."""
    return _INLINE_RE.sub(r"\1***", text)


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` value (RFC 4568 §9.1) with a single inline key and no MKI.

    ``lifetime`` (RFC 4568 §6.1) is kept as written; session parameters are kept
    verbatim. The key is left out of ``repr``.
    """

    tag: int
    suite: str
    key: bytes = field(repr=False)
    lifetime: str | None = None
    session_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:
            raise CryptoError(f"bad crypto tag {self.tag}")
        if not _SUITE_RE.fullmatch(self.suite):
            raise CryptoError(f"bad crypto suite {self.suite!r}")
        if self.suite in SUITES and len(self.key) != KEY_LENGTH:
            raise CryptoError(f"{self.suite} needs a {KEY_LENGTH}-byte key, got {len(self.key)}")
        if self.lifetime is not None and not _LIFETIME_RE.fullmatch(self.lifetime):
            raise CryptoError(f"bad key lifetime {self.lifetime!r}")
        for param in self.session_params:
            if not param or any(c.isspace() for c in param):
                raise CryptoError(f"bad session parameter {param!r}")

    @property
    def supported(self) -> bool:
        """Whether we can run this suite (AES-CM with HMAC-SHA1-80 or -32)."""
        return self.suite in SUITES

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse ``tag suite inline:key[|lifetime] [session-params]`` (RFC 4568 §9.1)."""
        parts = value.split()
        if len(parts) < 3:
            raise CryptoError(f"crypto attribute needs tag, suite and key: {len(parts)} fields")
        tag_text, suite, key_params, *session = parts
        if not _TAG_RE.fullmatch(tag_text):
            raise CryptoError(f"bad crypto tag {tag_text!r}")
        if ";" in key_params:
            raise CryptoError("several keys in one crypto attribute are not supported")
        method, _, info = key_params.partition(":")
        if method != "inline":
            raise CryptoError(f"unsupported key method {method!r}")
        key_text, *extras = info.split("|")
        if not _BASE64_RE.fullmatch(key_text):
            raise CryptoError("key is not base64")
        try:
            key = base64.b64decode(key_text + "=" * (-len(key_text) % 4), validate=True)
        except binascii.Error:
            raise CryptoError("key is not base64") from None
        lifetime: str | None = None
        for extra in extras:
            if ":" in extra:
                raise CryptoError("MKI is not supported")
            if lifetime is not None:
                raise CryptoError("more than one key lifetime")
            lifetime = extra
        return cls(int(tag_text), suite, key, lifetime, tuple(session))

    def __str__(self) -> str:
        key = base64.b64encode(self.key).decode("ascii")
        lifetime = f"|{self.lifetime}" if self.lifetime is not None else ""
        return " ".join(
            [str(self.tag), self.suite, f"inline:{key}{lifetime}", *self.session_params]
        )


@dataclass(frozen=True)
class SrtpKeys:
    """The negotiated SRTP context of one stream: the suite, our key (for what we send)
    and the peer's key (for what we receive), RFC 4568 §6.1. Keys are left out of repr."""

    suite: str
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)


def crypto_attributes(
    key: bytes, tag: int | None = None, suite: str | None = None
) -> list[Attribute]:
    """``a=crypto`` lines for ``key``: every suite in :data:`SUITES` numbered from 1,
    or just ``tag``/``suite`` (an answer, RFC 4568 §7.1.2)."""
    if tag is not None and suite is not None:
        return [Attribute("crypto", str(CryptoAttribute(tag, suite, key)))]
    return [
        Attribute("crypto", str(CryptoAttribute(number, name, key)))
        for number, name in enumerate(SUITES, 1)
    ]


def offered_cryptos(media: MediaDescription) -> list[CryptoAttribute]:
    """The supported ``a=crypto`` lines of a media section, in its order; malformed or
    unsupported ones are skipped (RFC 4568 §7.1.1: the answerer ignores what it cannot
    use)."""
    found: list[CryptoAttribute] = []
    for attr in media.attributes:
        if attr.name != "crypto" or attr.value is None:
            continue
        try:
            crypto = CryptoAttribute.parse(attr.value)
        except CryptoError:
            continue
        if crypto.supported:
            found.append(crypto)
    return found
