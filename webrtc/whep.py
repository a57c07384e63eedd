"""WHEP sessions: the WebRTC egress as the HTTP layer drives it.

A WHEP player (RFC 9725's egress sibling, draft-ietf-wish-whep) POSTs an SDP
offer for a stream and gets the complete answer back (ICE gathered, no
trickle); DELETE on the session ends it. :class:`WhepSessions` holds the
sessions of the whole gateway, enforces the viewer limits and reports
:class:`ViewerInfo`. Each session is a :class:`~webrtc.session.ViewerSession`.

Which codecs a stream has: what its tracks declare (a call declares the
negotiated codec of every track when the callee answers; a published frame
sets it too). A stream that declares none yet (``PENDING``: the call still
rings) is waited for, at most ``config.media_wait`` seconds, then the request
is refused with :class:`~sipbridge.errors.Conflict`; a WHEP player may retry.
Waiting for first *frames* instead would add nothing: the declaration comes
from the same SDP answer, before them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import msgspec

from rtp.frame import MediaKind
from sipbridge.errors import Conflict, NotFound
from sipbridge.registry import Stream, StreamRegistry
from webrtc.config import WebRtcConfig
from webrtc.fanout import StreamFanouts
from webrtc.ice import install as install_ice_patch
from webrtc.session import ViewerSession

__all__ = ["MEDIA_POLL", "ViewerInfo", "WhepAnswer", "WhepSessions"]

log = logging.getLogger(__name__)

#: While a stream declares no codec yet, how often (seconds) to look again.
MEDIA_POLL = 0.05


class WhepAnswer(msgspec.Struct, kw_only=True):
    """The result of a WHEP POST: the session's id (for its resource URL) and answer SDP."""

    session_id: str
    stream_name: str
    sdp: str


class ViewerInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """One viewer as the REST layer reports it; ``created_at`` in Unix milliseconds.

    ``state``: ``"new"``, ``"connecting"``, ``"connected"``, ``"closed"`` or ``"failed"``.
    ``dropped``: frames this viewer lost (queue overflow, stale after a stall, wrong
    codec). ``keyframe_requests``: PLI/FIR received from the player.
    """

    session_id: str
    stream_name: str
    state: str
    created_at: int
    video_codec: str | None
    audio_codec: str | None
    video_frames_sent: int
    audio_frames_sent: int
    dropped: int
    keyframe_requests: int


def viewer_info(session: ViewerSession) -> ViewerInfo:
    video = session.choices.get("video")
    audio = session.choices.get("audio")
    return ViewerInfo(
        session_id=session.session_id,
        stream_name=session.stream.name,
        state=session.state,
        created_at=round(session.created_at * 1000),
        video_codec=video.codec if video is not None else None,
        audio_codec=audio.codec if audio is not None else None,
        video_frames_sent=session.frames_sent("video"),
        audio_frames_sent=session.frames_sent("audio"),
        dropped=session.dropped,
        keyframe_requests=session.keyframe_requests,
    )


def declared_codecs(stream: Stream) -> dict[MediaKind, str]:
    """Kind -> codec name of every track of ``stream`` that declares one."""
    codecs: dict[MediaKind, str] = {}
    for track in stream.tracks.values():
        if track.codec:
            codecs[track.kind] = track.codec
    return codecs


