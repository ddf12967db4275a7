"""Every number the report states, computed from the study's runs."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens._io import read_bytes, write_bytes
from cifarlens.analysis import metrics as M
from cifarlens.analysis import stats as S
from cifarlens.errors import CifarlensError
from cifarlens.figures import plots
from cifarlens.figures.plots import plot_curves
from cifarlens.runs import Run
from cifarlens.study import verdicts as V
from cifarlens.study.data_side import build_data_side
from cifarlens.study.design import Design
from cifarlens.study.folder import StudyFolder
from cifarlens.study.plan import SINGLE_SLUG, recorded_changes
from cifarlens.study.schema import (
    Ablation,
    AblationRow,
    AccuracyDifference,
    Calibration,
    Change,
    ClassChange,
    ClassCount,
    Comparison,
    Confusion,
    Environment,
    Explain,
    Failures,
    McNemar,
    Model,
    Normalization,
    PerClass,
    SeedComparison,
    SeedMcNemar,
    SeedScore,
    SeedTest,
    SplitMetrics,
    SplitSizes,
    StudySummary,
    Superclass,
    Variant,
    VariantFailures,
    from_json,
)
from cifarlens.study.schema_verdicts import Look
from cifarlens.study.tracking import track_failures
from cifarlens.training.complexity import complexity
from cifarlens.training.config import varied_sources
from cifarlens.training.models import build_model

# --- comparison and summary -----------------------------------------------------------------------


def _model_block(run: Run, out: Path, seeds: list[int], acc: list[float],
                 ece: list[float] | None = None, f2c: Any = None) -> Model:
    """One arm's numbers: every single-model one is the first seed's run; `acc` (`ece`) the
    test accuracy (ECE) of each seed; `f2c` the superclass of each class (None: none)."""
    cfg, done = run.config, run.done or {}
    mv, mt = run.metrics("val"), run.metrics("test")
    keys = ("loss", "top1", "top5", "macro_f1", "ece", "mce", "brier")
    c = complexity(build_model(cfg["model"], cfg["num_classes"]))
    ts = mt["temperature_scaling"]
    sc = mt.get("superclass")
    superclass = Superclass(**{k: sc[k] for k in (
        "coarse_accuracy", "within_superclass_share", "chance_share", "errors",
        "errors_within_superclass", "binomial_p", "share_ci") if k in sc},
        cluster=V.superclass_cluster(run, f2c)) if sc else None
    test = SplitMetrics(**{k: mt[k] for k in keys}, nll=mt["loss"],
                        top_confusions=[Confusion(**x) for x in mt["top_confusions"][:10]],
                        superclass=superclass)
    return Model(
        # relative to the study, like every other path in summary.json: a moved or copied
        # study still names its runs
        run=os.path.relpath(run.path, out), params=c["params"], flops=c["flops"],
        best_epoch=done["best_epoch"], train_time_s=done.get("wall_time_s"),
        val=SplitMetrics(**{k: mv[k] for k in keys}, nll=mv["loss"]), test=test,
        calibration=Calibration(
            temperature=ts["temperature"], ece_before=ts["ece_before"],
            ece_after=ts["ece_after"], nll_before=ts["nll_before"], nll_after=ts["nll_after"],
            mce_before=mt["mce"], mce_after=ts.get("mce_after"), brier_before=mt["brier"],
            brier_after=ts.get("brier_after"), mce_count_before=mt.get("mce_count"),
            mce_count_after=ts.get("mce_count_after"), intervals=V.ece_intervals(run)),
        per_seed=[SeedScore(seed=s, test_top1=a, test_ece=e) for s, a, e in
                  zip(seeds, acc, ece or [None] * len(seeds), strict=True)],
        seed=seeds[0])


def _seeds_block(runs: dict[str, dict[int, Run]], seeds: list[int], arm: str,
                 acc_a: list[float], acc_b: list[float], plan: dict) -> SeedComparison | None:
    """The verdict about one change: seed s of the baseline and of the variant are paired (same
    split and init), so the paired t-test across seeds covers training noise; per seed, the
    McNemar test and paired interval cover only test-image sampling. `decision` is the verdict
    every sentence states (power.decide, or the --seeds auto rule's last look)."""
    if len(seeds) < 2:
        return None
    t = S.paired_seed_test(acc_a, acc_b)
    per_pair = []
    for s in seeds:
        ca_s, cb_s = _correct_pair(runs, s, arm)
        ci = S.accuracy_difference_ci(ca_s, cb_s)
        per_pair.append(SeedMcNemar(seed=s, **S.mcnemar_exact(ca_s, cb_s), diff=ci["diff"],
                                    lo=ci["lo"], hi=ci["hi"]))
    design = plan_design(plan)
    dec = V.decision(np.subtract(acc_b, acc_a), design)
    looks = [from_json(Look, x, "study.json's sequential looks")
             for x in plan.get("sequential", {}).get("looks", {}).get(arm, [])]
    seq = V.sequential_block(looks, design, plan["sequential"]["wave"]) if looks else None
    pi, noise = V.seed_extras(runs, seeds, arm, acc_a, acc_b)
    return SeedComparison(
        n=t["n_seeds"], mean_a=t["mean_a"], std_a=t["std_a"], mean_b=t["mean_b"],
        std_b=t["std_b"], mean_diff=t["mean_diff"], std_diff=t["std_diff"], t=t["t"],
        df=t["df"], p_value=t["p_value"], ci=[t["lo"], t["hi"]], level=t["level"],
        method=t["method"], note=t.get("note"), covers="training seeds and test-image sampling",
        mcnemar_per_seed=per_pair, prob_improvement=pi, noise=noise, sequential=seq,
        decision=V.sequential_decision(dec, looks[-1]) if looks else dec)


def plan_design(plan: dict) -> Design:
    """The study's Design as study.json records it (a study from before: its seed count and
    the default margin and detect)."""
    rec = plan.get("design")
    return Design(**rec) if rec else Design(seeds=len(plan["seeds"]))


def _variant_block(out: Path, plan: dict, runs: dict[str, dict[int, Run]], change: dict,
                   fails: dict, top: int, data, acc_a: list[float], first: bool) -> Variant:
    """One change against the shared baseline: its model, the comparison, the baseline
    failures tracked in it, and its own figures. The first change's figures keep the one-change
    names (figures/gradcam_tracking.png); the others' carry the slug
    (figures/gradcam_tracking_SLUG.png, figures/curves_SLUG.png)."""
    seeds, s0, arm = plan["seeds"], plan["seeds"][0], change["slug"]
    ra, rb = runs["baseline"][s0], runs[arm][s0]
    pa, pb = ra.predictions("test"), rb.predictions("test")
    if not np.array_equal(pa["indices"], pb["indices"]):
        raise CifarlensError(f"baseline and {arm} were evaluated on different test images")
    ca, cb = pa["pred"] == pa["labels"], pb["pred"] == pb["labels"]
    ma, mb = ra.metrics("test"), rb.metrics("test")
    tag = "" if first else f"_{arm}"
    figs = {"gradcam_tracking": f"figures/gradcam_tracking{tag}.png"}
    if not first:  # the first change's curves are the report's main curves figure
        figs["curves"] = f"figures/curves{tag}.png"
        plot_curves({"baseline": ra.history(), arm: rb.history()}, out / figs["curves"])
    tracked, tracking = track_failures(ra, rb, fails, top, data, out / figs["gradcam_tracking"])
    acc_b = [runs[arm][s].metrics("test")["top1"] for s in seeds]
    ece_b = [runs[arm][s].metrics("test")["ece"] for s in seeds]
    pcc = S.per_class_changes(np.asarray(ma["confusion_matrix"]),
                              np.asarray(mb["confusion_matrix"]), data.class_names, k=10)
    seeds_block = _seeds_block(runs, seeds, arm, acc_a, acc_b, plan)
    comparison = Comparison(
        # accuracy_difference and mcnemar: the seed-s0 pair only (test-image sampling)
        pair_seed=s0, verdict_basis="seeds" if seeds_block else "one_pair",
        accuracy_difference=AccuracyDifference(**S.accuracy_difference_ci(ca, cb)),
        mcnemar=McNemar(**S.mcnemar_exact(ca, cb)),
        per_class=PerClass(improved=[_pc(r) for r in pcc["improved"]],
                           worsened=[_pc(r) for r in pcc["worsened"]]),
        ece_change=mb["ece"] - ma["ece"], seeds=seeds_block,
        ece_seeds=V.ece_seeds(runs, seeds, arm, plan_design(plan)) if len(seeds) >= 2 else None)
    return Variant(
        change=Change(**{k: change[k] for k in ("key", "baseline", "variant")}), slug=arm,
        runs=[str(runs[arm][s].path.relative_to(out)) for s in seeds],
        model=_model_block(rb, out, seeds, acc_b, ece_b, data.fine_to_coarse),
        comparison=comparison,
        failures=from_json(VariantFailures, {"top": tracked, "tracking": tracking},
                           "the tracked failures"),
        figures=figs)


ABLATION_ALPHA = 0.05


def ablation_table(variants: list[Variant], alpha: float = ABLATION_ALPHA,
                   design: Design | None = None) -> Ablation:
    """Every change against the shared baseline, its seed-level p-value Holm-adjusted over the
    number of changes: with K changes tested at 5% each, the chance that at least one "helped"
    or "hurt" is noise grows towards 1 - 0.95^K; Holm keeps that family-wise chance at 5%.
    Each row's `decision` is power.decide with that adjusted p (the same record the headline
    states for the first change); a --seeds auto study's rows keep the sequential rule's
    decision, which ran at alpha / K per change."""
    design = design or Design()
    ps = [v.comparison.seeds.p_value if v.comparison.seeds else None for v in variants]
    adjusted = S.holm(ps)
    rows = []
    for v, p, ph in zip(variants, ps, adjusted, strict=True):
        sb, comp = v.comparison.seeds, v.comparison
        if sb:
            before, after, diff, (lo, hi) = sb.mean_a, sb.mean_b, sb.mean_diff, sb.ci
            per_seed = [SeedTest(seed=m.seed, diff=m.diff, lo=m.lo, hi=m.hi, a_only=m.a_only,
                                 b_only=m.b_only, p_value=m.p_value) for m in sb.mcnemar_per_seed]
        else:  # one seed: the pair's numbers, no seed-level test
            ad, mc = comp.accuracy_difference, comp.mcnemar
            before, after, diff, lo, hi = ad.acc_a, ad.acc_b, ad.diff, None, None
            per_seed = [SeedTest(seed=comp.pair_seed, diff=ad.diff, lo=ad.lo, hi=ad.hi,
                                 a_only=mc.a_only, b_only=mc.b_only, p_value=mc.p_value)]
        c = v.change
        dec = None
        if sb and sb.decision is not None and sb.decision.rule == "sequential":
            dec = sb.decision
        elif sb:
            dec = V.decision({"n": sb.n, "mean_diff": sb.mean_diff, "std_diff": sb.std_diff},
                             design, p_adjusted=ph)
        rows.append(AblationRow(
            change=f"{c.key}={c.variant}", key=c.key, slug=v.slug, baseline_value=c.baseline,
            variant_value=c.variant, before=before, after=after, diff=diff, lo=lo, hi=hi, p=p,
            p_holm=ph, verdict=dec.decision if dec else "not tested", decision=dec,
            n_seeds=len(v.model.per_seed), per_seed_mcnemar=per_seed))
    n = rows[0].n_seeds if rows else 0
    return Ablation(
        method=(f"paired t-test across {n} seeds per change (baseline seed s paired with "
                f"variant seed s), p-values Holm-adjusted over {len(rows)} changes; intervals: "
                f"unadjusted 95% t intervals of the mean difference"),
        test="paired_t", correction="holm", m=len(rows), alpha=alpha, level=0.95,
        covers="training seeds and test-image sampling",
        per_seed_covers="test-image sampling only (McNemar's exact test, one pair)", rows=rows)


def _freeze_figures(out: Path, figs: dict[str, str]) -> dict[str, str]:
    """Copy every run-level figure the report embeds into STUDY/figures/ (atomically) and point
    at the copy: `cifarlens failures RUN --top 6` or `explain RUN --indices ...` rewrite the run's
    own figures, and must not change what the study's report shows."""
    frozen = {}
    for key, rel in figs.items():
        parts = Path(rel).parts
        if parts and parts[0] == StudyFolder.RUNS:
            copy = Path("figures") / "_".join(parts[1:])  # runs/R/figures/x.png -> R_figures_x.png
            write_bytes(out / copy, read_bytes(out / rel, "figure"))
            rel = str(copy)
        frozen[key] = rel
    return frozen


def build_summary(out: Path, plan: dict, runs: dict[str, dict[int, Run]], top: int,
                  say) -> StudySummary:
    """Every number the report states, and the study's figures drawn. `variants` holds one
    block per change (the first is the report's main change); `ablation` (2+ changes) the
    table of all of them."""
    s0 = plan["seeds"][0]
    changes = recorded_changes(plan)
    ra, rb = runs["baseline"][s0], runs[changes[0]["slug"]][s0]
    data = ra.data()
    split = ra.split_indices(len(data.train_y))
    pa = ra.predictions("test")
    figs = _study_figures(out, ra, rb, data)
    fails = ra.failures("test")
    ex = ra.analysis().get("explain_test", {})
    for key, name in (("failure_gallery", fails["figures"]["gallery"]),
                      ("gradcam_failures", ex.get("figures", {}).get("gradcam")),
                      ("deletion_insertion", ex.get("figures", {}).get("deletion_insertion"))):
        if name is not None:
            figs[key] = str(ra.file(name).relative_to(out))
    figs = _freeze_figures(out, figs)
    acc_a = [runs["baseline"][s].metrics("test")["top1"] for s in plan["seeds"]]
    variants = [_variant_block(out, plan, runs, c, fails, top, data, acc_a, first=i == 0)
                for i, c in enumerate(changes)]
    env = ra.config["environment"]
    return StudySummary(
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), dataset=data.name,
        data_source=data.source, num_classes=data.num_classes,
        data_name=data.identity.get("name"),  # the user's own data: what reports call it
        split=SplitSizes(train=int(len(split["train"])), val=int(len(split["val"])),
                         test=int(len(pa["labels"])), train_used=int(len(split["train_used"]))),
        normalization=Normalization(**ra.norm), config=plan["baseline"], seeds=plan["seeds"],
        baseline=_model_block(ra, out, plan["seeds"], acc_a,
                              [runs["baseline"][s].metrics("test")["ece"] for s in plan["seeds"]],
                              data.fine_to_coarse), variants=variants,
        failures=Failures(
            split="test", total_wrong=fails["total_wrong"],
            confident_threshold=fails["confident_threshold"],
            confident_wrong=fails["confident_wrong"],
            confident_wrong_raw=fails.get("confident_wrong_raw"),
            confidence_basis=fails.get("confidence_basis"), temperature=fails.get("temperature"),
            label_error_suspects=fails["label_error_suspects"],
            label_error_method=fails.get("label_error_method"),
            cleanlab_issues=fails.get("cleanlab_issues"),
            per_class_confident_errors=[ClassCount(name=r["name"], count=r["confident_errors"])
                                        for r in fails["top_confident_error_classes"]]),
        explain=_explain_block(ex, s0), figures=figs,
        ablation=ablation_table(variants, design=plan_design(plan)) if len(variants) >= 2
        else None, verdicts=plan_design(plan).settings(varied_sources(plan["baseline"])),
        convergence=V.study_convergence(runs),
        data_side=build_data_side(out, plan, runs, top, say),
        environment=Environment(**{f.name: env.get(f.name)
                                   for f in dataclasses.fields(Environment)}))


