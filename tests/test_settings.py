"""Tests for sipbridge.settings: defaults, the repo's settings.toml, errors, env overrides."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipbridge.callinfo import CallRequest
from sipbridge.gateway import Gateway
from sipbridge.settings import (
    DEFAULT_USER_AGENT,
    HttpSettings,
    LogSettings,
    OutboundProxy,
    RtmpSettings,
    RtpSettings,
    Settings,
    SettingsError,
    SipSettings,
    load_settings,
    parse_outbound_proxy,
    settings_from_dict,
)
from sipbridge.sip.address import SipUri, Target
from sipbridge.sip.targets import uri_target

REPO_SETTINGS = Path(__file__).resolve().parents[1] / "settings.toml"


def _error(data: dict[str, Any]) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        settings_from_dict(data)
    return info.value


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_without_file() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert (s.http.host, s.http.port, s.http.api_token) == ("127.0.0.1", 8081, None)
    assert (s.sip.host, s.sip.port, s.sip.transport) == ("127.0.0.1", 5060, "udp")
    assert (s.sip.t1, s.sip.t2, s.sip.t4) == (0.5, 4.0, 5.0)
    assert (s.sip.session_expires, s.sip.min_se) == (1800, 90)
    assert s.sip.user_agent == DEFAULT_USER_AGENT
    assert s.sip.user_agent.startswith("sipbridge/")
    assert (s.rtp.port_min, s.rtp.port_max, s.rtp.inactivity_timeout) == (20000, 20999, 30.0)
    assert s.log == LogSettings(level="INFO", json=False, sip_trace=False)


def test_empty_dict_is_defaults() -> None:
    assert settings_from_dict({}) == Settings()
    assert settings_from_dict({"sip": {}}) == Settings()


def test_repo_settings_toml_equals_defaults() -> None:
    assert REPO_SETTINGS.is_file()
    assert load_settings(REPO_SETTINGS, env={}) == Settings()


def test_repo_settings_toml_mentions_every_key() -> None:
    # "Every key present with a comment": unset-by-default keys appear commented out.
    text = REPO_SETTINGS.read_text()
    for section in (HttpSettings, SipSettings, RtpSettings, LogSettings):
        for field in msgspec.structs.fields(section):
            assert f"{field.name} = " in text, field.name


def test_docs_mention_every_key_and_env_name() -> None:
    docs = (REPO_SETTINGS.parent / "docs" / "settings.md").read_text()
    for name, section in (
        ("http", HttpSettings),
        ("sip", SipSettings),
        ("rtp", RtpSettings),
        ("log", LogSettings),
    ):
        for field in msgspec.structs.fields(section):
            assert f"`{field.name}`" in docs, field.name
            assert f"SIPBRIDGE_{name.upper()}_{field.name.upper()}" in docs, field.name


def test_file_values_are_loaded(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[http]\nport = 9000\napi_token = "tok"\n'
        '[sip]\ntransport = "tcp"\npublic_address = "203.0.113.7"\npublic_port = 5070\nt1 = 1\n'
        "[rtp]\nport_min = 30000\nport_max = 30001\n"
        '[log]\nlevel = "DEBUG"\njson = true\n'
    )
    s = load_settings(path, env={})
    assert s.http.port == 9000
    assert s.http.api_token == "tok"
    assert s.sip.transport == "tcp"
    assert s.sip.advertised_address == "203.0.113.7"
    assert s.sip.public_port == 5070
    assert s.sip.t1 == 1.0
    assert isinstance(s.sip.t1, float)
    assert s.rtp.pair_count == 1
    assert (s.log.level, s.log.json) == ("DEBUG", True)


def test_empty_string_unsets_optional_strings() -> None:
    s = settings_from_dict(
        {"http": {"api_token": ""}, "sip": {"public_address": "", "outbound_proxy": ""}}
    )
    assert s.http.api_token is None
    assert s.sip.public_address is None
    assert s.sip.outbound_proxy is None
    assert s.sip.advertised_address == "127.0.0.1"


def test_api_token_not_in_repr() -> None:
    s = settings_from_dict({"http": {"api_token": "s3cret-token"}})
    assert "s3cret-token" not in repr(s)
    assert "s3cret-token" not in repr(s.http)
    assert "api_token='***'" in repr(s.http)


# --- errors name their key --------------------------------------------------------------------


def test_wrong_type_names_key() -> None:
    err = _error({"sip": {"t1": "fast"}})
    assert str(err) == "settings: sip.t1: expected float, got str"
    assert err.key == "sip.t1"


def test_wrong_type_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[http]\nport = "8081"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert str(info.value) == f"{path}: http.port: expected int, got str"
    assert info.value.source == str(path)


def test_unknown_key() -> None:
    err = _error({"sip": {"prot": 5060}})
    assert str(err) == 'settings: unknown key "sip.prot"'
    assert err.key == "sip.prot"


def test_unknown_section() -> None:
    assert str(_error({"media": {}})) == 'settings: unknown key "media"'


def test_section_not_a_table() -> None:
    assert str(_error({"sip": 5})) == "settings: sip: expected table, got int"


def test_out_of_range() -> None:
    err = _error({"http": {"port": 70000}})
    assert str(err) == "settings: http.port: expected int <= 65535, got 70000"
    assert err.key == "http.port"
    assert _error({"sip": {"t1": 0}}).key == "sip.t1"
    assert _error({"sip": {"min_se": 30}}).key == "sip.min_se"
    assert _error({"sip": {"register_expires": 10}}).key == "sip.register_expires"
    assert _error({"rtp": {"port_min": 80}}).key == "rtp.port_min"
    assert _error({"rtp": {"inactivity_timeout": -1.0}}).key == "rtp.inactivity_timeout"


def test_nan_and_inf_rejected() -> None:
    assert _error({"sip": {"t1": float("nan")}}).key == "sip.t1"
    assert _error({"sip": {"invite_timeout": float("inf")}}).key == "sip.invite_timeout"


def test_bad_literal_lists_choices() -> None:
    err = _error({"sip": {"transport": "sctp"}})
    assert str(err) == "settings: sip.transport: expected one of 'udp', 'tcp', 'tls', got 'sctp'"
    assert _error({"log": {"level": "info"}}).key == "log.level"


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sip_transport_takes_udp_tcp_and_tls(transport: str) -> None:
    assert settings_from_dict({"sip": {"transport": transport}}).sip.transport == transport
    env = {"SIPBRIDGE_SIP_TRANSPORT": transport}
    assert load_settings(env=env).sip.transport == transport


@pytest.mark.parametrize("value", ["TLS", "sctp", "sips", "", "tls "])
def test_sip_transport_unknown_values_name_the_choices(value: str) -> None:
    err = _error({"sip": {"transport": value}})
    assert err.key == "sip.transport"
    assert str(err) == (
        f"settings: sip.transport: expected one of 'udp', 'tcp', 'tls', got {value!r}"
    )


async def test_sip_transport_tls_is_the_default_that_targets_override() -> None:
    """``transport = "tls"``: a target naming no transport goes over TLS (port 5061 for a
    URI without one, RFC 3261 §26.2); ``sipTransport``, the proxy's ``;transport=``
    and a URI's ``;transport=`` still choose their own."""
    gateway = Gateway(
        Settings(sip=SipSettings(transport="tls", default_domain="127.0.0.1", default_port=5061))
    )
    plain = CallRequest(call_id="c1", callee="bob")
    account = await gateway._account_for(plain)
    assert account.proxy == Target("tls", "127.0.0.1", 5061)
    assert account.transport == "tls"
    udp = CallRequest(call_id="c2", callee="bob", sip_transport="UDP", sip_port=5060)
    assert (await gateway._account_for(udp)).proxy == Target("udp", "127.0.0.1", 5060)
    proxy = "127.0.0.2:5070;transport=tcp"
    proxied = CallRequest(call_id="c3", callee="bob", sip_outbound_proxy=proxy)
    assert (await gateway._account_for(proxied)).proxy == Target("tcp", "127.0.0.2", 5070)

    # In-dialog targets (Contact, Record-Route) follow the same rule.
    assert uri_target(SipUri.parse("sip:bob@192.0.2.9"), account.transport) == Target(
        "tls", "192.0.2.9", 5061
    )
    assert uri_target(SipUri.parse("sip:bob@192.0.2.9;transport=udp"), "tls") == Target(
        "udp", "192.0.2.9", 5060
    )


