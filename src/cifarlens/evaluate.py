"""Predictions and metrics of a trained run, from its checkpoint: `cifarlens evaluate RUN`.

Writes, per split, `predictions_<split>.npz` (dataset indices, labels, logits, predicted class,
confidence) and `metrics_<split>.json`, plus figures under `figures/`, and records each in
`analysis.json`. Everything later (failures, explanations, the study) reads these files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from ._io import RunLock, read_json, save_npz, write_json, write_text
from .data import CifarData, load_dataset
from .errors import CifarlensError
from .runs import (
    check_data_identity,
    checkpoint_sha256,
    load_model,
    load_npz,
    load_split_indices,
    read_config,
    read_norm,
    require_run,
)

SPLITS = ("val", "test")
# A bar appears only for work that lasts longer than this (seconds), as the CLI promises.
PROGRESS_DELAY_S = 2.0


def _stderr(msg: str) -> None:
    """Logs go to stderr: stdout holds only a command's result lines."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _progress(total: int, desc: str, enabled: bool, unit: str = "step"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, delay=PROGRESS_DELAY_S,
                leave=False, dynamic_ncols=True, file=sys.stderr)


def analysis_index_update(run: Path, key: str, entry: dict[str, Any]) -> None:
    """Record what a stage produced (files and the numbers behind them) in RUN/analysis.json."""
    path = run / "analysis.json"
    index = read_json(path) if path.exists() else {}
    index[key] = entry
    write_json(path, index)


def run_data(run: Path, data_dir: str | None = None) -> CifarData:
    """The run's dataset, refused if its content is not what the run was trained on."""
    cfg = read_config(run)
    data = load_dataset(cfg["dataset"], data_dir or cfg.get("data_dir"), download=False,
                        progress=False)
    check_data_identity(run, cfg, data)
    return data


