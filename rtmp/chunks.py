"""The RTMP chunk stream (Adobe RTMP spec 1.0 §5.3): messages cut into chunks and back.

Theory of operation
-------------------
A message (type, stream id, timestamp, payload) travels on a chunk stream (csid
2..65599) as chunks of at most the sender's chunk size. Each chunk starts with a
basic header (fmt + csid, 1 to 3 bytes, §5.3.1.1) and a message header whose size
depends on fmt (§5.3.1.2): 11 bytes for fmt 0 (absolute timestamp, length, type,
stream id), 7 for fmt 1 (timestamp delta, length, type), 3 for fmt 2 (delta only),
none for fmt 3 (continuation, or a message identical in all but payload). A
timestamp or delta of 0xFFFFFF or more is written as 0xFFFFFF followed by a 4-byte
extended timestamp (§5.3.1.3), which is repeated on the fmt 3 chunks that continue
such a message: FFmpeg's and nginx-rtmp's readers expect it there.

:class:`ChunkWriter` picks the smallest header per chunk stream from what it last
sent there: fmt 0 for the first message and when the stream id changes or time
goes backwards, fmt 1 when length or type changed, fmt 2 otherwise (a new message
never uses fmt 3, whose delta semantics implementations read differently);
fmt 3 for continuation chunks.

:class:`ChunkReader` keeps the per-csid state of the other direction, reassembles
messages of any fmt, and applies Set Chunk Size (type 1) and Abort (type 2) itself,
since they change how the next bytes parse; they are still returned. Malformed
input raises :class:`ChunkError`. Pure: bytes in, bytes/messages out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_CHUNK_SIZE",
    "MSG_ABORT",
    "MSG_ACK",
    "MSG_AMF0_COMMAND",
    "MSG_AMF0_DATA",
    "MSG_AUDIO",
    "MSG_SET_CHUNK_SIZE",
    "MSG_SET_PEER_BANDWIDTH",
    "MSG_USER_CONTROL",
    "MSG_VIDEO",
    "MSG_WINDOW_ACK_SIZE",
    "ChunkError",
    "ChunkReader",
    "ChunkWriter",
    "Message",
]

# Message type ids (§5.4, §6.2, §7.1).
MSG_SET_CHUNK_SIZE: Final = 1
MSG_ABORT: Final = 2
MSG_ACK: Final = 3
MSG_USER_CONTROL: Final = 4
MSG_WINDOW_ACK_SIZE: Final = 5
MSG_SET_PEER_BANDWIDTH: Final = 6
MSG_AUDIO: Final = 8
MSG_VIDEO: Final = 9
MSG_AMF3_COMMAND: Final = 17
MSG_AMF0_DATA: Final = 18
MSG_AMF0_COMMAND: Final = 20

#: The largest chunk size the spec allows (§5.4.1: 31 bits; 0xFFFFFF in practice).
MAX_CHUNK_SIZE: Final = 0xFFFFFF
_EXTENDED: Final = 0xFFFFFF
_MIN_CSID: Final = 2
_MAX_CSID: Final = 65599


class ChunkError(ValueError):
    """Bytes that break the chunk stream format (the peer broke the protocol)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One reassembled RTMP message (§5.3.1 / §6.1)."""

    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


def basic_header(fmt: int, csid: int) -> bytes:
    """The chunk basic header (§5.3.1.1): 1 byte for csid 2..63, 2 for 64..319, 3 above."""
    if not _MIN_CSID <= csid <= _MAX_CSID:
        raise ValueError(f"chunk stream id {csid} outside {_MIN_CSID}..{_MAX_CSID}")
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    value = csid - 64
    return bytes([fmt << 6 | 1, value & 0xFF, value >> 8])


@dataclass(slots=True)
class _Sent:
    stream_id: int
    length: int
    type_id: int
    timestamp: int


class ChunkWriter:
    """Messages to chunks with per-csid header compression (module doc)."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.chunk_size = 128
        self.set_chunk_size(chunk_size)
        self._last: dict[int, _Sent] = {}

    def set_chunk_size(self, size: int) -> None:
        """Use ``size`` for the next messages (send Set Chunk Size first, :meth:`write`)."""
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = size

    def write(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> bytes:
        """The chunks of one message; ``timestamp`` in ms (taken modulo 2^32)."""
        timestamp &= 0xFFFFFFFF
        length = len(payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes exceeds the 24-bit length field")
        last = self._last.get(csid)
        if last is None or last.stream_id != stream_id or timestamp < last.timestamp:
            fmt, value = 0, timestamp
        elif last.length != length or last.type_id != type_id:
            fmt, value = 1, timestamp - last.timestamp
        else:
            fmt, value = 2, timestamp - last.timestamp
        self._last[csid] = _Sent(stream_id, length, type_id, timestamp)
        extended = value >= _EXTENDED
        field24 = (_EXTENDED if extended else value).to_bytes(3, "big")
        out = bytearray(basic_header(fmt, csid))
        out += field24
        if fmt <= 1:
            out += length.to_bytes(3, "big") + bytes([type_id])
        if fmt == 0:
            out += stream_id.to_bytes(4, "little")  # the one little-endian field (§5.3.1.2.1)
        ext = value.to_bytes(4, "big") if extended else b""
        out += ext
        size = self.chunk_size
        out += payload[:size]
        if length > size:
            continuation = basic_header(3, csid) + ext
            for pos in range(size, length, size):
                out += continuation
                out += payload[pos : pos + size]
        return bytes(out)


@dataclass(slots=True)
class _Incoming:
    """Per-csid reader state: the last header seen and the message being assembled."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    started: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class ChunkReader:
    """Chunks to messages (module doc). :meth:`feed` returns every complete message."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.chunk_size = chunk_size
        self._data = bytearray()
        self._streams: dict[int, _Incoming] = {}

    def feed(self, data: bytes) -> list[Message]:
        """Take received bytes; the messages they complete, in order."""
        self._data += data
        messages: list[Message] = []
        while True:
            used, message = self._chunk()
            if used == 0:
                return messages
            del self._data[:used]
            if message is not None:
                self._control(message)
                messages.append(message)

    def _control(self, message: Message) -> None:
        if message.type_id == MSG_SET_CHUNK_SIZE:
            if len(message.payload) < 4:
                raise ChunkError("Set Chunk Size message shorter than 4 bytes")
            size = int.from_bytes(message.payload[:4], "big") & 0x7FFFFFFF
            if not 1 <= size <= MAX_CHUNK_SIZE:
                raise ChunkError(f"Set Chunk Size {size} outside 1..{MAX_CHUNK_SIZE}")
            self.chunk_size = size
        elif message.type_id == MSG_ABORT:
            if len(message.payload) < 4:
                raise ChunkError("Abort message shorter than 4 bytes")
            state = self._streams.get(int.from_bytes(message.payload[:4], "big"))
            if state is not None:
                state.buffer.clear()
                state.started = False

    def _chunk(self) -> tuple[int, Message | None]:
        """Parse one chunk from the buffer: (bytes used, completed message); (0, None)
        when the buffer does not hold a whole chunk yet."""
        data = self._data
        if not data:
            return 0, None
        fmt = data[0] >> 6
        low = data[0] & 0x3F
        pos = 1
        if low == 0:
            if len(data) < 2:
                return 0, None
            csid = data[1] + 64
            pos = 2
        elif low == 1:
            if len(data) < 3:
                return 0, None
            csid = data[1] + (data[2] << 8) + 64
            pos = 3
        else:
            csid = low
        state = self._streams.get(csid)
        if state is None:
            if fmt != 0:
                raise ChunkError(f"chunk fmt {fmt} on chunk stream {csid} before any fmt 0")
            state = _Incoming()
        header_size = (11, 7, 3, 0)[fmt]
        if len(data) < pos + header_size:
            return 0, None
        if fmt < 3:
            value = int.from_bytes(data[pos : pos + 3], "big")
            extended = value == _EXTENDED
        else:
            value = 0
            extended = state.extended
        if fmt <= 1:
            length = int.from_bytes(data[pos + 3 : pos + 6], "big")
            type_id = data[pos + 6]
        else:
            length, type_id = state.length, state.type_id
        stream_id = (
            int.from_bytes(data[pos + 7 : pos + 11], "little") if fmt == 0 else state.stream_id
        )
        pos += header_size
        if extended:
            if len(data) < pos + 4:
                return 0, None
            ext = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
            if fmt < 3:
                value = ext
        if fmt < 3 and state.started:
            raise ChunkError(f"chunk fmt {fmt} on chunk stream {csid} inside an unfinished message")
        new_message = not state.started
        missing = length - len(state.buffer) if state.started else length
        take = min(self.chunk_size, missing)
        if len(data) < pos + take:
            return 0, None
        # The chunk is whole: commit the header to the csid state.
        self._streams[csid] = state
        if new_message:
            if fmt == 0:
                state.timestamp = value
                state.delta = 0
            elif fmt in (1, 2):
                state.delta = value
                state.timestamp = (state.timestamp + value) & 0xFFFFFFFF
            else:
                state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF
            state.length = length
            state.type_id = type_id
            state.stream_id = stream_id
            state.extended = extended
            state.started = True
            state.buffer.clear()
        state.buffer += data[pos : pos + take]
        pos += take
        if len(state.buffer) < state.length:
            return pos, None
        state.started = False
        payload = bytes(state.buffer)
        state.buffer.clear()
        return pos, Message(csid, state.type_id, state.stream_id, state.timestamp, payload)