def _study_figures(out: Path, ra: Run, rb: Run, data) -> dict[str, str]:
    """The comparison figures of the first seed's pair, drawn into STUDY/figures/, and the
    baseline's own figures the report shows (relative to the study)."""
    pa, pb = ra.predictions("test"), rb.predictions("test")
    ma, mb = ra.metrics("test"), rb.metrics("test")
    cm_a, cm_b = np.asarray(ma["confusion_matrix"]), np.asarray(mb["confusion_matrix"])
    figs = {"curves": "figures/curves.png",
            "confusion_difference": "figures/confusion_difference.png",
            "per_class_changes": "figures/per_class_changes.png",
            "reliability": "figures/reliability.png"}
    plot_curves({"baseline": ra.history(), "variant": rb.history()}, out / figs["curves"])
    plots.plot_confusion_difference(cm_a, cm_b, data.class_names,
                                    out / figs["confusion_difference"],
                                    groups=plots.ClassGroups(data.fine_to_coarse,
                                                             data.coarse_names))
    plots.plot_per_class_changes(cm_a, cm_b, data.class_names, out / figs["per_class_changes"])
    series = []
    for arm, m, p in (("baseline", ma, pa), ("variant", mb, pb)):
        conf, corr = M.confidences_and_correct(M.softmax(p["logits"]), p["labels"])
        series.append((arm, M.calibration_bins(conf, corr), m["ece"]))
    plots.plot_reliability(series, out / figs["reliability"], title="Reliability on test")
    for key in ("confusion", "confidence_hist", "confusion_superclass"):
        if key in ma["figures"]:
            figs[key] = str(ra.file(ma["figures"][key]).relative_to(out))
    return figs


