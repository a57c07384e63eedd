"""Property tests: no client input makes a /call/* endpoint answer 500."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sipbridge.api.app import create_app
from tests.api.fakes import FakeGateway

START_FIELDS = [
    "callId",
    "callee",
    "toStream",
    "rtmpUrl",
    "rtmpStream",
    "hasAudio",
    "hasVideo",
    "sipLogin",
    "sipAuthenticationName",
    "sipPassword",
    "sipDomain",
    "sipOutboundProxy",
    "sipPort",
    "sipRegisterRequired",
    "appKey",
    "visibleName",
    "sipVisibleName",
    "sipTransport",
    "custom",
    "mediaSessionId",
    "dtmf",
    "type",
    "status",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "true", "FALSE", "1", "0", "5060", "70000", "tcp", "INFO", "RING"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.sampled_from(START_FIELDS) | st.text(max_size=12), json_values, max_size=12
)

STARTUP_ONLY = [f for f in START_FIELDS if f not in ("callee", "dtmf", "type", "status")]
# Bodies with only known fields: a refusal must then name one of the body's own fields.
known_field_bodies = st.fixed_dictionaries(
    {"callee": st.text(min_size=1, max_size=20)},
    optional={field: json_values for field in STARTUP_ONLY},
)

CLIENT = TestClient(create_app(FakeGateway()))
PATHS = [
    "/rest-api/call/startup",
    "/rest-api/call/terminate",
    "/rest-api/call/find",
    "/rest-api/call/find_all",
    "/rest-api/call/hold",
    "/rest-api/call/unhold",
    "/rest-api/call/send_dtmf",
]
EXPECTED_STATUSES = {200, 400, 404, 409, 501}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_objects)
def test_startup_never_500(body: dict[str, Any]) -> None:
    response = CLIENT.post("/rest-api/call/startup", json=body)
    assert response.status_code in EXPECTED_STATUSES
    answer = response.json()
    if response.status_code == 200:
        assert answer["callee"] == body["callee"]
    else:
        assert answer["status"] == response.status_code
        assert isinstance(answer["error"], str)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_objects)
def test_every_call_endpoint_never_500(path: str, body: dict[str, Any]) -> None:
    response = CLIENT.post(path, json=body)
    assert response.status_code in EXPECTED_STATUSES
    assert isinstance(response.json(), dict | list)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), st.binary(max_size=300))
def test_arbitrary_bytes_never_500(path: str, content: bytes) -> None:
    response = CLIENT.post(path, content=content)
    assert response.status_code in EXPECTED_STATUSES
    assert response.json()["status"] == response.status_code or response.status_code == 200


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(known_field_bodies)
def test_startup_refusals_name_a_field_of_the_body(body: dict[str, Any]) -> None:
    response = CLIENT.post("/rest-api/call/startup", json=body)
    answer = response.json()
    if response.status_code == 200:
        assert answer["callee"] == body["callee"]
        assert "sipPassword" not in answer
    elif response.status_code == 400:
        assert answer["field"] in body
        assert answer["error"].startswith(answer["field"] + ": ")
    else:  # a reused callId or stream name in the shared fake
        assert response.status_code == 409
