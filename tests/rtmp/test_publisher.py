"""PublishSession against scripted server bytes (what nginx-rtmp sends, in order)."""

from __future__ import annotations

import pytest

from rtmp.amf0 import AmfValue, EcmaArray, decode_all, encode_all
from rtmp.chunks import ChunkReader, ChunkWriter, Message
from rtmp.handshake import HANDSHAKE_SIZE
from rtmp.publisher import (
    Connected,
    Failed,
    PublishSession,
    PublishStarted,
    PublishStateError,
    SessionState,
    StatusReceived,
)


class ScriptedServer:
    """Parses what the client sends, builds what a server answers."""

    def __init__(self) -> None:
        self.writer = ChunkWriter()
        self.reader = ChunkReader()
        self.handshaken = False
        self.pending = b""

    def take(self, data: bytes) -> list[Message]:
        if not self.handshaken:
            data = self.pending + data
            if len(data) < 1 + 2 * HANDSHAKE_SIZE:
                self.pending = data
                return []
            self.handshaken = True
            data = data[1 + 2 * HANDSHAKE_SIZE :]  # C0 C1 C2
        return self.reader.feed(data)

    def command(self, *values: AmfValue, stream_id: int = 0) -> bytes:
        return self.writer.write(3, 20, stream_id, 0, encode_all(*values))

    def control(self, type_id: int, payload: bytes) -> bytes:
        return self.writer.write(2, type_id, 0, 0, payload)


def commands(messages: list[Message]) -> list[list[AmfValue]]:
    return [decode_all(m.payload) for m in messages if m.type_id == 20]


def events(session: PublishSession) -> list[object]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


HANDSHAKE = b"\x03" + b"\x01" * HANDSHAKE_SIZE + b"\x02" * HANDSHAKE_SIZE


def published() -> tuple[PublishSession, ScriptedServer]:
    session = PublishSession(app="live", tc_url="rtmp://h:1935/live", stream_name="key?x=1")
    server = ScriptedServer()
    session.initiate(1234)
    server.take(session.data_to_send())
    session.receive_data(HANDSHAKE)
    sent = server.take(session.data_to_send())
    assert sent[0].type_id == 1 and int.from_bytes(sent[0].payload, "big") == 4096
    server.reader.chunk_size = 4096
    [connect] = commands(sent)
    assert connect == [
        "connect",
        1.0,
        {
            "app": "live",
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; sipbridge)",
            "tcUrl": "rtmp://h:1935/live",
        },
    ]
    result = {"level": "status", "code": "NetConnection.Connect.Success", "description": "ok"}
    session.receive_data(
        server.control(5, (5_000_000).to_bytes(4, "big"))
        + server.control(6, (5_000_000).to_bytes(4, "big") + b"\x02")
        + server.command("_result", 1.0, {"fmsVer": "FMS/3,0,1,123"}, result)
    )
    sent = server.take(session.data_to_send())
    assert [m.type_id for m in sent if m.type_id != 20] == [5]  # Window Ack Size reply
    assert [c[:2] for c in commands(sent)] == [
        ["releaseStream", 2.0],
        ["FCPublish", 3.0],
        ["createStream", 4.0],
    ]
    assert events(session) == [Connected("ok")]
    session.receive_data(
        server.command("_result", 2.0, None) + server.command("_result", 4.0, None, 1.0)
    )
    sent = server.take(session.data_to_send())
    assert commands(sent) == [["publish", 5.0, None, "key?x=1", "live"]]
    assert sent[0].stream_id == 1
    start = {
        "level": "status",
        "code": "NetStream.Publish.Start",
        "description": "Start publishing",
    }
    session.receive_data(server.command("onStatus", 0.0, None, start, stream_id=1))
    assert events(session) == [PublishStarted("Start publishing")]
    assert session.state is SessionState.PUBLISHING
    return session, server


