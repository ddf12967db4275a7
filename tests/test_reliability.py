"""Reliability and security: faults survived, bad input refused, nothing lost or executed.

Each test is named after the promise it guards (docs/reliability.md lists them all, with the
tests in other files that already cover part of them). Runs use generated CIFAR-10-format data
and a tiny training (100 images, 2 steps per epoch, 3 epochs) so that crashes land in
checkpoint writes often and the file stays fast on two shared cores.

Long random crash trials: CIFARLENS_CRASH_TRIALS=N (default 2) and, to replay one,
CIFARLENS_CRASH_SEED=S (the seed is printed in every failure message).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from summaries import make_summary

import cifarlens._io as cio
import cifarlens.training.loop as T
from cifarlens._io import RunLock, write_json
from cifarlens.cli import main
from cifarlens.errors import CifarlensError
from cifarlens.figures.style import safe_text
from cifarlens.runs import (
    epoch_checkpoints,
    latest_good_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
    sha256,
)
from cifarlens.study.schema import summary_from_json
from cifarlens.training.config import TrainConfig, make_config
from cifarlens.training.loop import lr_factor, train

CRASH_TRIALS = int(os.environ.get("CIFARLENS_CRASH_TRIALS", "2"))
CRASH_SEED = int(os.environ.get("CIFARLENS_CRASH_SEED") or random.SystemRandom().randrange(10**6))
EPOCHS = 3
TRAIN_ARGS = ["--dataset", "cifar10", "--preset", "smoke", "--device", "cpu", "--precision",
              "fp32", "--train-limit", "100", "--batch-size", "50", "--epochs", str(EPOCHS),
              "--no-progress"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# One thread in this file's processes and in-process runs alike: bit-identical results between
# them, and on two shared, busy cores one thread is also the faster choice.
THREADS = 1

# `python -c KILL_BOOT train ...`: the CLI, SIGKILLed just before or just after the rename that
# puts one named file in place (CIFARLENS_TEST_KILL=before:NAME or after:NAME). Every artifact is
# written by _io.atomic_write (temp file, fsync, os.replace), so these are the exact moments
# between "old file" and "new file" and between a checkpoint and its checksum.
KILL_BOOT = r"""
import os, signal, sys
when, name = os.environ["CIFARLENS_TEST_KILL"].split(":", 1)
_replace = os.replace
def replace(src, dst, *a, **k):
    hit = os.path.basename(os.fspath(dst)) == name
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    _replace(src, dst, *a, **k)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from cifarlens.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module", autouse=True)
def threads_arg():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    """Subprocesses use the same thread count as in-process runs, so results are bit-identical."""
    env = dict(os.environ)
    n = str(THREADS)
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, PYTHONUNBUFFERED="1")
    env.pop("CIFARLENS_TEST_KILL", None)
    return env


def _train_argv(data: Path, run: Path, resume: bool = False) -> list[str]:
    return ["train", "--data-dir", str(data), *TRAIN_ARGS, "--out", str(run)] + \
        (["--resume"] if resume else [])


def _cmd(argv: list[str], kill: str | None = None) -> tuple[list[str], dict[str, str]]:
    env = _env()
    if kill is None:
        return [sys.executable, "-m", "cifarlens", *argv], env
    env["CIFARLENS_TEST_KILL"] = kill
    return [sys.executable, "-c", KILL_BOOT, *argv], env


