"""What every command shares: `cli.exit_now` ends a process without losing what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_exit_now_keeps_the_code_the_buffered_output_and_the_exit_handlers(tmp_path: Path):
    marker = tmp_path / "handler-ran"
    code = f"""
import atexit, sys
from autotune.cli import _common as cli
atexit.register(lambda: open({str(marker)!r}, "w").write("yes"))
print("x" * 100_000, end="")  # more than one buffer of a pipe
print("to stderr", file=sys.stderr, end="")
cli.exit_now(3)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 3
    assert done.stdout == "x" * 100_000
    assert done.stderr == "to stderr"
    assert marker.read_text() == "yes"
