"""Schemathesis over every operation of ``/rest-api/openapi.json``: no 500, answers as documented.

The app is :func:`~sipbridge.api.app.create_app` with every route module mounted, so
the real handlers, body decoders, error mapping and middleware meet the generated
requests. Behind them: the real :class:`~sipbridge.registry.StreamRegistry`
(``/stream/*``) and :class:`~sipbridge.recording.RecordingManager` (``/recorder/*``:
its template and rotation checks run before the stream lookup), the real
:class:`~sipbridge.metrics.GatewayMetrics` (over the metrics tests' fake source), and
the contract fakes for what would otherwise reach the network (calls: SIP and DNS to
generated hosts; pushes: RTMP to generated URLs; WHEP: aiortc). The fakes are seeded
so the ``find*`` methods answer ``200`` and those answers' schemas are checked too;
the fake pushes and viewers know every stream name, so generated requests reach
their ``200``/``201``.

Positive and negative cases (schemathesis' generation modes) per operation; the
checks: no server error, and the answer's status, content type, headers and body
are the documented ones. Hypothesis examples are bounded (:data:`MAX_EXAMPLES` per
operation) and derandomized under CI by the suite's profile (``tests/conftest.py``),
which the test's own settings extend.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from sipbridge.api.app import create_app
from sipbridge.callinfo import CallStatus
from sipbridge.metrics import GatewayMetrics
from sipbridge.recording import RecordingManager
from sipbridge.registry import StreamRegistry
from sipbridge.settings import RecordSettings
from tests.api.fakes import FakeGateway, FakePushes
from tests.api.test_whep import FakeViewers
from tests.test_metrics import FakeSource

#: Hypothesis examples per operation.
MAX_EXAMPLES = 100
#: Documented 5xx answers that are not faults: 501 (valid, not available, e.g. the fake's
#: RFC 2833 DTMF) and 507 (recording disk full).
DESIGNED_5XX = frozenset({501, 507})


def no_server_fault(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> Any:
    """``not_a_server_error``, but for the designed 5xx answers above."""
    if response.status_code in DESIGNED_5XX:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_fault,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schemathesis.serializer("application/sdp")
def _sdp(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """WHEP offers are text; non-strings (negative cases) go as their JSON text."""
    if isinstance(value, bytes):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


class EveryName(set[str]):
    """A set of stream names that holds every name: a generated one is found."""

    def __contains__(self, name: object) -> bool:
        return True


class AnyOfferViewers(FakeViewers):
    """The WHEP fake, taking any offer the handler passes on (the fake wants an ``m=``
    line; the real engine's SDP checks are aiortc's, not fuzzed here)."""

    async def create(self, stream_name: str, offer_sdp: str) -> Any:
        return await super().create(stream_name, offer_sdp + "\r\nm=")


def build_app(directory: Path) -> tuple[Starlette, RecordingManager]:
    """The app under test (module doc), with a little state for ``find*`` to report."""
    gateway = FakeGateway()
    gateway.add_call("c-established", CallStatus.ESTABLISHED, streamName="stream1")
    gateway.add_call("c-failed", CallStatus.FAILED, sipStatus=486, info="Busy here")
    streams = StreamRegistry()
    streams.reserve("stream1", call_id="c-established")
    streams.reserve("stream2")
    pushes = FakePushes()
    asyncio.run(pushes.start_push("stream1", "rtmp://127.0.0.1/live"))
    pushes.streams = EveryName()
    viewers = AnyOfferViewers(limit=1_000_000)
    viewers.streams = EveryName()
    # Its own empty registry: a generated name can never start a real recording.
    recordings = RecordingManager(StreamRegistry(), RecordSettings(directory=str(directory)))
    app = create_app(
        gateway,
        streams=streams,
        pushes=pushes,
        viewers=viewers,
        recordings=recordings,
        metrics=GatewayMetrics(FakeSource(StreamRegistry()), process=False),
    )
    return app, recordings


def load_schema(app: Starlette) -> Any:
    config = schemathesis.Config()
    config.projects.default.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
    )
    # /events never ends and sends its first state at once: read that one, then hang up.
    config.projects.default.max_stream_events = 1
    return schemathesis.openapi.from_asgi("/rest-api/openapi.json", app, config=config)


# Loaded at import: schemathesis' fixture-based loading does not run under pytest 9.
_RECORDINGS_DIR = tempfile.TemporaryDirectory(prefix="sipbridge-schemathesis-")
APP, RECORDINGS = build_app(Path(_RECORDINGS_DIR.name) / "recordings")
schema = load_schema(APP)


@pytest.fixture(scope="module", autouse=True)
def _close_recordings() -> Iterator[None]:
    yield
    asyncio.run(RECORDINGS.close())
    _RECORDINGS_DIR.cleanup()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, suppress_health_check=list(HealthCheck))
def test_every_operation(case: schemathesis.Case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code < 500 or response.status_code in DESIGNED_5XX, response.text
