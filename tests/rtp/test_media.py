"""CallMedia: frames on one call clock, events, RFC 4733 DTMF out, inactivity, stop.

Virtual time throughout: :class:`~tests.rtp.test_track.Runner` fires
``handle_timer`` whenever ``now`` reaches ``get_timer()``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtp.dtmf import TelephoneEvent
from rtp.media import (
    CallMedia,
    DtmfDigit,
    FrameReady,
    KeyframeRequested,
    MediaEvent,
    MediaInactive,
)
from rtp.packet import RtpPacket
from rtp.rtcp import (
    FullIntraRequest,
    Goodbye,
    PictureLossIndication,
    ReceiverReport,
    SourceDescription,
    ntp_from_unix,
)
from rtp.track import TrackConfig
from tests.rtp.test_track import (
    NAT_RTCP,
    NAT_RTP,
    PCMA,
    REMOTE_RTCP,
    REMOTE_RTP,
    REMOTE_SSRC,
    TE_PT,
    Runner,
    audio_config,
    dtmf_packets,
    keyframe_requests,
    pcmu,
    rtp,
    sender_report,
    video_config,
    video_stream,
)

NTP_BASE = 1_700_000_000.0


@dataclass
class MediaRun(Runner):
    """A Runner over a CallMedia that collects its events with the time they came."""

    events: list[tuple[float, MediaEvent]] = field(default_factory=list)

    def of(self, kind: type[MediaEvent]) -> list[MediaEvent]:
        return [event for _, event in self.events if isinstance(event, kind)]

    def frames(self, kind: str | None = None) -> list[FrameReady]:
        return [
            event
            for _, event in self.events
            if isinstance(event, FrameReady) and kind in (None, event.frame.kind)
        ]


def media_run(
    configs: list[TrackConfig], *, now: float = 0.0, inactivity_timeout: float = 30.0
) -> tuple[CallMedia, MediaRun]:
    media = CallMedia(configs, now=now, inactivity_timeout=inactivity_timeout)
    run = MediaRun(media, now=now)

    def collect() -> None:
        run.events += [(run.now, event) for event in media.take_events()]

    run.collect = collect
    return media, run


def quiet_audio(**kwargs: object) -> TrackConfig:
    return audio_config(None, keepalive=False, **kwargs)


# -- frames and the call clock --------------------------------------------------------------


def test_pcmu_stream_becomes_frames_with_monotonic_pts() -> None:
    _, run = media_run([quiet_audio()])
    arrivals = {}
    for i in range(100):
        run.deliver("audio-rtp", pcmu(i), NAT_RTP, i * 0.02)
        arrivals[8000 + 160 * i] = i * 0.02
    run.run_until(3.0)

    frames = run.frames()
    assert len(frames) == 100
    pts = [event.frame.pts for event in frames]
    assert pts[0] == 0.0
    assert all(p is not None for p in pts)
    steps = [b - a for a, b in itertools.pairwise(p for p in pts if p is not None)]
    assert all(step == pytest.approx(0.02) for step in steps)
    # Each came out after its arrival, by at least the jitter buffer's minimum delay.
    for at, event in run.events:
        assert isinstance(event, FrameReady)
        assert at >= arrivals[event.frame.rtp_timestamp] + 0.02 - 1e-9


def test_audio_and_video_frames_share_one_clock_synced_by_sender_reports() -> None:
    media, run = media_run([quiet_audio(), video_config(keepalive=False)], inactivity_timeout=0)
    timeline: list[tuple[float, str, bytes, tuple[str, int]]] = []
    for i in range(150):  # 3 s of audio, 20 ms packets
        timeline.append((i * 0.02 + 0.005, "audio-rtp", pcmu(i), NAT_RTP))
    for at, data in video_stream(75, seq0=1):  # 3 s of video at 25 fps, 30 ms later
        timeline.append((at + 0.035, "video-rtp", data, NAT_RTP))
    for t in (1.0, 2.0):
        ntp = ntp_from_unix(NTP_BASE + t)
        # Both tracks' RTP clocks started at the same sender instant (t = 0).
        timeline.append(
            (t + 0.01, "audio-rtcp", sender_report(ntp, 8000 + 8000 * round(t)), NAT_RTCP)
        )
        video_sr = sender_report(ntp, 90000 + 90000 * round(t))
        timeline.append((t + 0.02, "video-rtcp", video_sr, NAT_RTCP))
    timeline.sort(key=lambda item: item[0])

    mode_before = media.clock.sync_mode
    for at, socket_name, data, source in timeline:
        run.deliver(socket_name, data, source, at)
    run.run_until(4.0)

    assert mode_before == "arrival"
    assert media.clock.sync_mode == "sender-reports"
    assert media.clock.track("audio").synced and media.clock.track("video").synced
    assert media.tracks["audio"].stats.sender_reports == 2
    audio, video = run.frames("audio"), run.frames("video")
    assert len(audio) == 150 and len(video) == 75
    for frames in (audio, video):
        pts = [event.frame.pts for event in frames if event.frame.pts is not None]
        assert len(pts) == len(frames)
        assert pts == sorted(pts)
    # After sync, the frames the sender stamped at the same instant line up.
    audio_pts = {e.frame.rtp_timestamp: e.frame.pts for e in audio}
    video_pts = {e.frame.rtp_timestamp: e.frame.pts for e in video}
    for t in (2.0, 2.4, 2.8):
        a = audio_pts[8000 + round(8000 * t)]
        v = video_pts[90000 + round(90000 * t)]
        assert a is not None and v is not None
        assert abs(a - v) < 0.005
    assert media.video_dimensions() == (320, 240)


def test_video_dimensions_without_video() -> None:
    media, _ = media_run([quiet_audio()])
    assert media.video_dimensions() == (None, None)


def test_comfort_noise_is_no_frame() -> None:
    _, run = media_run([quiet_audio()])
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    run.deliver("audio-rtp", rtp(13, 1001, 8160, b"\x40"), NAT_RTP, 0.02)
    run.deliver("audio-rtp", pcmu(2), NAT_RTP, 0.04)
    run.run_until(1.0)
    assert [event.frame.payload[0] for event in run.frames()] == [0, 2]


def test_telephone_events_become_one_digit_event_per_key_press() -> None:
    _, run = media_run([quiet_audio()])
    one = dtmf_packets("1", 10, 1000)
    star = dtmf_packets("*", 10 + len(one), 2000)
    for i, data in enumerate(one + one[-3:] + star):
        run.deliver("audio-rtp", data, NAT_RTP, i * 0.02)
    run.run_until(1.0)
    assert run.of(DtmfDigit) == [DtmfDigit("1"), DtmfDigit("*")]


# -- keyframe requests ----------------------------------------------------------------------


def test_video_loss_requests_a_keyframe_with_an_event() -> None:
    media, run = media_run([video_config(keepalive=False)], inactivity_timeout=0)
    run.deliver_all("video-rtp", video_stream(20, lost=[8]), NAT_RTP)
    run.run_until(1.0)
    [(sent, packets)] = keyframe_requests(run)
    assert [type(p) for p in packets] == [
        ReceiverReport,
        SourceDescription,
        PictureLossIndication,
        FullIntraRequest,
    ]
    assert sent.address == REMOTE_RTCP
    events = run.of(KeyframeRequested)
    assert events == [KeyframeRequested()]
    [when] = [at for at, event in run.events if isinstance(event, KeyframeRequested)]
    assert when == sent.at
    assert media.tracks["video"].stats.keyframe_requests == 1


def test_request_keyframe_twice_within_the_interval_is_one_request() -> None:
    _, run = media_run([video_config(keepalive=False, keyframe_interval=1.0)])
    run.run_until(5.0)
    run.act(lambda now: run.core.request_keyframe(now))  # type: ignore[attr-defined]
    run.run_until(5.3)
    run.act(lambda now: run.core.request_keyframe(now))  # type: ignore[attr-defined]
    run.run_until(8.0)
    assert [sent.at for sent, _ in keyframe_requests(run)] == [5.0]
    assert run.of(KeyframeRequested) == [KeyframeRequested()]

    run.act(lambda now: run.core.request_keyframe(now))  # type: ignore[attr-defined]
    assert [sent.at for sent, _ in keyframe_requests(run)] == [5.0, 8.0]
    assert len(run.of(KeyframeRequested)) == 2


def test_request_keyframe_without_video_does_nothing() -> None:
    media, run = media_run([quiet_audio()])
    run.run_until(1.0)
    media.request_keyframe(1.0)
    run.run_until(1.0)
    assert run.sent == []
    assert run.of(KeyframeRequested) == []


# -- DTMF out (RFC 4733) --------------------------------------------------------------------


def dtmf_sent(run: Runner) -> list[tuple[float, RtpPacket, TelephoneEvent]]:
    out = []
    for sent, packet in run.rtp_sent():
        if packet.payload_type == TE_PT:
            assert (sent.socket, sent.address) == ("audio-rtp", REMOTE_RTP)
            out.append((sent.at, packet, TelephoneEvent.parse(packet.payload)))
    return out


def test_send_dtmf_sends_telephone_events() -> None:
    media, run = media_run([quiet_audio()])
    run.run_until(1.0)
    assert run.act(lambda now: media.send_dtmf("5#", now)) is True
    run.run_until(3.0)

    sent = dtmf_sent(run)
    by_digit = [list(group) for _, group in itertools.groupby(sent, key=lambda s: s[1].timestamp)]
    assert [{e.digit for _, _, e in group} for group in by_digit] == [{"5"}, {"#"}]
    for group in by_digit:
        times = [at for at, _, _ in group]
        assert all(b - a == pytest.approx(0.02) for a, b in itertools.pairwise(times))
        assert [p.marker for _, p, _ in group] == [True] + [False] * (len(group) - 1)
        ends = [e for _, _, e in group if e.end]
        assert len(ends) == 3
        assert all(not e.end for _, _, e in group[:-3])
        assert ends[0].duration == 1280  # 160 ms at 8 kHz
        durations = [e.duration for _, _, e in group]
        assert durations == sorted(durations)
    assert by_digit[0][0][0] == 1.0  # the first packet leaves at once
    # One digit after the other, with a pause between them.
    assert by_digit[1][0][0] >= by_digit[0][-1][0] + 0.04
    stamp_gap = (by_digit[1][0][1].timestamp - by_digit[0][0][1].timestamp) & 0xFFFF_FFFF
    assert stamp_gap == round((by_digit[1][0][0] - by_digit[0][0][0]) * 8000)
    seqs = [p.sequence_number for _, p, _ in sent]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert {p.ssrc for _, p, _ in sent} == {media.tracks["audio"].ssrc}


def test_send_dtmf_numbers_packets_in_sending_order_between_keepalives() -> None:
    media, run = media_run([audio_config(keepalive_interval=0.05)])
    run.run_until(0.0)
    run.act(lambda now: media.send_dtmf("123", now))
    run.run_until(2.0)
    packets = [packet for _, packet in run.rtp_sent()]
    assert {p.payload_type for p in packets} == {0, TE_PT}
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    digits = [TelephoneEvent.parse(p.payload).digit for p in packets if p.payload_type == TE_PT]
    assert "".join(d for d, _ in itertools.groupby(digits) if d) == "123"


def test_second_send_dtmf_waits_for_the_first() -> None:
    media, run = media_run([quiet_audio()])
    run.act(lambda now: media.send_dtmf("1", now))
    run.run_until(0.05)
    run.act(lambda now: media.send_dtmf("2", now))
    run.run_until(2.0)
    sent = dtmf_sent(run)
    ones = [at for at, _, e in sent if e.digit == "1"]
    twos = [at for at, _, e in sent if e.digit == "2"]
    assert len(ones) == len(twos) == 10
    assert min(twos) > max(ones)


def test_send_dtmf_without_telephone_event() -> None:
    media, run = media_run([quiet_audio(telephone_event_pt=None)])
    assert media.send_dtmf("1", 0.0) is False
    video_only, _ = media_run([video_config(keepalive=False)])
    assert video_only.send_dtmf("1", 0.0) is False
    run.run_until(1.0)
    assert dtmf_sent(run) == []


def test_send_dtmf_rejects_a_bad_digit_before_sending_anything() -> None:
    media, run = media_run([quiet_audio()])
    with pytest.raises(ValueError, match="'x' is not a DTMF digit"):
        media.send_dtmf("12x", 0.0)
    run.run_until(2.0)
    assert dtmf_sent(run) == []


# -- inactivity -----------------------------------------------------------------------------


def test_no_rtp_after_start_is_reported_once() -> None:
    _, run = media_run([quiet_audio()], now=100.0, inactivity_timeout=30.0)
    run.run_until(200.0)
    assert [(at, event) for at, event in run.events] == [(130.0, MediaInactive(30.0))]


def test_rtp_resets_the_inactivity_timer() -> None:
    _, run = media_run([quiet_audio()], inactivity_timeout=30.0)
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 20.0)
    run.run_until(49.9)
    assert run.of(MediaInactive) == []
    run.run_until(60.0)
    assert [(at, e) for at, e in run.events if isinstance(e, MediaInactive)] == [
        (50.0, MediaInactive(30.0))
    ]
    # Media comes back, then stops again: a second report.
    run.deliver("audio-rtp", pcmu(1), NAT_RTP, 70.0)
    run.run_until(200.0)
    assert [at for at, e in run.events if isinstance(e, MediaInactive)] == [50.0, 100.0]


def test_foreign_and_garbage_packets_do_not_count_as_media() -> None:
    _, run = media_run([quiet_audio()], inactivity_timeout=10.0)
    run.deliver("audio-rtp", pcmu(0), NAT_RTP, 0.0)
    for t in range(1, 10):
        run.deliver("audio-rtp", pcmu(t), ("203.0.113.5", 9), float(t))
        run.deliver("audio-rtp", b"junk", NAT_RTP, t + 0.5)
    run.run_until(20.0)
    assert [at for at, e in run.events if isinstance(e, MediaInactive)] == [10.0]


def test_expect_media_false_suppresses_inactivity() -> None:
    media, run = media_run([quiet_audio()], inactivity_timeout=30.0)
    run.run_until(10.0)
    run.act(lambda now: media.set_expect_media(False, now))  # on hold
    run.run_until(500.0)
    assert run.of(MediaInactive) == []
    run.act(lambda now: media.set_expect_media(True, now))  # resumed: counts from here
    run.run_until(600.0)
    assert [at for at, e in run.events if isinstance(e, MediaInactive)] == [530.0]


def test_zero_inactivity_timeout_disables_the_check() -> None:
    media, run = media_run([quiet_audio()], inactivity_timeout=0)
    run.run_until(1000.0)
    assert run.of(MediaInactive) == []
    timer = media.get_timer()
    assert timer is not None and timer > 1000.0  # only RTCP remains


def test_inactivity_deadline_does_not_spin() -> None:
    # (start + timeout) - start < timeout in floating point: the deadline must
    # still fire (once) at start + timeout rather than stay due forever.
    start, timeout = 5.697079110684322, 3.0
    assert (start + timeout) - start < timeout
    media, run = media_run([quiet_audio()], now=start, inactivity_timeout=timeout)
    run.run_until(start + 5.0)
    assert [at for at, e in run.events if isinstance(e, MediaInactive)] == [start + timeout]
    deadline = media.get_timer()
    assert deadline is not None and deadline > start + 5.0


# -- stop -------------------------------------------------------------------------------


def test_stop_flushes_buffered_packets_and_says_bye() -> None:
    media, run = media_run([quiet_audio(), video_config(keepalive=False)])
    for i in range(5):
        run.deliver("audio-rtp", pcmu(i), NAT_RTP, 1.0 + i * 0.001)
    run.deliver_all("video-rtp", ((1.0, data) for _, data in video_stream(2)), NAT_RTP)
    assert run.frames() == []  # all still in the jitter buffers
    run.act(media.stop)

    assert len(run.frames("audio")) == 5
    assert len(run.frames("video")) == 2
    byes = [
        (sent, packets)
        for sent, packets in run.rtcp_sent()
        if any(isinstance(p, Goodbye) for p in packets)
    ]
    assert {(sent.socket, sent.address) for sent, _ in byes} == {
        ("audio-rtcp", REMOTE_RTCP),
        ("video-rtcp", REMOTE_RTCP),
    }
    for sent, packets in byes:
        report, sdes, bye = packets
        track = media.tracks["audio" if sent.socket.startswith("audio") else "video"]
        assert isinstance(report, ReceiverReport) and report.ssrc == track.ssrc
        assert report.reports[0].ssrc == REMOTE_SSRC
        assert isinstance(sdes, SourceDescription)
        assert isinstance(bye, Goodbye) and bye.sources == [track.ssrc]

    # Silent afterwards: no timer, input ignored, a second stop sends nothing.
    assert media.get_timer() is None
    count = len(run.sent)
    run.act(media.stop)
    run.deliver("audio-rtp", pcmu(9), NAT_RTP, 2.0)
    run.run_until(100.0)
    assert len(run.sent) == count
    assert len(run.frames()) == 7
    assert media.send_dtmf("1", 100.0) is False


def test_stop_drops_queued_dtmf() -> None:
    media, run = media_run([quiet_audio()])
    run.act(lambda now: media.send_dtmf("123", now))
    run.act(media.stop)
    run.run_until(5.0)
    assert len(dtmf_sent(run)) == 1  # only the first packet, sent at once


# -- garbage ---------------------------------------------------------------------------------

SOCKETS = ["audio-rtp", "audio-rtcp", "video-rtp", "video-rtcp", "nobody"]
SOURCES = [NAT_RTP, NAT_RTCP, ("203.0.113.1", 1)]


def _rtp_like(pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> bytes:
    return rtp(pt, seq, ts, payload, marker=marker)


def _rtcp_like(packet_type: int, count: int, body: bytes) -> bytes:
    body = body[: len(body) - len(body) % 4]
    return bytes([0x80 | count, packet_type]) + (len(body) // 4).to_bytes(2, "big") + body


datagrams = st.one_of(
    st.binary(max_size=64),
    st.builds(
        _rtp_like,
        st.sampled_from([0, 8, 13, 96, TE_PT, 99]),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF_FFFF),
        st.booleans(),
        st.binary(max_size=48),
    ),
    st.builds(
        _rtcp_like,
        st.integers(192, 223),
        st.integers(0, 31),
        st.binary(max_size=80),
    ),
)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SOCKETS),
            datagrams,
            st.sampled_from(SOURCES),
            st.floats(0.0, 2.0, allow_nan=False),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_garbage_never_raises(
    inputs: list[tuple[str, bytes, tuple[str, int], float]], mux: bool
) -> None:
    audio = audio_config(PCMA | {0: ("PCMU", 8000, 1, {})}, rtcp_mux=mux)
    media, run = media_run([audio, video_config(rtcp_mux=mux)], inactivity_timeout=3.0)
    delivered = 0
    for socket_name, data, source, step in inputs:
        run.deliver(socket_name, data, source, run.now + step)
        delivered += socket_name in media._by_socket
    run.act(lambda now: media.request_keyframe(now))
    run.run_until(run.now + 10.0)
    run.act(media.stop)

    counted = sum(
        t.stats.bad_packets
        + t.stats.unknown_payload
        + t.stats.foreign_packets
        + t.stats.packets
        + t.stats.rtcp_received
        for t in media.tracks.values()
    )
    assert counted >= delivered
    for sent in run.sent:
        assert sent.socket in media._by_socket
    for event in run.of(FrameReady):
        assert isinstance(event, FrameReady) and event.frame.pts is not None


@given(st.binary(max_size=11), st.sampled_from(["audio-rtp", "video-rtp"]))
def test_short_datagrams_are_bad_packets(data: bytes, socket_name: str) -> None:
    media, run = media_run([quiet_audio(), video_config(keepalive=False)])
    run.deliver(socket_name, data, NAT_RTP, 0.0)
    track = media.tracks["audio" if socket_name.startswith("audio") else "video"]
    assert track.stats.bad_packets == 1
    assert track.stats.latched is None
