"""A study's driver on a real Ray instance, for tests/study/test_engine_ray.py, which runs it in
a network namespace holding only `lo` (`unshare -n`), so nothing Ray starts is reachable from
outside this machine. Reads a JSON spec (argv[1]), writes a JSON result to spec["result"].

spec: study, data, temp (Ray's temp folder), result, study_mode (true: the whole study through
`run_study` with the Ray engine; false: the engine's `run` on the study's jobs), names (runs
to include, or null), hold (runs to hold after epoch 1), marker_dir, cluster ("local": the
engine's own instance; "nodes": a head without CPUs and two 1-CPU nodes; "hidden": a head and a
node that sees an empty folder where the study is), action (null, "sigkill": SIGKILL the held
worker, "remove-node": remove the held run's node), listen (record `ss -ltnp` inside and
outside the namespace once Ray is up), extra (settings for every run).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cluster_jobs as E

from cifarlens.errors import CifarlensError
from cifarlens.study.engines.ray import RayEngine
from cifarlens.study.options import StudyOptions
from cifarlens.study.run import run_study
from cifarlens.study.schema import to_json


def wait_for(path: Path, seconds: float = 45.0) -> dict | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.1)
    return None


def listening(outside: bool) -> list[str]:
    """`ss -ltnp` lines, here or (through the parent's network namespace) outside."""
    cmd = ["ss", "-Hltnp"]
    if outside:
        cmd = ["nsenter", "-t", str(os.getppid()), "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()


def act(spec: dict, result: dict, cluster) -> None:
    """In a thread: once the held run sits after its epoch-1 checkpoint, kill its worker or
    remove its node."""
    held = wait_for(Path(spec["marker_dir"]) / f"{spec['hold'][0]}.held")
    result["held"] = held
    if held is None:
        return
    if spec["action"] == "sigkill":
        os.kill(held["pid"], signal.SIGKILL)
        result["killed_pid"] = held["pid"]
    elif spec["action"] == "remove-node":
        node = next(n for n in cluster.worker_nodes if n.node_id == held["node"])
        cluster.remove_node(node, allow_graceful=False)
        result["removed_node"] = held["node"]


def hidden_node(spec: dict, address: str) -> subprocess.Popen:
    """A Ray node in its own mount namespace, where the study folder is an empty tmpfs: a
    worker machine that does not share the study's storage."""
    Path(spec["study"]).mkdir(parents=True, exist_ok=True)  # the mount point
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = (f"mount -t tmpfs tmpfs {spec['study']} && exec {ray_cli} start --address={address} "
           "--num-cpus=1 --block --disable-usage-stats")
    return subprocess.Popen(["unshare", "-m", "sh", "-c", cmd], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_cluster(spec: dict):
    from ray.cluster_utils import Cluster

    head_cpus = 0 if spec["cluster"] == "nodes" else 1
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "include_dashboard": False, "temp_dir": spec["temp"]})
    extra = None
    if spec["cluster"] == "nodes":
        for _ in range(2):
            cluster.add_node(num_cpus=1)
    else:
        extra = hidden_node(spec, cluster.address)
        for _ in range(300):  # the node joins within seconds; at most 30 s
            if sum(n["Alive"] for n in cluster.global_state.node_table()) >= 2:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the hidden node did not join in 30 s")
    return cluster, extra


def stop(extra: subprocess.Popen | None) -> None:
    if extra is None:
        return
    os.killpg(extra.pid, signal.SIGTERM)  # its own session: only what this script started
    try:
        extra.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(extra.pid, signal.SIGKILL)
        extra.wait(timeout=10)


def held_gone(spec: dict) -> bool | None:
    """Whether the held run's worker process is gone within 20 s (None: nothing was held)."""
    marker = Path(spec["marker_dir"]) / f"{(spec.get('hold') or ['-'])[0]}.held"
    if not marker.exists():
        return None
    pid = json.loads(marker.read_text())["pid"]
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def make_engine(spec: dict, fn):
    """The engine and, for a cluster, the cluster and any node started outside it."""
    if spec["cluster"] == "local":
        # nothing listens there: a bare ray.init() would try to join it and fail
        os.environ["RAY_ADDRESS"] = "127.0.0.1:9"
        return RayEngine(threads=1, temp_dir=spec["temp"], num_cpus=2, fn=fn), None, None
    token = Path(spec["temp"]) / "test-token"
    token.write_text("t" * 64)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    cluster, extra = start_cluster(spec)
    return RayEngine(cluster.address, threads=1, fn=fn), cluster, extra


def run(spec: dict, engine: RayEngine, said: list[str], result: dict) -> None:
    """The study (or its jobs) on the engine; what it returned into `result`."""

    def say(line: str) -> None:
        said.append(line)
        print(line, file=sys.stderr, flush=True)
        if spec.get("listen") and "inside" not in result and " done in " in line:
            result["inside"], result["outside"] = listening(False), listening(True)

    if spec.get("study_mode"):
        summary = run_study(spec["study"], preset="smoke", changes=E.CHANGE, seeds=2,
                            overrides=E.overrides(spec["data"]), options=StudyOptions(failures_top=4),
                            engine=engine, log=say)
        result["engine"] = to_json(summary.engine)
        return
    jobs = E.study_jobs(spec["study"], spec["data"], names=spec.get("names"),
                        extra=spec.get("extra"))
    res = engine.run(jobs, say)
    result["outcomes"] = [o.record() for o in res.outcomes]
    result["record"] = res.record


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # Ray's cluster address file (cluster_utils writes one) goes here, not into /tmp/ray
    os.environ["RAY_TMPDIR"] = spec["temp"]
    Path(spec["temp"], "ray").mkdir(parents=True, exist_ok=True)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    hold = spec.get("hold")
    fn = functools.partial(E.held_execute, hold=E.Hold(tuple(hold), spec["marker_dir"])) \
        if hold else E.execute
    said: list[str] = []
    result: dict = {"said": said}
    cluster = extra = None
    rc = 0
    try:
        engine, cluster, extra = make_engine(spec, fn)
        if spec.get("action"):
            threading.Thread(target=act, args=(spec, result, cluster), daemon=True).start()
        run(spec, engine, said, result)
    except CifarlensError as e:
        result["error"], rc = str(e), 1
    except KeyboardInterrupt:
        result["interrupted"], rc = True, 130
        result["held_gone"] = held_gone(spec)  # before this script stops any Ray node
    finally:
        stop(extra)
        if cluster is not None:
            cluster.shutdown()
        Path(spec["result"]).write_text(json.dumps(result))
    return rc


if __name__ == "__main__":
    sys.exit(main())
