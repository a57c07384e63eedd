"""WebRTC viewers per core for one call, CPU and memory per viewer, and added latency.

    .venv/bin/python bench/webrtc_viewers.py [--viewers 1,5,10,20,40,...] [--duration 5]

One call (``bench/udp_flood.py``: the libx264 clip of ``bench/ingest.py``,
~1 Mbit/s H264 at 30 fps with a keyframe every 2 s, plus PCMU every 20 ms and
RTCP SRs, from its own process) goes through the gateway's real RTP ingest
into a registry stream, in a gateway process of its own (uvloop, pinned to the
second core: ``bench/webrtc_gateway.py``). Viewer processes
(``bench/webrtc_client.py``, pinned to the first core with the sender) add
aiortc players in steps of N, each completing ICE, DTLS and SRTP on 127.0.0.1
but not decoding. Two egress kinds are ramped in turn, each in a fresh gateway:

- ``sipbridge``: :class:`~webrtc.whep.WhepSessions` (the product);
- ``aiortc`` (the peer): the same frames fanned out by aiortc's own
  ``MediaRelay`` to each viewer's sender as soon as they are published, with
  no schedule, pacing or keyframe handling of ours: what aiortc itself costs
  to send this stream to N viewers.

At each N, once every viewer is connected and sending and after a settle
time, a window of ``--duration`` seconds measures the gateway process's CPU
(``utime + stime`` from ``/proc/PID/stat``, all threads; 100 % = one core),
its RSS at the window's end, what other processes took of its core, the frames
each viewer was sent and each player received, drops, and per frame and viewer
the time from the frame's RTP arrival to its last packet handed to the socket
(``LatencyProbe``). A kind stops ramping at the first step where the gateway
used ``--max-cpu`` of its core or more, dropped frames, or a player received
less than it was sent (the viewers' core, not the gateway, was then the limit).

Prints a table and writes ``artifacts/bench/webrtc_viewers.json``; the figures
go to ``docs/performance.md``. Every process is bounded in time and stopped by
its PID.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make rtp/, webrtc/ and sipbridge/ importable

from ingest import _free_port_pair, _machine  # noqa: E402
from ingest_receiver import core_busy_seconds  # noqa: E402
from rtmp_push import _cpu_seconds, _memory  # noqa: E402
from udp_flood import FPS, FloodPlan, build_clip, ensure_h264_clip, run_sender  # noqa: E402
from webrtc_client import ClientSpec, run_clients  # noqa: E402
from webrtc_gateway import KINDS, GatewaySpec, run_gateway  # noqa: E402

DEFAULT_VIEWERS = "1,5,10,20,40,60,80,100,130,160,200,250"
#: A player that received less than this share of the packets it was sent (in
#: frames: the gateway's count) means the viewers' core could not keep up.
RECEIVED_SHARE = 0.97


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        return _resummarize(Path(args.from_json), args.max_cpu)
    started = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clip_path = ensure_h264_clip(Path(args.clip))
    clip = build_clip(clip_path)
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu = cpus[0] if len(cpus) > 1 else None
    gateway_cpu = cpus[1] if len(cpus) > 1 else None
    counts = [int(c) for c in args.viewers.split(",") if c.strip()]
    kinds = [k for k in args.kinds.split(",") if k in KINDS]
    print(_machine_line(), flush=True)
    print(
        f"stream: {clip.video_bitrate / 1e6:.2f} Mbit/s H264 at {FPS} fps "
        f"(keyframe every 2 s) + PCMU 20 ms; {clip.packets_per_second:.0f} RTP packets/s in",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    for run in range(1, args.repeat + 1):
        for kind in kinds:
            print(f"\n== {kind}, run {run} ==\n{_HEAD}", flush=True)
            steps = _ramp(kind, counts, args, clip_path, client_cpu, gateway_cpu)
            runs.append({"kind": kind, "run": run, "steps": steps})
    summaries = [
        _summary({r["kind"]: r["steps"] for r in runs if r["run"] == run}, args.max_cpu)
        for run in range(1, args.repeat + 1)
    ]
    report = {
        "benchmark": "webrtc-viewers",
        "command": " ".join(
            [".venv/bin/python", "bench/webrtc_viewers.py", *(argv or sys.argv[1:])]
        ),
        "machine": {
            **_machine(),
            "aiortc": importlib.metadata.version("aiortc"),
            "aioice": importlib.metadata.version("aioice"),
        },
        "stream": {
            "video_bitrate": clip.video_bitrate,
            "fps": FPS,
            "rtp_packets_per_second": clip.packets_per_second,
        },
        "settings": {
            "viewers": counts,
            "duration": args.duration,
            "settle": args.settle,
            "client_processes": args.client_processes,
            "max_cpu": args.max_cpu,
            "repeat": args.repeat,
            "client_cpu": client_cpu,
            "gateway_cpu": gateway_cpu,
        },
        "runs": runs,
        "summary": summaries,
        "elapsed_seconds": time.monotonic() - started,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    for run, summary in enumerate(summaries, 1):
        print(f"\nrun {run}:")
        print(_summary_text(summary))
    print(f"\nwrote {out} in {report['elapsed_seconds']:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default=DEFAULT_VIEWERS, help="viewer counts, comma list")
    parser.add_argument("--kinds", default=",".join(KINDS), help="egress kinds to ramp")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after all send")
    parser.add_argument("--max-cpu", type=float, default=0.9, help="stop at this gateway CPU")
    parser.add_argument("--client-processes", type=int, default=4, help="viewer processes")
    parser.add_argument("--concurrency", type=int, default=8, help="connects at once, per process")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds per ramp")
    parser.add_argument("--repeat", type=int, default=1, help="ramps per kind (alternated)")
    parser.add_argument(
        "--profile-at", type=int, default=40,
        help="after the step with this many viewers, profile the gateway with py-spy (0: never)",
    )  # fmt: skip
    parser.add_argument("--clip", default=str(ROOT / "artifacts/bench/clip.h264"))
    parser.add_argument("--out", default=str(ROOT / "artifacts/bench/webrtc_viewers.json"))
    parser.add_argument(
        "--from-json", default=None,
        help="measure nothing: re-derive statuses and summary of a results file, in place",
    )  # fmt: skip
    return parser


# -- one ramp ------------------------------------------------------------------------------
class _Ramp:
    """The processes of one ramp: gateway, sender, viewer processes (all stopped by PID)."""

    def __init__(self, kind: str, args: argparse.Namespace, clip_path: Path,
                 client_cpu: int | None, gateway_cpu: int | None) -> None:  # fmt: skip
        self.kind = kind
        self.args = args
        self.clip_path = clip_path
        self.client_cpu = client_cpu
        self.gateway_cpu = gateway_cpu
        self.ctx = multiprocessing.get_context("fork")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.gateway: multiprocessing.process.BaseProcess | None = None
        self.gateway_end: Connection | None = None
        self.sender: multiprocessing.process.BaseProcess | None = None
        self.clients: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def start(self) -> None:
        max_seconds = self.args.budget + 120.0
        control_port = _free_port_pair()
        self.gateway_end, child = self.ctx.Pipe()
        spec = GatewaySpec(self.kind, control_port, self.gateway_cpu, max_seconds)
        self.gateway = self._spawn(run_gateway, spec, child)
        ready = _receive(self.gateway_end, 60.0, "gateway setup")
        if "error" in ready:
            raise RuntimeError(f"gateway: {ready['error']}")
        plan = FloodPlan(
            clip_path=str(self.clip_path), targets=[tuple(t) for t in ready["targets"]],
            audio_pt=0, video_pt=96, control_port=control_port, cpu=self.client_cpu,
        )  # fmt: skip
        sender_end, sender_child = self.ctx.Pipe()
        self.sender = self._spawn(run_sender, plan, sender_child)
        if "error" in (answer := _receive(sender_end, 60.0, "sender setup")):
            raise RuntimeError(f"sender: {answer['error']}")
        start = time.monotonic() + 0.1
        sender_end.send((start, start, start + max_seconds))
        for index in range(self.args.client_processes):
            end, child = self.ctx.Pipe()
            client = ClientSpec(ready["signaling_port"], self.client_cpu, max_seconds, f"c{index}")
            self.clients.append((self._spawn(run_clients, client, child), end))

    def _spawn(
        self, target: Any, spec: Any, child: Connection
    ) -> multiprocessing.process.BaseProcess:
        process = self.ctx.Process(target=target, args=(spec, child), daemon=True)
        process.start()
        child.close()
        self.processes.append(process)
        return process

    def gateway_call(self, *command: Any) -> dict[str, Any]:
        assert self.gateway_end is not None
        self.gateway_end.send(command)
        answer = _receive(self.gateway_end, 60.0, f"gateway {command[0]}")
        if "error" in answer:
            raise RuntimeError(f"gateway {command[0]}: {answer['error']}")
        return answer

    def add_viewers(self, count: int) -> dict[str, Any]:
        shares = [count // len(self.clients)] * len(self.clients)
        # The processes with fewest viewers take the remainder, so they stay balanced.
        totals = [len(self.client_counts_of(end)["viewers"]) for _, end in self.clients]
        for index in sorted(range(len(self.clients)), key=lambda i: totals[i])[
            : count % len(self.clients)
        ]:
            shares[index] += 1
        for (_, end), share in zip(self.clients, shares, strict=True):
            end.send(("add", share, self.args.concurrency))
        added = failed = 0
        failures: list[str] = []
        for _, end in self.clients:
            answer = _receive(end, 180.0, "viewers add")
            if "error" in answer:
                raise RuntimeError(f"viewers: {answer['error']}")
            added += answer["added"]
            failed += answer["failed"]
            failures += answer["failures"]
        return {"added": added, "failed": failed, "failures": failures[:5]}

    def client_counts_of(self, end: Connection) -> dict[str, Any]:
        end.send(("counts",))
        return _receive(end, 30.0, "viewers counts")

    def client_counts(self) -> list[tuple[int, int, int, int, int, str]]:
        rows: list[tuple[int, int, int, int, int, str]] = []
        for _, end in self.clients:
            rows += [tuple(r) for r in self.client_counts_of(end)["viewers"]]
        return rows

    def stop(self) -> None:
        for process, end in self.clients:
            if process.is_alive():
                end.send(("stop",))
        if self.gateway is not None and self.gateway_end is not None and self.gateway.is_alive():
            self.gateway_end.send(("stop",))
        if self.sender is not None and self.sender.is_alive():
            self.sender.terminate()  # our child, by PID: its send window outlasts the ramp
        for process in self.processes:
            process.join(timeout=20)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def _ramp(
    kind: str,
    counts: list[int],
    args: argparse.Namespace,
    clip_path: Path,
    client_cpu: int | None,
    gateway_cpu: int | None,
) -> list[dict[str, Any]]:
    ramp = _Ramp(kind, args, clip_path, client_cpu, gateway_cpu)
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    try:
        ramp.start()
        # A GOP cached (keyframe every 2 s) and the A/V clock settled before anyone joins.
        deadline = time.monotonic() + 20.0
        while ramp.gateway_call("status")["published"].get("video", 0) < 3 * FPS:
            if time.monotonic() > deadline:
                raise RuntimeError("no video published within 20 s")
            time.sleep(0.2)
        time.sleep(args.settle)
        steps.append(_measure(ramp, 0, {"added": 0, "failed": 0, "failures": []}))
        print(_row(steps[-1]), flush=True)
        current = 0
        for target in counts:
            if target <= current:
                continue
            if time.monotonic() - started > args.budget:
                print(f"time budget of {args.budget:.0f} s spent: stopping", flush=True)
                break
            joined = ramp.add_viewers(target - current)
            current += joined["added"]
            _wait_sending(ramp, current)
            time.sleep(args.settle)
            step = _measure(ramp, current, joined)
            steps.append(step)
            print(_row(step), flush=True)
            if args.profile_at and current == args.profile_at and ramp.gateway is not None:
                step["profile"] = _profile(ramp, Path(args.out).parent)
            if step["status"] != "ok":
                break
    except (RuntimeError, TimeoutError, EOFError, OSError) as exc:
        steps.append({"kind": kind, "viewers": None, "error": f"{type(exc).__name__}: {exc}"})
        print(f"{kind}: error: {exc}", flush=True)
    finally:
        ramp.stop()
    return steps


def _wait_sending(ramp: _Ramp, viewers: int, timeout: float = 30.0) -> None:
    """Until the gateway has ``viewers`` connected viewers and has sent video to each."""
    deadline = time.monotonic() + timeout
    while True:
        status = ramp.gateway_call("status")
        sent = status["video_frames_sent"]
        if status["connected"] >= viewers and len(sent) >= viewers and min(sent, default=0) > 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{status['connected']}/{viewers} viewers connected and sending after {timeout} s"
            )
        time.sleep(0.2)


def _measure(ramp: _Ramp, viewers: int, joined: dict[str, Any]) -> dict[str, Any]:
    assert ramp.gateway is not None and ramp.gateway.pid is not None
    pid = ramp.gateway.pid
    others = [p.pid for p in ramp.processes if p.pid is not None and p.pid != pid]
    received0 = ramp.client_counts()
    ramp.gateway_call("mark")
    t0 = time.monotonic()
    cpu0, busy0 = _cpu_seconds(pid, children=False), core_busy_seconds(ramp.gateway_cpu)
    client0 = sum(_cpu_seconds(p, children=False) for p in others)
    time.sleep(ramp.args.duration)
    cpu1, busy1 = _cpu_seconds(pid, children=False), core_busy_seconds(ramp.gateway_cpu)
    client1 = sum(_cpu_seconds(p, children=False) for p in others)
    t1 = time.monotonic()
    report = ramp.gateway_call("report")
    received1 = ramp.client_counts()
    memory = _memory(pid)
    window = t1 - t0
    start, end = report["start"], report["end"]
    gateway_window = end["at"] - start["at"]
    cpu = (cpu1 - cpu0) / window

    def per_viewer(key: str) -> list[int]:
        before = start[key]
        return [n - (before[i] if i < len(before) else 0) for i, n in enumerate(end[key])]

    video_sent = per_viewer("video_frames_sent")
    audio_sent = per_viewer("audio_frames_sent")
    published = {
        k: (end["published"].get(k, 0) - start["published"].get(k, 0)) / gateway_window
        for k in ("video", "audio")
    }
    received = [
        (a1 - a0, v1 - v0, o1 - o0, l1 - l0 + b1 - b0)
        for (a0, v0, o0, l0, b0, _), (a1, v1, o1, l1, b1, _) in zip(
            received0, received1, strict=False
        )
    ]
    frames_sent = sorted(v + a for v, a in zip(video_sent, audio_sent, strict=False))
    kbits = sorted(r[2] * 8 / window / 1000 for r in received)
    audio_in = sorted(r[0] / window for r in received)
    lost = sum(r[3] for r in received)
    drops = {name: end[name] - start[name] for name in ("dropped", "subscription_dropped", "late")}
    # Audio is one packet per frame: a player's audio packets against what it was sent.
    audio_share = (
        min(audio_in) / (sorted(audio_sent)[len(audio_sent) // 2] / gateway_window)
        if audio_in and audio_sent and max(audio_sent) > 0
        else None
    )
    step: dict[str, Any] = {
        "kind": ramp.kind,
        "viewers": viewers,
        "joined": joined,
        "window_seconds": window,
        "cpu_share": cpu,
        "core_other_share": (
            None
            if busy0 is None or busy1 is None
            else max(0.0, busy1 - busy0 - (cpu1 - cpu0)) / window
        ),
        "client_side_cpu_share": (client1 - client0) / window,
        "rss_mb": memory["rss_kb"] / 1024,
        "pss_mb": memory["pss_kb"] / 1024,
        "published_per_second": published,
        "frames_sent_per_viewer_per_second": {
            "min": frames_sent[0] / gateway_window if frames_sent else None,
            "median": frames_sent[len(frames_sent) // 2] / gateway_window if frames_sent else None,
        },
        "received_kbit_per_viewer": {
            "min": kbits[0] if kbits else None,
            "median": kbits[len(kbits) // 2] if kbits else None,
        },
        "received_audio_share_min": audio_share,
        "client_lost_packets": lost,
        "connected": end["connected"],
        "drops": drops,
        "reanchors": end["reanchors"] - start["reanchors"],
        "max_queued": end["max_queued"],
        "keyframe_requests": end["keyframe_requests"] - start["keyframe_requests"],
        "signaling_errors": len(end["signaling_errors"]),
        "latency": report["latency"],
    }
    step["status"] = _status(step, ramp.args.max_cpu)
    return step


def _status(step: dict[str, Any], max_cpu: float) -> str:
    if step["viewers"] and step["joined"]["failed"]:
        return "viewers failed to join"
    if step["cpu_share"] >= max_cpu:
        return "gateway saturated"
    if any(step["drops"].values()):
        return "drops"
    sent = step["frames_sent_per_viewer_per_second"]["min"]
    published = sum(step["published_per_second"].values())
    if step["viewers"] and sent is not None and sent < RECEIVED_SHARE * published:
        return "gateway behind"  # no drop, but a viewer is sent less than is published
    share = step["received_audio_share_min"]
    if step["viewers"] and (
        (share is not None and share < RECEIVED_SHARE) or step["client_lost_packets"]
    ):
        return "client-limited"
    return "ok"


def _profile(ramp: _Ramp, folder: Path) -> dict[str, Any] | None:
    """py-spy (sampling, outside the measured window) of the gateway process: self time
    by function and by module, written to ``webrtc_viewers_profile_KIND.txt``."""
    assert ramp.gateway is not None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed (.venv/bin/pip install py-spy): no profile", flush=True)
        return None
    raw = folder / f"webrtc_viewers_profile_{ramp.kind}.raw"
    seconds = max(1, round(ramp.args.duration))
    command = [spy, "record", "--pid", str(ramp.gateway.pid), "--duration", str(seconds),
               "--rate", "250", "--format", "raw", "--output", str(raw)]  # fmt: skip
    cpu = ramp.client_cpu
    try:
        subprocess.run(
            command, check=True, timeout=seconds + 60, capture_output=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"py-spy failed: {exc}", flush=True)
        return None
    return profile_report(raw, ramp.kind, ramp.args.profile_at, seconds)


def profile_report(raw: Path, kind: str, viewers: int, seconds: int) -> dict[str, Any]:
    """Self and inclusive time from py-spy's ``raw`` (collapsed) stacks of the gateway's
    event loop thread (idle executor threads are left out), as text next to ``raw``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "run_gateway" not in stack or not count_text.isdigit():
            continue  # not the event loop's thread
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        # The frames above the event loop (the fork, uvloop.run) are in every sample.
        while frames and not frames[0].startswith("asyncio/runners.py"):
            frames.pop(0)
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        modules[frames[-1].split(":", 1)[0]] += count
        for name in set(frames[1:]):
            inclusive[name] += count
    total = max(total, 1)
    lines = [
        f"py-spy of the {kind} gateway's event loop thread, {viewers} viewers, {seconds} s at "
        f"250 Hz: {total} busy samples (idle excluded). 'asyncio/runners.py:Runner.run' self "
        "time is uvloop's C code (epoll, timers, callbacks); StunProtocol.send_data's self "
        "time is uvloop's sendto() (the system call: on loopback it includes the kernel's "
        "delivery to the receiving socket).",
        "",
        "self % by module:",
        *(f"{n / total * 100:6.1f}  {name}" for name, n in modules.most_common(25)),
        "",
        "self % by function:",
        *(f"{n / total * 100:6.1f}  {name}" for name, n in own.most_common(40)),
        "",
        "inclusive % by function:",
        *(f"{n / total * 100:6.1f}  {name}" for name, n in inclusive.most_common(45)),
    ]
    text_path = raw.with_suffix(".txt")
    text_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {text_path}", flush=True)
    return {
        "file": str(text_path),
        "samples": total,
        "modules": {k: v / total for k, v in modules.most_common(15)},
        "inclusive": {k: v / total for k, v in inclusive.most_common(30)},
    }


