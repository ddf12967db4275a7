"""`--engine ray`: each run of a study as one Ray core task, on this machine or on a cluster.

Ray core tasks, not Ray Tune: a study is a fixed grid of arms x seeds, not a search. Each task
trains its run (resuming from the run's last complete epoch), then makes what the study needs
from it; the driver (the study's process) waits and writes the report. Ray retries a task whose
worker or node was lost (`max_retries`); the retry resumes from the run's checkpoint, bit-exact,
so a lost machine costs at most one epoch. An application error (CifarlensError: bad data, a
refused config) is never retried: it fails the study in one line naming the run.

Without an address the engine starts a Ray instance of its own and stops it at the end, with
`address="local"` said explicitly: a bare `ray.init()` joins whatever RAY_ADDRESS or a stale
cluster file in Ray's default temp folder points at. The instance gets its own temp folder, no
dashboard, no usage stats, and token authentication with a token kept in that folder (Ray 2.60
binds every network interface; its default token would go to ~/.ray/auth_token).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cifarlens._io import lock_owner
from cifarlens.errors import CifarlensError
from cifarlens.study.engines._worker import (
    Log,
    Probe,
    RunFn,
    Tally,
    WorkerSetup,
    data_folders,
    log_folder,
    make_probe,
    remove_probes,
    run_job,
    storage_refusal,
    study_folders,
    unseen,
)
from cifarlens.study.engines.base import EngineResult, RunJob, RunOutcome, execute

INSTALL = 'Ray is not installed here: pip install "cifarlens[ray]"'
# The user's own Ray authentication settings, if any, are left as they are.
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def import_ray() -> Any:
    # Ray's driver merges worker lines that differ only in numbers ("[repeated 3x across
    # cluster]"), which hides other runs' epochs; it reads the switch once, at import.
    dedup = {"RAY_DEDUP_LOGS": os.environ.get("RAY_DEDUP_LOGS", "0")}
    try:
        with _environ(dedup):
            import ray
    except ImportError:
        raise CifarlensError(INSTALL) from None
    return ray


@contextlib.contextmanager
def _environ(changes: dict[str, str]) -> Iterator[None]:
    """Set these variables for Ray's own processes (they read them when they start), and put
    the driver's environment back afterwards, Ray's own changes to it included (ray.init sets
    RAY_AUTH_MODE)."""
    old = {k: os.environ.get(k) for k in (*changes, *AUTH_VARS)}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Ray's sockets go to TEMP/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, and an AF_UNIX
# path has at most 107 bytes: a long $TMPDIR (common on clusters) fails deep inside ray.init.
_SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
_SOCKET_MAX = 107


def _own_temp() -> Path:
    """A fresh temp folder for the engine's own Ray instance, short enough for its sockets."""
    tmp = Path(tempfile.mkdtemp(prefix="clray-"))
    if len(os.fsencode(tmp)) + _SOCKET_TAIL > _SOCKET_MAX:
        shutil.rmtree(tmp, ignore_errors=True)
        room = _SOCKET_MAX - _SOCKET_TAIL - len("/clray-12345678")
        raise CifarlensError(f"the temp folder {tmp.parent} is too long a path for Ray's "
                             f"sockets (at most {room} bytes); set TMPDIR to a shorter folder, "
                             "e.g. TMPDIR=/tmp")
    return tmp


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _ray_task(fn: RunFn, job: RunJob, setup: WorkerSetup, probes: Sequence[Probe]
              ) -> RunOutcome:
    """The body of every run's task, in a Ray worker."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return run_job(job, setup=setup, probes=probes, where=f"Ray node {node[:8]}", fn=fn)


def _probe_task(probes: Sequence[Probe]) -> tuple[str, str | None]:
    """The storage check on one node: (host, 'PATH: why' or None)."""
    import socket

    return socket.gethostname(), unseen(probes)


class RayEngine:
    """Runs a study's runs as Ray tasks, each through `engines.base.execute` in its worker.
    `address`: None for an instance of this engine's own, "auto" or "HOST:PORT" for a running
    cluster. `threads`: torch's threads in every run, and the CPUs a CPU run asks Ray for
    (default: the study process's, i.e. --threads). `temp_dir`, `num_cpus`: the own instance's
    temp folder (default: a fresh one under $TMPDIR, removed at the end) and CPUs (default:
    all). `accelerator_type`: pin every run to one GPU model (Ray's names, e.g. "H100"), so
    that no two runs of a study differ in hardware. `fn`: what each task calls (default
    `execute`; tests wrap it to stop a run at a known point)."""

    name = "ray"
    poll_s = 1.0  # how often the driver wakes while it waits (Ctrl-C is seen within this)
    check_timeout_s = 120.0  # the storage check: a busy node starts a worker within this

    def __init__(self, address: str | None = None, *, threads: int | None = None,
                 temp_dir: str | None = None, num_cpus: int | None = None, max_retries: int = 3,
                 accelerator_type: str | None = None, fn: RunFn = execute) -> None:
        self.address, self.threads, self.temp_dir, self.num_cpus = (address, threads, temp_dir,
                                                                    num_cpus)
        self.max_retries, self.accelerator_type, self.fn = max_retries, accelerator_type, fn
        self.say: Log = lambda m: None

    # --- the Ray session -------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self, ray: Any) -> Iterator[bool]:
        """Connected to Ray for the block; True when this engine connected (and disconnects
        at the end, which ends its Ray job and with it every task still running)."""
        if ray.is_initialized():  # the caller's own session: use it, leave it running
            yield False
            return
        if self.address is not None:
            with _environ({"RAY_USAGE_STATS_ENABLED": "0"}):
                try:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                except Exception as e:  # noqa: BLE001 - Ray raises many kinds; one line
                    raise CifarlensError(f"cannot connect to the Ray cluster at {self.address}: "
                                         f"{_first_line(e)}") from None
                try:
                    yield True
                finally:
                    ray.shutdown()  # the driver's connection only: the cluster stays up
            return
        with self._local_instance(ray):
            yield True

    @contextlib.contextmanager
    def _local_instance(self, ray: Any) -> Iterator[None]:
        own_tmp = self.temp_dir is None
        tmp = _own_temp() if own_tmp else Path(self.temp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {"RAY_USAGE_STATS_ENABLED": "0"}
        token = None
        if not any(os.environ.get(k) for k in AUTH_VARS):
            token = tmp / f"auth-token-{os.getpid()}"
            fd = os.open(token, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            # RAY_AUTH_MODE stays unset: ray.init then turns token mode on itself, in a way its
            # own client in this process sees too, and finds this token instead of making one
            env["RAY_AUTH_TOKEN_PATH"] = str(token)
        try:
            with _environ(env):
                try:
                    ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                             _temp_dir=str(tmp.resolve()), logging_level=logging.WARNING)
                except Exception as e:  # noqa: BLE001 - Ray raises many kinds; one line
                    raise CifarlensError(f"cannot start Ray here: {_first_line(e)}") from None
                try:
                    yield
                finally:
                    ray.shutdown()
        finally:
            if token is not None:
                token.unlink(missing_ok=True)
            if own_tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    # --- before any run: placement and storage ---------------------------------------------

    def _placement(self, ray: Any, jobs: Sequence[RunJob], threads: int
                   ) -> dict[str, dict[str, Any]]:
        """Ray task options per run: one GPU per run on a cluster with GPUs (Ray sets
        CUDA_VISIBLE_DEVICES), else the run's threads as CPUs. Refuses a run no node can hold
        (Ray would queue it forever)."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        most_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        if self.accelerator_type:
            kinds = sorted({k.split(":", 1)[1] for n in nodes for k in n["Resources"]
                            if k.startswith("accelerator_type:")})
            if self.accelerator_type not in kinds:
                raise CifarlensError(f"no Ray node has accelerator type {self.accelerator_type!r}"
                                     f" (the cluster has: {', '.join(kinds) or 'none'})")
        options = {}
        for job in jobs:
            device = str(job.config.get("device", "auto"))
            if device.startswith("cuda") and not gpus:
                raise CifarlensError(f"run {job.name} asks for --device {device}, but the Ray "
                                     "cluster has no GPU")
            opts: dict[str, Any] = {"name": f"cifarlens {job.name}",
                                    "max_retries": self.max_retries, "retry_exceptions": False}
            if gpus and device != "cpu":
                opts.update(num_gpus=1, num_cpus=1)
                if self.accelerator_type:
                    opts["accelerator_type"] = self.accelerator_type
            else:
                if threads > most_cpus:
                    raise CifarlensError(f"run {job.name} needs {threads} CPUs (its threads) "
                                         f"but the largest Ray node has {most_cpus:g}; use "
                                         f"--threads {int(most_cpus)} or fewer")
                opts["num_cpus"] = threads
            options[job.name] = opts
        return options

    def _check_storage(self, ray: Any, jobs: Sequence[RunJob]) -> list[Probe]:
        """One task on every node reads the tokens the driver wrote into the study folder and
        the data folder. Returns the study folder's probes, which every run checks again where
        it lands (a node that joins later is checked too); the data folder's token goes now."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        study = [make_probe(f, must_write=True) for f in study_folders(jobs)]
        data = [make_probe(f) for f in data_folders(jobs)]
        try:
            task = ray.remote(_probe_task)
            refs = {task.options(num_cpus=0, max_retries=0, scheduling_strategy=(
                        NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    ).remote(study + data): n for n in ray.nodes() if n.get("Alive")}
            ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=self.check_timeout_s)
            if late:
                n = refs[late[0]]
                raise CifarlensError(f"Ray node {n['NodeManagerAddress']} did not answer the "
                                     f"storage check within {self.check_timeout_s:g} s")
            for ref in ready:
                host, gone = ray.get(ref)
                if gone:
                    raise storage_refusal(f"Ray node {host} ({refs[ref]['NodeManagerAddress']})",
                                          gone)
        except BaseException:
            remove_probes(study)
            raise
        finally:
            remove_probes(data)
        self.say(f"Ray: {len(refs)} node(s) see the study folder"
                 + (" and the data folder" if data else ""))
        return study

    # --- the runs ----------------------------------------------------------------------------

    def run(self, jobs: Sequence[RunJob], say: Log) -> EngineResult:
        """Every run not finished before as a task; progress through `say` as each finishes.
        Ctrl-C or a failed run stops the runs still going; each keeps its last complete epoch,
        and the next call resumes them."""
        import torch

        self.say = say
        tally = Tally(jobs, say)
        if not tally.pending:
            return tally.result({})
        ray = import_ray()
        setup = WorkerSetup(log_dir=str(log_folder(jobs)), lock_owner=lock_owner(),
                            threads=self.threads or torch.get_num_threads())
        with self._session(ray) as owned:
            own = owned and self.address is None  # an instance of its own, gone at the end
            record = {"ray_address": "local" if own else ray.get_runtime_context().gcs_address,
                      "ray_version": ray.__version__}
            options = self._placement(ray, tally.pending, setup.threads)
            probes = self._check_storage(ray, tally.pending)
            try:
                self._run_tasks(ray, tally, options, (setup, probes), owned)
            finally:
                remove_probes(probes)
        return tally.result(record)

    def _run_tasks(self, ray: Any, tally: Tally, options: dict[str, dict[str, Any]],
                   context: tuple[WorkerSetup, list[Probe]], owned: bool) -> None:
        # a fresh worker process per run: no torch threads, CUDA context or memory carried over
        task = ray.remote(max_calls=1)(_ray_task)
        refs = {task.options(**options[j.name]).remote(self.fn, j, *context): j
                for j in tally.pending}
        res = ray.cluster_resources()
        self.say(f"Ray: {len(refs)} runs sent as tasks to {res.get('CPU', 0):g} CPUs and "
                 f"{res.get('GPU', 0):g} GPUs, {context[0].threads} thread(s) each; a lost "
                 f"worker or node is retried up to {self.max_retries} times, resuming its run; "
                 f"logs in {context[0].log_dir}")
        tally.begin()
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    tally.done(refs[ref], self._result(ray, ref, refs[ref]))
        except BaseException as e:
            self._cancel(ray, pending, e, owned)
            raise

    def _result(self, ray: Any, ref: Any, job: RunJob) -> RunOutcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None) or e
            why = str(cause) if isinstance(cause, CifarlensError) else \
                f"{type(cause).__name__}: {_first_line(cause)}"
            raise CifarlensError(f"run {job.name} failed: {why}") from None
        except ray.exceptions.RayError as e:
            raise CifarlensError(
                f"run {job.name} was lost {self.max_retries + 1} times ({type(e).__name__}); "
                "it keeps its last complete epoch: rerun the study to resume it") from None

    def _cancel(self, ray: Any, pending: list[Any], why: BaseException, owned: bool) -> None:
        """Stop the runs still queued or running; each keeps every complete epoch (atomic
        writes). In a session of its own the engine leaves that to the disconnect that
        follows: Ray ends the job and kills its workers (tested with a cluster that stays up).
        ray.cancel(force=True) on a task finishing at that moment aborts Ray 2.60's driver
        ("Check failed: ... Tried to complete task that was not pending", seen in this test),
        so in the caller's session only the tasks not yet finished are cancelled."""
        if pending:  # those that finished meanwhile are left alone
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
        if not owned:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if pending:
            what = "interrupted" if isinstance(why, KeyboardInterrupt) else "stopped"
            self.say(f"Ray: {what}; stopping {len(pending)} run(s), each keeps its last "
                     "complete epoch: rerun the study to resume")