def test_optional_int_wrong_type() -> None:
    err = _error({"sip": {"public_port": 1.5}})
    assert str(err) == "settings: sip.public_port: expected int | none, got float"


def test_t2_below_t1() -> None:
    err = _error({"sip": {"t1": 1.0, "t2": 0.5}})
    assert str(err) == "settings: sip.t2: must be >= t1 (1.0), got 0.5"
    assert err.key == "sip.t2"


def test_session_expires_below_min_se() -> None:
    err = _error({"sip": {"session_expires": 100, "min_se": 200}})
    assert err.key == "sip.session_expires"
    assert err.reason == "must be >= min_se (200), got 100"


def test_port_min_not_below_port_max() -> None:
    err = _error({"rtp": {"port_min": 30000, "port_max": 30000}})
    assert str(err) == "settings: rtp.port_max: must be greater than port_min (30000), got 30000"
    assert _error({"rtp": {"port_min": 30000, "port_max": 29000}}).key == "rtp.port_max"


def test_port_range_without_an_even_odd_pair() -> None:
    err = _error({"rtp": {"port_min": 30001, "port_max": 30002}})
    assert err.key == "rtp.port_max"
    assert "no even RTP port" in err.reason


def test_bad_user_agent_and_proxy() -> None:
    assert _error({"sip": {"user_agent": "x\r\nVia: evil"}}).key == "sip.user_agent"
    assert _error({"sip": {"user_agent": ""}}).key == "sip.user_agent"
    err = _error({"sip": {"outbound_proxy": "proxy;transport=sctp"}})
    assert err.key == "sip.outbound_proxy"
    assert "unsupported parameter" in err.reason


