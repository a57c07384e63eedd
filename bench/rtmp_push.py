"""CPU and memory per call pushed to nginx-rtmp: sipbridge against one ffmpeg per call.

    .venv/bin/python bench/rtmp_push.py [--calls 1,5,10,20] [--duration 5]

For each number of calls N, the same sender (``bench/udp_flood.py``, its own
process pinned to the first core) replays N real-rate calls (the libx264 clip of
``bench/ingest.py``, ~1 Mbit/s H264 at 30 fps + PCMU 20 ms, RTCP SRs every 5 s)
into, in turn:

- ``sipbridge``: one process (pinned to the second core) running per call a
  :class:`~sipbridge.call_media.CallMediaLink` publishing into a registry
  :class:`~sipbridge.registry.Stream` and an :class:`~rtmp.pusher.RtmpPusher`
  (H264 copied, PCMU -> AAC, default :class:`~rtmp.pusher.PushConfig`) to
  ``rtmp://127.0.0.1:PORT/live/sipbridgeN-callK``;
- ``ffmpeg``: N processes (pinned to the second core), each
  ``ffmpeg -protocol_whitelist file,udp,rtp -i callK.sdp -c:v copy -c:a aac -f flv
  rtmp://127.0.0.1:PORT/live/ffmpegN-callK`` fed one call.

Both push to one private nginx-rtmp (pinned with the sender). Once nginx shows
every stream publishing, and after a settle second, the driver measures a
window: CPU seconds per second of the receiving side (``utime + stime`` of
``/proc/PID/stat``, children's included, summed over its processes), and at the
window's end the sum of ``VmRSS`` (and of ``Pss``, which shares libraries fairly
between the ffmpeg processes). nginx's ``rtmp_stat`` XML, read at both ends of
the window, must show ``bytes_in`` growing for every stream.

Prints a table and writes ``artifacts/bench/rtmp_push.json``; the figures go to
``docs/performance.md``. Every process is bounded in time and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make rtp/, rtmp/ and sipbridge/ importable

from ingest import _free_port_pair, _machine_line  # noqa: E402
from ingest_receiver import core_busy_seconds, negotiated_call  # noqa: E402
from udp_flood import FloodPlan, build_clip, ensure_h264_clip, run_sender  # noqa: E402

from sipbridge.ports import RtpPortAllocator  # noqa: E402

HOST = "127.0.0.1"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
#: sipbridge receivers bind here, ffmpeg's ports are picked here: apart, below the
#: kernel's ephemeral range.
SIPBRIDGE_PORTS = (22000, 25999)
FFMPEG_PORTS = (26000, 31999)
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ``ingest`` is ``sipbridge`` without the pushers (a subscriber drains each stream):
#: what the RTMP push itself costs is the difference.
KINDS = ("sipbridge", "ffmpeg", "ingest")
#: The ingest kind has nothing to show in nginx: its streams are ready once video flows.
INGEST_READY = 2.0

_NGINX_CONFIG = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen {host}:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen {host}:{http_port};
        location /stat {{ rtmp_stat all; }}
    }}
}}
"""

