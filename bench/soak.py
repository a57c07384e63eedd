"""Soak: many concurrent calls, ending and starting all the time, for half an hour.

    .venv/bin/python bench/soak.py [--calls 100] [--minutes 30]

Runs the rig of ``bench/callrig.py`` (the real gateway process, sipp callees
replaying H264 + PCMU + RTCP, a private nginx-rtmp; see bench/load.py). The
driver keeps ``--calls`` calls up through the REST API, each pushed to nginx
("SIP as RTMP"). Every call lasts a random time between ``--hold-min`` and
``--hold-max`` seconds, then the driver hangs it up (``/call/terminate``) and
starts another, so calls end and start all the time. New calls are paced at
``--rate`` per second.

Checked, and reported in ``artifacts/bench/soak.json``:

- **no failed call**: every ``/call/startup`` answered 200; every call reached
  ESTABLISHED within ``--answer-timeout`` and its push PROCESSED_REMOTE; no call
  or push ended on its own (FAILED, or FINISH before the driver hung it up);
  every call, once hung up, is FINISH with "Normal call clearing" and its push
  STOPPED; every call's stream published video and audio frames;
- **nothing lost** inside the gateway: RTP lost/late and push drops stay at 0
  (``/metrics``), no push reconnected;
- **memory flat**: the gateway's RSS, median of the minute after ``--warmup``
  minutes against the median of the last minute, grows less than 5 %;
- **no leaks**: once every call has ended, the gateway's asyncio tasks, sockets,
  threads and file descriptors are back to what they were before the first call
  (tasks and sockets exactly; threads exactly).

Samples every ``--sample`` seconds: RSS, CPU, tasks, sockets, threads, calls up,
event-loop lag (``/metrics`` histogram). The figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callrig import (
    ROOT,
    Rig,
    Scrape,
    lag_between,
    machine_line,
    proc_sample,
    video_frames,
    write_json,
)

#: Seconds a hung-up call and its push have to reach FINISH / STOPPED.
ENDING_TIMEOUT = 20.0

LOSS_COUNTERS = (
    "sipbridge_rtp_packets_lost_total",
    "sipbridge_rtp_packets_late_total",
    "sipbridge_push_dropped_frames_total",
    "sipbridge_push_reconnects_total",
)


@dataclass
class Live:
    """A call the driver placed and has not hung up yet."""

    call_id: str
    started: float
    ends: float
    established: bool = False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rng = random.Random(args.seed)
    failures: list[str] = []
    samples: list[dict[str, Any]] = []
    ended_ok = 0
    placed = 0
    with tempfile.TemporaryDirectory(prefix="sipbridge-soak-") as tmp:
        rig = Rig(
            Path(tmp),
            pcap_seconds=args.hold_max + args.answer_timeout + 10,
            gateway_cpu=1 if args.pin else None,
            peers_cpu=0 if args.pin else None,
            keep_logs=ROOT / "artifacts" / "bench" / "soak-logs",
        )
        print(machine_line(), flush=True)
        with rig:
            time.sleep(2.0)
            baseline = _leak_figures(rig)
            print(f"before the first call: {baseline}", flush=True)
            first_scrape = rig.scrape()
            live: dict[str, Live] = {}
            ending: dict[str, Live] = {}  # hung up, their end not yet seen
            started = time.monotonic()
            stop_at = started + args.minutes * 60
            next_sample = started
            next_check = started + 2.0
            last_start = 0.0
            last_scrape = first_scrape
            while time.monotonic() < stop_at:
                now = time.monotonic()
                # Hang up the calls whose time has come; their end is checked later.
                for call in [c for c in live.values() if c.ends <= now]:
                    del live[call.call_id]
                    problem = _hang_up(rig, call)
                    if problem:
                        failures.append(problem)
                    else:
                        call.ends = now + ENDING_TIMEOUT
                        ending[call.call_id] = call
                # Keep the number of calls up.
                if len(live) < args.calls and now - last_start >= 1.0 / args.rate:
                    call_id = f"soak-{placed:06d}"
                    placed += 1
                    last_start = now
                    response = rig.start_call(call_id)
                    if response.status_code != 200:
                        failures.append(f"{call_id}: /call/startup {response.status_code}")
                    else:
                        hold = rng.uniform(args.hold_min, args.hold_max)
                        live[call_id] = Live(call_id, now, now + hold)
                if now >= next_check:
                    next_check = now + 5.0
                    problems, finished = _check(rig, live, ending, args.answer_timeout)
                    failures.extend(problems)
                    ended_ok += finished
                    if not rig.gateway_alive():
                        failures.append("the gateway died")
                        break
                if now >= next_sample:
                    next_sample = now + args.sample
                    scrape = rig.scrape()
                    sample = _sample(rig, scrape, last_scrape, started, len(live))
                    last_scrape = scrape
                    samples.append(sample)
                    print(_line(sample, placed, ended_ok, failures), flush=True)
                time.sleep(0.02)
            # The end: hang up everything, let the gateway settle, look for leaks.
            for call in list(live.values()):
                problem = _hang_up(rig, call)
                if problem:
                    failures.append(problem)
                else:
                    call.ends = time.monotonic() + ENDING_TIMEOUT
                    ending[call.call_id] = call
            live.clear()
            while ending:
                time.sleep(1.0)
                problems, finished = _check(rig, live, ending, args.answer_timeout)
                failures.extend(problems)
                ended_ok += finished
            time.sleep(args.drain)
            end_scrape = rig.scrape()
            after = _leak_figures(rig)
            print(f"after the last call: {after}", flush=True)
            losses = {
                name: end_scrape.total(name) - first_scrape.total(name) for name in LOSS_COUNTERS
            }
            for name, value in losses.items():
                if value:
                    failures.append(f"{name} +{value:.0f}")
    summary = _summary(args, samples, baseline, after, losses, failures, placed, ended_ok)
    write_json(Path(args.out), summary)
    print(_summary_text(summary))
    print(f"written: {args.out}")
    return 0 if summary["passed"] else 1


def _hang_up(rig: Rig, call: Live) -> str | None:
    """Check that ``call`` was up and published, then hang it up; a reason if not."""
    if not call.established:  # placed since the last look: look now
        early, _ = _check(rig, {call.call_id: call}, {}, answer_timeout=float("inf"))
        if early:
            rig.terminate(call.call_id)
            return early[0]
        if not call.established:
            rig.terminate(call.call_id)
            return f"{call.call_id}: not ESTABLISHED with its push up when its time came"
    stream = rig.post("/stream/find", {"name": call.call_id})
    frames = (0, 0)
    if stream.status_code == 200 and stream.json():
        found = stream.json()[0]
        frames = (video_frames(found), video_frames(found, "audio"))
    response = rig.terminate(call.call_id)
    if response.status_code != 200:
        return f"{call.call_id}: /call/terminate {response.status_code} {response.text[:200]}"
    if frames[0] <= 0 or frames[1] <= 0:
        return f"{call.call_id}: stream published {frames[0]} video, {frames[1]} audio frames"
    return None


def _check(
    rig: Rig, live: dict[str, Live], ending: dict[str, Live], answer_timeout: float
) -> tuple[list[str], int]:
    """One look at every call: live ones that failed on their own or were not up in
    time; hung-up ones that ended as asked (FINISH, "Normal call clearing", push
    STOPPED) or not within :data:`ENDING_TIMEOUT`. Returns (problems, ended as asked)."""
    problems: list[str] = []
    calls, pushes = rig.calls(), rig.pushes()
    now = time.monotonic()
    for call in list(live.values()):
        info = calls.get(call.call_id, {})
        status = info.get("status")
        push = pushes.get(call.call_id, {}).get("status")
        if status == "ESTABLISHED" and push == "PROCESSED_REMOTE":
            call.established = True
        elif status in {"FAILED", "BUSY", "FINISH"} or push in {"FAILED", "STOPPED"}:
            problems.append(f"{call.call_id}: {status} {info.get('info')!r}, push {push}")
            del live[call.call_id]
        elif not call.established and now - call.started > answer_timeout:
            problems.append(f"{call.call_id}: {status}/{push} after {answer_timeout:.0f} s")
            del live[call.call_id]
            rig.terminate(call.call_id)
    finished = 0
    for call in list(ending.values()):
        info = calls.get(call.call_id, {})
        status = info.get("status")
        push = pushes.get(call.call_id, {}).get("status")
        if status in {"FAILED", "BUSY"} or (status == "FINISH" and push == "FAILED"):
            problems.append(f"{call.call_id}: ended {status} {info.get('info')!r}, push {push}")
            del ending[call.call_id]
        elif status == "FINISH" and push == "STOPPED":
            del ending[call.call_id]
            if info.get("info") != "Normal call clearing":
                problems.append(f"{call.call_id}: FINISH {info.get('info')!r}")
            else:
                finished += 1
        elif now > call.ends:
            problems.append(f"{call.call_id}: {status}/{push} {ENDING_TIMEOUT:.0f} s after BYE")
            del ending[call.call_id]
    return problems, finished


def _leak_figures(rig: Rig) -> dict[str, float]:
    proc = proc_sample(rig.gateway_pid, sockets_by_kind=True)
    scrape = rig.scrape()
    return {
        "tasks": scrape.total("sipbridge_asyncio_tasks"),
        "sockets": proc.sockets,
        "udp_sockets": proc.udp_sockets,
        "tcp_sockets": proc.tcp_sockets,
        "threads": proc.threads,
        "fds": proc.fds,
        "rss_mb": round(proc.rss_kb / 1024, 1),
    }


_previous_cpu: dict[str, float] = {}


def _sample(rig: Rig, scrape: Scrape, previous: Scrape, started: float, up: int) -> dict[str, Any]:
    proc = proc_sample(rig.gateway_pid)
    cpu_pct = None
    if "cpu" in _previous_cpu:
        cpu_pct = 100 * (proc.cpu_seconds - _previous_cpu["cpu"]) / (proc.at - _previous_cpu["at"])
    _previous_cpu.update(cpu=proc.cpu_seconds, at=proc.at)
    lag = lag_between(previous, scrape)
    return {
        "t_s": round(proc.at - started, 1),
        "calls_up": up,
        "rss_mb": round(proc.rss_kb / 1024, 1),
        "cpu_pct": None if cpu_pct is None else round(cpu_pct, 1),
        "tasks": scrape.total("sipbridge_asyncio_tasks"),
        "sockets": proc.sockets,
        "threads": proc.threads,
        "fds": proc.fds,
        "lag_p99_ms": lag.p99_ms,
        "lag_max_ms": lag.max_ms,
        "lag_over_20ms": lag.over_20ms,
        "calls_started": scrape.total("sipbridge_calls_started_total"),
        "rtp_lost": scrape.total("sipbridge_rtp_packets_lost_total"),
        "push_dropped": scrape.total("sipbridge_push_dropped_frames_total"),
    }


def _summary(
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    before: dict[str, float],
    after: dict[str, float],
    losses: dict[str, float],
    failures: list[str],
    placed: int,
    ended_ok: int,
) -> dict[str, Any]:
    warm = args.warmup * 60
    first_minute = [s["rss_mb"] for s in samples if warm <= s["t_s"] < warm + 60]
    last_t = samples[-1]["t_s"] if samples else 0
    last_minute = [s["rss_mb"] for s in samples if s["t_s"] >= last_t - 60]
    growth = None
    if first_minute and last_minute:
        growth = 100 * (statistics.median(last_minute) / statistics.median(first_minute) - 1)
    leaks = {key: after[key] - before[key] for key in ("tasks", "sockets", "threads", "fds")}
    lag_max = max((s["lag_max_ms"] or 0 for s in samples), default=0)
    cpu = [s["cpu_pct"] for s in samples if s["cpu_pct"] is not None and s["t_s"] >= warm]
    problems = list(failures)
    if growth is None:
        problems.append("too short to compare memory after the warm-up")
    elif growth >= 5.0:
        problems.append(f"RSS grew {growth:.1f} % after the warm-up")
    for key in ("tasks", "sockets", "threads"):
        if leaks[key] > 0:
            problems.append(
                f"{key}: {before[key]:.0f} before the first call, {after[key]:.0f} after"
            )
    return {
        "machine": machine_line(),
        "passed": not problems,
        "problems": problems,
        "calls_placed": placed,
        "calls_ended_ok": ended_ok,
        "failed_calls": len(failures),
        "minutes": args.minutes,
        "concurrent": args.calls,
        "rss_growth_pct": None if growth is None else round(growth, 2),
        "rss_first_minute_mb": statistics.median(first_minute) if first_minute else None,
        "rss_last_minute_mb": statistics.median(last_minute) if last_minute else None,
        "cpu_pct_median": statistics.median(cpu) if cpu else None,
        "lag_max_ms": lag_max,
        "before": before,
        "after": after,
        "leaks": leaks,
        "losses": losses,
        "samples": samples,
        "args": vars(args),
    }


def _line(sample: dict[str, Any], placed: int, ended_ok: int, failures: list[str]) -> str:
    return (
        f"t={sample['t_s']:7.1f}s up {sample['calls_up']:3d} placed {placed:5d} "
        f"ended ok {ended_ok:5d} failed {len(failures)} RSS {sample['rss_mb']:6.1f} MB "
        f"cpu {sample['cpu_pct']}% tasks {sample['tasks']:.0f} sockets {sample['sockets']} "
        f"threads {sample['threads']} lag p99/max {sample['lag_p99_ms']}/{sample['lag_max_ms']} ms"
        + (f" last failure: {failures[-1][:160]}" if failures else "")
    )


def _summary_text(summary: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"soak {'PASSED' if summary['passed'] else 'FAILED'}: {summary['calls_placed']} calls "
            f"placed, {summary['calls_ended_ok']} ended as asked, "
            f"{summary['failed_calls']} failures",
            f"RSS after warm-up {summary['rss_first_minute_mb']} MB -> last minute "
            f"{summary['rss_last_minute_mb']} MB ({summary['rss_growth_pct']} %)",
            f"before/after: {summary['before']} / {summary['after']}",
            f"losses: {summary['losses']}; lag max {summary['lag_max_ms']} ms; "
            f"CPU median {summary['cpu_pct_median']} %",
            *(f"problem: {p}" for p in summary["problems"][:20]),
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls to keep up")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before memory counts")
    parser.add_argument("--hold-min", type=float, default=20.0)
    parser.add_argument("--hold-max", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0, help="calls started per second at most")
    parser.add_argument("--answer-timeout", type=float, default=15.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds after the last call")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pin", action="store_true", help="gateway alone on core 1, sipp and nginx on core 0"
    )
    parser.add_argument("--out", default=str(ROOT / "artifacts/bench/soak.json"))
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
