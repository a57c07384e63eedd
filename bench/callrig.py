"""The rig of the load and soak benchmarks: the real gateway, sipp callees, nginx-rtmp.

Everything runs as users run it, on 127.0.0.1, each process stopped by PID:

- **the gateway**: ``python -m sipbridge serve --config FILE`` (uvicorn, uvloop,
  the service's own start-up, ``[log] level = "INFO"``), pinned to one core when
  asked; driven over REST only (``/call/startup`` with ``rtmpUrl``: "SIP as RTMP");
- **the callees**: one sipp in server mode (``bench/scenarios/uas_pcap_media.xml``)
  answering every INVITE with PCMU + H264 and replaying, per call, a pcap of RTP +
  RTCP made by ``bench/sipp_media.py`` (the libx264 clip of ``bench/ingest.py``,
  640x360 30 fps ~1 Mbit/s, PCMU 20 ms, RTCP SRs every 5 s);
- **the RTMP server**: a private nginx-rtmp (``rtmp_stat all`` on an HTTP port)
  that every call's stream is pushed to.

What the rig reads: the gateway's ``/metrics`` (RTP lost/late, push drops and
reconnects, event-loop lag histogram, asyncio tasks), ``/call/find_all``,
``/push/find_all``, ``/stream/find_all``; ``/proc/PID`` of each process (CPU
ticks, ``VmRSS``, threads, file descriptors and sockets); nginx's stat XML.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from rtmp_push import _free_tcp_port, _Nginx, _pin  # noqa: E402
from sipp_media import cached_media_pcap, write_scenario  # noqa: E402

HOST = "127.0.0.1"
#: Below the kernel's ephemeral ports (32768-60999), so no other socket takes one and
#: every call's video pair stays its audio pair + 2, as the sipp pcap replay needs.
RTP_RANGE = (10000, 32000)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# -- /proc ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcSample:
    """One look at a process in ``/proc`` (proc(5))."""

    at: float
    cpu_seconds: float  # utime + stime, all threads
    rss_kb: int
    threads: int
    fds: int
    sockets: int
    udp_sockets: int
    tcp_sockets: int


def _socket_inodes(kind: str) -> set[str]:
    inodes: set[str] = set()
    for name in (kind, kind + "6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9:
                    inodes.add(parts[9])
    return inodes


def proc_sample(pid: int, *, sockets_by_kind: bool = False) -> ProcSample:
    """CPU, memory, threads and descriptors of ``pid`` now."""
    now = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK
    rss_kb = 0
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = 0
    socket_inodes: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            fds += 1
            with contextlib.suppress(OSError):
                target = os.readlink(entry.path)
                if target.startswith("socket:["):
                    socket_inodes.append(target[8:-1])
    udp = tcp = 0
    if sockets_by_kind:
        udp_inodes, tcp_inodes = _socket_inodes("udp"), _socket_inodes("tcp")
        udp = sum(1 for inode in socket_inodes if inode in udp_inodes)
        tcp = sum(1 for inode in socket_inodes if inode in tcp_inodes)
    return ProcSample(now, cpu, rss_kb, threads, fds, len(socket_inodes), udp, tcp)


def cpu_seconds_tree(pid: int) -> float:
    """utime + stime of ``pid`` and of its waited-for children (nginx's workers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(stat[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def children_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` plus its live children (nginx's master + worker)."""
    total = cpu_seconds_tree(pid)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += cpu_seconds_tree(int(line))
    return total


def core_busy(cpu: int) -> tuple[float, float]:
    """(busy, total) jiffies of one core from ``/proc/stat``."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            return float(sum(values) - idle), float(sum(values))
    raise ValueError(f"no cpu{cpu} in /proc/stat")


# -- /metrics ---------------------------------------------------------------------------------
@dataclass
class Scrape:
    """The gateway's ``/metrics`` at one moment: sums by metric name (labels folded),
    the loop-lag histogram's cumulative buckets, and a few labelled values."""

    at: float
    totals: dict[str, float] = field(default_factory=dict)
    lag_buckets: dict[float, float] = field(default_factory=dict)
    by_label: dict[tuple[str, str], float] = field(default_factory=dict)

    def total(self, name: str) -> float:
        return self.totals.get(name, 0.0)


