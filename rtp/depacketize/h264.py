"""H264 RTP depacketizer (RFC 6184): RTP packets in sequence order -> access units.

Theory of operation
-------------------
Packets arrive in sequence order from the jitter buffer, each with its
extended timestamp and the number of packets lost just before it. Three
payload structures are accepted (RFC 6184 §5.4, packetization-mode 0 and 1):
single NAL unit packets (types 1-23, §5.6), STAP-A (24, §5.7.1) and FU-A (28,
§5.8). The interleaved-mode structures STAP-B, MTAP16, MTAP24 and FU-B (25,
26, 27, 29) are rejected and counted; types 0, 30 and 31 are ignored (§5.2).

An access unit (AU) is every NAL unit with one RTP timestamp (§5.1). It ends
at the marker bit, or when a packet with another timestamp arrives, because
some phones never set the marker. A finished AU is emitted as one
:class:`~rtp.frame.MediaFrame` whose payload is the Annex B byte stream that
``ffmpeg -c:v copy -bsf:v h264_mp4toannexb -f h264`` (5.1) writes for it:
4-byte start codes before the AU's first NAL unit and before SPS/PPS, 3-byte
before the others, filler data (type 12) dropped, and for an IDR AU without
in-band parameter sets the cached SPS and PPS inserted right before the first
IDR slice (after any SEI), exactly where ffmpeg puts them.

Parameter sets seen in-band (even in an AU that is then dropped) or in the
SDP's ``sprop-parameter-sets`` are cached by id. ``config`` on a frame is the
Annex B SPS+PPS whenever it differs from what the previous frame announced.

Loss: ``lost_before`` (or a sequence number gap the caller did not report;
an old or repeated packet is ignored), a missing FU-A fragment, a malformed packet or an AU
cut short makes the AU in progress unusable. It is dropped, and so is every
following AU until an IDR arrives: without its references a P frame only
decodes to garbage. :attr:`needs_keyframe` then says to send PLI/FIR and
:meth:`take_keyframe_request` fires once per such episode. The stream also
starts waiting for an IDR (joining mid-GOP), but asks for a keyframe only
when it actually drops a frame for want of one. An AU whose first packets may
have been lost is kept only when it is an IDR whose first slice starts the
picture (``first_mb_in_slice == 0``), so a loss just before a keyframe does
not cost a second keyframe round trip.

Nothing here raises on packet content; every rejection is counted in
:class:`H264Stats`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass

from rtp.frame import MediaFrame
from rtp.h264_bits import (
    NAL_FILLER,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    SpsInfo,
    first_mb_in_slice,
    is_vcl,
    parse_sps,
    pps_id,
    sps_id,
)
from rtp.packet import RtpPacket

__all__ = ["H264Depacketizer", "H264Stats", "parse_sprop_parameter_sets"]

_STAP_A = 24
_FU_A = 28
_INTERLEAVED = frozenset({25, 26, 27, 29})  # STAP-B, MTAP16, MTAP24, FU-B
_START_CODE_4 = b"\x00\x00\x00\x01"
_START_CODE_3 = b"\x00\x00\x01"
# Larger than any sane access unit (a 4K intra frame at high quality is a few MB):
# a sender streaming endless FU-A middles must not exhaust memory.
MAX_ACCESS_UNIT_SIZE = 16 * 1024 * 1024


def parse_sprop_parameter_sets(value: str) -> list[bytes]:
    """Decode the fmtp ``sprop-parameter-sets`` (RFC 6184 §8.1): base64 NAL units, commas."""
    nals = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            nal = base64.b64decode(entry + "=" * (-len(entry) % 4), validate=True)
        except binascii.Error:
            raise ValueError(f"sprop-parameter-sets entry {entry!r} is not base64") from None
        if not nal:
            raise ValueError(f"sprop-parameter-sets entry {entry!r} is empty")
        nals.append(nal)
    return nals


@dataclass(slots=True)
class H264Stats:
    """Counters of one H264 depacketizer."""

    frames: int = 0
    """Access units emitted."""
    keyframes: int = 0
    """Emitted access units that hold an IDR picture."""
    dropped_frames: int = 0
    """Access units dropped: incomplete, or not an IDR while waiting for one."""
    bad_packets: int = 0
    """Malformed packets (empty, truncated STAP-A, bad FU-A) and interleaved-mode ones."""
    unsupported_packets: int = 0
    """Packets of types 0 and 25-31 (not defined for packetization-mode 0/1)."""
    lost_packets: int = 0
    """Sum of ``lost_before`` reported by the jitter buffer."""


class H264Depacketizer:
    """RFC 6184 depacketizer for packetization-mode 0 and 1, output in Annex B access units.

    Single NAL unit (1-23), STAP-A (24) and FU-A (28) packets (§5.6-§5.8);
    STAP-B, MTAP and FU-B (interleaved mode 2) are rejected and counted.
    """

    def __init__(self, *, sprop_parameter_sets: str | None = None, clock_rate: int = 90000) -> None:
        self.clock_rate = clock_rate
        self.stats = H264Stats()
        self._sps: dict[int, bytes] = {}
        self._pps: dict[int, bytes] = {}
        self._sps_info: SpsInfo | None = None
        self._announced_config: bytes | None = None
        self._waiting_for_idr = True
        self._needs_keyframe = False
        self._request_pending = False
        self._last_seq: int | None = None
        self._loss_pending = False  # packets lost since the last packet with a payload
        # The access unit in progress.
        self._au_timestamp: int | None = None
        self._au_nals: list[bytes] = []
        self._au_size = 0
        self._au_corrupt = False
        self._au_head_lost = False
        self._au_arrival = 0.0
        self._au_ssrc = 0
        self._fu: bytearray | None = None
        self._fu_type = 0
        if sprop_parameter_sets:
            # The remote SDP is untrusted input too: skip what does not decode.
            for entry in sprop_parameter_sets.split(","):
                try:
                    nals = parse_sprop_parameter_sets(entry)
                except ValueError:
                    continue
                for nal in nals:
                    self._store_parameter_set(nal)

    # -- public state ---------------------------------------------------------

    @property
    def needs_keyframe(self) -> bool:
        """True from a loss (or a frame dropped for want of an IDR) until the next IDR."""
        return self._needs_keyframe

    def take_keyframe_request(self) -> bool:
        """True once per loss episode: the edge that should trigger one (rate-limited) PLI."""
        pending = self._request_pending
        self._request_pending = False
        return pending

    @property
    def sps(self) -> SpsInfo | None:
        """The most recent SPS that parsed, or None."""
        return self._sps_info

    @property
    def width(self) -> int | None:
        """Picture width in pixels after cropping, when an SPS is known."""
        return self._sps_info.width if self._sps_info else None

    @property
    def height(self) -> int | None:
        """Picture height in pixels after cropping, when an SPS is known."""
        return self._sps_info.height if self._sps_info else None

    @property
    def profile(self) -> str | None:
        """The profile's name (``"Constrained Baseline"``, ``"High"``...), when known."""
        return self._sps_info.profile if self._sps_info else None

    @property
    def config(self) -> bytes | None:
        """The cached SPS and PPS in Annex B, or None while none is known."""
        if not self._sps and not self._pps:
            return None
        return b"".join(
            _START_CODE_4 + nal
            for table in (self._sps, self._pps)
            for _, nal in sorted(table.items())
        )

    # -- input ----------------------------------------------------------------

    def push(
        self,
        packet: RtpPacket,
        *,
        extended_timestamp: int,
        arrival: float,
        lost_before: int = 0,
        discontinuity: bool = False,
    ) -> list[MediaFrame]:
        """Take the next packet in sequence order; return the access units it completes."""
        frames: list[MediaFrame] = []
        if discontinuity:
            # A new source or a jump: what is in progress cannot continue into it.
            self._abandon_access_unit()
            self._start_loss_episode()
            self._last_seq = None
        gap = (
            0 if self._last_seq is None else (packet.sequence_number - self._last_seq - 1) & 0xFFFF
        )
        if gap >= 0x8000:
            # Older than the last packet, or a repeat: the jitter buffer should
            # never release one, and it must not tear up the AU in progress.
            self.stats.bad_packets += 1
            return frames
        self._last_seq = packet.sequence_number
        if lost_before <= 0 and gap:
            lost_before = gap  # a gap nobody reported is still a loss
        if lost_before > 0:
            self.stats.lost_packets += lost_before
            self._start_loss_episode()
            if self._au_timestamp is not None:
                self._au_corrupt = True
            self._loss_pending = True
        payload = packet.payload
        if not payload:
            # Also what padding-only probe packets look like: they do not end an AU.
            self.stats.bad_packets += 1
            return frames
        if self._au_timestamp is not None and extended_timestamp != self._au_timestamp:
            frames += self._finish_access_unit()
        if self._au_timestamp is None:
            self._au_timestamp = extended_timestamp
            self._au_head_lost = self._loss_pending
        self._loss_pending = False
        self._au_arrival = arrival
        self._au_ssrc = packet.ssrc
        self._take_payload(payload)
        if packet.marker:
            frames += self._finish_access_unit()
        return frames

    def flush(self) -> list[MediaFrame]:
        """End of stream: emit the access unit in progress if it is whole."""
        return self._finish_access_unit()

    # -- payload structures ---------------------------------------------------

    def _take_payload(self, payload: bytes) -> None:
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self._add_nal(payload)
        elif kind == _STAP_A:
            nals = _split_stap_a(payload)
            if nals is None:
                self._reject_packet()
            else:
                for nal in nals:
                    self._add_nal(nal)
        elif kind == _FU_A:
            self._take_fu_a(payload)
        elif kind in _INTERLEAVED:
            self.stats.unsupported_packets += 1
            self._reject_packet()
        else:
            # Types 0, 30 and 31: undefined, receivers ignore them (RFC 6184 §5.2).
            self.stats.unsupported_packets += 1

    def _take_fu_a(self, payload: bytes) -> None:
        # RFC 6184 §5.8. A fragment needs its 2 header bytes and at least one byte
        # of the NAL unit (ffmpeg rejects shorter ones too).
        if len(payload) < 3:
            self._reject_packet()
            return
        indicator, header = payload[0], payload[1]
        start, end, kind = header & 0x80, header & 0x40, header & 0x1F
        if kind == 0 or kind >= 24:
            # FUs carry a NAL unit, never an aggregation packet or another FU.
            self._reject_packet()
            return
        if start:
            if self._fu is not None:
                self._mark_corrupt()  # the previous NAL unit never got its end fragment
            self._fu = bytearray([(indicator & 0xE0) | kind])
            self._fu_type = kind
        elif self._fu is None or kind != self._fu_type:
            self._fu = None
            self._mark_corrupt()  # the start (or a whole NAL unit's fragments) went missing
            return
        self._fu += payload[2:]
        self._au_size += len(payload) - 2
        if self._au_size > MAX_ACCESS_UNIT_SIZE:
            self._fu = None
            self._mark_corrupt()
            return
        if end:
            # S and E together break §5.8's MUST NOT, yet the NAL unit is whole:
            # like aiortc and GStreamer, take it.
            self._au_nals.append(bytes(self._fu))
            self._fu = None

    def _add_nal(self, nal: bytes) -> None:
        if self._fu is not None:
            self._fu = None
            self._mark_corrupt()  # an FU-A cut short by another packet
        self._au_size += len(nal)
        if self._au_size > MAX_ACCESS_UNIT_SIZE:
            self._mark_corrupt()
            return
        self._au_nals.append(nal)

    def _reject_packet(self) -> None:
        self.stats.bad_packets += 1
        self._mark_corrupt()  # what it carried is lost to this AU

    # -- access units ---------------------------------------------------------

    def _mark_corrupt(self) -> None:
        self._au_corrupt = True
        self._start_loss_episode()

    def _start_loss_episode(self) -> None:
        self._waiting_for_idr = True
        if not self._needs_keyframe:
            self._needs_keyframe = True
            self._request_pending = True

    def _reset_access_unit(self) -> list[bytes]:
        nals = self._au_nals
        self._au_timestamp = None
        self._au_nals = []
        self._au_size = 0
        self._au_corrupt = False
        self._au_head_lost = False
        self._fu = None
        return nals

    def _abandon_access_unit(self) -> None:
        if self._au_timestamp is not None and (self._au_nals or self._fu is not None):
            self.stats.dropped_frames += 1
        self._reset_access_unit()

    def _finish_access_unit(self) -> list[MediaFrame]:
        timestamp = self._au_timestamp
        if timestamp is None:
            return []
        if self._fu is not None:
            self._mark_corrupt()  # no end fragment before the AU ended
        corrupt, head_lost = self._au_corrupt, self._au_head_lost
        nals = self._reset_access_unit()
        # Complete parameter set NAL units are good even in a broken AU.
        for nal in nals:
            if nal[0] & 0x1F in (NAL_SPS, NAL_PPS):
                self._store_parameter_set(nal)
        if corrupt:
            self.stats.dropped_frames += 1
            return []
        slices = [nal for nal in nals if is_vcl(nal[0] & 0x1F)]
        if not slices:
            return []  # parameter sets or SEI on their own: not a picture
        keyframe = any(nal[0] & 0x1F == NAL_IDR for nal in slices)
        if head_lost and not (keyframe and _starts_picture(slices[0])):
            self.stats.dropped_frames += 1
            return []
        if self._waiting_for_idr:
            if not keyframe:
                self.stats.dropped_frames += 1
                self._start_loss_episode()
                return []
            self._waiting_for_idr = False
            self._needs_keyframe = False
            self._request_pending = False
        config = self.config
        if config == self._announced_config:
            config = None
        else:
            self._announced_config = config
        self.stats.frames += 1
        if keyframe:
            self.stats.keyframes += 1
        return [
            MediaFrame(
                kind="video",
                codec="H264",
                clock_rate=self.clock_rate,
                rtp_timestamp=timestamp,
                payload=self._annexb(nals),
                keyframe=keyframe,
                arrival=self._au_arrival,
                config=config,
                ssrc=self._au_ssrc,
            )
        ]

    def _annexb(self, nals: list[bytes]) -> bytes:
        # Mirrors ffmpeg 5.1's h264_mp4toannexb so that both yield the same bytes.
        parts: list[bytes] = []
        have_sps = have_pps = inserted = False
        for nal in nals:
            kind = nal[0] & 0x1F
            if kind == NAL_FILLER:
                continue  # padding for constant bit rate channels, worthless here
            if kind == NAL_SPS:
                have_sps = True
            elif kind == NAL_PPS:
                have_pps = True
            elif kind == NAL_IDR and not inserted:
                inserted = True
                if not have_sps:
                    parts += [_START_CODE_4 + sps for _, sps in sorted(self._sps.items())]
                if not have_pps:
                    parts += [_START_CODE_4 + pps for _, pps in sorted(self._pps.items())]
            first_or_ps = not parts or kind in (NAL_SPS, NAL_PPS)
            parts.append((_START_CODE_4 if first_or_ps else _START_CODE_3) + nal)
        return b"".join(parts)

    def _store_parameter_set(self, nal: bytes) -> None:
        # Without an id a decoder could not use it either: such a NAL unit is not cached.
        kind = nal[0] & 0x1F
        with contextlib.suppress(ValueError):
            if kind == NAL_PPS:
                self._pps[pps_id(nal)] = nal
            elif kind == NAL_SPS:
                self._sps[sps_id(nal)] = nal
                # An SPS past our parser is still good for the decoder; only its size is unknown.
                self._sps_info = parse_sps(nal)


def _split_stap_a(payload: bytes) -> list[bytes] | None:
    """The NAL units of a STAP-A (RFC 6184 §5.7.1), or None when it is malformed."""
    nals: list[bytes] = []
    pos = 1
    while pos < len(payload):
        if pos + 2 > len(payload):
            return None
        size = int.from_bytes(payload[pos : pos + 2], "big")
        pos += 2
        if size == 0 or pos + size > len(payload):
            return None
        nal = payload[pos : pos + size]
        pos += size
        kind = nal[0] & 0x1F
        if kind == 0 or kind >= 24:
            return None  # aggregation units hold NAL units, not other packets
        nals.append(nal)
    return nals or None


def _starts_picture(nal: bytes) -> bool:
    try:
        return first_mb_in_slice(nal) == 0
    except ValueError:
        return False
