"""CI slice of the coverage-guided fuzzing (docs/fuzzing.md): every harness, bounded runs.

Each harness under fuzz/ runs under libFuzzer (atheris) for a fixed number of
inputs, starting from its kept seed corpus fuzz/corpus/<target>/ (read
only: new inputs go to a temporary directory). The test asserts a clean exit
(no crash, hang or memory blow-up: any contract violation is an uncaught
exception, which libFuzzer reports as a crash) and, from libFuzzer's closing
``Done N runs`` line, that at least the requested inputs really ran. All
targets together stay well under a minute.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fuzz"))
from run import TARGETS, executed_runs, harness, libfuzzer_command  # noqa: E402

#: Inputs per target: the fast binary parsers get more, the text ones fewer.
RUNS = {
    "sip_message": 2000,
    "sip_address": 3000,
    "sdp": 2000,
    "digest": 2000,
    "rtp": 10000,
    "rtcp": 8000,
    "h264": 1500,
    "amf0": 2000,
    "rtmp_chunks": 2000,
}


def test_atheris_is_installed() -> None:
    # The test extras install it (pyproject.toml); a missing fuzzer must fail, not skip.
    assert importlib.util.find_spec("atheris") is not None


def test_every_target_has_a_harness_a_corpus_and_a_budget() -> None:
    assert set(RUNS) == set(TARGETS)
    for target in TARGETS:
        assert harness(target).is_file()
        seeds = list((ROOT / "fuzz" / "corpus" / target).iterdir())
        assert seeds, f"empty seed corpus for {target}"
    assert {p.stem.removeprefix("fuzz_") for p in (ROOT / "fuzz").glob("fuzz_*.py")} == set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_harness_runs_clean_for_a_bounded_number_of_inputs(target: str, tmp_path: Path) -> None:
    runs = RUNS[target]
    command = libfuzzer_command(
        target, work=tmp_path, runs=runs, extra=["-max_total_time=50", "-seed=1"]
    )
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=ROOT, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    executed = executed_runs(output)
    assert executed is not None, output[-3000:]
    assert executed >= runs, output[-3000:]
    findings = [
        p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))
    ]
    assert findings == []
