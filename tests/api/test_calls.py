"""``/rest-api/call/*`` against the fake gateway: success paths and every error path."""

from __future__ import annotations

import uuid

import pytest
from starlette.testclient import TestClient

from sipbridge.callinfo import CallStatus
from sipbridge.errors import Conflict, GatewayError, InvalidRequest, NotSupported
from tests.api.conftest import SECRET, SEED_BODY
from tests.api.fakes import FakeGateway

STARTUP = "/rest-api/call/startup"


def startup(client: TestClient, **changes: object) -> tuple[int, object]:
    body = {**SEED_BODY, **changes}
    response = client.post(STARTUP, json={k: v for k, v in body.items() if v is not ...})
    return response.status_code, response.json()


def assert_error(response_json: object, status: int, field: str | None, *fragments: str) -> None:
    assert isinstance(response_json, dict)
    assert response_json["status"] == status
    assert response_json.get("field") == field
    for fragment in fragments:
        assert fragment in response_json["error"]


# ---- /call/startup ------------------------------------------------------------------------


def test_seed_body_starts_a_call(client: TestClient, gateway: FakeGateway) -> None:
    response = client.post(STARTUP, json=SEED_BODY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "callId": "c1",
        "callee": "bob",
        "caller": "alice",
        "status": "PENDING",
        "sipStatus": None,
        "info": None,
        "streamName": "stream1",
        "rtmpUrl": None,
        "rtmpStream": None,
        "hasAudio": True,
        "hasVideo": True,
        "appKey": "defaultApp",
        "visibleName": None,
        "incoming": False,
    }
    [request] = gateway.requests
    assert request.call_id == "c1"
    assert request.callee == "bob"
    assert request.to_stream == "stream1"
    assert request.has_audio is True
    assert request.has_video is True
    assert request.sip_login == "alice"
    assert request.sip_authentication_name == "alice"
    assert request.sip_password == SECRET
    assert request.sip_port == 5060
    assert request.sip_domain == "127.0.0.1"
    assert request.sip_outbound_proxy == "127.0.0.1"
    assert request.app_key == "defaultApp"
    assert request.sip_register_required is True
    assert request.rtmp_url is None
    assert request.sip_transport is None


def test_text_plain_content_type_is_read_as_json(client: TestClient, gateway: FakeGateway) -> None:
    import json

    response = client.post(
        STARTUP, content=json.dumps(SEED_BODY), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200
    assert gateway.requests[0].sip_port == 5060


def test_native_json_types_are_accepted(client: TestClient, gateway: FakeGateway) -> None:
    status, _ = startup(
        client, hasAudio=False, hasVideo=True, sipPort=5070, sipRegisterRequired=False
    )
    assert status == 200
    request = gateway.requests[0]
    assert (request.has_audio, request.has_video, request.sip_port) == (False, True, 5070)
    assert request.sip_register_required is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("FaLsE", False),
        ("0", False),
        (True, True),
        (False, False),
    ],
)
def test_flag_forms(client: TestClient, gateway: FakeGateway, raw: object, expected: bool) -> None:
    status, _ = startup(client, hasVideo=raw, sipRegisterRequired=raw)
    assert status == 200
    assert gateway.requests[0].has_video is expected
    assert gateway.requests[0].sip_register_required is expected


def test_empty_strings_are_absent(client: TestClient, gateway: FakeGateway) -> None:
    status, body = startup(
        client,
        toStream="",
        rtmpUrl="",
        rtmpStream="",
        hasAudio="",
        hasVideo="",
        sipLogin="",
        sipAuthenticationName="",
        sipPassword="",
        sipDomain="",
        sipOutboundProxy="",
        sipPort="",
        sipRegisterRequired="",
        appKey="",
        visibleName="",
        sipTransport="",
    )
    assert status == 200
    request = gateway.requests[0]
    assert request.to_stream is None
    assert request.rtmp_url is None
    assert request.rtmp_stream is None
    assert request.has_audio is True  # CallRequest defaults
    assert request.has_video is True
    assert request.sip_register_required is False
    assert request.sip_login == ""
    assert request.sip_authentication_name is None
    assert request.sip_password == ""
    assert request.sip_outbound_proxy is None
    assert request.sip_port is None
    assert request.app_key is None
    assert request.visible_name is None
    assert request.sip_transport is None
    assert isinstance(body, dict)
    assert body["streamName"] is None


def test_null_optional_fields_are_absent(client: TestClient, gateway: FakeGateway) -> None:
    status, _ = startup(client, toStream=None, hasVideo=None, sipPort=None, rtmpUrl=None)
    assert status == 200
    request = gateway.requests[0]
    assert (request.to_stream, request.has_video, request.sip_port) == (None, True, None)


