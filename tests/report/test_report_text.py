"""The report's text defects (issue 12): each sentence says only what its numbers support."""

from __future__ import annotations

import json
import math

import pytest
import test_report
from test_report import _text, _three_seeds, make_study, make_summary, render

from cifarlens.analysis.intervals import newcombe_diff_ci, wilson
from cifarlens.report.convergence import still_improving
from cifarlens.report.formats import fmt_points
from cifarlens.report.render import render_report
from cifarlens.report.sections import describe_cost

pngs = test_report.pngs  # the figure fixture, shared

# --------------------------------------------------------------------------- not converged


def _curve(values: list[float]) -> list[float]:
    return [float(x) for x in values]


@pytest.mark.parametrize("values, higher, improving", [
    # rising to the very end: best at the last epoch, positive slope
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.72, 0.74], True, True),
    # plateau reached mid-way, later epochs a little worse: best epoch not in the last 10%
    ([0.1, 0.3, 0.5, 0.6, 0.7, 0.69, 0.68, 0.69, 0.68, 0.69], True, False),
    # a last-epoch blip after a decline: best is last, but the last-5 slope is negative
    ([0.5, 0.6, 0.7, 0.7, 0.7, 0.70, 0.66, 0.62, 0.58, 0.705], True, False),
    # loss still falling at the end
    ([3.0, 2.5, 2.2, 2.0, 1.9, 1.8, 1.75, 1.7, 1.68, 1.66], False, True),
    # loss turned up (overfitting): not improving
    ([3.0, 2.0, 1.6, 1.5, 1.55, 1.6, 1.7, 1.8, 1.9, 2.0], False, False),
    # a flat curve is not improving; one epoch has no slope
    ([0.5] * 10, True, False),
    ([0.5], True, False),
])
def test_still_improving_on_constructed_histories(values, higher, improving):
    got = still_improving(_curve(values), higher)
    assert (got is not None) == improving, got
    if got:
        assert got["best_epoch"] == len(values) and got["epochs"] == len(values)
        assert (got["slope"] > 0) == higher


def test_still_improving_window_is_the_last_tenth_and_five_epochs():
    # 50 epochs, best at epoch 49 (within the last 5 = 10%), rising over the last 5 on average
    v = [i / 100 for i in range(45)] + [0.58, 0.60, 0.59, 0.62, 0.61]
    assert still_improving(v)["best_epoch"] == 49
    # best at epoch 45 of 50: just outside the last 10%
    v2 = [i / 100 for i in range(44)] + [0.9, 0.5, 0.51, 0.52, 0.53, 0.54]
    assert still_improving(v2) is None


def _write_runs(study, runs):
    for name, accs in runs.items():
        d = study / "runs" / name
        d.mkdir(parents=True)
        d.joinpath("metrics.jsonl").write_text("\n".join(
            json.dumps({"epoch": i + 1, "val_acc": a, "val_loss": 5 - 3 * a})
            for i, a in enumerate(accs)) + "\nnot json\n")


def test_not_converged_warning_in_the_report(tmp_path, pngs):
    s = make_summary()
    study, _ = make_study(tmp_path, pngs, s)
    rising = [0.1 * i for i in range(1, 9)]
    flat = [0.1, 0.3, 0.5, 0.6, 0.7, 0.69, 0.68, 0.69]
    _write_runs(study, {"baseline-s0": rising, "variant-s0": flat})
    h, m = (p.read_text(encoding="utf-8") for p in render_report(study))
    for doc in map(_text, (h, m)):
        assert "Not converged: validation accuracy still rising in 1 of 2 runs (baseline-s0)" in doc
        assert "validation loss still falling in 1 of 2 runs (baseline-s0)" in doc
    # converged runs: no warning at all
    study2, _ = make_study(tmp_path / "b", pngs, s)
    _write_runs(study2, {"baseline-s0": flat, "variant-s0": flat})
    h2 = render_report(study2)[0].read_text(encoding="utf-8")
    assert "Not converged" not in h2


