"""Tests of sipbridge.sip.auth: RFC 2617 / RFC 7616 vectors, parser edge cases, ClientAuth."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.sip.auth import (
    SUPPORTED_ALGORITHMS,
    ClientAuth,
    DigestChallenge,
    DigestError,
    compute_response,
    format_challenge,
    parse_authorization,
    parse_challenge,
    parse_challenges,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "auth" / "rfc_examples.json").read_text("utf-8")
)

RFC7616_SHA256 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_MD5 = RFC7616_SHA256.replace("algorithm=SHA-256", "algorithm=MD5")
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def fixed_cnonces(*values: str) -> Any:
    it = iter(values)
    return lambda: next(it)


def counting_cnonces() -> Any:
    counter = itertools.count(1)
    return lambda: f"cn{next(counter)}"


def challenge(realm: str = "sip.example", nonce: str = "n1", **extra: str) -> str:
    parts = [f'realm="{realm}"', f'nonce="{nonce}"']
    parts += [f"{k}={v}" for k, v in extra.items()]
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("vec", VECTORS, ids=[v["source"] for v in VECTORS])
def test_compute_response_rfc_vectors(vec: dict[str, Any]) -> None:
    got = compute_response(
        algorithm=vec["algorithm"],
        username=vec["username"],
        realm=vec["realm"],
        password=vec["password"],
        method=vec["method"],
        uri=vec["uri"],
        nonce=vec["nonce"],
        qop=vec["qop"],
        nc=vec["nc"],
        cnonce=vec["cnonce"],
    )
    assert got == vec["response"]


@pytest.mark.parametrize("vec", VECTORS, ids=[v["source"] for v in VECTORS])
def test_client_auth_reproduces_rfc_vectors(vec: dict[str, Any]) -> None:
    auth = ClientAuth(vec["username"], vec["password"], cnonce_factory=lambda: vec["cnonce"])
    assert auth.on_challenge(401, [vec["challenge"]]) is True
    [(name, value)] = auth.authorization_headers(vec["method"], vec["uri"])
    assert name == "Authorization"
    params = parse_authorization(value)
    assert params == {
        "username": vec["username"],
        "realm": vec["realm"],
        "nonce": vec["nonce"],
        "uri": vec["uri"],
        "response": vec["response"],
        "algorithm": vec["algorithm"],
        "cnonce": vec["cnonce"],
        "opaque": vec["opaque"],
        "qop": "auth",
        "nc": "00000001",
    }


def test_authorization_value_format_is_exact() -> None:
    vec = VECTORS[0]
    auth = ClientAuth("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    assert auth.on_challenge(401, [vec["challenge"]])
    [(_, value)] = auth.authorization_headers("GET", "/dir/index.html")
    assert value == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=auth, nc=00000001'
    )


@pytest.mark.parametrize(
    "order", [[RFC7616_SHA256, RFC7616_MD5], [RFC7616_MD5, RFC7616_SHA256]], ids=["sha", "md5"]
)
def test_multiple_challenges_choose_sha256(order: list[str]) -> None:
    auth = ClientAuth("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    assert auth.on_challenge(401, order)
    [(name, value)] = auth.authorization_headers("GET", "/dir/index.html")
    params = parse_authorization(value)
    assert name == "Authorization"
    assert params["algorithm"] == "SHA-256"
    assert params["response"] == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_sha512_256_is_preferred_over_sha256_when_available() -> None:
    if "SHA-512-256" not in SUPPORTED_ALGORITHMS:
        pytest.skip("hashlib has no sha512_256 here")
    auth = ClientAuth("u", "p", cnonce_factory=lambda: "c")
    strong = challenge(nonce="n2", algorithm="SHA-512-256", qop='"auth"')
    assert auth.on_challenge(401, [challenge(algorithm="SHA-256", qop='"auth"'), strong])
    params = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    assert params["algorithm"] == "SHA-512-256"
    ha1 = hashlib.new("sha512_256", b"u:sip.example:p").hexdigest()
    ha2 = hashlib.new("sha512_256", b"REGISTER:sip:x").hexdigest()
    expected = hashlib.new("sha512_256", f"{ha1}:n2:00000001:c:auth:{ha2}".encode()).hexdigest()
    assert params["response"] == expected


# --------------------------------------------------------------------------- compute_response


def test_md5_sess_matches_rfc2617_definition() -> None:
    ha1 = md5(f"{md5('bob:biloxi.com:zanzibar')}:abc:0a4f113b")
    ha2 = md5("INVITE:sip:bob@biloxi.com")
    expected = md5(f"{ha1}:abc:00000001:0a4f113b:auth:{ha2}")
    got = compute_response(
        algorithm="MD5-sess",
        username="bob",
        realm="biloxi.com",
        password="zanzibar",
        method="INVITE",
        uri="sip:bob@biloxi.com",
        nonce="abc",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert got == expected


def test_sha256_sess_hashes_with_sha256() -> None:
    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = h(f"{h('u:r:p')}:n:c")
    expected = h(f"{ha1}:n:0000000a:c:auth:{h('BYE:sip:x')}")
    got = compute_response(
        algorithm="sha-256-SESS",
        username="u",
        realm="r",
        password="p",
        method="BYE",
        uri="sip:x",
        nonce="n",
        qop="auth",
        nc="0000000a",
        cnonce="c",
    )
    assert got == expected


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    ha2 = md5(f"INVITE:sip:bob@biloxi.com:{hashlib.md5(body).hexdigest()}")
    expected = md5(f"{md5('bob:biloxi.com:zanzibar')}:n:00000001:c:auth-int:{ha2}")
    kwargs: dict[str, Any] = {
        "algorithm": "MD5",
        "username": "bob",
        "realm": "biloxi.com",
        "password": "zanzibar",
        "method": "INVITE",
        "uri": "sip:bob@biloxi.com",
        "nonce": "n",
        "qop": "auth-int",
        "nc": "00000001",
        "cnonce": "c",
    }
    assert compute_response(**kwargs, body=body) == expected
    assert compute_response(**kwargs, body=b"other") != expected


def test_qop_absent_uses_rfc2069_response() -> None:
    expected = md5(f"{md5('bob:biloxi.com:zanzibar')}:n:{md5('REGISTER:sip:biloxi.com')}")
    got = compute_response(
        algorithm="MD5",
        username="bob",
        realm="biloxi.com",
        password="zanzibar",
        method="REGISTER",
        uri="sip:biloxi.com",
        nonce="n",
        qop=None,
        nc=None,
        cnonce=None,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"algorithm": "SHA-1"}, "unsupported algorithm: SHA-1"),
        ({"qop": "auth-conf"}, "unsupported qop: auth-conf"),
        ({"nc": None}, "qop auth requires nc and cnonce"),
        ({"cnonce": None}, "qop auth requires nc and cnonce"),
        ({"algorithm": "MD5-sess", "qop": None, "cnonce": None}, "MD5-SESS requires a cnonce"),
    ],
)
def test_compute_response_errors(changes: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {
        "algorithm": "MD5",
        "username": "u",
        "realm": "r",
        "password": "s3cret-pw",
        "method": "GET",
        "uri": "/",
        "nonce": "n",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "c",
    }
    kwargs.update(changes)
    with pytest.raises(DigestError) as info:
        compute_response(**kwargs)
    assert str(info.value) == message
    assert "s3cret-pw" not in str(info.value)


# --------------------------------------------------------------------------- parser


def test_parse_rfc7616_challenge() -> None:
    ch = parse_challenge(RFC7616_SHA256)
    assert ch == DigestChallenge(
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
        stale=False,
        domain=None,
    )


def test_parse_defaults() -> None:
    ch = parse_challenge('Digest realm="a", nonce="b"')
    assert (ch.algorithm, ch.qop, ch.opaque, ch.stale, ch.domain, ch.userhash) == (
        "MD5",
        (),
        None,
        False,
        None,
        False,
    )


def test_parse_brief_example() -> None:
    ch = parse_challenge(
        'Digest realm="a", nonce="b", qop="auth,auth-int", algorithm=MD5, stale=TRUE'
    )
    assert ch.realm == "a"
    assert ch.nonce == "b"
    assert ch.qop == ("auth", "auth-int")
    assert ch.algorithm == "MD5"
    assert ch.stale is True


def test_parse_escaped_quotes_and_backslashes() -> None:
    ch = parse_challenge(r'Digest realm="a \"quoted\" realm \\ x", nonce="n\o"')
    assert ch.realm == 'a "quoted" realm \\ x'
    assert ch.nonce == "no"


def test_parse_commas_inside_quoted_strings() -> None:
    ch = parse_challenge('Digest realm="a, b", nonce="x,y=z", opaque=", Digest c=d"')
    assert ch.realm == "a, b"
    assert ch.nonce == "x,y=z"
    assert ch.opaque == ", Digest c=d"


def test_parse_tolerates_whitespace_and_empty_elements() -> None:
    ch = parse_challenge(
        '  Digest   realm = "a" ,,  nonce\t=\t"b"  ,\r\n qop = auth , domain="sip:a sip:b" ,  '
    )
    assert (ch.realm, ch.nonce, ch.qop, ch.domain) == ("a", "b", ("auth",), "sip:a sip:b")


def test_parse_case_insensitive_names_scheme_and_values() -> None:
    ch = parse_challenge(
        'dIgEsT REALM="Mixed", Nonce="N", ALGORITHM=md5-Sess, QOP="AUTH", Stale=true, UserHash=TRUE'
    )
    assert ch.realm == "Mixed"
    assert ch.nonce == "N"
    assert ch.algorithm == "MD5-SESS"
    assert ch.qop == ("auth",)
    assert ch.stale is True
    assert ch.userhash is True


@pytest.mark.parametrize("value", ["false", "FALSE", "yes", "1", '"no"'])
def test_stale_other_values_are_false(value: str) -> None:
    assert parse_challenge(f'Digest realm="a", nonce="b", stale={value}').stale is False


def test_quoted_stale_true_is_true() -> None:
    assert parse_challenge('Digest realm="a", nonce="b", stale="true"').stale is True


def test_unknown_params_and_unquoted_base64_nonce() -> None:
    ch = parse_challenge('Digest realm="a", nonce=abc/def+ghi==, charset=UTF-8, x-foo="bar"')
    assert ch.nonce == "abc/def+ghi=="
    assert ch.realm == "a"


def test_unknown_algorithm_is_kept_upper_case() -> None:
    ch = parse_challenge('Digest realm="a", nonce="b", algorithm=AKAv1-MD5')
    assert ch.algorithm == "AKAV1-MD5"
    assert ch.supported is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('Basic realm="a"', "unsupported scheme: Basic"),
        ("Bearer", "unsupported scheme: Bearer"),
        ('Digest nonce="b"', "challenge has no realm"),
        ('Digest realm="a"', "challenge has no nonce"),
        ("Digest", "challenge has no realm"),
        ("", "empty header value"),
        ("  , ", "empty header value"),
        ('Digest realm="a, nonce=b', "unterminated quoted-string starting at offset 13"),
        ('Digest realm="a\\', "unterminated quoted-string starting at offset 13"),
        ('Digest realm="a", realm="b", nonce="c"', "duplicate parameter: realm"),
        ('Digest REALM="a", realm="b", nonce="c"', "duplicate parameter: realm"),
        ('Digest realm="a" nonce="b"', "expected ',' after parameter realm at offset 17"),
        ('Digest realm=, nonce="b"', "missing value for parameter realm"),
        ('Digest realm="a", nonce="b", algorithm=""', "empty algorithm"),
        ('Digest realm="a\r\nb", nonce="c"', "control character in quoted-string at offset 15"),
        ('Digest realm="a", =b', "expected a parameter name at offset 18"),
        ('"Digest" realm="a"', "expected an auth-scheme at offset 0"),
        ('Digest/1 realm="a"', "expected whitespace after auth-scheme Digest"),
        (
            'Digest realm="a", nonce="b", Digest realm="c", nonce="d"',
            "expected one challenge, got 2",
        ),
    ],
)
def test_parse_challenge_errors(text: str, message: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_challenge(text)
    assert str(info.value) == message


def test_digest_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        parse_challenge("Basic")


def test_parse_challenges_splits_schemes_in_one_value() -> None:
    found = parse_challenges(
        'Basic realm="x", Digest realm="a", nonce="1", algorithm=MD5, '
        'Bearer, Digest realm="a", nonce="2", algorithm=SHA-256'
    )
    assert [(c.nonce, c.algorithm) for c in found] == [("1", "MD5"), ("2", "SHA-256")]


def test_format_challenge_reads_back() -> None:
    ch = DigestChallenge(
        realm='r "q" \\',
        nonce="n,1",
        algorithm="SHA-256-SESS",
        qop=("auth", "auth-int"),
        opaque="o",
        stale=True,
        domain="sip:a",
        userhash=True,
    )
    text = format_challenge(ch)
    assert "algorithm=SHA-256-sess" in text
    assert parse_challenge(text) == ch


def test_format_challenge_refuses_control_characters() -> None:
    with pytest.raises(DigestError, match="realm contains a control character"):
        format_challenge(DigestChallenge(realm="a\nb", nonce="n"))


def test_parse_authorization() -> None:
    params = parse_authorization(
        'digest username="a\\"b", realm="r", nonce="n", uri="sip:x", response="00", '
        'qop=auth, nc=00000001, cnonce="c"'
    )
    assert params == {
        "username": 'a"b',
        "realm": "r",
        "nonce": "n",
        "uri": "sip:x",
        "response": "00",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "c",
    }
    with pytest.raises(DigestError, match="unsupported scheme: Basic"):
        parse_authorization("Basic dXNlcjpwYXNz")
    with pytest.raises(DigestError, match="expected one set of credentials, got 2"):
        parse_authorization('Digest username="a", Digest username="b"')


# --------------------------------------------------------------------------- ClientAuth


def test_qop_absent_sends_no_cnonce_nc_or_qop() -> None:
    auth = ClientAuth("bob", "zanzibar", cnonce_factory=lambda: pytest.fail("no cnonce needed"))
    assert auth.on_challenge(401, ['Digest realm="biloxi.com", nonce="n"'])
    [(_, value)] = auth.authorization_headers("REGISTER", "sip:biloxi.com")
    params = parse_authorization(value)
    assert set(params) == {"username", "realm", "nonce", "uri", "response", "algorithm"}
    assert params["response"] == md5(
        f"{md5('bob:biloxi.com:zanzibar')}:n:{md5('REGISTER:sip:biloxi.com')}"
    )


def test_auth_int_only_when_auth_not_offered() -> None:
    body = b"v=0\r\n"
    auth = ClientAuth("bob", "pw", cnonce_factory=lambda: "c")
    assert auth.on_challenge(401, [challenge(qop='"auth-int"')])
    [(_, value)] = auth.authorization_headers("INVITE", "sip:b@x", body)
    params = parse_authorization(value)
    assert params["qop"] == "auth-int"
    expected = compute_response(
        algorithm="MD5",
        username="bob",
        realm="sip.example",
        password="pw",
        method="INVITE",
        uri="sip:b@x",
        nonce="n1",
        qop="auth-int",
        nc="00000001",
        cnonce="c",
        body=body,
    )
    assert params["response"] == expected

    both = ClientAuth("bob", "pw", cnonce_factory=lambda: "c")
    assert both.on_challenge(401, [challenge(qop='"auth-int,auth"')])
    [(_, value)] = both.authorization_headers("INVITE", "sip:b@x", body)
    assert parse_authorization(value)["qop"] == "auth"


def test_unsupported_qop_only_gives_up() -> None:
    auth = ClientAuth("u", "p")
    assert auth.on_challenge(401, [challenge(qop='"auth-conf"')]) is False
    assert auth.last_error == "no supported digest challenge"
    assert auth.authorization_headers("REGISTER", "sip:x") == []


def test_session_algorithm_without_qop_is_unsupported() -> None:
    auth = ClientAuth("u", "p")
    assert auth.on_challenge(401, [challenge(algorithm="MD5-sess")]) is False


def test_md5_sess_keeps_one_cnonce_per_nonce() -> None:
    auth = ClientAuth("bob", "zanzibar", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [challenge(algorithm="MD5-sess", qop='"auth"')])
    first = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    second = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    assert first["algorithm"] == "MD5-sess"
    assert first["cnonce"] == second["cnonce"] == "cn1"
    assert (first["nc"], second["nc"]) == ("00000001", "00000002")
    ha1 = md5(f"{md5('bob:sip.example:zanzibar')}:n1:cn1")
    assert second["response"] == md5(f"{ha1}:n1:00000002:cn1:auth:{md5('REGISTER:sip:x')}")


def test_nc_increments_per_call_and_resets_with_new_nonce() -> None:
    auth = ClientAuth("u", "p", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [challenge(qop='"auth"')])
    seen = [
        parse_authorization(auth.authorization_headers(m, "sip:x")[0][1])
        for m in ("REGISTER", "REGISTER", "INVITE")
    ]
    assert [p["nc"] for p in seen] == ["00000001", "00000002", "00000003"]
    assert [p["cnonce"] for p in seen] == ["cn1", "cn2", "cn3"]
    for p, method in zip(seen, ("REGISTER", "REGISTER", "INVITE"), strict=True):
        assert p["response"] == compute_response(
            algorithm="MD5",
            username="u",
            realm="sip.example",
            password="p",
            method=method,
            uri="sip:x",
            nonce="n1",
            qop="auth",
            nc=p["nc"],
            cnonce=p["cnonce"],
        )
    auth.reset_failures()
    assert auth.on_challenge(401, [challenge(nonce="n2", qop='"auth"', stale="true")])
    fresh = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    assert (fresh["nonce"], fresh["nc"]) == ("n2", "00000001")


def test_stale_true_allows_retry_after_answer() -> None:
    auth = ClientAuth("u", "p", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [challenge(qop="auth")])
    auth.authorization_headers("REGISTER", "sip:x")
    assert auth.on_challenge(401, [challenge(nonce="n2", qop="auth", stale="TRUE")]) is True
    params = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    assert params["nonce"] == "n2"


def test_wrong_password_gives_up_on_new_nonce_without_stale() -> None:
    auth = ClientAuth("u", "wrong-password-123", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [challenge(qop="auth")])
    auth.authorization_headers("REGISTER", "sip:x")
    assert auth.on_challenge(401, [challenge(nonce="n2", qop="auth")]) is False
    assert auth.last_error == "credentials rejected for realm 'sip.example'"
    assert auth.on_challenge(401, [challenge(nonce="n3", qop="auth", stale="false")]) is False


def test_same_nonce_rejected_after_answer_gives_up() -> None:
    auth = ClientAuth("u", "p")
    assert auth.on_challenge(401, [challenge()])
    auth.authorization_headers("REGISTER", "sip:x")
    assert auth.on_challenge(401, [challenge()]) is False


def test_rechallenge_before_answering_is_not_a_rejection() -> None:
    auth = ClientAuth("u", "p", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [challenge(qop="auth")])
    assert auth.on_challenge(401, [challenge(nonce="n2", qop="auth")])
    params = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    assert params["nonce"] == "n2"


def test_success_then_expired_nonce_without_stale_gets_a_fresh_try() -> None:
    # A registrar that forgets stale=true on an expired nonce at a REGISTER refresh.
    auth = ClientAuth("u", "p", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [challenge(qop="auth")])
    auth.authorization_headers("REGISTER", "sip:x")
    auth.reset_failures()  # 200 OK
    auth.authorization_headers("REGISTER", "sip:x")  # refresh with cached credentials
    assert auth.on_challenge(401, [challenge(nonce="n2", qop="auth")]) is True
    auth.authorization_headers("REGISTER", "sip:x")
    assert auth.on_challenge(401, [challenge(nonce="n3", qop="auth")]) is False


def test_bounded_retries_in_a_row() -> None:
    auth = ClientAuth("u", "p", cnonce_factory=counting_cnonces())
    results = []
    for i in range(5):
        results.append(auth.on_challenge(401, [challenge(nonce=f"n{i}", qop="auth", stale="true")]))
        auth.authorization_headers("REGISTER", "sip:x")
    assert results == [True, True, True, False, False]
    assert auth.last_error == "gave up after 3 authentication retries"
    auth.reset_failures()
    assert auth.on_challenge(401, [challenge(nonce="n9", qop="auth", stale="true")]) is True


def test_max_retries_is_configurable() -> None:
    auth = ClientAuth("u", "p", max_retries=1)
    assert auth.on_challenge(401, [challenge(stale="true")])
    assert not auth.on_challenge(401, [challenge(nonce="n2", stale="true")])
    with pytest.raises(ValueError, match="max_retries must be at least 1, got 0"):
        ClientAuth("u", "p", max_retries=0)


def test_proxy_and_registrar_realms_give_two_headers() -> None:
    auth = ClientAuth("alice", "pw", cnonce_factory=counting_cnonces())
    assert auth.on_challenge(407, [challenge(realm="proxy.example", nonce="pn", qop="auth")])
    [(name, _)] = auth.authorization_headers("INVITE", "sip:bob@b.example")
    assert name == "Proxy-Authorization"
    assert auth.on_challenge(401, [challenge(realm="uas.example", nonce="un", qop="auth")])
    headers = auth.authorization_headers("INVITE", "sip:bob@b.example")
    assert [name for name, _ in headers] == ["Proxy-Authorization", "Authorization"]
    proxy, uas = (parse_authorization(v) for _, v in headers)
    assert (proxy["realm"], proxy["nonce"], proxy["nc"]) == ("proxy.example", "pn", "00000002")
    assert (uas["realm"], uas["nonce"], uas["nc"]) == ("uas.example", "un", "00000001")
    assert [(h, c.realm) for h, c in auth.realms] == [
        ("Proxy-Authorization", "proxy.example"),
        ("Authorization", "uas.example"),
    ]


def test_two_realms_in_one_response() -> None:
    auth = ClientAuth("alice", "pw")
    assert auth.on_challenge(407, [challenge(realm="a"), challenge(realm="b", nonce="n2")])
    realms = [parse_authorization(v)["realm"] for _, v in auth.authorization_headers("BYE", "x")]
    assert realms == ["a", "b"]


def test_unknown_algorithms_and_schemes_are_ignored() -> None:
    auth = ClientAuth("u", "p")
    assert not auth.on_challenge(401, [challenge(algorithm="AKAv1-MD5"), 'Basic realm="x"'])
    assert auth.on_challenge(
        401, [challenge(algorithm="AKAv1-MD5"), challenge(nonce="n2", algorithm="MD5")]
    )
    params = parse_authorization(auth.authorization_headers("REGISTER", "sip:x")[0][1])
    assert (params["nonce"], params["algorithm"]) == ("n2", "MD5")


def test_malformed_values_are_skipped_not_raised() -> None:
    auth = ClientAuth("u", "p")
    assert auth.on_challenge(401, ['Digest realm="unterminated', challenge()])
    assert auth.last_error is not None
    assert auth.last_error.startswith("ignored malformed challenge: unterminated")
    assert not auth.on_challenge(401, ["Digest realm=", "garbage ==="])


def test_on_challenge_rejects_other_statuses() -> None:
    with pytest.raises(ValueError, match="not an authentication challenge status: 403"):
        ClientAuth("u", "p").on_challenge(403, [challenge()])


def test_userhash() -> None:
    auth = ClientAuth("J\u00e4s\u00f8n Doe", "Secret, or not?", cnonce_factory=lambda: "c")
    assert auth.on_challenge(
        401, [challenge(realm="api@example.org", algorithm="SHA-256", qop="auth", userhash="true")]
    )
    params = parse_authorization(auth.authorization_headers("GET", "/doe.json")[0][1])
    expected_user = hashlib.sha256("J\u00e4s\u00f8n Doe:api@example.org".encode()).hexdigest()
    assert params["username"] == expected_user
    assert params["userhash"] == "true"
    # The response is still computed over the clear username (RFC 7616 section 3.4.4).
    assert params["response"] == compute_response(
        algorithm="SHA-256",
        username="J\u00e4s\u00f8n Doe",
        realm="api@example.org",
        password="Secret, or not?",
        method="GET",
        uri="/doe.json",
        nonce="n1",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )


def test_username_with_control_character_is_refused() -> None:
    with pytest.raises(DigestError, match="username contains a control character"):
        ClientAuth("bob\r\nX-Evil: 1", "pw")


def test_uri_with_control_character_is_refused() -> None:
    auth = ClientAuth("u", "p")
    assert auth.on_challenge(401, [challenge()])
    with pytest.raises(DigestError, match="uri contains a control character"):
        auth.authorization_headers("INVITE", "sip:x\r\nVia: y")


def test_password_never_shown() -> None:
    password = "hunter2-very-secret"
    auth = ClientAuth("alice", password)
    auth.on_challenge(401, [challenge()])
    headers = auth.authorization_headers("REGISTER", "sip:x")
    assert password not in repr(auth)
    assert password not in str(auth)
    assert password not in repr(vars(auth))
    assert password not in repr(headers)
    assert "alice" in repr(auth)
    assert "sip.example" in repr(auth)


# --------------------------------------------------------------------------- properties

_quotable = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs"],
        blacklist_characters="".join(chr(c) for c in [*range(0x20), 0x7F] if c != 0x09),
    ),
    max_size=30,
)
_grammar_soup = st.text(alphabet=' \t\r\n,="\\DigestrealmnoncqpBasic-:/', max_size=60)


@given(st.one_of(st.text(max_size=80), _grammar_soup, _grammar_soup.map("Digest ".__add__)))
@settings(max_examples=500)
def test_parse_challenge_raises_only_digest_error(text: str) -> None:
    try:
        ch = parse_challenge(text)
    except DigestError:
        return
    assert isinstance(ch, DigestChallenge)
    assert ch.algorithm == ch.algorithm.upper()


@given(st.one_of(st.text(max_size=80), _grammar_soup.map("Digest ".__add__)))
@settings(max_examples=300)
def test_parse_authorization_and_challenges_raise_only_digest_error(text: str) -> None:
    for parse in (parse_authorization, parse_challenges):
        with contextlib.suppress(DigestError):
            parse(text)


@given(
    realm=_quotable,
    nonce=_quotable,
    algorithm=st.sampled_from(sorted(SUPPORTED_ALGORITHMS)),
    qop=st.lists(st.sampled_from(["auth", "auth-int", "auth-conf"]), unique=True, max_size=3),
    opaque=st.none() | _quotable,
    stale=st.booleans(),
    domain=st.none() | _quotable,
    userhash=st.booleans(),
)
def test_challenge_round_trip(
    realm: str,
    nonce: str,
    algorithm: str,
    qop: list[str],
    opaque: str | None,
    stale: bool,
    domain: str | None,
    userhash: bool,
) -> None:
    ch = DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=tuple(qop),
        opaque=opaque,
        stale=stale,
        domain=domain,
        userhash=userhash,
    )
    assert parse_challenge(format_challenge(ch)) == ch


@given(
    username=_quotable,
    password=st.text(max_size=20),
    realm=_quotable,
    nonce=_quotable,
    algorithm=st.sampled_from(sorted(SUPPORTED_ALGORITHMS)),
    qop=st.sampled_from([(), ("auth",), ("auth-int",), ("auth-int", "auth")]),
    method=st.sampled_from(["REGISTER", "INVITE", "BYE", "OPTIONS"]),
    uri=_quotable,
    body=st.binary(max_size=40),
    requests=st.integers(min_value=1, max_value=3),
)
def test_server_side_verification_of_client_credentials(
    username: str,
    password: str,
    realm: str,
    nonce: str,
    algorithm: str,
    qop: tuple[str, ...],
    method: str,
    uri: str,
    body: bytes,
    requests: int,
) -> None:
    ch = DigestChallenge(realm=realm, nonce=nonce, algorithm=algorithm, qop=qop)
    auth = ClientAuth(username, password, cnonce_factory=counting_cnonces())
    assert auth.on_challenge(401, [format_challenge(ch)]) is ch.supported
    if not ch.supported:
        return
    for i in range(1, requests + 1):
        [(name, value)] = auth.authorization_headers(method, uri, body)
        assert name == "Authorization"
        params = parse_authorization(value)
        assert (params["username"], params["realm"], params["nonce"], params["uri"]) == (
            username,
            realm,
            nonce,
            uri,
        )
        assert params.get("nc") == (f"{i:08x}" if qop else None)
        assert params["response"] == compute_response(
            algorithm=params["algorithm"],
            username=username,
            realm=params["realm"],
            password=password,
            method=method,
            uri=params["uri"],
            nonce=params["nonce"],
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            body=body,
        )


def test_a_quoted_algorithm_that_is_not_a_token_is_refused() -> None:
    """RFC 7616 §3.3 (found by fuzz/fuzz_digest.py: it could not be written back)."""
    with pytest.raises(DigestError, match="not a token"):
        parse_challenge('Digest realm="r", nonce="n", algorithm=", algorithm=M,i Dec"')