def test_missing_call_id_gets_a_uuid4(client: TestClient, gateway: FakeGateway) -> None:
    status, body = startup(client, callId=...)
    assert status == 200
    call_id = gateway.requests[0].call_id
    assert uuid.UUID(call_id).version == 4
    assert isinstance(body, dict)
    assert body["callId"] == call_id


def test_empty_call_id_gets_a_uuid4(client: TestClient, gateway: FakeGateway) -> None:
    status, _ = startup(client, callId="")
    assert status == 200
    assert uuid.UUID(gateway.requests[0].call_id).version == 4


def test_wcs_extra_fields_are_accepted(client: TestClient, gateway: FakeGateway) -> None:
    status, body = startup(
        client,
        sipVisibleName="Alice A.",
        sipTransport="tcp",
        custom={"any": ["json", 1, None]},
        mediaSessionId="7b1c",
        rtmpUrl="rtmp://127.0.0.1:1935/live",
        rtmpStream="out1",
    )
    assert status == 200
    request = gateway.requests[0]
    assert request.sip_transport == "TCP"
    assert request.visible_name == "Alice A."  # sipVisibleName stands in for visibleName
    assert request.rtmp_url == "rtmp://127.0.0.1:1935/live"
    assert request.rtmp_stream == "out1"
    assert isinstance(body, dict)
    assert body["rtmpUrl"] == "rtmp://127.0.0.1:1935/live"


def test_visible_name_wins_over_sip_visible_name(client: TestClient, gateway: FakeGateway) -> None:
    status, _ = startup(client, visibleName="Alice", sipVisibleName="Other", sipTransport="UDP")
    assert status == 200
    assert gateway.requests[0].visible_name == "Alice"
    assert gateway.requests[0].sip_transport == "UDP"


@pytest.mark.parametrize("raw", ["yes", "2", "on", 1, 0, 2, 1.5, [], {}, "truee"])
@pytest.mark.parametrize("field", ["hasAudio", "hasVideo", "sipRegisterRequired"])
def test_bad_flag_is_400_naming_the_field(client: TestClient, field: str, raw: object) -> None:
    status, body = startup(client, **{field: raw})
    assert status == 400
    assert_error(body, 400, field, f"{field}: expected a boolean")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("abc", "'abc'"),
        ("0", "'0'"),
        ("65536", "'65536'"),
        ("-1", "'-1'"),
        ("5060.0", "'5060.0'"),
        (
            "\uff11\uff12\uff13",
            "'\uff11\uff12\uff13'",
        ),  # fullwidth digits: isdecimal() but not ASCII
        ("999999999999", "'999999999999'"),
        (0, "0"),
        (70000, "70000"),
        (-5, "-5"),
        (5060.0, "5060.0"),
        (True, "true"),
        ([5060], "an array"),
        ({"port": 5060}, "an object"),
    ],
)
def test_bad_port_is_400_naming_the_field(client: TestClient, raw: object, shown: str) -> None:
    status, body = startup(client, sipPort=raw)
    assert status == 400
    assert_error(body, 400, "sipPort", f"sipPort: expected a port number 1-65535, got {shown}")


def test_port_message_is_exact(client: TestClient) -> None:
    _, body = startup(client, sipPort="abc")
    assert body == {
        "status": 400,
        "error": "sipPort: expected a port number 1-65535, got 'abc'",
        "field": "sipPort",
    }


def test_port_with_spaces_is_accepted(client: TestClient, gateway: FakeGateway) -> None:
    status, _ = startup(client, sipPort=" 5080 ")
    assert status == 200
    assert gateway.requests[0].sip_port == 5080


def test_bad_transport(client: TestClient) -> None:
    status, body = startup(client, sipTransport="SCTP")
    assert status == 400
    assert_error(body, 400, "sipTransport", "expected one of UDP, TCP", "'SCTP'")


def test_unknown_field_is_400_naming_it(client: TestClient, gateway: FakeGateway) -> None:
    status, body = startup(client, calee="bob")
    assert status == 400
    assert body == {"status": 400, "error": "calee: unknown field", "field": "calee"}
    assert gateway.requests == []


def test_missing_callee(client: TestClient) -> None:
    status, body = startup(client, callee=...)
    assert status == 400
    assert body == {"status": 400, "error": "callee: required field is missing", "field": "callee"}


