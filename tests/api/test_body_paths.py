"""decode_body names fields inside nested objects and arrays by their path.

msgspec reports ``Object contains unknown field `template` - at `$.config``;
the 400 must say ``config.template: unknown field`` with ``field`` set to
``config.template``, not a mangled name with the path glued on.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.api.bodies import decode_body
from sipbridge.errors import InvalidRequest


class Inner(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    file_template: str | None = None
    rotation: int | None = None


class NeedsName(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    stream_name: str


class Outer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    name: str | None = None
    config: Inner | None = None
    items: list[NeedsName] = msgspec.field(default_factory=list)
    by_key: dict[str, Inner] = msgspec.field(default_factory=dict)


DECODER = msgspec.json.Decoder(Outer)


def error_of(data: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode_body(DECODER, data)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (b'{"config": {"template": "x"}}', "config.template", "config.template: unknown field"),
        (
            b'{"config": {"fileTemplate": 5}}',
            "config.fileTemplate",
            "config.fileTemplate: expected `str | null`, got `int`",
        ),
        (b'{"config": "x"}', "config", "config: expected `object | null`, got `str`"),
        (b'{"items": [{"streamName": "a"}, {"x": 1}]}', "items[1].x", "items[1].x: unknown field"),
        (
            b'{"items": [{}]}',
            "items[0].streamName",
            "items[0].streamName: required field is missing",
        ),
        (b'{"byKey": {"k": {"y": 1}}}', "byKey[...].y", "byKey[...].y: unknown field"),
        # The top level keeps its plain names.
        (b'{"nmae": "a"}', "nmae", "nmae: unknown field"),
        (b'{"name": 1}', "name", "name: expected `str | null`, got `int`"),
        (b"[]", None, "request body: expected `object`, got `array`"),
    ],
)
def test_nested_fields_are_named_by_path(data: bytes, field: str | None, message: str) -> None:
    error = error_of(data)
    assert error.field == field
    assert error.message == message


def test_a_field_name_that_looks_like_a_path_is_not_taken_for_one() -> None:
    # A client's top-level field named "a - at `$.config`" is an unknown field of the body.
    error = error_of(b'{"a - at `$.config": 1}')
    assert error.field == "a - at `$.config"
    assert error.message == "a - at `$.config: unknown field"
    # The same name inside config: the path is the real one, the name kept whole.
    nested = error_of(b'{"config": {"b - at `$.name": 1}}')
    assert nested.field == "config.b - at `$.name"


def test_long_nested_unknown_names_are_clipped() -> None:
    error = error_of(msgspec.json.encode({"config": {"k" * 500: 1}}))
    assert error.field == "config." + "k" * 40 + "..."
    assert len(error.message) < 100


@given(st.text(min_size=1, max_size=30).filter(lambda n: n not in Inner.__struct_encode_fields__))
def test_any_unknown_nested_name_is_reported_under_config(name: str) -> None:
    error = error_of(msgspec.json.encode({"config": {name: 1}}))
    assert error.field is not None and error.field.startswith("config.")
    shown = name if len(name) <= 40 else name[:40] + "..."
    assert error.field == f"config.{shown}"
    assert error.message == f"config.{shown}: unknown field"
