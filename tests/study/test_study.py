"""The study end to end on generated data, the one-change guard, resume, and `report`."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cifarlens.cli import main
from cifarlens.errors import CifarlensError
from cifarlens.report.render import render_report
from cifarlens.runs import Run
from cifarlens.study.engines.local import LocalEngine, _overlap_job, demo_threads
from cifarlens.study.engines.processes import parallel_slots
from cifarlens.study.options import StudyOptions
from cifarlens.study.plan import one_change_guard, parse_change
from cifarlens.study.run import run_study
from cifarlens.study.schema import to_json
from cifarlens.training.config import make_config


def test_guard_accepts_exactly_one_change():
    a = make_config("smoke")
    assert one_change_guard(a, dataclasses.replace(a, augment="crop-flip")) == "augment"
    # runtime settings (device, precision, ...) are not training settings
    assert one_change_guard(a, dataclasses.replace(a, lr=0.01, device="cpu")) == "lr"


def test_guard_refuses_two_changes_and_names_them():
    a = make_config("smoke")
    b = dataclasses.replace(a, augment="crop-flip", label_smoothing=0.0)
    with pytest.raises(CifarlensError) as e:
        one_change_guard(a, b)
    msg = str(e.value)
    assert "2 settings" in msg and "augment ('none' vs 'crop-flip')" in msg
    assert "label_smoothing (0.1 vs 0.0)" in msg
    with pytest.raises(CifarlensError, match="no setting"):
        one_change_guard(a, a)
    with pytest.raises(CifarlensError, match="seed"):
        one_change_guard(a, dataclasses.replace(a, seed=1))


def test_parse_change_types_and_errors():
    assert parse_change("augment=crop-flip") == ("augment", "crop-flip")
    assert parse_change("label-smoothing=0") == ("label_smoothing", 0.0)
    assert parse_change("epochs=7") == ("epochs", 7)
    assert parse_change("train_limit=none") == ("train_limit", None)
    # only keys the one-change guard accepts are offered (dataset and val_fraction are not)
    with pytest.raises(CifarlensError, match="choose from: model, epochs"):
        parse_change("device=cuda")
    with pytest.raises(CifarlensError, match="needs a float"):
        parse_change("lr=fast")
    with pytest.raises(CifarlensError, match="KEY=VALUE"):
        parse_change("augment")


def test_study_refuses_an_invalid_changed_value(tmp_path, synth100):
    with pytest.raises(CifarlensError, match="augment"):
        run_study(tmp_path / "s", preset="smoke", changes="augment=rotate",
                  overrides={"data_dir": str(synth100)}, engine=LocalEngine(progress=False), log=lambda m: None)
    assert not (tmp_path / "s" / "study.json").exists()


STUDY_EPOCHS = 3  # the shared study's; a rerun of it must ask for the same


@pytest.fixture(scope="module")
def study(tmp_path_factory, synth100):
    """A one-seed smoke study, STUDY_EPOCHS instead of the preset's 6: nothing tested on it
    depends on how well the models learn, and the module's setup stays well under a minute with
    another test process beside it (docs/benchmarks.md section 8)."""
    out = tmp_path_factory.mktemp("study") / "s"
    run_study(out, preset="smoke", seeds=1,
              overrides={"data_dir": str(synth100), "device": "cpu", "epochs": STUDY_EPOCHS},
              engine=LocalEngine(progress=False), log=lambda m: None)
    render_report(out)
    return out


def test_study_summary_matches_the_runs(study):
    from cifarlens.study.schema import read_summary

    read_summary(study / "summary.json")  # the shape the report reads, every key checked
    s = json.loads((study / "summary.json").read_text())
    assert s["data_source"] == "generated" and s["variants"][0]["change"] == {
        "key": "augment", "baseline": "none", "variant": "crop-flip"}
    for arm, model in (("baseline", s["baseline"]), ("variant", s["variants"][0]["model"])):
        m = json.loads((study / "runs" / f"{arm}-s0" / "metrics_test.json").read_text())
        assert model["test"]["top1"] == m["top1"]
        assert model["params"] == 254_948
        assert model["run"] == f"runs/{arm}-s0"  # relative: the study can move
    c = s["variants"][0]["comparison"]
    mc = c["mcnemar"]
    assert mc["both_right"] + mc["both_wrong"] + mc["a_only"] + mc["b_only"] == 1000
    diff = s["variants"][0]["model"]["test"]["top1"] - s["baseline"]["test"]["top1"]
    assert c["accuracy_difference"]["diff"] == pytest.approx(diff)
    assert (mc["b_only"] - mc["a_only"]) / 1000 == pytest.approx(diff)
    assert c["accuracy_difference"]["lo"] <= diff <= c["accuracy_difference"]["hi"]
    tr = s["variants"][0]["failures"]["tracking"]
    assert tr["fixed"] + tr["still_wrong"] + tr["other_wrong"] == tr["tracked"] == 12
    assert len(s["variants"][0]["failures"]["top"]) == 12
    for rel in s["figures"].values():
        assert (study / rel).is_file(), rel
    # stage wall times (docs/benchmarks.md "Cost beside training"): parts of the whole
    t = s["timing"]
    assert min(t["train_s"], t["evaluate_s"], t["analysis_s"]) > 0
    assert t["train_s"] + t["evaluate_s"] <= t["runs_s"] + 1e-6
    assert t["runs_s"] + t["analysis_s"] <= t["total_s"] + 1e-6


def test_tracked_failures_match_the_variant_predictions(study):
    s = json.loads((study / "summary.json").read_text())
    p = np.load(study / "runs" / "variant-s0" / "predictions_test.npz")
    names = json.loads((study / "runs" / "variant-s0" / "config.json").read_text())["class_names"]
    for row in s["variants"][0]["failures"]["top"]:
        vp = names[int(p["pred"][row["index"]])]
        assert row["variant"]["pred_name"] == vp
        assert (row["variant"]["status"] == "fixed") == (vp == row["true_name"])
    # the base rate: every baseline test error the variant gets right
    tr = s["variants"][0]["failures"]["tracking"]
    a = np.load(study / "runs" / "baseline-s0" / "predictions_test.npz")
    wrong_a = a["pred"] != a["labels"]
    assert tr["all_errors"]["errors"] == int(wrong_a.sum())
    assert tr["all_errors"]["fixed"] == int((wrong_a & (p["pred"] == p["labels"])).sum())
    # tracked failures split into suspected label errors and the rest
    ls, ot = tr["label_suspects"], tr["others"]
    assert ls["tracked"] + ot["tracked"] == tr["tracked"]
    assert ls["tracked"] == sum(r["label_error_suspect"] for r in s["variants"][0]["failures"]["top"])
    assert ls["fixed"] + ot["fixed"] == tr["fixed"]


def test_report_has_every_section_and_rebuilds(study):
    html = (study / "report.html").read_text()
    md = (study / "report.md").read_text()
    for word in ("Dataset", "Architecture", "Training", "Failure", "Grad-CAM", "Calibration",
                 "Complexity", "Reflection"):
        assert word in html and word in md
    assert "generated" in html.lower()
    # one seed: said to be one pair of trained models, not evidence about the change
    assert "not yet evidence about the setting" in md and "for one trained model per arm" in md
    assert "The comparison with the seed report does not apply: the study ran on generated " \
           "data" in md
    s = json.loads((study / "summary.json").read_text())
    assert s["variants"][0]["comparison"]["verdict_basis"] == "one_pair" and s["variants"][0]["comparison"]["seeds"] is None
    assert s["environment"]["cpu_model"] and s["environment"]["precision"] in ("bf16", "fp32")
    before = {n: (study / n).read_text() for n in ("report.html", "report.md")}
    for n in before:
        (study / n).unlink()
    r = subprocess.run([sys.executable, "-m", "cifarlens", "report", str(study)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # rebuilt from the saved artifacts alone, to the same bytes
    assert {n: (study / n).read_text() for n in before} == before


def test_rerun_reuses_finished_runs(study):
    done = {p: p.stat().st_mtime_ns for p in study.glob("runs/*/done.json")}
    (study / "summary.json").unlink()
    (study / "report.html").unlink()
    run_study(study, preset="smoke", seeds=1, overrides={"data_dir": json.loads(
        (study / "study.json").read_text())["baseline"]["data_dir"], "device": "cpu",
        "epochs": STUDY_EPOCHS},
        engine=LocalEngine(progress=False), log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in study.glob("runs/*/done.json")} == done
    assert (study / "summary.json").exists()
    render_report(study)
    assert (study / "report.html").exists()


def test_a_different_study_in_the_same_folder_is_refused(study):
    """Another baseline or other seeds are refused (another change would be added: see
    test_ablation.py)."""
    data_dir = json.loads((study / "study.json").read_text())["baseline"]["data_dir"]
    with pytest.raises(CifarlensError, match=r"another baseline \(lr 0.05 vs 0.1\)"):
        run_study(study, preset="smoke", seeds=1, changes="label_smoothing=0",
                  overrides={"data_dir": data_dir, "epochs": STUDY_EPOCHS, "lr": 0.1},
                  engine=LocalEngine(progress=False), log=lambda m: None)
    with pytest.raises(CifarlensError, match=r"seeds \[0\], not \[0, 1, 2\]"):
        run_study(study, preset="smoke", overrides={"data_dir": data_dir, "epochs": STUDY_EPOCHS},
                  engine=LocalEngine(progress=False), log=lambda m: None)


def test_report_command_on_a_non_study_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cifarlens", "report", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


def test_several_seeds_in_parallel_give_a_paired_test_and_sequential_numbers(tmp_path, synth100):
    """4 runs with --jobs 2 (spawned CPU processes): the seed-level test, and every run's
    predictions bit-identical to training it in this process, one after another, with the
    same number of threads (CPU kernels split their sums by thread, so the count matters)."""
    import torch

    from cifarlens.study.engines.base import execute
    from cifarlens.study.engines.processes import ProcessesEngine
    from cifarlens.study.plan import plan_study
    from cifarlens.study.run import plan_jobs

    out = tmp_path / "seeds"
    overrides = {"data_dir": str(synth100), "device": "cpu", "epochs": 1, "train_limit": 1000}
    lines: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # 2 jobs -> 1 thread per child
    try:
        s = run_study(out, preset="smoke", seeds=2,
                      options=StudyOptions(failures_top=4), overrides=overrides,
                      engine=ProcessesEngine(2, progress=False),
                      log=lines.append)
        s = to_json(s)  # the summary as summary.json holds it
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "baseline-s0", "baseline-s1", "variant-s0", "variant-s1"]
    assert any("up to 2 at once" in m and "1 thread(s) each" in m for m in lines)
    for name in ("baseline seed 0", "variant seed 1"):  # progress shows every run
        assert any(m.startswith(f"[{name}] epoch 1/1:") and "ETA" in m for m in lines), name
    seeds = s["variants"][0]["comparison"]["seeds"]
    a = [r["test_top1"] for r in s["baseline"]["per_seed"]]
    b = [r["test_top1"] for r in s["variants"][0]["model"]["per_seed"]]
    assert seeds["n"] == 2 and seeds["mean_a"] == pytest.approx(np.mean(a))
    assert seeds["mean_diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert seeds["std_a"] == pytest.approx(np.std(a, ddof=1))
    assert seeds["df"] == 1 and seeds["covers"] == "training seeds and test-image sampling"
    assert [m["seed"] for m in seeds["mcnemar_per_seed"]] == [0, 1]
    for m in seeds["mcnemar_per_seed"]:
        assert m["diff"] == pytest.approx((m["b_only"] - m["a_only"]) / 1000)
    assert s["variants"][0]["comparison"]["verdict_basis"] == "seeds" and s["variants"][0]["comparison"]["pair_seed"] == 0
    assert a[0] != a[1]  # the seeds really differ
    # the same runs one after another in this process, 1 thread (as each child had)
    plan, arms = plan_study("smoke", seeds=2, overrides=overrides)
    torch.set_num_threads(1)
    try:
        for arm, seed in (("baseline", 1), ("variant", 0)):
            run = Run(tmp_path / "seq" / f"{arm}-s{seed}")
            (job,) = plan_jobs(plan, [(arm, dataclasses.replace(arms[arm], seed=seed), run)],
                               StudyOptions(failures_top=4))
            execute(job, lambda m: None)
            run = run.path
            p_seq = np.load(run / "predictions_test.npz")
            p_par = np.load(out / "runs" / f"{arm}-s{seed}" / "predictions_test.npz")
            assert np.array_equal(p_seq["logits"], p_par["logits"]), (arm, seed)
    finally:
        torch.set_num_threads(threads)
    # resume: a run that lost its results is redone from its checkpoint, the others skipped
    v0 = out / "runs" / "variant-s0"
    before = np.load(v0 / "predictions_test.npz")["logits"]
    for f in ("done.json", "metrics_test.json", "predictions_test.npz"):
        (v0 / f).unlink()
    kept = (out / "runs" / "baseline-s0" / "done.json").stat().st_mtime_ns
    todo = [(arm, dataclasses.replace(arms[arm], seed=sd), Run(out / "runs" / f"{arm}-s{sd}"))
            for sd in (0, 1) for arm in ("baseline", "variant")]
    lines.clear()
    torch.set_num_threads(2)
    try:
        ProcessesEngine(2, progress=False).run(
            plan_jobs(plan, todo, StudyOptions(failures_top=4)), lines.append)
    finally:
        torch.set_num_threads(threads)
    assert any("training 1 runs" in m for m in lines)
    assert any("resuming" in m for m in lines)
    assert np.array_equal(np.load(v0 / "predictions_test.npz")["logits"], before)
    assert (out / "runs" / "baseline-s0" / "done.json").stat().st_mtime_ns == kept


# --- seeds by default, parallel runs, one environment ---------------------------------------------


def test_three_seeds_by_default_paired_by_seed():
    from cifarlens.cli import build_parser
    from cifarlens.study.plan import DEFAULT_SEEDS, plan_study

    assert DEFAULT_SEEDS == 3
    for cmd in (["study"], ["demo"]):
        a = build_parser().parse_args(cmd)
        assert a.seeds == 3 and a.jobs == 1
    plan, arms = plan_study("smoke")
    assert plan["seeds"] == [0, 1, 2]
    # the arms differ only in the change; the seed (hence split and init) is shared
    assert arms["baseline"].seed == arms["variant"].seed == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["study", "--jobs", "0"])
    plan, _ = plan_study("smoke", seeds=2, overrides={"seed": 5})
    assert plan["seeds"] == [5, 6]
    with pytest.raises(CifarlensError, match="at least 1"):
        plan_study("smoke", seeds=0)


def test_parallel_slots_divide_threads_on_cpu():
    from cifarlens.study.engines.processes import parallel_slots

    assert parallel_slots(2, "cpu", 8) == [{"gpu": None, "threads": 4}] * 2
    assert parallel_slots(3, "cpu", 2) == [{"gpu": None, "threads": 1}] * 3


def test_parallel_slots_one_run_per_gpu(monkeypatch):
    from cifarlens.study.engines import processes as st

    monkeypatch.setattr(st, "gpu_count", lambda device: 2)
    assert parallel_slots(4, "auto", 16) == [{"gpu": 0, "threads": None},
                                                {"gpu": 1, "threads": None}]


def _fake_run(folder, **env):
    folder.mkdir(parents=True)
    base = {"precision": "bf16", "device": "cpu", "device_name": "x86_64",
            "cpu_model": "Intel(R) Xeon(R) Processor (family 6, model 143, stepping 8)",
            "gpu_model": None, "torch": "2.13.0", "threads": 2}
    (folder / "config.json").write_text(json.dumps(_valid_config({**base, **env})))
    return folder


def _valid_config(environment):
    """The keys every run's config.json has (the Run reading it checks them)."""
    return {"config": {}, "model": "small", "dataset": "cifar10", "num_classes": 2,
            "class_names": ["a", "b"], "environment": environment}