_SDP = """\
v=0
o=- 1 1 IN IP4 {host}
s=call {index}
c=IN IP4 {host}
t=0 0
m=audio {audio} RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=recvonly
m=video {video} RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1
a=recvonly
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clip_path = ensure_h264_clip(Path(args.clip))
    clip = build_clip(clip_path)
    cpus = sorted(os.sched_getaffinity(0))
    sender_cpu = cpus[0] if len(cpus) > 1 else None
    receiver_cpu = cpus[1] if len(cpus) > 1 else None
    counts = [int(c) for c in args.calls.split(",") if c.strip()]
    kinds = [k for k in KINDS if k in args.kinds.split(",")]
    print(_machine_line(), flush=True)
    print(
        f"clip: {clip.video_bitrate / 1e6:.2f} Mbit/s H264, "
        f"{clip.packets_per_second:.0f} packets/s per call",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="rtmp-push-bench-"))
    nginx = _Nginx(workdir / "nginx", sender_cpu)
    steps: list[dict[str, Any]] = []
    try:
        nginx.start()
        print(_HEAD, flush=True)
        for calls in counts:
            for kind in kinds:
                if time.monotonic() - started > args.budget:
                    print(f"time budget of {args.budget:.0f} s spent: stopping", flush=True)
                    break
                step = _run_step(
                    kind, calls, args, clip_path, nginx, workdir, sender_cpu, receiver_cpu
                )
                steps.append(step)
                print(_row(step), flush=True)
        nginx_cpu = nginx.cpu_seconds()
    finally:
        nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = _summary(steps)
    report = {
        "benchmark": "rtmp-push",
        "command": " ".join([".venv/bin/python", "bench/rtmp_push.py", *(argv or sys.argv[1:])]),
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "ffmpeg": _ffmpeg_version(),
        },
        "clip": {
            "video_bitrate": clip.video_bitrate,
            "pps_per_call": clip.packets_per_second,
        },
        "settings": {
            "duration": args.duration,
            "settle": args.settle,
            "sipbridge_aac_sample_rate": args.aac_rate,
            "calls": counts,
            "sender_cpu": sender_cpu,
            "receiver_cpu": receiver_cpu,
        },
        "steps": steps,
        "summary": summary,
        "nginx_cpu_seconds_total": nginx_cpu,
        "elapsed_seconds": time.monotonic() - started,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_summary_text(summary))
    print(f"\nwrote {out} in {report['elapsed_seconds']:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="1,5,10,20", help="concurrent calls, comma list")
    parser.add_argument("--kinds", default=",".join(KINDS), help="receivers to run")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after all publish")
    parser.add_argument("--ready-timeout", type=float, default=20.0, help="to see all publish")
    parser.add_argument(
        "--aac-rate", type=int, default=48_000,
        help="sipbridge's AAC sample rate (PushConfig default 48000; ffmpeg keeps 8000)",
    )  # fmt: skip
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for the sweep")
    parser.add_argument("--clip", default=str(ROOT / "artifacts/bench/clip.h264"))
    parser.add_argument("--out", default=str(ROOT / "artifacts/bench/rtmp_push.json"))
    return parser


# -- nginx ---------------------------------------------------------------------------------
class _Nginx:
    """A private nginx-rtmp on free 127.0.0.1 ports (``daemon off``), stopped by PID."""

    def __init__(self, workdir: Path, cpu: int | None) -> None:
        if shutil.which("nginx") is None or not RTMP_MODULE.exists():
            raise FileNotFoundError("nginx with libnginx-mod-rtmp is needed")
        self.workdir = workdir
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.rtmp_port = _free_tcp_port()
        self.http_port = _free_tcp_port()
        self.config = workdir / "nginx.conf"
        self.config.write_text(
            _NGINX_CONFIG.format(
                module=RTMP_MODULE, dir=workdir, host=HOST,
                rtmp_port=self.rtmp_port, http_port=self.http_port,
            )
        )  # fmt: skip
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.workdir), "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_pin(self.cpu),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.1)

    def url(self, name: str) -> str:
        return f"rtmp://{HOST}:{self.rtmp_port}/live/{name}"

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per stream name: ``bytes_in``, ``bw_in`` (bits/s, refreshed by nginx every 10 s),
        whether it is published, and the codecs of its metadata."""
        url = f"http://{HOST}:{self.http_port}/stat"
        with urllib.request.urlopen(url, timeout=5) as response:
            root = ET.fromstring(response.read())
        streams: dict[str, dict[str, Any]] = {}
        for element in root.iter("stream"):
            name = element.findtext("name") or ""
            streams[name] = {
                "bytes_in": int(element.findtext("bytes_in") or 0),
                "bw_in": int(element.findtext("bw_in") or 0),
                "publishing": element.find("publishing") is not None,
                "video": element.findtext("meta/video/codec"),
                "audio": element.findtext("meta/audio/codec"),
                "audio_rate": element.findtext("meta/audio/sample_rate"),
            }
        return streams

    def cpu_seconds(self) -> float | None:
        if self.process is None:
            return None
        return _cpu_seconds(self.process.pid, children=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: master + worker
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


# -- one step ------------------------------------------------------------------------------
def _run_step(
    kind: str,
    calls: int,
    args: argparse.Namespace,
    clip_path: Path,
    nginx: _Nginx,
    workdir: Path,
    sender_cpu: int | None,
    receiver_cpu: int | None,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    names = [f"{kind}{calls}-call{k}" for k in range(calls)]
    urls = [nginx.url(name) for name in names]
    control_port = _free_port_pair()
    step: dict[str, Any] = {"kind": kind, "calls": calls}
    max_run = args.ready_timeout + args.settle + args.duration + 5.0
    receiver: multiprocessing.process.BaseProcess | None = None
    receiver_end: Connection | None = None
    ffmpegs: list[subprocess.Popen[bytes]] = []
    sender: multiprocessing.process.BaseProcess | None = None
    pusher_report: dict[str, Any] = {}
    try:
        if kind in ("sipbridge", "ingest"):
            receiver_end, child = ctx.Pipe()
            receiver = ctx.Process(
                target=_run_sipbridge,
                args=(
                    calls,
                    urls,
                    control_port,
                    receiver_cpu,
                    max_run + 15.0,
                    args.aac_rate if kind == "sipbridge" else None,
                    child,
                ),
                daemon=True,
            )
            receiver.start()
            child.close()
            ready = _receive(receiver_end, 60.0, "sipbridge setup")
            if "error" in ready:
                return {**step, "error": ready["error"]}
            targets = [tuple(t) for t in ready["targets"]]
            pids = [receiver.pid or 0]
        else:
            targets, ffmpegs = _start_ffmpegs(calls, urls, workdir, receiver_cpu)
            pids = [p.pid for p in ffmpegs]
        plan = FloodPlan(
            clip_path=str(clip_path), targets=targets, audio_pt=0, video_pt=96,
            control_port=control_port, cpu=sender_cpu,
        )  # fmt: skip
        sender_end, sender_child = ctx.Pipe()
        sender = ctx.Process(target=run_sender, args=(plan, sender_child), daemon=True)
        sender.start()
        sender_child.close()
        if "error" in (answer := _receive(sender_end, 60.0, "sender setup")):
            return {**step, "error": f"sender: {answer['error']}"}
        start = time.monotonic() + 0.1
        sender_end.send((start, start, start + max_run))
        # Wait for nginx to show every stream publishing with data coming in.
        deadline = start + args.ready_timeout
        publishing = 0
        if kind == "ingest":
            time.sleep(INGEST_READY)
        while kind != "ingest" and time.monotonic() < deadline:
            stats = nginx.stats()
            publishing = sum(
                1 for n in names if stats.get(n, {}).get("publishing") and stats[n]["bytes_in"]
            )
            if publishing == len(names):
                break
            time.sleep(0.25)
        step["time_to_publish"] = time.monotonic() - start
        step["publishing_before_window"] = publishing
        time.sleep(args.settle)
        stats0, cpu0, t0 = nginx.stats(), _cpu_sum(pids), time.monotonic()
        busy0 = core_busy_seconds(receiver_cpu)
        time.sleep(args.duration)
        stats1, cpu1, t1 = nginx.stats(), _cpu_sum(pids), time.monotonic()
        busy1 = core_busy_seconds(receiver_cpu)
        memory = [_memory(pid) for pid in pids]
        alive = sum(1 for pid in pids if _alive(pid))
    except TimeoutError as exc:
        return {**step, "error": str(exc)}
    finally:
        if sender is not None:
            sender.terminate()  # our child, by PID: its window outlasts the measurement
            sender.join(timeout=5)
        if receiver is not None and receiver_end is not None:
            if receiver.is_alive():
                receiver_end.send("stop")
                try:
                    pusher_report = _receive(receiver_end, 30.0, "sipbridge stop")
                except (TimeoutError, EOFError) as exc:
                    pusher_report = {"error": str(exc)}
            receiver.join(timeout=10)
            if receiver.is_alive():
                receiver.kill()
                receiver.join(timeout=5)
        _stop_ffmpegs(ffmpegs)
    window = t1 - t0
    per_stream = {
        n: {
            "bytes_in_window": stats1.get(n, {}).get("bytes_in", 0)
            - stats0.get(n, {}).get("bytes_in", 0),
            **{k: stats1.get(n, {}).get(k) for k in ("bw_in", "video", "audio", "audio_rate")},
        }
        for n in names
    }
    received = sum(1 for s in per_stream.values() if s["bytes_in_window"] > 0)
    rss = sum(m["rss_kb"] for m in memory)
    pss = sum(m["pss_kb"] for m in memory)
    cpu = (cpu1 - cpu0) / window
    step.update(
        processes=len(pids),
        alive_at_end=alive,
        window_seconds=window,
        cpu_share=cpu,
        cpu_share_per_call=cpu / calls,
        # What other processes took of the receivers' core during the window (noise).
        core_other_share=(
            None
            if busy0 is None or busy1 is None
            else max(0.0, busy1 - busy0 - (cpu1 - cpu0)) / window
        ),
        rss_mb=rss / 1024,
        rss_mb_per_call=rss / 1024 / calls,
        pss_mb=pss / 1024,
        pss_mb_per_call=pss / 1024 / calls,
        streams_received=received,
        nginx_mbit_in=sum(s["bytes_in_window"] for s in per_stream.values()) * 8 / window / 1e6,
        all_received=None if kind == "ingest" else received == calls,
        streams=per_stream,
    )
    if pusher_report:
        step["pushers"] = pusher_report
    return step


def _start_ffmpegs(
    calls: int, urls: list[str], workdir: Path, cpu: int | None
) -> tuple[list[tuple[int, int, int, int]], list[subprocess.Popen[bytes]]]:
    """One ffmpeg per call on free port pairs; returns when all bound their RTP ports."""
    allocator = RtpPortAllocator(HOST, *FFMPEG_PORTS)
    targets: list[tuple[int, int, int, int]] = []
    processes: list[subprocess.Popen[bytes]] = []
    pairs = [(allocator.allocate(), allocator.allocate()) for _ in range(calls)]
    for audio, video in pairs:  # probed free; released for ffmpeg to bind
        targets.append((audio.rtp_port, audio.rtcp_port, video.rtp_port, video.rtcp_port))
        allocator.release(audio)
        allocator.release(video)
    try:
        for index, ((audio_port, _, video_port, _), url) in enumerate(
            zip(targets, urls, strict=True)
        ):
            sdp = workdir / f"call{index}.sdp"
            sdp.write_text(_SDP.format(host=HOST, index=index, audio=audio_port, video=video_port))
            # The brief's command, plus quiet logging and no stdin.
            command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                       "-protocol_whitelist", "file,udp,rtp", "-i", str(sdp),
                       "-c:v", "copy", "-c:a", "aac", "-f", "flv", url]  # fmt: skip
            log = (workdir / f"ffmpeg{index}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_pin(cpu),
                )
            )
            log.close()
        wanted = {p for t in targets for p in (t[0], t[2])}
        deadline = time.monotonic() + 15
        while not wanted <= _bound_udp_ports():
            if time.monotonic() > deadline:
                raise TimeoutError("ffmpeg: RTP ports not bound within 15 s")
            time.sleep(0.05)
    except BaseException:
        _stop_ffmpegs(processes)
        raise
    return targets, processes