def test_non_string_keys() -> None:
    assert str(_error({"sip": {1: 2}})) == "settings: sip: keys must be strings"


def test_cross_field_rules_apply_to_hand_built_structs() -> None:
    with pytest.raises(SettingsError, match=r"^t2: must be >= t1"):
        SipSettings(t1=2.0, t2=1.0)
    with pytest.raises(SettingsError, match=r"^port_max: must be greater than port_min"):
        RtpSettings(port_min=21000, port_max=20000)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert str(info.value) == f"settings file not found: {path}"


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip]\nt1 = 0.5\nt2 4\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(f"{path}: TOML syntax error: ")
    assert "line 3" in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path, env={})


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[sip]\nuser_agent = "caf\xe9"\n')
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(path, env={})


# --- environment overrides --------------------------------------------------------------------


def test_env_overrides_convert_types() -> None:
    s = load_settings(
        env={
            "SIPBRIDGE_HTTP_PORT": "9000",
            "SIPBRIDGE_SIP_PUBLIC_ADDRESS": "203.0.113.7",
            "SIPBRIDGE_SIP_PUBLIC_PORT": "5070",
            "SIPBRIDGE_SIP_T1": "0.25",
            "SIPBRIDGE_SIP_TRANSPORT": "tcp",
            "SIPBRIDGE_LOG_JSON": "true",
            "SIPBRIDGE_LOG_SIP_TRACE": "1",
            "SIPBRIDGE_RTP_INACTIVITY_TIMEOUT": "0",
            "PATH": "/usr/bin",  # no prefix: ignored
            "SIPBRIDGE_SETTINGS": "/etc/sipbridge.toml",  # reserved: ignored
        }
    )
    assert s.http.port == 9000
    assert s.sip.public_address == "203.0.113.7"
    assert s.sip.public_port == 5070
    assert s.sip.t1 == 0.25
    assert s.sip.transport == "tcp"
    assert s.log.json is True
    assert s.log.sip_trace is True
    assert s.rtp.inactivity_timeout == 0.0


def test_env_overrides_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[http]\nport = 9000\napi_token = "tok"\n[sip]\nport = 5080\n')
    s = load_settings(path, env={"SIPBRIDGE_HTTP_PORT": "9100", "SIPBRIDGE_HTTP_API_TOKEN": ""})
    assert s.http.port == 9100
    assert s.http.api_token is None  # "" unsets an optional key
    assert s.sip.port == 5080


