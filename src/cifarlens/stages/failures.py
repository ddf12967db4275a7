"""High-confidence failure discovery from saved predictions: `cifarlens failures RUN`.

"Confident" is judged on TEMPERATURE-SCALED probabilities (T fitted on the validation split by
`cifarlens evaluate`, read from metrics_<split>.json): with label smoothing the raw softmax is
underconfident (fitted T 0.34-0.45 on the demo), so a cut on raw probabilities finds almost no
confident errors. The raw confidence stays in every record (`raw_confidence`).

Every wrong prediction is ranked by (scaled) confidence, then margin. Likely label errors: a
high-precision confident-learning rule (`label_issues(method="rule")`) decides
`label_error_suspect`; cleanlab's `find_label_issues` (the field's confident learning) is kept
beside it as `cleanlab_issue`, a wider candidate list for review. Measured on generated data
(docs/analysis.md, `bench/label_noise.py`): the rule on scaled probabilities has 95-98%
precision but finds only ~35% of flips to the class the model confuses most; cleanlab finds
~72% of those but at ~14% precision with a 67%-accurate model, i.e. it flags most model errors.
About 6% of CIFAR-100 test labels are wrong, so the failure list must separate the two.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cifarlens import _console as console
from cifarlens._defaults import CONFIDENT
from cifarlens._io import locked
from cifarlens.analysis import metrics as M
from cifarlens.analysis.failures import per_class_errors, rank_failures
from cifarlens.errors import CifarlensError
from cifarlens.figures.plots import plot_gallery  # the gallery is drawn in the figures layer
from cifarlens.runs import Run


def scaled_probs(run: Run | str | os.PathLike, split: str, logits: np.ndarray
                 ) -> tuple[np.ndarray, float | None]:
    """Softmax of logits / T with the temperature `evaluate` fitted on val (None: no fit found,
    raw probabilities returned)."""
    t = Run.of(run).temperature(split)
    if t is None:
        return M.softmax(logits), None
    return M.apply_temperature(logits, t), t


# Images in a failure gallery at most: `failures --top 1000` once spent 4 min 40 s and 2.2 GB
# drawing an 85 MB figure.
MAX_GALLERY = 48


@locked
def find_failures(run: Run | str | os.PathLike, split: str = "test", *, top: int = 12, confident: float = CONFIDENT,
                  max_true_prob: float = 0.02, method: str = "rule",
                  log=None, progress: bool = False) -> dict[str, Any]:
    """Rank the split's errors, flag likely label errors, draw the gallery, write
    failures_<split>.json. `progress`: a bar with an ETA on stderr (reading the data, ranking,
    drawing, writing) when that lasts more than a couple of seconds. Logs go to stderr."""
    log = log or console.log
    with console.progress(4, f"failures ({split})", progress) as bar:
        return _find_failures(Run.open(run), split, top, confident, max_true_prob, method, log,
                              bar)


def _find_failures(run: Run, split: str, top: int, confident: float, max_true_prob: float,
                   method: str, log, bar) -> dict[str, Any]:
    if top < 1:
        raise CifarlensError("--top must be at least 1")
    if not 0.0 <= confident <= 1.0:
        raise CifarlensError(f"--confident must lie in [0, 1], got {confident}")
    p = run.predictions(split)
    data = run.data()
    bar.update(1)
    raw = M.softmax(p["logits"])
    probs, temperature = scaled_probs(run, split, p["logits"])
    basis = ("temperature-scaled probabilities (T fitted on val)" if temperature is not None
             else "raw softmax probabilities (no fitted temperature found: run evaluate)")
    fails = rank_failures(p["labels"], probs, p["indices"], data.class_names, raw_probs=raw,
                          method=method, max_true_prob=max_true_prob)
    conf = probs.max(1)
    per_class = per_class_errors(p["labels"], p["pred"], conf, data.class_names, confident)
    n_conf = sum(f["confidence"] >= confident for f in fails)
    n_conf_raw = sum(f["raw_confidence"] >= confident for f in fails)
    result = {
        "split": split, "checkpoint": str(p["checkpoint"]),
        "checkpoint_sha256": str(p.get("checkpoint_sha256", "")), "n": int(len(p["labels"])),
        "total_wrong": len(fails), "confident_threshold": confident,
        "confidence_basis": basis, "temperature": temperature,
        "confident_wrong": int(n_conf), "confident_wrong_raw": int(n_conf_raw),
        "label_error_method": method, "max_true_prob": max_true_prob,
        "label_error_suspects": int(sum(f["label_error_suspect"] for f in fails)),
        "cleanlab_issues": int(sum(f["cleanlab_issue"] for f in fails)),
        "per_class": per_class,
        "top_confident_error_classes": [r for r in per_class if r["confident_errors"]][:10],
        "failures": fails,
    }
    bar.update(1)
    images, _, _ = run.split_arrays(split, data)
    gallery = Run.figure_name(f"failures_{split}")
    if top > MAX_GALLERY:  # every failure is in the JSON; the picture stays readable and bounded
        log(f"note: the gallery shows the first {MAX_GALLERY} of the {top} failures asked for "
            f"(all {len(fails)} are in {Run.failures_name(split)})")
    plot_gallery(images, fails[:min(top, MAX_GALLERY)], run.file(gallery),
                 title=f"Most confident failures ({split}, ranked"
                       + (f"; confidence after temperature scaling, T = {temperature:.2f})"
                          if temperature is not None else "; raw confidence)"))
    bar.update(1)
    result["figures"] = {"gallery": gallery}
    run.write_failures(split, result)
    run.record(f"failures_{split}", {
        "file": Run.failures_name(split), "figures": result["figures"],
        "checkpoint_sha256": result["checkpoint_sha256"],
        "numbers": {k: result[k] for k in ("n", "total_wrong", "confident_wrong",
                                          "confident_wrong_raw", "label_error_suspects",
                                          "confident_threshold", "temperature")}})
    bar.update(1)
    log(f"{split}: {len(fails)} wrong of {result['n']}; {n_conf} with confidence >= "
        f"{confident:.0%} on {basis} ({n_conf_raw} on raw probabilities); "
        f"{result['label_error_suspects']} flagged as likely label errors ({method}; cleanlab "
        f"candidates: {result['cleanlab_issues']})")
    return result
