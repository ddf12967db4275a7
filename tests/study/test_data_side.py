"""The data side of a study (issue 24) wired through the study: the engine's analysis phase
makes the features and neighbours through the pipeline, build_data_side turns the runs into the
typed summary block and the label-issue CSV, and summary.json stays readable without it."""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil

import numpy as np
import pytest
from summaries import summary_json

from cifarlens._io import save_npz
from cifarlens.analysis.neighbours import nearest
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.study.data_side import TOP_ISSUES, build_data_side
from cifarlens.study.engines.base import RunJob, analysis_phase
from cifarlens.study.options import StudyOptions
from cifarlens.study.run import plan_jobs
from cifarlens.study.schema import summary_from_json, to_json
from cifarlens.study.schema_data_side import DataSide
from cifarlens.training.config import make_config
from cifarlens.training.features import features

NB = {"index": 7, "label": 2, "similarity": 0.91, "name": "oak_tree"}
DATA_SIDE = {
    "layer": "classifier.4", "k": 1, "what": "alike, not a cause", "run": "runs/baseline-s0",
    "failures": [{"rank": 1, "index": 1234, "true_name": "skyscraper", "pred_name": "mountain",
                  "share": 0.75, "claim": False, "pred": [NB], "true": [NB]}],
    "share": {"n_failures": 30, "n_tested": 28, "n_classes": 9, "n_reference": 60,
              "mean_share": 0.4, "mean_reference": 0.1, "mean_diff": 0.3, "ci": [0.2, 0.4],
              "p": 0.0001, "alpha": 0.05, "resamples": 9999, "supported": True, "noise": "x",
              "n_claims": 0},
    "changes": [{"slug": "variant", "change": "augment=crop-flip", "seed": 0,
                 "fixed": {"n": 12, "n_clusters": 7, "mean_base": 0.4, "mean_variant": 0.2,
                           "mean_diff": -0.2, "ci": [-0.3, -0.1], "p": 0.01, "fell": True,
                           "rose": False, "noise": "x"},
                 "still_wrong": {"n": 3, "n_clusters": 2, "mean_base": 0.5,
                                 "mean_variant": 0.5, "mean_diff": 0.0, "ci": [None, None],
                                 "p": None, "fell": False, "rose": False, "noise": "x"}}],
    "label_issues": {"method": "cleanlab", "n_train": 100, "n_covered": 20, "coverage": 0.2,
                     "n_flagged": 1, "min_share": 0.5,
                     "seeds": [{"seed": 0, "n": 20, "flagged": 1, "val_top1": 0.7}],
                     "top": [{"rank": 1, "index": 3, "label": "apple", "suggested": "pear",
                              "self_confidence": 0.01, "votes": 1, "covering": 1,
                              "neighbours": [NB]}], "csv": "label_issues.csv"},
}


def test_summaries_without_a_data_side_still_read_and_one_with_it_round_trips():
    old = summary_json()
    del old["data_side"]  # a version-2 summary.json written before issue 24
    assert summary_from_json(old).data_side is None
    new = summary_json(data_side=DATA_SIDE)
    s = summary_from_json(new)
    assert isinstance(s.data_side, DataSide) and s.data_side.failures[0].pred[0].name == "oak_tree"
    assert to_json(s)["data_side"] == DATA_SIDE
    bad = summary_json(data_side={**DATA_SIDE, "failures": [{**DATA_SIDE["failures"][0],
                                                             "odd": 1}]})
    with pytest.raises(CifarlensError, match=r"summary.json.data_side.failures\[0\] has an "
                                             "unknown key 'odd'"):
        summary_from_json(bad, "summary.json")


def test_the_first_seeds_jobs_ask_for_features_and_the_first_baseline_for_neighbours(tmp_path):
    cfg = make_config("smoke", data_dir=str(tmp_path), device="cpu")
    plan = {"seeds": [3, 4]}
    todo = [(arm, dataclasses.replace(cfg, seed=s), Run(tmp_path / f"{arm}-s{s}"))
            for s in (3, 4) for arm in ("baseline", "variant")]
    jobs = {j.name: j for j in plan_jobs(plan, todo, StudyOptions(failures_top=5))}
    assert [jobs[n].neighbours for n in ("baseline-s3", "variant-s3", "baseline-s4",
                                         "variant-s4")] == [True, True, False, False]
    assert jobs["baseline-s3"].failures_top == 5 and jobs["variant-s3"].failures_top is None


