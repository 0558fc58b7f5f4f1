"""scripts/bench_blocks.py runs the three sides on real blocks and prints a row per block."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "bench_blocks.py"


def bench_blocks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_prints_both_blocks_times_and_gains() -> None:
    done = bench_blocks("--widths", "4", "--repeats", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^(1 -> 4 ch, 28x28|4 -> 8 ch, 14x14) +([\d.]+) +([\d.]+) +([\d.]+) "
                      r"+([\d.]+)x +([\d.]+)x$", done.stdout, re.M)
    assert [row[0] for row in rows] == ["1 -> 4 ch, 28x28", "4 -> 8 ch, 14x14"], done.stdout
    assert all(float(value) > 0 for row in rows for value in row[1:])
    assert "threads: 1" in done.stdout


def test_a_bad_width_is_one_line_and_exit_2() -> None:
    done = bench_blocks("--widths", "16,x")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "bench_blocks.py: error: --widths: expected comma-separated whole numbers, got '16,x'")
