"""A real softphone for interop tests: baresip 1.0 registered at a :class:`Kamailio`.

Theory of operation
-------------------
:class:`Baresip` writes a private configuration directory (``config`` and
``accounts``) and runs ``baresip -f DIR`` headless, bound to 127.0.0.1 only:
SIP on a free port (baresip also binds TLS on SIP port + 1, so two ports are
reserved), RTP in a private port range, and the ``cons`` console on a free UDP
port. The one account registers at the Kamailio fixture and answers incoming
calls by itself (``answermode=auto``). The process is a
:class:`~tests.interop.peers.ManagedProcess`; :meth:`Baresip.start` with a
:class:`~tests.interop.peers.PeerSet` hands it to the ``peers`` fixture, which
stops it by PID whatever the test's outcome.

Facts about baresip 1.0 (Debian ``baresip-core``) that shaped this module:

* Without a config directory it writes a default one and listens on
  0.0.0.0:5060, so every test instance gets its own ``-f DIR`` and
  ``sip_listen 127.0.0.1:PORT``. ``net_interface`` takes an address
  (``127.0.0.1``), not an interface name.
* ``stdio.so`` fails with stdin closed ("Operation not permitted"); the
  console is ``cons.so`` instead, which reads keys from UDP datagrams
  (``/hangup\\n`` is a long command, as typed) and answers the sender.
* No sound card: ``aubridge`` as both audio player and source loops what it
  plays back into what it sends, for any codec. ``ausine`` only works at
  48 kHz stereo (opus), and avformat audio crashes this build.
  ``fakevideo`` is both a video source and a display.
* Real media (:class:`MediaSources`): ``video_source avformat,FILE.mp4``
  decodes the file and re-encodes it with baresip's own encoder at the
  config's ``video_size`` / ``video_fps`` / ``video_bitrate``; it works only
  if the file has **no audio track**. Audio comes from a WAV file through
  ``audio_source aufile,FILE.wav`` (``aufile.so``, in baresip-core): it
  refuses a file whose rate or channel count differs from the source's
  ("must have channels = 2"), so ``ausrc_srate`` / ``ausrc_channels`` are set
  from the file and baresip resamples to the codec.
  ``gst,file:///FILE.wav`` (``gst.so``, baresip-gstreamer) also needs
  GStreamer's ``playbin`` and ``wavparse`` (gstreamer1.0-plugins-base and
  -good, only *recommended* by that package): without them it logs "gst:
  failed to create playbin source element" and never sends its 200 OK.
* ``baresip-core`` has no H.264 (that is ``avcodec.so`` from
  ``baresip-ffmpeg``); its video codecs are VP8 and VP9.
* With ``-s`` it prints every SIP message it sends and receives, and with
  ``-v`` its debug lines: "Call established", "session closed",
  "received DTMF" for SIP INFO ``application/dtmf-relay``, "received event:
  '1' (end=0)" then "(end=1)" for RFC 4733 telephone-events over RTP. "Call with X
  terminated" is printed only for calls that lasted a whole second; a BYE
  received shows as "session closed: Connection reset by peer", a local hangup
  as "call: terminate call". Run under ``stdbuf -oL`` so every line reaches the
  log when printed.
"""

from __future__ import annotations

import re
import socket
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tests.interop.peers import (
    LOCALHOST,
    Kamailio,
    ManagedProcess,
    PeerError,
    PeerTimeout,
    free_port,
    require_binary,
    wait_until,
)

if TYPE_CHECKING:
    from tests.interop.peers import PeerSet

MODULE_DIR = Path("/usr/lib/baresip/modules")

#: Modules every instance loads; a missing one fails at start with its name.
BASE_MODULES = (
    "cons.so",
    "g711.so",
    "opus.so",
    "aubridge.so",
    "fakevideo.so",
)
#: Video codec modules loaded when present (``avcodec.so`` comes with baresip-ffmpeg).
OPTIONAL_VIDEO_MODULES = ("avcodec.so", "vp8.so")
#: Video file source module for :class:`MediaSources` (baresip-ffmpeg).
VIDEO_FILE_MODULE = "avformat"

_RTP_PORTS = 16
# `-s` prints each message as ESC[36;1m "#" NL "UDP SRC -> DST" NL message ESC[;m.
_SIP_TRACE_ENTRY = re.compile(
    r"\x1b\[36;1m#\r?\n(?P<transport>\w+) (?P<src>\S+) -> (?P<dst>\S+)\r?\n"
    r"(?P<message>.*?)\x1b\[;m",
    re.DOTALL,
)


def available_modules(module_dir: Path = MODULE_DIR) -> frozenset[str]:
    """The baresip module files installed (``g711.so``, ``avcodec.so``, ...)."""
    try:
        return frozenset(p.name for p in module_dir.iterdir() if p.suffix == ".so")
    except FileNotFoundError:
        return frozenset()


