"""`--engine slurm` through submitit's local executor (real subprocess jobs, the same pickling,
signals and requeue path as on Slurm, without a Slurm cluster): the runs equal the runs trained
one after another bit for bit, a preempted job requeues itself and resumes from its checkpoint,
a killed job is submitted again and resumes, an application error fails in one line."""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import cluster_jobs as E
import numpy as np
import pytest
from netns import HERE, SRC

from cifarlens.errors import CifarlensError
from cifarlens.study.engines import slurm as S
from cifarlens.study.engines._worker import WorkerSetup
from cifarlens.study.engines.base import RunJob

pytest.importorskip("submitit", reason='submitit is not installed: pip install "cifarlens[slurm]"')

NAMES = ("baseline-s0", "variant-s0")


@pytest.fixture
def job_env(monkeypatch, tmp_path):
    """What submitit's local jobs inherit: this tree's code and the test helpers, one thread."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(HERE)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HOME", str(tmp_path))


def engine_for(fn=E.execute) -> S.SlurmEngine:
    engine = S.SlurmEngine(gpus_per_run=0, time="10", threads=1, cluster="local", fn=fn)
    engine.poll_s = 0.2
    return engine


def act_when_held(marker: Path, action, seen: dict) -> threading.Thread:
    """In a thread: once the held job sits after its epoch-1 checkpoint (60 s at most), act."""

    def watch() -> None:
        for _ in range(600):
            if marker.exists():
                seen["held"] = json.loads(marker.read_text())
                action(seen["held"]["pid"])
                return
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def check_against(reference: dict, study: Path, names=NAMES) -> None:
    for name in names:
        got = E.logits_of(study / "runs" / name)
        assert np.array_equal(got, reference[name]), f"{name}: logits differ from sequential"


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_slurm_local_jobs_equal_sequential_runs(job_env, tmp_path, engine_data, reference):
    study = tmp_path / "study"
    jobs = E.study_jobs(study, engine_data, names=NAMES)
    said: list[str] = []
    res = engine_for().run(jobs, said.append)
    assert [o.name for o in res.outcomes] == list(NAMES)  # in the jobs' order
    assert all((o.device, o.gpu, o.trained) == ("cpu", None, True) for o in res.outcomes)
    assert res.record == {"slurm_partition": None, "slurm_gpus_per_run": 0, "slurm_time": "10",
                          "submitit_version": __import__("submitit").__version__}
    check_against(reference, study)
    logs = study / "logs"
    assert len(list((logs / "slurm").glob("*/*_0_log.err"))) == 2  # submitit's, one job per run
    assert "started on" in (logs / "baseline-s0.log").read_text()
    assert not list((study / "runs").glob(".cifarlens-storage-check-*"))  # tokens removed
    assert "[0/2 runs] 2 to train and evaluate; time left known after the first" in said
    assert said[-1].startswith("[2/2 runs] ") and said[-1].endswith("; all runs done"), said
    # the same call again: every run finished, nothing is submitted
    said.clear()
    assert engine_for().run(jobs, said.append).outcomes == [] and said == []


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_slurm_preempted_job_requeues_itself_and_resumes(job_env, tmp_path, engine_data,
                                                         reference):
    """Slurm's signal before the time limit or on preemption (USR2, what submitit asks
    for), sent to the job after its epoch-1 checkpoint: checkpoint() resubmits the run, and
    the requeued job resumes from epoch 1 and ends equal to the uninterrupted run."""
    from submitit.local.local import LocalJobEnvironment

    study, markers = tmp_path / "study", tmp_path / "markers"
    markers.mkdir()
    fn = functools.partial(E.held_execute, hold=E.Hold(("baseline-s0",), str(markers)))
    seen: dict = {}
    usr = LocalJobEnvironment._usr_sig()
    act_when_held(markers / "baseline-s0.held", lambda pid: os.kill(pid, usr), seen)
    engine_for(fn).run(E.study_jobs(study, engine_data, names=NAMES), lambda m: None)
    assert seen["held"]["pid"]
    log = (study / "logs" / "baseline-s0.log").read_text()
    assert "requeued (time limit or preemption)" in log, log
    assert log.count("started on") == 2 and E.resumed_after(log) == [1], log
    assert E.resumed_after((study / "logs" / "variant-s0.log").read_text()) == []
    check_against(reference, study)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_slurm_job_killed_is_submitted_again_and_resumes(job_env, tmp_path, engine_data,
                                                         reference):
    study, markers = tmp_path / "study", tmp_path / "markers"
    markers.mkdir()
    fn = functools.partial(E.held_execute, hold=E.Hold(("baseline-s0",), str(markers)))
    said: list[str] = []
    seen: dict = {}
    act_when_held(markers / "baseline-s0.held", lambda pid: os.kill(pid, signal.SIGKILL), seen)
    engine_for(fn).run(E.study_jobs(study, engine_data, names=NAMES), said.append)
    assert E.resumed_after((study / "logs" / "baseline-s0.log").read_text()) == [1]
    again = [m for m in said if "ended without a result" in m]
    assert len(again) == 1 and again[0].startswith("Slurm: run baseline-s0 (job "), said
    check_against(reference, study)


@pytest.mark.slow  # starts Ray or submitit jobs that train
def test_slurm_application_error_fails_in_one_line(job_env, tmp_path, engine_data):
    study = tmp_path / "study"
    said: list[str] = []
    jobs = E.study_jobs(study, engine_data, names=("baseline-s0",), extra={"train_limit": 5})
    with pytest.raises(CifarlensError) as err:
        engine_for().run(jobs, said.append)
    assert str(err.value) == ("run baseline-s0 failed: --train-limit 5 is below one image per "
                              "class: the training split has 10 classes, so use at least 10")
    assert not [m for m in said if "submitted again" in m]  # not retried
    assert (study / "logs" / "baseline-s0.log").read_text().count("started on") == 1


def _job(tmp_path: Path, name: str = "baseline-s0") -> RunJob:
    return RunJob(name=name, arm="baseline", seed=0, run_dir=str(tmp_path / "runs" / name),
                  config={"seed": 0})


def test_checkpoint_resubmits_the_same_run(tmp_path):
    from submitit.helpers import Checkpointable, DelayedSubmission

    task = S.SlurmRun(E.execute, WorkerSetup(log_dir=str(tmp_path)))
    job = _job(tmp_path)
    assert isinstance(task, Checkpointable)
    again = task.checkpoint(job)
    assert isinstance(again, DelayedSubmission)
    assert again.function is task and again.args == (job,) and again.kwargs == {}
    assert "requeued" in (tmp_path / "baseline-s0.log").read_text()
    back = pickle.loads(pickle.dumps(again))  # what submitit writes for the requeued job
    assert back.args == (job,) and back.function.fn is E.execute


def test_without_slurm_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(CifarlensError, match=r"^no Slurm here \(sbatch is not on PATH\)"):
        S.SlurmEngine().run([_job(tmp_path)], lambda m: None)


def test_without_submitit_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(CifarlensError, match=r'^submitit is not installed here: pip install '
                                             r'"cifarlens\[slurm\]"$'):
        S.SlurmEngine(cluster="local").run([_job(tmp_path)], lambda m: None)


@pytest.mark.parametrize("text,minutes", [
    ("90", 90), (45, 45), ("1:30", 2), ("2:00:00", 120), ("0:00:59", 1), ("1-0", 1440),
    ("1-2:30", 1590), ("2-00:00:01", 2881)])
def test_slurm_time_formats(text, minutes):
    assert S.slurm_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "0", "0:00:00", "-5"])
def test_slurm_time_refused(text):
    with pytest.raises(CifarlensError, match="--slurm-time"):
        S.slurm_minutes(text)