@pytest.mark.parametrize("callee", ["", "   "])
def test_empty_callee(client: TestClient, callee: str) -> None:
    status, body = startup(client, callee=callee)
    assert status == 400
    assert_error(body, 400, "callee", "callee: must not be empty")


def test_wrong_type_names_the_field(client: TestClient) -> None:
    status, body = startup(client, callee=42)
    assert status == 400
    assert body == {"status": 400, "error": "callee: expected `str`, got `int`", "field": "callee"}


def test_too_long_field(client: TestClient) -> None:
    status, body = startup(client, callee="b" * 2000)
    assert status == 400
    assert_error(body, 400, "callee", "callee: expected `str` of length <= 1024")


@pytest.mark.parametrize("password", [12345678, True, ["x"], {"p": 1}, "x" * 5000])
def test_bad_password_is_never_echoed(client: TestClient, password: object) -> None:
    status, body = startup(client, sipPassword=password)
    assert status == 400
    assert_error(body, 400, "sipPassword", "sipPassword: expected `str")
    assert isinstance(body, dict)
    assert "12345678" not in body["error"]
    assert "xxxxx" not in body["error"]


def test_malformed_json(client: TestClient) -> None:
    response = client.post(STARTUP, content=b'{"callId": "c1", "callee": ')
    assert response.status_code == 400
    assert_error(response.json(), 400, None, "malformed JSON")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[1, 2]", "request body: expected `object`, got `array`"),
        (b'"hello"', "request body: expected `object`, got `str`"),
        (b'{"callee": "bob"} trailing', "malformed JSON: trailing characters"),
        (b'{"callee": "\xff"}', "malformed JSON: the body is not valid UTF-8"),
        (b'{"custom": ' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed JSON: nested too deeply"),
        (b"", "callee: required field is missing"),
        (b"  \n", "callee: required field is missing"),
    ],
)
def test_undecodable_bodies(client: TestClient, content: bytes, fragment: str) -> None:
    response = client.post(STARTUP, content=content)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400
    assert fragment in body["error"]


def test_utf8_bom_is_skipped(client: TestClient, gateway: FakeGateway) -> None:
    response = client.post(STARTUP, content=b'\xef\xbb\xbf{"callId": "c9", "callee": "bob"}')
    assert response.status_code == 200
    assert gateway.requests[0].call_id == "c9"


def test_reused_call_id_is_409(client: TestClient) -> None:
    assert startup(client)[0] == 200
    status, body = startup(client, toStream="stream2")
    assert status == 409
    assert body == {"status": 409, "error": "callId 'c1' is already in use", "field": "callId"}


def test_stream_name_in_use_is_409(client: TestClient) -> None:
    assert startup(client)[0] == 200
    status, body = startup(client, callId="c2")
    assert status == 409
    assert_error(body, 409, "toStream", "stream 'stream1' is already in use")


def test_gateway_invalid_request_is_400(client: TestClient, gateway: FakeGateway) -> None:
    gateway.fail_with = InvalidRequest("callee: not a SIP URI", field="callee")
    status, body = startup(client)
    assert status == 400
    assert body == {"status": 400, "error": "callee: not a SIP URI", "field": "callee"}


def test_gateway_message_with_the_password_is_masked(
    client: TestClient, gateway: FakeGateway
) -> None:
    gateway.fail_with = Conflict(f"registration as alice:{SECRET} clashes")
    status, body = startup(client)
    assert status == 409
    assert body == {"status": 409, "error": "registration as alice:*** clashes"}


def test_plain_gateway_error_keeps_its_status(client: TestClient, gateway: FakeGateway) -> None:
    gateway.fail_with = GatewayError("SIP stack not started")
    status, body = startup(client)
    assert (status, body) == (500, {"status": 500, "error": "SIP stack not started"})


