"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /rest-api/openapi.json``.

Theory of operation
-------------------
The document is generated from the application it describes, so it cannot list
a route the app does not serve nor miss one it does. :func:`build_openapi` walks
the app's routes (into the ``/rest-api`` mount):

- a POST route of a :class:`~sipbridge.api.endpoint.PostRoutes` module is
  described by that module's declaration: ``schemas[path]`` gives the msgspec
  Struct of the request body and the type of the ``200`` answer,
  ``error_statuses`` the error answers. :func:`msgspec.json.schema_components`
  turns the types into JSON Schema 2020-12 (the dialect of OpenAPI 3.1, §4.8.24)
  under ``components/schemas``, the same types the decoders and encoders use;
- the other routes (the health check, this document, WHEP, ``/events``, the
  pages, ``/metrics``) are described here, in :func:`_fixed_operations`;
- a route described nowhere still appears, with a bare ``200`` and
  ``x-undocumented: true``, so the document never hides an entry point (the
  tests require there be none).

WCS clients send booleans and ports as strings, so those fields are ``object``
in the Structs and checked by the handlers; :data:`FIELD_SCHEMAS` says what they
accept, and names the values of the enumerated ones (statuses, DTMF type,
transport), which the Structs keep as strings to answer readable 400s.

The document holds the shapes of requests and answers, nothing secret, so it is
served without the API token (like the health check: tools fetch it before they
hold one). When a token is configured the document declares the ``bearer``
scheme (RFC 6750) and the ``cookie`` scheme (the session cookie of ``POST
/login``) and puts them, with the ``401``/``403`` answers, on every operation
the token check covers (the pages included). The JSON is built at the first request and
kept in ``app.state``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

import sipbridge
from sipbridge.api.auth import EXEMPT_PATHS, PROTECTED_PREFIXES, BearerAuthMiddleware
from sipbridge.api.bodies import (
    MAX_DTMF_DIGITS,
    SIP_TRANSPORTS,
    FindCallsBody,
    FindStreamsBody,
    SendDtmfBody,
    StartCallBody,
)
from sipbridge.api.endpoint import PostRoutes, json_endpoint
from sipbridge.api.errors import ErrorBody
from sipbridge.api.events import EVENTS_PATH, MAX_INTERVAL, MIN_INTERVAL
from sipbridge.api.login import LOGIN_PATH, LOGOUT_PATH, SESSION_COOKIE
from sipbridge.api.pages import ASSET_PREFIX, PAGE_FILES
from sipbridge.api.protocol import DTMF_METHODS
from sipbridge.api.push_bodies import StartPushBody
from sipbridge.api.recordings import RecordingConfigBody, StartRecordingBody
from sipbridge.api.whep import SDP_MEDIA_TYPE, WHEP_PREFIX
from sipbridge.callinfo import CallInfo, CallStatus
from sipbridge.events import CallStatusEvent, StreamStatusEvent
from sipbridge.pushes import PushInfo
from sipbridge.recording.manager import RecordingInfo
from sipbridge.registry import StreamInfo, StreamStatus
from webrtc.whep import ViewerInfo

__all__ = [
    "FIELD_SCHEMAS",
    "OPENAPI_PATH",
    "OPENAPI_VERSION",
    "build_openapi",
    "openapi_route",
]

OPENAPI_VERSION: Final = "3.1.0"
#: Relative to the ``/rest-api`` mount.
OPENAPI_PATH: Final = "/openapi.json"
_REST_PREFIX: Final = "/rest-api"
_SCHEMA_REF: Final = "#/components/schemas/{name}"
_ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorBody"}

Json = dict[str, Any]

_STATUS_TEXT: Final = {
    400: "Invalid input: malformed JSON, unknown or missing field, wrong type or value",
    401: "An API token is configured and the request has none (`WWW-Authenticate: Bearer`)",
    403: "The bearer token is wrong",
    404: "Unknown id or name; `find*` matched nothing",
    405: "Method not allowed (`Allow` lists the allowed ones)",
    409: "Conflict with the current state",
    413: "The request body is larger than the configured limit",
    415: f"The offer was not sent as `Content-Type: {SDP_MEDIA_TYPE}`",
    500: "A bug: `internal error` (the traceback goes to the log only)",
    501: "Valid, but not available (gateway not started, DTMF method not available)",
    507: "The recording directory's disk is full",
}


