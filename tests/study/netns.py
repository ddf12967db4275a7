"""Running the engine tests' child processes: this tree's code and the helpers on PYTHONPATH,
one thread, HOME inside the test's folder, and Ray's drivers inside a network namespace that
holds only `lo` (Ray 2.x binds every interface)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def child_env(tmp: Path) -> dict[str, str]:
    """The environment of every process a test starts: this tree's code and the test helpers,
    one thread, and HOME in the test's folder (so nothing lands in the user's ~/.ray)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(SRC), str(HERE)]), OMP_NUM_THREADS="1",
               HOME=str(tmp), PYTHONUNBUFFERED="1")
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    return env


def netns_refusal() -> str | None:
    try:
        proc = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run unshare: {e}"
    if proc.returncode != 0:
        return f"no network namespace here (unshare -n: {proc.stderr.strip()[:200]})"
    return None


def driver_cmd(script: str, spec_path: Path) -> list[str]:
    """The driver in a fresh network namespace with only `lo`, up; `exec` keeps its pid the
    one the test started (so a SIGINT reaches the driver itself)."""
    inner = f"ip link set lo up && exec {sys.executable} {HERE / script} {spec_path}"
    return ["unshare", "-n", "sh", "-c", inner]


def run_driver(tmp: Path, spec: dict, timeout: float = 150) -> tuple[int, dict, str]:
    """Run ray_driver.py on `spec` (in its namespace); return its exit code, result, output."""
    spec_path = tmp / f"spec-{len(list(tmp.glob('spec-*')))}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(driver_cmd("ray_driver.py", spec_path), env=child_env(tmp),
                          capture_output=True, text=True, timeout=timeout)
    result = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).exists() \
        else {}
    return proc.returncode, result, proc.stdout + proc.stderr