def split_arrays(run: Path, data: CifarData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images, labels and dataset indices of a run's split."""
    if split == "test":
        return data.test_x, data.test_y, np.arange(len(data.test_y))
    if split == "val":
        idx = load_split_indices(run, len(data.train_y))["val"]
        return data.train_x[idx], data.train_y[idx], idx
    raise CifarlensError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")


def predict(run: Path, splits: tuple[str, ...], *, checkpoint: str = "best",
            data: CifarData | None = None, device: str = "auto", precision: str = "fp32",
            batch_size: int = 1000, bar=None) -> dict[str, dict[str, np.ndarray]]:
    """Run the checkpoint (loaded once) over each split and save predictions_<split>.npz (and
    .csv). `bar`, a tqdm bar, advances by one per image."""
    from .runtime import infer_logits, resolve_device

    run = require_run(run)
    data = data or run_data(run)
    model, cfg = load_model(run, checkpoint)
    if cfg["dataset"] != data.name or model_classes(model) != data.num_classes:
        raise CifarlensError(f"run {run} was trained on {cfg['dataset']} with "
                             f"{cfg['num_classes']} classes, data is {data.name}")
    dev = resolve_device(device)
    model = model.to(dev)
    norm = read_norm(run)
    sha = checkpoint_sha256(run, checkpoint) if checkpoint == "best" else ""
    results = {}
    for split in splits:
        x, y, idx = split_arrays(run, data, split)
        logits = infer_logits(model, x, norm["mean"], norm["std"], device=dev,
                              precision=precision, batch_size=batch_size,
                              on_batch=bar.update if bar is not None else None).cpu().numpy()
        probs = M.softmax(logits)
        pred = probs.argmax(1)
        out = {"indices": idx.astype(np.int64), "labels": y.astype(np.int64),
               "logits": logits.astype(np.float32), "pred": pred.astype(np.int64),
               "confidence": probs[np.arange(len(pred)), pred].astype(np.float32),
               "checkpoint": np.array(checkpoint), "checkpoint_sha256": np.array(sha)}
        save_npz(run / f"predictions_{split}.npz", **out)
        write_text(run / f"predictions_{split}.csv", predictions_csv(out, data.class_names))
        results[split] = out
    return results


PREDICTION_CSV_COLUMNS = ("index", "true", "pred", "confidence", "true_name", "pred_name")


def predictions_csv(p: dict[str, np.ndarray], class_names: list[str]) -> str:
    """predictions_<split>.npz as CSV, one row per image (for a spreadsheet or pandas): dataset
    index, true and predicted class (number and name), top softmax probability. Names are
    quoted by the csv module where they hold commas, quotes or line breaks."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PREDICTION_CSV_COLUMNS)
    for i, t, k, c in zip(p["indices"].tolist(), p["labels"].tolist(), p["pred"].tolist(),
                          p["confidence"].tolist(), strict=True):
        w.writerow([i, t, k, f"{c:.6f}", class_names[t], class_names[k]])
    return buf.getvalue()


def model_classes(model: torch.nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    return last.out_features


PREDICTION_KEYS = ("indices", "labels", "logits", "pred", "confidence", "checkpoint")


def load_predictions(run: Path, split: str) -> dict[str, np.ndarray]:
    """predictions_<split>.npz, checked for shape: N indices/labels/preds and (N, C) logits."""
    path = Path(run) / f"predictions_{split}.npz"
    if not path.exists():
        raise CifarlensError(f"no predictions for split {split!r} in {run}: run "
                             f"`cifarlens evaluate {run} --split {split}` first")
    p = load_npz(path, "predictions file")
    missing = [k for k in PREDICTION_KEYS if k not in p]
    if missing:
        raise CifarlensError(f"{path} is not valid: no {', '.join(missing)}")
    n = len(p["labels"])
    shapes_ok = (p["logits"].ndim == 2 and p["logits"].shape[0] == n
                 and p["logits"].shape[1] >= 2 and np.isfinite(p["logits"]).all()
                 and all(p[k].shape == (n,) for k in ("indices", "pred", "confidence")))
    labels_ok = shapes_ok and n and all(
        p[k].dtype.kind in "iu" and p[k].min() >= 0 and p[k].max() < p["logits"].shape[1]
        for k in ("labels", "pred"))
    if not labels_ok:
        raise CifarlensError(f"{path} is not valid: inconsistent shapes or class indices")
    return p


def predictions_current(run: Path, split: str) -> bool:
    """Whether saved predictions exist and come from the run's current best checkpoint."""
    path = Path(run) / f"predictions_{split}.npz"
    if not path.exists():
        return False
    try:
        p = load_predictions(run, split)
        return str(p.get("checkpoint_sha256", "")) == checkpoint_sha256(run, "best")
    except CifarlensError:
        return False


def require_current_predictions(run: Path, split: str) -> dict[str, np.ndarray]:
    """Predictions made from the checkpoint that is the run's best now, else one clear line."""
    p = load_predictions(run, split)
    if str(p.get("checkpoint_sha256", "")) != checkpoint_sha256(run, "best"):
        raise CifarlensError(f"predictions_{split}.npz in {run} were made from another "
                             f"checkpoint than its best.pt now: run `cifarlens evaluate {run}` "
                             "again")
    return p


def evaluate(run: str | Path, splits: tuple[str, ...] = ("val", "test"), *, checkpoint: str = "best",
             data_dir: str | None = None, device: str = "auto", precision: str = "fp32",
             figures: tuple[str, ...] | None = None, log=_stderr,
             progress: bool = False) -> dict[str, dict]:
    """Predictions, metrics and figures for each split (figures only for the splits in
    `figures`, default all: a study draws test only, since drawing is most of the cost).
    Test calibration uses a temperature fitted on val, so val is always predicted too.
    `progress`: a bar with an ETA on stderr (images predicted, then figures drawn) when the work
    lasts more than a couple of seconds."""
    run = require_run(run)
    with RunLock(run):
        return _evaluate(run, splits, checkpoint=checkpoint, data_dir=data_dir, device=device,
                         precision=precision, figures=splits if figures is None else figures,
                         log=log, progress=progress)


def _evaluate(run: Path, splits: tuple[str, ...], *, checkpoint: str, data_dir: str | None,
              device: str, precision: str, figures: tuple[str, ...], log,
              progress: bool = False) -> dict[str, dict]:
    data = run_data(run, data_dir)
    todo = list(dict.fromkeys(("val",) + tuple(splits) if "test" in splits else splits))
    n_images = sum(len(split_arrays(run, data, s)[1]) for s in todo)
    with _progress(n_images, "predicting", progress, unit="img") as bar:
        preds = predict(run, tuple(todo), checkpoint=checkpoint, data=data, device=device,
                        precision=precision, bar=bar)
    # drawing the figures is most of evaluate's time (the 100x100 confusion matrix): one step each
    draws = [s for s in splits if s in figures]
    with _progress(len(draws) * _figure_count(data), "figures", progress) as fig_bar:
        return _summarize(run, splits, preds, data, checkpoint, draws, log, fig_bar)


def _figure_count(data: CifarData) -> int:
    return 4 if data.fine_to_coarse is not None else 3  # + the superclass confusion


def _summarize(run: Path, splits: tuple[str, ...], preds: dict, data: CifarData, checkpoint: str,
               figures: list[str], log, fig_bar) -> dict[str, dict]:
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
        m["checkpoint_sha256"] = str(p["checkpoint_sha256"])
        m["split"] = s
        m["temperature_scaling"] = {
            "temperature": temperature, "fitted_on": "val",
            "ece_before": m["ece"], "ece_after": M.ece(scaled, p["labels"]),
            "nll_before": m["loss"], "nll_after": M.nll(scaled, p["labels"]),
            "mce_after": M.mce(scaled, p["labels"]), "brier_after": M.brier(scaled, p["labels"]),
            "mce_count_after": M.mce_with_count(scaled, p["labels"])[1],
        }
        figs = _figures(run, figdir, s, data, p, probs, scaled, m, fig_bar) \
            if s in figures else {}
        m["figures"] = figs
        write_json(run / f"metrics_{s}.json", m)
        analysis_index_update(run, f"evaluate_{s}", {
            "predictions": f"predictions_{s}.npz", "predictions_csv": f"predictions_{s}.csv",
            "metrics": f"metrics_{s}.json", "figures": figs,
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
    M.plot_confusion(cm, data.class_names, run / figs["confusion"],
                     group_names=data.coarse_names, group_of=data.fine_to_coarse,
                     top_pairs=m["top_confusions"][:15], title=f"Confusion matrix ({s})")
    bar.update(1)
    conf, correct = M.confidences_and_correct(probs, p["labels"])
    sconf, scorrect = M.confidences_and_correct(scaled, p["labels"])
    ts = m["temperature_scaling"]
    M.plot_reliability([("uncalibrated", M.calibration_bins(conf, correct), m["ece"]),
                        (f"temperature-scaled (T={ts['temperature']:.2f})",
                         M.calibration_bins(sconf, scorrect), ts["ece_after"])],
                       run / figs["reliability"], title=f"Reliability ({s})")
    bar.update(1)
    M.plot_confidence_hist(conf, correct, run / figs["confidence_hist"],
                           title=f"Confidence of right and wrong predictions ({s})")
    bar.update(1)
    if "superclass" in m:
        figs["confusion_superclass"] = f"figures/confusion_superclass_{s}.png"
        M.plot_superclass_confusion(np.asarray(m["superclass"]["coarse_confusion"]),
                                    data.coarse_names, run / figs["confusion_superclass"])
        bar.update(1)
    return figs