def test_publish_flow_media_and_close() -> None:
    session, server = published()
    session.send_metadata({"width": 320.0})
    session.send_video(0, b"\x17\x00" + b"v" * 5000)
    session.send_audio(21, b"\xaf\x01aac")
    sent = server.take(session.data_to_send())
    assert [(m.type_id, m.stream_id, m.timestamp) for m in sent] == [
        (18, 1, 0),
        (9, 1, 0),
        (8, 1, 21),
    ]
    assert decode_all(sent[0].payload) == ["@setDataFrame", "onMetaData", EcmaArray(width=320.0)]
    assert len(sent[1].payload) == 5002
    session.close()
    sent = server.take(session.data_to_send())
    assert commands(sent) == [
        ["FCUnpublish", 6.0, None, "key?x=1"],
        ["deleteStream", 7.0, None, 1.0],
    ]
    assert session.state is SessionState.CLOSED
    with pytest.raises(PublishStateError, match="cannot send media while closed"):
        session.send_audio(40, b"x")


def test_ping_and_acknowledgements() -> None:
    session, server = published()
    session.receive_data(server.control(4, b"\x00\x06\x00\x00\x12\x34"))
    [pong] = server.take(session.data_to_send())
    assert (pong.type_id, pong.payload) == (4, b"\x00\x07\x00\x00\x12\x34")
    # Window of 5 000 000: nothing acknowledged yet; then enough bytes arrive.
    big = server.writer.write(5, 18, 1, 0, encode_all("x", "y" * 60000))
    for _ in range(90):
        session.receive_data(big)
    acks = [m for m in server.take(session.data_to_send()) if m.type_id == 3]
    assert len(acks) == 1 and int.from_bytes(acks[0].payload, "big") >= 5_000_000


def test_publish_refused_with_bad_name() -> None:
    session = PublishSession(app="live", tc_url="t", stream_name="busy")
    session.initiate(0)
    server = ScriptedServer()
    session.receive_data(HANDSHAKE)
    server.take(session.data_to_send())
    server.reader.chunk_size = 4096
    ok = {"level": "status", "code": "NetConnection.Connect.Success"}
    session.receive_data(server.command("_result", 1.0, None, ok))
    session.receive_data(server.command("_error", 2.0, None, {"code": "nope"}))  # releaseStream
    session.receive_data(server.command("_result", 4.0, None, 1.0))
    bad = {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "Already publishing",
    }
    session.receive_data(server.command("onStatus", 0.0, None, bad, stream_id=1))
    assert events(session)[-1] == Failed("NetStream.Publish.BadName", "Already publishing")
    assert str(Failed("NetStream.Publish.BadName", "Already publishing")) == (
        "NetStream.Publish.BadName: Already publishing"
    )
    assert session.state is SessionState.FAILED


def test_connect_rejected() -> None:
    session = PublishSession(app="live", tc_url="t", stream_name="k")
    session.initiate(0)
    server = ScriptedServer()
    session.receive_data(HANDSHAKE)
    rejected = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": "no"}
    session.receive_data(server.command("_error", 1.0, None, rejected))
    assert events(session) == [Failed("NetConnection.Connect.Rejected", "no")]


def test_other_status_is_reported() -> None:
    session, server = published()
    info = {"level": "status", "code": "NetStream.Publish.Idle", "description": "idle"}
    session.receive_data(server.command("onStatus", 0.0, None, info, stream_id=1))
    assert events(session) == [StatusReceived("NetStream.Publish.Idle", "idle")]


@pytest.mark.parametrize(
    ("server_bytes", "code"),
    [
        (b"\x06" + bytes(2 * HANDSHAKE_SIZE), "server RTMP version 6"),
        (HANDSHAKE + b"\x43\x00\x00\x00\x00\x00\x01\x14x", "before any fmt 0"),
        (HANDSHAKE + ChunkWriter().write(3, 20, 0, 0, b"\x11"), "unsupported AMF0 type marker"),
    ],
)
def test_protocol_errors_become_failed_events(server_bytes: bytes, code: str) -> None:
    session = PublishSession(app="live", tc_url="t", stream_name="k")
    session.initiate(0)
    session.receive_data(server_bytes)
    [event] = events(session)
    assert isinstance(event, Failed) and event.code == "ProtocolError"
    assert code in event.description
    session.receive_data(b"anything")  # ignored once failed
    assert events(session) == []
