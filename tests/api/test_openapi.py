"""``GET /rest-api/openapi.json``: a valid OpenAPI 3.1 document of exactly the app's routes.

The document is checked against the OpenAPI 3.1 schema (the copy schemathesis
ships), every component against the JSON Schema 2020-12 meta-schema, and route by
route against the Starlette app it was built from, with every module mounted and
with none of the optional ones.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import msgspec
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.calls import CallRoutes
from sipbridge.api.endpoint import PostRoutes
from sipbridge.api.openapi import FIELD_SCHEMAS, OPENAPI_VERSION, build_openapi
from sipbridge.api.pushes import PushRoutes
from sipbridge.api.recordings import RecordingRoutes
from sipbridge.api.streams import StreamRoutes
from sipbridge.callinfo import CallStatus
from sipbridge.metrics import GatewayMetrics
from sipbridge.registry import StreamRegistry
from tests.api.fakes import FakeGateway, FakePushes, FakeStreams
from tests.api.test_recordings import FakeRecordings
from tests.api.test_whep import FakeViewers
from tests.test_metrics import FakeSource

DOC = "/rest-api/openapi.json"
TOKEN = "t0ken-for-openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def full_app(api_token: str | None = None) -> Starlette:
    return create_app(
        FakeGateway(),
        api_token=api_token,
        streams=FakeStreams(),
        pushes=FakePushes(),
        viewers=FakeViewers(),
        recordings=FakeRecordings(),
        metrics=GatewayMetrics(FakeSource(StreamRegistry()), process=False),
    )


def fetch(app: Starlette) -> dict[str, Any]:
    response = TestClient(app).get(DOC)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def app_operations(app: Starlette) -> set[tuple[str, str]]:
    """``(path, method)`` of every route the app serves (HEAD, added to GET, left out)."""

    def walk(routes: Any, prefix: str = "") -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for route in routes:
            if isinstance(route, Mount):
                found |= walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                methods = (route.methods or {"GET"}) - {"HEAD"}
                found |= {(prefix + route.path, method.lower()) for method in methods}
        return found

    return walk(app.routes)


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


@pytest.mark.parametrize("api_token", [None, TOKEN])
def test_the_document_is_valid_openapi_3_1(api_token: str | None) -> None:
    document = fetch(full_app(api_token))
    assert document["openapi"] == OPENAPI_VERSION
    errors = [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert errors == []
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))


def test_every_route_is_documented_and_nothing_else() -> None:
    app = full_app()
    document = fetch(app)
    served = app_operations(app)
    documented = document_operations(document)
    # Every documented operation is served...
    assert documented <= served
    # ...and every served path is documented; the methods left out are those the WHEP
    # handlers answer 405 themselves (their routes take every method).
    assert {path for path, _ in served} == set(document["paths"])
    undocumented = {(path, method) for path, method in served - documented}
    assert all(path.startswith("/whep/") for path, _ in undocumented), undocumented
    assert ("/whep/{stream_name}", "post") in documented
    assert ("/whep/{stream_name}/{session_id}", "delete") in documented
    assert not [op for _, _, op in operations(document) if op.get("x-undocumented")]


def test_routes_not_mounted_are_not_in_the_document() -> None:
    app = create_app(FakeGateway(), pages=False)
    document = fetch(app)
    assert set(document["paths"]) == {path for path, _ in app_operations(app)}
    assert "/rest-api/call/startup" in document["paths"]
    assert not [path for path in document["paths"] if path.startswith(("/rest-api/stream", "/w"))]


def test_post_operations_carry_their_body_and_answer_schemas() -> None:
    document = fetch(full_app())
    schemas = document["components"]["schemas"]
    startup = document["paths"]["/rest-api/call/startup"]["post"]
    body = startup["requestBody"]
    assert body["required"] is True  # callee
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StartCallBody"
    }
    assert schemas["StartCallBody"]["required"] == ["callee"]
    assert schemas["StartCallBody"]["additionalProperties"] is False
    assert "sipPassword" in schemas["StartCallBody"]["properties"]
    assert "sipPassword" not in schemas["CallInfo"]["properties"]
    # The handler's docstring, reST turned into Markdown.
    assert startup["summary"] == (
        "`/call/startup`: start an outbound call; answers at once (NEW/PENDING)."
    )
    answer = startup["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/CallInfo"}
    assert set(startup["responses"]) == {"200", "400", "404", "409", "413", "500", "501"}
    found = document["paths"]["/rest-api/stream/find"]["post"]
    assert found["requestBody"]["required"] is False  # an empty body reads as {}
    assert found["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/StreamInfo"},
    }
    assert "507" in document["paths"]["/rest-api/recorder/startup"]["post"]["responses"]
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }, (path, method, status)
        assert operation["summary"], (path, method)
        assert "``" not in operation["summary"], (path, method)
    assert schemas["ErrorBody"]["required"] == ["status", "error"]


def test_whep_events_and_pages_are_described() -> None:
    document = fetch(full_app())
    create = document["paths"]["/whep/{stream_name}"]["post"]
    assert list(create["requestBody"]["content"]) == ["application/sdp"]
    assert create["responses"]["201"]["headers"]["Location"]["required"] is True
    assert "415" in create["responses"]
    events = document["paths"]["/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert events["parameters"][0]["name"] == "interval"
    assert document["paths"]["/rest-api/health"]["get"]["responses"]["200"]
    assert "text/html" in document["paths"]["/"]["get"]["responses"]["200"]["content"]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text", "application/openmetrics-text; version=1.0.0"),
    ],
)
def test_metrics_is_described_as_served(accept: str | None, media_type: str) -> None:
    """``GET /metrics`` answers one of the documented media types, in Prometheus' format."""
    app = full_app()
    operation = fetch(app)["paths"]["/metrics"]["get"]
    assert operation["operationId"] == "metrics"
    documented = operation["responses"]["200"]["content"]
    assert set(documented) == {"text/plain", "application/openmetrics-text"}
    assert "version=0.0.4" in operation["description"]
    headers = {"Accept": accept} if accept else {}
    answer = TestClient(app).get("/metrics", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media_type)
    assert answer.headers["content-type"].split(";")[0] in documented
    assert "# TYPE sipbridge_calls gauge" in answer.text


