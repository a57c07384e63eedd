"""Gateway settings: msgspec Structs decoded from ``settings.toml`` plus env overrides.

Theory of operation
-------------------
A settings file is parsed with :mod:`tomllib` into plain dicts, environment
overrides (``SIPBRIDGE_<SECTION>_<KEY>``) are converted one by one to their
field's type and laid over it, and the result is converted *strictly* into
:class:`Settings` with :func:`msgspec.convert`. Strict conversion means a TOML
string never silently becomes a number: a wrong type is an error, as is an
unknown key (every Struct has ``forbid_unknown_fields=True``) or a value
outside its ``Meta`` limits. Cross-field rules (``t2 >= t1``,
``port_min < port_max`` ...) live in each section's ``__post_init__``, so a
Struct built by hand in code is checked exactly like one loaded from a file.

Every failure is re-raised as :class:`SettingsError` whose message names the
source and the dotted key path, e.g. ``settings.toml: sip.t1: expected float,
got str`` or ``settings.toml: unknown key "sip.prot"``. ``docs/settings.md`` is
the reference for every key.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import msgspec

if TYPE_CHECKING:
    from webrtc.config import WebRtcConfig

__all__ = [
    "ENV_PREFIX",
    "SETTINGS_PATH_ENV",
    "HooksSettings",
    "HttpSettings",
    "LogSettings",
    "OutboundProxy",
    "RecordSettings",
    "RtmpSettings",
    "RtpSettings",
    "ServiceSettings",
    "Settings",
    "SettingsError",
    "SipSettings",
    "WebRtcSettings",
    "load_settings",
    "parse_outbound_proxy",
    "settings_from_dict",
]

ENV_PREFIX = "SIPBRIDGE_"
# Reserved for the settings file's path (read by the CLI/service, not here);
# it must not be mistaken for an override of a section called "settings".
SETTINGS_PATH_ENV = "SIPBRIDGE_SETTINGS"
_RESERVED_ENV = frozenset({SETTINGS_PATH_ENV})


def _package_version() -> str:
    try:
        return version("sipbridge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


DEFAULT_USER_AGENT = f"sipbridge/{_package_version()}"


class SettingsError(ValueError):
    """A settings file, dict or environment variable holds an invalid value.

    ``str(err)`` is the full message; ``source`` names where the value came
    from (a file path, ``"settings"`` for a dict, or an env variable), ``key``
    is the dotted key path (``"sip.t1"``) when one is known and ``reason`` the
    bare complaint.
    """

    def __init__(self, reason: str, *, source: str | None = None, key: str | None = None) -> None:
        self.reason = reason
        self.source = source
        self.key = key
        parts = [p for p in (source, key) if p]
        super().__init__(": ".join([*parts, reason]))


def _field_error(key: str, reason: str) -> SettingsError:
    # Raised from __post_init__: msgspec wraps it as "<key>: <reason> - at `$.<section>`",
    # and _translate() joins the section and key back into one dotted path.
    return SettingsError(reason, key=key)


_Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=86400.0)]


class HttpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The REST API listener (``[http]``)."""

    host: str = "127.0.0.1"
    port: _Port = 8081
    # Bearer token required on every REST request; None (or "") disables auth.
    api_token: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise _field_error("host", "must not be empty")
        if self.api_token == "":  # TOML has no null: an empty string means "unset"
            self.api_token = None

    def __repr__(self) -> str:
        # Settings get logged at start-up; the token must never reach a log line.
        token = None if self.api_token is None else "***"
        return f"HttpSettings(host={self.host!r}, port={self.port!r}, api_token={token!r})"


class OutboundProxy(NamedTuple):
    """A parsed ``host[:port][;transport=udp|tcp]`` proxy address."""

    host: str
    port: int | None
    transport: Literal["udp", "tcp", "tls"] | None


_PROXY_RE = re.compile(
    r"^(?:sips?:)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:;[^;]*)*)$"
)


