"""One WHEP viewer: an aiortc RTCPeerConnection fed by its stream's fan-out.

Theory of operation
-------------------
:meth:`ViewerSession.negotiate` builds the peer connection with one
``sendonly`` transceiver per kind the stream has and the offer receives,
each with a :class:`~webrtc.tracks.PassthroughTrack` and codec preferences
limited to the stream's codec (:mod:`webrtc.codecs`); it applies the offer,
and returns the answer once ICE gathering is complete (``setLocalDescription``
gathers before it returns: no trickle ICE, RFC 9725 style). Host candidates are
``config.ice_addresses`` when set (:mod:`webrtc.ice`). Transceivers are made
only for kinds the offer has; with BUNDLE (RFC 9143) every m-line ends up on
the transport of the offer's first one.

:meth:`ViewerSession.start` starts the session's one task, which

1. waits for the connection (ICE + DTLS) to come up, at most
   ``connect_timeout`` seconds (then the session ends ``failed``), ending
   early when the stream ends;
2. joins the stream's :class:`~webrtc.fanout.StreamFanout` only then, as a
   :class:`~webrtc.fanout.ViewerFeed` with its own
   :class:`~webrtc.schedule.ViewerSchedule`, so a viewer that never connects
   never fills a queue nor asks the phone for keyframes. It starts on the
   cached GOP, else the stream is asked for a keyframe;
3. then only waits: the fan-out admits every frame on the viewer's schedule
   and pushes it to its kind's track, whose sender takes it when due (woken
   by the fan-out's shared timer), packetizes and sends it. No task of the
   viewer's runs per frame.

The viewer's bounded queue (``viewer_queue_frames``) is what its tracks hold.
A viewer whose senders stop reading fills it and then loses frames (video up
to the next keyframe); nothing waits on it, so the call and other viewers go
on. When the stream ends the viewer plays out what it holds (at most until
the last frame is stale), then ends ``closed``.

PLI/FIR from the browser reach ``stream.request_keyframe()`` through
:func:`~webrtc.tracks.hook_keyframe_requests` (the stream rate-limits them).

The session ends (:meth:`close`) on DELETE, on ICE/DTLS ``failed`` or
``closed``, on the connect timeout, and when the stream ends; ending closes
the peer connection (its sockets, its sender tasks), its place in the fan-out and the
task, then calls ``on_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidStateError, OperationError

from rtp.frame import MediaKind
from sipbridge.errors import InvalidRequest
from sipbridge.registry import Stream, StreamEnded
from webrtc.codecs import CodecChoice, choose_codecs, parse_offer
from webrtc.config import WebRtcConfig
from webrtc.fanout import StreamFanouts, ViewerFeed
from webrtc.ice import host_addresses
from webrtc.schedule import ViewerSchedule
from webrtc.tracks import PassthroughTrack, hook_keyframe_requests

__all__ = ["STREAM_POLL", "ViewerSession"]

log = logging.getLogger(__name__)

#: While waiting for the connection, how often (seconds) to look whether the stream ended.
STREAM_POLL = 0.25

_SDP_ERRORS = (ValueError, IndexError, KeyError, TypeError, AssertionError)


class ViewerSession:
    """One viewer of one stream (see the module docstring).

    ``state``: ``"new"``, ``"connecting"``, ``"connected"`` while open, then
    ``"closed"`` or ``"failed"``. ``created_at`` is Unix seconds. ``fanouts`` is
    the gateway's table of stream fan-outs (shared by every session); without
    one the session uses a fan-out of its own.
    """

    def __init__(
        self,
        stream: Stream,
        config: WebRtcConfig,
        *,
        on_closed: Callable[[ViewerSession], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        fanouts: StreamFanouts | None = None,
    ) -> None:
        self.session_id = str(uuid.uuid4())
        self.stream = stream
        self.config = config
        self.on_closed = on_closed
        self.created_at = wall_clock()
        self.state = "new"
        self.keyframe_requests = 0
        self.choices: dict[MediaKind, CodecChoice] = {}
        self.tracks: dict[MediaKind, PassthroughTrack] = {}
        self.schedule: ViewerSchedule | None = None
        #: The viewer's bounded queue, once connected.
        self.feed: ViewerFeed | None = None
        self.pc: RTCPeerConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        if fanouts is None:
            fanouts = StreamFanouts(queue_frames=config.viewer_queue_frames)
        self._fanouts = fanouts

    def __repr__(self) -> str:
        return f"ViewerSession({self.session_id}, {self.stream.name!r}, {self.state})"

    @property
    def closed(self) -> bool:
        return self._closing is not None

    @property
    def subscription(self) -> ViewerFeed | None:
        """The viewer's bounded queue (``dropped``, ``len()``); kept under this name for
        the callers of the former per-viewer subscription (the benchmark's counters)."""
        return self.feed

    @property
    def dropped(self) -> int:
        """Frames this viewer lost: queue overflow, stale at release, wrong codec."""
        return self.schedule.dropped if self.schedule is not None else 0

    def frames_sent(self, kind: MediaKind) -> int:
        track = self.tracks.get(kind)
        return track.frames_sent if track is not None else 0

    # -- negotiation ------------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str, stream_codecs: dict[MediaKind, str]) -> str:
        """Apply the offer, return the complete answer SDP (ICE gathered).

        Raises :class:`InvalidRequest` for an unusable offer or no common codec.
        On any error the peer connection is closed before raising.
        """
        offer = parse_offer(offer_sdp)
        self.choices = choose_codecs(stream_codecs, offer)
        ice_servers = []
        if self.config.stun_server is not None:
            ice_servers.append(RTCIceServer(urls=f"stun:{self.config.stun_server}"))
        # The default "balanced" bundle policy, not "max-bundle": aiortc 1.16 then stops
        # and drops the wrong transport when our first transceiver is not the offer's
        # first m-line. With "balanced" every transceiver made here is moved onto the
        # offer's BUNDLE transport before any gathering, so only one socket is opened.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self.pc = pc
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            # Transceivers made before the offer is applied, so setRemoteDescription
            # matches them (by kind) and negotiates with their codec preferences.
            for kind in ("audio", "video"):
                choice = self.choices.get(kind)
                if choice is None:
                    continue
                track = PassthroughTrack(choice.kind, choice.clock_rate)
                self.tracks[choice.kind] = track
                transceiver = pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(list(choice.preferences))
                hook_keyframe_requests(transceiver.sender, self._on_keyframe_request)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                answer = await pc.createAnswer()
                with host_addresses(self.config.ice_addresses):
                    await pc.setLocalDescription(answer)
            except (OperationError, InternalError, InvalidStateError, *_SDP_ERRORS) as exc:
                raise InvalidRequest(
                    f"the offer was refused: {exc or type(exc).__name__}", field="sdp"
                ) from None
            description = pc.localDescription
            if "a=candidate:" not in description.sdp:
                raise InvalidRequest(
                    "no ICE candidate could be gathered (check webrtc.ice_addresses)"
                )
            self.state = "connecting" if self.state == "new" else self.state
            return description.sdp
        except BaseException:
            await self.close("failed")
            raise

    def start(self) -> None:
        """Start the session's task (after :meth:`negotiate`)."""
        if self._task is not None:
            raise RuntimeError("this session was already started")
        self._task = asyncio.create_task(self._run(), name=f"whep-{self.session_id}")

    # -- the session's task -----------------------------------------------------------------
    async def _run(self) -> None:
        end = await self._serve()
        # Ended by itself (close() cancels this task otherwise): release everything.
        await self.close(end)

    async def _serve(self) -> str:
        """Wait for the connection, join the stream's fan-out, wait for the end; the state
        the session ends in."""
        try:
            if not await self._wait_connected():
                return "closed" if self.stream.status.is_final else "failed"
            schedule = ViewerSchedule({k: c.codec for k, c in self.choices.items()})
            feed = ViewerFeed(
                schedule,
                self.tracks,
                max_queue=self.config.viewer_queue_frames,
                request_keyframe=self.stream.request_keyframe,
            )
            self.schedule, self.feed = schedule, feed
            try:
                self._fanouts.join(self.stream, feed)
            except StreamEnded:
                return "closed"
            end = await feed.ended
            if end == "closed":
                await self._play_out(feed)
            return end
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("whep %s: viewer task failed", self.session_id)
            return "failed"

    async def _play_out(self, feed: ViewerFeed) -> None:
        """After the stream ended: let the senders take what the tracks still hold, until
        the last of it would be stale anyway."""
        loop = asyncio.get_running_loop()
        assert self.schedule is not None
        deadline = loop.time() + self.schedule.max_late
        for track in self.tracks.values():
            if track.queued:
                deadline = max(deadline, track.last_due + self.schedule.max_late)
        while len(feed) and loop.time() < deadline:
            await asyncio.sleep(STREAM_POLL / 5)

    async def _wait_connected(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout
        while not self._connected.is_set():
            if self.stream.status.is_final:
                log.info("whep %s: stream ended before the viewer connected", self.session_id)
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info(
                    "whep %s: not connected within %.1f s",
                    self.session_id,
                    self.config.connect_timeout,
                )
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), min(remaining, STREAM_POLL))
        return True

    # -- aiortc callbacks ---------------------------------------------------------------------
    def _on_connection_state(self) -> None:
        pc = self.pc
        if pc is None or self._closing is not None:
            return
        state = pc.connectionState
        if state in ("connecting", "connected"):
            self.state = state
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            log.info("whep %s: connection %s", self.session_id, state)
            watcher = asyncio.ensure_future(self.close("failed" if state == "failed" else "closed"))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    def _on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        self.stream.request_keyframe()

    # -- closing ---------------------------------------------------------------------------
    async def close(self, state: str = "closed") -> None:
        """End the session: task cancelled, fan-out left, peer connection closed,
        then ``on_closed(self)``. Idempotent; concurrent callers all wait for the end."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            self.state = state
            task = self._task
            if task is not None and task is not asyncio.current_task() and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.feed is not None:
                self.feed.leave()
            for track in self.tracks.values():
                track.stop()
            if self.pc is not None:
                await self.pc.close()
            log.info("whep %s: %s (stream %s)", self.session_id, state, self.stream.name)
        finally:
            if self.on_closed is not None:
                try:
                    self.on_closed(self)
                except Exception:
                    log.exception("whep %s: on_closed failed", self.session_id)
            self._closing.set_result(None)
