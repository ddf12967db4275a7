"""Every number the report states, computed from the study's runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens.analysis import metrics as M
from cifarlens.analysis import stats as S

# The tracking figure and its per-model scale live with the other Grad-CAM figures.
from cifarlens.cam.figures import model_scale, plot_tracking  # noqa: E402,F401
from cifarlens.errors import CifarlensError
from cifarlens.figures import plots
from cifarlens.runs import Run
from cifarlens.study.folder import StudyFolder
from cifarlens.study.plan import SINGLE_SLUG, recorded_changes
from cifarlens.study.tracking import track_failures

# --- comparison and summary -----------------------------------------------------------------------


def _model_block(run: Run, out: Path) -> dict[str, Any]:
    from cifarlens.training.complexity import complexity
    from cifarlens.training.models import build_model

    cfg, done = run.config, run.done or {}
    mv, mt = run.metrics("val"), run.metrics("test")
    keys = ("loss", "top1", "top5", "macro_f1", "ece", "mce", "brier")
    c = complexity(build_model(cfg["model"], cfg["num_classes"]))
    ts = mt["temperature_scaling"]
    test = {k: mt[k] for k in keys} | {"nll": mt["loss"],
                                        "top_confusions": mt["top_confusions"][:10]}
    if "superclass" in mt:
        test["superclass"] = {k: mt["superclass"][k] for k in
                              ("coarse_accuracy", "within_superclass_share", "chance_share", "errors",
                               "errors_within_superclass", "binomial_p", "share_ci")
                              if k in mt["superclass"]}
    return {
        # relative to the study, like every other path in summary.json: a moved or copied
        # study still names its runs
        "run": os.path.relpath(run.path, out), "params": c["params"], "flops": c["flops"],
        "best_epoch": done["best_epoch"], "train_time_s": done.get("wall_time_s"),
        "val": {k: mv[k] for k in keys} | {"nll": mv["loss"]}, "test": test,
        "calibration": {"temperature": ts["temperature"], "ece_before": ts["ece_before"],
                        "ece_after": ts["ece_after"], "nll_before": ts["nll_before"],
                        "nll_after": ts["nll_after"], "mce_before": mt["mce"],
                        "mce_after": ts.get("mce_after"), "brier_before": mt["brier"],
                        "brier_after": ts.get("brier_after"),
                        "mce_count_before": mt.get("mce_count"),
                        "mce_count_after": ts.get("mce_count_after")},
    }


def _history(run: Run) -> list[dict[str, Any]]:
    return run.history()


def _seeds_block(runs: dict[str, dict[int, Run]], seeds: list[int], arm: str,
                 acc_a: list[float], acc_b: list[float]) -> dict[str, Any] | None:
    """The verdict about one change: seed s of the baseline and of the variant are paired (same
    split and init), so the paired t-test across seeds covers training noise; per seed, the
    McNemar test and paired interval cover only test-image sampling."""
    if len(seeds) < 2:
        return None
    t = S.paired_seed_test(acc_a, acc_b)
    per_pair = []
    for s in seeds:
        ca_s, cb_s = _correct_pair(runs, s, arm)
        ci = S.accuracy_difference_ci(ca_s, cb_s)
        per_pair.append({"seed": s, **S.mcnemar_exact(ca_s, cb_s),
                         "diff": ci["diff"], "lo": ci["lo"], "hi": ci["hi"]})
    return {"n": t["n_seeds"], "mean_a": t["mean_a"], "std_a": t["std_a"],
            "mean_b": t["mean_b"], "std_b": t["std_b"], "mean_diff": t["mean_diff"],
            "std_diff": t["std_diff"], "t": t["t"], "df": t["df"],
            "p_value": t["p_value"], "ci": [t["lo"], t["hi"]], "level": t["level"],
            "method": t["method"], "note": t.get("note"),
            "covers": "training seeds and test-image sampling",
            "mcnemar_per_seed": per_pair}


def _variant_block(out: Path, plan: dict, runs: dict[str, dict[int, Run]], change: dict,
                   fails: dict, top: int, data, acc_a: list[float], first: bool
                   ) -> dict[str, Any]:
    """One change against the shared baseline: its model, the comparison (the shape of the
    summary's "comparison"), the baseline failures tracked in it, and its own figures. The
    first change's figures keep the one-change names (figures/gradcam_tracking.png); the
    others' carry the slug (figures/gradcam_tracking_SLUG.png, figures/curves_SLUG.png)."""
    from cifarlens.figures.plots import plot_curves

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
        plot_curves({"baseline": _history(ra), arm: _history(rb)}, out / figs["curves"])
    tracked, tracking = track_failures(ra, rb, fails, top, data, out / figs["gradcam_tracking"])
    model = _model_block(rb, out)
    acc_b = [runs[arm][s].metrics("test")["top1"] for s in seeds]
    model["per_seed"] = [{"seed": s, "test_top1": a} for s, a in zip(seeds, acc_b, strict=True)]
    model["seed"] = s0  # every single-model number in the block is this seed's
    pcc = S.per_class_changes(np.asarray(ma["confusion_matrix"]),
                              np.asarray(mb["confusion_matrix"]), data.class_names, k=10)
    seeds_block = _seeds_block(runs, seeds, arm, acc_a, acc_b)
    return {
        "change": {k: change[k] for k in ("key", "baseline", "variant")}, "slug": arm,
        "runs": [str(runs[arm][s].path.relative_to(out)) for s in seeds],
        "model": model,
        "comparison": {
            # accuracy_difference and mcnemar: the seed-s0 pair only (test-image sampling)
            "pair_seed": s0,
            "verdict_basis": "seeds" if seeds_block else "one_pair",
            "accuracy_difference": S.accuracy_difference_ci(ca, cb),
            "mcnemar": S.mcnemar_exact(ca, cb),
            "per_class": {"improved": [_pc(r) for r in pcc["improved"]],
                          "worsened": [_pc(r) for r in pcc["worsened"]]},
            "ece_change": mb["ece"] - ma["ece"],
            "seeds": seeds_block,
        },
        "failures": {"top": tracked, "tracking": tracking},
        "figures": figs,
    }


ABLATION_ALPHA = 0.05


def ablation_table(variants: list[dict[str, Any]], alpha: float = ABLATION_ALPHA
                   ) -> dict[str, Any]:
    """Every change against the shared baseline, its seed-level p-value Holm-adjusted over the
    number of changes: with K changes tested at 5% each, the chance that at least one "helped"
    or "hurt" is noise grows towards 1 - 0.95^K; Holm keeps that family-wise chance at 5%."""
    ps = [_seeds_p(v) for v in variants]
    adjusted = S.holm(ps)
    rows = []
    for v, p, ph in zip(variants, ps, adjusted, strict=True):
        sb = v["comparison"]["seeds"]
        acc_b = [r["test_top1"] for r in v["model"]["per_seed"]]
        if sb:
            before, after, diff, (lo, hi) = sb["mean_a"], sb["mean_b"], sb["mean_diff"], sb["ci"]
            per_seed = [{k: m[k] for k in ("seed", "diff", "lo", "hi", "a_only", "b_only",
                                           "p_value")} for m in sb["mcnemar_per_seed"]]
        else:  # one seed: the pair's numbers, no seed-level test
            ad = v["comparison"]["accuracy_difference"]
            before, after, diff, lo, hi = ad["acc_a"], ad["acc_b"], ad["diff"], None, None
            mc = v["comparison"]["mcnemar"]
            per_seed = [{"seed": v["comparison"]["pair_seed"], "diff": ad["diff"],
                         "lo": ad["lo"], "hi": ad["hi"], "a_only": mc["a_only"],
                         "b_only": mc["b_only"], "p_value": mc["p_value"]}]
        c = v["change"]
        rows.append({"change": f"{c['key']}={c['variant']}", "key": c["key"], "slug": v["slug"],
                     "baseline_value": c["baseline"], "variant_value": c["variant"],
                     "before": before, "after": after, "diff": diff, "lo": lo, "hi": hi,
                     "p": p, "p_holm": ph, "verdict": S.ablation_verdict(ph, lo, hi, alpha),
                     "n_seeds": len(acc_b), "per_seed_mcnemar": per_seed})
    n = rows[0]["n_seeds"] if rows else 0
    return {"method": (f"paired t-test across {n} seeds per change (baseline seed s paired "
                       f"with variant seed s), p-values Holm-adjusted over {len(rows)} changes; "
                       f"intervals: unadjusted 95% t intervals of the mean difference"),
            "test": "paired_t", "correction": "holm", "m": len(rows), "alpha": alpha,
            "level": 0.95, "covers": "training seeds and test-image sampling",
            "per_seed_covers": "test-image sampling only (McNemar's exact test, one pair)",
            "rows": rows}


def _seeds_p(v: dict[str, Any]) -> float | None:
    sb = v["comparison"]["seeds"]
    return sb.get("p_value") if sb else None


def _freeze_figures(out: Path, figs: dict[str, str]) -> dict[str, str]:
    """Copy every run-level figure the report embeds into STUDY/figures/ (atomically) and point
    at the copy: `cifarlens failures RUN --top 6` or `explain RUN --indices ...` rewrite the run's
    own figures, and must not change what the study's report shows."""
    from cifarlens._io import read_bytes, write_bytes

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
                  say) -> dict[str, Any]:
    """Every number the report states. The one-change keys ("change", "models", "comparison",
    "failures"["top"/"tracking"], "figures") describe the first (or only) change; "variants"
    holds one such block per change, and "ablation" (2+ changes) the table of all of them."""
    from cifarlens.figures.plots import plot_curves

    s0 = plan["seeds"][0]
    changes = recorded_changes(plan)
    first = changes[0]["slug"]
    ra, rb = runs["baseline"][s0], runs[first][s0]
    data = ra.data()
    cfg_a = ra.config
    split = ra.split_indices(len(data.train_y))
    pa, pb = ra.predictions("test"), rb.predictions("test")
    if not np.array_equal(pa["indices"], pb["indices"]):
        raise CifarlensError("baseline and variant were evaluated on different test images")
    ma, mb = ra.metrics("test"), rb.metrics("test")
    cm_a, cm_b = np.asarray(ma["confusion_matrix"]), np.asarray(mb["confusion_matrix"])
    figs: dict[str, str] = {}

    def rel(run: Run, name: str) -> str:
        return str(run.file(name).relative_to(out))

    figs["curves"] = "figures/curves.png"
    plot_curves({"baseline": _history(ra), "variant": _history(rb)}, out / figs["curves"])
    figs["confusion_difference"] = "figures/confusion_difference.png"
    plots.plot_confusion_difference(cm_a, cm_b, data.class_names, out / figs["confusion_difference"],
                                group_names=data.coarse_names, group_of=data.fine_to_coarse)
    figs["per_class_changes"] = "figures/per_class_changes.png"
    plots.plot_per_class_changes(cm_a, cm_b, data.class_names, out / figs["per_class_changes"])
    figs["reliability"] = "figures/reliability.png"
    series = []
    for arm, m, p in (("baseline", ma, pa), ("variant", mb, pb)):
        conf, corr = M.confidences_and_correct(M.softmax(p["logits"]), p["labels"])
        series.append((arm, M.calibration_bins(conf, corr), m["ece"]))
    plots.plot_reliability(series, out / figs["reliability"], title="Reliability on test")
    for key, f in (("confusion", ma["figures"]["confusion"]),
                   ("confidence_hist", ma["figures"]["confidence_hist"])):
        figs[key] = rel(ra, f)
    if "confusion_superclass" in ma["figures"]:
        figs["confusion_superclass"] = rel(ra, ma["figures"]["confusion_superclass"])

    fails = ra.failures("test")
    figs["failure_gallery"] = rel(ra, fails["figures"]["gallery"])
    ex = ra.analysis().get("explain_test", {})
    if "gradcam" in ex.get("figures", {}):
        figs["gradcam_failures"] = rel(ra, ex["figures"]["gradcam"])
    if "deletion_insertion" in ex.get("figures", {}):
        figs["deletion_insertion"] = rel(ra, ex["figures"]["deletion_insertion"])
    figs = _freeze_figures(out, figs)

    base_model = _model_block(ra, out)
    acc_a = [runs["baseline"][s].metrics("test")["top1"] for s in plan["seeds"]]
    base_model["per_seed"] = [{"seed": s, "test_top1": a}
                              for s, a in zip(plan["seeds"], acc_a, strict=True)]
    base_model["seed"] = s0  # every single-model number in the block is this seed's
    variants = [_variant_block(out, plan, runs, c, fails, top, data, acc_a, first=i == 0)
                for i, c in enumerate(changes)]
    v0 = variants[0]
    figs["gradcam_tracking"] = v0["figures"]["gradcam_tracking"]
    models = {"baseline": base_model, "variant": v0["model"]}
    faith = ex.get("faithfulness", {})
    fc = faith.get("correct", {})
    explain_block = {
        "layer": ex.get("layer"), "explained": ex.get("explained"),
        "faithfulness": {
            "gradcam": {k: fc.get(k) for k in ("deletion_auc", "insertion_auc")},
            "random": {"deletion_auc": fc.get("random_deletion_auc"),
                       "insertion_auc": fc.get("random_insertion_auc")},
            "failures": {k: faith.get("failures", {}).get(k) for k in ("deletion_auc", "insertion_auc")},
            "correct": {k: fc.get(k) for k in ("deletion_auc", "insertion_auc")},
        },
        # Grad-CAM against each baseline on the reference (correct) images, with paired
        # bootstrap CIs over the images: what describe_faithfulness concludes from
        "faithfulness_tests": {k: fc.get(k) for k in ("n", "level", "noise", "cells",
                                                       "comparisons")} if fc else None,
        "border_share": ex.get("border_share"), "pointing_game": ex.get("pointing_game"),
    }
    env = cfg_a["environment"]
    summary = {
        "title": "cifarlens study", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dataset": data.name, "data_source": data.source, "num_classes": data.num_classes,
        "data_name": data.identity.get("name"),  # the user's own data: what reports call it
        "split": {"train": int(len(split["train"])), "val": int(len(split["val"])),
                  "test": int(len(pa["labels"])), "train_used": int(len(split["train_used"]))},
        "normalization": ra.norm,
        "change": plan["change"], "config": plan["baseline"], "seeds": plan["seeds"],
        "models": models,
        "comparison": v0["comparison"],
        "failures": {
            "split": "test", "total_wrong": fails["total_wrong"],
            "confident_threshold": fails["confident_threshold"],
            "confident_wrong": fails["confident_wrong"],
            "confident_wrong_raw": fails.get("confident_wrong_raw"),
            "confidence_basis": fails.get("confidence_basis"),
            "temperature": fails.get("temperature"),
            "label_error_suspects": fails["label_error_suspects"],
            "label_error_method": fails.get("label_error_method"),
            "cleanlab_issues": fails.get("cleanlab_issues"),
            "top": v0["failures"]["top"], "tracking": v0["failures"]["tracking"],
            "per_class_confident_errors": [{"name": r["name"], "count": r["confident_errors"]}
                                           for r in fails["top_confident_error_classes"]],
        },
        "explain": explain_block, "figures": figs,
        "variants": variants,
        "environment": {k: env.get(k) for k in ("cifarlens", "torch", "python", "device",
                                                 "device_name", "cpu_model", "gpu_model",
                                                 "precision", "git_commit", "threads")},
    }
    if len(variants) >= 2:
        summary["ablation"] = ablation_table(variants)
    return summary


def _pc(r: dict) -> dict:
    return {"name": r["name"], "n": r["n"], "before": r["acc_a"], "after": r["acc_b"],
            "delta": r["delta"]}


def _correct_pair(runs: dict[str, dict[int, Run]], seed: int, arm: str = SINGLE_SLUG
                  ) -> tuple[np.ndarray, np.ndarray]:
    a = runs["baseline"][seed].predictions("test")
    b = runs[arm][seed].predictions("test")
    return a["pred"] == a["labels"], b["pred"] == b["labels"]
