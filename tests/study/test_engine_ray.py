"""`--engine ray` on a real local Ray instance or cluster, every Ray process inside a network
namespace that holds only `lo` (tests/study/ray_driver.py runs there): a whole study through
`run_study` equals the runs trained one after another bit for bit and records where each ran,
a SIGKILLed worker and a removed node cost one epoch, a node that cannot see the study folder
is refused in one line, and Ctrl-C leaves every run resumable."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cluster_jobs as E
import numpy as np
import pytest
from netns import child_env, driver_cmd, run_driver

from cifarlens.errors import CifarlensError
from cifarlens.study.engines import ray as R
from cifarlens.study.engines._worker import make_probe, remove_probes, unseen
from cifarlens.study.engines.base import RunJob

pytest.importorskip("ray", reason='Ray is not installed: pip install "cifarlens[ray]"')


def spec_for(tmp: Path, data: Path, **over) -> dict:
    temp = tmp / "ray"  # short: Ray's socket paths under it must stay under 107 bytes
    temp.mkdir(exist_ok=True)
    (tmp / "markers").mkdir(exist_ok=True)
    spec = {"study": str(tmp / "study"), "data": str(data), "temp": str(temp),
            "result": str(tmp / f"result-{len(list(tmp.glob('result-*')))}.json"),
            "study_mode": False, "names": None, "hold": None, "marker_dir": str(tmp / "markers"),
            "cluster": "local", "action": None, "listen": False}
    spec.update(over)
    return spec


def assert_equal_to_reference(study: Path, reference: dict, names=None) -> None:
    for name, logits in reference.items():
        if names is None or name in names:
            got = E.logits_of(study / "runs" / name)
            assert np.array_equal(got, logits), f"{name}: logits differ from the sequential run"


def run_log(study: Path, name: str) -> str:
    return (study / "logs" / f"{name}.log").read_text()


def _pids(lines: list[str]) -> set[int]:
    return {int(p) for line in lines for p in re.findall(r"pid=(\d+)", line)}


@pytest.fixture
def short_tmp(tmp_path_factory) -> Iterator[Path]:
    """The test's folder, unless it is too deep for Ray's AF_UNIX sockets (107 bytes, about 60
    of them Ray's own below the folder): then a short one in the system's temp folder (e.g.
    under pytest-xdist, whose workers add popen-gwN), removed after the test."""
    tmp = tmp_path_factory.mktemp("r")
    if len(str(tmp)) <= 40:
        yield tmp
        return
    short = Path(tempfile.mkdtemp(prefix="clr"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_study_equals_sequential_runs_and_listens_on_loopback_only(
        netns, short_tmp, engine_data, reference):
    """The whole study (run_study with RayEngine, 2 CPUs, 1 thread per run): every run's test
    logits equal the runs trained one after another; summary.json and study.json name the
    engine and where each run ran; Ray listened on loopback only, inside the namespace."""
    spec = spec_for(short_tmp, engine_data, study_mode=True, listen=True)
    rc, result, out = run_driver(short_tmp, spec, timeout=240)
    assert rc == 0, out[-3000:]
    study = Path(spec["study"])
    assert_equal_to_reference(study, reference)
    engine = result["engine"]
    assert engine["name"] == "ray" and engine["ray_address"] == "local"
    assert engine["ray_version"] == __import__("ray").__version__
    assert engine["slurm_partition"] is None and engine["submitit_version"] is None
    assert sorted(engine["runs"]) == sorted(reference)
    for r in engine["runs"].values():
        assert (r["host"], r["device"], r["gpu"], r["trained"]) == \
            (os.uname().nodename, "cpu", None, True)
        assert r["train_s"] > 0 and r["analysis_s"] > 0
    assert json.loads((study / "summary.json").read_text())["engine"] == engine
    assert json.loads((study / "study.json").read_text())["engine"] == "ray"
    # progress: runs done of all with the time left, as the local engine says it
    said = result["said"]
    assert "[0/4 runs] 4 to train and evaluate; time left known after the first" in said
    done = [m for m in said if re.match(r"^\[\d/4 runs\] \w+ seed \d done in ", m)]
    assert len(done) == 4 and done[-1].endswith("; all runs done"), said
    assert all("left, about" in m for m in done[:-1]), done
    # Ray's own processes listened inside the namespace, on loopback only, and none of them
    # shows in the machine's listening sockets outside it.
    inside, outside = result["inside"], result["outside"]
    assert any("gcs_server" in line for line in inside), inside
    for line in inside:
        local = line.split()[3]
        assert re.match(r"^(127\.|\[::ffff:127\.|\[::1\]|::1)", local), line
    assert not _pids(inside) & _pids(outside), (inside, outside)
    # the engine's own token, in its temp folder, and nothing in ~/.ray or left behind
    assert not (short_tmp / ".ray").exists()
    assert not list((study / "runs").glob(".cifarlens-storage-check-*"))
    assert not list(engine_data.glob(".cifarlens-storage-check-*"))
    assert "Ray: 1 node(s) see the study folder and the data folder" in said
    for name in reference:  # each run's log, in the study folder
        assert "started on" in run_log(study, name)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_worker_sigkilled_mid_run_is_retried_and_resumes(netns, short_tmp, engine_data,
                                                             reference):
    names = ["baseline-s0", "variant-s0"]
    spec = spec_for(short_tmp, engine_data, names=names, hold=["baseline-s0"], action="sigkill")
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 0, out[-3000:]
    assert result["killed_pid"] == result["held"]["pid"]
    assert sorted(o["name"] for o in result["outcomes"]) == names
    log = run_log(Path(spec["study"]), "baseline-s0")
    assert log.count("started on") == 2, log
    assert E.resumed_after(log) == [1], log
    assert E.resumed_after(run_log(Path(spec["study"]), "variant-s0")) == []
    assert_equal_to_reference(Path(spec["study"]), reference, names)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_node_removed_mid_run_resumes_on_the_other_node(netns, short_tmp, engine_data,
                                                            reference):
    names = ["baseline-s0", "variant-s0"]
    spec = spec_for(short_tmp, engine_data, names=names, hold=["baseline-s0"],
                    cluster="nodes", action="remove-node")
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 0, out[-3000:]
    assert result["removed_node"] == result["held"]["node"]
    log = run_log(Path(spec["study"]), "baseline-s0")
    assert E.resumed_after(log) == [1], log
    nodes = re.findall(r"started on .*\(Ray node (\w+)\)", log)
    assert len(nodes) == 2 and nodes[0] != nodes[1], log  # the retry ran on the other node
    assert_equal_to_reference(Path(spec["study"]), reference, names)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_refuses_a_node_that_cannot_see_the_study_folder(netns, short_tmp, engine_data):
    spec = spec_for(short_tmp, engine_data, names=["baseline-s0"], cluster="hidden")
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 1 and "error" in result, out[-3000:]
    err = result["error"]
    assert "\n" not in err
    assert f"cannot see {spec['study']}/runs: no such folder" in err, err
    assert err.startswith("Ray node ")
    assert not list(Path(spec["study"], "runs").iterdir())  # refused before any run started


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_application_error_fails_the_study_in_one_line_without_retry(netns, short_tmp,
                                                                        engine_data):
    spec = spec_for(short_tmp, engine_data, names=["baseline-s0"], extra={"train_limit": 5})
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 1, out[-3000:]
    assert result["error"] == ("run baseline-s0 failed: --train-limit 5 is below one image per "
                               "class: the training split has 10 classes, so use at least 10")
    assert run_log(Path(spec["study"]), "baseline-s0").count("started on") == 1  # not retried


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_ctrl_c_cancels_the_runs_and_a_rerun_resumes(netns, short_tmp, engine_data,
                                                         reference):
    """On a cluster that stays up (the study connects to it): SIGINT to the study's process,
    its Ray job ends and the cluster kills the run's worker; the same command resumes."""
    names = ["baseline-s0", "variant-s0"]
    spec = spec_for(short_tmp, engine_data, names=names, hold=["baseline-s0"], cluster="nodes")
    spec_path = short_tmp / "spec-ctrl-c.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen(driver_cmd("ray_driver.py", spec_path), env=child_env(short_tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        marker = short_tmp / "markers" / "baseline-s0.held"
        for _ in range(900):  # at most 90 s for Ray to start and the run to reach epoch 1
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=30)[0][-3000:]
        held = json.loads(marker.read_text())
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, out[-3000:]
    result = json.loads(Path(spec["result"]).read_text())
    assert result["interrupted"] is True
    assert any(re.match(r"Ray: interrupted; stopping [12] run\(s\)", m) for m in
               result["said"]), out[-3000:]
    assert result["held_gone"] is True  # killed by the cluster, before the driver stopped it
    with pytest.raises(ProcessLookupError):
        os.kill(held["pid"], 0)
    assert not (Path(spec["study"]) / "runs" / "baseline-s0" / "done.json").exists()
    # the same command again: it resumes, and every run equals the uninterrupted one
    again = spec_for(short_tmp, engine_data, names=names)
    rc, result, out = run_driver(short_tmp, again)
    assert rc == 0, out[-3000:]
    assert E.resumed_after(run_log(Path(spec["study"]), "baseline-s0")) == [1]
    assert_equal_to_reference(Path(spec["study"]), reference, names)