def _frame(text: str) -> str:
    """``function (path:line)`` -> ``short/path.py:function``."""
    name, _, where = text.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


# -- reporting -----------------------------------------------------------------------------
def _resummarize(path: Path, max_cpu: float) -> int:
    report = json.loads(path.read_text())
    for run in report["runs"]:
        print(f"\n== {run['kind']}, run {run['run']} ==\n{_HEAD}")
        for step in run["steps"]:
            if not step.get("error"):
                step["status"] = _status(step, max_cpu)
            print(_row(step))
    repeats = sorted({run["run"] for run in report["runs"]})
    report["summary"] = [
        _summary({r["kind"]: r["steps"] for r in report["runs"] if r["run"] == n}, max_cpu)
        for n in repeats
    ]
    for n, summary in zip(repeats, report["summary"], strict=True):
        print(f"\nrun {n}:\n{_summary_text(summary)}")
    path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares ``y = a + b x``: ``(a, b)``."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def _summary(ramps: dict[str, list[dict[str, Any]]], max_cpu: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind, steps in ramps.items():
        good = [s for s in steps if not s.get("error") and s["status"] == "ok"]
        cpu_fit = _fit([(s["viewers"], s["cpu_share"] * 100) for s in good])
        rss_fit = _fit([(s["viewers"], s["rss_mb"]) for s in good])
        stopped = next((s for s in steps if not s.get("error") and s["status"] != "ok"), None)
        entry: dict[str, Any] = {
            "max_ok_viewers": max((s["viewers"] for s in good), default=None),
            "stopped_at": None if stopped is None else {
                "viewers": stopped["viewers"], "status": stopped["status"],
                "cpu_share": stopped["cpu_share"],
            },
        }  # fmt: skip
        if cpu_fit is not None:
            base, slope = cpu_fit
            entry.update(
                base_cpu_percent=base,
                cpu_percent_per_viewer=slope,
                viewers_per_core=(100 - base) / slope if slope > 0 else None,
                viewers_at_max_cpu=(max_cpu * 100 - base) / slope if slope > 0 else None,
                marginal_viewers_per_core=100 / slope if slope > 0 else None,
            )
        if rss_fit is not None:
            entry.update(base_rss_mb=rss_fit[0], rss_mb_per_viewer=rss_fit[1])
        summary[kind] = entry
    ours, peer = summary.get("sipbridge", {}), summary.get("aiortc", {})
    if ours.get("cpu_percent_per_viewer") and peer.get("cpu_percent_per_viewer"):
        summary["cpu_per_viewer_ratio_sipbridge_over_aiortc"] = (
            ours["cpu_percent_per_viewer"] / peer["cpu_percent_per_viewer"]
        )
    by_n: dict[int, dict[str, float]] = {}
    for kind, steps in ramps.items():
        for s in steps:
            if not s.get("error") and s["viewers"]:
                by_n.setdefault(s["viewers"], {})[kind] = s["cpu_share"]
    summary["cpu_ratio_by_viewers"] = {
        n: v["sipbridge"] / v["aiortc"]
        for n, v in sorted(by_n.items())
        if "sipbridge" in v and "aiortc" in v and v["aiortc"] > 0
    }
    return summary