class WhepSessions:
    """Every WHEP viewer of the gateway (see the module docstring).

    ``create`` / ``delete`` / ``get`` / ``viewers`` serve the HTTP layer;
    ``close`` ends every session (gateway shutdown). A session that ends by
    itself (stream ended, ICE failed, connect timeout) leaves the table at once.
    """

    def __init__(self, streams: StreamRegistry, config: WebRtcConfig) -> None:
        self.streams = streams
        self.config = config
        self._sessions: dict[str, ViewerSession] = {}
        # Viewers being negotiated, by stream name: they count against the limits.
        self._pending: Counter[str] = Counter()
        self._closed = False
        # One fan-out per stream with viewers: one reader, one timer, one packet per frame.
        self._fanouts = StreamFanouts(queue_frames=config.viewer_queue_frames)
        install_ice_patch()

    def __len__(self) -> int:
        return len(self._sessions)

    # -- WHEP ----------------------------------------------------------------------------
    async def create(self, stream_name: str, offer_sdp: str) -> WhepAnswer:
        """A new viewer of ``stream_name`` from the player's SDP offer.

        Raises :class:`NotFound` (no such live stream), :class:`InvalidRequest`
        (unparseable offer, no codec in common), :class:`Conflict` (a viewer
        limit is reached, the gateway is closing, or the stream declared no
        media within ``media_wait`` seconds).
        """
        if self._closed:
            raise Conflict("the WebRTC egress is shutting down")
        stream = self._live_stream(stream_name)
        self._check_limits(stream_name)
        self._pending[stream_name] += 1
        try:
            codecs = await self._wait_codecs(stream)
            session = ViewerSession(
                stream, self.config, on_closed=self._forget, fanouts=self._fanouts
            )
            sdp = await session.negotiate(offer_sdp, codecs)
            if self._closed or stream.status.is_final:
                await session.close("closed")
                if self._closed:
                    raise Conflict("the WebRTC egress is shutting down")
                raise NotFound(f"stream {stream_name!r} has ended", field="streamName")
            self._sessions[session.session_id] = session
            session.start()
        finally:
            self._pending[stream_name] -= 1
            if self._pending[stream_name] <= 0:
                del self._pending[stream_name]
        log.info(
            "whep %s: viewer of %s (%s)",
            session.session_id,
            stream_name,
            ", ".join(f"{c.kind} {c.codec}" for c in session.choices.values()),
        )
        return WhepAnswer(session_id=session.session_id, stream_name=stream_name, sdp=sdp)

    async def delete(self, session_id: str) -> ViewerInfo:
        """End a viewer (WHEP DELETE); its final :class:`ViewerInfo`. NotFound if unknown."""
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no WebRTC session {session_id!r}", field="sessionId")
        await session.close("closed")
        return viewer_info(session)

    def get(self, session_id: str) -> ViewerInfo | None:
        session = self._sessions.get(session_id)
        return None if session is None else viewer_info(session)

    def viewers(self, stream_name: str | None = None) -> list[ViewerInfo]:
        """Every open viewer (of ``stream_name`` when given), oldest first."""
        return [
            viewer_info(s)
            for s in self._sessions.values()
            if stream_name is None or s.stream.name == stream_name
        ]

    async def close(self) -> None:
        """Close every session and refuse new ones (gateway shutdown). Idempotent."""
        self._closed = True
        sessions = list(self._sessions.values())
        if sessions:
            await asyncio.gather(*(s.close("closed") for s in sessions), return_exceptions=True)
        self._sessions.clear()
        await self._fanouts.close()

    # -- internals -------------------------------------------------------------------------
    def _live_stream(self, stream_name: str) -> Stream:
        stream = self.streams.get(stream_name)
        if stream is None or stream.status.is_final:
            raise NotFound(f"no live stream named {stream_name!r}", field="streamName")
        return stream

    def _check_limits(self, stream_name: str) -> None:
        total = len(self._sessions) + sum(self._pending.values())
        if total >= self.config.max_viewers:
            raise Conflict(
                f"too many WebRTC viewers: the gateway serves at most {self.config.max_viewers}"
            )
        of_stream = self._pending[stream_name] + sum(
            1 for s in self._sessions.values() if s.stream.name == stream_name
        )
        if of_stream >= self.config.max_viewers_per_stream:
            raise Conflict(
                f"stream {stream_name!r} has {of_stream} WebRTC viewers, "
                f"the most allowed (webrtc.max_viewers_per_stream)"
            )

    async def _wait_codecs(self, stream: Stream) -> dict[MediaKind, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.media_wait
        while True:
            if stream.status.is_final:
                raise NotFound(f"stream {stream.name!r} has ended", field="streamName")
            codecs = declared_codecs(stream)
            if codecs:
                return codecs
            if loop.time() >= deadline:
                raise Conflict(
                    f"stream {stream.name!r} has no media yet ({stream.status.value}): "
                    f"retry when it is published"
                )
            await asyncio.sleep(MEDIA_POLL)

    def _forget(self, session: ViewerSession) -> None:
        self._sessions.pop(session.session_id, None)
