"""Load: the largest number of concurrent calls the gateway carries with nothing lost.

    .venv/bin/python bench/load.py [--steps 10,20,30,...] [--window 20]

Runs the rig of ``bench/callrig.py``: the real gateway process, one sipp
answering every call and replaying H264 + PCMU + RTCP from a pcap, and a private
nginx-rtmp, all sharing the machine's cores (``--pin``: the gateway alone on the
second core, sipp and nginx on the first).
For each step N, fresh calls are placed through the REST API (``/call/startup``
with ``rtmpUrl``: each call's stream is pushed to nginx), at ``--rate`` calls
per second. Once every call is ESTABLISHED, every push is PROCESSED_REMOTE and
nginx shows every stream publishing, the driver waits ``--settle`` seconds and
measures a ``--window``. Then it hangs every call up and goes on to the next N.

A step **passes** when all of these hold:

- every ``/call/startup`` answered 200 and every call is ESTABLISHED at the end
  of the window (none FAILED, none ended);
- inside the gateway nothing was lost from the first call's start to the
  window's end: ``sipbridge_rtp_packets_lost_total`` and ``..._late_total`` did
  not move (on loopback a lost packet is one the gateway did not read in time),
  ``sipbridge_push_dropped_frames_total`` did not move (neither a push's send
  queue nor its stream subscription overflowed), no push reconnected;
- every stream published video at the clip's frame rate and audio at 50
  frames/s within 3 % over the window, and every stream's ``bytes_in`` grew in
  nginx's ``rtmp_stat``.

A passing step is also **healthy** when the event loop's lag p99 stays within
:data:`HEALTHY_LAG_MS`. The sweep stops at the first failing step, then tries
the midpoint between the last pass and that failure while steps stay coarser
than ``--resolution``.
Reported per step: the gateway's CPU (% of its core), RSS and RSS per call over
the idle gateway, event-loop lag (p50/p99/max from the ``/metrics`` histogram),
threads, sockets and asyncio tasks; the peers' core load. Writes
``artifacts/bench/load.json``; the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callrig import (
    ROOT,
    Rig,
    children_cpu_seconds,
    core_busy,
    cpu_seconds_tree,
    lag_between,
    machine_line,
    proc_sample,
    video_frames,
    write_json,
)

AUDIO_FPS = 50.0
#: Event-loop lag p99 (ms) up to which a passing step also counts as healthy.
HEALTHY_LAG_MS = 50.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    steps = sorted({int(n) for n in args.steps.split(",")})
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sipbridge-load-") as tmp:
        rig = Rig(
            Path(tmp),
            pcap_seconds=args.pcap_seconds,
            gateway_cpu=None if not args.pin else 1,
            peers_cpu=None if not args.pin else 0,
            keep_logs=ROOT / "artifacts" / "bench" / "load-logs",
            gc_freeze=not args.no_gc_freeze,
            aac_rate=args.aac_rate,
            aac_bitrate=args.aac_bitrate,
        )
        video_fps = rig.pcap.video_frames / rig.pcap.seconds
        print(f"{machine_line()}\nclip: {video_fps:.2f} fps video, pcap {rig.pcap.seconds:.0f} s")
        with rig:
            time.sleep(2.0)
            idle = proc_sample(rig.gateway_pid, sockets_by_kind=True)
            idle_tasks = rig.scrape().total("sipbridge_asyncio_tasks")
            print(
                f"idle gateway: RSS {idle.rss_kb / 1024:.1f} MB, {idle.threads} threads, "
                f"{idle.sockets} sockets, {idle_tasks:.0f} tasks"
            )
            passed: int | None = None
            failed: int | None = None
            queue = list(steps)
            while queue:
                n = queue.pop(0)
                step = run_step(rig, n, args, video_fps, idle.rss_kb)
                results.append(step)
                print(_row(step), flush=True)
                if not rig.gateway_alive():
                    print("the gateway died:\n" + rig.log_tail())
                    break
                if step["passed"]:
                    passed = max(passed or 0, n)
                    if failed is not None and failed - n > args.resolution:
                        queue = [(n + failed) // 2]
                else:
                    failed = n if failed is None else min(failed, n)
                    low = passed or 0
                    queue = [(low + n) // 2] if n - low > args.resolution else []
            summary = {
                "machine": machine_line(),
                "video_fps": video_fps,
                "idle": {
                    "rss_mb": idle.rss_kb / 1024,
                    "threads": idle.threads,
                    "sockets": idle.sockets,
                    "tasks": idle_tasks,
                },
                "largest_passing": passed,
                "largest_healthy": max((r["calls"] for r in results if r["healthy"]), default=None),
                "smallest_failing": failed,
                "steps": results,
                "args": vars(args),
            }
    write_json(Path(args.out), summary)
    print(f"\nlargest N with no failed call and nothing lost: {passed}; first failure: {failed}")
    print(
        f"largest N also with loop lag p99 <= {HEALTHY_LAG_MS:.0f} ms: {summary['largest_healthy']}"
    )
    print(f"written: {args.out}")
    return 0 if passed else 1


def run_step(
    rig: Rig, n: int, args: argparse.Namespace, video_fps: float, idle_rss_kb: int
) -> dict[str, Any]:
    ids = [f"n{n}-c{i:03d}-{int(time.time()) % 100000}" for i in range(n)]
    problems: list[str] = []
    start_scrape = rig.scrape()
    started = time.monotonic()
    for index, call_id in enumerate(ids):
        due = started + index / args.rate
        time.sleep(max(0.0, due - time.monotonic()))
        response = rig.start_call(call_id)
        if response.status_code != 200:
            problems.append(f"{call_id}: /call/startup {response.status_code} {response.text}")
    ramp_s = time.monotonic() - started
    ready_s = _wait_ready(rig, ids, timeout=20.0 + n / args.rate, problems=problems)
    time.sleep(args.settle)

    def look() -> dict[str, Any]:
        return {
            "scrape": rig.scrape(),
            "proc": proc_sample(rig.gateway_pid, sockets_by_kind=True),
            "streams": rig.streams(),
            "nginx": rig.nginx_stats(),
            "peers_core": None if not args.pin else core_busy(0),
            "gateway_core": None if not args.pin else core_busy(1),
            "sipp_cpu": cpu_seconds_tree(rig.sipp_pid),
            "nginx_cpu": _nginx_cpu(rig),
        }

    first = look()
    profiler = _start_profiler(rig, args, n)
    time.sleep(args.window)
    last = look()
    if profiler is not None:
        profiler.wait(timeout=args.window + 30)
    calls = rig.calls()
    pushes = rig.pushes()
    seconds = last["proc"].at - first["proc"].at

    not_up = [i for i in ids if calls.get(i, {}).get("status") != "ESTABLISHED"]
    if not_up:
        states = sorted({str(calls.get(i, {}).get("status")) for i in not_up})
        problems.append(f"{len(not_up)} call(s) not ESTABLISHED at the end: {states}")
    delta = {
        name: last["scrape"].total(name) - start_scrape.total(name)
        for name in (
            "sipbridge_rtp_packets_lost_total",
            "sipbridge_rtp_packets_late_total",
            "sipbridge_rtp_packets_received_total",
            "sipbridge_push_dropped_frames_total",
            "sipbridge_push_reconnects_total",
        )
    }
    for name in (
        "sipbridge_rtp_packets_lost_total",
        "sipbridge_rtp_packets_late_total",
        "sipbridge_push_dropped_frames_total",
        "sipbridge_push_reconnects_total",
    ):
        if delta[name]:
            problems.append(f"{name} +{delta[name]:.0f}")
    slow: list[str] = []
    for call_id in ids:
        before, after = first["streams"].get(call_id), last["streams"].get(call_id)
        if before is None or after is None:
            slow.append(f"{call_id}: no stream")
            continue
        v = (video_frames(after) - video_frames(before)) / seconds
        a = (video_frames(after, "audio") - video_frames(before, "audio")) / seconds
        if abs(v - video_fps) > 0.03 * video_fps or abs(a - AUDIO_FPS) > 0.03 * AUDIO_FPS:
            slow.append(f"{call_id}: {v:.1f} fps video, {a:.1f} audio")
        push = pushes.get(call_id)
        if push is None or push.get("status") != "PROCESSED_REMOTE":
            slow.append(f"{call_id}: push {None if push is None else push.get('status')}")
        grew = last["nginx"].get(call_id, {}).get("bytes_in", 0) - first["nginx"].get(
            call_id, {}
        ).get("bytes_in", 0)
        if grew <= 0:
            slow.append(f"{call_id}: nothing reached nginx in the window")
    if slow:
        problems.append(f"{len(slow)} stream(s) short: {slow[:5]}")
    if not rig.gateway_alive():
        problems.append("the gateway died")
    if not rig.sipp_alive():
        problems.append("sipp died")

    lag = lag_between(first["scrape"], last["scrape"])
    g0, g1 = first["proc"], last["proc"]
    step: dict[str, Any] = {
        "calls": n,
        "passed": not problems,
        "problems": problems,
        "ramp_s": round(ramp_s, 2),
        "ready_s": ready_s,
        "window_s": round(seconds, 2),
        "gateway_cpu_pct": round(100 * (g1.cpu_seconds - g0.cpu_seconds) / seconds, 1),
        "rss_mb": round(g1.rss_kb / 1024, 1),
        "rss_per_call_mb": round((g1.rss_kb - idle_rss_kb) / 1024 / n, 2),
        "threads": g1.threads,
        "sockets": g1.sockets,
        "udp_sockets": g1.udp_sockets,
        "tcp_sockets": g1.tcp_sockets,
        "tasks": last["scrape"].total("sipbridge_asyncio_tasks"),
        "lag_p50_ms": lag.p50_ms,
        "lag_p99_ms": lag.p99_ms,
        "lag_max_ms": lag.max_ms,
        "lag_over_20ms": lag.over_20ms,
        "lag_samples": lag.samples,
        "rtp_packets_per_s": round(
            (
                last["scrape"].total("sipbridge_rtp_packets_received_total")
                - first["scrape"].total("sipbridge_rtp_packets_received_total")
            )
            / seconds
        ),
        "sipp_cpu_pct": round(100 * (last["sipp_cpu"] - first["sipp_cpu"]) / seconds, 1),
        "nginx_cpu_pct": round(100 * (last["nginx_cpu"] - first["nginx_cpu"]) / seconds, 1),
        "deltas": delta,
    }
    # Beyond "nothing lost": the loop still answers within HEALTHY_LAG_MS (a jitter
    # buffer's worth), so SIP timers and RTP reads are not held up.
    step["healthy"] = step["passed"] and (lag.p99_ms or 0) <= HEALTHY_LAG_MS
    for core in ("peers_core", "gateway_core"):
        if first[core] is not None:
            busy = last[core][0] - first[core][0]
            total = last[core][1] - first[core][1]
            step[f"{core}_pct"] = round(100 * busy / total, 1) if total else None
    _hang_up(rig, ids)
    return step


def _start_profiler(rig: Rig, args: argparse.Namespace, n: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the gateway through the window, on the peers' core, without
    pausing it (``--nonblocking``); collapsed stacks to ``--profile-dir``."""
    if n not in {int(x) for x in args.profile.split(",") if x}:
        return None
    out = Path(args.profile_dir) / f"load_profile_{n}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
            "-p", str(rig.gateway_pid), "-d", str(int(args.window)), "-r", "200",
            "-f", "raw", "-o", str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=None if not args.pin else (lambda: os.sched_setaffinity(0, {0})),
    )  # fmt: skip


