"""A pcap that makes sipp a real callee: H264 video + PCMU audio + RTCP SRs, time-aligned.

The load and soak benchmarks (issue 8) place N concurrent calls through the
REST API to one sipp in server mode running ``bench/scenarios/uas_pcap_media.xml``;
after the ACK each call replays this file with ``<exec play_pcap_audio=.../>``.

What the file holds (classic libpcap, link type Ethernet, IPv4/UDP from and
to 127.0.0.1; sipp rewrites addresses and ports, keeps the RTP bytes):

* ``base_port``: PCMU (RFC 3551 §4.5.14, payload type 0), one 160-byte frame
  every 20 ms, a 440 Hz tone; marker bit on the first packet.
* ``base_port + 1``: audio RTCP, an SR + SDES CNAME compound (RFC 3550 §6.1,
  §6.4.1) every 5 s, the first 10 ms after the first packet.
* ``base_port + 2``: H264 (``video_pt``, 96 by default) from a libx264 clip
  (640x360, 30 fps, constrained baseline, ~1 Mbit/s, an IDR every 2 s with
  SPS/PPS before it, made by ffmpeg once, see :func:`udp_flood.ensure_h264_clip`),
  packetized as RFC 6184 mode 1 does it (STAP-A, single NAL units, FU-A; no
  payload over 1200 bytes; marker on an access unit's last packet). A frame's
  packets leave 100 us apart (a sender paces its bursts).
* ``base_port + 3``: video RTCP, SR + SDES every 5 s, 15 ms after the first.

Both tracks start at capture time 0 and their SRs map RTP time onto the same
NTP wallclock (``EPOCH`` + capture time), exactly: audio timestamp
``a0 + 8000 t``, video ``v0 + 90000 t``. Audio and video are thus aligned and
the receiver's SR-based A/V offset should come out near zero. The clip loops
when ``seconds`` exceeds it (its length is a whole number of GOPs, so the loop
lands on an IDR); sequence numbers and timestamps keep counting. SSRCs, first
sequence numbers and timestamps come from ``seed``: the file is a pure
function of its parameters (and of the clip), so it is cached by them.

How sipp sends it (read in SIPp's source, ``src/prepare_pcap.c``, ``src/send_packets.c``,
``src/call.cpp``, ``src/actions.cpp``; seen to hold for 3.6.1 by
``tests/interop/test_sipp_pcap_media.py``):

* ``prepare_pcap.c`` (``prepare_pkts``) accepts link types ``DLT_EN10MB``
  (Ethernet) and ``DLT_LINUX_SLL`` (Linux cooked) only, IPv4 or IPv6, UDP only
  (other packets are skipped), whole packets only (``caplen == len``) and a
  UDP length of at most ``PCAP_MAXPACKET`` (1500). It loads the file when the
  scenario is parsed (``CAction::setPcapArgs``), so the path cannot be a call
  variable: :func:`write_scenario` writes it into a copy of the scenario.
  ``base`` is the *smallest UDP destination port* in the file.
* ``send_packets.c`` (``send_packet``): each packet goes to
  ``to_port + (its dport - base)`` from ``from_port + (dport - base)``, where
  ``to`` is the ``m=audio`` address of the peer's SDP (``call.cpp``,
  ``get_remote_media_addr``, for ``play_pcap_audio``) and ``from`` sipp's
  ``-mi``/``-mp``. Packet timing is the capture's; payloads (SSRC, sequence
  numbers, timestamps) go out unchanged, UDP checksums are recomputed.

Hence the constraint: the callee's video must be on the caller's audio port
+ 2 (and the RTCP ports +1 and +3). The gateway's offer satisfies it as long
as ``sipbridge.ports.RtpPortAllocator`` hands out the audio pair and then the
video pair next to it: it allocates round robin over the ``[rtp]`` range, so
this holds while the range has room after the audio pair (no wrap-around)
and no pair between them is taken; size the range as a multiple of 4 ports
with headroom (``tests/interop/test_sipp_pcap_media.py`` asserts it per call).

Run ``python bench/sipp_media.py --seconds 90 --out DIR`` to write (or reuse)
the pcap and a ready scenario in ``DIR``; it prints the figures and a sipp
command line.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (ROOT, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))  # run as a script: make rtp/ and udp_flood importable

from udp_flood import Clip, build_clip, ensure_h264_clip  # noqa: E402

from rtp.rtcp import (  # noqa: E402
    NTP_UNIX_OFFSET,
    SdesChunk,
    SdesType,
    SenderReport,
    SourceDescription,
    serialize_compound,
)

__all__ = [
    "AUDIO_PT",
    "DEFAULT_VIDEO_PT",
    "SCENARIO_TEMPLATE",
    "MediaPcapInfo",
    "cached_media_pcap",
    "main",
    "write_media_pcap",
    "write_scenario",
]

#: The gateway's first H264 payload type in its offer, the packetization-mode=1 one
#: (``sipbridge/sip/offer_answer.py``, ``_CATALOG["h264"]``).
DEFAULT_VIDEO_PT = 96
AUDIO_PT = 0
#: Capture time 0 as Unix time: a fixed instant keeps the file a function of its parameters.
EPOCH = 1_700_000_000
WIDTH, HEIGHT, FPS = 640, 360, 30
AUDIO_RATE, VIDEO_RATE = 8000, 90000
AUDIO_PTIME_US = 20_000
SR_INTERVAL_US = 5_000_000
AUDIO_SR_OFFSET_US, VIDEO_SR_OFFSET_US = 10_000, 15_000
#: Spacing of the packets of one video frame, at most a third of the frame interval in all.
PACKET_GAP_US = 100
CLIP_NAME = "clip.h264"
CLIP_SECONDS = 10  # 300 frames: 5 GOPs of 60
SCENARIO_TEMPLATE = BENCH / "scenarios" / "uas_pcap_media.xml"
#: Bumped when the file's content changes for the same parameters (cache names carry it).
FORMAT_VERSION = 1
#: The two strings of the template that :func:`write_scenario` replaces.
_TEMPLATE_PCAP = 'play_pcap_audio="uas_pcap_media.pcap"'
_TEMPLATE_PT = "a=fmtp:(96) "

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETHERNET = bytes(12) + b"\x08\x00"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_RTP = struct.Struct("!BBHII")
_LOCALHOST = bytes([127, 0, 0, 1])
_LINKTYPE_ETHERNET = 1
_MAX_UDP = 1500  # sipp's PCAP_MAXPACKET: UDP header + payload


@dataclass(frozen=True)
class MediaPcapInfo:
    """What a media pcap holds; ``bytes`` is the file's size."""

    path: Path
    seconds: float
    base_port: int
    seed: int
    video_pt: int
    audio_pt: int
    audio_packets: int
    audio_rtcp_packets: int
    video_packets: int
    video_rtcp_packets: int
    audio_frames: int
    video_frames: int
    video_keyframes: int
    width: int
    height: int
    fps: int
    bytes: int

    @property
    def packets_per_track(self) -> dict[str, int]:
        """Packets per destination, keyed ``audio``, ``audio-rtcp``, ``video``, ``video-rtcp``."""
        return {
            "audio": self.audio_packets,
            "audio-rtcp": self.audio_rtcp_packets,
            "video": self.video_packets,
            "video-rtcp": self.video_rtcp_packets,
        }

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MediaPcapInfo:
        values = dict(data)
        values["path"] = Path(str(values["path"]))
        return cls(**values)  # type: ignore[arg-type]


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(ip_id: int, port: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP around ``payload``, 127.0.0.1:port to 127.0.0.1:port.

    The UDP checksum is 0 (none, RFC 768): sipp recomputes it when it sends.
    """
    udp_length = _UDP.size + len(payload)
    if udp_length > _MAX_UDP:
        raise ValueError(f"UDP datagram of {udp_length} bytes exceeds sipp's {_MAX_UDP}")
    total = _IPV4.size + udp_length
    fields = (0x45, 0, total, ip_id & 0xFFFF, 0x4000, 64, 17)
    header = _IPV4.pack(*fields, 0, _LOCALHOST, _LOCALHOST)
    header = _IPV4.pack(*fields, _ipv4_checksum(header), _LOCALHOST, _LOCALHOST)
    return _ETHERNET + header + _UDP.pack(port, port, udp_length, 0) + payload


def _ntp(t_us: int) -> int:
    """The 64-bit NTP timestamp (RFC 3550 §4) of capture time ``t_us``, computed exactly."""
    seconds, micros = divmod(t_us, 1_000_000)
    return ((EPOCH + NTP_UNIX_OFFSET + seconds) << 32) | (micros << 32) // 1_000_000


@dataclass
class _Track:
    ssrc: int
    seq: int
    ts0: int
    rate: int
    packets: int = 0
    octets: int = 0

    def rtp(self, b1: int, ts: int, payload: bytes) -> bytes:
        packet = _RTP.pack(0x80, b1, self.seq, ts & 0xFFFFFFFF, self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return packet

    def sender_report(self, t_us: int, cname: bytes) -> bytes:
        """SR + SDES CNAME (RFC 3550 §6.4.1, §6.5.1) for the instant ``t_us``."""
        report = SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=_ntp(t_us),
            rtp_timestamp=(self.ts0 + t_us * self.rate // 1_000_000) & 0xFFFFFFFF,
            packet_count=self.packets & 0xFFFFFFFF,
            octet_count=self.octets & 0xFFFFFFFF,
        )
        sdes = SourceDescription([SdesChunk(self.ssrc, [(SdesType.CNAME, cname)])])
        return serialize_compound([report, sdes])


def _events(
    clip: Clip, seconds: float, video_pt: int, seed: int
) -> Iterator[tuple[int, int, int, bytes]]:
    """(capture time us, order, port offset, UDP payload), unsorted; also fills counters."""
    rng = random.Random(seed)
    audio = _Track(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32), AUDIO_RATE)
    video = _Track(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32), VIDEO_RATE)
    cname = f"sipp-media-{seed}@127.0.0.1".encode()
    end_us = round(seconds * 1_000_000)
    order = 0
    # Kinds in time order per track; SRs are generated after the media before them so
    # their packet and octet counts are the ones sent up to their instant.
    audio_times = range(0, end_us, AUDIO_PTIME_US)
    video_count = round(seconds * FPS)
    sr_times = range(0, end_us, SR_INTERVAL_US)
    timeline: list[tuple[int, int, int]] = []  # (t_us, kind, index)
    timeline += [(t, 0, i) for i, t in enumerate(audio_times)]
    timeline += [(f * 1_000_000 // FPS, 1, f) for f in range(video_count)]
    timeline += [(t + AUDIO_SR_OFFSET_US, 2, 0) for t in sr_times]
    timeline += [(t + VIDEO_SR_OFFSET_US, 3, 0) for t in sr_times]
    timeline.sort()
    for t_us, kind, index in timeline:
        if kind == 0:
            marker = 0x80 if index == 0 else 0
            payload = clip.audio[index % len(clip.audio)]
            packet = audio.rtp(marker | AUDIO_PT, audio.ts0 + index * 160, payload)
            yield t_us, order, 0, packet
            order += 1
        elif kind == 1:
            payloads = clip.frames[index % len(clip.frames)]
            gap = min(PACKET_GAP_US, 1_000_000 // FPS // 3 // len(payloads))
            ts = video.ts0 + index * (VIDEO_RATE // FPS)
            for i, payload in enumerate(payloads):
                b1 = (0x80 if i == len(payloads) - 1 else 0) | video_pt
                yield t_us + i * gap, order, 2, video.rtp(b1, ts, payload)
                order += 1
        else:
            track, offset = (audio, 1) if kind == 2 else (video, 3)
            yield t_us, order, offset, track.sender_report(t_us, cname)
            order += 1


def write_media_pcap(
    path: Path,
    *,
    seconds: float,
    base_port: int = 6000,
    seed: int = 1,
    video_pt: int = DEFAULT_VIDEO_PT,
    clip_path: Path | None = None,
) -> MediaPcapInfo:
    """Write the media pcap described in the module docstring to ``path`` (always).

    ``clip_path`` is the libx264 elementary stream to packetize, made by ffmpeg
    when missing (default ``clip.h264`` next to ``path``). See
    :func:`cached_media_pcap` for the reusing variant.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    if not 1024 <= base_port <= 65532:
        raise ValueError(f"base_port {base_port} leaves no room for 4 ports")
    if not 96 <= video_pt <= 127:
        raise ValueError(f"video payload type {video_pt} is not dynamic (96-127)")
    clip_file = ensure_h264_clip(clip_path or path.parent / CLIP_NAME, seconds=CLIP_SECONDS)
    clip = build_clip(clip_file)
    events = sorted(_events(clip, seconds, video_pt, seed))
    counts = {0: 0, 1: 0, 2: 0, 3: 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        out.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, _LINKTYPE_ETHERNET))
        for ip_id, (t_us, _, offset, payload) in enumerate(events):
            frame = _frame(ip_id, base_port + offset, payload)
            t_sec, t_usec = divmod(t_us, 1_000_000)
            out.write(_RECORD.pack(EPOCH + t_sec, t_usec, len(frame), len(frame)) + frame)
            counts[offset] += 1
    partial.replace(path)
    video_frames = round(seconds * FPS)
    keyframes = sum(clip.keyframes[f % len(clip.frames)] for f in range(video_frames))
    return MediaPcapInfo(
        path=path,
        seconds=seconds,
        base_port=base_port,
        seed=seed,
        video_pt=video_pt,
        audio_pt=AUDIO_PT,
        audio_packets=counts[0],
        audio_rtcp_packets=counts[1],
        video_packets=counts[2],
        video_rtcp_packets=counts[3],
        audio_frames=counts[0],
        video_frames=video_frames,
        video_keyframes=keyframes,
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        bytes=path.stat().st_size,
    )


