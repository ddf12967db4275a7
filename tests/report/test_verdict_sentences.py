"""Every sentence builder on constructed inputs with known answers, so that no sentence can drift
from its rule. The decision records are made by the analysis functions themselves from
constructed per-seed numbers (as the study will), then read by the builders as plain dicts."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cifarlens.analysis.calibration_stats import ece_scaling_intervals, ece_seed_change
from cifarlens.analysis.power import (
    MAX_SEEDS_PLANNED,
    decide,
    minimal_detectable_effect,
    prob_improvement,
    seeds_needed,
)
from cifarlens.analysis.sequential import sequential_rule, wave_looks
from cifarlens.analysis.stats import holm, paired_seed_test
from cifarlens.analysis.superclass_stats import superclass_cluster_test
from cifarlens.report import sentences as S
from cifarlens.report import verdicts as V
from cifarlens.report.formats import fmt_p

CONCLUSIONS = ("the change helped", "the change hurt", "equivalent within", "better calibrated",
               "worse calibrated", "equally calibrated")


def _dec(points, margin=0.01, **kw):
    """A decision record as summary.json will carry it (JSON round trip: no numpy, no tuples)."""
    return json.loads(json.dumps(decide(np.asarray(points) / 100, margin, **kw).as_dict()))


def _no_conclusion(text: str) -> None:
    for word in CONCLUSIONS:
        assert word not in text, (word, text)


# --------------------------------------------------------------------------- the accuracy verdict


def test_helped_states_interval_test_noise_and_power():
    pts = [3.1, 2.9, 3.0, 3.2]
    d = _dec(pts)
    t = V.describe_decision(d, before=0.63, after=0.6605)
    ref = paired_seed_test(np.zeros(4), np.asarray(pts) / 100)
    assert t.startswith("across 4 seeds, the mean test accuracy rose by 3.05 points from 63.00% "
                        "to 66.05%")
    assert f"95% CI [{S.fmt_points(ref['lo'])}, {S.fmt_points(ref['hi'])}]" in t
    assert "paired t-test, 3 degrees of freedom, p = 2.1e-05" in t
    assert "covers training seeds" in t and t.count("the change helped") == 1
    mde = minimal_detectable_effect(np.std(np.asarray(pts) / 100, ddof=1), 4)
    assert f"could detect changes of about {V._about(mde)} points" in t
    assert "these 4 seeds suffice to detect 1 point" in t
    assert V.verdict_lead(d) == "The change helped" and V.ablation_word(d) == "helped"


def test_hurt_and_a_small_significant_change():
    t = V.describe_decision(_dec([-3.1, -2.9, -3.0, -3.2]))
    assert "fell by 3.05 points" in t and "the change hurt" in t and "rose" not in t
    small = V.describe_decision(_dec([0.21, 0.19, 0.20, 0.22]))
    assert "the change helped, though by less than the ±1 point margin" in small


def test_equivalent_within_the_margin():
    d = _dec([-0.1, 0.05, 0.1, 0.0, -0.05])
    t = V.describe_decision(d)
    assert d["decision"] == "equivalent"
    assert "two one-sided tests place it within ±1 point (90% CI [-0.08, 0.08]" in t
    assert t.count("equivalent within ±1 point") == 1
    assert V.verdict_lead(d) == "The change made no difference beyond ±1 point"
    assert V.ablation_word(d) == "equivalent within ±1 point"
    half = V.describe_decision(_dec([-0.1, 0.05, 0.1, 0.0, -0.05], margin=0.005))
    assert "within ±0.5 points" in half


def test_not_decided_is_the_issues_smoke_study_with_its_power():
    d = _dec([-5.5, -8.0, -2.5])
    t = V.describe_decision(d)
    assert "changed by -5.33 points (95% CI [-12.17, 1.51]" in t
    assert "not decided, as the interval holds 0 and it reaches beyond ±1 point" in t
    sd = np.std(np.array([-5.5, -8.0, -2.5]) / 100, ddof=1)
    assert "with 3 seeds this study could detect changes of about 9.0 points" in t
    assert minimal_detectable_effect(sd, 3) == pytest.approx(0.0899, abs=5e-5)
    assert f"about {seeds_needed(sd, 0.01)} seeds would detect 1 point" in t
    assert V.verdict_lead(d) == "Not decided with 3 seeds"
    _no_conclusion(t)
    # the 2-seed real-image study of the issue: both seeds lost 5-6 points
    two = V.describe_decision(_dec([-5.0, -6.0]))
    assert "not decided" in two and "1 degree of freedom" in two
    _no_conclusion(two)


def test_no_detectable_difference_and_not_tested():
    t = V.describe_decision(_dec([-5.5, -8.0, -2.5], margin=None))
    assert "no detectable difference (the interval holds 0; no equivalence margin was set" in t
    assert "could detect changes of about 9.0 points" in t
    _no_conclusion(t)
    one = V.describe_decision(_dec([2.0]))
    assert "nothing about the change is tested" in one and "could not detect any change" in one
    same = V.describe_decision(_dec([2.0, 2.0, 2.0]))
    assert "identical" not in same and "same difference" in same
    _no_conclusion(one + same)
    assert V.verdict_lead(_dec([2.0])) == "The change's effect was not tested"


def test_power_sentence_cases():
    assert V.PLANNED_SEEDS_TEXT == f"{MAX_SEEDS_PLANNED:,}"
    wide = {"n": 3, "mde": 0.5, "seeds_for_detect": None, "detect": 0.01, "alpha": 0.05,
            "power": 0.8}
    assert V.describe_power(wide).endswith("more than 1,000 seeds would be needed to detect "
                                           "1 point")
    assert "about 50 points" in V.describe_power(wide)
    assert V._about(0.0082) == "0.82" and V._about(0.123) == "12" and V._about(0.0899) == "9.0"
    assert V.margin_text(0.01) == "±1 point" and V.margin_text(0.025) == "±2.5 points"


def test_headline_uses_the_holm_adjusted_decision_of_the_ablation_table():
    # the issue's constructed case: p = 0.030 alone, Holm 0.060 over 2 changes
    pts = np.array([-1.4, -2.0, -2.6])
    alone = _dec(pts, margin=0.005)
    assert alone["decision"] == "hurt" and 0.025 < alone["p_value"] < 0.05
    p_holm = holm([alone["p_value"], 0.4])[0]
    row = _dec(pts, margin=0.005, p_adjusted=p_holm)
    seeds_block = {"decision": alone}
    ablation = {"rows": [{"slug": "variant", "decision": row},
                         {"slug": "lr=0.1", "decision": _dec([0.1, -0.2, 0.3])}]}
    head = V.headline_decision(seeds_block, ablation, slug="variant")
    assert head == row and V.verdict_lead(head) == "Not decided with 3 seeds"
    assert V.ablation_word(ablation["rows"][0]["decision"]) == "not decided"
    t = V.describe_decision(head, family=2)
    assert f"Holm-adjusted over 2 changes p = {fmt_p(p_holm)}" in t
    assert "the interval excludes 0, but the Holm-adjusted p is not below 5%, and it reaches" in t
    _no_conclusion(t)
    # a one-change study: the seed block's own decision
    assert V.headline_decision(seeds_block, None) == alone
    assert V.headline_decision(None, None) is None


# --------------------------------------------------------------------------- around the verdict


def test_prob_improvement_noise_and_sequential_sentences():
    pi = prob_improvement([0.60, 0.61, 0.62], [0.63, 0.64, 0.61])
    t = V.describe_prob_improvement(pi)
    assert t.startswith("P(variant > baseline) = 0.67 (share of the seeds") and "0.00 to 1.00" in t
    assert "not as a verdict" in t
    n = V.describe_noise({"n_seeds": 3, "seed_sd": 0.005, "image_sampling_sd": 0.0045,
                          "test_set_var": 0.003 ** 2, "se_both": 0.0042})
    assert "SD of 0.50 points" in n and "about 0.45 points" in n and "(SD 0.30 points)" in n
    looks = wave_looks(1)
    stop = dataclasses.asdict(sequential_rule(np.array([3.1, 2.9, 3.0]) / 100, looks, 0.01))
    t = V.describe_sequential(json.loads(json.dumps(stop)))
    assert t.startswith("The sequential rule stopped after 3 seeds of at most 10: helped")
    assert "|t| of at least 48.71" in t and "looks after 3, 4, 5, 6, 7, 8, 9, 10 seeds" in t
    go = dataclasses.asdict(sequential_rule(np.array([1.0, -1.0, 2.0]) / 100, looks, 0.01))
    assert V.describe_sequential(go).startswith("After 3 seeds the sequential rule continues")


# --------------------------------------------------------------------------- calibration


def test_calibration_is_concluded_only_from_the_seed_level_test():
    base = np.array([0.080, 0.090, 0.085])
    mixed = V.describe_calibration_verdict(
        ece_seed_change(base, base + np.array([0.0141, -0.0354, 0.0384]), margin=0.01))
    assert "per seed +1.41, -3.54, +3.84" in mixed and "nothing is concluded" in mixed
    assert "not decided" in mixed
    _no_conclusion(mixed)
    better = V.describe_calibration_verdict(ece_seed_change(base, base - [0.020, 0.021, 0.019]))
    assert "2.00 points lower than the baseline's on average" in better
    assert better.endswith("it is better calibrated before temperature scaling.")
    worse = V.describe_calibration_verdict(ece_seed_change(base, base + [0.020, 0.021, 0.019]))
    assert "higher" in worse and "it is worse calibrated" in worse
    same = V.describe_calibration_verdict(
        ece_seed_change(base, base + [0.0005, -0.0004, 0.0001], margin=0.01))
    assert "within ±1 point" in same and same.endswith("the two are equally calibrated.")
    # the issue's one-pair case: 18.17% vs 18.18% is numbers only, as is any single seed
    pair = V.describe_calibration_verdict(None, 0.1817, 0.1818, pair_seed=0)
    assert "18.17%" in pair and "18.18%" in pair and "the seed-0 pair" in pair
    one = V.describe_calibration_verdict(ece_seed_change([0.08], [0.2]), 0.08, 0.2)
    for t in (pair, one):
        assert "not a test of calibration" in t
        _no_conclusion(t)


def test_ece_interval_sentence_states_its_numbers_and_noise():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(500, 10)) * 3, rng.integers(0, 10, 500)
    iv = ece_scaling_intervals(z, y, 2.0, n_boot=200)
    t = V.describe_ece_intervals("baseline", iv)
    for x in (iv["before"], iv["after"]):
        assert f"{S.fmt_pct(x['ece'])} (95% interval {S.fmt_pct(x['lo'])} to " \
               f"{S.fmt_pct(x['hi'])})" in t
    assert f"changed it by {S.fmt_points(iv['change']['diff'], signed=True)} points" in t
    assert "500 test images" in t and "not seeds" in t
    assert V.describe_ece_intervals("variant", None) == "The variant's ECE interval was not computed."


# --------------------------------------------------------------------------- superclasses


def _superclass_errors(within: list[int]) -> tuple[np.ndarray, np.ndarray]:
    y, p = [], []
    for c, k in enumerate(within):
        y += [c] * 20
        p += [c] * 10 + [5 * (c // 5) + (c + 1) % 5] * k + [(c + 5) % 100] * (10 - k)
    return np.array(y), np.array(p)


def test_superclass_sentences_old_binomial_and_new_clustered():
    f2c = np.repeat(np.arange(20), 5)
    above = superclass_cluster_test(*_superclass_errors([4] * 100), f2c, n_boot=300)
    t = V.describe_superclass_clustered("baseline", above, 0.7)
    assert "40.00% of its errors (400 of 1,000)" in t and "4.04%" in t
    assert t.endswith(f"errors favour related classes, {0.4 / (4 / 99):.1f}× as often as chance.")
    clustered = superclass_cluster_test(*_superclass_errors([10] * 8 + [0] * 92), f2c, seed=2)
    t = V.describe_superclass_clustered("baseline", clustered)
    assert "not distinguishable from chance" in t and "100 true classes" in t
    assert "favour" not in t
    # a user-data study names the data in the replication check (no dict-only title helper)
    sm = {"data_source": "user", "data_name": "my_pets", "dataset": "user:abc"}
    assert "the study ran on your data: my_pets, not CIFAR-100" in V.replication_settings(sm)


# --------------------------------------------------------------------------- the seed report


PAPER = {"model": "vgg", "epochs": 50, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
         "weight_decay": 5e-4, "label_smoothing": 0.1, "warmup_epochs": 1.0, "augment": "none",
         "val_fraction": 0.2, "train_limit": None, "precision": "auto"}


def _study(**edits):
    sm = {"data_source": "official", "dataset": "cifar100",
          "change": {"key": "augment", "baseline": "none", "variant": "crop-flip"},
          "config": dict(PAPER), "environment": {"precision": "bf16"}}
    for k, v in edits.items():
        if k in PAPER:
            sm["config"][k] = v
        else:
            sm[k] = v
    return sm


@pytest.mark.parametrize(("edit", "why"), [
    ({}, None),
    ({"model": "baseline"}, None),  # the seed model's other name
    ({"lr": 0.1}, "the learning rate is 0.1, not 0.05, the value cifarlens reproduces the seed"),
    ({"label_smoothing": 0.0}, "the label smoothing is 0, but the seed trains with label "
                               "smoothing"),
    ({"label_smoothing": 0.2}, "the label smoothing is 0.2, not 0.1"),
    ({"batch_size": 256}, "the batch size is 256, not the seed's 128"),
    ({"val_fraction": 0.1}, "the validation fraction is 0.1, not the seed's 0.2"),
    ({"epochs": 10}, "the number of epochs is 10, not the seed's 50"),
    ({"momentum": 0.0}, "the momentum is 0, but the seed trains SGD with momentum"),
    ({"train_limit": 5000}, "it trained on a 5000-image subset"),
    ({"model": "small"}, "the model is small, not the seed's baseline CNN"),
    ({"environment": {}}, "the study does not record its precision"),
    ({"config": {}}, "the study does not record its training settings"),
    ({"data_source": "generated"}, "the study ran on generated data, not CIFAR-100"),
])
def test_replication_applies_only_with_every_setting_the_seed_states(edit, why):
    got = V.replication_settings(_study(**edit), reference=PAPER)
    if why is None:
        assert got == []
    else:
        assert len(got) >= 1 and any(w.startswith(why) for w in got), got
    # without the reference recipe, only what the seed itself states is compared
    if set(edit) <= {"lr", "label_smoothing"} and edit.get("label_smoothing", 1) > 0:
        assert V.replication_settings(_study(**edit)) == []


@pytest.mark.parametrize(("lo", "hi", "want", "words"), [
    (0.060, 0.072, "reproduced", "Reproduced: this study's 95% CI across 3 seeds [6.00, 7.20] "
                                 "lies within ±1 point of the seed's +6.63 points"),
    (0.0001, 0.20, "consistent", "Consistent with the seed's +6.63 points: this study's 95% CI "
                                 "across 3 seeds [0.01, 20.00] holds them and excludes 0"),
    (-0.01, 0.08, "not_decided", "Not decided: this study's 95% CI across 3 seeds [-1.00, 8.00] "
                                 "holds both"),
    (0.0, 0.08, "not_decided", "Not decided"),  # 0 as shown is not excluded
    (0.08, 0.10, "exceeded", "Exceeded: this study's whole 95% CI"),
    (0.02, 0.04, "smaller", "Smaller: the change helps"),
    (-0.02, 0.014, "no_gain", "holds 0, so no gain is shown"),
    (-0.05, -0.01, "loss", "lies wholly below 0: it shows a loss"),
    (None, 0.08, "not_judged", "Not judged"),
])
def test_replication_judgement_and_sentence(lo, hi, want, words):
    got = V.replication_judgement(lo, hi)
    assert got == want
    t = V.describe_replication_judgement(got, lo, hi, 3, [])
    assert t.startswith(words) or words in t, t
    if want != "reproduced":
        assert "Reproduced" not in t
    assert "does not apply" in V.describe_replication_judgement(got, lo, hi, 3, ["x"])


def test_the_reference_recipe_is_the_paper_preset():
    """verdicts.REFERENCE stands for make_config("paper") so the report need not import the
    training code: they must agree."""
    import dataclasses

    from cifarlens.training.config import make_config

    paper = dataclasses.asdict(make_config("paper"))
    assert V.REFERENCE == {k: paper[k] for k in V.REFERENCE}
    assert {k: paper[k] for k in PAPER if k != "precision"} == {
        k: v for k, v in PAPER.items() if k != "precision"}


# --------------------------------------------------------------------------- attribution, maps


def test_attribution_is_qualified_by_convergence():
    yes = V.describe_attribution("augment", "none", "crop-flip", True, 50)
    assert yes.endswith("attributable to it (up to training noise).")
    no = V.describe_attribution("augment", "none", "crop-flip", False, 4)
    assert "at this training length only: the runs had not converged after 4 epochs" in no
    unknown = V.describe_attribution("augment", "none", "crop-flip", None, 50)
    assert "after 50 epochs of training" in unknown and "was not checked" in unknown


def _comp(name, d, dlo, dhi, i, ilo, ihi):
    return {"name": name, "deletion_diff": {"diff": d, "lo": dlo, "hi": dhi},
            "insertion_diff": {"diff": i, "lo": ilo, "hi": ihi}}


def test_faithfulness_says_when_a_reference_beats_gradcam_and_whose_maps_these_are():
    faith = {"gradcam": {"deletion_auc": 0.30, "insertion_auc": 0.40}}
    tests = {"n": 200, "level": 0.95, "comparisons": {
        "random": _comp("i.i.d. random pixels", -0.05, -0.07, -0.03, 0.05, 0.03, 0.07),
        "centre_prior": _comp("centre prior", 0.04, 0.02, 0.06, -0.03, -0.05, -0.01)}}
    t = S.describe_faithfulness(faith, tests, who="baseline (seed 0)")
    assert t.startswith("For the baseline (seed 0), deleting pixels in Grad-CAM order")
    assert "The centre prior beats Grad-CAM on both measures" in t and "mixed" not in t
    # the image-specificity control: another image's map of the same class
    tests["comparisons"]["centre_prior"] = _comp("centre prior", -0.04, -0.06, -0.02, 0.03,
                                                 0.01, 0.05)
    tests["comparisons"]["same_class_other"] = _comp(
        "map of another image of the same class", -0.03, -0.05, -0.01, 0.02, 0.01, 0.04)
    t = S.describe_faithfulness(faith, tests)
    assert "another image of the same class" in t and "beats every baseline" in t
    tests["comparisons"]["same_class_other"] = _comp(
        "map of another image of the same class", 0.01, -0.01, 0.03, 0.0, -0.02, 0.02)
    t = S.describe_faithfulness(faith, tests)
    assert "beats every baseline" not in t and "does not show" in t
    border = S.describe_border({"failures": 0.55, "correct": 0.48, "border_px": 4,
                                "p_value": 0.003}, who="baseline (seed 0)")
    assert border.startswith("For the baseline (seed 0), on failures, 55.00%")


# --------------------------------------------------------------------------- the older builders


def test_change_verdict_and_describe_change_rules():
    """The one-pair sentence (McNemar over test images) keeps its own rule: it describes two
    trained models, never the setting."""
    assert S.change_verdict(0.05, 0.02, 0.08, 0.001) == "rose"
    assert S.change_verdict(-0.05, -0.08, -0.02, 0.001) == "fell"
    assert S.change_verdict(0.01, -0.02, 0.04, 0.4) == "no_change"
    assert S.change_verdict(0.03, 0.001, 0.06, 0.07) == "borderline"
    assert S.change_verdict(0.03, None, None, None) == "unknown"
    assert S.change_verdict(0.00001, 0.0, 1.0, 0.001) == "no_change"  # 0.00 points as shown
    t = S.describe_change(0.0663, (0.058, 0.0746), 3e-12)
    assert t.startswith("test accuracy rose by 6.63 points (95% CI [5.80, 7.46]); McNemar's")
    assert "did not change significantly" in S.describe_change(0.01, (-0.02, 0.04), 0.4)


def test_seed_and_pair_builders():
    seeds = {"n": 3, "mean_a": 0.63, "std_a": 0.01, "mean_b": 0.69, "std_b": 0.01,
             "mean_diff": 0.06, "std_diff": 0.01, "ci": [0.05, 0.07], "df": 2, "level": 0.95}
    dec = decide([0.05, 0.06, 0.07], 0.01).as_dict()
    text = V.describe_seeds(seeds, dec)
    assert text.startswith("Over 3 seeds, the baseline reached 63.00% ± 1.00")
    assert "across 3 seeds, the mean test accuracy rose by 6.00 points" in text
    assert "2 degrees of freedom" in text and "the change helped" in text
    assert "were not computed" in V.describe_seeds(None, seed_list=[0])
    pair = S.describe_pair({"diff": 0.02, "lo": 0.01, "hi": 0.03}, {"p_value": 0.001, "n": 1000},
                           seed=0)
    assert "(seed 0)" in pair and "not yet evidence about the setting" in pair


def test_temperature_mce_and_tracking_builders():
    hot = S.describe_temperature("baseline", {"temperature": 1.4, "ece_before": 0.06,
                                              "ece_after": 0.02, "nll_before": 1.5,
                                              "nll_after": 1.4})
    assert "T = 1.40 > 1, so the raw model was overconfident" in hot
    assert "lowered test ECE from 6.00% to 2.00%" in hot
    cold = S.describe_temperature("variant", {"temperature": 0.41})
    assert "T = 0.41 < 1, so the raw model was underconfident" in cold
    mce = S.describe_mce([("baseline", {"mce_before": 0.935, "mce_count_before": 1}, "before")])
    assert "the baseline's 93.50% before scaling (1 image)" in mce
    trk = S.describe_tracking({"tracked": 10, "fixed": 3, "still_wrong": 5, "other_wrong": 2,
                               "all_errors": {"errors": 1000, "fixed": 250}})
    assert "fixed 3 (30.00%)" in trk and "250 of all 1,000 baseline test errors (25.00%)" in trk