def test_env_empty_string_for_required_string_stays_string() -> None:
    s = load_settings(env={"SIPBRIDGE_SIP_DEFAULT_DOMAIN": ""})
    assert s.sip.default_domain == ""


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPBRIDGE_RTP_PORT_MAX", "20099")
    assert load_settings().rtp.port_max == 20099


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIPBRIDGE_HTTP_PORT": "abc"}, "SIPBRIDGE_HTTP_PORT: http.port: expected int, got 'abc'"),
        (
            {"SIPBRIDGE_HTTP_PORT": "0"},
            "SIPBRIDGE_HTTP_PORT: http.port: expected int >= 1, got '0'",
        ),
        (
            {"SIPBRIDGE_SIP_TRANSPORT": "sctp"},
            "SIPBRIDGE_SIP_TRANSPORT: sip.transport: expected one of 'udp', 'tcp', 'tls', "
            "got 'sctp'",
        ),
        (
            {"SIPBRIDGE_LOG_JSON": "maybe"},
            "SIPBRIDGE_LOG_JSON: log.json: expected bool, got 'maybe'",
        ),
        (
            {"SIPBRIDGE_SIP_PUBLIC_PORT": "x"},
            "SIPBRIDGE_SIP_PUBLIC_PORT: sip.public_port: expected int | none, got 'x'",
        ),
        ({"SIPBRIDGE_SIP_PROT": "1"}, 'SIPBRIDGE_SIP_PROT: unknown key "sip.prot"'),
        ({"SIPBRIDGE_MEDIA_PORT": "1"}, 'SIPBRIDGE_MEDIA_PORT: unknown section "media"'),
        ({"SIPBRIDGE_SIP": "1"}, "SIPBRIDGE_SIP: expected SIPBRIDGE_<SECTION>_<KEY>"),
        (
            {"SIPBRIDGE_SIP_T2": "0.1"},
            "settings: sip.t2: must be >= t1 (0.5), got 0.1 (set by SIPBRIDGE_SIP_T2)",
        ),
    ],
)
def test_bad_env_var_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    assert str(info.value) == message


# --- helpers ----------------------------------------------------------------------------------


def test_register_refresh_delay() -> None:
    assert SipSettings().register_refresh_delay(3600) == 1800.0
    assert SipSettings(register_refresh_margin=0.25).register_refresh_delay(600) == 450.0


def test_rtp_pair_count() -> None:
    assert RtpSettings().pair_count == 500
    assert RtpSettings().first_even_port == 20000
    odd = RtpSettings(port_min=20001, port_max=20010)
    assert (odd.first_even_port, odd.pair_count) == (20002, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("proxy.example.com", OutboundProxy("proxy.example.com", None, None)),
        ("10.0.0.1:5080", OutboundProxy("10.0.0.1", 5080, None)),
        ("proxy:5061;transport=TCP", OutboundProxy("proxy", 5061, "tcp")),
        ("sip:proxy.example.com;lr", OutboundProxy("proxy.example.com", None, None)),
        ("[2001:db8::1]:5060;transport=udp", OutboundProxy("[2001:db8::1]", 5060, "udp")),
    ],
)
def test_parse_outbound_proxy(text: str, expected: OutboundProxy) -> None:
    assert parse_outbound_proxy(text) == expected


@pytest.mark.parametrize("text", ["", "a b", "proxy:0", "proxy:70000", "proxy;maddr=x", "p:x"])
def test_parse_outbound_proxy_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_outbound_proxy(text)


def test_settings_proxy_property() -> None:
    s = settings_from_dict({"sip": {"outbound_proxy": "proxy:5070;transport=tcp"}})
    assert s.sip.proxy == OutboundProxy("proxy", 5070, "tcp")
    assert Settings().sip.proxy is None


# --- property: anything in, SettingsError or Settings out ------------------------------------

_KEYS = sorted(
    {
        f.name
        for s in (HttpSettings, SipSettings, RtpSettings, LogSettings)
        for f in msgspec.structs.fields(s)
    }
    | {"http", "sip", "rtp", "log", "prot"}
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["udp", "tcp", "INFO", "DEBUG", "proxy:5060;transport=tcp", ""]),
    st.datetimes(),
    st.dates(),
    st.just(datetime.time(1, 2)),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
_sections = st.dictionaries(
    st.sampled_from(_KEYS) | st.text(max_size=5) | st.integers(), _values, max_size=6
)
_documents = st.dictionaries(
    st.sampled_from(["http", "sip", "rtp", "log", "other"]), _sections | _values, max_size=4
)


@settings(max_examples=400)
@given(_documents)
def test_random_dicts_raise_only_settings_error(data: dict[str, Any]) -> None:
    try:
        result = settings_from_dict(data)
    except SettingsError as err:
        assert str(err).startswith("settings")
        assert err.reason
    else:
        assert isinstance(result, Settings)
        assert result.sip.t2 >= result.sip.t1
        assert result.rtp.port_min < result.rtp.port_max
        assert result.sip.session_expires >= result.sip.min_se