def test_unexpected_exception_is_a_bare_500_and_logged(
    client: TestClient, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.fail_with = RuntimeError("boom at /srv/sipbridge/gateway.py line 12")
    response = client.post(STARTUP, json=SEED_BODY)
    assert response.status_code == 500
    assert response.json() == {"status": 500, "error": "internal error"}
    assert "boom" not in response.text
    assert "Traceback" in caplog.text
    assert "RuntimeError: boom" in caplog.text


def test_startup_logs_mask_the_password(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert startup(client)[0] == 200
    assert "sip_password=***" in caplog.text  # the request was logged, masked
    assert SECRET not in caplog.text


# ---- /call/terminate, /call/hold, /call/unhold --------------------------------------------


def test_terminate(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    response = client.post("/rest-api/call/terminate", json={"callId": "c1"})
    assert response.status_code == 200
    assert response.json()["status"] == "FINISH"
    assert response.json()["info"] == "Normal call clearing"
    assert gateway.calls["c1"].status is CallStatus.FINISH


def test_terminate_finished_call_answers_its_final_state(
    client: TestClient, gateway: FakeGateway
) -> None:
    gateway.add_call("c1", CallStatus.BUSY, sipStatus=486, info="Busy Here")
    response = client.post("/rest-api/call/terminate", json={"callId": "c1"})
    assert response.status_code == 200
    assert response.json()["status"] == "BUSY"
    assert response.json()["sipStatus"] == 486


@pytest.mark.parametrize("action", ["terminate", "hold", "unhold"])
def test_unknown_call_id_is_404(client: TestClient, action: str) -> None:
    response = client.post(f"/rest-api/call/{action}", json={"callId": "nope"})
    assert response.status_code == 404
    assert response.json() == {
        "status": 404,
        "error": "no call with callId 'nope'",
        "field": "callId",
    }


@pytest.mark.parametrize("action", ["terminate", "hold", "unhold"])
def test_call_id_required(client: TestClient, action: str) -> None:
    response = client.post(f"/rest-api/call/{action}", json={})
    assert response.status_code == 400
    assert_error(response.json(), 400, "callId", "callId: required field is missing")
    response = client.post(f"/rest-api/call/{action}", json={"callId": ""})
    assert response.status_code == 400
    assert_error(response.json(), 400, "callId", "callId: must not be empty")
    response = client.post(f"/rest-api/call/{action}", json={"callId": "c1", "x": 1})
    assert_error(response.json(), 400, "x", "x: unknown field")


def test_hold_and_unhold(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    response = client.post("/rest-api/call/hold", json={"callId": "c1"})
    assert (response.status_code, response.json()["status"]) == (200, "HOLD")
    response = client.post("/rest-api/call/hold", json={"callId": "c1"})
    assert response.status_code == 409
    assert_error(response.json(), 409, None, "is HOLD, not ESTABLISHED")
    response = client.post("/rest-api/call/unhold", json={"callId": "c1"})
    assert (response.status_code, response.json()["status"]) == (200, "ESTABLISHED")
    response = client.post("/rest-api/call/unhold", json={"callId": "c1"})
    assert response.status_code == 409
    assert_error(response.json(), 409, None, "is ESTABLISHED, not HOLD")


def test_hold_before_answer_is_409(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.RING)
    response = client.post("/rest-api/call/hold", json={"callId": "c1"})
    assert response.status_code == 409


# ---- /call/send_dtmf ----------------------------------------------------------------------


def test_send_dtmf_info(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    response = client.post(
        "/rest-api/call/send_dtmf", json={"callId": "c1", "dtmf": "12*#ab", "type": "info"}
    )
    assert response.status_code == 200
    assert response.json()["callId"] == "c1"
    assert gateway.dtmf_sent == [("c1", "12*#AB", "INFO")]


def test_send_dtmf_number(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    response = client.post(
        "/rest-api/call/send_dtmf", json={"callId": "c1", "dtmf": 5, "type": "INFO"}
    )
    assert response.status_code == 200
    assert gateway.dtmf_sent == [("c1", "5", "INFO")]


def test_send_dtmf_defaults_to_rfc2833(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    response = client.post("/rest-api/call/send_dtmf", json={"callId": "c1", "dtmf": "1"})
    assert response.status_code == 501  # the fake does not do RFC 2833 yet
    assert response.json() == {
        "status": 501,
        "error": "DTMF by RFC2833 is not supported yet",
        "field": "type",
    }


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"callId": "c1", "dtmf": "12x"}, "dtmf", "dtmf: expected 1-64 DTMF digits"),
        ({"callId": "c1", "dtmf": ""}, "dtmf", "got ''"),
        ({"callId": "c1", "dtmf": "1" * 65}, "dtmf", "dtmf: expected"),
        ({"callId": "c1", "dtmf": -1}, "dtmf", "got -1"),
        ({"callId": "c1", "dtmf": True}, "dtmf", "got true"),
        ({"callId": "c1", "dtmf": None}, "dtmf", "got null"),
        ({"callId": "c1"}, "dtmf", "dtmf: required field is missing"),
        ({"callId": "c1", "dtmf": "1", "type": "SMS"}, "type", "expected one of RFC2833, INFO"),
        ({"dtmf": "1"}, "callId", "callId: required field is missing"),
    ],
)
def test_send_dtmf_bad_input(
    client: TestClient, gateway: FakeGateway, body: dict[str, object], field: str, fragment: str
) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    response = client.post("/rest-api/call/send_dtmf", json=body)
    assert response.status_code == 400
    assert_error(response.json(), 400, field, fragment)
    assert gateway.dtmf_sent == []


def test_send_dtmf_unknown_call(client: TestClient) -> None:
    response = client.post(
        "/rest-api/call/send_dtmf", json={"callId": "zz", "dtmf": "1", "type": "INFO"}
    )
    assert response.status_code == 404


def test_gateway_not_supported_maps_to_501(client: TestClient, gateway: FakeGateway) -> None:
    gateway.add_call("c1", CallStatus.ESTABLISHED)
    gateway.fail_with = NotSupported("no INFO for this peer")
    response = client.post(
        "/rest-api/call/send_dtmf", json={"callId": "c1", "dtmf": "1", "type": "INFO"}
    )
    assert response.status_code == 501
    assert response.json() == {"status": 501, "error": "no INFO for this peer"}


# ---- /call/find, /call/find_all -----------------------------------------------------------


@pytest.fixture
def three_calls(gateway: FakeGateway) -> FakeGateway:
    gateway.add_call("c1", CallStatus.ESTABLISHED, callee="bob", rtmpUrl="rtmp://h/live")
    gateway.add_call("c2", CallStatus.HOLD, callee="bob")
    gateway.add_call("c3", CallStatus.RING, callee="carol", rtmpUrl="rtmp://h/live")
    return gateway


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"callId": "c2"}, ["c2"]),
        ({"callee": "bob"}, ["c1", "c2"]),
        ({"rtmpUrl": "rtmp://h/live"}, ["c1", "c3"]),
        ({"status": "RING"}, ["c3"]),
        ({"status": "established"}, ["c1"]),
        ({"callee": "bob", "status": "HOLD"}, ["c2"]),
        ({"callee": "bob", "rtmpUrl": "rtmp://h/live"}, ["c1"]),
        ({"callId": "", "callee": "", "rtmpUrl": "", "status": ""}, ["c1", "c2", "c3"]),
        ({}, ["c1", "c2", "c3"]),
    ],
)
def test_find_filters(
    client: TestClient, three_calls: FakeGateway, body: dict[str, object], expected: list[str]
) -> None:
    response = client.post("/rest-api/call/find", json=body)
    assert response.status_code == 200
    assert [call["callId"] for call in response.json()] == expected