def parse_metrics(text: str) -> Scrape:
    scrape = Scrape(at=time.monotonic())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sipbridge_event_loop_lag_seconds_bucket":
                scrape.lag_buckets[float(sample.labels["le"])] = sample.value
                continue
            scrape.totals[sample.name] = scrape.totals.get(sample.name, 0.0) + sample.value
            for label in ("status", "kind", "outcome"):
                if label in sample.labels:
                    key = (sample.name, sample.labels[label])
                    scrape.by_label[key] = scrape.by_label.get(key, 0.0) + sample.value
    return scrape


@dataclass(frozen=True)
class LagSummary:
    """Event-loop lag samples between two scrapes (the histogram's bucket deltas)."""

    samples: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None  # upper bound of the highest bucket that got a sample
    over_20ms: int
    over_100ms: int


def lag_between(before: Scrape, after: Scrape) -> LagSummary:
    bounds = sorted(after.lag_buckets)
    counts = {b: after.lag_buckets[b] - before.lag_buckets.get(b, 0.0) for b in bounds}
    total = counts.get(float("inf"), 0.0)

    def quantile(q: float) -> float | None:
        if total <= 0:
            return None
        for bound in bounds:
            if counts[bound] >= q * total:
                return bound * 1000
        return None

    highest = None
    previous = 0.0
    for bound in bounds:
        if counts[bound] > previous:
            highest = bound * 1000
        previous = counts[bound]
    below_20 = max((counts[b] for b in bounds if b <= 0.02), default=0.0)
    below_100 = max((counts[b] for b in bounds if b <= 0.1), default=0.0)
    return LagSummary(
        samples=int(total),
        p50_ms=quantile(0.5),
        p99_ms=quantile(0.99),
        max_ms=highest,
        over_20ms=int(total - below_20),
        over_100ms=int(total - below_100),
    )


# -- the rig ----------------------------------------------------------------------------------
_SETTINGS = """\
[http]
host = "{host}"
port = {http_port}
[sip]
host = "{host}"
port = {sip_port}
max_calls = {max_calls}
[rtp]
port_min = {rtp_min}
port_max = {rtp_max}
[log]
level = "INFO"
[service]
gc_freeze = {gc_freeze}
[rtmp]
audio_sample_rate = {aac_rate}
audio_bitrate = {aac_bitrate}
"""