@dataclass(frozen=True)
class MediaSources:
    """What baresip sends instead of its loopback: a video file and/or a WAV file.

    ``video_file`` must be a container without an audio track (avformat audio
    crashes baresip 1.0); baresip re-encodes it at ``video_size`` (``WxH``),
    ``video_fps`` and ``video_bitrate`` (bit/s). ``audio_file`` is a WAV file
    played by ``audio_module``: ``aufile`` (baresip-core) or ``gst`` (needs
    GStreamer's base and good plugins, see the module docstring).
    """

    video_file: Path | None = None
    audio_file: Path | None = None
    audio_module: Literal["aufile", "gst"] = "aufile"
    video_size: tuple[int, int] = (352, 288)
    video_fps: float = 25.0
    video_bitrate: int = 500_000

    def modules(self) -> tuple[str, ...]:
        """The extra module files these sources need (``avformat.so``, ``aufile.so``)."""
        needed = []
        if self.video_file is not None:
            needed.append(f"{VIDEO_FILE_MODULE}.so")
        if self.audio_file is not None:
            needed.append(f"{self.audio_module}.so")
        return tuple(needed)

    def audio_source(self) -> str | None:
        """The ``audio_source`` config value, ``None`` without an audio file."""
        if self.audio_file is None:
            return None
        path = self.audio_file.resolve()
        return f"gst,{path.as_uri()}" if self.audio_module == "gst" else f"aufile,{path}"

    def audio_format(self) -> tuple[int, int] | None:
        """``(sample rate, channels)`` of the audio file, ``None`` without one."""
        if self.audio_file is None:
            return None
        with wave.open(str(self.audio_file), "rb") as wav:
            return wav.getframerate(), wav.getnchannels()

    def video_source(self) -> str | None:
        """The ``video_source`` config value, ``None`` without a video file."""
        if self.video_file is None:
            return None
        return f"{VIDEO_FILE_MODULE},{self.video_file.resolve()}"


@dataclass(frozen=True)
class BaresipSipMessage:
    """One SIP message from baresip's ``-s`` trace, as baresip saw it."""

    direction: str
    """``send`` or ``recv`` (from baresip's point of view)."""
    text: str
    """The message, start line first, lines separated by ``\\n``."""

    @property
    def first_line(self) -> str:
        """Request line or status line."""
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_response(self) -> bool:
        """Whether this is a response."""
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def cseq_method(self) -> str:
        """The method of the CSeq header (``INVITE`` for a 200 OK to an INVITE)."""
        match = re.search(r"^CSeq:\s*\d+\s+(\S+)", self.text, re.MULTILINE | re.IGNORECASE)
        return match.group(1) if match else ""

    @property
    def body(self) -> str:
        """The message body (SDP, dtmf-relay), empty if none."""
        _, _, body = self.text.partition("\n\n")
        return body


