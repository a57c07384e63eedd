"""HTTP Digest authentication for a SIP client (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Theory of operation
-------------------
A UAC sends a request without credentials. A registrar or UAS answers 401 with
one or more ``WWW-Authenticate`` challenges; a proxy answers 407 with
``Proxy-Authenticate``. :meth:`ClientAuth.on_challenge` parses them, keeps the
strongest supported challenge per realm (RFC 8760 §2.4: SHA-512-256, then
SHA-256, then MD5) and says whether the request should be retried.
:meth:`ClientAuth.authorization_headers` then yields one ``Authorization`` or
``Proxy-Authorization`` value per learned realm for the retried request, and for
every later request of the same identity (RFC 3261 §22.3 lets a UAC cache
credentials per realm; the nonce counter ``nc`` keeps such re-use valid).

Giving up: a realm that we already answered and that challenges us again with
``stale`` not true means the server rejected the password (RFC 2617 §3.2.1
"stale"), so :meth:`ClientAuth.on_challenge` returns False. A challenge with
``stale=true`` only says the nonce expired and is always retried, but the
number of retries in a row is bounded so a misbehaving server cannot loop us.
:meth:`ClientAuth.reset_failures` is called when a request succeeds; it also
marks the cached credentials as proven good, so that a later re-challenge (a
server that forgets to set ``stale`` when a nonce expires) gets one fresh try.

Everything here is pure: strings in, strings out, no I/O and no clock. The only
source of randomness is the client nonce, injectable for tests.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "ClientAuth",
    "DigestChallenge",
    "DigestError",
    "compute_response",
    "format_challenge",
    "parse_authorization",
    "parse_challenge",
    "parse_challenges",
]


class DigestError(ValueError):
    """A malformed challenge or credentials, or an unanswerable one; the message says why.

    Messages never contain a password.
    """


# RFC 7616 §3.2 / RFC 8760 §2.2: algorithm name -> hashlib name. SHA-512/256 needs an
# OpenSSL that has it, so it is only offered when hashlib can build it.
_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
try:
    hashlib.new("sha512_256")
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass
else:
    _HASHES["SHA-512-256"] = "sha512_256"

# Strength order used to pick among challenges of one realm (stronger is larger).
_STRENGTH: dict[str, int] = {"MD5": 1, "SHA-256": 2, "SHA-512-256": 3}

SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    name + suffix for name in _HASHES for suffix in ("", "-SESS")
)
"""Canonical names of the algorithms :func:`compute_response` and :class:`ClientAuth` accept."""

_SUPPORTED_QOPS = ("auth", "auth-int")

# RFC 7230 §3.2.6 tchar.
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Whitespace between elements; CR and LF are tolerated for values that were not unfolded.
_WS = frozenset(" \t\r\n")
_WS_OR_COMMA = _WS | {","}
#: RFC 7230 §3.2.6 token characters.
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

# Characters that end an unquoted value. RFC 7235 says token, but real servers send
# unquoted nonces with "/" or "=", so anything up to whitespace or a comma is taken.
_VALUE_END = frozenset(' \t\r\n,"')


def _is_ctl(ch: str) -> bool:
    """RFC 5234 CTL, except HTAB which quoted-string allows."""
    return (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f"


# --------------------------------------------------------------------------- parsing


class _Scanner:
    """Recursive-descent reader of RFC 7235 §2.1 challenges / credentials lists."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos > start

    def skip_ws_and_commas(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS_OR_COMMA:
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        # RFC 7230 §3.2.6: DQUOTE *( qdtext / quoted-pair ) DQUOTE
        start = self.pos
        self.pos += 1  # opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                ch = self.text[self.pos + 1]
                self.pos += 1
            if _is_ctl(ch):
                raise DigestError(f"control character in quoted-string at offset {self.pos}")
            out.append(ch)
            self.pos += 1
        raise DigestError(f"unterminated quoted-string starting at offset {start}")

    def value(self, name: str) -> str:
        if self.peek() == '"':
            return self.quoted_string()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _VALUE_END:
            if _is_ctl(self.text[self.pos]):
                raise DigestError(f"control character in value of {name} at offset {self.pos}")
            self.pos += 1
        if self.pos == start:
            raise DigestError(f"missing value for parameter {name}")
        return self.text[start : self.pos]


def _parse_list(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split a header value into ``(scheme, {lower-case name: value})`` items.

    RFC 7235 §4.1 allows several comma-separated challenges in one value; a new
    challenge starts where a token is followed by whitespace and no ``=``.
    Token68 forms (``Basic dXNlcg==``) are read leniently since such schemes
    are ignored anyway.
    """
    sc = _Scanner(value)
    items: list[tuple[str, dict[str, str]]] = []
    sc.skip_ws_and_commas()
    while not sc.at_end():
        scheme = sc.token()
        if not scheme:
            raise DigestError(f"expected an auth-scheme at offset {sc.pos}")
        if not sc.at_end() and sc.peek() not in _WS and sc.peek() != ",":
            raise DigestError(f"expected whitespace after auth-scheme {scheme}")
        params: dict[str, str] = {}
        while True:
            sc.skip_ws_and_commas()
            if sc.at_end():
                break
            mark = sc.pos
            name = sc.token()
            if not name:
                raise DigestError(f"expected a parameter name at offset {sc.pos}")
            sc.skip_ws()
            if sc.peek() != "=":
                # A token without "=": the scheme of the next challenge.
                sc.pos = mark
                break
            sc.pos += 1
            sc.skip_ws()
            key = name.lower()
            if key in params:
                raise DigestError(f"duplicate parameter: {key}")
            params[key] = sc.value(key)
            sc.skip_ws()
            if not sc.at_end() and sc.peek() != ",":
                raise DigestError(f"expected ',' after parameter {key} at offset {sc.pos}")
        items.append((scheme, params))
    if not items:
        raise DigestError("empty header value")
    return items


# --------------------------------------------------------------------------- challenges


@dataclass(frozen=True)
class DigestChallenge:
    """One Digest challenge (RFC 7616 §3.3, RFC 3261 §20.44 / §20.27).

    ``algorithm`` is upper case ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS",
    "SHA-512-256", ...), "MD5" when absent. Unknown algorithms are kept as sent
    (upper-cased) so the caller can ignore them. ``qop`` holds the lower-case
    offered options in order, () when the challenge had none (RFC 2069).
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False

    @property
    def supported(self) -> bool:
        """Whether :class:`ClientAuth` can answer this challenge."""
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            return False
        if self.qop and not any(q in _SUPPORTED_QOPS for q in self.qop):
            return False
        # A session algorithm needs a cnonce, which RFC 2617 only sends along with qop.
        return not (self.algorithm.endswith("-SESS") and not self.qop)


def _challenge_from_params(params: Mapping[str, str]) -> DigestChallenge:
    realm = params.get("realm")
    if realm is None:
        raise DigestError("challenge has no realm")
    nonce = params.get("nonce")
    if nonce is None:
        raise DigestError("challenge has no nonce")
    algorithm = params.get("algorithm", "MD5").strip().upper()
    if not algorithm:
        raise DigestError("empty algorithm")
    # RFC 7616 §3.3: algorithm is a token (quoted by some servers, so unquoted first).
    if not _TOKEN_TEXT.fullmatch(algorithm):
        raise DigestError(f"algorithm is not a token: {algorithm[:40]!r}")
    qop_text = params.get("qop")
    qop: tuple[str, ...] = ()
    if qop_text is not None:
        qop = tuple(q.strip().lower() for q in qop_text.split(",") if q.strip())
    # RFC 2617 §3.2.1: "stale" is true only when it says so; any other value is false.
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").strip().lower() == "true",
        domain=params.get("domain"),
        userhash=params.get("userhash", "").strip().lower() == "true",
    )


