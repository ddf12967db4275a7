"""--threads has an upper bound on every command that takes it (issue 20: 100000 spawned 32k
threads)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cifarlens.cli.args import MAX_THREADS


@pytest.mark.parametrize("cmd", [["train"], ["evaluate", "x"], ["study"]])
def test_threads_above_the_bound_is_one_line(cmd):
    r = subprocess.run([sys.executable, "-m", "cifarlens", *cmd, "--threads", "100000"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"at most {MAX_THREADS} threads" in lines[0]
