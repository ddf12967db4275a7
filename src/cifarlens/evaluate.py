"""Predictions and metrics of a trained run, from its checkpoint: `cifarlens evaluate RUN`.

Writes, per split, `predictions_<split>.npz` (dataset indices, labels, logits, predicted class,
confidence) and `metrics_<split>.json`, plus figures under `figures/`, and records each in
`analysis.json`. Everything later (failures, explanations, the study) reads these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from ._io import read_json, save_npz, write_json
from .data import CifarData, load_dataset
from .errors import CifarlensError
from .runs import load_model, load_split_indices, read_config, require_run

SPLITS = ("val", "test")


def analysis_index_update(run: Path, key: str, entry: dict[str, Any]) -> None:
    """Record what a stage produced (files and the numbers behind them) in RUN/analysis.json."""
    path = run / "analysis.json"
    index = read_json(path) if path.exists() else {}
    index[key] = entry
    write_json(path, index)


def run_data(run: Path, data_dir: str | None = None) -> CifarData:
    cfg = read_config(run)
    return load_dataset(cfg["dataset"], data_dir or cfg.get("data_dir"), download=False,
                        progress=False)


def split_arrays(run: Path, data: CifarData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images, labels and dataset indices of a run's split."""
    if split == "test":
        return data.test_x, data.test_y, np.arange(len(data.test_y))
    if split == "val":
        idx = load_split_indices(run)["val"]
        return data.train_x[idx], data.train_y[idx], idx
    raise CifarlensError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")


def predict(run: Path, splits: tuple[str, ...], *, checkpoint: str = "best",
            data: CifarData | None = None, device: str = "auto", precision: str = "fp32",
            batch_size: int = 1000) -> dict[str, dict[str, np.ndarray]]:
    """Run the checkpoint (loaded once) over each split and save predictions_<split>.npz."""
    from .train import infer_logits, resolve_device

    run = require_run(run)
    data = data or run_data(run)
    model, cfg = load_model(run, checkpoint)
    if cfg["dataset"] != data.name or model_classes(model) != data.num_classes:
        raise CifarlensError(f"run {run} was trained on {cfg['dataset']} with "
                             f"{cfg['num_classes']} classes, data is {data.name}")
    dev = resolve_device(device)
    model = model.to(dev)
    norm = read_json(run / "norm.json")
    results = {}
    for split in splits:
        x, y, idx = split_arrays(run, data, split)
        logits = infer_logits(model, x, norm["mean"], norm["std"], device=dev,
                              precision=precision, batch_size=batch_size).cpu().numpy()
        probs = M.softmax(logits)
        pred = probs.argmax(1)
        out = {"indices": idx.astype(np.int64), "labels": y.astype(np.int64),
               "logits": logits.astype(np.float32), "pred": pred.astype(np.int64),
               "confidence": probs[np.arange(len(pred)), pred].astype(np.float32),
               "checkpoint": np.array(checkpoint)}
        save_npz(run / f"predictions_{split}.npz", **out)
        results[split] = out
    return results


def model_classes(model: torch.nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    return last.out_features


def load_predictions(run: Path, split: str) -> dict[str, np.ndarray]:
    path = Path(run) / f"predictions_{split}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CifarlensError(f"no predictions for split {split!r} in {run}: run "
                             f"`cifarlens evaluate {run} --split {split}` first") from None
    except (ValueError, OSError) as e:
        raise CifarlensError(f"corrupt {path}: {e}") from None


def superclass_order(data: CifarData) -> np.ndarray | None:
    if data.fine_to_coarse is None:
        return None
    return np.lexsort((np.arange(data.num_classes), data.fine_to_coarse))


def evaluate(run: str | Path, splits: tuple[str, ...] = ("val", "test"), *, checkpoint: str = "best",
             data_dir: str | None = None, device: str = "auto", precision: str = "fp32",
             log=print) -> dict[str, dict]:
    """Predictions, metrics and figures for each split. Test calibration uses a temperature
    fitted on val, so val is always predicted too."""
    run = require_run(run)
    data = run_data(run, data_dir)
    todo = list(dict.fromkeys(("val",) + tuple(splits) if "test" in splits else splits))
    preds = predict(run, tuple(todo), checkpoint=checkpoint, data=data, device=device,
                    precision=precision)
    temperature = M.fit_temperature(preds["val"]["logits"], preds["val"]["labels"])
    figdir = run / "figures"
    results = {}
    for s in splits:
        p = preds[s]
        probs = M.softmax(p["logits"])
        m = M.summarize(p["labels"], probs, logits=p["logits"], class_names=data.class_names,
                        fine_to_coarse=data.fine_to_coarse, coarse_names=data.coarse_names)
        scaled = M.apply_temperature(p["logits"], temperature)
        m["checkpoint"] = checkpoint
        m["split"] = s
        m["temperature_scaling"] = {
            "temperature": temperature, "fitted_on": "val",
            "ece_before": m["ece"], "ece_after": M.ece(scaled, p["labels"]),
            "nll_before": m["loss"], "nll_after": M.nll(scaled, p["labels"]),
            "mce_after": M.mce(scaled, p["labels"]), "brier_after": M.brier(scaled, p["labels"]),
            "mce_count_after": M.mce_with_count(scaled, p["labels"])[1],
        }
        figs = _figures(run, figdir, s, data, p, probs, scaled, m)
        m["figures"] = figs
        write_json(run / f"metrics_{s}.json", m)
        analysis_index_update(run, f"evaluate_{s}", {
            "predictions": f"predictions_{s}.npz", "metrics": f"metrics_{s}.json", "figures": figs,
            "numbers": {k: m[k] for k in ("n", "loss", "top1", "top5", "macro_f1", "ece", "mce",
                                          "brier")} | {"temperature": temperature}})
        results[s] = m
        log(f"{s}: top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  loss "
            f"{m['loss']:.3f}  ECE {100 * m['ece']:.2f}% -> {100 * m['temperature_scaling']['ece_after']:.2f}%"
            f" after temperature scaling (T={temperature:.2f})")
    return results


def _figures(run: Path, figdir: Path, s: str, data: CifarData, p: dict, probs: np.ndarray,
             scaled: np.ndarray, m: dict) -> dict[str, str]:
    cm = np.asarray(m["confusion_matrix"])
    figs = {"confusion": f"figures/confusion_{s}.png",
            "reliability": f"figures/reliability_{s}.png",
            "confidence_hist": f"figures/confidence_{s}.png"}
    M.plot_confusion(cm, data.class_names, run / figs["confusion"],
                     group_names=data.coarse_names, group_of=data.fine_to_coarse,
                     top_pairs=m["top_confusions"][:15], title=f"Confusion matrix ({s})")
    conf, correct = M.confidences_and_correct(probs, p["labels"])
    sconf, scorrect = M.confidences_and_correct(scaled, p["labels"])
    ts = m["temperature_scaling"]
    M.plot_reliability([("uncalibrated", M.calibration_bins(conf, correct), m["ece"]),
                        (f"temperature-scaled (T={ts['temperature']:.2f})",
                         M.calibration_bins(sconf, scorrect), ts["ece_after"])],
                       run / figs["reliability"], title=f"Reliability ({s})")
    M.plot_confidence_hist(conf, correct, run / figs["confidence_hist"],
                           title=f"Confidence of right and wrong predictions ({s})")
    if "superclass" in m:
        figs["confusion_superclass"] = f"figures/confusion_superclass_{s}.png"
        M.plot_superclass_confusion(np.asarray(m["superclass"]["coarse_confusion"]),
                                    data.coarse_names, run / figs["confusion_superclass"])
    return figs
