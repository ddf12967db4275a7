"""Predictions and metrics of a trained run, from its checkpoint: `cifarlens evaluate RUN`.

Writes, per split, `predictions_<split>.npz` (dataset indices, labels, logits, predicted class,
confidence) and `metrics_<split>.json`, plus figures under `figures/`, and records each in
`analysis.json`. Everything later (failures, explanations, the study) reads these files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cifarlens._console import log as _stderr
from cifarlens._console import progress as _progress
from cifarlens._io import RunLock
from cifarlens.analysis import metrics as M
from cifarlens.csvfile import csv_text
from cifarlens.data.dataset import CifarData
from cifarlens.errors import CifarlensError
from cifarlens.figures import plots
from cifarlens.runs import Run, load_model
from cifarlens.training.runtime import infer_logits, resolve_device

SPLITS = ("val", "test")


def predict(run: Run | str | os.PathLike, splits: tuple[str, ...], *, checkpoint: str = "best",
            data: CifarData | None = None, device: str = "auto", precision: str = "fp32",
            batch_size: int = 1000, bar=None) -> dict[str, dict[str, np.ndarray]]:
    """Run the checkpoint (loaded once) over each split and save predictions_<split>.npz (and
    .csv). `bar`, a tqdm bar, advances by one per image."""
    run = Run.open(run)
    data = data or run.data()
    model, cfg = load_model(run.path, checkpoint)
    if cfg["dataset"] != data.name or model_classes(model) != data.num_classes:
        raise CifarlensError(f"run {run} was trained on {cfg['dataset']} with "
                             f"{cfg['num_classes']} classes, data is {data.name}")
    dev = resolve_device(device)
    model = model.to(dev)
    sha = run.checkpoint_sha256(checkpoint) if checkpoint == "best" else ""
    results = {}
    for split in splits:
        if split not in SPLITS:
            raise CifarlensError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
        x, y, idx = run.split_arrays(split, data)
        logits = infer_logits(model, x, run.norm["mean"], run.norm["std"], device=dev,
                              precision=precision, batch_size=batch_size,
                              on_batch=bar.update if bar is not None else None).cpu().numpy()
        probs = M.softmax(logits)
        pred = probs.argmax(1)
        out = {"indices": idx.astype(np.int64), "labels": y.astype(np.int64),
               "logits": logits.astype(np.float32), "pred": pred.astype(np.int64),
               "confidence": probs[np.arange(len(pred)), pred].astype(np.float32),
               "checkpoint": np.array(checkpoint), "checkpoint_sha256": np.array(sha)}
        run.write_predictions(split, out, predictions_csv(out, data.class_names))
        results[split] = out
    return results


PREDICTION_CSV_COLUMNS = ("index", "true", "pred", "confidence", "true_name", "pred_name")


def predictions_csv(p: dict[str, np.ndarray], class_names: list[str]) -> str:
    """predictions_<split>.npz as CSV, one row per image (for a spreadsheet or pandas): dataset
    index, true and predicted class (number and name), top softmax probability. Names go
    through the one CSV writer (csvfile.py): never a formula, no control or bidi character."""
    return csv_text(PREDICTION_CSV_COLUMNS,
                    ([i, t, k, f"{c:.6f}", class_names[t], class_names[k]]
                     for i, t, k, c in zip(p["indices"].tolist(), p["labels"].tolist(),
                                           p["pred"].tolist(), p["confidence"].tolist(),
                                           strict=True)))


def model_classes(model: torch.nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    return last.out_features


def evaluate(run: Run | str | os.PathLike, splits: tuple[str, ...] = ("val", "test"), *,
             checkpoint: str = "best", data_dir: str | None = None, device: str = "auto",
             figures: tuple[str, ...] | None = None, log=_stderr,
             progress: bool = False) -> dict[str, dict]:
    """Predictions, metrics and figures for each split (figures only for the splits in
    `figures`, default all: a study draws test only, since drawing is most of the cost).
    Test calibration uses a temperature fitted on val, so val is always predicted too.
    `progress`: a bar with an ETA on stderr (images predicted, then figures drawn) when the work
    lasts more than a couple of seconds."""
    run = Run.open(run)
    with RunLock(run.path):
        return _evaluate(run, splits, checkpoint=checkpoint, data_dir=data_dir, device=device,
                         figures=splits if figures is None else figures,
                         log=log, progress=progress)


def _evaluate(run: Run, splits: tuple[str, ...], *, checkpoint: str, data_dir: str | None,
              device: str, figures: tuple[str, ...], log,
              progress: bool = False) -> dict[str, dict]:
    data = run.data(data_dir)
    todo = list(dict.fromkeys(("val",) + tuple(splits) if "test" in splits else splits))
    n_images = sum(len(run.split_arrays(s, data)[1]) for s in todo)
    with _progress(n_images, "predicting", progress, unit="img") as bar:
        preds = predict(run, tuple(todo), checkpoint=checkpoint, data=data, device=device,
                        precision="fp32", bar=bar)  # fp32 whatever precision the run trained in
    # drawing the figures is most of evaluate's time (the 100x100 confusion matrix): one step each
    draws = [s for s in splits if s in figures]
    with _progress(len(draws) * _figure_count(data), "figures", progress) as fig_bar:
        return _summarize(run, splits, preds, data, checkpoint, draws, log, fig_bar)


def _figure_count(data: CifarData) -> int:
    return 4 if data.fine_to_coarse is not None else 3  # + the superclass confusion


def _summarize(run: Run, splits: tuple[str, ...], preds: dict, data: CifarData, checkpoint: str,
               figures: list[str], log, fig_bar) -> dict[str, dict]:
    temperature = M.fit_temperature(preds["val"]["logits"], preds["val"]["labels"])
    figdir = run.path / Run.FIGURES
    results = {}
    for s in splits:
        p = preds[s]
        probs = M.softmax(p["logits"])
        m = M.summarize(p["labels"], probs, logits=p["logits"], class_names=data.class_names,
                        fine_to_coarse=data.fine_to_coarse, coarse_names=data.coarse_names)
        scaled = M.apply_temperature(p["logits"], temperature)
        m["checkpoint"] = checkpoint
        m["checkpoint_sha256"] = str(p["checkpoint_sha256"])
        m["split"] = s
        m["temperature_scaling"] = {
            "temperature": temperature, "fitted_on": "val",
            "ece_before": m["ece"], "ece_after": M.ece(scaled, p["labels"]),
            "nll_before": m["loss"], "nll_after": M.nll(scaled, p["labels"]),
            "mce_after": M.mce(scaled, p["labels"]), "brier_after": M.brier(scaled, p["labels"]),
            "mce_count_after": M.mce_with_count(scaled, p["labels"])[1],
        }
        figs = _figures(run.path, figdir, s, data, p, probs, scaled, m, fig_bar) \
            if s in figures else {}
        m["figures"] = figs
        run.write_metrics(s, m)
        run.record(f"evaluate_{s}", {
            "predictions": Run.predictions_name(s), "predictions_csv": Run.predictions_name(s, "csv"),
            "metrics": Run.metrics_name(s), "figures": figs,
            "checkpoint_sha256": m["checkpoint_sha256"],
            "numbers": {k: m[k] for k in ("n", "loss", "top1", "top5", "macro_f1", "ece", "mce",
                                          "brier")} | {"temperature": temperature}})
        results[s] = m
        log(f"{s}: top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  loss "
            f"{m['loss']:.3f}  ECE {100 * m['ece']:.2f}% -> {100 * m['temperature_scaling']['ece_after']:.2f}%"
            f" after temperature scaling (T={temperature:.2f})")
    return results


def _figures(run: Path, figdir: Path, s: str, data: CifarData, p: dict, probs: np.ndarray,
             scaled: np.ndarray, m: dict, bar) -> dict[str, str]:
    cm = np.asarray(m["confusion_matrix"])
    figs = {"confusion": f"figures/confusion_{s}.png",
            "reliability": f"figures/reliability_{s}.png",
            "confidence_hist": f"figures/confidence_{s}.png"}
    plots.plot_confusion(cm, data.class_names, run / figs["confusion"],
                     groups=plots.ClassGroups(data.fine_to_coarse, data.coarse_names),
                     top_pairs=m["top_confusions"][:15], title=f"Confusion matrix ({s})")
    bar.update(1)
    conf, correct = M.confidences_and_correct(probs, p["labels"])
    sconf, scorrect = M.confidences_and_correct(scaled, p["labels"])
    ts = m["temperature_scaling"]
    plots.plot_reliability([("uncalibrated", M.calibration_bins(conf, correct), m["ece"]),
                        (f"temperature-scaled (T={ts['temperature']:.2f})",
                         M.calibration_bins(sconf, scorrect), ts["ece_after"])],
                       run / figs["reliability"], title=f"Reliability ({s})")
    bar.update(1)
    plots.plot_confidence_hist(conf, correct, run / figs["confidence_hist"],
                           title=f"Confidence of right and wrong predictions ({s})")
    bar.update(1)
    if "superclass" in m:
        figs["confusion_superclass"] = f"figures/confusion_superclass_{s}.png"
        plots.plot_superclass_confusion(np.asarray(m["superclass"]["coarse_confusion"]),
                                    data.coarse_names, run / figs["confusion_superclass"])
        bar.update(1)
    return figs