def _summary_text(summary: dict[str, Any]) -> str:
    lines = []
    for kind in KINDS:
        s = summary.get(kind)
        if not s or "cpu_percent_per_viewer" not in s:
            continue
        stopped = s["stopped_at"]
        lines.append(
            f"{kind}: base {s['base_cpu_percent']:.1f} % + {s['cpu_percent_per_viewer']:.3f} % "
            f"of a core per viewer -> {s['viewers_per_core'] or 0:.0f} viewers per core "
            f"({s['viewers_at_max_cpu'] or 0:.0f} at the CPU limit); "
            f"RSS {s.get('base_rss_mb', 0):.1f} MB + {s.get('rss_mb_per_viewer', 0):.2f} MB "
            "per viewer; "
            + (
                "never stopped"
                if stopped is None
                else f"stopped at {stopped['viewers']} viewers: {stopped['status']}"
            )
        )
    if "cpu_per_viewer_ratio_sipbridge_over_aiortc" in summary:
        lines.append(
            "CPU per viewer, sipbridge / aiortc relay: "
            f"{summary['cpu_per_viewer_ratio_sipbridge_over_aiortc']:.2f}x; at N viewers: "
            + ", ".join(f"{n}: {r:.2f}x" for n, r in summary["cpu_ratio_by_viewers"].items())
        )
    return "\n".join(lines)