def _loose_flag(default: bool) -> Json:
    return {
        "description": (
            "A boolean, or its string form `true`, `false`, `1`, `0` (any case); "
            f'`null` or `""`: {str(default).lower()}'
        ),
        "anyOf": [
            {"type": "boolean"},
            {"type": "string", "enum": ["true", "false", "1", "0", ""]},
            {"type": "null"},
        ],
        "default": None,
    }


def _names(values: Sequence[str], what: str) -> Json:
    """A string naming one of ``values`` (any case); ``""`` or ``null``: not given."""
    return {
        "description": f'{what}: one of {", ".join(values)} (any case); `""` or `null`: none',
        "anyOf": [{"type": "string", "enum": [*values, ""]}, {"type": "null"}],
        "default": None,
    }


#: ``(Struct, JSON field name) -> schema`` for the fields the Structs keep loose
#: (``object``) or as plain strings; applied over msgspec's generated schemas.
FIELD_SCHEMAS: Final[Mapping[tuple[type[msgspec.Struct], str], Json]] = {
    (StartCallBody, "hasAudio"): _loose_flag(True),
    (StartCallBody, "hasVideo"): _loose_flag(True),
    (StartCallBody, "sipRegisterRequired"): _loose_flag(False),
    (StartCallBody, "sipPort"): {
        "description": "The SIP server's port: an integer or a string of digits; "
        '`""` or `null`: the default',
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 65535},
            {"type": "string", "pattern": "^[0-9]{0,5}$"},
            {"type": "null"},
        ],
        "default": None,
    },
    (StartCallBody, "sipTransport"): _names(SIP_TRANSPORTS, "SIP transport"),
    (StartCallBody, "custom"): {"description": "WCS's free-form client data: accepted, ignored"},
    (FindCallsBody, "status"): _names([status.value for status in CallStatus], "Call status"),
    (FindStreamsBody, "status"): _names([status.value for status in StreamStatus], "Stream status"),
    (SendDtmfBody, "dtmf"): {
        "description": f"1-{MAX_DTMF_DIGITS} DTMF digits 0-9, *, #, A-D (RFC 4733 §3.2); "
        "a number stands for its digits",
        "anyOf": [
            {"type": "string", "pattern": f"^[0-9*#A-Da-d]{{1,{MAX_DTMF_DIGITS}}}$"},
            {"type": "integer", "minimum": 0},
        ],
    },
    (SendDtmfBody, "type"): _names(DTMF_METHODS, "DTMF method (default RFC2833)"),
    (StartPushBody, "rtmpTransponderFullUrl"): _loose_flag(False),
    (StartRecordingBody, "config"): {
        "anyOf": [{"$ref": _SCHEMA_REF.format(name="RecordingConfigBody")}, {"type": "null"}],
        "default": None,
    },
    (RecordingConfigBody, "rotation"): {
        "description": 'Seconds (`600`, `"600"`) or a size (`"20M"`, at least 64K) per '
        'file; `"off"`, `""`, `0` or `null`: no rotation',
        "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}, {"type": "null"}],
        "default": None,
    },
}


def _schema_hook(cls: type) -> Json:
    # Loose fields are typed `object`; FIELD_SCHEMAS replaces these placeholders.
    if cls is object:
        return {"description": "any JSON value"}
    raise NotImplementedError


# -- operations -------------------------------------------------------------------


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _error(status: int) -> Json:
    return {"description": _STATUS_TEXT.get(status, "Error"), "content": _json(_ERROR_REF)}


def _errors(statuses: Sequence[int]) -> Json:
    return {str(status): _error(status) for status in sorted(statuses)}


def _path_parameter(name: str, description: str, schema: Json | None = None) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def _array_of(name: str) -> Json:
    return {"type": "array", "items": {"$ref": _SCHEMA_REF.format(name=name)}}


def _event(name: str, data: Json) -> Json:
    """One server-sent event (HTML Living Standard §9.2.5 fields) with JSON ``data``."""
    return {
        "type": "object",
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
        "required": ["event", "data"],
    }


def _feed_event() -> Json:
    """An event of ``/events``: a state snapshot, or a call's or a stream's status change."""
    state = {
        "type": "object",
        "properties": {
            "calls": _array_of("CallInfo"),
            "streams": _array_of("StreamInfo"),
            "pushes": _array_of("PushInfo"),
            "viewers": _array_of("ViewerInfo"),
            "recordings": _array_of("RecordingInfo"),
            "time": {"type": "integer", "description": "Unix milliseconds"},
        },
        "required": ["calls", "streams", "pushes", "viewers", "recordings", "time"],
    }
    return {
        "oneOf": [
            _event("state", state),
            _event("callStatus", {"$ref": _SCHEMA_REF.format(name="CallStatusEvent")}),
            _event("streamStatus", {"$ref": _SCHEMA_REF.format(name="StreamStatusEvent")}),
        ]
    }


