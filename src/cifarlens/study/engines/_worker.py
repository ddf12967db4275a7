"""What a remote engine (Ray, Slurm) does around one run where the run executes, and the
storage check its driver makes before it sends any run out.

A worker writes into the study folder and reads the data folder by path, so both must be the
driver's own folders, seen at the same path on every machine (a shared file system). The driver
writes a token file with a random value into each; a worker that does not find the value is
looking at another folder (or none) and is refused in one line naming the path. A read-only data
folder (a shared dataset) cannot take a token: its file names and sizes stand in for it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cifarlens._io import adopt_locks_of, write_text
from cifarlens.errors import CifarlensError
from cifarlens.study.engines.base import EngineResult, RunJob, RunOutcome, execute, finished
from cifarlens.study.folder import StudyFolder
from cifarlens.study.progress import StudyProgress

Log = Callable[[str], None]
RunFn = Callable[[RunJob, Log], RunOutcome]

TOKEN_PREFIX = ".cifarlens-storage-check-"


@dataclass(frozen=True)
class Probe:
    """What a worker must find at `folder`: the file `token_name` holding `token`, or (a
    folder the driver could not write) exactly these (relative path, size) pairs."""

    folder: str
    token_name: str | None = None
    token: str | None = None
    listing: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True)
class WorkerSetup:
    """The study's context that travels with every run: `log_dir` (on the shared storage) gets
    one `<run>.log` per run, appended by every attempt; `lock_owner` is the study process's
    `_io.lock_owner()`, whose run locks the worker works under (the study holds them);
    `threads`: torch's CPU threads in the worker (the study's, so that CPU runs give the same
    numbers as the local engine's; None: the worker's default)."""

    log_dir: str | None = None
    lock_owner: str | None = None
    threads: int | None = None


def _listing(folder: Path) -> tuple[tuple[str, int], ...]:
    """Names and sizes of the files in `folder` and its direct subfolders (a dataset's
    archive and its extracted folder), our own token files left out."""
    found: list[tuple[str, int]] = []
    for p in sorted(folder.iterdir()):
        subs = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in subs:
            if f.is_file() and not f.name.startswith(TOKEN_PREFIX):
                found.append((str(f.relative_to(folder)), f.stat().st_size))
    return tuple(found)


def make_probe(folder: str | os.PathLike, must_write: bool = False) -> Probe:
    """Write a token into `folder`; a folder that refuses it (read-only) gets its listing
    instead, unless `must_write` (the study folder, where every run writes)."""
    path = Path(folder)
    if not path.is_dir():
        raise CifarlensError(f"{path} is not a folder here, on the study's machine")
    name, token = TOKEN_PREFIX + secrets.token_hex(8), secrets.token_hex(16)
    try:
        write_text(path / name, token)
    except OSError as e:
        if must_write:
            raise CifarlensError(f"cannot write into {path}: {e.strerror or e}") from None
        return Probe(str(path), listing=_listing(path))
    return Probe(str(path), name, token)


def remove_probes(probes: Iterable[Probe]) -> None:
    for p in probes:
        if p.token_name:
            with contextlib.suppress(OSError):
                (Path(p.folder) / p.token_name).unlink()


def _problem(p: Probe) -> str | None:
    path = Path(p.folder)
    if not path.is_dir():
        return "no such folder"
    if p.token_name is None:
        return None if _listing(path) == p.listing else "other files than the study's machine sees"
    try:
        seen = (path / p.token_name).read_text()
    except OSError:
        return "another folder than the study's machine sees (its check file is missing)"
    return None if seen == p.token else "another folder than the study's machine sees"


def unseen(probes: Sequence[Probe], tries: int = 3, wait_s: float = 0.5) -> str | None:
    """'PATH: why' for the first probe this machine fails, else None. A few tries: a network
    file system may show a file just written on another client a moment late."""
    for attempt in range(tries):
        bad = [(p.folder, why) for p in probes if (why := _problem(p))]
        if not bad:
            return None
        if attempt + 1 < tries:
            time.sleep(wait_s)
    return f"{bad[0][0]}: {bad[0][1]}"


def storage_refusal(host: str, what: str) -> CifarlensError:
    return CifarlensError(
        f"{host} cannot see {what}; the study folder and the data folder must be on storage "
        "that every worker mounts at the same path (e.g. NFS)")


class RunLog:
    """A run's log lines: to stderr (Ray and Slurm carry it to the driver or the job's log)
    and appended to `<log_dir>/<run>.log`, kept across attempts, so a retried run's log shows
    the attempt that was lost and where the next one resumed."""

    def __init__(self, name: str, log_dir: str | None) -> None:
        self.name = name
        self.path = Path(log_dir) / f"{name}.log" if log_dir else None

    def __call__(self, msg: str) -> None:
        print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path, "a", encoding="utf-8") as f:  # one line per write, in order
                f.write(f"{stamp} {msg}\n")


def run_job(job: RunJob, *, setup: WorkerSetup, probes: Sequence[Probe] = (),
            where: str = "", fn: RunFn = execute) -> RunOutcome:
    """One run where the engine placed it: refuse a machine that cannot see the study folder,
    take the study's threads and locks, log where it runs, then produce the run (`fn`:
    `engines.base.execute`; tests wrap it to stop a run at a known point)."""
    host = socket.gethostname()
    gone = unseen(probes)
    if gone:
        raise storage_refusal(host, gone)
    if setup.threads:
        import torch

        torch.set_num_threads(setup.threads)  # this worker process only
    if setup.lock_owner:
        adopt_locks_of(setup.lock_owner)
    log = RunLog(job.name, setup.log_dir)
    log(f"started on {host}" + (f" ({where})" if where else "") + f", pid {os.getpid()}")
    return fn(job, log)


def study_folders(jobs: Sequence[RunJob]) -> list[str]:
    """The folders the runs are made in (the study's runs/ folder), made here if missing."""
    folders = sorted({str(Path(j.run_dir).parent) for j in jobs})
    for f in folders:
        Path(f).mkdir(parents=True, exist_ok=True)
    return folders


def data_folders(jobs: Sequence[RunJob]) -> list[str]:
    """The data folders the runs name (None: the default, resolved on each worker, unchecked)."""
    return sorted({str(j.config["data_dir"]) for j in jobs if j.config.get("data_dir")})


def log_folder(jobs: Sequence[RunJob]) -> Path:
    """STUDY/logs (runs are STUDY/runs/<name>): each run's log across attempts, made here."""
    folder = Path(jobs[0].run_dir).parent.parent / StudyFolder.LOGS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Tally:
    """What a remote engine's driver keeps while its runs come back: the study's progress
    (runs done of all, time left) and the outcomes in the jobs' order. Runs that finished
    before (a resumed study) are not sent out again."""

    def __init__(self, jobs: Sequence[RunJob], say: Log, clock=time.perf_counter) -> None:
        self.jobs = list(jobs)
        self.pending = [j for j in self.jobs if not finished(j)]
        self.progress = StudyProgress(len(self.jobs), len(self.jobs) - len(self.pending), say,
                                      clock)
        self.outcomes: dict[str, RunOutcome] = {}

    def begin(self) -> None:
        self.progress.begin()

    def done(self, job: RunJob, outcome: RunOutcome) -> None:
        self.outcomes[job.name] = outcome
        self.progress.run_done(job.label, outcome.train_s + outcome.analysis_s)

    def result(self, record: dict[str, object]) -> EngineResult:
        # several runs at once: training and analysis time are known per run only
        return EngineResult(outcomes=[self.outcomes[j.name] for j in self.jobs
                                      if j.name in self.outcomes], record=record)
