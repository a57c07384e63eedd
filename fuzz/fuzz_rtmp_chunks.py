"""Coverage-guided fuzz target: the RTMP chunk stream reader (RTMP spec §5.3, §5.4.1-§5.4.2).

Contract: :meth:`ChunkReader.feed` raises only :class:`ChunkError`, and how
the bytes are split across ``feed`` calls does not change the messages.
The first input byte picks the split point; the reader starts at chunk size 128.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from rtmp.chunks import ChunkError, ChunkReader, Message


def _read(pieces: list[bytes]) -> list[Message] | None:
    reader = ChunkReader()
    messages: list[Message] = []
    try:
        for piece in pieces:
            messages += reader.feed(piece)
    except ChunkError:
        return None
    return messages


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: bytes received from an RTMP server after the handshake."""
    if not data:
        return
    body = data[1:]
    cut = data[0] % (len(body) + 1)
    whole = _read([body])
    split = _read([body[:cut], body[cut:]])
    if whole is not None and split is not None:
        assert [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in whole] == [
            (m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in split
        ]


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
