"""The reproducibility section names the engine, its settings, and where each run ran; a
version-2 summary written before these fields existed still reads and renders."""

from __future__ import annotations

import html
import json

import pytest
from summaries import summary_json

from cifarlens.errors import CifarlensError
from cifarlens.report.engine import engine_blocks
from cifarlens.report.render import render_report
from cifarlens.study.schema import EngineRecord, RunRecord, read_summary, summary_from_json

RUN = {"name": "baseline-s0", "trained": True, "train_s": 61.5, "analysis_s": 4.25,
       "host": "gpu-7", "device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3"}


def _slurm() -> dict:
    return {"name": "slurm", "runs": {"baseline-s0": RUN, "variant-s0": {
        **RUN, "name": "variant-s0", "trained": False, "host": "gpu-<b>9</b>"}},
        "slurm_partition": None, "slurm_gpus_per_run": 1, "slurm_time": "4:00:00",
        "submitit_version": "1.5.4"}


def test_a_version_2_summary_without_the_engine_fields_still_reads():
    old = summary_json(engine={"name": "local", "runs": {"baseline-s0": RUN}})
    e = summary_from_json(json.loads(json.dumps(old))).engine
    assert e.name == "local" and e.runs["baseline-s0"].host == "gpu-7"
    assert (e.ray_address, e.ray_version, e.slurm_partition, e.slurm_gpus_per_run,
            e.slurm_time, e.submitit_version) == (None,) * 6
    new = summary_from_json(summary_json(engine={"name": "ray", "runs": {},
                                                 "ray_address": "10.0.0.5:6379",
                                                 "ray_version": "2.60.0"})).engine
    assert (new.ray_address, new.ray_version) == ("10.0.0.5:6379", "2.60.0")
    with pytest.raises(CifarlensError, match=r"^summary\.json\.engine has an unknown key "
                                             r"'ray_nodes'$"):
        summary_from_json(summary_json(engine={"name": "ray", "ray_nodes": 3}), "summary.json")
    with pytest.raises(CifarlensError, match=r"slurm_gpus_per_run must be an integer"):
        summary_from_json(summary_json(engine={"name": "slurm", "slurm_gpus_per_run": "1"}))


def test_engine_blocks_list_the_settings_given_and_every_run():
    slurm = summary_from_json(summary_json(engine=_slurm())).engine
    settings, runs = engine_blocks(slurm)
    assert settings["rows"] == [
        ["Engine", "slurm (one Slurm job per run, through submitit)"],
        ["Slurm partition", "the cluster's default"], ["Slurm GPUs per run", "1"],
        ["Slurm time limit per job", "4:00:00"], ["submitit version", "1.5.4"]]
    assert runs["headers"][:5] == ["Run", "Host", "Device", "GPU", "Trained by this invocation"]
    assert runs["rows"] == [
        ["baseline-s0", "gpu-7", "cuda:0", "NVIDIA H100 80GB HBM3", "yes", "1.0 min", "4.2 s"],
        ["variant-s0", "gpu-<b>9</b>", "cuda:0", "NVIDIA H100 80GB HBM3",
         "no (finished before)", "1.0 min", "4.2 s"]]
    ray = EngineRecord(name="ray", ray_address="local", ray_version="2.60.0")
    (only,) = engine_blocks(ray)  # no runs recorded: no runs table
    assert only["rows"] == [["Engine", "ray (one Ray task per run)"],
                            ["Ray cluster", "an instance of the study's own on its machine"],
                            ["Ray version", "2.60.0"]]
    local = EngineRecord(name="local", runs={"baseline-s0": RunRecord(**{**RUN, "gpu": None,
                                                                          "device": "cpu"})})
    assert engine_blocks(local)[0]["rows"] == [
        ["Engine", "local (one run after another in the study's process)"]]
    assert engine_blocks(local)[1]["rows"][0][3] == "none"
    assert engine_blocks(None) == []


def test_the_report_shows_the_engine_and_where_each_run_ran_escaped(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "summary.json").write_text(json.dumps(summary_json(engine=_slurm())))
    h, m = (p.read_text(encoding="utf-8") for p in render_report(study))
    repro_h = h[h.index('id="reproducibility"'):]
    repro_m = m[m.index("Reproducibility"):]
    for doc in (repro_h, repro_m):
        assert "slurm (one Slurm job per run, through submitit)" in doc
        assert "NVIDIA H100 80GB HBM3" in doc and "4:00:00" in doc
    assert html.escape("gpu-<b>9</b>") in repro_h and "gpu-<b>9</b>" not in h  # escaped
    assert read_summary(study / "summary.json").engine.slurm_time == "4:00:00"
