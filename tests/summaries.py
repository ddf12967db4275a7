"""Hand-made study summaries with distinct, checkable numbers, for the report's tests and any
test that needs a summary: `make_summary()` in the shape of the release before the typed schema
(version 1, read through `upgrade_v1`), `summary_json(**patch)` as summary.json holds it now."""

from __future__ import annotations

from typing import Any

from cifarlens.study.schema import summary_from_json, to_json

FIGURE_KEYS = ["curves", "confusion", "confusion_superclass", "reliability", "confidence_hist",
               "failure_gallery", "gradcam_failures", "gradcam_tracking", "deletion_insertion",
               "confusion_difference", "per_class_changes"]


def make_summary() -> dict[str, Any]:
    """A complete summary.json as the study orchestrator writes it (distinct, checkable numbers)."""
    def model(top1: float, ece: float, temp: float, seed_acc: float) -> dict[str, Any]:
        return {
            "run": "runs/x-s0", "params": 10462756, "flops": 650612736, "best_epoch": 48,
            "train_time_s": 1234.5,
            "val": {"loss": 1.4871, "top1": top1 - 0.0042, "top5": 0.8611, "macro_f1": 0.6133,
                    "ece": 0.0517, "mce": 0.2, "brier": 0.5, "nll": 1.5},
            "test": {"loss": 1.5234, "top1": top1, "top5": 0.8702, "macro_f1": top1 - 0.0077,
                     "ece": ece, "mce": 0.2113, "brier": 0.5109, "nll": 1.5212,
                     "top_confusions": [
                         {"true_name": "maple_tree", "pred_name": "oak_tree", "count": 31,
                          "share_of_true": 0.31},
                         {"true_name": "boy", "pred_name": "girl", "count": 27,
                          "share_of_true": 0.27}],
                     "superclass": {"coarse_accuracy": 0.7412, "within_superclass_share": 0.4133,
                                    "chance_share": 0.0404}},
            "calibration": {"temperature": temp, "ece_before": ece, "ece_after": 0.0211,
                            "nll_before": 1.5212, "nll_after": 1.4034},
            "per_seed": [{"seed": 0, "test_top1": seed_acc}],
        }

    top = [
        {"rank": 1, "index": 1234, "true_name": "skyscraper", "pred_name": "mountain",
         "confidence": 0.945, "margin": 0.9101, "true_prob": 0.0103, "true_rank": 4,
         "label_error_suspect": False,
         "variant": {"pred_name": "skyscraper", "confidence": 0.6012, "true_prob": 0.6012,
                     "status": "fixed"}},
        {"rank": 2, "index": 77, "true_name": "cup", "pred_name": "bottle",
         "confidence": 0.9398, "margin": 0.8876, "true_prob": 0.0211, "true_rank": 2,
         "label_error_suspect": True,
         "variant": {"pred_name": "bottle", "confidence": 0.7123, "true_prob": 0.1544,
                     "status": "still_wrong"}},
        {"rank": 3, "index": 4321, "true_name": "maple_tree", "pred_name": "oak_tree",
         "confidence": 0.9366, "margin": 0.8822, "true_prob": 0.0402, "true_rank": 2,
         "label_error_suspect": False,
         "variant": {"pred_name": "willow_tree", "confidence": 0.5234, "true_prob": 0.2013,
                     "status": "other_wrong"}},
    ]
    return {
        "title": "cifarlens study", "created": "2026-11-28T10:00:00",
        "dataset": "cifar100", "data_source": "generated", "num_classes": 100,
        "split": {"train": 40000, "val": 10000, "test": 10000, "train_used": 40000},
        "normalization": {"mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]},
        "change": {"key": "augment", "baseline": "none", "variant": "crop-flip"},
        "config": {"model": "baseline", "epochs": 50, "batch_size": 128, "lr": 0.05,
                   "momentum": 0.9, "weight_decay": 0.0005, "label_smoothing": 0.1,
                   "warmup_epochs": 1.0, "augment": "none", "seed": 0},
        "seeds": [0],
        "models": {"baseline": model(0.6291, 0.0612, 1.4123, 0.6291),
                   "variant": model(0.6954, 0.0487, 1.2311, 0.6954)},
        "comparison": {
            "accuracy_difference": {"diff": 0.0663, "lo": 0.0580, "hi": 0.0746, "se": 0.0042,
                                    "method": "paired_wald", "level": 0.95},
            "mcnemar": {"n": 10000, "both_right": 5800, "both_wrong": 2555, "a_only": 491,
                        "b_only": 1154, "p_value": 3.1e-12, "statistic": 491},
            "per_class": {"improved": [{"name": "cup", "before": 0.5, "after": 0.7,
                                        "delta": 0.2}],
                          "worsened": [{"name": "lamp", "before": 0.6, "after": 0.5,
                                        "delta": -0.1}]},
            "ece_change": -0.0125,
            "seeds": None,
        },
        "failures": {
            "split": "test", "total_wrong": 3709, "confident_threshold": 0.9,
            "confident_wrong": 412, "label_error_suspects": 37, "top": top,
            "tracking": {"fixed": 1, "still_wrong": 1, "other_wrong": 1, "tracked": 3,
                         "label_suspects": {"tracked": 1, "fixed": 0, "still_wrong": 1,
                                            "other_wrong": 0},
                         "others": {"tracked": 2, "fixed": 1, "still_wrong": 0,
                                    "other_wrong": 1},
                         "all_errors": {"errors": 3709, "fixed": 1154, "share": 0.3111}},
            "per_class_confident_errors": [{"name": "boy", "count": 12}],
            "confident_wrong_raw": 3, "temperature": 0.41, "cleanlab_issues": 1203,
            "confidence_basis": "temperature-scaled probabilities (T fitted on val)",
        },
        "explain": {
            "layer": "features.31 (last conv ReLU, 4x4)", "explained": 12,
            "faithfulness": {
                "gradcam": {"deletion_auc": 0.2134, "insertion_auc": 0.5523},
                "random": {"deletion_auc": 0.3511, "insertion_auc": 0.4102},
                "failures": {"deletion_auc": 0.3012, "insertion_auc": 0.5004},
                "correct": {"deletion_auc": 0.2021, "insertion_auc": 0.6031}},
            "faithfulness_tests": {
                "n": 200, "level": 0.95, "cells": [4, 4],
                "noise": "test-image sampling (paired bootstrap over the 200 images)",
                "comparisons": {k: {"name": name, "deletion_auc": d, "insertion_auc": i,
                                    "deletion_diff": {"diff": 0.2021 - d, "lo": 0.2021 - d - 0.02,
                                                      "hi": 0.2021 - d + 0.02},
                                    "insertion_diff": {"diff": 0.6031 - i,
                                                       "lo": 0.6031 - i - 0.02,
                                                       "hi": 0.6031 - i + 0.02}}
                                for k, name, d, i in (
                                    ("random", "i.i.d. random pixels", 0.3511, 0.4102),
                                    ("smooth_random", "smooth random map", 0.3322, 0.4411),
                                    ("centre_prior", "centre prior", 0.2123, 0.5911))}},
            "border_share": {"failures": 0.5512, "correct": 0.4788, "uniform": 0.6094,
                             "border_px": 6, "centre_prior": 0.31, "cells": [4, 4],
                             "resolves_border": False, "p_value": 0.012},
            "pointing_game": {"hit_rate": 0.9512, "n": 800},
        },
        "figures": {k: f"figures/{k}.png" for k in FIGURE_KEYS},
        "environment": {"cifarlens": "0.1.0", "torch": "2.13.0", "python": "3.11.7",
                        "device": "cpu", "precision": "bf16", "git_commit": "abc123",
                        "threads": 2},
        "timing": {"total_s": 120.0},
        "command": "cifarlens study --preset smoke --out studies/s1",
    }


def summary_json(**patch: Any) -> dict[str, Any]:
    """make_summary() as summary.json holds it now (schema version 2), with `patch`'s top-level
    keys replaced: the shape tests edit to build a case."""
    return {**to_json(summary_from_json(make_summary())), **patch}