def test_served_without_the_token_and_declares_it() -> None:
    app = full_app(TOKEN)
    client = TestClient(app)
    assert client.get(DOC).status_code == 200
    assert client.post("/rest-api/call/find_all", json={}).status_code == 401
    document = fetch(app)
    assert document["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The `[http] api_token` of the settings (RFC 6750 §2.1)",
        },
        "cookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": "sipbridge_token",
            "description": "The session cookie of `POST /login` (the pages use it)",
        },
    }
    open_ops = {("/rest-api/health", "get"), (DOC, "get"), ("/login", "get"), ("/logout", "post")}
    assert client.get("/metrics").status_code == 401  # protected, so documented so
    assert client.get("/").status_code == 401  # the pages too
    assert client.get("/web/api.js").status_code == 401
    for path, method, operation in operations(document):
        if (path, method) == ("/login", "post"):
            assert "security" not in operation  # its 401/403 are the form's own
        elif (path, method) in open_ops or method == "options":
            assert "security" not in operation, (path, method)
            assert "401" not in operation["responses"]
        else:
            assert operation["security"] == [{"bearer": []}, {"cookie": []}], (path, method)
            assert {"401", "403"} <= set(operation["responses"]), (path, method)


def test_the_events_feed_matches_its_schema() -> None:
    """The first ``event: state`` of ``/events`` against the document's event schema,
    ``data`` included (``contentSchema`` is an annotation schemathesis does not check)."""
    gateway = FakeGateway()
    gateway.add_call("c1", CallStatus.ESTABLISHED, streamName="stream1")
    streams = FakeStreams()
    streams.add_stream("stream1", call_id="c1")
    app = create_app(gateway, streams=streams, pushes=FakePushes(), recordings=FakeRecordings())
    document = fetch(app)
    events = document["paths"]["/events"]["get"]["responses"]["200"]["content"]
    schemas = events["text/event-stream"]["schema"]["oneOf"]
    (state,) = [s for s in schemas if s["properties"]["event"]["const"] == "state"]
    with TestClient(app).stream("GET", "/events") as response:
        fields = _first_event(response.iter_lines())
    assert fields["event"] == "state"
    root = {"components": document["components"]}
    assert jsonschema_rs.is_valid({**state, **root}, fields)
    data = msgspec.json.decode(fields["data"])
    data_schema = state["properties"]["data"]["contentSchema"]
    errors = [
        str(e) for e in jsonschema_rs.validator_for({**data_schema, **root}).iter_errors(data)
    ]
    assert errors == []
    assert data["calls"][0]["callId"] == "c1"
    assert data["streams"][0]["name"] == "stream1"


