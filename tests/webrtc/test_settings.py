"""[webrtc] settings -> WebRtcConfig; webrtc/ice.py address override."""

from __future__ import annotations

import aioice.ice
import pytest

from sipbridge.settings import Settings, SettingsError, load_settings, settings_from_dict
from webrtc.config import WebRtcConfig, parse_stun_server
from webrtc.ice import host_addresses


def test_defaults_match_the_config_defaults() -> None:
    assert Settings().webrtc.to_config() == WebRtcConfig()


def test_file_values_become_the_config(tmp_path: object) -> None:
    settings = settings_from_dict(
        {
            "webrtc": {
                "ice_addresses": ["127.0.0.1", "::1"],
                "stun_server": "stun.example.org:3478",
                "max_viewers": 10,
                "max_viewers_per_stream": 5,
                "viewer_queue_frames": 100,
                "connect_timeout": 3.5,
                "media_wait": 0.0,
            }
        }
    )
    assert settings.webrtc.to_config() == WebRtcConfig(
        ice_addresses=("127.0.0.1", "::1"),
        stun_server="stun.example.org:3478",
        max_viewers=10,
        max_viewers_per_stream=5,
        viewer_queue_frames=100,
        connect_timeout=3.5,
        media_wait=0.0,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"ice_addresses": ["eth0"]},
            "webrtc.ice_addresses: 'eth0' is not an IPv4 or IPv6 address",
        ),
        ({"stun_server": "stun.example.org"}, "webrtc.stun_server: expected host:port"),
        ({"stun_server": "h:70000"}, "webrtc.stun_server: port must be 1..65535, got 70000"),
        ({"max_viewers": 0}, "webrtc.max_viewers: expected int >= 1, got 0"),
        ({"connect_timeout": 0.0}, "webrtc.connect_timeout: expected float > 0.0"),
        ({"ice": []}, 'unknown key "webrtc.ice"'),
    ],
)
def test_bad_values_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"webrtc": section})
    assert message in str(err.value)


def test_empty_stun_server_means_none_and_env_overrides() -> None:
    assert settings_from_dict({"webrtc": {"stun_server": ""}}).webrtc.stun_server is None
    env = {"SIPBRIDGE_WEBRTC_MAX_VIEWERS": "7", "SIPBRIDGE_WEBRTC_STUN_SERVER": "1.2.3.4:19302"}
    webrtc = load_settings(env=env).webrtc
    assert (webrtc.max_viewers, webrtc.stun_server) == (7, "1.2.3.4:19302")


def test_parse_stun_server() -> None:
    assert parse_stun_server("[2001:db8::1]:3478") == ("2001:db8::1", 3478)
    assert parse_stun_server("stun.l.google.com:19302") == ("stun.l.google.com", 19302)
    with pytest.raises(ValueError, match="expected host:port"):
        parse_stun_server(":3478")


def test_host_addresses_override_is_scoped() -> None:
    default = aioice.ice.get_host_addresses(True, False)
    with host_addresses(("127.0.0.1",)):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        with host_addresses(()):
            assert aioice.ice.get_host_addresses(True, False) == default
    assert aioice.ice.get_host_addresses(True, False) == default
    assert "127.0.0.1" not in default  # what the override is for