def test_runs_that_resolved_differently_are_refused(tmp_path):
    from cifarlens.study.run import check_same_environment

    a = _fake_run(tmp_path / "baseline-s0")
    same = _fake_run(tmp_path / "variant-s0", threads=1)  # threads do not block a comparison
    check_same_environment([a, same])
    fp32 = _fake_run(tmp_path / "variant-s1", precision="fp32")
    with pytest.raises(CifarlensError) as e:
        check_same_environment([a, same, fp32])
    msg = str(e.value)
    assert "precision 'bf16' vs 'fp32'" in msg and "variant-s1" in msg and "\n" not in msg
    other_cpu = _fake_run(tmp_path / "variant-s2", cpu_model="AMD EPYC 9654")
    with pytest.raises(CifarlensError, match="cpu_model"):
        check_same_environment([a, other_cpu])
    # GPU index does not matter, GPU model does; a run from before cpu_model existed compares
    g0 = _fake_run(tmp_path / "g0", device="cuda:0", gpu_model="NVIDIA H200")
    g1 = _fake_run(tmp_path / "g1", device="cuda:1", gpu_model="NVIDIA H200")
    check_same_environment([g0, g1])
    with pytest.raises(CifarlensError, match="gpu_model"):
        check_same_environment([g0, _fake_run(tmp_path / "g2", device="cuda:0",
                                              gpu_model="NVIDIA A100")])
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(_valid_config({
        "precision": "bf16", "device": "cpu", "torch": "2.13.0"})))
    check_same_environment([a, old])