def test_find_passes_typed_filters(client: TestClient, three_calls: FakeGateway) -> None:
    client.post("/rest-api/call/find", json={"callee": "bob", "status": "hold", "callId": ""})
    assert three_calls.find_filters == [
        {"call_id": None, "callee": "bob", "rtmp_url": None, "status": CallStatus.HOLD}
    ]


def test_find_nothing_is_404(client: TestClient, three_calls: FakeGateway) -> None:
    response = client.post("/rest-api/call/find", json={"callee": "dave"})
    assert response.status_code == 404
    assert response.json() == {"status": 404, "error": "no call matched"}


def test_find_bad_status(client: TestClient, three_calls: FakeGateway) -> None:
    response = client.post("/rest-api/call/find", json={"status": "DONE"})
    assert response.status_code == 400
    assert_error(response.json(), 400, "status", "status: expected one of NEW, PENDING", "'DONE'")


def test_find_unknown_filter(client: TestClient, three_calls: FakeGateway) -> None:
    response = client.post("/rest-api/call/find", json={"caller": "alice"})
    assert response.status_code == 400
    assert response.json()["field"] == "caller"


def test_find_all(client: TestClient, three_calls: FakeGateway) -> None:
    for content in (b"{}", b""):
        response = client.post("/rest-api/call/find_all", content=content)
        assert response.status_code == 200
        assert [call["callId"] for call in response.json()] == ["c1", "c2", "c3"]
        assert response.json()[1]["status"] == "HOLD"


def test_find_all_empty_is_404(client: TestClient) -> None:
    response = client.post("/rest-api/call/find_all", json={})
    assert response.status_code == 404
    assert response.json() == {"status": 404, "error": "no call matched"}


def test_find_all_rejects_fields(client: TestClient, three_calls: FakeGateway) -> None:
    response = client.post("/rest-api/call/find_all", json={"callId": "c1"})
    assert response.status_code == 400
    assert response.json()["field"] == "callId"


def test_started_call_is_found(client: TestClient) -> None:
    assert startup(client)[0] == 200
    response = client.post("/rest-api/call/find", json={"callId": "c1"})
    assert response.status_code == 200
    [call] = response.json()
    assert call["status"] == "PENDING"
    assert "sipPassword" not in call