def _stop_ffmpegs(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # ffmpeg finishes the FLV and exits
    deadline = time.monotonic() + 5
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _bound_udp_ports() -> set[int]:
    ports: set[int] = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local = line.split()[1]
        ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


# -- the sipbridge receiver (its own process) ----------------------------------------------
def _run_sipbridge(
    calls: int,
    urls: list[str],
    control_port: int,
    cpu: int | None,
    max_seconds: float,
    aac_rate: int | None,
    conn: Connection,
) -> None:
    """Process entry point: N CallMediaLinks + RtmpPushers (no pushers but a subscriber
    per stream when ``aac_rate`` is None); reports ``{"targets": ...}``,
    runs until ``"stop"`` comes on ``conn`` (or ``max_seconds``), then reports counters."""
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        import uvloop

        conn.send(uvloop.run(_sipbridge(calls, urls, control_port, max_seconds, aac_rate, conn)))
    except Exception as exc:  # reported to the driver, which fails the step
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


async def _sipbridge(
    calls: int,
    urls: list[str],
    control_port: int,
    max_seconds: float,
    aac_rate: int | None,
    conn: Connection,
) -> dict[str, Any]:
    from rtmp.pusher import PushConfig, RtmpPusher
    from sipbridge.call_media import CallMediaLink
    from sipbridge.registry import StreamRegistry, Subscription
    from sipbridge.settings import RtpSettings

    loop = asyncio.get_running_loop()
    allocator = RtpPortAllocator(HOST, *SIPBRIDGE_PORTS)
    negotiated = negotiated_call(control_port)
    registry = StreamRegistry()
    settings = RtpSettings()
    links: list[CallMediaLink] = []
    pushers: list[RtmpPusher] = []
    drains: list[asyncio.Task[None]] = []
    delivered = [0]

    async def drain(subscription: Subscription) -> None:
        async for _ in subscription:
            delivered[0] += 1

    pairs = []
    targets = []
    for index, url in enumerate(urls):
        audio, video = allocator.allocate(), allocator.allocate()
        pairs.append((audio, video))
        targets.append((audio.rtp_port, audio.rtcp_port, video.rtp_port, video.rtcp_port))
        call_id = f"bench-{index}"
        stream = registry.reserve(call_id, call_id=call_id)
        link = CallMediaLink(
            call_id=call_id, negotiated=negotiated, ports={"audio": audio, "video": video},
            stream=stream, settings=settings, now=loop.time(),
            on_inactive=lambda idle: None, on_keyframe_request=lambda: None,
            on_dtmf=lambda digit: None,
        )  # fmt: skip
        await link.start()
        links.append(link)
        if aac_rate is None:
            drains.append(loop.create_task(drain(stream.subscribe())))
            continue
        pusher = RtmpPusher(stream, PushConfig(url=url, audio_sample_rate=aac_rate))
        await pusher.start()
        pushers.append(pusher)
    conn.send({"targets": targets})
    stop = asyncio.Event()
    loop.add_reader(conn.fileno(), stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    loop.remove_reader(conn.fileno())
    if conn.poll():
        conn.recv()
    report = {
        "statuses": sorted({p.status.value for p in pushers}),
        "video_frames_sent": sum(p.stats.video_frames_sent for p in pushers),
        "audio_frames_sent": sum(p.stats.audio_frames_sent for p in pushers),
        "bytes": sum(p.stats.bytes for p in pushers),
        "dropped": sum(p.stats.dropped for p in pushers),
        "reconnects": sum(p.stats.reconnects for p in pushers),
        "frames_drained": delivered[0],
    }
    await asyncio.gather(*(p.stop() for p in pushers))
    for task in drains:
        task.cancel()
    await asyncio.gather(*drains, return_exceptions=True)
    for link in links:
        await link.stop()
    for audio, video in pairs:
        allocator.release(audio)
        allocator.release(video)
    return report


# -- /proc ---------------------------------------------------------------------------------
def _cpu_seconds(pid: int, *, children: bool) -> float:
    """``utime + stime`` (and the waited-for children's) of ``pid``, all threads (proc(5))."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def _cpu_sum(pids: list[int]) -> float:
    return sum(_cpu_seconds(pid, children=True) for pid in pids)


def _memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``Pss`` in kB (``Pss`` splits shared pages between their users)."""
    result = {"rss_kb": 0, "pss_kb": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                result["rss_kb"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                result["pss_kb"] = int(line.split()[1])
    except OSError:
        pass
    return result


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pin(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _free_tcp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _receive(conn: Connection, timeout: float, what: str) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise TimeoutError(f"{what}: no answer within {timeout:.0f} s")
    message: dict[str, Any] = conn.recv()
    return message


def _ffmpeg_version() -> str:
    try:
        out = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


# -- reporting -----------------------------------------------------------------------------
_HEAD = (
    f"{'receiver':9} {'calls':>5} {'procs':>5} {'cpu%':>6} {'cpu%/call':>9} {'RSS MB':>7} "
    f"{'RSS/call':>8} {'PSS MB':>7} {'PSS/call':>8} {'nginx Mb/s':>10} {'recv':>7} {'t_pub':>6}"
)


def _row(step: dict[str, Any]) -> str:
    if step.get("error"):
        return f"{step['kind']:9} {step['calls']:>5}  error: {step['error']}"
    received = (
        "-" if step["all_received"] is None else f"{step['streams_received']}/{step['calls']}"
    )
    return (
        f"{step['kind']:9} {step['calls']:>5} {step['processes']:>5} "
        f"{step['cpu_share'] * 100:>6.1f} {step['cpu_share_per_call'] * 100:>9.2f} "
        f"{step['rss_mb']:>7.1f} {step['rss_mb_per_call']:>8.1f} "
        f"{step['pss_mb']:>7.1f} {step['pss_mb_per_call']:>8.1f} "
        f"{step['nginx_mbit_in']:>10.2f} {received:>7} "
        f"{step['time_to_publish']:>6.1f} {_pct(step['core_other_share']):>6}"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}"


def _summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in steps if not s.get("error")]
    by = {(s["kind"], s["calls"]): s for s in good}
    ratios = []
    for calls in sorted({s["calls"] for s in good}):
        ours, theirs = by.get(("sipbridge", calls)), by.get(("ffmpeg", calls))
        if ours is None or theirs is None:
            continue
        ratios.append(
            {
                "calls": calls,
                "cpu_ratio_sipbridge_over_ffmpeg": ours["cpu_share"] / theirs["cpu_share"]
                if theirs["cpu_share"]
                else None,
                "rss_ratio_sipbridge_over_ffmpeg": ours["rss_mb"] / theirs["rss_mb"],
                "pss_ratio_sipbridge_over_ffmpeg": ours["pss_mb"] / theirs["pss_mb"]
                if theirs["pss_mb"]
                else None,
                "all_received": ours["all_received"] and theirs["all_received"],
            }
        )
        ingest = by.get(("ingest", calls))
        if ingest is not None and ours["cpu_share"]:
            # The part of sipbridge's CPU that receiving (not pushing) takes.
            ratios[-1]["ingest_share_of_sipbridge_cpu"] = ingest["cpu_share"] / ours["cpu_share"]
    marginal: dict[str, Any] = {}
    for kind in KINDS:
        mine = sorted((s for s in good if s["kind"] == kind), key=lambda s: s["calls"])
        if len(mine) >= 2 and mine[-1]["calls"] > mine[0]["calls"]:
            lo, hi = mine[0], mine[-1]
            span = hi["calls"] - lo["calls"]
            marginal[kind] = {
                "from_calls": lo["calls"],
                "to_calls": hi["calls"],
                "cpu_share_per_added_call": (hi["cpu_share"] - lo["cpu_share"]) / span,
                "rss_mb_per_added_call": (hi["rss_mb"] - lo["rss_mb"]) / span,
                "pss_mb_per_added_call": (hi["pss_mb"] - lo["pss_mb"]) / span,
            }
    return {"ratios": ratios, "marginal": marginal}


def _summary_text(summary: dict[str, Any]) -> str:
    lines = []
    for r in summary["ratios"]:
        cpu = r["cpu_ratio_sipbridge_over_ffmpeg"]
        pss = r["pss_ratio_sipbridge_over_ffmpeg"]
        lines.append(
            f"{r['calls']:>3} calls: sipbridge/ffmpeg CPU {'-' if cpu is None else f'{cpu:.2f}'}x,"
            f" RSS {r['rss_ratio_sipbridge_over_ffmpeg']:.2f}x,"
            f" PSS {'-' if pss is None else f'{pss:.2f}'}x,"
            f" all streams at nginx: {r['all_received']}"
            + (
                f", ingest-only = {r['ingest_share_of_sipbridge_cpu'] * 100:.0f} % of its CPU"
                if "ingest_share_of_sipbridge_cpu" in r
                else ""
            )
        )
    for kind, m in summary["marginal"].items():
        lines.append(
            f"{kind}: per added call ({m['from_calls']}->{m['to_calls']}) "
            f"CPU {m['cpu_share_per_added_call'] * 100:.2f} % of a core, "
            f"RSS {m['rss_mb_per_added_call']:.1f} MB, PSS {m['pss_mb_per_added_call']:.1f} MB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
