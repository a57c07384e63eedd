"""Sans-IO RTMP publish session (Adobe RTMP spec 1.0 §5-§7; FFmpeg ``rtmpproto.c``).

Theory of operation
-------------------
One :class:`PublishSession` is one connection's protocol state, from the handshake
to the close. The caller feeds it received bytes (:meth:`receive_data`), sends what
:meth:`data_to_send` returns, and reads events (:meth:`next_event`). No sockets, no
clock: the only time it knows is the one passed to :meth:`initiate` for C1.

The flow, as FFmpeg's publisher does it::

    C0+C1 ->                              <- S0+S1+S2          (handshake.py)
    C2, Set Chunk Size, connect(1) ->     <- Window Ack Size, Set Peer Bandwidth,
                                             _result(1) NetConnection.Connect.Success
    releaseStream(2), FCPublish(3),
    createStream(4) ->                    <- _result(4, stream id)
    publish(5, name, "live") ->           <- onStatus NetStream.Publish.Start
    @setDataFrame onMetaData, audio/video ... ->
    FCUnpublish, deleteStream ->          (close)

Events: :class:`Connected` (connect accepted), :class:`PublishStarted`,
:class:`Failed` (``_error`` to connect/createStream, an ``onStatus`` of level
``error`` such as ``NetStream.Publish.BadName``, or a protocol violation, with the
server's code and description), :class:`StatusReceived` for other ``onStatus``.
Along the way the session answers what the server expects of a client: an
Acknowledgement (§5.4.3) each time the bytes received since the last one reach the
server's Window Acknowledgement Size, a Window Acknowledgement Size after a Set
Peer Bandwidth that changes it (§5.4.5), and PingResponse to PingRequest (§7.1.7).

Media: :meth:`send_video` / :meth:`send_audio` take FLV tag bodies
(:mod:`rtmp.flv`) and a timestamp in ms; :meth:`send_metadata` sends
``@setDataFrame("onMetaData", ...)``. They raise :class:`PublishStateError` (our
misuse) unless the session is publishing.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

from rtmp.amf0 import AmfError, AmfValue, EcmaArray, decode_all, encode_all
from rtmp.chunks import (
    MSG_ACK,
    MSG_AMF0_COMMAND,
    MSG_AMF0_DATA,
    MSG_AUDIO,
    MSG_SET_CHUNK_SIZE,
    MSG_SET_PEER_BANDWIDTH,
    MSG_USER_CONTROL,
    MSG_VIDEO,
    MSG_WINDOW_ACK_SIZE,
    ChunkError,
    ChunkReader,
    ChunkWriter,
    Message,
)
from rtmp.handshake import ClientHandshake, HandshakeError

__all__ = [
    "FLASH_VERSION",
    "Connected",
    "Event",
    "Failed",
    "PublishSession",
    "PublishStarted",
    "PublishStateError",
    "SessionState",
    "StatusReceived",
]

#: What FFmpeg's publisher sends as ``flashVer`` (servers check for "FMLE").
FLASH_VERSION: Final = "FMLE/3.0 (compatible; sipbridge)"
#: Chunk streams as FFmpeg uses them (rtmppkt.h): control, commands, audio, video, data.
CSID_CONTROL: Final = 2
CSID_COMMAND: Final = 3
CSID_AUDIO: Final = 4
CSID_VIDEO: Final = 6
CSID_STREAM: Final = 8
#: Our Window Acknowledgement Size reply default (FFmpeg: 2 500 000).
DEFAULT_WINDOW: Final = 2_500_000
# User Control event types (§7.1.7).
_PING_REQUEST: Final = 6
_PING_RESPONSE: Final = 7
# Transaction ids of the commands whose answers matter.
_TX_CONNECT: Final = 1
_TX_CREATE_STREAM: Final = 4


class SessionState(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating stream"
    STARTING_PUBLISH = "starting publish"
    PUBLISHING = "publishing"
    CLOSED = "closed"
    FAILED = "failed"


class PublishStateError(RuntimeError):
    """The caller used the session in a state that does not allow it."""


@dataclass(frozen=True, slots=True)
class Connected:
    """``connect`` was answered ``_result`` (NetConnection.Connect.Success)."""

    description: str


@dataclass(frozen=True, slots=True)
class PublishStarted:
    """``onStatus NetStream.Publish.Start``: the server takes our stream."""

    description: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The server refused (``code``/``description`` as it sent them) or broke the protocol
    (``code`` ``"ProtocolError"``). The session is then :attr:`SessionState.FAILED`."""

    code: str
    description: str

    def __str__(self) -> str:
        return f"{self.code}: {self.description}" if self.description else self.code


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Any other ``onStatus`` (level ``status``/``warning``), for the log."""

    code: str
    description: str


Event = Connected | PublishStarted | Failed | StatusReceived


def _info(value: AmfValue) -> tuple[str, str, str]:
    """(level, code, description) of an info object (``onStatus``/``_error`` argument)."""
    if isinstance(value, dict):
        level, code, description = value.get("level"), value.get("code"), value.get("description")
        return (
            level if isinstance(level, str) else "",
            code if isinstance(code, str) else "",
            description if isinstance(description, str) else "",
        )
    return "", "", ""


class PublishSession:
    """One publishing connection's protocol engine (module doc)."""

    def __init__(
        self,
        *,
        app: str,
        tc_url: str,
        stream_name: str,
        flash_ver: str = FLASH_VERSION,
        chunk_size: int = 4096,
        handshake: ClientHandshake | None = None,
    ) -> None:
        self.app = app
        self.tc_url = tc_url
        self.stream_name = stream_name
        self.flash_ver = flash_ver
        self.state = SessionState.HANDSHAKE
        self.stream_id: int | None = None
        self._chunk_size = chunk_size
        self._handshake = handshake or ClientHandshake()
        self._reader = ChunkReader()
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._received = 0
        self._acked = 0
        self._ack_window: int | None = None  # the server's Window Acknowledgement Size
        self._our_window: int | None = None
        self._next_tx = 1

    @property
    def failed(self) -> bool:
        return self.state is SessionState.FAILED

    # -- caller API -----------------------------------------------------------------------
    def initiate(self, now_ms: int) -> None:
        """Start the handshake (C0 + C1)."""
        self._out += self._handshake.start(now_ms)

    def data_to_send(self) -> bytes:
        """Bytes to write to the connection now (empties the output buffer)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server. Protocol violations become a :class:`Failed` event."""
        if self.state in (SessionState.FAILED, SessionState.CLOSED) or not data:
            return
        self._received += len(data)
        try:
            if self.state is SessionState.HANDSHAKE:
                reply, data = self._handshake.receive(data)
                self._out += reply
                if not self._handshake.done:
                    return
                self._after_handshake()
            for message in self._reader.feed(data):
                self._handle(message)
                if self.failed:
                    return
        except (HandshakeError, ChunkError, AmfError) as exc:
            self._fail("ProtocolError", str(exc))
            return
        self._maybe_ack()

    def send_metadata(self, metadata: dict[str, AmfValue]) -> None:
        """``@setDataFrame("onMetaData", metadata)`` (FFmpeg's flvenc ``onMetaData`` keys)."""
        body = encode_all("@setDataFrame", "onMetaData", EcmaArray(metadata))
        self._media(MSG_AMF0_DATA, CSID_STREAM, 0, body)

    def send_video(self, timestamp: int, body: bytes) -> None:
        """One FLV video tag body (``VIDEODATA``) at ``timestamp`` ms."""
        self._media(MSG_VIDEO, CSID_VIDEO, timestamp, body)

    def send_audio(self, timestamp: int, body: bytes) -> None:
        """One FLV audio tag body (``AUDIODATA``) at ``timestamp`` ms."""
        self._media(MSG_AUDIO, CSID_AUDIO, timestamp, body)

    def close(self) -> None:
        """``FCUnpublish`` + ``deleteStream`` (when publishing); the session is closed."""
        if self.state is SessionState.PUBLISHING and self.stream_id is not None:
            self._command("FCUnpublish", None, self.stream_name)
            self._command("deleteStream", None, float(self.stream_id))
        if self.state is not SessionState.FAILED:
            self.state = SessionState.CLOSED

    # -- internals --------------------------------------------------------------------------
    def _send(self, csid: int, type_id: int, stream_id: int, timestamp: int, body: bytes) -> None:
        self._out += self._writer.write(csid, type_id, stream_id, timestamp, body)

    def _media(self, type_id: int, csid: int, timestamp: int, body: bytes) -> None:
        if self.state is not SessionState.PUBLISHING or self.stream_id is None:
            raise PublishStateError(f"cannot send media while {self.state.value}")
        self._send(csid, type_id, self.stream_id, timestamp, body)

    def _command(self, name: str, *args: AmfValue, stream_id: int = 0) -> int:
        tx = self._next_tx
        self._next_tx += 1
        csid = CSID_STREAM if stream_id else CSID_COMMAND
        self._send(csid, MSG_AMF0_COMMAND, stream_id, 0, encode_all(name, float(tx), *args))
        return tx

    def _after_handshake(self) -> None:
        # Our chunk size first: big media messages then go in one chunk each.
        self._send(CSID_CONTROL, MSG_SET_CHUNK_SIZE, 0, 0, self._chunk_size.to_bytes(4, "big"))
        self._writer.set_chunk_size(self._chunk_size)
        self._command(
            "connect",
            {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": self.flash_ver,
                "tcUrl": self.tc_url,
            },
        )
        self.state = SessionState.CONNECTING

    def _fail(self, code: str, description: str) -> None:
        self.state = SessionState.FAILED
        self._events.append(Failed(code, description))

    def _maybe_ack(self) -> None:
        window = self._ack_window
        if window and self._received - self._acked >= window:
            self._acked = self._received
            sequence = (self._received & 0xFFFFFFFF).to_bytes(4, "big")
            self._send(CSID_CONTROL, MSG_ACK, 0, 0, sequence)

    def _handle(self, message: Message) -> None:
        payload = message.payload
        kind = message.type_id
        if kind == MSG_WINDOW_ACK_SIZE:
            if len(payload) < 4:
                raise ChunkError("Window Acknowledgement Size message shorter than 4 bytes")
            self._ack_window = int.from_bytes(payload[:4], "big")
        elif kind == MSG_SET_PEER_BANDWIDTH:
            if len(payload) < 4:
                raise ChunkError("Set Peer Bandwidth message shorter than 4 bytes")
            window = int.from_bytes(payload[:4], "big")
            if window != self._our_window:
                self._our_window = window
                self._send(CSID_CONTROL, MSG_WINDOW_ACK_SIZE, 0, 0, window.to_bytes(4, "big"))
        elif kind == MSG_USER_CONTROL:
            if len(payload) >= 6 and int.from_bytes(payload[:2], "big") == _PING_REQUEST:
                pong = _PING_RESPONSE.to_bytes(2, "big") + payload[2:6]
                self._send(CSID_CONTROL, MSG_USER_CONTROL, 0, 0, pong)
        elif kind == MSG_AMF0_COMMAND:
            self._on_command(decode_all(payload))
        # Acknowledgements, data messages, audio/video from the server: nothing to do.

    def _on_command(self, values: list[AmfValue]) -> None:
        if not values or not isinstance(values[0], str):
            raise AmfError("command message without a command name")
        name = values[0]
        tx = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        info = _info(values[3]) if len(values) > 3 else ("", "", "")
        if name == "_result":
            if tx == _TX_CONNECT and self.state is SessionState.CONNECTING:
                self._events.append(Connected(info[2] or info[1]))
                self._command("releaseStream", None, self.stream_name)
                self._command("FCPublish", None, self.stream_name)
                self._command("createStream", None)
                self.state = SessionState.CREATING_STREAM
            elif tx == _TX_CREATE_STREAM and self.state is SessionState.CREATING_STREAM:
                stream = values[3] if len(values) > 3 else None
                if not isinstance(stream, float) or not 0 < stream < 2**32:
                    raise AmfError(f"createStream answered with no stream id: {stream!r}")
                self.stream_id = int(stream)
                self._command("publish", None, self.stream_name, "live", stream_id=self.stream_id)
                self.state = SessionState.STARTING_PUBLISH
        elif name == "_error":
            # releaseStream/FCPublish errors are normal on servers that lack them.
            if tx in (_TX_CONNECT, _TX_CREATE_STREAM):
                self._fail(info[1] or "_error", info[2])
        elif name == "onStatus":
            level, code, description = info
            if level == "error":
                self._fail(code or "onStatus error", description)
            elif code == "NetStream.Publish.Start" and self.state is SessionState.STARTING_PUBLISH:
                self.state = SessionState.PUBLISHING
                self._events.append(PublishStarted(description))
            else:
                self._events.append(StatusReceived(code, description))
        # onBWDone, onFCPublish, _checkbw ... need no answer from a publisher.
