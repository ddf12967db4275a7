"""The data side of a study's failures, for summary.json (`data_side`, study/schema_data_side.py).

From the study's runs, with nothing trained:

  failures      the first seed's baseline: each tracked failure's k nearest training images of
                its predicted and its true class, and the tested share (stages/neighbours.py,
                written into failures_test.json by the engine's analysis phase)
  changes       each change on the first seed's pair: did the share of the baseline's
                predicted label among the neighbours of the failures it fixed fall?
  label_issues  cleanlab on every baseline seed's out-of-sample val probabilities, merged,
                ranked, each flagged image with its nearest training images; all of them in
                STUDY/label_issues.csv, the first TOP_ISSUES in the summary

A study whose runs were analysed before neighbours existed gets them here (pipeline.ensure_*,
each a no-op when the Run already holds them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens._io import write_text
from cifarlens.analysis.label_issues import find_issues
from cifarlens.csvfile import csv_text
from cifarlens.pipeline import ensure_features, ensure_neighbours
from cifarlens.runs import Run
from cifarlens.stages.label_issues import training_neighbours, val_set
from cifarlens.stages.neighbours import change as change_view
from cifarlens.study.folder import StudyFolder
from cifarlens.study.plan import recorded_changes
from cifarlens.study.schema import from_json
from cifarlens.study.schema_data_side import DataSide

TOP_ISSUES = 20  # label issues listed in the summary and the report (all are in the CSV)
# Val probabilities divided by the temperature evaluate fitted on val: recall 1-6 points higher
# at the same precision against planted flips (docs/label-issues.md).
TEMPERATURE = True


def build_data_side(out: Path, plan: dict[str, Any], runs: dict[str, dict[int, Run]],
                    top: int, say) -> DataSide:
    """The summary's `data_side` block; writes STUDY/label_issues.csv."""
    s0 = plan["seeds"][0]
    ra = runs["baseline"][s0]
    ensure_neighbours(ra, "test", top=top, progress=False, log=say)
    res = ra.require_current("neighbours", "test")
    names = list(ra.data().class_names)
    meta = res["neighbours"]
    tracked = [_failure(f, names) for f in res["failures"][:top]]
    share = {**meta["summary"], "n_claims": int(sum(f.get("neighbour_claim", False)
                                                    for f in res["failures"]))}
    changes = []
    for c in recorded_changes(plan):
        rb = runs[c["slug"]][s0]
        ensure_features(rb, ("train", "test"), progress=False)
        view = change_view(ra, rb, k=int(meta["k"]))
        changes.append({"slug": c["slug"], "change": f"{c['key']}={c['variant']}", "seed": s0,
                        "fixed": view["fixed"], "still_wrong": view["still_wrong"]})
    issues = label_issues(out, [runs["baseline"][s] for s in plan["seeds"]], plan["seeds"],
                          names, k=int(meta["k"]))
    return from_json(DataSide, {
        "layer": meta["layer"], "k": int(meta["k"]), "what": meta["what"],
        "run": os.path.relpath(ra.path, out), "failures": tracked, "share": share,
        "changes": changes, "label_issues": issues}, "the data side")


def _neighbours(entries: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    return [{**e, "name": names[e["label"]]} for e in entries]


def _failure(f: dict[str, Any], names: list[str]) -> dict[str, Any]:
    nb = f.get("neighbours", {})
    return {"rank": f["rank"], "index": f["index"], "true_name": f["true_name"],
            "pred_name": f["pred_name"], "share": f.get("neighbour_share"),
            "claim": bool(f.get("neighbour_claim", False)),
            "pred": _neighbours(nb.get("pred", []), names),
            "true": _neighbours(nb.get("true", []), names)}


def label_issues(out: Path, baselines: list[Run], seeds: list[int], names: list[str], *,
                 k: int) -> dict[str, Any]:
    """Training-set label issues from the baseline seeds' val splits, with the first seed's
    nearest training images of each flagged one; every flagged image in the CSV."""
    sets = [val_set(r, temperature=TEMPERATURE) for r in baselines]
    n_train = len(baselines[0].data().train_y)
    res = find_issues(sets, n_train)
    nbs = training_neighbours(baselines[0], res["index"], k=k)
    rows = []
    for j, i in enumerate(res["index"].tolist()):
        rows.append({"rank": j + 1, "index": int(i), "label": names[res["rank_label"][j]],
                     "suggested": names[res["rank_suggested"][j]],
                     "self_confidence": round(float(res["rank_self_confidence"][j]), 4),
                     "votes": int(res["rank_votes"][j]),
                     "covering": int(res["rank_covering"][j]),
                     "neighbours": _neighbours(nbs[j], names)})
    csv_rel = StudyFolder.LABEL_ISSUES
    write_text(out / csv_rel, csv_text(
        ["rank", "index", "given_label", "suggested_label", "self_confidence", "votes",
         "covering_seeds", "neighbours"],
        ([r["rank"], r["index"], r["label"], r["suggested"], r["self_confidence"], r["votes"],
          r["covering"], "; ".join(f"{e['name']} ({e['similarity']:.2f}, #{e['index']})"
                                   for e in r["neighbours"])] for r in rows)))
    per_seed = []
    for s, vs, pr in zip(seeds, sets, res["per_run"], strict=True):
        acc = float(np.mean(vs["probs"].argmax(1) == vs["labels"])) if len(vs["labels"]) \
            else None
        per_seed.append({"seed": s, "n": pr["n"], "flagged": pr["flagged"], "val_top1": acc})
    return {"method": f"cleanlab find_label_issues ({res['filter_by']}) on each seed's "
                      "temperature-scaled val probabilities, merged over seeds, ranked by mean "
                      "self-confidence",
            "n_train": res["n_train"], "n_covered": res["n_covered"],
            "coverage": res["coverage"], "n_flagged": len(rows), "min_share": res["min_share"],
            "seeds": per_seed, "top": rows[:TOP_ISSUES], "csv": csv_rel}
