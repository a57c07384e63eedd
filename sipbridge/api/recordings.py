"""``/rest-api/stream/startRecording``, ``stopRecording`` and ``/recorder/*`` (REST contract).

WCS names the same two actions twice: ``/stream/startRecording`` =
``/recorder/startup`` and ``/stream/stopRecording`` = ``/recorder/terminate``,
each with ``{mediaSessionId | name}`` (the stream's; ``streamName`` is accepted
for ``name``); start takes an optional ``config: {fileTemplate, rotation}``.
``/recorder/find_all`` answers every recording (``fileName``,
``mediaSessionId`` and more), 404 when there is none, as WCS's ``find*`` do.

Same shape as :mod:`sipbridge.api.pushes`: bounded body, msgspec decoder built
once (unknown fields refused, in ``config`` too), one
:class:`RecordingsAPI` call, the affected ``RecordingInfo`` as the answer.
The template and rotation are checked by the manager (so library users get
the same 400s), not here.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Final, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sipbridge.api.bodies import EMPTY_DECODER, EmptyBody, decode_body
from sipbridge.api.endpoint import DEFAULT_MAX_BODY_BYTES, Handler, PostRoutes
from sipbridge.api.errors import json_response
from sipbridge.errors import InvalidRequest, NotFound
from sipbridge.recording.manager import RecordingInfo

__all__ = [
    "RECORDING_KEY_DECODER",
    "START_RECORDING_DECODER",
    "RecordingConfigBody",
    "RecordingKey",
    "RecordingKeyBody",
    "RecordingRoutes",
    "RecordingsAPI",
    "StartRecordingBody",
    "to_recording_config",
    "to_recording_key",
]

logger = logging.getLogger("sipbridge.api.recordings")

Id = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]


class RecordingsAPI(Protocol):
    """What ``/stream/*Recording`` and ``/recorder/*`` need (the gateway's
    :class:`~sipbridge.recording.manager.RecordingManager` is one)."""

    async def start(
        self,
        stream_name: str | None = None,
        media_session_id: str | None = None,
        *,
        file_template: str | None = None,
        rotation: object = None,
    ) -> RecordingInfo:
        """Record the stream (or cut a new file of its recording); 400, 404, 409, 500/507."""
        ...

    async def stop(
        self, stream_name: str | None = None, media_session_id: str | None = None
    ) -> RecordingInfo:
        """Finish the stream's recording; 404 when it has none."""
        ...

    def find_all(self) -> list[RecordingInfo]:
        """Every recording kept, oldest first."""
        ...


class RecordingConfigBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``config`` of a start request: ``fileTemplate`` and ``rotation`` (seconds or ``"20M"``)."""

    file_template: Text | None = None
    rotation: object = None


class StartRecordingBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/stream/startRecording``, ``/recorder/startup``."""

    media_session_id: Id | None = None
    name: Text | None = None
    stream_name: Text | None = None
    # Checked by to_recording_config: the shared decoder names nested fields poorly.
    config: dict[str, object] | None = None


class RecordingKeyBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """``/stream/stopRecording``, ``/recorder/terminate``."""

    media_session_id: Id | None = None
    name: Text | None = None
    stream_name: Text | None = None


class RecordingKey(msgspec.Struct, kw_only=True, frozen=True):
    """Which stream a request names (at least one of the two)."""

    name: str | None
    media_session_id: str | None


START_RECORDING_DECODER: Final = msgspec.json.Decoder(StartRecordingBody)
RECORDING_KEY_DECODER: Final = msgspec.json.Decoder(RecordingKeyBody)


def to_recording_key(body: StartRecordingBody | RecordingKeyBody) -> RecordingKey:
    """The stream a body names; ``""`` is absent; 400 when neither is given or the two
    spellings of the name disagree."""
    name = body.name or None
    alias = body.stream_name or None
    if name is not None and alias is not None and name != alias:
        raise InvalidRequest("name and streamName differ", field="streamName")
    name = name or alias
    media_session_id = body.media_session_id or None
    if name is None and media_session_id is None:
        raise InvalidRequest("a mediaSessionId or a name is required", field="mediaSessionId")
    return RecordingKey(name=name, media_session_id=media_session_id)


_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`")


def to_recording_config(config: dict[str, object] | None) -> RecordingConfigBody:
    """The ``config`` object of a start request; 400 naming ``config.<field>`` when bad."""
    if config is None:
        return RecordingConfigBody()
    try:
        return msgspec.convert(config, RecordingConfigBody)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN.match(text)
        if unknown is not None:
            name = unknown["name"]
            raise InvalidRequest(
                f"config.{name}: unknown field (known: fileTemplate, rotation)",
                field=f"config.{name}",
            ) from None
        reason, _, where = text.partition(" - at `$.")
        field = "config." + where.rstrip("`") if where else "config"
        raise InvalidRequest(f"{field}: {reason}", field=field) from None


class RecordingRoutes(PostRoutes):
    """The recording handlers bound to one manager; :meth:`routes` lists them for a Mount."""

    schemas = {
        "/stream/startRecording": (StartRecordingBody, RecordingInfo),
        "/recorder/startup": (StartRecordingBody, RecordingInfo),
        "/stream/stopRecording": (RecordingKeyBody, RecordingInfo),
        "/recorder/terminate": (RecordingKeyBody, RecordingInfo),
        "/recorder/find_all": (EmptyBody, list[RecordingInfo]),
    }
    # 507: the recording directory's disk is full.
    error_statuses = (*PostRoutes.error_statuses, 507)

    def __init__(
        self, recordings: RecordingsAPI, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes)
        self._recordings = recordings

    def handlers(self) -> dict[str, Handler]:
        return {
            "/stream/startRecording": self.startup,
            "/recorder/startup": self.startup,
            "/stream/stopRecording": self.terminate,
            "/recorder/terminate": self.terminate,
            "/recorder/find_all": self.find_all,
        }

    async def startup(self, request: Request) -> Response:
        """Start recording a stream; a stream already recording gets a new file."""
        body = decode_body(START_RECORDING_DECODER, await self._body(request))
        key = to_recording_key(body)
        config = to_recording_config(body.config)
        info = await self._recordings.start(
            key.name,
            key.media_session_id,
            file_template=config.file_template or None,
            rotation=config.rotation,
        )
        logger.info(
            "recording %s of stream %s: %s", info.recording_id, info.stream_name, info.status.value
        )
        return json_response(info)

    async def terminate(self, request: Request) -> Response:
        """Finish a stream's recording (files closed cleanly); an ended one answers as it is."""
        key = to_recording_key(decode_body(RECORDING_KEY_DECODER, await self._body(request)))
        info = await self._recordings.stop(key.name, key.media_session_id)
        return json_response(info)

    async def find_all(self, request: Request) -> Response:
        """Every recording; 404 when there is none."""
        decode_body(EMPTY_DECODER, await self._body(request))
        recordings = self._recordings.find_all()
        if not recordings:
            raise NotFound("no recording matched")
        return json_response(recordings)