# --- without a Ray instance -----------------------------------------------------------------


def test_without_ray_installed_the_engine_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    (job,) = E.study_jobs(tmp_path / "study", tmp_path / "data", seeds=1, names=("baseline-s0",))
    with pytest.raises(CifarlensError, match=r'^Ray is not installed here: pip install '
                                             r'"cifarlens\[ray\]"$'):
        R.RayEngine().run([job], lambda m: None)


class _Nodes:
    """What `ray.nodes()` reports, for the placement rules (pure: no Ray needed)."""

    def __init__(self, *resources: dict) -> None:
        self.resources = resources

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": r} for r in self.resources]


def _job(name: str, device: str = "cpu") -> RunJob:
    return RunJob(name=name, arm="baseline", seed=0, run_dir=f"/s/runs/{name}",
                  config={"device": device})


def test_placement_gpu_per_run_threads_as_cpus_and_refusals():
    engine = R.RayEngine(max_retries=2)
    cpu = engine._placement(_Nodes({"CPU": 4}, {"CPU": 2}), [_job("a"), _job("b", "auto")], 3)
    assert cpu["a"] == {"name": "cifarlens a", "max_retries": 2, "retry_exceptions": False,
                        "num_cpus": 3}
    assert cpu["b"]["num_cpus"] == 3 and "num_gpus" not in cpu["b"]
    gpu = engine._placement(_Nodes({"CPU": 8, "GPU": 2}), [_job("a", "auto"), _job("c")], 2)
    assert (gpu["a"]["num_gpus"], gpu["a"]["num_cpus"]) == (1, 1)
    assert "num_gpus" not in gpu["c"] and gpu["c"]["num_cpus"] == 2  # --device cpu stays put
    with pytest.raises(CifarlensError, match=r"run a needs 5 CPUs .* largest Ray node has 4; "
                                             r"use --threads 4 or fewer$"):
        engine._placement(_Nodes({"CPU": 4}, {"CPU": 2}), [_job("a")], 5)
    with pytest.raises(CifarlensError, match="run a asks for --device cuda, but the Ray cluster "
                                             "has no GPU"):
        engine._placement(_Nodes({"CPU": 4}), [_job("a", "cuda")], 1)
    pinned = R.RayEngine(accelerator_type="H100")
    nodes = _Nodes({"CPU": 8, "GPU": 1, "accelerator_type:H100": 1},
                   {"CPU": 8, "GPU": 1, "accelerator_type:A100": 1})
    assert pinned._placement(nodes, [_job("a", "auto")], 1)["a"]["accelerator_type"] == "H100"
    with pytest.raises(CifarlensError, match=r"no Ray node has accelerator type 'H200' "
                                             r"\(the cluster has: A100, H100\)"):
        R.RayEngine(accelerator_type="H200")._placement(nodes, [_job("a")], 1)


