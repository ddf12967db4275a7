"""`--engine ray` on a real local Ray instance or cluster, every Ray process inside a network
namespace that holds only `lo` (tests/study/ray_driver.py runs there): the study equals the runs
trained one after another bit for bit, a SIGKILLed worker and a removed node cost one epoch,
a node that cannot see the study folder is refused in one line, and Ctrl-C leaves every run
resumable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine_jobs as E
import numpy as np
import pytest
from netns import child_env, driver_cmd, run_driver

from cifarlens.errors import CifarlensError
from cifarlens.study.engines import ray as R
from cifarlens.study.engines._worker import make_probe, remove_probes, unseen

pytest.importorskip("ray", reason='Ray is not installed: pip install "cifarlens[ray]"')


def spec_for(tmp: Path, data: Path, **over) -> dict:
    temp = tmp / "ray"  # short: Ray's socket paths under it must stay under 107 bytes
    temp.mkdir(exist_ok=True)
    (tmp / "markers").mkdir(exist_ok=True)
    spec = {"study": str(tmp / "study"), "data": str(data), "temp": str(temp),
            "result": str(tmp / f"result-{len(list(tmp.glob('result-*')))}.json"),
            "names": None, "hold": None, "marker_dir": str(tmp / "markers"),
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
def short_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("r")


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_study_equals_sequential_runs_and_listens_on_loopback_only(
        netns, short_tmp, engine_data, reference):
    spec = spec_for(short_tmp, engine_data, listen=True)
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 0, out[-3000:]
    assert [o["name"] for o in result["outcomes"]] == list(reference)  # in the jobs' order
    assert sorted(result["order"]) == sorted(reference)  # on_done once per run
    for o in result["outcomes"]:
        assert (o["host"], o["device"], o["gpu"], o["resumed_from"]) == \
            (os.uname().nodename, "cpu", None, None)
    assert_equal_to_reference(Path(spec["study"]), reference)
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
    assert not list(Path(spec["study"], "runs").glob(".cifarlens-storage-check-*"))
    assert not list(engine_data.glob(".cifarlens-storage-check-*"))
    assert "Ray: 1 node(s) see the study folder and the data folder" in out


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_worker_sigkilled_mid_run_is_retried_and_resumes(netns, short_tmp, engine_data,
                                                             reference):
    names = ["baseline-s0", "variant-s0"]
    spec = spec_for(short_tmp, engine_data, names=names, hold=["baseline-s0"], action="sigkill")
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 0, out[-3000:]
    assert result["killed_pid"] == result["held"]["pid"]
    by_name = {o["name"]: o for o in result["outcomes"]}
    assert by_name["baseline-s0"]["resumed_from"] == 1
    assert all(by_name[n]["resumed_from"] is None for n in by_name if n != "baseline-s0")
    log = run_log(Path(spec["study"]), "baseline-s0")
    assert log.count("started on") == 2, log
    assert re.search(r"resuming .* after epoch 1 ", log), log
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
    by_name = {o["name"]: o for o in result["outcomes"]}
    assert by_name["baseline-s0"]["resumed_from"] == 1
    log = run_log(Path(spec["study"]), "baseline-s0")
    nodes = re.findall(r"started on .*\(Ray node (\w+)\)", log)
    assert len(nodes) == 2 and nodes[0] != nodes[1], log  # the retry ran on the other node
    assert_equal_to_reference(Path(spec["study"]), reference, names)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_ray_refuses_a_node_that_cannot_see_the_study_folder(netns, short_tmp, engine_data):
    spec = spec_for(short_tmp, engine_data, names=["baseline-s0"], cluster="hidden")
    rc, result, out = run_driver(short_tmp, spec)
    assert rc == 1, out[-3000:]
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
    assert re.search(r"Ray: interrupted; stopping [12] run\(s\)", out), out[-3000:]
    assert result["held_gone"] is True  # killed by the cluster, before the driver stopped it
    with pytest.raises(ProcessLookupError):
        os.kill(held["pid"], 0)
    assert not (Path(spec["study"]) / "runs" / "baseline-s0" / "done.json").exists()
    # the same command again: it resumes, and every run equals the uninterrupted one
    again = spec_for(short_tmp, engine_data, names=names)
    rc, result, out = run_driver(short_tmp, again)
    assert rc == 0, out[-3000:]
    assert {o["name"]: o["resumed_from"] for o in result["outcomes"]}["baseline-s0"] == 1
    assert_equal_to_reference(Path(spec["study"]), reference, names)


# --- without a Ray instance -----------------------------------------------------------------


def test_without_ray_installed_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(CifarlensError, match=r'^Ray is not installed here: pip install '
                                             r'"cifarlens\[ray\]"$'):
        R.RayEngine(fn=E.execute).run([E.RunJob("a", "/x", {}, 1)], lambda o: None)


class _Nodes:
    """What `ray.nodes()` reports, for the placement rules (pure: no Ray needed)."""

    def __init__(self, *resources: dict) -> None:
        self.resources = resources

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": r} for r in self.resources]


def _job(name: str, threads: int = 1, device: str = "cpu") -> E.RunJob:
    return E.RunJob(name, f"/s/runs/{name}", {"device": device}, threads)


def test_placement_gpu_per_run_threads_as_cpus_and_refusals():
    engine = R.RayEngine(fn=E.execute, max_retries=2)
    cpu = engine._placement(_Nodes({"CPU": 4}, {"CPU": 2}), [_job("a", 3), _job("b", 1, "auto")])
    assert cpu["a"] == {"name": "cifarlens a", "max_retries": 2, "retry_exceptions": False,
                        "num_cpus": 3}
    assert cpu["b"]["num_cpus"] == 1 and "num_gpus" not in cpu["b"]
    gpu = engine._placement(_Nodes({"CPU": 8, "GPU": 2}), [_job("a", 4, "auto"), _job("c", 2)])
    assert (gpu["a"]["num_gpus"], gpu["a"]["num_cpus"]) == (1, 1)
    assert "num_gpus" not in gpu["c"] and gpu["c"]["num_cpus"] == 2  # --device cpu stays put
    with pytest.raises(CifarlensError, match=r"run a needs 5 CPUs .* largest Ray node has 4; "
                                             r"use --threads 4 or fewer$"):
        engine._placement(_Nodes({"CPU": 4}, {"CPU": 2}), [_job("a", 5)])
    with pytest.raises(CifarlensError, match="run a asks for --device cuda, but the Ray cluster "
                                             "has no GPU"):
        engine._placement(_Nodes({"CPU": 4}), [_job("a", 1, "cuda")])
    pinned = R.RayEngine(fn=E.execute, accelerator_type="H100")
    nodes = _Nodes({"CPU": 8, "GPU": 1, "accelerator_type:H100": 1},
                   {"CPU": 8, "GPU": 1, "accelerator_type:A100": 1})
    assert pinned._placement(nodes, [_job("a", 1, "auto")])["a"]["accelerator_type"] == "H100"
    with pytest.raises(CifarlensError, match=r"no Ray node has accelerator type 'H200' "
                                             r"\(the cluster has: A100, H100\)"):
        R.RayEngine(fn=E.execute, accelerator_type="H200")._placement(nodes, [_job("a")])


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