def parse_challenges(value: str) -> list[DigestChallenge]:
    """Parse every Digest challenge of one ``WWW-Authenticate``/``Proxy-Authenticate`` value.

    RFC 7235 §4.1 allows several challenges in one value; those of other
    schemes (Basic, Bearer, ...) are skipped. Raises :class:`DigestError` when
    the value is malformed or a Digest challenge lacks realm or nonce.
    """
    return [
        _challenge_from_params(params)
        for scheme, params in _parse_list(value)
        if scheme.lower() == "digest"
    ]


def parse_challenge(value: str) -> DigestChallenge:
    """Parse one ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 7235 §2.1, RFC 7616 §3.3).

    Parameter names are case-insensitive, values are tokens or quoted-strings
    with backslash escapes, unknown parameters are ignored. Raises
    :class:`DigestError` with the reason, e.g. ``unsupported scheme: Basic``.
    """
    items = _parse_list(value)
    scheme, params = items[0]
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported scheme: {scheme}")
    if len(items) > 1:
        raise DigestError(f"expected one challenge, got {len(items)}")
    return _challenge_from_params(params)


def parse_authorization(value: str) -> dict[str, str]:
    """Parse a Digest ``Authorization`` / ``Proxy-Authorization`` value into its parameters.

    Names are lower case, quoted values unescaped (RFC 7616 §3.4). Raises
    :class:`DigestError` if the value is malformed or not of the Digest scheme.
    """
    items = _parse_list(value)
    scheme, params = items[0]
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported scheme: {scheme}")
    if len(items) > 1:
        raise DigestError(f"expected one set of credentials, got {len(items)}")
    return params


