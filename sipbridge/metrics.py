"""Prometheus metrics of one gateway, served as ``GET /metrics`` (docs/metrics.md).

Theory of operation
-------------------
Nothing on a hot path is instrumented. :class:`GatewayCollector` is a custom
``prometheus_client`` collector that reads the gateway's own state when
Prometheus scrapes: the calls and their statuses, every stream's snapshot
(RTP packets received and lost, jitter, jitter-buffer delay, A/V offset,
frames published), the late packets counted by each call's jitter buffers, the
pushes, WebRTC viewers and recordings, and the SIP endpoint's
:class:`~sipbridge.signaling.SipCounters`. The one thing measured all the time
is event-loop lag: :class:`LoopLagMonitor` sleeps a fixed interval and records
how late it wakes up (the time every callback queued behind a blocking one
waits too).

Counters that outlive their objects
    Per-stream counters leave ``/metrics`` with their stream (``retention``
    seconds after it ended), but gateway-wide totals such as
    ``sipbridge_rtp_packets_received_total`` must never go down. The collector
    remembers the last values it read of every stream, call, push, viewer and
    recording; when one has left the gateway its last values are added to a
    retired sum. Streams, calls, pushes and recordings stay in the gateway for
    their retention (300 s by default) after they end, with their final
    counters, so a scrape interval shorter than that loses nothing. A WebRTC
    viewer leaves at once when it closes: its counters count as of the last
    scrape that saw it. Objects born and forgotten between two scrapes are not
    counted at all.

Label cardinality
    Per-stream series carry the stream's name (``stream``) and last only as
    long as the registry keeps the stream, so their number is bounded by the
    streams live or ended within ``retention``. When an ended stream and a live
    one share a name, the series are the live one's (as ``/stream/find`` by
    name answers). SIP methods outside a fixed set count as ``"other"``.

Everything here runs on the event loop's thread: :meth:`GatewayMetrics.render`
is called by the ``/metrics`` handler on the loop, since the gateway's objects
are not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rtmp.pusher import PushStatus
from sipbridge.call_media import CallMediaLink
from sipbridge.callinfo import CallInfo, CallStatus
from sipbridge.pushes import PushInfo
from sipbridge.recording import RecordingInfo, RecordingStatus
from sipbridge.registry import Stream, StreamInfo, StreamStatus, TrackStats
from sipbridge.signaling import SipCounters
from webrtc.whep import ViewerInfo

__all__ = [
    "LAG_BUCKETS",
    "SRTP_DROP_REASONS",
    "VIEWER_STATES",
    "CallView",
    "GatewayCollector",
    "GatewayMetrics",
    "LoopLagMonitor",
    "MetricsSource",
]

log = logging.getLogger(__name__)

#: Buckets of ``sipbridge_event_loop_lag_seconds``: 1 ms (healthy) to 10 s (stuck).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A WebRTC viewer's states (``webrtc.session.ViewerSession.state``).
VIEWER_STATES = ("new", "connecting", "connected", "closed", "failed")
KINDS = ("audio", "video")
#: The ``reason`` label of the SRTP drop counters (``TrackStats`` fields behind each).
SRTP_DROP_REASONS = ("auth", "replay", "other", "short")


# -- what the collector reads ---------------------------------------------------------------
class StreamSource(Protocol):
    def all_streams(self) -> list[StreamInfo]: ...


class PushSource(Protocol):
    def all_pushes(self) -> list[PushInfo]: ...


class ViewerSource(Protocol):
    def viewers(self, stream_name: str | None = None) -> list[ViewerInfo]: ...


class RecordingSource(Protocol):
    def find_all(self) -> list[RecordingInfo]: ...


class CallView(Protocol):
    """What the collector reads of a :class:`~sipbridge.calls.Call` (hashed by identity)."""

    def __hash__(self) -> int: ...

    @property
    def status(self) -> CallStatus: ...

    @property
    def stream(self) -> Stream | None: ...

    @property
    def media(self) -> CallMediaLink | None: ...


class MetricsSource(Protocol):
    """What the collector reads of a :class:`~sipbridge.gateway.Gateway`."""

    @property
    def streams(self) -> StreamSource: ...

    @property
    def pushes(self) -> PushSource: ...

    @property
    def webrtc(self) -> ViewerSource: ...

    @property
    def recordings(self) -> RecordingSource: ...

    @property
    def sip_counters(self) -> SipCounters: ...

    def all_calls(self) -> list[CallInfo]: ...

    def get_call(self, call_id: str) -> CallView: ...


# -- totals that survive their objects --------------------------------------------------------
class _Totals:
    """Sums per group of per-object counters, kept after the objects leave (module doc).

    :meth:`update` takes every object present now as ``key -> (group, values)``
    and returns the totals per group: the retired sum plus the present values.
    A value never goes below the last one read for its key, so the totals only grow.
    """

    def __init__(self, width: int) -> None:
        self._width = width
        self._last: dict[Hashable, tuple[str, tuple[float, ...]]] = {}
        self._retired: dict[str, list[float]] = {}

    def update(
        self, present: Mapping[Hashable, tuple[str, tuple[float, ...]]]
    ) -> dict[str, list[float]]:
        current: dict[Hashable, tuple[str, tuple[float, ...]]] = {}
        for key, (group, values) in present.items():
            seen = self._last.get(key)
            if seen is not None:
                values = tuple(max(a, b) for a, b in zip(values, seen[1], strict=True))
            current[key] = (group, values)
        for key, (group, values) in self._last.items():
            if key not in current:
                self._add(self._retired, group, values)
        self._last = current
        totals = {group: list(sums) for group, sums in self._retired.items()}
        for group, values in current.values():
            self._add(totals, group, values)
        return totals

    def _add(self, sums: dict[str, list[float]], group: str, values: tuple[float, ...]) -> None:
        row = sums.setdefault(group, [0.0] * self._width)
        for i, value in enumerate(values):
            row[i] += value


# -- the collector ----------------------------------------------------------------------------
def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class _Families:
    """Every family the collector exposes, empty (``describe``) until filled (``collect``)."""

    def __init__(self) -> None:
        sk = ("stream", "kind")
        self.calls = _gauge("sipbridge_calls", "Calls kept by the gateway, by status", ["status"])
        self.calls_started = _counter("sipbridge_calls_started", "Calls placed")
        self.calls_ended = _counter(
            "sipbridge_calls_ended", "Calls ended, by final status", ["status"]
        )
        self.streams = _gauge("sipbridge_streams", "Streams in the registry, by status", ["status"])
        self.stream_received = _counter(
            "sipbridge_stream_rtp_packets_received", "RTP packets received for a stream", sk
        )
        self.stream_lost = _counter(
            "sipbridge_stream_rtp_packets_lost", "RTP packets lost (RFC 3550 A.3)", sk
        )
        self.stream_late = _counter(
            "sipbridge_stream_rtp_packets_late",
            "RTP packets that came after the jitter buffer released their place",
            sk,
        )
        self.stream_jitter = _gauge(
            "sipbridge_stream_rtp_jitter_seconds", "Interarrival jitter (RFC 3550 A.8)", sk
        )
        self.stream_delay = _gauge(
            "sipbridge_stream_buffer_delay_seconds", "Current jitter-buffer playout delay", sk
        )
        self.stream_frames = _counter(
            "sipbridge_stream_frames_published", "Frames published into a stream", sk
        )
        self.stream_bytes = _counter(
            "sipbridge_stream_bytes_published", "Payload bytes published into a stream", sk
        )
        self.stream_srtp_dropped = _counter(
            "sipbridge_stream_srtp_dropped",
            "Inbound SRTP/SRTCP packets dropped (RFC 3711 §3.3), by reason: auth, replay, other",
            [*sk, "reason"],
        )
        self.stream_av_offset = _gauge(
            "sipbridge_stream_av_offset_seconds",
            "A/V sync correction: video minus audio presentation time",
            ["stream"],
        )
        self.stream_subscribers = _gauge(
            "sipbridge_stream_subscribers", "Open subscriptions of a stream", ["stream"]
        )
        self.rtp_received = _counter(
            "sipbridge_rtp_packets_received", "RTP packets received, all streams", ["kind"]
        )
        self.rtp_lost = _counter(
            "sipbridge_rtp_packets_lost", "RTP packets lost, all streams", ["kind"]
        )
        self.rtp_late = _counter(
            "sipbridge_rtp_packets_late", "RTP packets late, all calls", ["kind"]
        )
        self.srtp_dropped = _counter(
            "sipbridge_srtp_dropped",
            "Inbound SRTP/SRTCP packets dropped, all streams, by reason",
            ["kind", "reason"],
        )
        self.frames = _counter(
            "sipbridge_frames_published", "Frames published, all streams", ["kind"]
        )
        self.bytes = _counter(
            "sipbridge_bytes_published", "Payload bytes published, all streams", ["kind"]
        )
        self.pushes = _gauge("sipbridge_pushes", "RTMP pushes kept, by status", ["status"])
        self.pushes_started = _counter("sipbridge_pushes_started", "RTMP pushes started")
        self.push_reconnects = _counter(
            "sipbridge_push_reconnects", "RTMP reconnections, all pushes"
        )
        self.push_frames = _counter("sipbridge_push_frames_sent", "Frames sent to RTMP servers")
        self.push_bytes = _counter("sipbridge_push_bytes_sent", "Bytes sent to RTMP servers")
        self.push_dropped = _counter(
            "sipbridge_push_dropped_frames", "Frames RTMP pushes dropped (slow server)"
        )
        self.viewers = _gauge(
            "sipbridge_webrtc_viewers", "Open WebRTC viewers, by state", ["state"]
        )
        self.viewers_started = _counter("sipbridge_webrtc_viewers_started", "WebRTC viewers seen")
        self.viewer_frames = _counter(
            "sipbridge_webrtc_frames_sent", "Frames sent to WebRTC viewers", ["kind"]
        )
        self.viewer_dropped = _counter(
            "sipbridge_webrtc_dropped_frames", "Frames WebRTC viewers dropped"
        )
        self.recordings = _gauge("sipbridge_recordings", "Recordings kept, by status", ["status"])
        self.recordings_started = _counter("sipbridge_recordings_started", "Recordings started")
        self.recording_frames = _counter(
            "sipbridge_recording_frames_written", "Frames written to recordings"
        )
        self.recording_bytes = _counter(
            "sipbridge_recording_bytes_written", "Bytes written to recordings"
        )
        self.recording_dropped = _counter(
            "sipbridge_recording_dropped_frames", "Frames recorders dropped (slow disk)"
        )
        self.sip_requests = _counter(
            "sipbridge_sip_requests",
            "SIP requests, retransmissions included",
            ["direction", "method"],
        )
        self.sip_responses = _counter(
            "sipbridge_sip_responses",
            "SIP responses by CSeq method and status code, retransmissions included",
            ["direction", "method", "code"],
        )
        self.sip_txn_started = _counter(
            "sipbridge_sip_client_transactions_started", "SIP client transactions", ["method"]
        )
        self.sip_txn_completed = _counter(
            "sipbridge_sip_client_transactions_completed",
            "SIP client transactions ended: final response class, timeout, transport_error",
            ["method", "outcome"],
        )
        self.sip_txn_pending = _gauge(
            "sipbridge_sip_client_transactions_pending", "SIP client transactions in progress"
        )
        self.sip_parse_errors = _counter(
            "sipbridge_sip_parse_errors", "SIP messages received and not understood"
        )
        self.sip_send_errors = _counter("sipbridge_sip_send_errors", "SIP messages not sent")

    def all(self) -> list[Metric]:
        return [value for value in vars(self).values() if isinstance(value, Metric)]


def _by_status(values: Iterable[str], statuses: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(statuses, 0)
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


class GatewayCollector(Collector):
    """Reads a gateway's state at scrape time (module doc); one per gateway."""

    def __init__(self, source: MetricsSource) -> None:
        self._source = source
        self._calls_started = _Totals(1)
        self._calls_ended = _Totals(1)
        # received, lost, frames, bytes per (media session id, kind)
        self._rtp = _Totals(4)
        # SRTP drops (auth, replay, other) per (media session id, kind)
        self._srtp = _Totals(len(SRTP_DROP_REASONS))
        self._late = _Totals(1)
        # seen, reconnects, frames, bytes, dropped per push
        self._pushes = _Totals(5)
        # seen, video frames, audio frames, dropped per viewer
        self._viewers = _Totals(4)
        # seen, frames, bytes, dropped per recording
        self._recordings = _Totals(4)

    def describe(self) -> Iterable[Metric]:
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        late = self._collect_calls(families)
        self._collect_streams(families, late)
        self._collect_pushes(families)
        self._collect_viewers(families)
        self._collect_recordings(families)
        self._collect_sip(families)
        return families.all()

    # -- sections ---------------------------------------------------------------------------
    def _collect_calls(self, f: _Families) -> dict[tuple[str, str], int]:
        """Calls; returns late packets by (stream media session id, kind)."""
        infos = self._source.all_calls()
        for status, count in _by_status((i.status for i in infos), CallStatus).items():
            f.calls.add_metric([status], count)
        calls = [self._source.get_call(info.callId) for info in infos]
        started = self._calls_started.update({call: ("", (1,)) for call in calls})
        f.calls_started.add_metric([], started.get("", [0])[0])
        ended = self._calls_ended.update(
            {call: (call.status.value, (1,)) for call in calls if call.status.is_final}
        )
        for status in CallStatus:
            if status.is_final:
                f.calls_ended.add_metric([status.value], ended.get(status.value, [0])[0])
        late: dict[tuple[str, str], int] = {}
        present: dict[Hashable, tuple[str, tuple[float, ...]]] = {}
        for call in calls:
            if call.media is None or call.stream is None:
                continue
            for media_kind, track in call.media.media.tracks.items():
                count = track.jitter.stats.late
                late[call.stream.media_session_id, media_kind] = count
                present[call, media_kind] = (media_kind, (count,))
        totals = self._late.update(present)
        for kind in KINDS:
            f.rtp_late.add_metric([kind], totals.get(kind, [0])[0])
        return late

    def _collect_streams(self, f: _Families, late: Mapping[tuple[str, str], int]) -> None:
        infos = self._source.streams.all_streams()
        for status, count in _by_status((i.status for i in infos), StreamStatus).items():
            f.streams.add_metric([status], count)
        present: dict[Hashable, tuple[str, tuple[float, ...]]] = {}
        srtp_present: dict[Hashable, tuple[str, tuple[float, ...]]] = {}
        for info in infos:
            for track in info.tracks:
                values = (track.packets_received, track.packets_lost, track.frames, track.bytes)
                present[info.media_session_id, track.kind] = (track.kind, values)
                drops = _srtp_drops(track)
                if drops is not None:
                    srtp_present[info.media_session_id, track.kind] = (track.kind, drops)
        srtp_totals = self._srtp.update(srtp_present)
        for kind in KINDS:
            row = srtp_totals.get(kind, [0.0] * len(SRTP_DROP_REASONS))
            for reason, dropped in zip(SRTP_DROP_REASONS, row, strict=True):
                f.srtp_dropped.add_metric([kind, reason], dropped)
        totals = self._rtp.update(present)
        for kind in KINDS:
            received, lost, frames, size = totals.get(kind, [0.0] * 4)
            f.rtp_received.add_metric([kind], received)
            f.rtp_lost.add_metric([kind], lost)
            f.frames.add_metric([kind], frames)
            f.bytes.add_metric([kind], size)
        for info in _one_per_name(infos):
            name = info.name
            for track in info.tracks:
                labels = [name, track.kind]
                f.stream_received.add_metric(labels, track.packets_received)
                f.stream_lost.add_metric(labels, track.packets_lost)
                f.stream_late.add_metric(labels, late.get((info.media_session_id, track.kind), 0))
                f.stream_jitter.add_metric(labels, track.jitter_ms / 1000.0)
                f.stream_delay.add_metric(labels, track.buffer_delay_ms / 1000.0)
                f.stream_frames.add_metric(labels, track.frames)
                f.stream_bytes.add_metric(labels, track.bytes)
                drops = _srtp_drops(track)
                if drops is not None:  # plain RTP tracks have no SRTP series
                    for reason, count in zip(SRTP_DROP_REASONS, drops, strict=True):
                        f.stream_srtp_dropped.add_metric([*labels, reason], count)
            if info.av_offset_ms is not None:
                f.stream_av_offset.add_metric([name], info.av_offset_ms / 1000.0)
            f.stream_subscribers.add_metric([name], info.subscribers)

    def _collect_pushes(self, f: _Families) -> None:
        infos = self._source.pushes.all_pushes()
        for status, count in _by_status((i.status for i in infos), PushStatus).items():
            f.pushes.add_metric([status], count)
        totals = self._pushes.update(
            {
                i.media_session_id: ("", (1, i.reconnects, i.frames_sent, i.bytes_sent, i.dropped))
                for i in infos
            }
        )
        seen, reconnects, frames, size, dropped = totals.get("", [0.0] * 5)
        f.pushes_started.add_metric([], seen)
        f.push_reconnects.add_metric([], reconnects)
        f.push_frames.add_metric([], frames)
        f.push_bytes.add_metric([], size)
        f.push_dropped.add_metric([], dropped)

    def _collect_viewers(self, f: _Families) -> None:
        infos = self._source.webrtc.viewers()
        for state, count in _by_status((i.state for i in infos), VIEWER_STATES).items():
            f.viewers.add_metric([state], count)
        totals = self._viewers.update(
            {
                i.session_id: ("", (1, i.video_frames_sent, i.audio_frames_sent, i.dropped))
                for i in infos
            }
        )
        seen, video, audio, dropped = totals.get("", [0.0] * 4)
        f.viewers_started.add_metric([], seen)
        f.viewer_frames.add_metric(["audio"], audio)
        f.viewer_frames.add_metric(["video"], video)
        f.viewer_dropped.add_metric([], dropped)

    def _collect_recordings(self, f: _Families) -> None:
        infos = self._source.recordings.find_all()
        for status, count in _by_status((i.status for i in infos), RecordingStatus).items():
            f.recordings.add_metric([status], count)
        totals = self._recordings.update(
            {i.recording_id: ("", (1, i.frames_written, i.bytes_written, i.dropped)) for i in infos}
        )
        seen, frames, size, dropped = totals.get("", [0.0] * 4)
        f.recordings_started.add_metric([], seen)
        f.recording_frames.add_metric([], frames)
        f.recording_bytes.add_metric([], size)
        f.recording_dropped.add_metric([], dropped)

    def _collect_sip(self, f: _Families) -> None:
        sip = self._source.sip_counters
        for direction, requests in (("in", sip.requests_received), ("out", sip.requests_sent)):
            for method, count in sorted(requests.items()):
                f.sip_requests.add_metric([direction, method], count)
        for direction, responses in (("in", sip.responses_received), ("out", sip.responses_sent)):
            for (method, code), count in sorted(responses.items()):
                f.sip_responses.add_metric([direction, method, str(code)], count)
        for method, count in sorted(sip.transactions_started.items()):
            f.sip_txn_started.add_metric([method], count)
        for (method, outcome), count in sorted(sip.transactions_completed.items()):
            f.sip_txn_completed.add_metric([method, outcome], count)
        f.sip_txn_pending.add_metric([], sip.pending_transactions)
        transport = sip.transport
        f.sip_parse_errors.add_metric([], transport.parse_errors if transport else 0)
        f.sip_send_errors.add_metric([], transport.send_errors if transport else 0)