_HEAD = (
    f"{'kind':9} {'N':>4} {'cpu%':>6} {'/viewer':>7} {'other%':>6} {'cli%':>5} {'RSS':>6} "
    f"{'fps/v':>6} {'kb/s/v':>7} {'lost':>5} {'drops':>5} "
    f"{'tot p50':>7} {'p95':>6} {'max':>6} {'late95':>6} {'hold50':>6} {'status'}"
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _row(step: dict[str, Any]) -> str:
    if step.get("error"):
        return f"{step['kind']:9} error: {step['error']}"
    n = step["viewers"]
    latency = step["latency"]["all"]
    other = step["core_other_share"]
    fps = step["frames_sent_per_viewer_per_second"]["median"]
    kbits = step["received_kbit_per_viewer"]["min"]
    late = latency.get("late", {}).get("p95_ms")
    hold = step["latency"]["hold_per_viewer"].get("median_ms")
    return (
        f"{step['kind']:9} {n:>4} {step['cpu_share'] * 100:>6.1f} "
        f"{(step['cpu_share'] * 100 / n) if n else 0:>7.2f} "
        f"{'-' if other is None else f'{other * 100:.0f}':>6} "
        f"{step['client_side_cpu_share'] * 100:>5.0f} {step['rss_mb']:>6.1f} "
        f"{'-' if fps is None else f'{fps:.0f}':>6} {'-' if kbits is None else f'{kbits:.0f}':>7} "
        f"{step['client_lost_packets']:>5} {sum(step['drops'].values()):>5} "
        f"{_ms(latency['total']['median_ms']):>7} {_ms(latency['total']['p95_ms']):>6} "
        f"{_ms(latency['total']['max_ms']):>6} {_ms(late):>6} {_ms(hold):>6} {step['status']}"
    )


def _machine_line() -> str:
    m = _machine()
    return (
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, uvloop {m['uvloop']}, "
        f"aiortc {importlib.metadata.version('aiortc')}, kernel {m['kernel']}"
    )


def _receive(conn: Connection, timeout: float, what: str) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise TimeoutError(f"{what}: no answer within {timeout:.0f} s")
    message: dict[str, Any] = conn.recv()
    return message


if __name__ == "__main__":
    sys.exit(main())
