"""evaluate, failures and the CLI around them, on the shared smoke run of generated data."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cifarlens.analysis.failures import class_thresholds, rank_failures
from cifarlens.analysis.metrics import apply_temperature, softmax
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.stages.evaluate import evaluate
from cifarlens.stages.failures import find_failures


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, smoke_run):
    import shutil

    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(smoke_run, run)
    evaluate(run, ("val", "test"), device="cpu", log=lambda m: None)
    find_failures(run, "test", log=lambda m: None)
    return run


def test_evaluate_writes_predictions_metrics_and_figures(evaluated):
    from sklearn.metrics import accuracy_score

    p = Run(evaluated).predictions("test")
    assert p["logits"].shape == (1000, 100) and p["indices"].tolist() == list(range(1000))
    m = json.loads((evaluated / "metrics_test.json").read_text())
    assert m["top1"] == pytest.approx(accuracy_score(p["labels"], p["pred"]))
    assert np.array(m["confusion_matrix"]).sum() == 1000
    assert 0.0 < m["ece"] < 1 and m["temperature_scaling"]["fitted_on"] == "val"
    # the temperature minimises val NLL, so on val it can only help (T = 1 is a candidate)
    mv = json.loads((evaluated / "metrics_val.json").read_text())["temperature_scaling"]
    assert mv["nll_after"] <= mv["nll_before"] + 1e-9 and mv["temperature"] == m[
        "temperature_scaling"]["temperature"]
    assert 0 <= m["superclass"]["within_superclass_share"] <= 1
    assert m["superclass"]["chance_share"] == pytest.approx(4 / 99)
    for rel in m["figures"].values():
        assert (evaluated / rel).read_bytes()[:4] == b"\x89PNG"
    index = json.loads((evaluated / "analysis.json").read_text())
    assert {"evaluate_val", "evaluate_test", "failures_test"} <= set(index)


def test_saved_logits_equal_a_fresh_forward_pass(evaluated):
    from cifarlens.runs import load_model, load_split

    model, _ = load_model(evaluated, "best")
    x, y, _ = load_split(evaluated, "test")
    with torch.no_grad():
        fresh = model(x[:64]).numpy()
    assert np.allclose(fresh, Run(evaluated).predictions("test")["logits"][:64], atol=1e-4)


def test_failures_are_ranked_and_flag_flipped_labels(evaluated, synth100):
    f = json.loads((evaluated / "failures_test.json").read_text())
    fails = f["failures"]
    p = Run(evaluated).predictions("test")
    assert f["total_wrong"] == int((p["pred"] != p["labels"]).sum()) == len(fails)
    conf = [x["confidence"] for x in fails]
    assert conf == sorted(conf, reverse=True)
    assert all(x["true_name"] != x["pred_name"] and x["true_rank"] >= 2 for x in fails)
    # the generated test set has 5% deliberately flipped labels: the flag should find them
    info = json.loads((synth100 / "cifar-100-python" / "cifarlens-synth.json").read_text())
    flipped = {r["index"] for r in info["flipped_labels"]["test"]}
    suspects = {x["index"] for x in fails if x["label_error_suspect"]}
    assert len(suspects & flipped) >= 0.5 * len(flipped)
    assert len(suspects & flipped) >= 0.5 * len(suspects)


def test_rank_failures_orders_by_confidence_then_margin():
    probs = np.array([
        [0.10, 0.80, 0.10],  # wrong (label 0), conf .8, margin .7
        [0.05, 0.15, 0.80],  # wrong (label 0), conf .8, margin .65
        [0.90, 0.05, 0.05],  # right
        [0.00, 0.95, 0.05],  # wrong (label 2), conf .95
    ])
    labels = np.array([0, 0, 0, 2])
    r = rank_failures(labels, probs, np.array([10, 11, 12, 13]), ["a", "b", "c"])
    assert [x["index"] for x in r] == [13, 10, 11]
    assert r[0]["true_prob"] == pytest.approx(0.05) and r[0]["true_rank"] == 2
    assert r[1]["margin"] == pytest.approx(0.7)


def test_label_error_flag_needs_confident_prediction_and_tiny_true_probability():
    probs = np.array([
        [0.90, 0.10, 0.00],  # class 0 images: self-confidence ~0.9
        [0.80, 0.20, 0.00],
        [0.01, 0.99, 0.00],  # class 1 images
        [0.00, 0.98, 0.02],
        [0.99, 0.005, 0.005],  # labelled 1, model is sure it is 0: suspect
        [0.60, 0.39, 0.01],  # labelled 1, model unsure: a model error, not a label error
    ])
    labels = np.array([0, 0, 1, 1, 1, 1])
    t = class_thresholds(labels, probs)
    assert t[0] == pytest.approx(0.85)
    r = {x["index"]: x for x in rank_failures(labels, probs, np.arange(6), ["a", "b", "c"])}
    assert r[4]["label_error_suspect"] and not r[5]["label_error_suspect"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cifarlens", *args], capture_output=True,
                          text=True, timeout=120)


def test_bad_runs_give_one_clear_line(tmp_path, run_copy):
    for args in (["evaluate", str(tmp_path / "missing")], ["failures", str(tmp_path)],
                 ["explain", str(tmp_path / "nope")]):
        r = _cli(*args)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a cifarlens run" in lines[0] and "Traceback" not in r.stderr
    r = _cli("evaluate", str(run_copy), "--split", "train")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "val" in r.stderr
    # a checkpoint from another model
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["model"] = "baseline"
    (run_copy / "config.json").write_text(json.dumps(cfg))
    r = _cli("evaluate", str(run_copy))
    assert r.returncode == 1 and "does not match its config" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_predictions_are_explained(run_copy):
    with pytest.raises(CifarlensError, match="cifarlens evaluate"):
        Run(run_copy).predictions("test")


def test_confident_means_temperature_scaled_and_raw_stays_visible(evaluated):
    from cifarlens.analysis.failures import CONFIDENT

    f = json.loads((evaluated / "failures_test.json").read_text())
    t = json.loads((evaluated / "metrics_test.json").read_text())["temperature_scaling"]
    assert f["temperature"] == pytest.approx(t["temperature"])
    assert "temperature-scaled" in f["confidence_basis"] and f["confident_threshold"] == CONFIDENT
    p = Run(evaluated).predictions("test")
    scaled = apply_temperature(p["logits"], t["temperature"])
    raw = softmax(p["logits"])
    wrong = p["pred"] != p["labels"]
    assert f["confident_wrong"] == int((wrong & (scaled.max(1) >= CONFIDENT)).sum())
    assert f["confident_wrong_raw"] == int((wrong & (raw.max(1) >= CONFIDENT)).sum())
    top = f["failures"][0]
    assert top["confidence"] == pytest.approx(scaled[top["position"]].max(), rel=1e-5)
    assert top["raw_confidence"] == pytest.approx(raw[top["position"]].max(), rel=1e-5)
    assert f["cleanlab_issues"] == sum(x["cleanlab_issue"] for x in f["failures"])


def test_cleanlab_flags_a_confusable_flip_the_rule_misses():
    from cifarlens.analysis.failures import label_issues

    labels = np.repeat(np.arange(3), 30)
    probs = np.full((90, 3), 0.02)
    probs[np.arange(90), labels] = 0.96
    # image 0 is labelled 0 but the model is as sure of class 1 as on real class-1 images, and
    # leaves 3% on the given label (a confusable class): over the rule's 2% cut, not cleanlab's
    probs[0] = [0.03, 0.97, 0.0]
    rule = label_issues(labels, probs, method="rule")
    cl = label_issues(labels, probs, method="cleanlab")
    assert not rule[0] and cl[0]
    assert cl.sum() == 1 and rule.sum() == 0
    with pytest.raises(CifarlensError, match="unknown label-error method"):
        label_issues(labels, probs, method="guess")


def test_gallery_title_is_not_cut_like_a_label(monkeypatch, tmp_path):
    """The gallery's title names how confidence was measured; it was cut at a label's 40 chars
    ("Most confident failures (test, ranked; ...")."""
    import cifarlens.figures.plots as P

    figs = []
    monkeypatch.setattr(P, "save_figure", lambda fig, path, **kw: figs.append(fig))
    title = "Most confident failures (test, ranked; confidence after temperature scaling, T = 0.43)"
    fail = {"position": 0, "rank": 1, "index": 7, "true_name": "a", "pred_name": "b",
            "confidence": 0.99, "label_error_suspect": False}
    P.plot_gallery(np.zeros((1, 3, 32, 32), np.uint8), [fail], tmp_path / "g.png", title=title)
    assert figs[0]._suptitle.get_text() == title