def _srtp_drops(track: TrackStats) -> tuple[int, int, int, int] | None:
    """A track's SRTP drops in :data:`SRTP_DROP_REASONS` order; None for plain RTP."""
    if track.srtp_auth_failures is None:
        return None
    return (
        track.srtp_auth_failures,
        track.srtp_replay_drops or 0,
        track.srtp_other_drops or 0,
        track.srtp_short_drops or 0,
    )


def _one_per_name(infos: list[StreamInfo]) -> list[StreamInfo]:
    """The stream each name stands for: the live one, else the latest ended one.

    ``infos`` is oldest first, and a name has at most one live stream."""
    chosen: dict[str, StreamInfo] = {}
    for info in infos:
        held = chosen.get(info.name)
        if held is None or held.status.is_final:
            chosen[info.name] = info
    return list(chosen.values())


# -- event-loop lag ---------------------------------------------------------------------------
Sleep = Callable[[float], Awaitable[None]]


class LoopLagMonitor:
    """Measures event-loop lag: how much later than asked a ``sleep(interval)`` wakes up.

    Every wake-up hands the overshoot (seconds, never negative) to ``on_sample``.
    ``clock`` defaults to the running loop's time and ``sleep`` to
    :func:`asyncio.sleep`; tests inject both.
    """

    def __init__(
        self,
        on_sample: Callable[[float], None],
        *,
        interval: float = 0.25,
        clock: Callable[[], float] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        self._on_sample = on_sample
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop measuring and wait for the task to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            due = clock() + self.interval
            await self._sleep(self.interval)
            self._on_sample(max(0.0, clock() - due))


# -- the gateway's registry -------------------------------------------------------------------
def _running_tasks() -> float:
    """The tasks of the running loop not yet done; 0 when scraped off the loop's thread
    (a leak shows as a count that keeps rising while the calls stay level)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no running event loop in this thread
        return 0.0


class GatewayMetrics:
    """The Prometheus registry of one gateway and what feeds it (module doc).

    A private :class:`~prometheus_client.CollectorRegistry` (several gateways may
    live in one process) holding the :class:`GatewayCollector`, the event-loop
    lag histogram and gauge, and, with ``process``, the standard ``process_*``
    metrics (CPU, memory, open files). :meth:`start` / :meth:`stop` run the lag
    monitor; :meth:`render` is the ``/metrics`` body.
    """

    def __init__(
        self, source: MetricsSource, *, lag_interval: float = 0.25, process: bool = True
    ) -> None:
        self.registry = CollectorRegistry()
        self.collector = GatewayCollector(source)
        self.registry.register(self.collector)
        self.loop_lag = Histogram(
            "sipbridge_event_loop_lag_seconds",
            "How late the event loop ran a timer (sleep overshoot)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_last = Gauge(
            "sipbridge_event_loop_lag_last_seconds",
            "The last event-loop lag measured",
            registry=self.registry,
        )
        self.tasks = Gauge(
            "sipbridge_asyncio_tasks",
            "Tasks not yet done on the gateway's event loop",
            registry=self.registry,
        )
        self.tasks.set_function(_running_tasks)
        if process:
            ProcessCollector(registry=self.registry)
        self.lag_monitor = LoopLagMonitor(self.observe_loop_lag, interval=lag_interval)

    async def start(self) -> None:
        """Start the event-loop lag monitor."""
        self.lag_monitor.start()

    async def stop(self) -> None:
        """Stop the event-loop lag monitor."""
        await self.lag_monitor.stop()

    def observe_loop_lag(self, lag: float) -> None:
        self.loop_lag.observe(lag)
        self.loop_lag_last.set(lag)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: ``(body, content type)``.

        Prometheus text format 0.0.4 by default, OpenMetrics when asked for.
        Call it on the event loop's thread (the collector reads the gateway).
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
