"""Run one fuzz harness under libFuzzer (atheris) and report inputs executed and exec/s.

Usage::

    .venv/bin/python fuzz/run.py --target sdp --runs 100000
    .venv/bin/python fuzz/run.py --target sip_message --seconds 600 [-- -jobs=... other flags]

The kept seed corpus ``fuzz/corpus/<target>/`` is read but never written:
new interesting inputs go to ``artifacts/fuzz/<target>/corpus/`` and crash,
timeout and out-of-memory reproducers to ``artifacts/fuzz/<target>/``. A
reproducer is replayed with ``python fuzz/fuzz_<target>.py <file>``. The last
line printed is a JSON summary: target, runs, seconds, exec_per_s, exit code.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
TARGETS = (
    "sip_message",
    "sip_address",
    "sdp",
    "digest",
    "rtp",
    "rtcp",
    "h264",
    "amf0",
    "rtmp_chunks",
)
#: Larger than any seed; H264 inputs carry whole packet sequences.
MAX_LEN = {"h264": 16384, "sip_message": 8192, "sdp": 8192}
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)


def harness(target: str) -> Path:
    """The harness script of ``target``."""
    return FUZZ / f"fuzz_{target}.py"


def libfuzzer_command(
    target: str,
    *,
    work: Path,
    runs: int | None = None,
    seconds: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The command line that fuzzes ``target`` writing new inputs under ``work``."""
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(harness(target)),
        str(corpus),  # libFuzzer writes new inputs into the first directory only
        str(FUZZ / "corpus" / target),
        f"-artifact_prefix={work}/",
        f"-max_len={MAX_LEN.get(target, 4096)}",
        "-timeout=10",  # seconds per input: a hang is a finding
        "-rss_limit_mb=2048",  # bounded memory is part of every parser's contract
        "-print_final_stats=1",
    ]
    if runs is not None:
        command.append(f"-runs={runs}")
    if seconds is not None:
        command.append(f"-max_total_time={seconds}")
    return command + (extra or [])


def executed_runs(output: str) -> int | None:
    """Inputs executed, from libFuzzer's closing ``Done N runs in S second(s)`` line."""
    match = _DONE.search(output)
    return int(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns libFuzzer's exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", required=True, choices=TARGETS)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--runs", type=int, help="stop after this many inputs")
    budget.add_argument("--seconds", type=int, help="stop after this much wall time")
    parser.add_argument("--work", type=Path, help="default: artifacts/fuzz/<target>")
    parser.add_argument("extra", nargs="*", help="more libFuzzer flags, after --")
    args = parser.parse_args(argv)
    work = args.work or ROOT / "artifacts" / "fuzz" / args.target
    command = libfuzzer_command(
        args.target, work=work, runs=args.runs, seconds=args.seconds, extra=args.extra
    )
    print("$", " ".join(command), flush=True)
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    sys.stdout.write(output[-4000:])
    runs = executed_runs(output)
    summary = {
        "target": args.target,
        "runs": runs,
        "seconds": round(elapsed, 1),
        "exec_per_s": round(runs / elapsed) if runs and elapsed > 0 else None,
        "exit_code": result.returncode,
        "crash_files": sorted(
            p.name for p in work.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))
        ),
    }
    print(json.dumps(summary), flush=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