def _run(argv: list[str], kill: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd, env = _cmd(argv, kill)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _main(argv: list[str]) -> tuple[int, str]:
    """The CLI in this process (no interpreter start-up to pay): exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def _cfg(data: Path, **kw) -> TrainConfig:
    """The in-process twin of TRAIN_ARGS (same training settings, so runs can be compared)."""
    base = dict(dataset="cifar10", data_dir=str(data), device="cpu", precision="fp32",
                train_limit=100, batch_size=50, epochs=EPOCHS)
    return make_config("smoke", **{**base, **kw})


def _no_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in rows]


def _assert_equal_state(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_equal_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(run: Path, ref: Path) -> None:
    """A finished run equals the uninterrupted reference: weights, optimizer, metrics."""
    assert (run / "done.json").is_file() and not (run / ".lock").exists()
    assert [p.name for p in epoch_checkpoints(run)] == ["ckpt-e0003.pt", "ckpt-e0002.pt"]
    a, b = load_checkpoint(epoch_checkpoints(ref)[0]), load_checkpoint(epoch_checkpoints(run)[0])
    for key in ("model", "optimizer", "scheduler"):
        _assert_equal_state(a[key], b[key], key)
    assert _no_time(a["history"]) == _no_time(b["history"])
    assert (a["best_val_acc"], a["best_epoch"]) == (b["best_val_acc"], b["best_epoch"])
    best_a, best_b = (load_checkpoint(r / "checkpoints" / "best.pt") for r in (ref, run))
    _assert_equal_state(best_a["model"], best_b["model"], "best.model")
    assert best_a["epoch"] == best_b["epoch"]
    rows = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (ref, run)]
    assert _no_time(rows[0]) == _no_time(rows[1]) and len(rows[1]) == EPOCHS
    done = [json.loads((r / "done.json").read_text()) for r in (ref, run)]
    assert [(d["best_epoch"], d["best_val_acc"], _no_time([d["final"]])) for d in done[:1]] == \
        [(d["best_epoch"], d["best_val_acc"], _no_time([d["final"]])) for d in done[1:]]
    # temp files of killed checkpoint writes are cleaned up (they are as big as a checkpoint)
    assert not list((run / "checkpoints").glob(".*.tmp"))


def assert_nothing_torn(run: Path) -> None:
    """After a kill, every file under its final name is complete (temp files may remain)."""
    for name in ("config.json", "norm.json", "done.json"):
        if (run / name).exists():
            json.loads((run / name).read_text())
    if (run / "metrics.jsonl").exists():
        [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    if (run / "split.npz").exists():
        with np.load(run / "split.npz") as z:
            assert {"train", "val", "train_used"} <= set(z.files)
    if (run / "curves.png").exists():
        assert (run / "curves.png").read_bytes().endswith(b"IEND\xaeB`\x82")
    for p in epoch_checkpoints(run):  # with a checksum, a checkpoint must load
        if p.with_name(p.name + ".sha256").exists():
            load_checkpoint(p)


def _resume_point(run: Path) -> int | None:
    found = latest_good_checkpoint(run)
    return found[1]["epoch"] if found else None


def _check_resume_message(err: str, run: Path, expected: int | None,
                          finished: bool = False) -> None:
    if finished:  # killed after done.json was written: the run is complete, nothing to resume
        assert f"{run} is already finished" in err, err
    elif expected is None:
        assert "resuming" not in err, err
    else:
        assert f"resuming {run} after epoch {expected} " in err, err


@pytest.fixture(scope="module")
def reference(synth10, tmp_path_factory) -> Path:
    """The uninterrupted run every crashed-and-resumed run must equal (normal exit: no lock).
    Trained through the CLI in this process, which gives the same bits as a subprocess."""
    run = tmp_path_factory.mktemp("reliability") / "reference"
    t0 = time.monotonic()
    rc, err = _main(_train_argv(synth10, run))
    (run.parent / "wall_s").write_text(str(time.monotonic() - t0))
    assert rc == 0, err
    assert (run / "done.json").is_file() and not (run / ".lock").exists()
    return run


# --- 1. crash safety -------------------------------------------------------------------------------


def test_sigkill_at_each_step_of_a_checkpoint_write_resumes_identically(reference, synth10, tmp_path):
    run = tmp_path / "run"
    # 1) epoch 1: best.pt renamed into place, its checksum not yet written; no epoch checkpoint
    r = _run(_train_argv(synth10, run), kill="after:best.pt")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert epoch_checkpoints(run) == [] and (run / ".lock").exists()  # a stale lock is left
    with pytest.raises(CifarlensError, match=r"best\.pt has no checksum file: incomplete write"):
        load_model(run, "best")
    assert_nothing_torn(run)
    # 2) resumed (starts over: nothing complete), killed with epoch 2's checkpoint in a temp file
    r = _run(_train_argv(synth10, run, resume=True), kill="before:ckpt-e0002.pt")
    assert r.returncode == -signal.SIGKILL, r.stderr
    _check_resume_message(r.stderr, run, None)
    assert _resume_point(run) == 1 and not (run / "checkpoints" / "ckpt-e0002.pt").exists()
    assert list((run / "checkpoints").glob(".ckpt-e0002.pt.*.tmp"))  # the cut-short write
    assert_nothing_torn(run)
    # 3) resumed after epoch 1, killed after the LAST checkpoint and its checksum are complete but
    #    before metrics.jsonl, pruning and done.json
    r = _run(_train_argv(synth10, run, resume=True), kill="after:ckpt-e0003.pt.sha256")
    assert r.returncode == -signal.SIGKILL, r.stderr
    _check_resume_message(r.stderr, run, 1)
    assert _resume_point(run) == 3 and not (run / "done.json").exists()
    assert_nothing_torn(run)
    # 4) resumed after epoch 3: nothing left to train, the run is finished and whole
    rc, err = _main(_train_argv(synth10, run, resume=True))
    assert rc == 0, err
    _check_resume_message(err, run, 3)
    assert_same_run(run, reference)


def _in_checkpoint_write(ckpt_dir: Path) -> bool:
    try:
        names = set(os.listdir(ckpt_dir))
    except OSError:
        return False
    return any(n.endswith(".tmp") for n in names) or \
        any(n.endswith(".pt") and n + ".sha256" not in names for n in names)


def _start_and_kill(argv: list[str], run: Path, rng: random.Random, mode: str, wall: float
                    ) -> tuple[bool, str]:
    """Start the CLI and, once it holds its lock (imports done), SIGKILL it at a random moment
    (mode "delay") or while its k-th write of a checkpoint file is under way (mode "write"; k
    random over best.pt and ckpt-eN.pt of every epoch; at the latest after `wall` seconds)."""
    cmd, env = _cmd(argv)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while p.poll() is None and not (run / ".lock").exists():
            time.sleep(0.002)
        t0 = time.monotonic()
        if mode == "delay":
            delay = rng.uniform(0.0, 1.0) * wall
            how = f"{delay:.2f}s after taking the lock"
            while p.poll() is None and time.monotonic() - t0 < delay:
                time.sleep(0.002)
        else:
            target, seen, was = rng.randrange(2 * EPOCHS), 0, False
            how = f"in checkpoint-file write #{target + 1}"
            while p.poll() is None and time.monotonic() - t0 < wall:
                now = _in_checkpoint_write(run / "checkpoints")
                if now and not was:
                    seen += 1
                    if seen > target:
                        break
                was = now
                time.sleep(0.0005)
            else:
                how += " (not caught: killed at the time limit)"
            how += f", {time.monotonic() - t0:.2f}s after taking the lock"
        killed = p.poll() is None
    finally:
        p.kill()  # SIGKILL
        p.wait(timeout=60)
    return killed, how


def test_sigkill_at_random_moments_resumes_identically(reference, synth10, tmp_path):
    """CIFARLENS_CRASH_TRIALS trials: kill at a random time, or during a random checkpoint write;
    `--resume` continues from the newest complete checkpoint and ends equal to the reference."""
    rng = random.Random(CRASH_SEED)
    wall = _reference_wall(reference)
    log = []
    for trial in range(CRASH_TRIALS):
        run = tmp_path / f"trial{trial}"
        mode = ("write", "delay")[trial % 2]
        killed, how = _start_and_kill(_train_argv(synth10, run), run, rng, mode, wall)
        expected = _resume_point(run)
        note = (f"CIFARLENS_CRASH_SEED={CRASH_SEED} trial {trial}: killed {how}" if killed else
                f"CIFARLENS_CRASH_SEED={CRASH_SEED} trial {trial}: finished before the kill"
                ) + f"; newest complete checkpoint: epoch {expected}"
        log.append(note)
        try:
            assert_nothing_torn(run)
            if killed:
                finished = (run / "done.json").exists()
                rc, err = _main(_train_argv(synth10, run, resume=True))
                assert rc == 0, err
                _check_resume_message(err, run, expected, finished)
            assert_same_run(run, reference)
        except AssertionError as e:
            raise AssertionError(f"{note}: {e}") from None
    print("\n".join(log))


def _reference_wall(ref: Path) -> float:
    """About how long a subprocess trains once it holds the lock: the reference took this long
    in process, where imports are warm and figures cheaper (x2.5, measured)."""
    return 2.5 * float((ref.parent / "wall_s").read_text())


# --- 2. corrupt or truncated checkpoints -------------------------------------------------------------


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE = {
    "flipped": (_flip, "is corrupt (checksum mismatch)"),
    "truncated": (_truncate, "is corrupt (checksum mismatch)"),
    "emptied": (lambda p: p.write_bytes(b""), "is corrupt (checksum mismatch)"),
    "checksum-missing": (lambda p: p.with_name(p.name + ".sha256").unlink(),
                         "has no checksum file: incomplete write"),
    # the checksum matches (re-computed), but the file is not a checkpoint at all
    "garbage-with-checksum": (lambda p: (p.write_bytes(b"\x00garbage" * 99), p.with_name(
        p.name + ".sha256").write_text(sha256(b"\x00garbage" * 99))), "cannot load checkpoint"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_is_detected_and_skipped(reference, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    newest = run / "checkpoints" / "ckpt-e0003.pt"
    fn, msg = DAMAGE[damage]
    fn(newest)
    with pytest.raises(CifarlensError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        load_checkpoint(newest)
    assert "\n" not in str(e.value) and str(newest) in str(e.value)
    warnings = []
    path, state = latest_good_checkpoint(run, warn=warnings.append)
    assert path.name == "ckpt-e0002.pt" and state["epoch"] == 2
    assert len(warnings) == 1 and msg in warnings[0] and "falling back" in warnings[0]


def test_all_checkpoints_damaged_means_a_fresh_start(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for p in epoch_checkpoints(run):
        _flip(p)
    warnings = []
    assert latest_good_checkpoint(run, warn=warnings.append) is None
    assert len(warnings) == 2


def test_resume_after_corrupt_newest_checkpoint_matches_uninterrupted_run(reference, synth10,
                                                                           tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "done.json").unlink()  # as if killed before the end, with epoch 3's file damaged
    _flip(run / "checkpoints" / "ckpt-e0003.pt")
    logs = []
    train(_cfg(synth10), run, resume=True, progress=False, log=logs.append)
    text = "\n".join(logs)
    assert "ckpt-e0003.pt is corrupt (checksum mismatch); falling back" in text
    assert f"resuming {run} after epoch 2 " in text
    assert_same_run(run, reference)


def test_corrupt_best_checkpoint_gives_one_line_error(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    best = run / "checkpoints" / "best.pt"
    load_model(run, "best")  # sanity: intact
    _flip(best)
    with pytest.raises(CifarlensError, match=r"best\.pt is corrupt \(checksum mismatch\)") as e:
        load_model(run, "best")
    assert "\n" not in str(e.value)
    best.unlink()
    with pytest.raises(CifarlensError, match="missing checkpoint"):
        load_model(run, "best")
    # "last" is unaffected by a bad best.pt and falls back over a bad newest epoch checkpoint
    _truncate(run / "checkpoints" / "ckpt-e0003.pt")
    model, _ = load_model(run, "last")
    assert not model.training


# --- 3. disk full, unwritable output folder ------------------------------------------------------------


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("existing", [True, False])
def test_disk_full_at_fsync_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, existing):
    dest = tmp_path / "out" / "metrics.json"
    if existing:
        write_json(dest, {"old": 1})
    before = dest.read_bytes() if existing else None
    monkeypatch.setattr(cio.os, "fsync", _enospc)
    with pytest.raises(CifarlensError, match="disk full") as e:
        write_json(dest, {"new": list(range(1000))})
    assert str(e.value) == f"cannot write {dest}: disk full"
    assert (dest.read_bytes() if existing else dest.exists()) == (before if existing else False)
    assert sorted(p.name for p in dest.parent.iterdir()) == (["metrics.json"] if existing else [])


class _HalfWriter:
    """A file that accepts half of the first write, then reports a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        _enospc()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _resume_state(epoch: int, w: torch.Tensor) -> dict:
    """The shape of a resume checkpoint (runs.RESUME_KEYS), with a stand-in weight."""
    return {"epoch": epoch, "model": {"w": w}, "optimizer": {}, "scheduler": {}, "history": [],
            "best_val_acc": 0.0, "best_epoch": epoch}


def test_disk_full_mid_write_of_a_checkpoint_is_never_taken_as_complete(tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints" / "ckpt-e0001.pt"
    save_checkpoint(_resume_state(1, torch.ones(3)), ck)
    before = ck.read_bytes(), ck.with_name("ckpt-e0001.pt.sha256").read_text()
    real_fdopen = os.fdopen
    monkeypatch.setattr(cio.os, "fdopen", lambda *a, **k: _HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(CifarlensError, match="disk full"):
        save_checkpoint(_resume_state(1, torch.zeros(1000)), ck)
    monkeypatch.undo()
    assert (ck.read_bytes(), ck.with_name("ckpt-e0001.pt.sha256").read_text()) == before
    assert sorted(p.name for p in ck.parent.iterdir()) == ["ckpt-e0001.pt", "ckpt-e0001.pt.sha256"]
    # full disk between the checkpoint and its checksum: the new checkpoint does not verify
    ck2, calls, real_fsync = ck.with_name("ckpt-e0002.pt"), [], os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 1:  # the checkpoint's fsync passes, the checksum's does not
            _enospc()
        real_fsync(fd)

    monkeypatch.setattr(cio.os, "fsync", fsync)
    with pytest.raises(CifarlensError, match=r"ckpt-e0002\.pt\.sha256: disk full"):
        save_checkpoint(_resume_state(2, torch.zeros(3)), ck2)
    monkeypatch.undo()
    with pytest.raises(CifarlensError, match="no checksum file: incomplete write"):
        load_checkpoint(ck2)
    assert latest_good_checkpoint(tmp_path)[1]["epoch"] == 1
    assert not list(ck.parent.glob("*.tmp"))


def test_disk_full_during_training_stops_cleanly_and_resume_finishes(reference, synth10, tmp_path,
                                                                     monkeypatch):
    run = tmp_path / "run"
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up once epoch 1 is completely written
        if (run / "curves.png").exists():
            _enospc()
        real_fsync(fd)

    monkeypatch.setattr(cio.os, "fsync", fsync)
    with pytest.raises(CifarlensError, match=r"cannot write .*: disk full$") as e:
        train(_cfg(synth10), run, progress=False, log=lambda m: None)
    monkeypatch.undo()
    assert "\n" not in str(e.value)
    assert not (run / ".lock").exists() and not (run / "done.json").exists()
    assert not list(run.rglob("*.tmp"))  # every cut-short write removed its temp file
    assert [p.name for p in epoch_checkpoints(run)] == ["ckpt-e0001.pt"]
    assert_nothing_torn(run)
    assert load_model(run, "best")[1]["model"] == "small"
    # space freed: --resume finishes, equal to a run that never hit the full disk
    train(_cfg(synth10), run, resume=True, progress=False, log=lambda m: None)
    assert_same_run(run, reference)


def _unwritable_dirs(tmp_path: Path) -> list[Path]:
    """Output folders that cannot be created. chmod does not stop root, so a path under a regular
    file (and under /proc) is used always, a read-only folder only when not root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = [blocker / "run"]
    if Path("/proc/self").is_dir():
        out.append(Path("/proc/cifarlens-test-run"))
    if not IS_ROOT:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        out.append(ro / "run")
    return out


def test_unwritable_output_folder_is_a_one_line_error(synth10, tmp_path, capsys):
    for out in _unwritable_dirs(tmp_path):
        with pytest.raises(CifarlensError, match="cannot create") as e:
            train(_cfg(synth10), out, progress=False, log=lambda m: None)
        assert str(out) in str(e.value) and "\n" not in str(e.value)
        rc = main(_train_argv(synth10, out))
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and err.startswith("cifarlens: error: cannot create")
        assert not out.exists()
    # the real command line: one line, non-zero exit, no traceback
    r = _run(_train_argv(synth10, tmp_path / "a-file" / "run"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cifarlens: error: cannot create")


# --- 4. two processes, one run folder ----------------------------------------------------------------

HOLDER = ("import sys, time\nfrom cifarlens._io import RunLock\nRunLock(sys.argv[1]).acquire()\n"
          "print('locked', flush=True)\ntime.sleep(120)\n")


def test_second_process_is_refused_naming_the_lock_and_a_killed_holder_is_stale(tmp_path, capsys):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                         text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "locked"
        rc = main(["train", "--out", str(run), "--data-dir", str(tmp_path / "none"),
                       *TRAIN_ARGS])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1, err
        assert f"is in use by {socket.gethostname()} {p.pid} (lock {run / '.lock'})" in err
        with pytest.raises(CifarlensError, match="in use by"):
            RunLock(run).acquire()
    finally:
        p.kill()
        p.wait()
    # the holder died without cleaning up: its lock is stale and taken over
    assert (run / ".lock").exists()
    with RunLock(run):
        assert (run / ".lock").read_text() == f"{socket.gethostname()} {os.getpid()}\n"
    assert not (run / ".lock").exists()


def test_stale_lock_of_a_finished_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a finished process; empty: killed between creating and writing the lock; unreadable
    for i, content in enumerate((f"{socket.gethostname()} {dead.pid}\n", "", "garbage\n")):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / ".lock").write_text(content)
        lock = RunLock(run).acquire()
        assert (run / ".lock").read_text().split() == [socket.gethostname(), str(os.getpid())]
        lock.release()
        assert not (run / ".lock").exists()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("some-other-host.example 1\n")
    with pytest.raises(CifarlensError, match="in use by some-other-host.example 1"):
        RunLock(tmp_path).acquire()


@pytest.fixture
def offline(monkeypatch):
    """No network: a download attempt fails at once, as offline."""
    import cifarlens.data.download

    def fetch(url, dest, *a, **k):
        raise CifarlensError(f"cannot download {url} (offline test)")

    monkeypatch.setattr(cifarlens.data.download, "fetch", fetch)


def test_lock_is_released_on_error_and_on_ctrl_c(tmp_path, capsys, monkeypatch, offline):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--data-dir", str(tmp_path / "none"), *TRAIN_ARGS]
    assert main(argv) == 1  # CifarlensError (no data) after the lock was taken
    assert "offline test" in capsys.readouterr().err and not (run / ".lock").exists()

    def interrupted(*a, **k):
        assert (run / ".lock").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "load_dataset", interrupted)
    assert main(argv) == 130
    # Ctrl-C before the first epoch still says how to continue
    assert capsys.readouterr().err == (f"cifarlens: interrupted; continue {run} with the same "
                                       "command and --resume\n") and not (run / ".lock").exists()
    # normal exit: see the `reference` fixture; Ctrl-C mid-epoch with resume: test_train.py


def test_ctrl_c_in_a_study_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import cifarlens.study.run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cifarlens.study.run, "run_study", interrupted)
    assert main(["study", "--out", str(tmp_path / "s")]) == 130
    err = capsys.readouterr().err
    assert err == f"cifarlens: interrupted; rerun the same command to resume {tmp_path / 's'}\n"


# --- 6. untrusted input executes nothing ------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_payload_runs_nothing(reference, tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for name in ("ckpt-e0003.pt", "best.pt"):
        p = run / "checkpoints" / name
        state = load_checkpoint(p)
        state["x"] = _Evil(marker)
        torch.save(state, p)  # torch.save pickles: the payload is in the file
        p.with_name(name + ".sha256").write_text(sha256(p.read_bytes()) + "\n")  # checksum matches
    msg = r"refusing to load checkpoint .*best\.pt: it contains a forbidden global \((posix|os|nt)\.system\)"
    with pytest.raises(CifarlensError, match=msg) as e:
        load_model(run, "best")
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    warnings = []
    assert latest_good_checkpoint(run, warn=warnings.append)[1]["epoch"] == 2  # resume skips it
    assert "forbidden global" in warnings[0]
    assert not marker.exists()
    # sanity: the payload is real, plain unpickling would have run it
    torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert marker.exists()


def test_class_names_with_markup_are_escaped_in_the_report(tmp_path):
    from cifarlens.report.render import render_report

    evil = "<img src=x onerror=alert(1)>"
    study = tmp_path / "study"
    study.mkdir()
    pair = {"true_name": evil, "pred_name": "cat\x1b[31m\u202e\u200e\u200f\u061c", "count": 3,
            "share_of_true": 0.3}
    s = make_summary()
    s.update(dataset="cifar10", num_classes=10,
             figures={"curves": "../../../../etc/passwd", "confusion": "/etc/hostname"})
    for arm in ("baseline", "variant"):
        s["models"][arm]["test"]["top_confusions"] = [pair]
    s["comparison"]["per_class"] = {"improved": [{"name": evil, "before": 0.1, "after": 0.2,
                                                  "delta": 0.1}], "worsened": []}
    s["failures"]["top"][0].update(true_name=evil, pred_name=evil)
    s["failures"]["per_class_confident_errors"] = [{"name": evil, "count": 2}]
    html_path, md_path = render_report(study, summary_from_json(s))
    h, m = html_path.read_text(), md_path.read_text()
    assert "<img src=x" not in h and "onerror=alert(1)>" not in h
    assert "&lt;img src=x onerror=alert(1)&gt;" in h  # shown, as text
    assert r"\<img src=x onerror=alert(1)\>" in m and "<img" not in m.replace("\\<", "")
    for doc in (h, m):
        assert "\x1b" not in doc and not set("\u202e\u200e\u200f\u061c") & set(doc)
        assert doc.count("is outside the study folder") == 2  # figure paths from the summary


def test_safe_text_strips_control_characters():
    # whole escape sequences go (not just ESC, which left "[31m"); a newline is a space
    assert safe_text("a$b$\x00c\x1b[31m\u202ed\ne") == r"a\$b\$cd e"
    assert safe_text("0\x1f0") == "00"  # an ASCII separator is a control, not a space
    assert safe_text("rtl\u200e\u200f\u061cname") == "rtlname"
    assert safe_text(42) == "42"
    assert safe_text("x" * 3000) == "x" * 39 + "\u2026"


def test_safe_text_property():
    """Whatever the name: printable, no format characters, bounded, never mathtext, and the
    text matplotlib shows is the name's plain text (cut at the bound); a name of letters and
    digits is shown as it is."""
    import unicodedata

    from hypothesis import given
    from hypothesis import strategies as st
    from matplotlib.text import Text

    from cifarlens._text import plain_text

    @given(st.text(max_size=80))
    def check(s):
        out = safe_text(s)
        assert all(ch.isprintable() and unicodedata.category(ch) != "Cf" for ch in out)
        shown, is_math = Text(text=out)._preprocess_math(out)
        assert not is_math and len(shown) <= 40
        assert shown == plain_text(s, 40, collapse=True)
        if s.isalnum():
            assert shown == (s if len(s) <= 40 else s[:39] + "\u2026")

    check()


def test_class_names_with_mathtext_do_not_break_the_confusion_figure(tmp_path):
    from cifarlens.figures.plots import plot_confusion

    plot_confusion(np.array([[3, 1], [2, 4]]), [r"$\foo$", "b\x1b[31m"], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    from cifarlens.figures.plots import plot_per_class_changes

    plot_per_class_changes(np.array([[3, 1], [2, 4]]), np.array([[4, 0], [1, 5]]),
                           [r"$\foo$", r"$x^$"], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


# --- 8. numerical faults ---------------------------------------------------------------------------


def test_nonfinite_weights_after_an_epochs_last_step_are_never_checkpointed(synth10, tmp_path,
                                                                            monkeypatch):
    """The training loss of an epoch is measured before each step, so a step that blows the
    weights up at the very end of an epoch shows only in validation: nothing may be saved."""
    real = lr_factor
    steps = 100 // 50
    monkeypatch.setattr(T, "lr_factor", lambda s, total, w: float("inf") if s == steps - 1
                        else real(s, total, w))
    with pytest.raises(CifarlensError, match="diverged.* in epoch 1") as e:
        train(_cfg(synth10), tmp_path / "run", progress=False, log=lambda m: None)
    assert "\n" not in str(e.value)
    assert epoch_checkpoints(tmp_path / "run") == []
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    assert not (tmp_path / "run" / ".lock").exists()


def test_exploding_lr_in_epoch_2_keeps_epoch_1_and_resume_is_deterministic(reference, synth10,
                                                                          tmp_path, monkeypatch):
    """Decision (docs/reliability.md): --resume continues from the last good checkpoint with the
    same settings. A real divergence is deterministic, so it recurs at the same place and stops
    again with the same message (start a new run with a lower --lr); a transient fault (here:
    the patched schedule, undone) resumes to exactly the uninterrupted result.

    The LR explodes from epoch 2's second (last) step: that step's loss is still finite, so only
    the validation check can catch it. (From its first step, the exploded LR would already be
    stored in epoch 1's checkpoint: a scheduler's state is the NEXT step's LR.)"""
    run = tmp_path / "run"
    real = lr_factor
    steps = 100 // 50
    monkeypatch.setattr(T, "lr_factor", lambda s, total, w: float("inf") if s >= steps + 1
                        else real(s, total, w))
    for attempt in range(2):
        logs = []
        with pytest.raises(CifarlensError, match="training diverged: .* in epoch 2; the last good "
                                                 "checkpoint is kept"):
            train(_cfg(synth10), run, resume=attempt > 0, progress=False, log=logs.append)
        if attempt:
            assert f"resuming {run} after epoch 1 " in "\n".join(logs)
        assert [p.name for p in epoch_checkpoints(run)] == ["ckpt-e0001.pt"]
        assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1
        assert not (run / ".lock").exists() and not (run / "done.json").exists()
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    train(_cfg(synth10), run, resume=True, progress=False, log=lambda m: None)
    assert_same_run(run, reference)


def test_out_of_range_seed_is_refused_up_front():
    with pytest.raises(CifarlensError, match="--seed"):
        make_config("smoke", seed=2**64)
    with pytest.raises(CifarlensError, match="--seed"):
        make_config("smoke", seed=-1)