# --------------------------------------------------------------------------- cost sentence


def test_free_at_inference_only_when_the_seed_level_test_says_it_helped(tmp_path, pngs):
    same = {"params": 100, "flops": 1000}
    assert "free at inference" in describe_cost(same, same, "augment", "rose")
    for verdict in ("fell", "no_change", "borderline", "unknown", ""):
        assert "free" not in describe_cost(same, same, "augment", verdict), verdict
    helped = _three_seeds(make_summary(), mean_diff=0.0611, ci=[0.0511, 0.0711], p=0.0013)
    hurt = _three_seeds(make_summary(), mean_diff=-0.02, ci=[-0.035, -0.005], p=0.03)
    one_pair = make_summary()  # McNemar significant, but one pair is no verdict
    for s, free in ((helped, True), (hurt, False), (one_pair, False)):
        h, m, _ = render(tmp_path / str(len(list(tmp_path.iterdir()))), pngs, s)
        assert ("free at inference" in h) == free and ("free at inference" in m) == free


# --------------------------------------------------------------------------- per-class changes


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Stat Med 17:873, Table II example (56/70 vs 48/80): 0.0524 to 0.3339
    lo, hi = newcombe_diff_ci(48, 80, 56, 70)
    assert math.isclose(lo, 0.0524, abs_tol=5e-5) and math.isclose(hi, 0.3339, abs_tol=5e-5)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=5e-5)


def test_per_class_change_states_n_and_an_interval(tmp_path, pngs):
    s = make_summary()
    s["comparison"]["per_class"] = {
        "improved": [{"name": "whale", "n": 10, "before": 0.3, "after": 0.7, "delta": 0.4}],
        "worsened": [{"name": "lamp", "before": 0.6, "after": 0.5, "delta": -0.1}]}
    h, m, _ = render(tmp_path, pngs, s)
    lo, hi = newcombe_diff_ci(3, 10, 7, 10)
    ci = f"[{fmt_points(lo)}, {fmt_points(hi)}]"
    assert lo < 0 < 0.4  # +40 points on 10 images: the interval still reaches below zero
    for doc in map(_text, (h, m)):
        assert f"whale (+40.00 points on 10 test images, 95% CI {ci})" in doc
        assert "lamp (-10.00 points; the number of test images was not recorded" in doc
        assert "not adjusted for picking the largest changes" in doc
        assert "no class-level change is called significant" in doc
        assert "most improved class is whale (+40.00 points)" not in doc


# --------------------------------------------------------------------------- small texts


def test_confident_error_table_only_when_a_class_has_two(tmp_path, pngs):
    s = make_summary()
    s["failures"]["per_class_confident_errors"] = [{"name": n, "count": 1}
                                                   for n in ("rocket", "cup", "house")]
    h, m, _ = render(tmp_path / "ones", pngs, s)
    for doc in (h, m):
        assert "Classes with the most confident errors" not in doc
        assert "No class has more than one confident error" in doc
    s["failures"]["per_class_confident_errors"][0]["count"] = 2
    h, m, _ = render(tmp_path / "two", pngs, s)
    for doc in (h, m):
        assert "Classes with the most confident errors" in doc
        assert "No class has more than one confident error" not in doc


def test_true_class_evidence_caption_explains_black(tmp_path, pngs):
    h, m, _ = render(tmp_path, pngs)
    for doc in map(_text, (h, m)):
        assert ('In the "evidence for the true class" panels, black means no evidence for that '
                "class") in doc


def test_a_probability_short_of_one_never_reads_as_100_percent():
    """Temperature-scaled confidences were printed as '100.00%' (issue 20)."""
    from cifarlens.report.formats import fmt_pct

    assert fmt_pct(0.99996) == ">99.99%" and fmt_pct(1.0) == "100.00%"
    assert fmt_pct(0.00001) == "<0.01%" and fmt_pct(0.0) == "0.00%"
    assert fmt_pct(0.6291) == "62.91%" and fmt_pct(0.99996, 1) == ">99.9%"
