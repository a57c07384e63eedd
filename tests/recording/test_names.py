"""File templates: parsing, safe values, and paths that never leave the output directory."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.recording.names import (
    ELEMENTS,
    PARTIAL,
    PathEscape,
    TemplateError,
    parse_template,
    resolve_inside,
    safe_value,
)

VALUES = {
    "streamName": "call1",
    "startTime": "1700000000000",
    "endTime": "1700000010000",
    "mediaSessionId": "3f0c6a4e-0000-4000-8000-000000000001",
    "audioCodec": "PCMU",
    "videoCodec": "H264",
}


def test_every_wcs_element_renders() -> None:
    template = parse_template("{streamName}_{startTime}_{endTime}_{mediaSessionId}_"
                              "{audioCodec}_{videoCodec}")  # fmt: skip
    assert template.elements == ELEMENTS
    assert template.has_end_time
    path = template.render(VALUES, extension=".mkv")
    assert path == PurePosixPath(
        "call1_1700000000000_1700000010000_3f0c6a4e-0000-4000-8000-000000000001_PCMU_H264.mkv"
    )


def test_extension_is_added_once_and_subdirectories_kept() -> None:
    template = parse_template("{streamName}/{startTime}.mkv")
    assert template.render(VALUES, extension=".mkv") == PurePosixPath("call1/1700000000000.mkv")
    assert template.render(VALUES, extension=".mp4") == PurePosixPath("call1/1700000000000.mkv.mp4")
    assert not template.has_end_time


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("/etc/{streamName}", "relative"),
        ("../{streamName}", "'..' path component"),
        ("a/../../{streamName}", "'..' path component"),
        ("a//{streamName}", "empty, '.' or '..'"),
        ("{streamName}/", "empty, '.' or '..'"),
        ("./{streamName}", "'.'"),
        ("{login}", "unknown template element {login}"),
        ("{streamName!r}", "takes no format"),
        ("{startTime:>20}", "takes no format"),
        ("{streamName", "unbalanced braces"),
        ("a}b", "unbalanced braces"),
        ("a\\b", "backslash"),
        ("a\nb", "control character"),
        ("x" * 201, "longer than 200"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError, match=None) as caught:
        parse_template(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("call1", "call1"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("..", "_"),
        (".", "_"),
        ("", ""),
        ("a b\tc/d\\e", "a_b_c_d_e"),
        ("ünïcode", "_n_code"),
        ("x" * 100, "x" * 64),
    ],
)
def test_safe_value(value: str, safe: str) -> None:
    assert safe_value(value) == safe


def test_empty_value_keeps_the_path_shape() -> None:
    template = parse_template("{audioCodec}/{streamName}")
    assert template.render({"streamName": "s"}, extension=".mkv") == PurePosixPath("_/s.mkv")


def test_partial_name_while_writing() -> None:
    template = parse_template("{streamName}-{endTime}")
    path = template.render({**VALUES, "endTime": PARTIAL}, extension=".mkv")
    assert path.name == "call1-partial.mkv"


@given(
    st.text(max_size=300),
    st.sampled_from(["{streamName}", "a/{streamName}/b", "{streamName}{mediaSessionId}"]),
)
def test_any_stream_name_stays_inside(tmp_path_factory: pytest.TempPathFactory, name: str,
                                      text: str) -> None:  # fmt: skip
    base = tmp_path_factory.getbasetemp() / "inside"
    base.mkdir(exist_ok=True)
    path = parse_template(text).render({"streamName": name, "mediaSessionId": name},
                                       extension=".mkv")  # fmt: skip
    resolved = resolve_inside(base, path)
    assert resolved.is_relative_to(base.resolve())
    assert all(len(part.encode()) <= 255 for part in path.parts)


def test_a_link_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "call1")
    with pytest.raises(PathEscape, match="outside the output directory"):
        resolve_inside(out, PurePosixPath("call1/x.mkv"))
    with pytest.raises(PathEscape, match="escapes"):
        resolve_inside(out, PurePosixPath("../x.mkv"))
    assert resolve_inside(out, PurePosixPath("call2/x.mkv")) == out.resolve() / "call2/x.mkv"