def test_the_analysis_phase_makes_features_and_the_baselines_neighbours(analysed_copy, tmp_path,
                                                                       monkeypatch):
    from cifarlens.study.engines import base

    explained = []  # Grad-CAM has its own tests: here only that it comes first
    monkeypatch.setattr(base, "ensure_explained", lambda run, *a, **k: explained.append(run))
    run = Run(analysed_copy)
    assert run.current("neighbours", "test") is None
    variant = tmp_path / "variant"
    shutil.copytree(analysed_copy, variant)
    job = RunJob(name="variant-s0", arm="variant", seed=0, run_dir=str(variant), config={},
                 neighbours=True)
    analysis_phase(job, lambda m: None)  # a variant: features only, its failures untouched
    assert all(Run(variant).current("features", s) is not None for s in ("train", "test"))
    assert Run(variant).current("neighbours", "test") is None
    job = RunJob(name="baseline-s0", arm="baseline", seed=0, run_dir=str(analysed_copy),
                 config={}, failures_top=3, neighbours=True)
    analysis_phase(job, lambda m: None)
    res = run.current("neighbours", "test")
    assert res is not None and all(len(f["neighbours"]["pred"]) == 8 for f in res["failures"])
    assert [r.path for r in explained] == [run.path]
    stamp = run.file(Run.failures_name("test")).stat().st_mtime_ns
    analysis_phase(job, lambda m: None)  # everything current: nothing is made again
    assert run.file(Run.failures_name("test")).stat().st_mtime_ns == stamp
    job = RunJob(name="baseline-s1", arm="baseline", seed=1, run_dir=str(variant), config={})
    analysis_phase(job, lambda m: None)  # a later seed asks for none of it
    assert Run(variant).current("neighbours", "test") is None


def test_build_data_side_from_the_runs(analysed_copy, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    variant = tmp_path / "variant"
    shutil.copytree(analysed_copy, variant)
    p = Run(variant).predictions("test")
    wrong = np.flatnonzero(p["pred"] != p["labels"])
    pred = p["pred"].copy()
    pred[wrong[::3]] = p["labels"][wrong[::3]]  # the "variant" (same model) fixes a third
    save_npz(Run(variant).file(Run.predictions_name("test")), **{**p, "pred": pred})
    ra, rb = Run(analysed_copy), Run(variant)
    plan = {"seeds": [0], "changes": [{"key": "augment", "baseline": "none",
                                       "variant": "crop-flip", "slug": "variant"}]}
    ds = build_data_side(out, plan, {"baseline": {0: ra}, "variant": {0: rb}}, 4,
                         lambda m: None)
    # the tracked failures: the first 4 of failures_test.json, which now holds every neighbour
    res = ra.current("neighbours", "test")
    names = ra.data().class_names
    assert [f.index for f in ds.failures] == [f["index"] for f in res["failures"][:4]]
    f0, r0 = ds.failures[0], res["failures"][0]
    assert [(n.index, n.label, n.similarity) for n in f0.true] == \
        [(e["index"], e["label"], e["similarity"]) for e in r0["neighbours"]["true"]]
    assert {n.name for n in f0.pred} == {names[r0["pred"]]}
    assert to_json(ds.share)["mean_diff"] == res["neighbours"]["summary"]["mean_diff"]
    assert ds.share.n_claims == sum(f["neighbour_claim"] for f in res["failures"])
    # the change: the variant fixed a third; the same features, so the share did not move
    ch = ds.changes[0]
    assert ch.change == "augment=crop-flip" and ch.fixed.n == len(wrong[::3])
    assert ch.fixed.mean_diff == pytest.approx(0.0) and not ch.fixed.fell
    # label issues from the (one) seed's val split
    li = ds.label_issues
    split = ra.split_indices()
    assert li.n_covered == len(split["val"]) and li.n_train == len(ra.data().train_y)
    assert li.coverage == pytest.approx(len(split["val"]) / li.n_train)
    assert len(li.top) == min(TOP_ISSUES, li.n_flagged) and li.n_flagged > 0
    conf = [r.self_confidence for r in li.top]
    assert conf == sorted(conf) and all(r.index in set(split["val"].tolist()) for r in li.top)
    assert li.seeds[0].val_top1 == pytest.approx(ra.metrics("val")["top1"])
    rows = list(csv.DictReader(io.StringIO((out / li.csv).read_text())))
    assert len(rows) == li.n_flagged and rows[0]["index"] == str(li.top[0].index)
    # a flagged (val) image's neighbours: the 8 nearest training images of the baseline's
    # training split, by a direct computation
    first = li.top[0]
    xtr, ytr, itr = ra.split_arrays("train")
    model = ra.model()
    ftr = features(model, xtr, ra.norm)
    fq = features(model, ra.data().train_x[[first.index]], ra.norm)
    direct = nearest(fq, ftr, ytr, None, 8)
    assert [n.index for n in first.neighbours] == itr[direct["all_index"][0]].tolist()
    assert [n.label for n in first.neighbours] == ytr[direct["all_index"][0]].tolist()
    assert first.index not in [n.index for n in first.neighbours]