def _fixed_operations() -> dict[str, dict[str, Json]]:
    """Full path -> method -> operation, for the routes that are not PostRoutes."""
    whep_stream = _path_parameter("stream_name", "The stream to play")
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        _REST_PREFIX + "/health": {
            "get": {
                "operationId": "health",
                "tags": ["service"],
                "summary": 'Readiness check: `{"status": "ok"}` while the app serves',
                "responses": {
                    "200": {
                        "description": "The app serves",
                        "content": _json(
                            {
                                "type": "object",
                                "properties": {"status": {"const": "ok"}},
                                "required": ["status"],
                            }
                        ),
                    }
                },
            }
        },
        _REST_PREFIX + OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "tags": ["service"],
                "summary": "This document (OpenAPI 3.1)",
                "responses": {
                    "200": {"description": "The document", "content": _json({"type": "object"})}
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["service"],
                "summary": "Prometheus metrics (docs/metrics.md)",
                "description": "The Prometheus text exposition format 0.0.4 "
                "(`text/plain; version=0.0.4; charset=utf-8`), or OpenMetrics 1.0.0 "
                "(`application/openmetrics-text; version=1.0.0; charset=utf-8`) when "
                "`Accept` asks for it. Behind the API token when one is set.",
                "responses": {
                    "200": {
                        "description": "The metrics, one family per `# HELP`/`# TYPE` pair",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        WHEP_PREFIX + "/{stream_name}": {
            "post": {
                "operationId": "whep_create",
                "tags": ["whep"],
                "summary": "WHEP (RFC 9725 §4.2): play a stream; an SDP offer in, the answer out",
                "description": "The offer is recvonly with every ICE candidate gathered "
                "(no trickle ICE). `DELETE` on the `Location` ends the session.",
                "parameters": [whep_stream],
                "requestBody": {
                    "required": True,
                    "content": {
                        SDP_MEDIA_TYPE: {
                            "schema": {
                                "type": "string",
                                "description": "An SDP offer (RFC 8866; it starts with `v=0`)",
                                "pattern": "^\ufeff?v=0",
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "The SDP answer; `Location` is the session's URL",
                        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                        "content": {SDP_MEDIA_TYPE: {"schema": {"type": "string"}}},
                    },
                    **_errors((400, 404, 409, 413, 415, 500)),
                },
            },
            "options": {
                "operationId": "whep_endpoint_options",
                "tags": ["whep"],
                "summary": "CORS preflight (never needs the token)",
                "parameters": [whep_stream],
                "responses": {"204": {"description": "`Allow` and `Accept-Post` headers"}},
            },
        },
        WHEP_PREFIX + "/{stream_name}/{session_id}": {
            "delete": {
                "operationId": "whep_delete",
                "tags": ["whep"],
                "summary": "End a WHEP session (RFC 9725 §4.3.3); answers the viewer's last state",
                "parameters": [
                    whep_stream,
                    _path_parameter("session_id", "The session, from `Location`"),
                ],
                "responses": {
                    "200": {
                        "description": "The viewer's last state",
                        "content": _json({"$ref": _SCHEMA_REF.format(name="ViewerInfo")}),
                    },
                    **_errors((404, 500)),
                },
            },
            "options": {
                "operationId": "whep_session_options",
                "tags": ["whep"],
                "summary": "CORS preflight (never needs the token)",
                "parameters": [
                    whep_stream,
                    _path_parameter("session_id", "The session, from `Location`"),
                ],
                "responses": {"204": {"description": "`Allow` header"}},
            },
        },
        EVENTS_PATH: {
            "get": {
                "operationId": "events",
                "tags": ["events"],
                "summary": "The gateway's state and status changes as server-sent events",
                "description": "Every `interval` seconds one `event: state` whose `data` is "
                "`{calls, streams, pushes, viewers, recordings, time}` (the REST answers' "
                "objects); in between, each status change as it happens: `event: callStatus` "
                "(a `CallStatusEvent`) or `event: streamStatus` (a `StreamStatusEvent`), the "
                "JSON the REST hooks post. Comment lines keep a quiet feed alive. The feed "
                "does not end.",
                "parameters": [
                    {
                        "name": "interval",
                        "in": "query",
                        "required": False,
                        "description": "Seconds between two states",
                        "schema": {
                            "type": "number",
                            "minimum": MIN_INTERVAL,
                            "maximum": MAX_INTERVAL,
                            "default": 1,
                        },
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The feed",
                        "content": {"text/event-stream": {"schema": _feed_event()}},
                    },
                    **_errors((400,)),
                },
            }
        },
        "/": {
            "get": {
                "operationId": "console_page",
                "tags": ["pages"],
                "summary": "The console page",
                "responses": {"200": {"description": "HTML", "content": html}},
            }
        },
        "/player": {
            "get": {
                "operationId": "player_page",
                "tags": ["pages"],
                "summary": "The player page (plays `stream` by WHEP)",
                "parameters": [
                    {
                        "name": "stream",
                        "in": "query",
                        "required": False,
                        "description": "The stream to play",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "HTML", "content": html}},
            }
        },
        LOGIN_PATH: {
            "get": {
                "operationId": "login_form",
                "tags": ["pages"],
                "summary": "The login form of the pages (when a token is set)",
                "responses": {"200": {"description": "HTML", "content": html}},
            },
            "post": {
                "operationId": "login",
                "tags": ["pages"],
                "summary": "Log in with the token: sets the session cookie, 303 to `next`",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "token": {"type": "string"},
                                    "next": {"type": "string"},
                                },
                                "required": ["token"],
                            }
                        }
                    },
                },
                "responses": {
                    "303": {"description": "Logged in; `Set-Cookie` and `Location` (`next`)"},
                    "401": {"description": "No token: the form", "content": html},
                    "403": {"description": "Wrong token: the form", "content": html},
                    "429": {
                        "description": "Too many wrong tokens from this address: the form, "
                        "`Retry-After` seconds",
                        "content": html,
                    },
                    **_errors((400, 413, 415)),
                },
            },
        },
        LOGOUT_PATH: {
            "post": {
                "operationId": "logout",
                "tags": ["pages"],
                "summary": "Clear the session cookie; 303 to the console",
                "responses": {
                    "303": {"description": "Logged out"},
                    **_errors((403,)),
                },
            }
        },
        ASSET_PREFIX + "/{name}": {
            "get": {
                "operationId": "page_file",
                "tags": ["pages"],
                "summary": "A file of the pages",
                "parameters": [
                    _path_parameter(
                        "name", "The file", {"type": "string", "enum": list(PAGE_FILES)}
                    )
                ],
                "responses": {
                    "200": {
                        "description": "The file (HTML, JavaScript or CSS)",
                        "content": {"text/*": {"schema": {"type": "string"}}},
                    },
                    **_errors((404,)),
                },
            }
        },
    }


