"""Coverage-guided fuzz target: the H264 depacketizer (RFC 6184) and SPS/PPS/slice bit parsing.

Input format (so that real packet sequences can seed the corpus): one byte
of options (bit 0: start with the test SDP's ``sprop-parameter-sets``), then
records ``flags(1) length(2, big-endian) payload``. Flags: bit 0 marker,
bit 1 discontinuity, bits 2-3 packets lost before this one, bits 4-7 the
timestamp step in 3000-tick frames. A trailing partial record is cut short.

Contract: :meth:`H264Depacketizer.push` and ``flush`` never raise on packet
content and emit only Annex B access units that start with a 4-byte start
code; :func:`parse_sps`, :func:`pps_id`, :func:`sps_id`,
:func:`first_mb_in_slice` and :func:`parse_sprop_parameter_sets` raise only
:class:`ValueError`.
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]  # ships no type information

with atheris.instrument_imports():
    from rtp.depacketize.h264 import H264Depacketizer, parse_sprop_parameter_sets
    from rtp.h264_bits import first_mb_in_slice, parse_sps, pps_id, split_annexb, sps_id
    from rtp.packet import RtpPacket

#: Baseline 320x240 parameter sets (tests/vectors/h264/baseline_320x240.h264).
SPROP = "Z0LAFdkBQfsBEAAAAwAQAAADAyDxYuSA,aMuMsg=="
_START_CODE_4 = b"\x00\x00\x00\x01"
_BIT_PARSERS = (parse_sps, pps_id, sps_id, first_mb_in_slice)


def records(data: bytes) -> list[tuple[int, bytes]]:
    """The (flags, payload) records after the options byte (module doc)."""
    out: list[tuple[int, bytes]] = []
    pos = 1
    while pos + 3 <= len(data):
        flags, length = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "big")
        payload = data[pos + 3 : pos + 3 + length]
        out.append((flags, payload))
        pos += 3 + length
    return out


def test_one_input(data: bytes) -> None:
    """One libFuzzer input: a packet sequence for one depacketizer (format: module doc)."""
    if not data:
        return
    with contextlib.suppress(ValueError):
        parse_sprop_parameter_sets(data.decode("utf-8", "replace"))
    for nal in split_annexb(data):
        for parse in _BIT_PARSERS:
            with contextlib.suppress(ValueError):
                parse(nal)
    depacketizer = H264Depacketizer(sprop_parameter_sets=SPROP if data[0] & 1 else None)
    frames = []
    sequence, timestamp = 0, 0
    for flags, payload in records(data):
        for parse in _BIT_PARSERS:
            with contextlib.suppress(ValueError):
                parse(payload)
        lost = (flags >> 2) & 3
        sequence = (sequence + 1 + lost) & 0xFFFF
        timestamp += (flags >> 4) * 3000
        packet = RtpPacket(
            payload_type=96,
            sequence_number=sequence,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=7,
            marker=bool(flags & 1),
            payload=payload,
        )
        frames += depacketizer.push(
            packet,
            extended_timestamp=timestamp,
            arrival=0.0,
            lost_before=lost,
            discontinuity=bool(flags & 2),
        )
    frames += depacketizer.flush()
    assert depacketizer.stats.frames == len(frames)
    assert depacketizer.stats.keyframes == sum(frame.keyframe for frame in frames)
    for frame in frames:
        assert frame.payload.startswith(_START_CODE_4), frame.payload[:8]


def main() -> None:
    """Entry point: libFuzzer arguments from the command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
