"""What a study records of its engine: this invocation's engine and settings, and where each
run ran, kept across a rerun or resume that did not train a run again."""

from __future__ import annotations

from summaries import summary_json

from cifarlens.study.engines.base import EngineResult, RunOutcome
from cifarlens.study.folder import StudyFolder
from cifarlens.study.run import _engine_record
from cifarlens.study.schema import summary_from_json, write_summary


def _outcome(name: str, trained: bool, host: str) -> RunOutcome:
    return RunOutcome(name=name, trained=trained, train_s=10.0 if trained else 0.0,
                      analysis_s=1.0, host=host, device="cuda:0", gpu="NVIDIA H100")


def test_a_run_not_trained_now_keeps_the_record_of_the_invocation_that_trained_it(tmp_path):
    folder = StudyFolder(tmp_path)
    before = {"name": "slurm", "runs": {
        "baseline-s0": {"name": "baseline-s0", "trained": True, "train_s": 60.0,
                        "analysis_s": 2.0, "host": "gpu-7", "device": "cuda:0",
                        "gpu": "NVIDIA H100"}}}
    write_summary(folder.file(folder.SUMMARY), summary_from_json(summary_json(engine=before)))
    result = EngineResult(outcomes=[_outcome("baseline-s0", False, "login-1"),
                                    _outcome("variant-s0", True, "gpu-3"),
                                    _outcome("stray-s9", True, "gpu-4")],
                          record={"ray_address": "local", "ray_version": "2.60.0"})
    e = _engine_record(folder, "ray", result, ["baseline-s0", "variant-s0", "baseline-s1"])
    assert (e.name, e.ray_address, e.ray_version, e.slurm_time) == ("ray", "local", "2.60.0",
                                                                     None)
    assert sorted(e.runs) == ["baseline-s0", "variant-s0"]  # only the study's runs
    assert (e.runs["baseline-s0"].host, e.runs["baseline-s0"].trained) == ("gpu-7", True)
    assert (e.runs["variant-s0"].host, e.runs["variant-s0"].trained) == ("gpu-3", True)
    # trained again now: the new record wins
    again = _engine_record(folder, "local", EngineResult(
        outcomes=[_outcome("baseline-s0", True, "here")]), ["baseline-s0"])
    assert again.runs["baseline-s0"].host == "here" and again.ray_address is None


def test_without_a_readable_summary_only_this_invocation_is_recorded(tmp_path):
    folder = StudyFolder(tmp_path)
    folder.file(folder.SUMMARY).write_text("{not json")
    e = _engine_record(folder, "processes",
                       EngineResult(outcomes=[_outcome("baseline-s0", False, "here")]),
                       ["baseline-s0", "variant-s0"])
    assert list(e.runs) == ["baseline-s0"] and e.runs["baseline-s0"].trained is False