def _walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """``(full path, route)`` for every HTTP route, into mounts."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def _post_declaration(route: Route) -> tuple[PostRoutes, Any] | None:
    """The PostRoutes module that declared ``route`` and its bound handler, if any."""
    handler = inspect.unwrap(route.endpoint)
    owner = getattr(handler, "__self__", None)
    if isinstance(owner, PostRoutes) and route.path in owner.schemas:
        return owner, handler
    return None


_ROLE_RE: Final = re.compile(r":[a-z]+:`~?([^`]+)`")


def _markdown(doc: str) -> str:
    """A docstring's reST as the CommonMark OpenAPI descriptions use (OpenAPI 3.1 §4.6)."""
    return _ROLE_RE.sub(r"`\1`", inspect.cleandoc(doc)).replace("``", "`")


def _summary(handler: Any) -> str:
    doc = _markdown(inspect.getdoc(handler) or "")
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _post_operation(
    route: Route, owner: PostRoutes, handler: Any, refs: Mapping[Any, Json]
) -> Json:
    body, answer = owner.schemas[route.path]
    name = route.path.lstrip("/")
    info = msgspec.inspect.type_info(body)
    required = isinstance(info, msgspec.inspect.StructType) and any(
        field.required for field in info.fields
    )
    return {
        "operationId": name.replace("/", "_"),
        "tags": [name.partition("/")[0]],
        "summary": _summary(handler),
        "requestBody": {
            "required": required,
            "description": "JSON (the Content-Type is not checked; an empty body reads as `{}`)",
            "content": _json(refs[body]),
        },
        "responses": {
            "200": {"description": "The affected object(s)", "content": _json(refs[answer])},
            **_errors(owner.error_statuses),
        },
    }


