"""A call's media joined to its stream: RTP in, frames published, events to the call.

:class:`CallMediaLink` builds the call's :class:`~rtp.media.CallMedia` from
the negotiated SDP (:class:`~sipbridge.sip.sdp.NegotiatedSession`), runs it on
the call's reserved sockets with an :class:`~rtp.session.RtpSession`, and
publishes every frame into the call's :class:`~sipbridge.registry.Stream`.
Keyframe requests go both ways: a new viewer of the stream asks the call
(RTCP PLI/FIR and SIP INFO picture_fast_update), and the depacketizer asks
after a loss.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from rtp.frame import MediaKind
from rtp.jitter import JitterConfig
from rtp.media import CallMedia, DtmfDigit, FrameReady, KeyframeRequested, MediaInactive
from rtp.session import MediaCore, RtpSession
from rtp.srtp import SrtpContext, SrtpFilter
from rtp.track import Address, TrackConfig
from sipbridge.ports import PortPair
from sipbridge.registry import Stream, StreamStatus
from sipbridge.settings import RtpSettings
from sipbridge.sip.crypto import SrtpKeys
from sipbridge.sip.offer_answer import NegotiatedSession, NegotiatedStream

__all__ = ["CallMediaLink", "expects_media", "track_configs"]

log = logging.getLogger(__name__)


def track_configs(
    negotiated: NegotiatedSession, settings: RtpSettings, *, cname: bytes
) -> list[TrackConfig]:
    """One :class:`TrackConfig` per accepted stream of the SDP answer."""
    configs = []
    for stream in (negotiated.audio, negotiated.video):
        if stream is None:
            continue
        configs.append(_track_config(stream, settings, cname))
    return configs


def _track_config(stream: NegotiatedStream, settings: RtpSettings, cname: bytes) -> TrackConfig:
    codecs = {
        pt: (codec.name, codec.clock_rate, codec.channels, dict(codec.fmtp))
        for pt, codec in stream.payload_types.items()
        if codec.name.lower() not in ("telephone-event", "cn")
    }
    clock_rate = stream.codec.clock_rate
    remote_rtp = (stream.remote_address, stream.remote_port)
    remote_rtcp = (
        remote_rtp if stream.rtcp_mux else (stream.remote_address, stream.remote_rtcp_port)
    )
    kind: MediaKind = "video" if stream.kind == "video" else "audio"
    return TrackConfig(
        kind=kind,
        remote_rtp=remote_rtp,
        remote_rtcp=remote_rtcp,
        rtcp_mux=stream.rtcp_mux,
        codecs=codecs,
        telephone_event_pt=stream.telephone_event_pt,
        jitter=JitterConfig(
            clock_rate=clock_rate,
            min_delay=settings.jitter_min_delay,
            max_delay=settings.jitter_max_delay,
            initial_delay=settings.jitter_initial_delay,
        ),
        keepalive=settings.nat_keepalive,
        keepalive_interval=settings.keepalive_interval,
        keyframe_interval=settings.keyframe_interval,
        cname=cname,
    )


def expects_media(negotiated: NegotiatedSession) -> bool:
    """Whether the callee sends to us: some stream is sendrecv or sendonly on its side."""
    streams = [s for s in (negotiated.audio, negotiated.video) if s is not None]
    return any(s.direction in ("sendrecv", "sendonly") for s in streams)


class CallMediaLink:
    """Runs one call's media and publishes it (see the module docstring)."""

    def __init__(
        self,
        *,
        call_id: str,
        negotiated: NegotiatedSession,
        ports: dict[str, PortPair],
        stream: Stream | None,
        settings: RtpSettings,
        now: float,
        on_inactive: Callable[[float], None],
        on_keyframe_request: Callable[[], None],
        on_dtmf: Callable[[str], None],
    ) -> None:
        self.call_id = call_id
        self.stream = stream
        self._on_inactive = on_inactive
        self._on_keyframe_request = on_keyframe_request
        self._on_dtmf = on_dtmf
        configs = track_configs(negotiated, settings, cname=f"sipbridge-{call_id}".encode()[:255])
        self.media = CallMedia(configs, now=now, inactivity_timeout=settings.inactivity_timeout)
        sockets = {}
        for config in configs:
            pair = ports[config.kind]
            sockets[f"{config.kind}-rtp"] = pair.rtp_socket
            if not config.rtcp_mux:
                sockets[f"{config.kind}-rtcp"] = pair.rtcp_socket
        # RFC 3711 SRTP for the streams whose answer carried keys (RFC 4568).
        self._srtp_keys: dict[str, SrtpKeys] = {}
        self.srtp: SrtpFilter | None = None
        core: MediaCore = self.media
        contexts = self._srtp_contexts(negotiated)
        if contexts:
            self.srtp = core = SrtpFilter(self.media, contexts)
        self.session = RtpSession(core, sockets, on_activity=self._dispatch)
        self._published_frames = 0
        if stream is not None:
            for config in configs:
                track = stream.track(config.kind)
                name, rate, channels, _ = next(iter(config.codecs.values()), ("", 0, 1, {}))
                track.codec, track.clock_rate = name, rate
                track.channels = channels if config.kind == "audio" else None
            stream.set_keyframe_requester(self.request_keyframe)
            # Reception statistics are read when someone asks (/stream/find): refreshing
            # them after every datagram cost 17 % of the ingest CPU (bench/ingest.py).
            stream.set_stats_source(self._update_stats)

    async def start(self) -> None:
        await self.session.start()

    def _srtp_contexts(self, negotiated: NegotiatedSession) -> dict[str, SrtpContext]:
        """Contexts (per socket name) for the streams whose keys are new or changed."""
        contexts: dict[str, SrtpContext] = {}
        for stream in (negotiated.audio, negotiated.video):
            if stream is None or stream.srtp is None or stream.kind not in ("audio", "video"):
                continue
            if self._srtp_keys.get(stream.kind) == stream.srtp:
                continue
            self._srtp_keys[stream.kind] = stream.srtp
            keys = stream.srtp
            context = SrtpContext(keys.suite, keys.local_key, keys.remote_key)
            contexts[f"{stream.kind}-rtp"] = contexts[f"{stream.kind}-rtcp"] = context
        return contexts

    async def stop(self) -> None:
        """Flush what the jitter buffers hold into the stream, then close the sockets."""
        self.session.act(self.media.stop)
        if self.stream is not None:
            self._update_stats(self.stream)
            self.stream.set_stats_source(None)
            self.stream.set_keyframe_requester(None)
        await self.session.stop()

    def request_keyframe(self) -> None:
        self.session.act(self.media.request_keyframe)

    def send_dtmf(self, digits: str) -> bool:
        """RFC 4733 DTMF on the audio stream; False when telephone-event was not negotiated."""
        sent: list[bool] = []
        self.session.act(lambda now: sent.append(self.media.send_dtmf(digits, now)))
        return bool(sent and sent[0])

    def set_expect_media(self, expect: bool) -> None:
        self.session.act(lambda now: self.media.set_expect_media(expect, now))

    def update(self, negotiated: NegotiatedSession) -> None:
        """A re-INVITE changed the media: follow a new remote address, pause or resume
        the inactivity check with the callee's direction (hold)."""
        for stream in (negotiated.audio, negotiated.video):
            if stream is None or stream.kind not in ("audio", "video"):
                continue
            kind: MediaKind = "video" if stream.kind == "video" else "audio"
            rtp = (stream.remote_address, stream.remote_port)
            rtcp = rtp if stream.rtcp_mux else (stream.remote_address, stream.remote_rtcp_port)
            if stream.remote_port and stream.remote_address not in ("0.0.0.0", "::"):
                self.session.act(functools.partial(self._retarget, kind, rtp, rtcp))
        # Same keys: nothing to do (RFC 4568 §7.1.4); new ones from the peer: rekey.
        contexts = self._srtp_contexts(negotiated)
        if contexts and self.srtp is not None:
            log.info("call %s: SRTP rekeyed by the peer", self.call_id)
            self.srtp.rekey(contexts)
        elif contexts:
            self.srtp = SrtpFilter(self.media, contexts)
            self.session.core = self.srtp
        self.set_expect_media(expects_media(negotiated))

    def _retarget(self, kind: MediaKind, rtp: Address, rtcp: Address, now: float) -> None:
        del now
        self.media.retarget(kind, rtp, rtcp)

    def _dispatch(self) -> None:
        # Called after every datagram; most produce no event (bench/ingest.py).
        events = self.media.take_events()
        if not events:
            return
        stream = self.stream
        for event in events:
            if isinstance(event, FrameReady):
                if stream is not None and not stream.status.is_final:
                    if stream.status is not StreamStatus.PUBLISHING:
                        stream.set_status(StreamStatus.PUBLISHING)
                    stream.publish(event.frame)
                self._published_frames += 1
            elif isinstance(event, DtmfDigit):
                self._on_dtmf(event.digit)
            elif isinstance(event, KeyframeRequested):
                self._on_keyframe_request()
            elif isinstance(event, MediaInactive):
                self._on_inactive(event.idle)

    def _update_stats(self, stream: Stream) -> None:
        for kind, track in self.media.tracks.items():
            info = stream.track(kind)
            stats = track.jitter.stats
            info.packets_received = track.stats.packets
            info.packets_lost = stats.lost
            info.jitter_ms = stats.jitter_seconds * 1000
            info.buffer_delay_ms = track.jitter.current_delay * 1000
            context = self.srtp.contexts.get(f"{kind}-rtp") if self.srtp is not None else None
            if context is not None:  # RTP and RTCP of a track share one context
                srtp = context.stats
                info.srtp_auth_failures = srtp.auth_failures
                info.srtp_replay_drops = srtp.replay_failures
                info.srtp_other_drops = srtp.other_failures
                info.srtp_short_drops = srtp.short_drops
        width, height = self.media.video_dimensions()
        if width is not None and "video" in self.media.tracks:
            video = stream.track("video")
            video.width, video.height = width, height
        offset = self.media.clock.av_offset
        if offset is not None:
            stream.av_offset = offset
