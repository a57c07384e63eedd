"""Pre-encoded media into aiortc: passthrough tracks and the keyframe-request hook.

aiortc's :class:`~aiortc.RTCRtpSender` runs one task per sender that awaits
``track.recv()``; when that returns an :class:`av.Packet` instead of a frame,
the sender skips its encoder and calls the codec's ``pack(packet)``
(``RTCRtpSender._next_encoded_frame``):

* H.264 (``aiortc.codecs.h264.H264Encoder.pack``): splits the payload on
  Annex-B start codes and packetizes the NAL units (single NAL, STAP-A, FU-A,
  RFC 6184 §5.6-5.8); so the payload must be exactly one Annex-B access unit,
  which is what :class:`~rtp.frame.MediaFrame` carries. The marker bit is set
  on the access unit's last packet (RFC 6184 §5.1);
* PCMU/PCMA and Opus (``PcmEncoder.pack``, ``OpusEncoder.pack``): the bytes as
  one RTP payload.

In every case the RTP timestamp is ``packet.pts`` converted from
``packet.time_base`` to the codec clock (90 kHz, 8 kHz, 48 kHz) plus the
sender's random origin. :class:`PassthroughTrack` sets ``time_base`` to
exactly the codec clock and ``pts`` from the frame's presentation time, so no
rounding happens inside aiortc and both tracks derive from one clock.

PLI and FIR from the browser (RFC 4585 §6.3.1, RFC 5104 §4.3.1) make the sender
call its own ``_send_keyframe()``, which only flags its *encoder*; with
packets there is none. :func:`hook_keyframe_requests` replaces that method on
one sender instance so the request reaches the source instead.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import av
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.stream import Stream as AvStream

from rtp.frame import MediaFrame, MediaKind
from webrtc.schedule import rtp_timestamp

__all__ = ["TRACK_QUEUE", "PassthroughTrack", "hook_keyframe_requests"]

#: Frames a track holds for its sender. Small: the bound that matters is the viewer's
#: subscription; a sender that stops reading makes the viewer's pump wait, and then
#: its subscription overflows and drops (never the stream or other viewers).
TRACK_QUEUE = 16


class PassthroughTrack(MediaStreamTrack):
    """An aiortc track whose ``recv()`` returns the viewer's frames as :class:`av.Packet`."""

    def __init__(self, kind: MediaKind, clock_rate: int, *, max_queue: int = TRACK_QUEUE) -> None:
        super().__init__()
        self.kind = kind
        self.clock_rate = clock_rate
        self.time_base = fractions.Fraction(1, clock_rate)
        self.frames_sent = 0
        self.bytes_sent = 0
        self._queue: asyncio.Queue[MediaFrame | None] = asyncio.Queue(maxsize=max_queue)
        self._finished = False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def put(self, frame: MediaFrame) -> None:
        """Hand ``frame`` to the sender; waits while the sender has not taken earlier ones."""
        if self._finished:
            return
        await self._queue.put(frame)

    def finish(self) -> None:
        """No more frames: the sender's pending and next ``recv()`` end its RTP loop."""
        if self._finished:
            return
        self._finished = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def recv(self) -> av.Packet[AvStream]:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None or frame.pts is None:
            if frame is None:
                self._queue.put_nowait(None)  # every later recv() ends too
            raise MediaStreamError
        packet = av.Packet(frame.payload)
        packet.pts = rtp_timestamp(frame.pts, self.clock_rate)
        packet.time_base = self.time_base
        self.frames_sent += 1
        self.bytes_sent += len(frame.payload)
        return packet

    def stop(self) -> None:
        self.finish()
        super().stop()


def hook_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Make PLI/FIR received for ``sender`` call ``on_request()``.

    Shadows ``RTCRtpSender._send_keyframe`` on this instance (aiortc 1.16 calls
    ``self._send_keyframe()`` from ``_handle_rtcp_packet``). The original only sets
    a flag for aiortc's own encoder, unused with pre-encoded packets, so nothing
    is lost by not calling it.
    """
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise RuntimeError("aiortc's RTCRtpSender has no _send_keyframe(): version mismatch")
    setattr(sender, "_send_keyframe", on_request)  # noqa: B010 - assigning a method, on purpose