def test_jitter_initial_delay_must_lie_within_min_and_max() -> None:
    message = str(_error({"rtp": {"jitter_min_delay": 0.1, "jitter_initial_delay": 0.05}}))
    assert "rtp.jitter_initial_delay" in message
    assert "0.1..0.5" in message
    ok = settings_from_dict({"rtp": {"jitter_min_delay": 0.0, "jitter_initial_delay": 0.0}})
    assert ok.rtp.jitter_initial_delay == 0.0


# --- [rtmp] -----------------------------------------------------------------------------------


def test_rtmp_defaults() -> None:
    rtmp = Settings().rtmp
    assert rtmp == RtmpSettings()
    assert (rtmp.audio, rtmp.audio_bitrate, rtmp.audio_sample_rate) == ("aac", 128_000, 48_000)
    assert rtmp.still_video is False
    assert (rtmp.connect_timeout, rtmp.rw_timeout, rtmp.send_buffer) == (10.0, 10.0, 131072)
    assert (rtmp.retry_initial, rtmp.retry_max, rtmp.max_retries) == (1.0, 30.0, 10)
    assert rtmp.retries == 10
    assert (rtmp.tls_verify, rtmp.tls_ca_file) == (False, "")


def test_rtmp_values_are_loaded(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[rtmp]\naudio = "copy"\naudio_bitrate = 64000\naudio_sample_rate = 44100\n'
        "still_video = true\nconnect_timeout = 4.0\nrw_timeout = 3.5\nsend_buffer = 0\n"
        "retry_initial = 0.5\nretry_max = 8.0\nmax_retries = -1\n"
        'tls_verify = true\ntls_ca_file = "/etc/sipbridge/ca.pem"\n'
    )
    rtmp = load_settings(path, env={}).rtmp
    assert rtmp == RtmpSettings(
        audio="copy",
        audio_bitrate=64000,
        audio_sample_rate=44100,
        still_video=True,
        connect_timeout=4.0,
        rw_timeout=3.5,
        send_buffer=0,
        retry_initial=0.5,
        retry_max=8.0,
        max_retries=-1,
        tls_verify=True,
        tls_ca_file="/etc/sipbridge/ca.pem",
    )
    assert rtmp.retries is None  # -1: retry forever


def test_rtmp_env_overrides() -> None:
    env = {
        "SIPBRIDGE_RTMP_AUDIO": "copy",
        "SIPBRIDGE_RTMP_MAX_RETRIES": "3",
        "SIPBRIDGE_RTMP_TLS_VERIFY": "true",
        "SIPBRIDGE_RTMP_TLS_CA_FILE": "/etc/ssl/certs/ca-certificates.crt",
    }
    rtmp = load_settings(env=env).rtmp
    assert (rtmp.audio, rtmp.max_retries) == ("copy", 3)
    assert (rtmp.tls_verify, rtmp.tls_ca_file) == (True, "/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.parametrize(
    ("rtmp", "message"),
    [
        ({"audio": "mp3"}, "rtmp.audio: expected one of 'aac', 'copy', got 'mp3'"),
        ({"audio_sample_rate": 44000}, "rtmp.audio_sample_rate: must be one of 8000, 16000, 22050"),
        ({"audio_bitrate": 1000}, "rtmp.audio_bitrate: expected int >= 8000"),
        ({"rw_timeout": 0.0}, "rtmp.rw_timeout: expected float > 0.0"),
        ({"send_buffer": -1}, "rtmp.send_buffer: expected int >= 0"),
        ({"connect_timeout": 0.0}, "rtmp.connect_timeout: expected float > 0.0"),
        ({"connect_timeout": 301.0}, "rtmp.connect_timeout: expected float <= 300.0"),
        ({"tls_verify": "yes"}, "rtmp.tls_verify: expected bool, got str"),
        ({"max_retries": -2}, "rtmp.max_retries: expected int >= -1"),
        ({"retry_initial": 5.0, "retry_max": 2.0}, "rtmp.retry_max: must be >= retry_initial"),
        ({"still_video": "yes"}, "rtmp.still_video: expected bool, got str"),
        ({"bitrate": 1}, 'unknown key "rtmp.bitrate"'),
    ],
)
def test_rtmp_errors_name_the_key(rtmp: dict[str, Any], message: str) -> None:
    assert message in str(_error({"rtmp": rtmp}))


def test_rtmp_rules_apply_to_hand_built_structs() -> None:
    with pytest.raises(SettingsError, match="retry_max: must be >= retry_initial"):
        RtmpSettings(retry_initial=10.0, retry_max=1.0)
    with pytest.raises(SettingsError, match="audio_sample_rate"):
        RtmpSettings(audio_sample_rate=8001)