def _apply_field_schemas(components: dict[str, Json]) -> None:
    for (struct, field), schema in FIELD_SCHEMAS.items():
        if struct.__name__ not in components:  # its routes are not mounted
            continue
        properties = components[struct.__name__]["properties"]
        if field not in properties:
            raise ValueError(f"FIELD_SCHEMAS: {struct.__name__} has no field {field!r}")
        properties[field] = schema


def _uses_bearer(
    app: Any,
) -> tuple[bool, tuple[str, ...], frozenset[str], frozenset[str]]:
    """Whether the token check runs, and the prefixes, exempt paths and page paths it uses."""
    for middleware in getattr(app, "user_middleware", ()):
        if middleware.cls is BearerAuthMiddleware:
            prefixes = tuple(middleware.kwargs.get("protected_prefixes", PROTECTED_PREFIXES))
            exempt = frozenset(middleware.kwargs.get("exempt_paths", EXEMPT_PATHS))
            pages = frozenset(middleware.kwargs.get("page_paths", ()))
            return True, prefixes, exempt, pages
    return False, (), frozenset(), frozenset()


def build_openapi(app: Any) -> Json:
    """The OpenAPI 3.1 document of ``app`` (a Starlette app made by ``create_app``)."""
    routes = list(_walk(app.routes))
    declared = [(path, route, _post_declaration(route)) for path, route in routes]
    # Always there: /events reports every kind of object, mounted or not.
    types: list[Any] = [
        ErrorBody,
        CallInfo,
        StreamInfo,
        PushInfo,
        ViewerInfo,
        RecordingInfo,
        RecordingConfigBody,
        CallStatusEvent,
        StreamStatusEvent,
    ]
    for _path, route, found in declared:
        if found is not None:
            types.extend(found[0].schemas[route.path])
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(
        unique, ref_template=_SCHEMA_REF, schema_hook=_schema_hook
    )
    _apply_field_schemas(components)
    for component in components.values():
        if "description" in component:
            component["description"] = _markdown(component["description"])
    refs = dict(zip(unique, schemas, strict=True))

    fixed = _fixed_operations()
    bearer, prefixes, exempt, page_paths = _uses_bearer(app)
    paths: dict[str, Json] = {}
    for path, route, found in declared:
        item = paths.setdefault(path, {})
        if found is not None:
            item["post"] = _post_operation(route, found[0], found[1], refs)
        elif path in fixed:
            item.update(fixed[path])
        else:
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                item[method.lower()] = {
                    "operationId": f"{method.lower()}_{route.name}",
                    "x-undocumented": True,
                    "responses": {"200": {"description": "Not described"}},
                }
        protected = bearer and (
            path in page_paths
            or any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)
        )
        if protected and path not in exempt:
            for method, operation in item.items():
                if method != "options" and "security" not in operation:
                    operation["security"] = [{"bearer": []}, {"cookie": []}]
                    operation["responses"].update(_errors((401, 403)))

    document: Json = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "sipbridge",
            "version": sipbridge.__version__,
            "summary": "SIP calls as live streams: WCS-compatible REST API, WHEP, events",
            "description": "The REST dialect of Flashphoner Web Call Server (`/rest-api/*`: "
            "every method is POST with a JSON body; booleans and ports may be strings), "
            "WebRTC playback by WHEP (RFC 9725), the state as server-sent events, the pages. "
            'Every error is `{"status": N, "error": "...", "field": "..."}`.',
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {"schemas": components},
    }
    if bearer:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The `[http] api_token` of the settings (RFC 6750 §2.1)",
            },
            "cookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": SESSION_COOKIE,
                "description": "The session cookie of `POST /login` (the pages use it)",
            },
        }
    return document


async def openapi_endpoint(request: Request) -> Response:
    """``GET /rest-api/openapi.json``: the document of this app (built once, then kept)."""
    state = request.app.state
    encoded: bytes | None = getattr(state, "openapi_document", None)
    if encoded is None:
        encoded = msgspec.json.encode(build_openapi(request.app))
        state.openapi_document = encoded
    return Response(content=encoded, media_type="application/json")


def openapi_route() -> Route:
    """The document's route, relative to the ``/rest-api`` mount (GET; HEAD too)."""
    return Route(OPENAPI_PATH, json_endpoint(openapi_endpoint), methods=["GET"])
