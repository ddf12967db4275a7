"""The baseline's confident failures followed into the variant, with Grad-CAM for both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cifarlens.cam.figures import plot_tracking
from cifarlens.cam.gradcam import gradcam
from cifarlens.runs import Run
from cifarlens.stages.failures import scaled_probs


def track_failures(ra: Run | Path, rb: Run | Path, fails: dict, top: int, data, fig_path: Path
                   ) -> tuple[list[dict], dict[str, Any]]:
    """What the variant does on each of the baseline's top failures, with both Grad-CAMs.

    The counts come with two references: `all_errors`, the share of ALL baseline test errors the
    variant gets right (the base rate a top-K result is read against), and a split of the
    tracked failures into suspected label errors (`label_suspects`, where "fixed" means the
    variant agrees with a probably wrong label) and the rest (`others`). Confidences are
    temperature-scaled with each model's own validation-fitted T, like stages/failures.py's.
    """
    import torch

    ra, rb = Run.open(ra), Run.open(rb)
    pa, pb = ra.predictions("test"), rb.predictions("test")
    probs_b, _ = scaled_probs(rb, "test", pb["logits"])
    top_fails = fails["failures"][:top]
    statuses = ("fixed", "still_wrong", "other_wrong")
    counts: dict[str, Any] = {k: 0 for k in statuses} | {"tracked": len(top_fails)}
    groups = {g: {k: 0 for k in statuses} | {"tracked": 0} for g in ("label_suspects", "others")}
    rows = []
    for f in top_fails:
        i = f["position"]
        vp = int(pb["pred"][i])
        status = "fixed" if vp == f["true"] else "still_wrong" if vp == f["pred"] else "other_wrong"
        counts[status] += 1
        g = groups["label_suspects" if f.get("label_error_suspect") else "others"]
        g[status] += 1
        g["tracked"] += 1
        rows.append({**{k: f.get(k) for k in ("rank", "index", "true_name", "pred_name",
                                              "confidence", "raw_confidence", "margin",
                                              "true_prob", "true_rank", "label_error_suspect")},
                     "variant": {"pred_name": data.class_names[vp],
                                 "confidence": float(probs_b[i, vp]),
                                 "true_prob": float(probs_b[i, f["true"]]), "status": status}})
    wrong_a = pa["pred"] != pa["labels"]
    right_b = pb["pred"] == pb["labels"]
    n_err, n_fix = int(wrong_a.sum()), int((wrong_a & right_b).sum())
    counts.update(groups)
    counts["all_errors"] = {"errors": n_err, "fixed": n_fix,
                            "share": n_fix / n_err if n_err else None}
    if top_fails:
        images, _, _ = ra.split_arrays("test", data)
        pos = np.array([f["position"] for f in top_fails])
        maps = []
        for run, preds in ((ra, np.array([f["pred"] for f in top_fails])), (rb, pb["pred"][pos])):
            maps.append(gradcam(run.model("best"), run.normalize(images[pos]),
                                torch.from_numpy(preds)))
        plot_tracking(images[pos].transpose(0, 2, 3, 1), maps[0], maps[1], rows, fig_path)
    return rows, counts
