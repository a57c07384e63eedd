"""Media ingest against a real sender: ffmpeg sends RTP (+ RTCP SR) to CallMedia on RtpSession.

Library level, no SIP: the sockets come from :class:`RtpPortAllocator` as a
call's would, :class:`CallMedia` runs on :class:`RtpSession`, and what it
publishes (``FrameReady`` events) is checked as a consumer would see it:

a. byte-identical H264 access units (against ffmpeg's own Annex B bitstream
   of the clip), identical audio frames, monotonic PTS, PCMU and Opus;
b. through the impairment proxy (5 % loss, 60 ms jitter, 5 % reordering):
   media keeps flowing and A/V alignment, measured on the decoded output with
   the flash-and-beep clip, matches the sender's; ffmpeg receiving the very
   same impaired packets is measured the same way as a reference;
c. no RTCP at all and audio starting 500 ms late: aligned by arrival.

Figures go to ``artifacts/<test>/figures.json`` and to stdout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rtp.depacketize import split_annexb
from rtp.frame import MediaFrame
from rtp.h264_bits import NAL_IDR, nal_type
from rtp.media import CallMedia, FrameReady
from rtp.session import RtpSession
from rtp.track import TrackConfig
from sipbridge.ports import PortPair, RtpPortAllocator
from tests.interop.impair import Impairment, ImpairmentProxy
from tests.interop.media_tools import (
    AlignmentReport,
    AudioCodecName,
    ClipSpec,
    beep_onsets,
    container_packets,
    decode_audio,
    decode_h264,
    flash_onsets,
    make_clip,
    measure_alignment,
    read_container,
    receiver_argv,
    receiver_sdp,
    reference_access_units,
    sender_argv,
    source_truth,
    sprop_parameter_sets,
)
from tests.interop.peers import LOCALHOST, ManagedProcess, free_port, port_is_bound, require_binary

pytestmark = pytest.mark.interop

Address = tuple[str, int]
#: Where our keepalives go before latching: the discard port, nobody listens.
NOWHERE: Address = (LOCALHOST, 9)
#: After the sender exits: jitter buffers (up to 0.5 s) release what they hold.
DRAIN = 0.8
SEED = 20240613
#: The ffmpeg reference receiver stops by itself this long before the clip's end.
REFERENCE_MARGIN = 0.6
FLASH_CLIP = ClipSpec(pattern="flash", width=320, height=240, duration=12.0)


@pytest.fixture
def ffmpeg() -> str:
    return require_binary("ffmpeg")


@dataclass
class Ingest:
    """One call's media path as the gateway builds it, without SIP."""

    media: CallMedia
    session: RtpSession
    allocator: RtpPortAllocator
    pairs: dict[str, PortPair]
    frames: dict[str, list[MediaFrame]] = field(default_factory=lambda: {"audio": [], "video": []})

    def ports(self, kind: str) -> tuple[int, int]:
        pair = self.pairs[kind]
        return pair.rtp_port, pair.rtcp_port

    def drain(self) -> None:
        for event in self.media.take_events():
            if isinstance(event, FrameReady):
                self.frames[event.frame.kind].append(event.frame)

    @property
    def video(self) -> list[MediaFrame]:
        return self.frames["video"]

    @property
    def audio(self) -> list[MediaFrame]:
        return self.frames["audio"]

    async def close(self) -> None:
        self.media.stop(asyncio.get_running_loop().time())
        self.drain()
        await self.session.stop()
        for pair in self.pairs.values():
            self.allocator.release(pair)