def parse_outbound_proxy(value: str) -> OutboundProxy:
    """Parse an outbound proxy ``host[:port][;transport=udp|tcp]`` (RFC 3261 §8.1.2).

    An optional ``sip:`` scheme and the ``;lr`` flag are accepted and ignored,
    since that is how proxies are usually written in a Route header. Raises
    :class:`ValueError` with the reason.
    """
    match = _PROXY_RE.match(value.strip())
    if match is None:
        raise ValueError(f"expected host[:port][;transport=udp|tcp], got {value!r}")
    port: int | None = None
    if match["port"] is not None:
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be 1..65535, got {port}")
    transport: Literal["udp", "tcp", "tls"] | None = None
    for param in match["params"].split(";")[1:]:
        name, _, param_value = param.partition("=")
        name = name.strip().lower()
        param_value = param_value.strip().lower()
        if name == "lr":
            continue
        if name == "transport" and param_value in ("udp", "tcp", "tls"):
            transport = "udp" if param_value == "udp" else "tcp" if param_value == "tcp" else "tls"
            continue
        raise ValueError(f"unsupported parameter {param!r} (only transport=udp|tcp|tls and lr)")
    return OutboundProxy(match["host"], port, transport)


class SipSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The SIP user agent (``[sip]``).

    Timers are the RFC 3261 §17.1.1.1 T1/T2/T4 base values injected into the
    transaction layer; session timers are RFC 4028 §4 Session-Expires/Min-SE.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 5060
    #: Transport of requests whose target names none (RFC 3261 §18.1.1; "tls": §26.2);
    #: ``sips:`` URIs, ``;transport=`` parameters and ``sipTransport`` still override it.
    transport: Literal["udp", "tcp", "tls"] = "udp"
    public_address: str | None = None
    public_port: _Port | None = None
    user_agent: str = DEFAULT_USER_AGENT
    t1: Annotated[float, msgspec.Meta(gt=0.0, le=60.0)] = 0.5
    t2: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 4.0
    t4: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 5.0
    register_expires: Annotated[int, msgspec.Meta(ge=60, le=2**32 - 1)] = 3600
    register_refresh_margin: Annotated[float, msgspec.Meta(ge=0.05, le=0.95)] = 0.5
    invite_timeout: _Seconds = 60.0
    session_expires: Annotated[int, msgspec.Meta(ge=90, le=2**32 - 1)] = 1800
    min_se: Annotated[int, msgspec.Meta(ge=90, le=2**32 - 1)] = 90
    default_domain: str = ""
    default_port: _Port = 5060
    outbound_proxy: str | None = None
    max_message_size: Annotated[int, msgspec.Meta(ge=1024, le=1048576)] = 65535
    #: Calls not yet ended at once; /call/startup beyond it is refused (409).
    max_calls: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    #: SIP over TLS (RFC 3261 §26.2): verify the server's certificate against
    #: ``tls_ca_file`` ("" = the system store); optional client certificate.
    tls_verify: bool = True
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    #: RFC 4568 SDES-SRTP on the media leg: "off", "optional" or "mandatory" (docs/media.md).
    srtp: Literal["off", "optional", "mandatory"] = "off"

    def __post_init__(self) -> None:
        if not self.host:
            raise _field_error("host", "must not be empty")
        # TOML has no null: an empty string means "unset".
        if self.public_address == "":
            self.public_address = None
        if self.outbound_proxy == "":
            self.outbound_proxy = None
        if not self.user_agent or any(c in self.user_agent for c in "\r\n\0"):
            # It is written verbatim into a header line (RFC 3261 §20.41).
            raise _field_error("user_agent", "must be non-empty text without CR, LF or NUL")
        if self.t2 < self.t1:
            raise _field_error("t2", f"must be >= t1 ({self.t1}), got {self.t2}")
        if self.session_expires < self.min_se:
            raise _field_error(
                "session_expires", f"must be >= min_se ({self.min_se}), got {self.session_expires}"
            )
        if self.outbound_proxy is not None:
            try:
                parse_outbound_proxy(self.outbound_proxy)
            except ValueError as exc:
                raise _field_error("outbound_proxy", str(exc)) from None

    @property
    def advertised_address(self) -> str:
        """The host written into Via sent-by, Contact and SDP ``c=`` lines."""
        return self.public_address if self.public_address is not None else self.host

    def register_refresh_delay(self, granted_expires: float) -> float:
        """Seconds after a REGISTER 2xx at which to send the refresh (RFC 3261 §10.2.4).

        ``register_refresh_margin`` is the fraction of the granted expiry kept
        in reserve: with 0.5 a 3600 s binding is refreshed after 1800 s.
        """
        return granted_expires * (1.0 - self.register_refresh_margin)

    @property
    def proxy(self) -> OutboundProxy | None:
        """``outbound_proxy`` parsed, or None."""
        return None if self.outbound_proxy is None else parse_outbound_proxy(self.outbound_proxy)


class RtpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The UDP port range for RTP/RTCP (``[rtp]``).

    Each call takes an even RTP port and the next odd one for RTCP
    (RFC 3550 §11), so the range must hold at least one even/odd pair.
    """

    port_min: Annotated[int, msgspec.Meta(ge=1024, le=65535)] = 20000
    port_max: Annotated[int, msgspec.Meta(ge=1024, le=65535)] = 20999
    inactivity_timeout: Annotated[float, msgspec.Meta(ge=0.0, le=86400.0)] = 30.0
    jitter_min_delay: Annotated[float, msgspec.Meta(ge=0.0, le=5.0)] = 0.02
    jitter_max_delay: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.5
    jitter_initial_delay: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.06
    nat_keepalive: bool = True
    keepalive_interval: Annotated[float, msgspec.Meta(ge=0.5, le=60.0)] = 5.0
    keyframe_interval: Annotated[float, msgspec.Meta(ge=0.2, le=60.0)] = 1.0

    def __post_init__(self) -> None:
        if not self.jitter_min_delay <= self.jitter_initial_delay <= self.jitter_max_delay:
            raise _field_error(
                "jitter_initial_delay",
                f"must lie within jitter_min_delay..jitter_max_delay "
                f"({self.jitter_min_delay}..{self.jitter_max_delay}), "
                f"got {self.jitter_initial_delay}",
            )
        if self.port_max <= self.port_min:
            raise _field_error(
                "port_max", f"must be greater than port_min ({self.port_min}), got {self.port_max}"
            )
        if self.pair_count == 0:
            raise _field_error(
                "port_max",
                f"range {self.port_min}..{self.port_max} holds no even RTP port with its RTCP port",
            )

    @property
    def first_even_port(self) -> int:
        """The lowest even port in the range: where RTP allocations start."""
        return self.port_min + (self.port_min & 1)

    @property
    def pair_count(self) -> int:
        """How many RTP/RTCP port pairs (calls) the range can hold at once."""
        return max(0, (self.port_max - self.first_even_port + 1) // 2)


# AAC sample rates (ISO/IEC 14496-3 Table 1.18) that the pusher's encoder is used with.
AAC_SAMPLE_RATES: typing.Final = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class RtmpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """RTMP pushes (``[rtmp]``): "SIP as RTMP" and ``/push/*``.

    ``audio = "aac"`` transcodes the call's audio to AAC-LC (what YouTube, Facebook
    and most platforms require); ``"copy"`` passes G.711 through untouched as FLV
    audio codecs 7/8 (A-law/mu-law, Adobe FLV spec v10.1 §E.4.2.1) for servers
    that take it. A refused or dropped connection is retried with exponential
    backoff from ``retry_initial`` to ``retry_max`` seconds, ``max_retries`` times
    in a row (-1: forever) before the push is FAILED. ``connect_timeout`` bounds a
    connection attempt (TCP connect, TLS, RTMP handshake, connect and publish);
    ``rw_timeout`` a write the server does not take and the close; ``send_buffer``
    (bytes: the transport's buffer and ``SO_SNDBUF``; 0: asyncio's and the kernel's
    defaults) bounds the data in flight, hence how long a frozen server goes
    unnoticed. ``tls_verify`` makes ``rtmps://`` pushes check the
    server certificate against ``tls_ca_file`` ("": the system CA bundle); FFmpeg
    does not check it by default.
    """

    audio: Literal["aac", "copy"] = "aac"
    audio_bitrate: Annotated[int, msgspec.Meta(ge=8000, le=512000)] = 128_000
    audio_sample_rate: int = 48_000
    still_video: bool = False
    connect_timeout: Annotated[float, msgspec.Meta(gt=0.0, le=300.0)] = 10.0
    rw_timeout: Annotated[float, msgspec.Meta(gt=0.0, le=300.0)] = 10.0
    send_buffer: Annotated[int, msgspec.Meta(ge=0, le=64 * 1024 * 1024)] = 131072
    retry_initial: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 1.0
    retry_max: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 30.0
    max_retries: Annotated[int, msgspec.Meta(ge=-1, le=1_000_000)] = 10
    tls_verify: bool = False
    tls_ca_file: str = ""

    def __post_init__(self) -> None:
        if self.audio_sample_rate not in AAC_SAMPLE_RATES:
            rates = ", ".join(str(rate) for rate in AAC_SAMPLE_RATES)
            raise _field_error(
                "audio_sample_rate", f"must be one of {rates}, got {self.audio_sample_rate}"
            )
        if self.retry_max < self.retry_initial:
            raise _field_error(
                "retry_max",
                f"must be >= retry_initial ({self.retry_initial}), got {self.retry_max}",
            )

    @property
    def retries(self) -> int | None:
        """``max_retries`` as the pusher takes it: ``None`` retries forever."""
        return None if self.max_retries < 0 else self.max_retries


class WebRtcSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """WebRTC (WHEP) viewers (``[webrtc]``); :meth:`to_config` gives the egress's config.

    ``ice_addresses``: host candidate addresses (RFC 8445 §5.1.1.1) offered to
    players; empty = every interface but loopback. ``stun_server``
    (``"host:port"``) adds a server-reflexive candidate. See ``docs/webrtc.md``.
    """

    ice_addresses: list[str] = msgspec.field(default_factory=list)
    stun_server: str | None = None
    max_viewers: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    max_viewers_per_stream: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 50
    viewer_queue_frames: Annotated[int, msgspec.Meta(ge=10, le=100_000)] = 300
    connect_timeout: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 20.0
    media_wait: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = 5.0

    def __post_init__(self) -> None:
        from webrtc.config import WebRtcConfig, parse_stun_server

        if self.stun_server == "":  # TOML has no null: an empty string means "unset"
            self.stun_server = None
        if self.stun_server is not None:
            try:
                parse_stun_server(self.stun_server)
            except ValueError as exc:
                raise _field_error("stun_server", str(exc)) from None
        try:
            WebRtcConfig(ice_addresses=tuple(self.ice_addresses))
        except ValueError as exc:
            raise _field_error("ice_addresses", str(exc).removeprefix("ice_addresses: ")) from None

    def to_config(self) -> WebRtcConfig:
        """The :class:`webrtc.config.WebRtcConfig` these settings describe."""
        from webrtc.config import WebRtcConfig

        return WebRtcConfig(
            ice_addresses=tuple(self.ice_addresses),
            stun_server=self.stun_server,
            max_viewers=self.max_viewers,
            max_viewers_per_stream=self.max_viewers_per_stream,
            viewer_queue_frames=self.viewer_queue_frames,
            connect_timeout=self.connect_timeout,
            media_wait=self.media_wait,
        )


class RecordSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Recording of streams to files (``[record]``); see docs/recording.md.

    ``auto`` records every stream captured from a SIP call without a REST request.
    Files go to ``directory`` under names made from ``file_template`` (WCS elements
    ``{streamName} {startTime} {endTime} {mediaSessionId} {audioCodec} {videoCodec}``),
    as Matroska (``format = "mkv"``) or fragmented MP4 (``"mp4"``); a crash loses at
    most about ``fragment_duration`` seconds. ``rotate_duration``/``rotate_size`` (0: off)
    start a new file at the next keyframe. ``on_finish_command`` (argv, no shell)
    and ``on_finish_url`` (JSON POST) run when a file is finished.
    """

    auto: bool = False
    directory: str = "recordings"
    file_template: str = "{streamName}-{startTime}-{endTime}"
    format: Literal["mkv", "mp4"] = "mkv"
    audio: Literal["copy", "aac"] = "copy"
    aac_bitrate: Annotated[int, msgspec.Meta(ge=8000, le=512000)] = 64_000
    aac_sample_rate: int = 48_000
    rotate_duration: Annotated[float, msgspec.Meta(ge=0.0, le=86400.0)] = 0.0
    rotate_size: Annotated[int, msgspec.Meta(ge=0, le=2**50)] = 0
    fragment_duration: Annotated[float, msgspec.Meta(ge=0.1, le=10.0)] = 1.0
    on_finish_command: list[str] = msgspec.field(default_factory=list)
    on_finish_url: str | None = None
    hook_timeout: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 10.0

    def __post_init__(self) -> None:
        # Imported here: sipbridge.recording imports this module (no cycle at load time).
        from sipbridge.recording.names import TemplateError, parse_template

        if not self.directory.strip():
            raise _field_error("directory", "must not be empty")
        try:
            parse_template(self.file_template)
        except TemplateError as exc:
            raise _field_error("file_template", str(exc)) from None
        if self.aac_sample_rate not in AAC_SAMPLE_RATES:
            rates = ", ".join(str(rate) for rate in AAC_SAMPLE_RATES)
            raise _field_error(
                "aac_sample_rate", f"must be one of {rates}, got {self.aac_sample_rate}"
            )
        if 0 < self.rotate_duration < 1.0:
            raise _field_error("rotate_duration", f"must be 0 or >= 1, got {self.rotate_duration}")
        if 0 < self.rotate_size < 65536:
            raise _field_error("rotate_size", f"must be 0 or >= 65536, got {self.rotate_size}")
        if self.on_finish_command and not self.on_finish_command[0]:
            raise _field_error("on_finish_command", "the program (first item) must not be empty")
        if self.on_finish_url == "":  # TOML has no null: an empty string means "unset"
            self.on_finish_url = None
        if self.on_finish_url is not None and not self.on_finish_url.lower().startswith(
            ("http://", "https://")
        ):
            raise _field_error(
                "on_finish_url", f"must be an http:// or https:// URL, got {self.on_finish_url!r}"
            )


class HooksSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """REST hooks (``[hooks]``): CallStatusEvent / StreamStatusEvent POSTed to backends.

    ``apps`` maps a call's ``appKey`` to its backend URL; WCS's event name is
    appended (``<url>/CallStatusEvent``). ``default_url`` serves calls whose
    appKey is absent or not listed (unset: those send nothing). Each POST may
    take ``timeout`` seconds; a 5xx answer or a connection error is retried
    ``retries`` times after ``retry_backoff`` seconds, doubled each time up to
    ``retry_backoff_max``. At most ``queue_size`` events wait per backend; beyond
    that the oldest is dropped (and counted), so a dead backend never slows a call.
    """

    apps: dict[str, str] = msgspec.field(default_factory=dict)
    default_url: str | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0.0, le=300.0)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3
    retry_backoff: Annotated[float, msgspec.Meta(ge=0.0, le=600.0)] = 0.5
    retry_backoff_max: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 10.0
    queue_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    node_id: str = ""

    def __post_init__(self) -> None:
        if self.default_url == "":  # TOML has no null: an empty string means "unset"
            self.default_url = None
        for app_key, url in self.apps.items():
            if not url.lower().startswith(("http://", "https://")):
                raise _field_error(
                    "apps", f"{app_key}: must be an http:// or https:// URL, got {url!r}"
                )
        default = self.default_url
        if default is not None and not default.lower().startswith(("http://", "https://")):
            raise _field_error(
                "default_url", f"must be an http:// or https:// URL, got {default!r}"
            )
        if self.retry_backoff_max < self.retry_backoff:
            raise _field_error(
                "retry_backoff_max",
                f"must be >= retry_backoff ({self.retry_backoff:g}), "
                f"got {self.retry_backoff_max:g}",
            )

    def url_for(self, app_key: str | None) -> str | None:
        """The backend URL for a call's ``appKey`` (``default_url`` when not listed)."""
        if app_key is not None and app_key in self.apps:
            return self.apps[app_key]
        return self.default_url


class LogSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Logging (``[log]``); applied by :func:`sipbridge.logs.configure_logging`."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = False
    sip_trace: bool = False


class ServiceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Running as a service (``[service]``; docs/operations.md).

    ``stop_timeout``: the longest a stop may take, from SIGTERM to the process's
    exit (seconds). Past it the service logs why and exits with status 1 instead
    of hanging; keep systemd's ``TimeoutStopSec=`` above it.

    ``gc_freeze``: once the service listens, collect garbage once and move every
    object alive then (modules, settings, the app) out of the collector's reach
    (:func:`gc.freeze`), so later collections scan only what calls create.
    """

    stop_timeout: Annotated[float, msgspec.Meta(ge=2.0, le=3600.0)] = 20.0
    gc_freeze: bool = True


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """All gateway settings; every section is optional in the file."""

    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    sip: SipSettings = msgspec.field(default_factory=SipSettings)
    rtp: RtpSettings = msgspec.field(default_factory=RtpSettings)
    rtmp: RtmpSettings = msgspec.field(default_factory=RtmpSettings)
    record: RecordSettings = msgspec.field(default_factory=RecordSettings)
    webrtc: WebRtcSettings = msgspec.field(default_factory=WebRtcSettings)
    hooks: HooksSettings = msgspec.field(default_factory=HooksSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    service: ServiceSettings = msgspec.field(default_factory=ServiceSettings)


# --- error translation ----------------------------------------------------------------------

_AT_RE = re.compile(r"^(?P<msg>.*?) - at `(?P<where>[^`]*)`(?: in `(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<name>.*)`$", re.DOTALL)
_POST_INIT_RE = re.compile(r"^(?P<key>[a-z_][a-z0-9_]*): (?P<reason>.*)$", re.DOTALL)
_TYPE_WORDS = {"object": "table", "null": "none"}
_TYPE_WORD_RE = re.compile(r"\b(?:object|null)\b")


def _toml_word(match: re.Match[str]) -> str:
    # msgspec speaks JSON; the user wrote TOML.
    return _TYPE_WORDS[match[0]]


def _unknown_key(key: str, *, source: str) -> SettingsError:
    err = SettingsError(f'unknown key "{key}"', source=source)
    err.key = key  # already in the message: keep it out of the "source: key:" prefix
    return err


def _dotted(path: str) -> str:
    """``$.sip.t1`` -> ``sip.t1``."""
    return path.removeprefix("$").removeprefix(".")


def _lookup(data: Any, key: str) -> tuple[bool, Any]:
    node = data
    for part in key.split(".") if key else []:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _field_type(key: str) -> Any:
    struct: Any = Settings
    found: Any = None
    for part in key.split("."):
        if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
            return None
        found = next((f.type for f in msgspec.structs.fields(struct) if f.name == part), None)
        struct = found
    return found


def _literal_choices(tp: Any) -> tuple[Any, ...]:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else ()


def _translate(exc: msgspec.ValidationError, data: Any, *, source: str) -> SettingsError:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.http.port``` into a SettingsError."""
    text = str(exc)
    match = _AT_RE.match(text)
    msg, path = (text, "") if match is None else (match["msg"], match["path"] or match["where"])
    key = _dotted(path)

    unknown = _UNKNOWN_RE.match(msg)
    if unknown is not None:
        full = f"{key}.{unknown['name']}" if key else unknown["name"]
        return _unknown_key(full, source=source)
    if match is not None and match["path"] is not None and match["where"] == "key":
        return SettingsError("keys must be strings", source=source, key=key or None)

    post_init = _POST_INIT_RE.match(msg)
    if post_init is not None and _field_type(f"{key}.{post_init['key']}") is not None:
        full = f"{key}.{post_init['key']}" if key else post_init["key"]
        return SettingsError(post_init["reason"], source=source, key=full)

    if msg.startswith("Invalid enum value"):
        choices = _literal_choices(_field_type(key)) if key else ()
        if choices:
            found, value = _lookup(data, key)
            got = f", got {value!r}" if found else ""
            allowed = ", ".join(repr(c) for c in choices)
            return SettingsError(f"expected one of {allowed}{got}", source=source, key=key)

    reason = re.sub(r"`([^`]*)`", lambda m: _TYPE_WORD_RE.sub(_toml_word, m[1]), msg)
    reason = reason[:1].lower() + reason[1:]
    if "got" not in reason:
        found, value = _lookup(data, key)
        if found:
            reason = f"{reason}, got {value!r}"
    return SettingsError(reason, source=source, key=key or None)


def _plain(data: Any) -> Any:
    # msgspec.convert reads non-dict Mappings as objects with attributes; make them dicts.
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    return data


def _convert(data: Any, *, source: str, env_keys: Mapping[str, str] | None = None) -> Settings:
    try:
        return msgspec.convert(data, type=Settings, strict=True)
    except msgspec.ValidationError as exc:
        err = _translate(exc, data, source=source)
    if env_keys and err.key is not None and err.key in env_keys:
        # The bad value came from the environment, not from the file: say so.
        err = SettingsError(
            f"{err.reason} (set by {env_keys[err.key]})", source=err.source, key=err.key
        )
    raise err


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Build :class:`Settings` from a dict shaped like ``settings.toml``.

    Raises :class:`SettingsError` naming the key path of the first bad value.
    """
    return _convert(_plain(data), source="settings")


# --- environment overrides -------------------------------------------------------------------


def _struct_fields(tp: Any) -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(tp)}


def _accepts_none(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _env_value(var: str, raw: str, key: str, tp: Any) -> Any:
    """Convert one env string to its field's type (lax: ``"9000"`` -> 9000, ``"true"`` -> True)."""
    if raw == "" and _accepts_none(tp):
        return None
    try:
        return msgspec.convert(raw, type=tp, strict=False)
    except msgspec.ValidationError as exc:
        err = _translate(exc, {}, source=var)
        choices = _literal_choices(tp)
        reason = f"expected one of {', '.join(map(repr, choices))}" if choices else err.reason
        reason = re.sub(r", got .*$", "", reason, flags=re.DOTALL)
        raise SettingsError(f"{reason}, got {raw!r}", source=var, key=key) from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """``{"http.port": ("SIPBRIDGE_HTTP_PORT", 9000)}`` for every SIPBRIDGE_ variable."""
    sections = _struct_fields(Settings)
    overrides: dict[str, tuple[str, Any]] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in _RESERVED_ENV:
            continue
        section, _, name = var[len(ENV_PREFIX) :].lower().partition("_")
        if section not in sections:
            raise SettingsError(f'unknown section "{section}"', source=var)
        if not name:
            raise SettingsError(f"expected {ENV_PREFIX}<SECTION>_<KEY>", source=var)
        fields = _struct_fields(sections[section])
        key = f"{section}.{name}"
        if name not in fields:
            raise _unknown_key(key, source=var)
        overrides[key] = (var, _env_value(var, env[var], key, fields[name]))
    return overrides


def load_settings(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from a TOML file (or defaults when ``path`` is None) plus env overrides.

    ``env`` defaults to :data:`os.environ`; every ``SIPBRIDGE_<SECTION>_<KEY>``
    variable overrides that key (``SIPBRIDGE_HTTP_PORT=9000``), an empty value
    unsets an optional key, and an unknown one is an error naming the variable.
    """
    data: dict[str, Any] = {}
    source = "settings"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"settings file not found: {source}") from None
        except OSError as exc:
            raise SettingsError(
                f"cannot read settings file: {exc.strerror}", source=source
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"TOML syntax error: {exc}", source=source) from None
        except UnicodeDecodeError as exc:
            raise SettingsError(f"not UTF-8 text: {exc.reason}", source=source) from None

    overrides = _env_overrides(os.environ if env is None else env)
    for key, (_var, value) in overrides.items():
        section, name = key.split(".", 1)
        table = data.setdefault(section, {})
        if isinstance(table, dict):  # otherwise conversion reports the bad section
            table[name] = value
    return _convert(data, source=source, env_keys={k: v[0] for k, v in overrides.items()})