def _explain_block(ex: dict[str, Any], seed: int | None = None) -> Explain:
    """The first seed's baseline explained: Grad-CAM's faithfulness against reference maps on
    correctly classified images (paired bootstrap CIs over the images), border share and the
    pointing game, as the explain stage recorded them."""
    faith = ex.get("faithfulness", {})
    fc = faith.get("correct", {})
    aucs = ("deletion_auc", "insertion_auc")
    return from_json(Explain, {
        "layer": ex.get("layer"), "explained": ex.get("explained"),
        "faithfulness": {
            "gradcam": {k: fc.get(k) for k in aucs},
            "random": {"deletion_auc": fc.get("random_deletion_auc"),
                       "insertion_auc": fc.get("random_insertion_auc")},
            "failures": {k: faith.get("failures", {}).get(k) for k in aucs},
            "correct": {k: fc.get(k) for k in aucs},
        },
        "faithfulness_tests": {k: fc.get(k) for k in ("n", "level", "noise", "cells",
                                                       "comparisons")} if fc else None,
        "border_share": ex.get("border_share"), "pointing_game": ex.get("pointing_game"),
        "model": "baseline" if ex else None, "seed": seed if ex else None,
    }, "the explain stage's record")


def _pc(r: dict) -> ClassChange:
    return ClassChange(name=r["name"], n=r["n"], before=r["acc_a"], after=r["acc_b"],
                       delta=r["delta"])


def _correct_pair(runs: dict[str, dict[int, Run]], seed: int, arm: str = SINGLE_SLUG
                  ) -> tuple[np.ndarray, np.ndarray]:
    a = runs["baseline"][seed].predictions("test")
    b = runs[arm][seed].predictions("test")
    return a["pred"] == a["labels"], b["pred"] == b["labels"]