async def open_ingest(audio_codec: AudioCodecName, sprop: str) -> Ingest:
    base = free_port(span=8)
    allocator = RtpPortAllocator(LOCALHOST, base, base + 8)
    pairs = {"audio": allocator.allocate(), "video": allocator.allocate()}
    audio_format: tuple[str, int, int, dict[str, str]] = (
        ("PCMU", 8000, 1, {}) if audio_codec == "PCMU" else ("opus", 48000, 2, {})
    )
    audio_pt = 0 if audio_codec == "PCMU" else 111
    fmtp = {"packetization-mode": "1", "sprop-parameter-sets": sprop}
    loop = asyncio.get_running_loop()
    media = CallMedia(
        [
            TrackConfig("audio", NOWHERE, NOWHERE, False, {audio_pt: audio_format}),
            TrackConfig("video", NOWHERE, NOWHERE, False, {96: ("H264", 90000, 1, fmtp)}),
        ],
        now=loop.time(),
        inactivity_timeout=0,
    )
    sockets = {}
    for kind, pair in pairs.items():
        sockets[f"{kind}-rtp"] = pair.rtp_socket
        sockets[f"{kind}-rtcp"] = pair.rtcp_socket
    # The lambda looks ``ingest`` up when frames come, after it is assigned.
    session = RtpSession(media, sockets, on_activity=lambda: ingest.drain())
    ingest = Ingest(media, session, allocator, pairs)
    await session.start()
    return ingest