def _quote(name: str, value: str) -> str:
    for ch in value:
        if _is_ctl(ch):
            raise DigestError(f"{name} contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(challenge: DigestChallenge) -> str:
    """Serialize a challenge as a header value (the server side of RFC 7616 §3.3).

    Used by tests and test-side servers; ``parse_challenge`` reads it back unchanged.
    """
    parts = [f"realm={_quote('realm', challenge.realm)}"]
    if challenge.domain is not None:
        parts.append(f"domain={_quote('domain', challenge.domain)}")
    parts.append(f"nonce={_quote('nonce', challenge.nonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote('opaque', challenge.opaque)}")
    if challenge.stale:
        parts.append("stale=TRUE")
    parts.append(f"algorithm={_wire_algorithm(challenge.algorithm)}")
    if challenge.qop:
        parts.append(f"qop={_quote('qop', ','.join(challenge.qop))}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------- computing


def _canonical_algorithm(algorithm: str) -> tuple[str, bool]:
    """Return (hashlib name, is-session) for a Digest algorithm name, any case."""
    canonical = algorithm.strip().upper()
    if canonical not in SUPPORTED_ALGORITHMS:
        raise DigestError(f"unsupported algorithm: {algorithm}")
    sess = canonical.endswith("-SESS")
    base = canonical[: -len("-SESS")] if sess else canonical
    return _HASHES[base], sess


def _hex(hash_name: str, data: bytes) -> str:
    return hashlib.new(hash_name, data).hexdigest()


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """Compute the ``response`` parameter (RFC 2617 §3.2.2, RFC 7616 §3.4.1-§3.4.3).

    ``HA1 = H(username:realm:password)``, or for a ``-sess`` algorithm
    ``H(HA1:nonce:cnonce)``; ``HA2 = H(method:uri)``, or ``H(method:uri:H(body))``
    for qop ``auth-int``; ``response = H(HA1:nonce:nc:cnonce:qop:HA2)`` with a
    qop, ``H(HA1:nonce:HA2)`` without one (RFC 2069). Strings are UTF-8.
    """
    hash_name, sess = _canonical_algorithm(algorithm)
    if qop is not None and qop not in _SUPPORTED_QOPS:
        raise DigestError(f"unsupported qop: {qop}")
    if qop is not None and (nc is None or cnonce is None):
        raise DigestError(f"qop {qop} requires nc and cnonce")
    if sess and cnonce is None:
        raise DigestError(f"{algorithm.strip().upper()} requires a cnonce")

    def h(text: str) -> str:
        return _hex(hash_name, text.encode("utf-8"))

    ha1 = h(f"{username}:{realm}:{password}")
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + _hex(hash_name, body)
    ha2 = h(a2)
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------- client


class _Secret:
    """Holds the password so that no repr, str or vars() dump shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


@dataclass
class _RealmState:
    """What we know about one realm: its current challenge and nonce counter."""

    header: str  # "Authorization" or "Proxy-Authorization"
    challenge: DigestChallenge
    nc: int = 0
    # True once credentials for the current challenge went out.
    answered: bool = False
    # True once a request carrying them succeeded (ClientAuth.reset_failures): a later
    # non-stale challenge then means an expired nonce, not a wrong password.
    proven: bool = False
    # Session algorithms keep one cnonce per nonce so that HA1 stays the same for
    # servers that compute it once per "authentication session" (RFC 2617 §3.2.2.2).
    session_cnonce: str | None = field(default=None)


_HEADER_FOR_STATUS = {401: "Authorization", 407: "Proxy-Authorization"}

DEFAULT_MAX_RETRIES = 3


def _default_cnonce() -> str:
    return secrets.token_hex(16)


class ClientAuth:
    """Digest state of one SIP client identity (a registration or a call), RFC 3261 §22.2-22.4.

    Feed every 401/407 response to :meth:`on_challenge`; when it returns True,
    resend the request (new CSeq) with :meth:`authorization_headers`. Call
    :meth:`reset_failures` on a final non-401/407 response. ACK (to a non-2xx)
    and CANCEL cannot be challenged (RFC 3261 §22.1): give them the header values
    of the INVITE they go with rather than calling :meth:`authorization_headers` again.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        if any(_is_ctl(ch) for ch in username):
            raise DigestError("username contains a control character")
        if max_retries < 1:
            raise ValueError(f"max_retries must be at least 1, got {max_retries}")
        self.username = username
        self._password = _Secret(password)
        self._cnonce_factory = cnonce_factory or _default_cnonce
        self.max_retries = max_retries
        self._realms: dict[tuple[str, str], _RealmState] = {}
        self._retries = 0
        self.last_error: str | None = None
        """Why the last :meth:`on_challenge` gave up or skipped a header value, for logs."""

    def __repr__(self) -> str:
        realms = [f"{header}:{realm}" for header, realm in self._realms]
        return f"ClientAuth(username={self.username!r}, realms={realms!r}, retries={self._retries})"

    @property
    def realms(self) -> list[tuple[str, DigestChallenge]]:
        """(header name, challenge) of every cached realm, in the order learned."""
        return [(state.header, state.challenge) for state in self._realms.values()]

    def reset_failures(self) -> None:
        """Record that a request succeeded: the retry budget refills, credentials are proven.

        A proven realm that later challenges again without ``stale`` (servers that
        forget it on an expired nonce) gets one fresh try before we call it a rejection.
        """
        self._retries = 0
        for state in self._realms.values():
            state.proven = True

    def _give_up(self, reason: str) -> bool:
        self.last_error = reason
        return False

    def on_challenge(self, status: int, header_values: list[str]) -> bool:
        """Take a 401 (``WWW-Authenticate`` values) or 407 (``Proxy-Authenticate`` values).

        Returns True when the request should be retried with
        :meth:`authorization_headers`, False when authentication failed: no
        supported challenge, a non-stale re-challenge of a realm we answered
        (wrong password, RFC 2617 §3.2.1), or too many retries in a row.
        Malformed values are skipped (a peer's garbage is not our crash);
        :attr:`last_error` tells why.
        """
        header = _HEADER_FOR_STATUS.get(status)
        if header is None:
            raise ValueError(f"not an authentication challenge status: {status}")
        self.last_error = None
        chosen: dict[str, DigestChallenge] = {}
        for value in header_values:
            try:
                challenges = parse_challenges(value)
            except DigestError as exc:
                self.last_error = f"ignored malformed challenge: {exc}"
                continue
            for challenge in challenges:
                if not challenge.supported:
                    continue
                best = chosen.get(challenge.realm)
                # RFC 8760 §2.4: prefer the strongest algorithm; among equals the first listed.
                if best is None or _strength(challenge) > _strength(best):
                    chosen[challenge.realm] = challenge
        if not chosen:
            return self._give_up("no supported digest challenge")
        if self._retries >= self.max_retries:
            return self._give_up(f"gave up after {self._retries} authentication retries")
        for realm, challenge in chosen.items():
            state = self._realms.get((header, realm))
            if state is not None and state.answered and not state.proven and not challenge.stale:
                return self._give_up(f"credentials rejected for realm {realm!r}")
        for realm, challenge in chosen.items():
            key = (header, realm)
            state = self._realms.get(key)
            if state is not None and state.challenge.nonce == challenge.nonce:
                # Same nonce (e.g. a re-sent challenge): keep counting so nc never repeats.
                state.challenge = challenge
                state.answered = state.proven = False
            else:
                self._realms[key] = _RealmState(header=header, challenge=challenge)
        self._retries += 1
        return True

    def authorization_headers(
        self, method: str, uri: str, body: bytes = b""
    ) -> list[tuple[str, str]]:
        """Credentials for every cached realm (RFC 3261 §22.2-22.4, RFC 7616 §3.4).

        Returns ``("Authorization", value)`` for realms learned from 401s and
        ``("Proxy-Authorization", value)`` for those from 407s. qop is "auth"
        when offered, else "auth-int", else absent (RFC 2069); ``nc`` counts
        the uses of each nonce, so calling this for every request is correct.
        """
        out: list[tuple[str, str]] = []
        for state in self._realms.values():
            out.append((state.header, self._credentials(state, method, uri, body)))
            state.answered = True
        return out

    def _credentials(self, state: _RealmState, method: str, uri: str, body: bytes) -> str:
        ch = state.challenge
        qop: str | None = None
        if "auth" in ch.qop:
            qop = "auth"
        elif "auth-int" in ch.qop:
            qop = "auth-int"
        nc: str | None = None
        cnonce: str | None = None
        if qop is not None:
            state.nc += 1
            nc = f"{state.nc & 0xFFFFFFFF:08x}"
            if ch.algorithm.endswith("-SESS"):
                if state.session_cnonce is None:
                    state.session_cnonce = self._cnonce_factory()
                cnonce = state.session_cnonce
            else:
                cnonce = self._cnonce_factory()
        response = compute_response(
            algorithm=ch.algorithm,
            username=self.username,
            realm=ch.realm,
            password=self._password.reveal(),
            method=method,
            uri=uri,
            nonce=ch.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        username = self.username
        if ch.userhash:
            # RFC 7616 §3.4.4: username = H(unq(username) ":" unq(realm)).
            hash_name, _ = _canonical_algorithm(ch.algorithm)
            username = _hex(hash_name, f"{self.username}:{ch.realm}".encode())
        parts = [
            f"username={_quote('username', username)}",
            f"realm={_quote('realm', ch.realm)}",
            f"nonce={_quote('nonce', ch.nonce)}",
            f"uri={_quote('uri', uri)}",
            f"response={_quote('response', response)}",
            f"algorithm={_wire_algorithm(ch.algorithm)}",
        ]
        if cnonce is not None:
            parts.append(f"cnonce={_quote('cnonce', cnonce)}")
        if ch.opaque is not None:
            parts.append(f"opaque={_quote('opaque', ch.opaque)}")
        if qop is not None:
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc}")
        if ch.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def _wire_algorithm(canonical: str) -> str:
    # The RFCs spell the session variants "MD5-sess"; echo that spelling for strict servers.
    return canonical.removesuffix("-SESS") + "-sess" if canonical.endswith("-SESS") else canonical


def _strength(challenge: DigestChallenge) -> int:
    base = challenge.algorithm.removesuffix("-SESS")
    return _STRENGTH.get(base, 0)