class Rig:
    """nginx-rtmp + sipp callees + the gateway, on free ports of 127.0.0.1.

    ``gateway_cpu`` / ``peers_cpu``: cores to pin the gateway and the peers
    (sipp, nginx) to; None leaves them to the scheduler.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        pcap_seconds: float,
        gateway_cpu: int | None = 1,
        peers_cpu: int | None = 0,
        max_calls: int = 1000,
        gc_freeze: bool = True,
        keep_logs: Path | None = None,
        aac_rate: int = 48000,
        aac_bitrate: int = 128000,
    ) -> None:
        for binary in ("sipp", "nginx"):
            if shutil.which(binary) is None:
                raise FileNotFoundError(f"{binary} is needed: run scripts/install-peers.sh")
        self.workdir = workdir
        self.keep_logs = keep_logs
        workdir.mkdir(parents=True, exist_ok=True)
        self.gateway_cpu = gateway_cpu
        self.peers_cpu = peers_cpu
        self.http_port = _free_tcp_port()
        self.sip_port = _free_udp_port()
        self.sipp_port = _free_udp_port()
        self.sipp_media_port = _free_udp_port()
        cache = ROOT / "artifacts" / "bench"
        cache.mkdir(parents=True, exist_ok=True)
        self.pcap = cached_media_pcap(cache, seconds=pcap_seconds)
        self.scenario = write_scenario(workdir / "uas_pcap_media.xml", self.pcap)
        self.settings_path = workdir / "settings.toml"
        self.settings_path.write_text(
            _SETTINGS.format(
                host=HOST,
                http_port=self.http_port,
                sip_port=self.sip_port,
                max_calls=max_calls,
                rtp_min=RTP_RANGE[0],
                rtp_max=RTP_RANGE[1],
                gc_freeze="true" if gc_freeze else "false",
                aac_rate=aac_rate,
                aac_bitrate=aac_bitrate,
            )
        )
        self.nginx = _Nginx(workdir / "nginx", peers_cpu)
        self.sipp: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.base_url = f"http://{HOST}:{self.http_port}/rest-api"
        self.http = httpx.Client(timeout=10.0)

    # -- processes ----------------------------------------------------------------------------
    def start(self) -> Rig:
        self.nginx.start()
        self.sipp = subprocess.Popen(
            [
                "sipp", "-sf", str(self.scenario), "-t", "u1",
                "-i", HOST, "-bind_local", "-p", str(self.sipp_port),
                "-mi", HOST, "-mp", str(self.sipp_media_port),
                "-cp", str(_free_udp_port()),
                "-m", "1000000", "-nostdin",
                "-trace_err", "-error_file", str(self.workdir / "sipp_errors.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its refreshing screen
            stderr=(self.workdir / "sipp.log").open("ab"),
            start_new_session=True,
            preexec_fn=_pin(self.peers_cpu),
        )  # fmt: skip
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "sipbridge", "serve", "--config", str(self.settings_path)],
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "sipbridge.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")}
            | {"PYTHONPATH": str(ROOT)}
            | ({"PYTHONASYNCIODEBUG": "1"} if os.environ.get("RIG_ASYNCIO_DEBUG") else {}),
            start_new_session=True,
            preexec_fn=_pin(self.gateway_cpu),
        )
        deadline = time.monotonic() + 30
        while True:
            if self.gateway.poll() is not None:
                raise RuntimeError(f"gateway exited {self.gateway.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(f"{self.base_url}/health").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start: {self.log_tail()}")
            time.sleep(0.1)
        if self.sipp.poll() is not None:
            raise RuntimeError(f"sipp exited: {(self.workdir / 'sipp.log').read_text()}")
        return self

    def stop(self) -> None:
        """Stop the gateway (SIGTERM: it hangs up every call), then sipp and nginx, by PID."""
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait(timeout=5)
        if self.sipp is not None and self.sipp.poll() is None:
            self.sipp.kill()
            self.sipp.wait(timeout=5)
        self.nginx.stop()
        self.http.close()
        if self.keep_logs is not None:
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for name in ("sipbridge.log", "sipp.log", "sipp_errors.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(self.workdir / name, self.keep_logs / name)

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (self.workdir / "sipbridge.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    @property
    def gateway_pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.pid

    def gateway_alive(self) -> bool:
        return self.gateway is not None and self.gateway.poll() is None

    @property
    def sipp_pid(self) -> int:
        assert self.sipp is not None
        return self.sipp.pid

    def sipp_alive(self) -> bool:
        return self.sipp is not None and self.sipp.poll() is None

    # -- REST -----------------------------------------------------------------------------------
    def post(self, method: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"{self.base_url}{method}", json=body)

    def start_call(self, call_id: str) -> httpx.Response:
        """``/call/startup``: call the sipp callee, publish as ``call_id``, push to nginx."""
        return self.post(
            "/call/startup",
            {
                "callId": call_id,
                "callee": "load",
                "toStream": call_id,
                "rtmpUrl": self.nginx.url(call_id),
                "hasAudio": "true",
                "hasVideo": "true",
                "sipLogin": "gateway",
                "sipAuthenticationName": "gateway",
                "sipPassword": "unused-no-auth",
                "sipDomain": HOST,
                "sipOutboundProxy": HOST,
                "sipPort": str(self.sipp_port),
                "sipRegisterRequired": "false",
                "appKey": "load",
            },
        )

    def terminate(self, call_id: str) -> httpx.Response:
        return self.post("/call/terminate", {"callId": call_id})

    def calls(self) -> dict[str, dict[str, Any]]:
        response = self.post("/call/find_all", {})
        return {c["callId"]: c for c in response.json()} if response.status_code == 200 else {}

    def pushes(self) -> dict[str, dict[str, Any]]:
        response = self.post("/push/find_all", {})
        return {p["streamName"]: p for p in response.json()} if response.status_code == 200 else {}

    def streams(self) -> dict[str, dict[str, Any]]:
        response = self.post("/stream/find_all", {})
        return {s["name"]: s for s in response.json()} if response.status_code == 200 else {}

    def scrape(self) -> Scrape:
        response = self.http.get(f"http://{HOST}:{self.http_port}/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    def nginx_stats(self) -> dict[str, dict[str, Any]]:
        return self.nginx.stats()


def video_frames(stream: dict[str, Any], kind: str = "video") -> int:
    for track in stream.get("tracks", []):
        if track.get("kind") == kind:
            return int(track.get("frames", 0))
    return 0


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    python = sys.version.split()[0]
    return f"{os.cpu_count()} vCPU {model}, Python {python}, kernel {os.uname().release}"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port