async def run_to_end(process: ManagedProcess, timeout: float) -> int:
    """Wait for a started program to exit on its own, without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while (code := process.poll()) is None:
        if time.monotonic() > deadline:
            process.stop()
            pytest.fail(f"{process.name} still running after {timeout:g} s:\n{process.log_tail()}")
        await asyncio.sleep(0.05)
    return code


async def wait_bound(ports: Sequence[int], process: ManagedProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(port_is_bound(port) for port in ports):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{process.name} did not bind {list(ports)}:\n{process.log_tail()}")
        await asyncio.sleep(0.05)


def assert_monotonic(frames: Sequence[MediaFrame], kind: str) -> list[float]:
    pts = [frame.pts for frame in frames]
    assert all(p is not None for p in pts), f"{kind}: a frame left without pts"
    values = [float(p) for p in pts if p is not None]
    backwards = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(values)) if b < a]
    assert not backwards, f"{kind} pts went backwards at {backwards[:5]}"
    return values


def max_gap(values: Sequence[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(values)), default=float("inf"))


def our_alignment(ingest: Ingest, spec: ClipSpec, truth: float) -> tuple[AlignmentReport, int]:
    """Decode what we published and measure flash-to-beep offsets; also decode errors."""
    pictures, errors = decode_h264([(f.pts or 0.0, f.payload) for f in ingest.video])
    chunks, _ = decode_audio([(f.pts or 0.0, f.payload) for f in ingest.audio], spec.audio)
    flashes = flash_onsets(pictures, 1 / spec.fps)
    report = measure_alignment(flashes, beep_onsets(chunks), truth=truth, period=spec.period)
    return report, errors


def reference_alignment(output: Path, spec: ClipSpec, truth: float) -> AlignmentReport:
    pictures, chunks = read_container(output)
    flashes = flash_onsets(pictures, 1 / spec.fps)
    return measure_alignment(flashes, beep_onsets(chunks), truth=truth, period=spec.period)


def record(artifacts_dir: Path, figures: dict[str, Any]) -> None:
    text = json.dumps(figures, indent=2, sort_keys=True)
    (artifacts_dir / "figures.json").write_text(text + "\n")
    print(text)


def track_figures(ingest: Ingest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, track in ingest.media.tracks.items():
        jitter = track.jitter.stats
        out[kind] = {
            "published": len(ingest.frames[kind]),
            "packets": track.stats.packets,
            "sender_reports": track.stats.sender_reports,
            "lost": jitter.lost,
            "reordered": jitter.reordered,
            "late": jitter.late,
            "duplicates": jitter.duplicates,
        }
    out["sync_mode"] = ingest.media.clock.sync_mode
    out["av_offset_ms"] = (
        None if ingest.media.clock.av_offset is None else ingest.media.clock.av_offset * 1000
    )
    return out


@dataclass
class ImpairedRun:
    """A clip sent by ffmpeg through the proxy to us and to an ffmpeg receiver."""

    ingest: Ingest
    proxy: ImpairmentProxy
    reference: Path


async def impaired_run(
    ffmpeg: str, spec: ClipSpec, impairment: Impairment, artifacts_dir: Path, tmp_path: Path
) -> ImpairedRun:
    clip = make_clip(ffmpeg, spec, tmp_path / "clip.mkv")
    sprop = sprop_parameter_sets(clip)
    ingest = await open_ingest(spec.audio, sprop)
    proxy = ImpairmentProxy(impairment, seed=SEED)
    receiver: ManagedProcess | None = None
    sender: ManagedProcess | None = None
    try:
        ref_video = free_port(span=4)  # RTP, RTCP for video, then audio
        ref_audio = ref_video + 2
        links = {}
        for kind, ref in (("video", ref_video), ("audio", ref_audio)):
            ours = ingest.ports(kind)
            links[kind] = await proxy.forward_pair(
                [(LOCALHOST, ours[0]), (LOCALHOST, ref)],
                [(LOCALHOST, ours[1]), (LOCALHOST, ref + 1)],
                name=kind,
            )
        sdp = tmp_path / "call.sdp"
        sdp.write_text(
            receiver_sdp(
                video_port=ref_video, audio_port=ref_audio, audio_codec=spec.audio, sprop=sprop
            )
        )
        reference = artifacts_dir / "ffmpeg-received.nut"
        receiver = ManagedProcess(
            receiver_argv(ffmpeg, sdp, reference, duration=spec.duration - REFERENCE_MARGIN),
            name="ffmpeg-receiver",
            log_dir=artifacts_dir,
        ).start()
        await wait_bound([ref_video, ref_audio], receiver)
        sender = ManagedProcess(
            sender_argv(
                ffmpeg,
                clip,
                video=(links["video"][0].port, links["video"][1].port),
                audio=(links["audio"][0].port, links["audio"][1].port),
                audio_codec=spec.audio,
            ),
            name="ffmpeg-sender",
            log_dir=artifacts_dir,
        ).start()
        assert await run_to_end(sender, spec.duration + 10) == 0, sender.log_tail()
        await asyncio.sleep(DRAIN)
        assert await run_to_end(receiver, 5.0) == 0, receiver.log_tail()
    finally:
        await ingest.close()
        await proxy.stop()
        if sender is not None:
            sender.stop()
        if receiver is not None:
            receiver.stop()
    return ImpairedRun(ingest, proxy, reference)


# --------------------------------------------------------------------------- a. bit-exact


@pytest.mark.parametrize(
    "spec",
    [
        ClipSpec(audio="PCMU", profile="baseline"),
        ClipSpec(audio="opus", profile="high"),
    ],
    ids=["h264-baseline+pcmu", "h264-high+opus"],
)
async def test_ffmpeg_stream_is_published_bit_exact(
    ffmpeg: str, spec: ClipSpec, artifacts_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(ffmpeg, spec, tmp_path / "clip.mkv")
    reference = reference_access_units(ffmpeg, clip, tmp_path / "reference.h264")
    _, clip_audio = container_packets(clip)
    assert len(reference) == spec.video_frames
    ingest = await open_ingest(spec.audio, sprop_parameter_sets(clip))
    sender = ManagedProcess(
        sender_argv(
            ffmpeg,
            clip,
            video=ingest.ports("video"),
            audio=ingest.ports("audio"),
            audio_codec=spec.audio,
        ),
        name="ffmpeg-sender",
        log_dir=artifacts_dir,
    )
    try:
        sender.start()
        assert await run_to_end(sender, spec.duration + 10) == 0, sender.log_tail()
        await asyncio.sleep(DRAIN)
    finally:
        await ingest.close()
        sender.stop()
    figures = track_figures(ingest)
    record(artifacts_dir, figures)

    published = [frame.payload for frame in ingest.video]
    assert len(published) == len(reference)
    mismatched = [i for i, (a, b) in enumerate(zip(published, reference, strict=True)) if a != b]
    assert not mismatched, f"access units {mismatched[:10]} differ from ffmpeg's Annex B"
    keyframes = [frame.keyframe for frame in ingest.video]
    assert keyframes == [NAL_IDR in _nal_types(unit) for unit in reference]
    assert {frame.codec for frame in ingest.audio} == {spec.audio}
    assert [frame.payload for frame in ingest.audio] == clip_audio
    video_pts = assert_monotonic(ingest.video, "video")
    audio_pts = assert_monotonic(ingest.audio, "audio")
    # 25 fps and 20 ms frames on one clock: spans match the clip's.
    assert video_pts[-1] - video_pts[0] == pytest.approx((len(reference) - 1) / spec.fps, abs=0.05)
    assert audio_pts[-1] - audio_pts[0] == pytest.approx((len(clip_audio) - 1) * 0.02, abs=0.05)
    assert figures["sync_mode"] == "sender-reports"
    assert figures["video"]["lost"] == 0 and figures["audio"]["lost"] == 0


def _nal_types(unit: bytes) -> set[int]:
    """The nal_unit_type of every NAL unit of an Annex B access unit."""
    return {nal_type(nal) for nal in split_annexb(unit)}


# --------------------------------------------------------------------------- b. impaired


async def test_alignment_survives_loss_jitter_and_reordering(
    ffmpeg: str, artifacts_dir: Path, tmp_path: Path
) -> None:
    spec = FLASH_CLIP
    impairment = Impairment(loss=0.05, jitter_ms=60, reorder=0.05)
    run = await impaired_run(ffmpeg, spec, impairment, artifacts_dir, tmp_path)
    ingest = run.ingest
    truth = source_truth(tmp_path / "clip.mkv", spec)
    ours, decode_errors = our_alignment(ingest, spec, truth)
    theirs = reference_alignment(run.reference, spec, truth)
    figures = {
        "impairment": {"loss": 0.05, "jitter_ms": 60, "reorder": 0.05, "seed": SEED},
        "proxy": run.proxy.totals(),
        "ours": ours.summary(),
        "ffmpeg": theirs.summary(),
        "tracks": track_figures(ingest),
        "decode_errors": decode_errors,
    }
    record(artifacts_dir, figures)

    totals = run.proxy.totals()
    assert totals["lost"] > 0 and totals["reordered"] > 0, totals
    video_pts = assert_monotonic(ingest.video, "video")
    audio_pts = assert_monotonic(ingest.audio, "audio")
    # Kept publishing: every flash is an IDR (0.6 s apart), audio frames are 20 ms.
    assert video_pts[-1] - video_pts[0] > spec.duration - 1.5
    assert max_gap(video_pts) < 1.3
    assert len(ingest.audio) > 0.85 * spec.audio_frames
    assert max_gap(audio_pts) < 0.25
    assert decode_errors == 0  # never a frame the decoder cannot use
    assert ours.events >= 10, ours.summary()
    assert ours.max_abs_ms <= 5.0, ours.summary()
    assert ours.median_abs_ms <= 2.0, ours.summary()
    assert theirs.events > 0, f"the ffmpeg reference measured nothing: {theirs.summary()}"


# --------------------------------------------------------------------------- c. no RTCP


async def test_without_rtcp_late_audio_is_aligned_by_arrival(
    ffmpeg: str, artifacts_dir: Path, tmp_path: Path
) -> None:
    # Flashes 1.2 s apart: a 500 ms misalignment cannot pair with the wrong beep.
    spec = ClipSpec(
        pattern="flash", width=320, height=240, duration=12.5, flash_every=30, audio_start=0.5
    )
    run = await impaired_run(ffmpeg, spec, Impairment(drop_rtcp=True), artifacts_dir, tmp_path)
    ingest = run.ingest
    truth = source_truth(tmp_path / "clip.mkv", spec)
    ours, _ = our_alignment(ingest, spec, truth)
    theirs = reference_alignment(run.reference, spec, truth)
    tracks = track_figures(ingest)
    figures = {
        "proxy": run.proxy.totals(),
        "ours": ours.summary(),
        "ffmpeg": theirs.summary(),
        "tracks": tracks,
        "first_audio_pts": ingest.audio[0].pts if ingest.audio else None,
    }
    record(artifacts_dir, figures)

    assert run.proxy.totals()["rtcp_dropped"] > 0
    assert tracks["video"]["sender_reports"] == 0 and tracks["audio"]["sender_reports"] == 0
    assert tracks["sync_mode"] == "arrival"
    assert_monotonic(ingest.video, "video")
    assert_monotonic(ingest.audio, "audio")
    assert ingest.video[0].pts == 0.0
    assert ingest.audio[0].pts == pytest.approx(spec.audio_start, abs=0.04)
    assert ours.events >= 8, ours.summary()
    assert ours.max_abs_ms <= 40.0, ours.summary()
