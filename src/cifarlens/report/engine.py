"""The reproducibility section's engine part: which engine produced the runs, with what, and
where each run ran (host, device, GPU model)."""

from __future__ import annotations

from cifarlens.report.blocks import Block, table_block
from cifarlens.report.formats import fmt_dur
from cifarlens.study.schema import EngineRecord

ENGINE_TEXT = {
    "local": "local (one run after another in the study's process)",
    "processes": "processes (several runs at once in spawned processes on one machine)",
    "ray": "ray (one Ray task per run)",
    "slurm": "slurm (one Slurm job per run, through submitit)",
}


def _settings(e: EngineRecord) -> list[list[str]]:
    ray = "an instance of the study's own on its machine" if e.ray_address == "local" \
        else e.ray_address
    gpus = None if e.slurm_gpus_per_run is None else str(e.slurm_gpus_per_run)
    rows = [("Ray cluster", ray), ("Ray version", e.ray_version),
            ("Slurm partition", e.slurm_partition or ("the cluster's default" if
                                                      e.name == "slurm" else None)),
            ("Slurm GPUs per run", gpus), ("Slurm time limit per job", e.slurm_time),
            ("submitit version", e.submitit_version)]
    return [[k, v] for k, v in rows if v is not None]


def engine_blocks(e: EngineRecord | None) -> list[Block]:
    """A table of the engine and its settings, and one of the runs it recorded. A run the
    last invocation found finished keeps the record of the invocation that trained it."""
    if e is None:
        return []
    rows = [["Engine", ENGINE_TEXT.get(e.name, e.name)], *_settings(e)]
    out = [table_block(["Item", "Value"], rows, align="ll", caption="Engine")]
    if e.runs:
        runs = [[name, r.host, r.device or "unknown", r.gpu or "none",
                 "yes" if r.trained else "no (finished before)", fmt_dur(r.train_s),
                 fmt_dur(r.analysis_s)] for name, r in sorted(e.runs.items())]
        out.append(table_block(
            ["Run", "Host", "Device", "GPU", "Trained by this invocation", "Training",
             "Analysis"], runs, align="lllllrr",
            caption="Where each run ran (times measured inside the run's worker)"))
    return out