def cached_media_pcap(
    cache_dir: Path,
    *,
    seconds: float,
    base_port: int = 6000,
    seed: int = 1,
    video_pt: int = DEFAULT_VIDEO_PT,
) -> MediaPcapInfo:
    """The media pcap for these parameters in ``cache_dir``, written on first use only.

    Named by its parameters; a JSON file beside it keeps its :class:`MediaPcapInfo`.
    The clip is ``cache_dir/clip.h264`` (``bench/ingest.py`` uses the same name in
    ``artifacts/bench``).
    """
    name = f"sipp_media_{seconds:g}s_port{base_port}_pt{video_pt}_seed{seed}_v{FORMAT_VERSION}"
    path = cache_dir / f"{name}.pcap"
    sidecar = cache_dir / f"{name}.json"
    if path.exists() and sidecar.exists():
        info = MediaPcapInfo.from_json(json.loads(sidecar.read_text()))
        if info.bytes == path.stat().st_size:
            return MediaPcapInfo(**{**asdict(info), "path": path})
    info = write_media_pcap(
        path, seconds=seconds, base_port=base_port, seed=seed, video_pt=video_pt,
        clip_path=cache_dir / CLIP_NAME,
    )  # fmt: skip
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    partial.replace(sidecar)
    return info


def write_scenario(path: Path, pcap: MediaPcapInfo) -> Path:
    """A copy of ``bench/scenarios/uas_pcap_media.xml`` at ``path`` playing ``pcap``.

    sipp 3.6.1 reads a ``play_pcap_audio`` file when it parses the scenario, so the
    absolute path is written in; the offer must carry ``pcap.video_pt`` as H264 with
    packetization-mode=1 (the scenario's ``check_it`` fails the call otherwise).
    """
    pcap_path = str(pcap.path.resolve())
    if any(c in pcap_path for c in '"&<>'):
        raise ValueError(f"pcap path {pcap_path!r} cannot go into an XML attribute as is")
    text = SCENARIO_TEMPLATE.read_text()
    for marker in (_TEMPLATE_PCAP, _TEMPLATE_PT):
        if text.count(marker) != 1:
            raise ValueError(f"{SCENARIO_TEMPLATE} must hold {marker!r} exactly once")
    text = text.replace(_TEMPLATE_PCAP, f'play_pcap_audio="{pcap_path}"')
    text = text.replace(_TEMPLATE_PT, f"a=fmtp:({pcap.video_pt}) ")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="media length")
    parser.add_argument("--out", default=str(ROOT / "artifacts/bench"), help="cache folder")
    parser.add_argument("--base-port", type=int, default=6000, help="audio RTP port in the pcap")
    parser.add_argument("--seed", type=int, default=1, help="SSRC/sequence/timestamp seed")
    parser.add_argument("--video-pt", type=int, default=DEFAULT_VIDEO_PT)
    args = parser.parse_args(argv)
    out = Path(args.out)
    info = cached_media_pcap(
        out, seconds=args.seconds, base_port=args.base_port, seed=args.seed,
        video_pt=args.video_pt,
    )  # fmt: skip
    scenario = write_scenario(out / "uas_pcap_media.xml", info)
    print(json.dumps(info.to_json(), indent=2))
    print(f"{info.bytes_per_second / 1000:.1f} kB/s of capture")
    print(f"wrote {info.path}\nwrote {scenario}")
    print(
        "run (as root): sipp -sf "
        f"{scenario} -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 7000 -m 100000 -nostdin "
        "-bind_local"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