def test_every_run_records_precision_device_and_hardware(smoke_run):
    env = json.loads((smoke_run / "config.json").read_text())["environment"]
    assert env["precision"] in ("bf16", "fp32") and env["device"] == "cpu"
    assert env["cpu_model"] and env["gpu_model"] is None


def test_analysis_beside_training_gives_the_sequential_files(tmp_path, synth10, monkeypatch):
    """With a spare core (or a GPU) each run is evaluated, and the first baseline's failures
    explained, in a worker process while the next run trains (issue 9: analysis overlapping
    training). The files and numbers must be those of the sequential study.

    Both studies run here with one thread and 2 epochs: the worker takes the study's thread
    count, and with 2 threads each the training and the worker oversubscribed the 2 cores; on a
    busy machine this test then ran past pytest's 900 s timeout (issue 20). The 10-class data
    and 4 tracked failures keep it small; what is compared does not depend on the size."""
    import torch

    import cifarlens.study.engines.local as st

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    over = {"data_dir": str(synth10), "dataset": "cifar10", "device": "cpu", "epochs": 2}
    try:
        monkeypatch.setattr(st, "OVERLAP", "off")
        seq = run_study(tmp_path / "seq", preset="smoke", seeds=1, overrides=over,
                        options=StudyOptions(failures_top=4), engine=LocalEngine(progress=False), log=lambda m: None)
        seq = to_json(seq)  # the summary as summary.json holds it
        monkeypatch.setattr(st, "OVERLAP", "on")
        logs: list[str] = []
        s = run_study(tmp_path / "s", preset="smoke", seeds=1, overrides=over,
                      options=StudyOptions(failures_top=4),
                      engine=LocalEngine(progress=False), log=logs.append)
        s = to_json(s)  # the summary as summary.json holds it
    finally:
        torch.set_num_threads(threads)
    study, out = tmp_path / "seq", tmp_path / "s"
    assert seq["timing"]["overlapped"] is False and s["timing"]["overlapped"] is True
    assert any(m.startswith("[baseline-s0] ") and "top-1" in m for m in logs)  # worker's log
    for arm in ("baseline", "variant"):
        for name in ("predictions_test.npz", "predictions_val.npz"):
            a, b = np.load(study / "runs" / f"{arm}-s0" / name), np.load(out / "runs" / f"{arm}-s0" / name)
            assert all(np.array_equal(a[k], b[k]) for k in a.files), (arm, name)
        ma = json.loads((study / "runs" / f"{arm}-s0" / "metrics_test.json").read_text())
        mb = json.loads((out / "runs" / f"{arm}-s0" / "metrics_test.json").read_text())
        assert ma == mb
    fa = json.loads((study / "runs" / "baseline-s0" / "failures_test.json").read_text())
    fb = json.loads((out / "runs" / "baseline-s0" / "failures_test.json").read_text())
    assert fa == fb
    assert s["variants"][0]["comparison"] == seq["variants"][0]["comparison"] and s["explain"] == seq["explain"]