class Baresip:
    """baresip 1.0 as ``user`` registered at ``registrar``, answering calls by itself.

    ``sip_port`` is baresip's UDP/TCP SIP port (TLS takes the next one); by
    default two free ports are reserved. ``audio_codecs`` / ``video_codecs``
    restrict the account's codecs (``None``: every loaded codec; note
    ``video_codecs=("H264",)`` selects packetization-mode 0 only).
    ``media`` replaces the loopback audio and fake video with files.
    """

    def __init__(
        self,
        workdir: Path,
        log_dir: Path,
        *,
        user: str,
        password: str,
        registrar: Kamailio,
        sip_port: int | None = None,
        cons_port: int | None = None,
        audio_codecs: Sequence[str] | None = None,
        video_codecs: Sequence[str] | None = None,
        answermode: str = "auto",
        regint: int = 600,
        sip_trace: bool = True,
        name: str | None = None,
        media: MediaSources | None = None,
    ) -> None:
        self.binary = require_binary("baresip")
        self.stdbuf = require_binary("stdbuf", "coreutils")
        self.workdir = workdir
        self.log_dir = log_dir
        self.config_dir = workdir / "baresip"
        self.user = user
        self.password = password
        self.registrar = registrar
        self.sip_port = sip_port if sip_port is not None else free_port("sip", span=2)
        self.cons_port = cons_port if cons_port is not None else free_port("udp")
        self.rtp_port_min = free_port("udp", span=_RTP_PORTS)
        self.audio_codecs = tuple(audio_codecs) if audio_codecs is not None else None
        self.video_codecs = tuple(video_codecs) if video_codecs is not None else None
        self.answermode = answermode
        self.regint = regint
        self.sip_trace = sip_trace
        self.name = name or f"baresip_{user}"
        self.media = media if media is not None else MediaSources()
        self.modules = self._select_modules()
        self._process: ManagedProcess | None = None

    # -- configuration -----------------------------------------------------------------
    def _select_modules(self) -> tuple[str, ...]:
        installed = available_modules()
        missing = [m for m in BASE_MODULES if m not in installed]
        if missing:
            raise PeerError(
                f"baresip modules {missing} not found in {MODULE_DIR}: "
                "install the Debian package 'baresip-core'"
            )
        sources = self.media.modules()
        missing = [m for m in sources if m not in installed]
        if missing:
            raise PeerError(
                f"baresip modules {missing} not found in {MODULE_DIR}: install the Debian "
                "packages 'baresip-ffmpeg' (avformat.so) or 'baresip-gstreamer' (gst.so)"
            )
        optional = tuple(m for m in OPTIONAL_VIDEO_MODULES if m in installed)
        return BASE_MODULES + optional + sources

    @property
    def has_h264(self) -> bool:
        """Whether this baresip can do H.264 (``avcodec.so`` from baresip-ffmpeg)."""
        return "avcodec.so" in self.modules

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` where baresip takes SIP over UDP."""
        return f"{LOCALHOST}:{self.sip_port}"

    @property
    def aor(self) -> str:
        """The address-of-record registered at the registrar."""
        return f"sip:{self.user}@{self.registrar.domain}"

    def render_config(self) -> str:
        """The ``config`` file: 127.0.0.1 only, headless audio and video, console."""
        media = self.media
        audio_source = media.audio_source() or f"aubridge,{self.name}"
        video_source = media.video_source() or "fakevideo,nil"
        width, height = media.video_size
        audio_format = media.audio_format()
        source_format = []
        if audio_format is not None:
            # aufile only plays a file in the source's own format; baresip resamples.
            source_format = [
                ("ausrc_srate", str(audio_format[0])),
                ("ausrc_channels", str(audio_format[1])),
            ]
        lines = [
            ("poll_method", "epoll"),
            ("sip_listen", f"{LOCALHOST}:{self.sip_port}"),
            ("net_interface", LOCALHOST),
            ("call_local_timeout", "120"),
            ("call_max_calls", "4"),
            # One aubridge device as player and source: plays back what it receives
            # (unless a file is the source).
            ("audio_player", f"aubridge,{self.name}"),
            ("audio_source", audio_source),
            ("audio_alert", f"aubridge,{self.name}-alert"),
            ("audio_level", "no"),
            *source_format,
            ("video_source", video_source),
            ("video_display", "fakevideo,nil"),
            ("video_size", f"{width}x{height}"),
            ("video_bitrate", str(media.video_bitrate)),
            ("video_fps", f"{media.video_fps:.2f}"),
            ("rtp_ports", f"{self.rtp_port_min}-{self.rtp_port_min + _RTP_PORTS - 1}"),
            ("rtcp_mux", "no"),
            ("jitter_buffer_delay", "1-10"),
            ("module_path", str(MODULE_DIR)),
            *(("module", module) for module in self.modules),
            ("module_tmp", "account.so"),
            ("module_app", "menu.so"),
            ("cons_listen", f"{LOCALHOST}:{self.cons_port}"),
        ]
        return "".join(f"{key}\t\t{value}\n" for key, value in lines)

    def render_account(self) -> str:
        """The ``accounts`` line: register at the registrar, answer automatically."""
        registrar = self.registrar
        params = [
            f"auth_pass={self.password}",
            f"regint={self.regint}",
            f"answermode={self.answermode}",
        ]
        if self.audio_codecs is not None:
            params.append("audio_codecs=" + ",".join(self.audio_codecs))
        if self.video_codecs is not None:
            params.append("video_codecs=" + ",".join(self.video_codecs))
        return f"<sip:{self.user}@{registrar.address};transport=udp>;" + ";".join(params) + "\n"

    def write_config(self) -> Path:
        """Write ``config`` and ``accounts`` (and a copy of both to the log dir)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config").write_text(self.render_config())
        (self.config_dir / "accounts").write_text(self.render_account())
        # baresip writes a default `contacts` when missing; an empty one keeps it quiet.
        (self.config_dir / "contacts").write_text("")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / f"{self.name}.config").write_text(self.render_config())
        return self.config_dir

    @property
    def argv(self) -> list[str]:
        """The command line (``-s`` SIP trace and ``-v`` debug lines when ``sip_trace``)."""
        # stdout is a file, block-buffered by default: line buffering keeps the log current.
        argv = [self.stdbuf, "-oL", "-eL", self.binary, "-f", str(self.config_dir)]
        if self.sip_trace:
            argv += ["-s", "-v"]
        return argv

    # -- life cycle --------------------------------------------------------------------
    @property
    def process(self) -> ManagedProcess:
        """The running baresip."""
        if self._process is None:
            raise PeerError(f"{self.name} was not started")
        return self._process

    def start(self, peers: PeerSet | None = None, *, timeout: float = 10.0) -> Baresip:
        """Write the config, start baresip and wait until the registrar has its Contact.

        With ``peers`` the process is started by :meth:`PeerSet.process`, so the
        ``peers`` fixture stops it; without, the caller must call :meth:`stop`.
        """
        self.write_config()
        if peers is not None:
            self._process = peers.process(self.argv, name=self.name, cwd=self.workdir)
        else:
            self._process = ManagedProcess(
                self.argv, name=self.name, log_dir=self.log_dir, cwd=self.workdir
            ).start()
        try:
            self.wait_registered(timeout=timeout)
        except PeerError:
            self.stop()
            raise
        return self

    def wait_registered(self, *, timeout: float = 10.0) -> None:
        """Wait for Kamailio's ``harness: registered USER at <contact on our port>``."""
        pattern = re.compile(
            rf"harness: registered {re.escape(self.user)} at "
            rf"<?sip:[^ >@]*@{re.escape(LOCALHOST)}:{self.sip_port}\b(?![^\n]*expires=0\b)"
        )
        deadline = time.monotonic() + timeout
        while pattern.search(self.registrar.read_log()) is None:
            code = self.process.poll()
            if code is not None:
                raise PeerError(
                    f"{self.name} exited with {code} before registering:\n"
                    + self.process.log_tail()
                )
            if time.monotonic() >= deadline:
                raise PeerTimeout(
                    f"{self.name} did not register at {self.registrar.address} within "
                    f"{timeout:g} s:\n{self.process.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Stop baresip if it runs (SIGTERM to its group, then SIGKILL); idempotent."""
        return None if self._process is None else self._process.stop()

    # -- console -----------------------------------------------------------------------
    def command(self, text: str, *, timeout: float = 2.0) -> str:
        """Send ``text`` (e.g. ``/hangup``) to the ``cons`` console; return its answer.

        The console takes key strokes from UDP: the text and a newline run a long
        command as if typed. Its output comes back to the sender (maybe empty).
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOCALHOST, 0))
            sock.settimeout(timeout)
            sock.sendto((text.rstrip("\n") + "\n").encode(), (LOCALHOST, self.cons_port))
            chunks: list[bytes] = []
            try:
                while True:
                    chunks.append(sock.recv(65535))
                    sock.settimeout(0.2)
            except TimeoutError:
                pass
        return b"".join(chunks).decode(errors="replace")

    def hangup(self) -> str:
        """Hang up the current call from the console (``/hangup``)."""
        return self.command("/hangup")

    def hold(self) -> str:
        """Put the current call on hold (``/hold``: a re-INVITE with ``a=sendonly``)."""
        return self.command("/hold")

    def resume(self) -> str:
        """Resume the current call (``/resume``: a re-INVITE with ``a=sendrecv``)."""
        return self.command("/resume")

    # -- observation -------------------------------------------------------------------
    def read_log(self) -> str:
        """Everything baresip printed so far."""
        return self.process.read_log()

    def log_mark(self) -> int:
        """The log's current length: pass it as ``since`` to look only at what follows."""
        return len(self.read_log())

    def wait_for_log(
        self, pattern: str | re.Pattern[str], *, timeout: float = 10.0, since: int = 0
    ) -> re.Match[str]:
        """Wait until the log (from offset ``since``) matches the regex ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        found: list[re.Match[str]] = []

        def matched() -> bool:
            match = regex.search(self.read_log(), since)
            if match is not None:
                found.append(match)
                return True
            if self.process.poll() is not None:
                raise PeerError(
                    f"{self.name} exited with {self.process.poll()} before logging "
                    f"{regex.pattern!r}:\n{self.process.log_tail()}"
                )
            return False

        try:
            wait_until(matched, timeout=timeout, what=f"{self.name} to log {regex.pattern!r}")
        except PeerTimeout as exc:
            raise PeerTimeout(f"{exc}:\n{self.process.log_tail(40)}") from None
        return found[0]

    def sip_messages(self, since: int = 0) -> list[BaresipSipMessage]:
        """The SIP messages of the ``-s`` trace (from log offset ``since``), in order."""
        own = self.address
        return [
            BaresipSipMessage(
                "send" if entry["src"] == own else "recv",
                entry["message"].replace("\r\n", "\n").strip("\n"),
            )
            for entry in _SIP_TRACE_ENTRY.finditer(self.read_log(), since)
        ]

    def received_requests(self, since: int = 0) -> list[str]:
        """Methods of the SIP requests baresip received, in order."""
        return [
            m.first_line.split(" ", 1)[0]
            for m in self.sip_messages(since)
            if m.direction == "recv" and not m.is_response
        ]

    def diagnostics(self) -> str:
        """The log's tail, for assertion messages."""
        return f"{self.name} log tail:\n{self.process.log_tail(60)}"
