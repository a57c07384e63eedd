"""``rotation`` of a start request and the ``[record]`` settings section."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from sipbridge.recording.config import Rotation, parse_rotation
from sipbridge.settings import RecordSettings, SettingsError, load_settings, settings_from_dict


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Rotation()),
        (False, Rotation()),
        (0, Rotation()),
        ("", Rotation()),
        ("off", Rotation()),
        ("disabled", Rotation()),
        (600, Rotation(seconds=600.0)),
        (1.5, Rotation(seconds=1.5)),
        ("20", Rotation(seconds=20.0)),
        (" 90.5 ", Rotation(seconds=90.5)),
        ("20M", Rotation(bytes=20 * 1024**2)),
        ("20m", Rotation(bytes=20 * 1024**2)),
        ("512K", Rotation(bytes=512 * 1024)),
        ("1G", Rotation(bytes=1024**3)),
        ("1.5MB", Rotation(bytes=int(1.5 * 1024**2))),
    ],
)
def test_rotation_forms(value: object, expected: Rotation) -> None:
    assert parse_rotation(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "got true"),
        (-5, "positive"),
        (0.5, "at least 1 s"),
        ("abc", "expected seconds (e.g. 600) or a size (e.g. '20M')"),
        ("10K", "at least 64K"),
        ([1], "expected a number or a string, got list"),
        (float("nan"), "positive"),
    ],
)
def test_bad_rotation(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rotation(value)
    assert fragment in str(caught.value)


def test_record_settings_defaults() -> None:
    settings = settings_from_dict({}).record
    assert settings == RecordSettings()
    assert settings.auto is False
    assert settings.format == "mkv"
    assert settings.audio == "copy"
    assert settings.file_template == "{streamName}-{startTime}-{endTime}"
    assert settings.on_finish_command == []
    assert settings.on_finish_url is None


def test_record_settings_from_toml_shape() -> None:
    record = settings_from_dict(
        {
            "record": {
                "auto": True,
                "directory": "/var/lib/sipbridge/rec",
                "file_template": "{streamName}/{startTime}",
                "format": "mp4",
                "rotate_duration": 600,
                "rotate_size": 100 * 1024**2,
                "on_finish_command": ["/usr/local/bin/upload", "{path}"],
                "on_finish_url": "",
            }
        }
    ).record
    assert record.auto and record.format == "mp4"
    assert record.rotate_duration == 600.0
    assert record.on_finish_url is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"file_template": "../{streamName}"}, "record.file_template: the file template has"),
        ({"file_template": "{nope}"}, "record.file_template: unknown template element {nope}"),
        ({"directory": " "}, "record.directory: must not be empty"),
        ({"format": "avi"}, "record.format: expected one of 'mkv', 'mp4', got 'avi'"),
        ({"aac_sample_rate": 11025}, "record.aac_sample_rate: must be one of"),
        ({"rotate_duration": 0.5}, "record.rotate_duration: must be 0 or >= 1, got 0.5"),
        ({"rotate_size": 100}, "record.rotate_size: must be 0 or >= 65536, got 100"),
        ({"on_finish_command": [""]}, "record.on_finish_command: the program (first item)"),
        ({"on_finish_url": "ftp://x"}, "record.on_finish_url: must be an http:// or https://"),
        ({"fragment_duration": 0.0}, "record.fragment_duration"),
        ({"auto": "yes"}, "record.auto: expected bool, got str"),
    ],
)
def test_record_settings_errors_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_dict({"record": section})
    assert message in str(caught.value)


REPO = Path(__file__).resolve().parents[2]


def test_repo_settings_toml_and_docs_cover_record() -> None:
    assert load_settings(REPO / "settings.toml", env={}).record == RecordSettings()
    toml = (REPO / "settings.toml").read_text()
    docs = (REPO / "docs" / "settings.md").read_text()
    for field in msgspec.structs.fields(RecordSettings):
        assert f"{field.name} = " in toml, field.name
        assert f"`{field.name}`" in docs, field.name
        if field.name != "on_finish_command":  # a list: not settable from the environment
            assert f"SIPBRIDGE_RECORD_{field.name.upper()}" in docs, field.name


def test_env_overrides_reach_record() -> None:
    env = {"SIPBRIDGE_RECORD_AUTO": "true", "SIPBRIDGE_RECORD_ROTATE_DURATION": "60"}
    record = load_settings(None, env=env).record
    assert record.auto is True
    assert record.rotate_duration == 60.0
