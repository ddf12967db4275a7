"""What the label-issue analysis reads from runs: each seed's out-of-sample val probabilities,
and the training images a model represents like a flagged one.

The merge over seeds and cleanlab's confident learning are in `analysis/label_issues.py`
(arrays in, arrays out); this module reads runs (through the `Run`'s freshness rule) and the
feature cache of `stages/neighbours.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cifarlens.analysis.metrics import softmax
from cifarlens.analysis.neighbours import nearest
from cifarlens.runs import Run
from cifarlens.stages.neighbours import K, split_features
from cifarlens.training.features import features


def val_set(run: Run | str, *, temperature: bool = False) -> dict[str, np.ndarray]:
    """A run's val predictions as `analysis.label_issues.find_issues` takes them: softmax of
    the logits (divided by the temperature evaluate fitted on val when `temperature`), refused
    when the predictions were made from another checkpoint than the run's best.pt."""
    r = Run.open(run)
    p = r.require_current("predictions", "val")
    t = r.temperature("val") if temperature else None
    logits = p["logits"].astype(np.float64)
    return {"indices": p["indices"], "labels": p["labels"],
            "probs": softmax(logits / t if t else logits)}


def training_neighbours(run: Run | str, indices: np.ndarray, *, k: int = K,
                        layer: str | None = None) -> list[list[dict[str, Any]]]:
    """For each training image (dataset indices), its k most similar OTHER training images
    in `run`'s feature space (over all classes, among the run's training split), as
    [{"index", "label", "similarity"}]. Images outside the cached training split (another
    seed's val images) get their features in one small pass."""
    run = Run.open(run)
    idx = np.asarray(indices, dtype=np.int64)
    if not len(idx):
        return []
    ftr, itr, _ = split_features(run, "train", layer)
    ytr = run.data().train_y[itr].astype(np.int64)
    row = {int(i): r for r, i in enumerate(itr)}
    q = np.empty((len(idx), ftr.shape[1]), dtype=np.float16)
    cached = np.array([int(i) in row for i in idx], dtype=bool)
    q[cached] = ftr[[row[int(i)] for i in idx[cached]]]
    if not cached.all():
        q[~cached] = features(run.model(), run.data().train_x[idx[~cached]], run.norm, layer=layer)
    nn = nearest(q, ftr, ytr, None, k + 1)  # one more: the image itself when it is cached
    out = []
    for j, i in enumerate(idx):
        keep = [(p, s) for p, s in zip(nn["all_index"][j].tolist(),
                                       nn["all_similarity"][j].tolist(), strict=True)
                if p >= 0 and int(itr[p]) != int(i)][:k]
        out.append([{"index": int(itr[p]), "label": int(ytr[p]), "similarity": round(s, 4)}
                    for p, s in keep])
    return out