def test_the_analysis_worker_draws_no_progress_bar(monkeypatch):
    """The worker shares the terminal with the training bar of the study's process: its stages
    log into lines the study prints, and draw no bar of their own."""
    import cifarlens.study.engines.base as base
    from cifarlens.study.engines.base import RunJob

    calls: list[tuple] = []
    monkeypatch.setattr(base, "ensure_evaluated", lambda run, splits, figures, progress, log:
                        calls.append(("evaluate", figures, progress)))
    monkeypatch.setattr(base, "ensure_explained", lambda run, split, failures, progress, log:
                        calls.append(("explain", failures, progress)))
    job = RunJob(name="baseline-s0", arm="baseline", seed=0, run_dir="/nowhere/run", config={},
                 figures=True, failures_top=6)
    assert _overlap_job(job) == []
    assert calls == [("evaluate", ("test",), False), ("explain", 6, False)]
    calls.clear()
    _overlap_job(RunJob(name="variant-s1", arm="variant", seed=1, run_dir="/nowhere/run",
                        config={}))  # a later run: evaluate only, no figures
    assert calls == [("evaluate", (), False)]


def test_demo_leaves_a_core_for_the_analysis_unless_told(monkeypatch):
    """`cifarlens demo` with no --threads and no OMP_NUM_THREADS trains on half the cores, so
    each finished run is analysed beside the next one's training (issue 20: the demo as the
    README runs it spent 43% of its wall time outside training with torch's default threads)."""
    import torch

    import cifarlens.study.run as st

    assert demo_threads(2, cuda=False) == 1 and demo_threads(8, cuda=False) == 4
    assert demo_threads(1, cuda=False) is None and demo_threads(8, cuda=True) is None
    seen = []

    def fake_demo(out, **kw):
        seen.append(torch.get_num_threads())
        raise CifarlensError("stop here")

    before = torch.get_num_threads()
    monkeypatch.setattr(st, "demo", fake_demo)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert main(["demo", "--out", "unused"]) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert main(["demo", "--out", "unused"]) == 1  # the user's choice is kept
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert main(["demo", "--out", "unused", "--threads", "2"]) == 1
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2, 2]
