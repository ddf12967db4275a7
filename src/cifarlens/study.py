"""The study: baseline vs a variant that differs in exactly one training setting, end to end.

STUDY/
  study.json                 the two configs and the change (a resumed study must match it)
  runs/baseline-sN/, runs/variant-sN/   ordinary run folders (train, evaluate, failures, explain)
  figures/                   comparison figures
  summary.json               every number the report states
  report.html, report.md     the report (rebuilt by `cifarlens report STUDY`)

Each stage is skipped when its output exists, so a stopped study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from . import stats as S
from ._io import RunLock, read_json, write_json
from .errors import CifarlensError
from .train import TRAINING_SETTINGS, TrainConfig, make_config, train

CONFIDENT = 0.9


# --- the one-change guard -------------------------------------------------------------------------


def parse_change(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` for one training setting, VALUE parsed to the setting's type."""
    if "=" not in text:
        raise CifarlensError(f"--change must look like KEY=VALUE (e.g. augment=crop-flip), got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    key = key.replace("-", "_")
    if key not in TRAINING_SETTINGS:
        raise CifarlensError(f"--change: {key!r} is not a training setting; choose from: "
                             f"{', '.join(TRAINING_SETTINGS)}")
    default = getattr(TrainConfig(), key)
    if raw.lower() in ("none", "null") and key == "train_limit":
        return key, None
    try:
        if key == "train_limit" or isinstance(default, int) and not isinstance(default, bool):
            return key, int(raw)
        if isinstance(default, float):
            v = float(raw)
            if not np.isfinite(v):
                raise ValueError
            return key, v
    except ValueError:
        raise CifarlensError(f"--change: {key} needs a {type(default).__name__}, got {raw!r}") from None
    return key, raw


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{k} ({da[k]!r} vs {db[k]!r})" for k in TRAINING_SETTINGS + ("seed",) if da[k] != db[k]]


def one_change_guard(a: TrainConfig, b: TrainConfig) -> str:
    """The seed's method rests on exactly one modification: refuse anything else."""
    if a.seed != b.seed:
        raise CifarlensError(f"baseline and variant must share the seed ({a.seed} vs {b.seed}); "
                             "use --seeds N to repeat both arms over several seeds")
    diffs = config_differences(a, b)
    if len(diffs) != 1:
        what = "no setting" if not diffs else f"{len(diffs)} settings: {'; '.join(diffs)}"
        raise CifarlensError(f"baseline and variant must differ in exactly one training setting, "
                             f"but they differ in {what}")
    return diffs[0].split(" ", 1)[0]


# --- the study ------------------------------------------------------------------------------------


def run_study(out: str | Path, *, preset: str = "paper", change: str = "augment=crop-flip",
              seeds: int = 1, overrides: dict[str, Any] | None = None, failures_top: int = 12,
              progress: bool = True, log=None, command: str | None = None) -> dict[str, Any]:
    out = Path(out)
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if seeds < 1:
        raise CifarlensError("--seeds must be at least 1")
    base = make_config(preset, **(overrides or {}))
    key, value = parse_change(change)
    variant = dataclasses.replace(base, **{key: value})
    make_config(preset, **{**(overrides or {}), key: value})  # validates the changed value
    one_change_guard(base, variant)
    plan = {"preset": preset, "change": {"key": key, "baseline": getattr(base, key),
                                         "variant": value},
            "seeds": [base.seed + i for i in range(seeds)],
            "baseline": dataclasses.asdict(base), "variant": dataclasses.asdict(variant)}
    t0 = time.perf_counter()
    with RunLock(out):
        if (out / "study.json").exists():
            old = read_json(out / "study.json")
            same = {k: old.get(k) for k in ("change", "seeds")} == {k: plan[k] for k in ("change", "seeds")}
            if not same or _learned(old["baseline"]) != _learned(plan["baseline"]):
                raise CifarlensError(f"{out} holds a different study; use another --out")
            say(f"resuming the study in {out}")
        else:
            write_json(out / "study.json", plan)
        arms = {"baseline": base, "variant": variant}
        runs: dict[str, dict[int, Path]] = {a: {} for a in arms}
        for seed in plan["seeds"]:
            for arm, cfg in arms.items():
                run = out / "runs" / f"{arm}-s{seed}"
                runs[arm][seed] = run
                _stage_train(dataclasses.replace(cfg, seed=seed), run, progress, say, arm)
                _stage_evaluate(run, say)
        s0 = plan["seeds"][0]
        _stage_failures(runs["baseline"][s0], failures_top, say)
        summary = build_summary(out, plan, runs, failures_top, say)
        summary["timing"] = {"total_s": time.perf_counter() - t0}
        summary["command"] = command or f"cifarlens study --out {shlex.quote(str(out))}"
        write_json(out / "summary.json", summary)
        from .report import render_report

        html, md = render_report(out, summary)
    say(f"report: {html}  (markdown: {md})")
    return summary


def _learned(cfg: dict) -> dict:
    return {k: cfg.get(k) for k in TRAINING_SETTINGS}


def _stage_train(cfg: TrainConfig, run: Path, progress: bool, say, arm: str) -> None:
    if (run / "done.json").exists():
        return
    say(f"[{arm} seed {cfg.seed}] training")
    train(cfg, run, resume=True, progress=progress, log=say)


def _stage_evaluate(run: Path, say) -> None:
    from .evaluate import evaluate

    if (run / "metrics_test.json").exists() and (run / "metrics_val.json").exists():
        return
    evaluate(run, ("val", "test"), log=say)


def _stage_failures(run: Path, top: int, say) -> None:
    from .explanations import explain_run
    from .failures import find_failures

    if not (run / "failures_test.json").exists():
        find_failures(run, "test", top=top, confident=CONFIDENT, log=say)
    if not (run / "explanations_test.npz").exists() or "explain_test" not in read_json(
            run / "analysis.json"):
        explain_run(run, "test", failures=top, log=say)


# --- comparison and summary -----------------------------------------------------------------------


def _model_block(run: Path) -> dict[str, Any]:
    from .complexity import complexity
    from .models import build_model

    cfg = read_json(run / "config.json")
    done = read_json(run / "done.json")
    mv, mt = read_json(run / "metrics_val.json"), read_json(run / "metrics_test.json")
    keys = ("loss", "top1", "top5", "macro_f1", "ece", "mce", "brier")
    c = complexity(build_model(cfg["model"], cfg["num_classes"]))
    ts = mt["temperature_scaling"]
    test = {k: mt[k] for k in keys} | {"nll": mt["loss"],
                                        "top_confusions": mt["top_confusions"][:10]}
    if "superclass" in mt:
        test["superclass"] = {k: mt["superclass"][k] for k in
                              ("coarse_accuracy", "within_superclass_share", "chance_share")}
    return {
        "run": str(run), "params": c["params"], "flops": c["flops"],
        "best_epoch": done["best_epoch"], "train_time_s": done.get("wall_time_s"),
        "val": {k: mv[k] for k in keys} | {"nll": mv["loss"]}, "test": test,
        "calibration": {"temperature": ts["temperature"], "ece_before": ts["ece_before"],
                        "ece_after": ts["ece_after"], "nll_before": ts["nll_before"],
                        "nll_after": ts["nll_after"]},
    }


def build_summary(out: Path, plan: dict, runs: dict[str, dict[int, Path]], top: int,
                  say) -> dict[str, Any]:
    from .evaluate import load_predictions, run_data
    from .train import plot_curves

    s0 = plan["seeds"][0]
    ra, rb = runs["baseline"][s0], runs["variant"][s0]
    data = run_data(ra)
    cfg_a = read_json(ra / "config.json")
    split = np.load(ra / "split.npz")
    pa, pb = load_predictions(ra, "test"), load_predictions(rb, "test")
    if not np.array_equal(pa["indices"], pb["indices"]):
        raise CifarlensError("baseline and variant were evaluated on different test images")
    ca, cb = pa["pred"] == pa["labels"], pb["pred"] == pb["labels"]
    ma, mb = read_json(ra / "metrics_test.json"), read_json(rb / "metrics_test.json")
    cm_a, cm_b = np.asarray(ma["confusion_matrix"]), np.asarray(mb["confusion_matrix"])
    figs: dict[str, str] = {}

    def rel(p: Path) -> str:
        return str(p.relative_to(out))

    hist = {arm: [json.loads(line) for line in
                  (runs[arm][s0] / "metrics.jsonl").read_text().splitlines()] for arm in runs}
    figs["curves"] = "figures/curves.png"
    plot_curves(hist, out / figs["curves"])
    figs["confusion_difference"] = "figures/confusion_difference.png"
    S.plot_confusion_difference(cm_a, cm_b, data.class_names, out / figs["confusion_difference"],
                                group_names=data.coarse_names, group_of=data.fine_to_coarse)
    figs["per_class_changes"] = "figures/per_class_changes.png"
    S.plot_per_class_changes(cm_a, cm_b, data.class_names, out / figs["per_class_changes"])
    figs["reliability"] = "figures/reliability.png"
    series = []
    for arm, m, p in (("baseline", ma, pa), ("variant", mb, pb)):
        conf, corr = M.confidences_and_correct(M.softmax(p["logits"]), p["labels"])
        series.append((arm, M.calibration_bins(conf, corr), m["ece"]))
    M.plot_reliability(series, out / figs["reliability"], title="Reliability on test")
    for key, f in (("confusion", ma["figures"]["confusion"]),
                   ("confidence_hist", ma["figures"]["confidence_hist"])):
        figs[key] = rel(ra / f)
    if "confusion_superclass" in ma["figures"]:
        figs["confusion_superclass"] = rel(ra / ma["figures"]["confusion_superclass"])

    fails = read_json(ra / "failures_test.json")
    figs["failure_gallery"] = rel(ra / fails["figures"]["gallery"])
    analysis = read_json(ra / "analysis.json")
    ex = analysis.get("explain_test", {})
    if "gradcam" in ex.get("figures", {}):
        figs["gradcam_failures"] = rel(ra / ex["figures"]["gradcam"])
    if "deletion_insertion" in ex.get("figures", {}):
        figs["deletion_insertion"] = rel(ra / ex["figures"]["deletion_insertion"])
    tracked, tracking = track_failures(ra, rb, fails, top, data, out / "figures/gradcam_tracking.png")
    figs["gradcam_tracking"] = "figures/gradcam_tracking.png"

    models = {"baseline": _model_block(ra), "variant": _model_block(rb)}
    per_seed = {arm: [read_json(runs[arm][s] / "metrics_test.json")["top1"] for s in plan["seeds"]]
                for arm in runs}
    for arm in runs:
        models[arm]["per_seed"] = [{"seed": s, "test_top1": a}
                                   for s, a in zip(plan["seeds"], per_seed[arm], strict=True)]
    seeds_block = None
    if len(plan["seeds"]) > 1:
        t = S.paired_seed_test(per_seed["baseline"], per_seed["variant"])
        seeds_block = {"n": t["n_seeds"], "mean_a": t["mean_a"], "std_a": t["std_a"],
                       "mean_b": t["mean_b"], "std_b": t["std_b"], "mean_diff": t["mean_diff"],
                       "p_value": t["p_value"], "ci": [t["lo"], t["hi"]], "note": t.get("note"),
                       "mcnemar_per_seed": [
                           {"seed": s, **S.mcnemar_exact(*_correct_pair(runs, s))}
                           for s in plan["seeds"]]}
    pcc = S.per_class_changes(cm_a, cm_b, data.class_names, k=10)
    faith = ex.get("faithfulness", {})
    explain_block = {
        "layer": ex.get("layer"), "explained": ex.get("explained"),
        "faithfulness": {
            "gradcam": {k: faith.get("correct", {}).get(k) for k in ("deletion_auc", "insertion_auc")},
            "random": {"deletion_auc": faith.get("correct", {}).get("random_deletion_auc"),
                       "insertion_auc": faith.get("correct", {}).get("random_insertion_auc")},
            "failures": {k: faith.get("failures", {}).get(k) for k in ("deletion_auc", "insertion_auc")},
            "correct": {k: faith.get("correct", {}).get(k) for k in ("deletion_auc", "insertion_auc")},
        },
        "border_share": ex.get("border_share"), "pointing_game": ex.get("pointing_game"),
    }
    env = cfg_a["environment"]
    return {
        "title": "cifarlens study", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dataset": data.name, "data_source": data.source, "num_classes": data.num_classes,
        "split": {"train": int(len(split["train"])), "val": int(len(split["val"])),
                  "test": int(len(pa["labels"])), "train_used": int(len(split["train_used"]))},
        "normalization": read_json(ra / "norm.json"),
        "change": plan["change"], "config": plan["baseline"], "seeds": plan["seeds"],
        "models": models,
        "comparison": {
            "accuracy_difference": S.accuracy_difference_ci(ca, cb),
            "mcnemar": S.mcnemar_exact(ca, cb),
            "per_class": {"improved": [_pc(r) for r in pcc["improved"]],
                          "worsened": [_pc(r) for r in pcc["worsened"]]},
            "ece_change": mb["ece"] - ma["ece"],
            "seeds": seeds_block,
        },
        "failures": {
            "split": "test", "total_wrong": fails["total_wrong"],
            "confident_threshold": fails["confident_threshold"],
            "confident_wrong": fails["confident_wrong"],
            "label_error_suspects": fails["label_error_suspects"],
            "top": tracked, "tracking": tracking,
            "per_class_confident_errors": [{"name": r["name"], "count": r["confident_errors"]}
                                           for r in fails["top_confident_error_classes"]],
        },
        "explain": explain_block, "figures": figs,
        "environment": {k: env.get(k) for k in ("cifarlens", "torch", "python", "device",
                                                 "device_name", "precision", "git_commit",
                                                 "threads")},
    }


def _pc(r: dict) -> dict:
    return {"name": r["name"], "n": r["n"], "before": r["acc_a"], "after": r["acc_b"],
            "delta": r["delta"]}


def _correct_pair(runs, seed) -> tuple[np.ndarray, np.ndarray]:
    from .evaluate import load_predictions

    a = load_predictions(runs["baseline"][seed], "test")
    b = load_predictions(runs["variant"][seed], "test")
    return a["pred"] == a["labels"], b["pred"] == b["labels"]


def track_failures(ra: Path, rb: Path, fails: dict, top: int, data, fig_path: Path
                   ) -> tuple[list[dict], dict[str, int]]:
    """What the variant does on each of the baseline's top failures, with both Grad-CAMs."""
    import torch

    from . import explain as X
    from .data import normalize
    from .evaluate import load_predictions, split_arrays
    from .runs import load_model

    pb = load_predictions(rb, "test")
    probs_b = M.softmax(pb["logits"])
    top_fails = fails["failures"][:top]
    rows, counts = [], {"fixed": 0, "still_wrong": 0, "other_wrong": 0, "tracked": len(top_fails)}
    for f in top_fails:
        i = f["position"]
        vp = int(pb["pred"][i])
        status = "fixed" if vp == f["true"] else "still_wrong" if vp == f["pred"] else "other_wrong"
        counts[status] += 1
        rows.append({**{k: f[k] for k in ("rank", "index", "true_name", "pred_name", "confidence",
                                          "margin", "true_prob", "true_rank", "label_error_suspect")},
                     "variant": {"pred_name": data.class_names[vp],
                                 "confidence": float(probs_b[i, vp]),
                                 "true_prob": float(probs_b[i, f["true"]]), "status": status}})
    if top_fails:
        images, _, _ = split_arrays(ra, data, "test")
        pos = np.array([f["position"] for f in top_fails])
        maps = []
        for run, preds in ((ra, np.array([f["pred"] for f in top_fails])), (rb, pb["pred"][pos])):
            model, _ = load_model(run, "best")
            norm = read_json(run / "norm.json")
            x = normalize(torch.from_numpy(images[pos]), torch.tensor(norm["mean"]),
                          torch.tensor(norm["std"]))
            maps.append(X.gradcam(model, x, torch.from_numpy(preds)))
        plot_tracking(images[pos].transpose(0, 2, 3, 1), maps[0], maps[1], rows, fig_path)
    return rows, counts


def plot_tracking(images: np.ndarray, maps_a, maps_b, rows: list[dict], path: Path) -> None:
    """Per failure: image, baseline Grad-CAM (its prediction), variant Grad-CAM (its prediction).
    Both maps of one image share one colour scale, so their strengths compare."""
    from ._io import save_figure
    from .figures import new_figure, safe_text

    n = len(rows)
    fig, axes = new_figure(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for r, row in enumerate(rows):
        a, b = np.asarray(maps_a[r]), np.asarray(maps_b[r])
        vmax = max(float(a.max()), float(b.max()), 1e-12)
        axes[r, 0].imshow(images[r], interpolation="bicubic")
        flag = " [label?]" if row["label_error_suspect"] else ""
        axes[r, 0].set_title(f"#{row['rank']} true: {safe_text(row['true_name'])}{flag}",
                             fontsize=7, color="#b00020" if flag else "black")
        axes[r, 1].imshow(images[r], interpolation="bicubic")
        axes[r, 1].imshow(a, cmap="jet", alpha=0.5, vmin=0, vmax=vmax)
        axes[r, 1].set_title(f"baseline: {safe_text(row['pred_name'])} "
                             f"({100 * row['confidence']:.0f}%)", fontsize=7)
        v = row["variant"]
        axes[r, 2].imshow(images[r], interpolation="bicubic")
        axes[r, 2].imshow(b, cmap="jet", alpha=0.5, vmin=0, vmax=vmax)
        axes[r, 2].set_title(f"variant: {safe_text(v['pred_name'])} ({100 * v['confidence']:.0f}%)"
                             f" [{v['status'].replace('_', ' ')}]", fontsize=7,
                             color={"fixed": "#1a7f37"}.get(v["status"], "#b00020"))
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    fig.suptitle("Baseline failures tracked in the variant (Grad-CAM of each model's prediction)",
                 fontsize=9)
    save_figure(fig, path)


def demo(out: str | Path, *, progress: bool = True, log=None) -> dict[str, Any]:
    """The smoke study on freshly generated data: offline, about two minutes on 2 CPU cores."""
    from .synth import ensure_synthetic

    out = Path(out)
    data_root = out / "data"
    # Kept when complete and the same; an incomplete or stale generated dataset is rewritten.
    ensure_synthetic(data_root, "cifar100", train_per_class=50, test_per_class=10, seed=0,
                     label_noise=0.03)
    return run_study(out / "study", preset="smoke", overrides={"data_dir": str(data_root)},
                     progress=progress, log=log,
                     command=f"cifarlens demo --out {shlex.quote(str(out))}")