def _first_event(lines: Any) -> dict[str, str]:
    """The fields of the first event (up to its blank line) that has ``event:``."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "event" in fields:
                return fields
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    raise AssertionError("the feed ended before an event")


def test_without_a_token_no_security_is_declared() -> None:
    document = fetch(full_app())
    assert "securitySchemes" not in document["components"]
    assert not [op for _, _, op in operations(document) if "security" in op]


def test_the_document_is_built_once() -> None:
    app = full_app()
    client = TestClient(app)
    first = client.get(DOC).content
    assert client.get(DOC).content == first
    assert app.state.openapi_document == first
    assert msgspec.json.decode(first) == build_openapi(app)


@pytest.mark.parametrize(
    "routes",
    [
        CallRoutes(FakeGateway()),
        StreamRoutes(FakeStreams()),
        PushRoutes(FakePushes()),
        RecordingRoutes(FakeRecordings()),
    ],
    ids=lambda routes: type(routes).__name__,
)
def test_each_route_module_declares_every_handler(routes: PostRoutes) -> None:
    assert set(routes.schemas) == set(routes.handlers())
    for body, _answer in routes.schemas.values():
        assert issubclass(body, msgspec.Struct)
        assert body.__struct_config__.forbid_unknown_fields


def test_field_schemas_name_real_fields() -> None:
    for struct, field in FIELD_SCHEMAS:
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        assert field in {f.encode_name for f in info.fields}, (struct.__name__, field)


def _enum_values(struct_name: str, field: str) -> list[str]:
    (schema,) = [
        s for (t, f), s in FIELD_SCHEMAS.items() if (t.__name__, f) == (struct_name, field)
    ]
    return [value for option in schema["anyOf"] for value in option.get("enum", [])]


@pytest.mark.parametrize(
    ("path", "body", "struct", "field"),
    [
        ("/rest-api/call/startup", {"callee": "bob"}, "StartCallBody", "hasAudio"),
        ("/rest-api/call/startup", {"callee": "bob"}, "StartCallBody", "sipRegisterRequired"),
        ("/rest-api/call/startup", {"callee": "bob"}, "StartCallBody", "sipTransport"),
        ("/rest-api/call/find", {}, "FindCallsBody", "status"),
        ("/rest-api/stream/find", {}, "FindStreamsBody", "status"),
        ("/rest-api/call/send_dtmf", {"callId": "c1", "dtmf": "1"}, "SendDtmfBody", "type"),
        (
            "/rest-api/push/startup",
            {"streamName": "stream1", "rtmpUrl": "rtmp://127.0.0.1/live"},
            "StartPushBody",
            "rtmpTransponderFullUrl",
        ),
    ],
)
def test_every_documented_value_is_accepted(
    path: str, body: dict[str, Any], struct: str, field: str
) -> None:
    """What FIELD_SCHEMAS names as valid, the handlers take (never a 400 on that field)."""
    values = _enum_values(struct, field)
    assert values
    for value in values:
        gateway = FakeGateway()
        gateway.add_call("c1", CallStatus.ESTABLISHED)
        app = create_app(gateway, streams=StreamRegistry(), pushes=FakePushes(), pages=False)
        response = TestClient(app).post(path, json={**body, field: value})
        assert response.status_code in (200, 404, 501), (field, value, response.text)
