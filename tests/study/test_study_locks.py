"""A study owns its runs until its report is written, and its worker processes do not outlive
it (issue 20: an `evaluate` between a run's training and its analysis aborted the study; a
SIGKILLed `--jobs` study left its workers training)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cifarlens._io import RunLock, adopt_locks_of, lock_owner
from cifarlens.errors import CifarlensError
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.options import StudyOptions
from cifarlens.study.run import run_study


def test_a_lock_of_an_adopted_owner_is_granted_and_left_to_it(tmp_path, monkeypatch):
    import cifarlens._io as io_mod

    monkeypatch.setattr(io_mod, "_ADOPTED", set())
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("otherhost 4242\n")  # another host: never taken as stale
    with pytest.raises(CifarlensError, match="in use by otherhost 4242"):
        RunLock(run).acquire()
    adopt_locks_of("otherhost 4242")
    with RunLock(run):
        pass
    assert (run / ".lock").read_text() == "otherhost 4242\n"  # still the owner's
    assert lock_owner().endswith(f" {os.getpid()}")


def test_every_run_stays_locked_from_training_to_the_report(synth10, tmp_path, monkeypatch):
    """Between a run's training and its evaluation (and until the summary is written) another
    command on that run is refused, instead of slipping in and aborting the study."""
    import cifarlens.study.engines.base as base
    import cifarlens.study.engines.local as local

    monkeypatch.setattr(local, "OVERLAP", "off")
    seen: list[str] = []
    real_evaluate = base.ensure_evaluated

    def evaluate_after_an_intruder(run, splits, **kw):
        try:  # what a user's `cifarlens evaluate RUN` does first, from another process
            subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
                from cifarlens._io import RunLock
                RunLock({str(run.path)!r}).acquire()
                """)], check=True, capture_output=True, text=True, timeout=60)
            seen.append("entered")
        except subprocess.CalledProcessError as e:
            seen.append("refused" if "is in use by" in e.stderr else e.stderr)
        return real_evaluate(run, splits, **kw)

    monkeypatch.setattr(base, "ensure_evaluated", evaluate_after_an_intruder)
    run_study(tmp_path / "s", preset="smoke", seeds=1,
              options=StudyOptions(failures_top=2), engine=LocalEngine(progress=False),
                 overrides={"data_dir": str(synth10), "dataset": "cifar10", "device": "cpu",
                            "epochs": 1}, log=lambda m: None)
    assert seen == ["refused", "refused"]
    assert not list((tmp_path / "s").rglob(".lock"))  # all released at the end


WORKER = textwrap.dedent("""
    import os, sys, time
    from cifarlens.study.engines.processes import exit_with_parent
    exit_with_parent(poll_s=0.2, grace_s=5)
    print(os.getpid(), flush=True)
    time.sleep(120)  # "training": only the watchdog ends it early
""")
PARENT = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip(), flush=True)
    child.wait()
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_a_worker_stops_when_the_study_process_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER], stdout=subprocess.PIPE,
                              text=True)
    child = None
    try:
        child = int(parent.stdout.readline().strip())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # the study's process, killed without a word
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the worker kept running after its study was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
