"""RTP ingest packets/s per core, against raw uvloop UDP receive in the same run.

    .venv/bin/python bench/ingest.py [--duration 3] [--rates 10000,20000,...]

For each offered rate (RTP packets/s, all calls together) two receivers run in
turn, each in a fresh process pinned to one core, fed by the same sender
(``bench/udp_flood.py``) in another process pinned to the other core:

- ``raw``: uvloop, a ``DatagramProtocol`` that only counts (the peer);
- ``ingest``: the gateway's path per call, UDP -> ``RtpPacket`` -> latching ->
  jitter buffer -> H264 FU-A/STAP-A and PCMU depacketizing -> A/V clock ->
  ``Stream.publish`` with one subscriber draining (``bench/ingest_receiver.py``).

A load is a number of real-rate calls (a 1 Mbit/s libx264 clip at 30 fps plus
PCMU at 20 ms; about 170 packets/s per call), so the timers, buffers and
sockets per call are what a gateway carrying that many calls has.
A step is *sustained* when the receiver processed at least 97 % of what was
offered during the window and lost at most 1 % overall (the rest is still
queued in the kernel or was dropped there: ``RcvbufErrors`` in
``/proc/net/snmp``). A receiver stops stepping after two saturated steps.
Then the ingest path is profiled once at about half its capacity.

Prints a table and writes ``artifacts/bench/ingest.json`` (and the profile
next to it). Ratios, not absolute numbers, are what carry over between
machines: see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing
import os
import platform
import socket
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make rtp/ and sipbridge/ importable

from ingest_receiver import ReceiverSpec, run_receiver  # noqa: E402
from udp_flood import Clip, FloodPlan, build_clip, ensure_h264_clip, run_sender  # noqa: E402

DEFAULT_RATES = "5000,10000,15000,20000,25000,30000,40000,60000,90000,120000,150000"
#: The brief's "typical call": 1 Mbit/s H264 (~100 packets/s) + PCMU (50 packets/s).
TYPICAL_CALL_PPS = 150.0
SUSTAINED_PROCESSED = 0.97
SUSTAINED_LOSS = 0.01
SENDER_SHORTFALL = 0.95
#: A step is re-run once when other processes took more than this share of the receiver's core.
STARVED_SHARE = 0.10


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
    rates = [int(float(r)) for r in args.rates.split(",") if r.strip()]
    kinds = [k for k in ("raw", "ingest") if k in args.kinds.split(",")]
    print(_machine_line(), flush=True)
    print(
        f"clip: {len(clip.frames)} frames, {clip.video_bitrate / 1e6:.2f} Mbit/s, "
        f"{clip.video_packets_per_second:.0f} video + 50 audio packets/s per call, "
        f"mean video payload {clip.mean_video_payload:.0f} B",
        flush=True,
    )
    steps: list[dict[str, Any]] = []
    saturated = dict.fromkeys(kinds, 0)
    for rate in rates:
        for kind in kinds:
            if saturated[kind] >= args.saturated_steps:
                continue
            if time.monotonic() - started > args.budget:
                print(f"time budget of {args.budget:.0f} s spent: stopping the sweep")
                break
            calls = max(1, round(rate / clip.packets_per_second))
            step = _run_step(kind, calls, args, clip, clip_path, sender_cpu, receiver_cpu)
            if _starved(step):
                # Another process took a share of the receiver's core: not a fair
                # saturation point. Record it and measure again, once.
                step["starved"] = True
                steps.append(step)
                print(_row(step) + " (core shared: measuring again)", flush=True)
                step = _run_step(kind, calls, args, clip, clip_path, sender_cpu, receiver_cpu)
                step["retry"] = True
            steps.append(step)
            print(_row(step), flush=True)
            if step.get("error") or not step["sustained"]:
                saturated[kind] += 1
            if step.get("sender_limited"):
                saturated[kind] = args.saturated_steps  # more load cannot be offered
    summary = _summary(steps, clip)
    profile: dict[str, Any] | None = None
    if args.profiler != "none" and "ingest" in kinds:
        best = summary["ingest"]["max_sustained_pps"] or rates[0]
        profile_rate = args.profile_rate or best / 2
        calls = max(1, round(profile_rate / clip.packets_per_second))
        print(f"profiling ingest with {args.profiler} at {calls} calls ...", flush=True)
        step = _run_step(
            "ingest", calls, args, clip, clip_path, sender_cpu, receiver_cpu,
            profiler=args.profiler,
        )  # fmt: skip
        profile = _profile_report(step, out.parent, args.profiler)
    report = {
        "benchmark": "rtp-ingest",
        "command": " ".join([".venv/bin/python", "bench/ingest.py", *(argv or sys.argv[1:])]),
        "machine": _machine(),
        "clip": {
            "frames": len(clip.frames),
            "video_bitrate": clip.video_bitrate,
            "video_pps_per_call": clip.video_packets_per_second,
            "pps_per_call": clip.packets_per_second,
            "mean_video_payload": clip.mean_video_payload,
        },
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "rates": rates,
            "sender_cpu": sender_cpu,
            "receiver_cpu": receiver_cpu,
        },
        "steps": [{k: v for k, v in s.items() if k != "profile"} for s in steps],
        "summary": summary,
        "profile": profile,
        "elapsed_seconds": time.monotonic() - started,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_summary_text(summary))
    print(f"\nwrote {out} in {report['elapsed_seconds']:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before the window")
    parser.add_argument("--rates", default=DEFAULT_RATES, help="offered RTP packets/s, comma list")
    parser.add_argument("--kinds", default="raw,ingest", help="receivers to run")
    parser.add_argument(
        "--profiler", choices=("cprofile", "pyinstrument", "none"), default="cprofile"
    )
    parser.add_argument("--profile-rate", type=float, default=None, help="packets/s to profile at")
    parser.add_argument("--saturated-steps", type=int, default=2, help="stop after N saturated")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for the sweep")
    parser.add_argument("--clip", default=str(ROOT / "artifacts/bench/clip.h264"))
    parser.add_argument("--out", default=str(ROOT / "artifacts/bench/ingest.json"))
    return parser


# -- one step ------------------------------------------------------------------------------
def _run_step(
    kind: str,
    calls: int,
    args: argparse.Namespace,
    clip: Clip,
    clip_path: Path,
    sender_cpu: int | None,
    receiver_cpu: int | None,
    *,
    profiler: str | None = None,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    control_port = _free_port_pair()
    spec = ReceiverSpec(
        kind=kind, calls=calls, control_port=control_port, cpu=receiver_cpu, profiler=profiler
    )
    step: dict[str, Any] = {"kind": kind, "calls": calls}
    receiver_end, receiver_child = ctx.Pipe()
    receiver = ctx.Process(target=run_receiver, args=(spec, receiver_child), daemon=True)
    receiver.start()
    receiver_child.close()
    sender: multiprocessing.process.BaseProcess | None = None
    try:
        ready = _receive(receiver_end, 60.0, "receiver setup")
        if "error" in ready:
            return {**step, "error": ready["error"], "sustained": False}
        plan = FloodPlan(
            clip_path=str(clip_path),
            targets=[tuple(t) for t in ready["targets"]],
            audio_pt=0,
            video_pt=96,
            control_port=control_port,
            cpu=sender_cpu,
        )
        sender_end, sender_child = ctx.Pipe()
        sender = ctx.Process(target=run_sender, args=(plan, sender_child), daemon=True)
        sender.start()
        sender_child.close()
        sender_ready = _receive(sender_end, 60.0, "sender setup")
        if "error" in sender_ready:
            return {**step, "error": f"sender: {sender_ready['error']}", "sustained": False}
        snmp_before = _udp_snmp()
        start = time.monotonic() + 0.1
        window_start = start + args.warmup
        window_end = window_start + args.duration
        receiver_end.send((window_start, window_end))
        sender_end.send((start, window_start, window_end))
        timeout = window_end - time.monotonic() + 30.0
        sent = _receive(sender_end, timeout, "sender")
        received = _receive(receiver_end, spec.grace + 30.0, "receiver result")
        snmp_after = _udp_snmp()
    except TimeoutError as exc:
        return {**step, "error": str(exc), "sustained": False}
    finally:
        for process in (sender, receiver):
            if process is not None:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()  # only the processes this step started
                    process.join(timeout=5)
    for name, part in (("sender", sent), ("receiver", received)):
        if "error" in part:
            return {**step, "error": f"{name}: {part['error']}", "sustained": False}
    return _step_result(step, calls, clip, sent, received, snmp_before, snmp_after)


def _step_result(
    step: dict[str, Any],
    calls: int,
    clip: Clip,
    sent: dict[str, Any],
    received: dict[str, Any],
    snmp_before: dict[str, int],
    snmp_after: dict[str, int],
) -> dict[str, Any]:
    nominal = calls * clip.packets_per_second
    offered = sent["window_sent"] / sent["window_seconds"]
    processed = received["window_packets"] / received["window_seconds"]
    cpu_share = received["window_cpu_seconds"] / received["window_seconds"]
    lost = max(0, sent["sent"] - received["total_packets"])
    loss = lost / sent["sent"] if sent["sent"] else 0.0
    ratio = processed / offered if offered else 0.0
    sustained = ratio >= SUSTAINED_PROCESSED and loss <= SUSTAINED_LOSS
    step.update(
        nominal_pps=nominal,
        offered_pps=offered,
        processed_pps=processed,
        processed_ratio=ratio,
        sent=sent["sent"],
        received=received["total_packets"],
        loss=loss,
        kernel_rcvbuf_errors=snmp_after["RcvbufErrors"] - snmp_before["RcvbufErrors"],
        kernel_no_ports=snmp_after.get("NoPorts", 0) - snmp_before.get("NoPorts", 0),
        cpu_share=cpu_share,
        us_per_packet=(
            received["window_cpu_seconds"] / received["window_packets"] * 1e6
            if received["window_packets"]
            else None
        ),
        sender_cpu_share=sent["cpu_seconds"] / max(1e-9, sent["run_seconds"]),
        sender_late_slots=sent["late_slots"],
        sender_errors=sent["send_errors"],
        sender_error_kinds=sent["send_error_kinds"],
        sender_first_error=sent["first_send_error"],
        sender_limited=offered < SENDER_SHORTFALL * nominal,
        sustained=sustained,
        returned_to_sender=sent["returned"],
        window_packets=received["window_packets"],
    )
    step.update({k: v for k, v in received.items() if k not in step and not k.startswith("win")})
    return step


def _starved(step: dict[str, Any]) -> bool:
    other = step.get("core_other_share")
    return (
        not step.get("error")
        and not step["sustained"]
        and not step["sender_limited"]
        and other is not None
        and other > STARVED_SHARE
    )


def _receive(conn: Connection, timeout: float, what: str) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise TimeoutError(f"{what}: no answer within {timeout:.0f} s")
    message: dict[str, Any] = conn.recv()
    return message


def _free_port_pair() -> int:
    """An even port whose successor is free too, outside the receivers' range."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1] & ~1
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