def _wait_ready(rig: Rig, ids: list[str], *, timeout: float, problems: list[str]) -> float | None:
    """Wait until every call is ESTABLISHED, its push PROCESSED_REMOTE and nginx shows it
    publishing; the seconds it took, or None (with the reason in ``problems``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        calls, pushes, nginx = rig.calls(), rig.pushes(), rig.nginx_stats()
        failed = [i for i in ids if calls.get(i, {}).get("status") in {"FAILED", "BUSY", "FINISH"}]
        if failed:
            problems.append(f"{len(failed)} call(s) ended: {calls[failed[0]].get('info')}")
            return None
        if all(
            calls.get(i, {}).get("status") == "ESTABLISHED"
            and pushes.get(i, {}).get("status") == "PROCESSED_REMOTE"
            and nginx.get(i, {}).get("publishing")
            for i in ids
        ):
            return round(time.monotonic() - started, 2)
        time.sleep(0.5)
    calls, pushes = rig.calls(), rig.pushes()
    waiting = [
        f"{i}: {calls.get(i, {}).get('status')}/{pushes.get(i, {}).get('status')}"
        for i in ids
        if calls.get(i, {}).get("status") != "ESTABLISHED"
        or pushes.get(i, {}).get("status") != "PROCESSED_REMOTE"
    ]
    problems.append(f"not ready after {timeout:.0f} s: {len(waiting)} {waiting[:5]}")
    return None


def _hang_up(rig: Rig, ids: list[str]) -> None:
    for call_id in ids:
        rig.terminate(call_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = rig.calls()
        if not any(calls.get(i, {}).get("status") == "ESTABLISHED" for i in ids):
            break
        time.sleep(0.5)
    time.sleep(3.0)  # sipp's BYE answers, the pushes' last frames, nginx's unpublish


def _nginx_cpu(rig: Rig) -> float:
    process = rig.nginx.process
    return children_cpu_seconds(process.pid) if process is not None else 0.0


def _row(step: dict[str, Any]) -> str:
    verdict = ("ok" if step["healthy"] else "ok, lagging") if step["passed"] else "FAIL "
    verdict += "; ".join(step["problems"])[:300]
    return (
        f"N={step['calls']:4d} gw {step['gateway_cpu_pct']:5.1f}% "
        f"RSS {step['rss_mb']:6.1f} MB ({step['rss_per_call_mb']:.2f}/call) "
        f"lag p50/p99/max {step['lag_p50_ms']}/{step['lag_p99_ms']}/{step['lag_max_ms']} ms "
        f"rtp {step['rtp_packets_per_s']}/s sipp {step['sipp_cpu_pct']}% "
        f"nginx {step['nginx_cpu_pct']}% peers-core {step.get('peers_core_pct')}% "
        f"tasks {step['tasks']:.0f} threads {step['threads']} sockets {step['sockets']} "
        f"ready {step['ready_s']} s: {verdict}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="10,20,30,40,50,60,80,100,120")
    parser.add_argument("--resolution", type=int, default=5, help="stop bisecting below this")
    parser.add_argument("--rate", type=float, default=10.0, help="calls started per second")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--pcap-seconds", type=float, default=75.0)
    parser.add_argument(
        "--pin", action="store_true", help="gateway alone on core 1, sipp and nginx on core 0"
    )
    parser.add_argument("--no-gc-freeze", action="store_true", help="[service] gc_freeze=false")
    parser.add_argument(
        "--aac-rate", type=int, default=48000, help="[rtmp] audio_sample_rate of the pushes"
    )
    parser.add_argument(
        "--aac-bitrate", type=int, default=128000, help="[rtmp] audio_bitrate of the pushes"
    )
    parser.add_argument("--profile", default="", help="steps N to profile with py-spy: 40,60")
    parser.add_argument("--profile-dir", default=str(ROOT / "artifacts/bench"))
    parser.add_argument("--out", default=str(ROOT / "artifacts/bench/load.json"))
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