def test_storage_probes_tell_the_same_folder_from_another(tmp_path):
    study, other = tmp_path / "study", tmp_path / "other"
    study.mkdir()
    other.mkdir()
    probe = make_probe(study, must_write=True)
    assert unseen([probe], tries=1) is None
    moved = type(probe)(str(other), probe.token_name, probe.token)  # same path, other storage
    (other / probe.token_name).write_text("another token")
    assert unseen([moved], tries=1) == f"{other}: another folder than the study's machine sees"
    gone = type(probe)(str(tmp_path / "missing"), probe.token_name, probe.token)
    assert unseen([gone], tries=1) == f"{tmp_path / 'missing'}: no such folder"
    remove_probes([probe])
    assert not list(study.iterdir())


def test_read_only_data_folder_is_checked_by_its_listing(tmp_path, engine_data, monkeypatch):
    import errno
    import shutil

    from cifarlens.study.engines import _worker

    data = tmp_path / "data"
    shutil.copytree(engine_data, data)

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(_worker, "write_text", read_only)  # a read-only mount, as root sees it
    probe = make_probe(data)
    assert probe.token_name is None
    assert dict(probe.listing)["cifar-10-batches-py/data_batch_1"] > 0
    assert unseen([probe], tries=1) is None
    (data / "cifar-10-batches-py" / "extra").write_bytes(b"x")
    assert unseen([probe], tries=1) == f"{data}: other files than the study's machine sees"
    with pytest.raises(CifarlensError, match=f"^cannot write into {data}: Read-only file system$"):
        make_probe(data, must_write=True)


def test_a_temp_folder_too_long_for_rays_sockets_is_one_line(monkeypatch, tmp_path):
    """Ray's AF_UNIX sockets go under its temp folder (107 bytes at most): a long $TMPDIR, as
    on many clusters, is refused up front with what to do, and nothing is left behind."""
    deep = tmp_path / ("x" * 60)
    deep.mkdir()
    monkeypatch.setattr(R.tempfile, "tempdir", str(deep))
    with pytest.raises(CifarlensError, match=r"^the temp folder .* is too long a path for Ray's "
                                             r"sockets \(at most \d+ bytes\); set TMPDIR to a "
                                             r"shorter folder, e\.g\. TMPDIR=/tmp$"):
        R._own_temp()
    assert not list(deep.iterdir())
    monkeypatch.setattr(R.tempfile, "tempdir", "/tmp")
    short = R._own_temp()
    try:
        assert short.parent == Path("/tmp") and short.name.startswith("clray-")
    finally:
        short.rmdir()
