"""`cifarlens study --engine ...`: which engine produces the study's runs, and its options."""

from __future__ import annotations

import argparse

from cifarlens.errors import CifarlensError

ENGINES = ("local", "processes", "ray", "slurm")
# each engine's own options (dest, flag): refused with another engine rather than ignored
_OWN = {"ray": (("ray_address", "--ray-address"), ("ray_accelerator", "--ray-accelerator")),
        "slurm": (("slurm_partition", "--slurm-partition"),
                  ("slurm_gpus_per_run", "--slurm-gpus-per-run"),
                  ("slurm_time", "--slurm-time"))}
SLURM_TIME = "4:00:00"


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """--engine and the Ray and Slurm options (docs/cluster.md). --jobs N (add_seeds_jobs)
    stays the spelling of --engine processes with N processes."""
    from cifarlens.cli.args import nonneg_int

    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="what produces the runs: local (one after another here), processes "
                        "(--jobs N at once here), ray (Ray tasks: a Ray instance of the study's "
                        "own, or a cluster with --ray-address; pip install \"cifarlens[ray]\"), "
                        "slurm (one Slurm job per run through submitit; pip install "
                        "\"cifarlens[slurm]\"); default: processes with --jobs 2 or more, else "
                        "local (docs/cluster.md)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --engine ray: 'auto' or HOST:PORT of a running Ray cluster "
                        "(default: start a Ray instance on this machine and stop it at the end)")
    p.add_argument("--ray-accelerator", metavar="TYPE",
                   help="with --engine ray: run every run on this GPU model only (Ray's "
                        "accelerator type, e.g. H100), so no pair is refused after training for "
                        "different GPUs; refused before any run trains when no node has it")
    p.add_argument("--slurm-partition", metavar="NAME",
                   help="with --engine slurm: the partition (default: the cluster's default)")
    p.add_argument("--slurm-gpus-per-run", type=nonneg_int, metavar="N",
                   help="with --engine slurm: GPUs per run's job (default: 0 with --device cpu, "
                        "else 1)")
    p.add_argument("--slurm-time", metavar="TIME",
                   help="with --engine slurm: each job's time limit, minutes, HH:MM:SS or "
                        f"D-HH:MM:SS (default: {SLURM_TIME}); a run that needs longer is "
                        "requeued and resumes from its last epoch")


def make_engine(a: argparse.Namespace):
    """The engine the study's runs are produced by. A missing Ray or submitit, or no Slurm
    here, is one line now, before the study's plan."""
    progress = not getattr(a, "no_progress", False)
    name = a.engine or ("processes" if a.jobs > 1 else "local")
    for engine, own in _OWN.items():
        given = [flag for dest, flag in own if getattr(a, dest, None) is not None]
        if given and name != engine:
            raise CifarlensError(f"{given[0]} is an option of --engine {engine}, not of "
                                 f"--engine {name}")
    if a.jobs > 1 and name != "processes":
        raise CifarlensError(f"--jobs is the number of processes of --engine processes; "
                             f"--engine {name} places the runs itself")
    threads = getattr(a, "threads", None)
    if name == "local":
        from cifarlens.study.engines.local import LocalEngine

        return LocalEngine(progress)
    if name == "processes":
        from cifarlens.study.engines.processes import ProcessesEngine

        return ProcessesEngine(a.jobs, progress)
    if name == "ray":
        from cifarlens.study.engines.ray import RayEngine, import_ray

        import_ray()
        return RayEngine(a.ray_address, threads=threads, accelerator_type=a.ray_accelerator)
    from cifarlens.study.engines.slurm import SlurmEngine

    gpus = a.slurm_gpus_per_run
    if gpus is None:
        gpus = 0 if getattr(a, "device", None) == "cpu" else 1
    engine = SlurmEngine(a.slurm_partition, gpus, a.slurm_time or SLURM_TIME, threads=threads)
    engine.check_here()
    return engine