def _udp_snmp() -> dict[str, int]:
    """The kernel's UDP counters (``/proc/net/snmp``, whole network namespace)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return {"RcvbufErrors": 0}
    rows = [line for line in lines if line and line[0] == "Udp:"]
    if len(rows) < 2:
        return {"RcvbufErrors": 0}
    return dict(zip(rows[0][1:], (int(v) for v in rows[1][1:]), strict=False))


# -- reporting -----------------------------------------------------------------------------
def _summary(steps: list[dict[str, Any]], clip: Clip) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in ("raw", "ingest"):
        mine = [
            s for s in steps if s["kind"] == kind and not s.get("error") and not s.get("starved")
        ]
        good = [s for s in mine if s["sustained"]]
        best = max(good, key=lambda s: s["processed_pps"]) if good else None
        peak = max(mine, key=lambda s: s["processed_pps"]) if mine else None
        saturated = any(not s["sustained"] and not s["sender_limited"] for s in mine)
        summary[kind] = {
            "max_sustained_pps": best["processed_pps"] if best else None,
            "max_sustained_calls": best["calls"] if best else None,
            "peak_processed_pps": peak["processed_pps"] if peak else None,
            "us_per_packet_at_max": best["us_per_packet"] if best else None,
            "cpu_share_at_max": best["cpu_share"] if best else None,
            "saturated": saturated,
            "cpu_bound_estimate_pps": (
                1e6 / best["us_per_packet"] if best and best["us_per_packet"] else None
            ),
        }
    raw, ingest = summary["raw"], summary["ingest"]
    if raw["max_sustained_pps"] and ingest["max_sustained_pps"]:
        summary["throughput_ratio_raw_over_ingest"] = (
            raw["max_sustained_pps"] / ingest["max_sustained_pps"]
        )
        summary["throughput_ratio_is_lower_bound"] = not raw["saturated"]
    # CPU per packet at the same offered load: the highest step both sustained.
    pairs = []
    for s in steps:
        if s["kind"] != "ingest" or not s.get("sustained"):
            continue
        for r in steps:
            if r["kind"] == "raw" and r.get("sustained") and r["calls"] == s["calls"]:
                pairs.append((s, r))
    if pairs:
        s, r = max(pairs, key=lambda pair: pair[0]["calls"])
        summary["cpu_per_packet_same_load"] = {
            "calls": s["calls"],
            "offered_pps": s["offered_pps"],
            "ingest_us": s["us_per_packet"],
            "raw_us": r["us_per_packet"],
            "ratio": s["us_per_packet"] / r["us_per_packet"] if r["us_per_packet"] else None,
        }
    best_pps = ingest["max_sustained_pps"]
    if best_pps:
        summary["calls_per_core"] = {
            "measured_clip": best_pps / clip.packets_per_second,
            "typical_150pps": best_pps / TYPICAL_CALL_PPS,
            "cpu_bound_typical_150pps": (ingest["cpu_bound_estimate_pps"] or 0) / TYPICAL_CALL_PPS,
        }
    return summary


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


_HEAD = (
    f"{'receiver':8} {'calls':>6} {'offered/s':>10} {'processed/s':>11} {'proc%':>6} "
    f"{'loss%':>6} {'kdrops':>7} {'cpu%':>5} {'other%':>6} {'us/pkt':>7}  status"
)


def _row(step: dict[str, Any]) -> str:
    if not hasattr(_row, "printed"):
        print(_HEAD)
        _row.printed = True  # type: ignore[attr-defined]
    if step.get("error"):
        return f"{step['kind']:8} {step['calls']:>6}  error: {step['error']}"
    status = "ok" if step["sustained"] else "SATURATED"
    if step["sender_limited"]:
        status += " (sender-limited)"
    return (
        f"{step['kind']:8} {step['calls']:>6} {step['offered_pps']:>10,.0f} "
        f"{step['processed_pps']:>11,.0f} {step['processed_ratio'] * 100:>6.1f} "
        f"{step['loss'] * 100:>6.2f} {step['kernel_rcvbuf_errors']:>7} "
        f"{step['cpu_share'] * 100:>5.0f} {_pct(step.get('core_other_share')):>6} "
        f"{_fmt(step['us_per_packet'], '.2f'):>7}  {status}"
    )


def _summary_text(summary: dict[str, Any]) -> str:
    raw, ingest = summary["raw"], summary["ingest"]
    lines = [
        f"raw uvloop receive: max sustained {_fmt(raw['max_sustained_pps'])} packets/s"
        + ("" if raw["saturated"] else " (not saturated: the sender's limit)")
        + f", {_fmt(raw['us_per_packet_at_max'], '.2f')} us/packet CPU",
        f"full ingest:        max sustained {_fmt(ingest['max_sustained_pps'])} packets/s"
        f" ({_fmt(ingest['max_sustained_calls'])} calls)"
        f", {_fmt(ingest['us_per_packet_at_max'], '.2f')} us/packet CPU",
    ]
    ratio = summary.get("throughput_ratio_raw_over_ingest")
    if ratio:
        bound = ">= " if summary.get("throughput_ratio_is_lower_bound") else ""
        lines.append(f"throughput ratio raw/ingest: {bound}{ratio:.2f}")
    same = summary.get("cpu_per_packet_same_load")
    if same:
        lines.append(
            f"CPU per packet at the same load ({same['calls']} calls, "
            f"{same['offered_pps']:,.0f} packets/s): ingest {same['ingest_us']:.2f} us, "
            f"raw {same['raw_us']:.2f} us, ratio {_fmt(same['ratio'], '.1f')}"
        )
    calls = summary.get("calls_per_core")
    if calls:
        lines.append(
            f"calls per core: {calls['typical_150pps']:.0f} typical (150 packets/s) calls, "
            f"{calls['measured_clip']:.0f} of this clip's calls"
        )
    return "\n".join(lines)


def _profile_report(step: dict[str, Any], folder: Path, which: str) -> dict[str, Any] | None:
    profile = step.get("profile")
    if not profile:
        print(f"profiling failed: {step.get('error')}")
        return None
    if profile["profiler"] == "pyinstrument":
        path = folder / "ingest_profile_pyinstrument.txt"
        path.write_text(profile["text"])
        print(f"wrote {path}")
        return {"profiler": which, "file": str(path), "calls": step["calls"]}
    rows = profile["rows"]
    total = sum(r["tottime"] for r in rows) or 1.0
    path = folder / "ingest_profile.txt"
    lines = [
        f"cProfile of the ingest receiver, {step['calls']} calls, "
        f"{step.get('offered_pps', 0):,.0f} packets/s offered",
        f"{'tottime%':>8} {'calls/pkt':>9} {'ncalls':>10} {'tottime':>8} {'cumtime':>8}  function",
    ]
    window = step.get("window_packets") or 1
    for r in rows:
        lines.append(
            f"{r['tottime'] / total * 100:>8.1f} {r['ncalls'] / window:>9.2f} {r['ncalls']:>10} "
            f"{r['tottime']:>8.3f} {r['cumtime']:>8.3f}  {r['function']}"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:22]))
    print(f"wrote {path}")
    return {"profiler": which, "file": str(path), "calls": step["calls"], "rows": rows[:25]}


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "uvloop": importlib.metadata.version("uvloop"),
        "kernel": platform.release(),
        "rmem_max": _read_int("/proc/sys/net/core/rmem_max"),
    }


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _machine_line() -> str:
    m = _machine()
    return (
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, uvloop {m['uvloop']}, "
        f"kernel {m['kernel']}, rmem_max {m['rmem_max']}"
    )


if __name__ == "__main__":
    sys.exit(main())
