"""The report's "data side" section: each tracked failure beside the training images the baseline
represents alike, the tested share of them in the predicted class, each change seen through
them, and training-set label issues (summary.json `data_side`, study/data_side.py).

The sentence builders take the JSON form of their part (`to_json(part)`): pure functions of
numbers, tested on constructed cases. A sentence that concludes something is written only where
its test supports it, with the test, its uncertainty and the noise it covers; otherwise the
numbers alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cifarlens.report.blocks import Block, heading, note_block, paragraph, table_block
from cifarlens.report.constants import ALPHA
from cifarlens.report.formats import _s, fmt_float, fmt_int, fmt_p, fmt_pct, num
from cifarlens.report.view import View
from cifarlens.study.browse import load
from cifarlens.study.browse_neighbours import row_neighbours
from cifarlens.study.schema import to_json

WHAT = ("They are images the model represents alike (its features), not a cause of the failure: "
        "a neighbour does not show that training on it led to the error.")
# Measured with bench/neighbour_share_level.py (docs/label-issues.md): what the share test
# detects with these numbers of classes.
SHARE_POWER = ("with 5 true classes of 3 failures each it detects a planted rise of 0.1 in the "
               "share 84% of the time (100% with 8 classes)")
# Measured with bench/label_noise.py --train-flips (docs/label-issues.md).
FLAG_PRECISION = ("on generated data with 10% of training labels flipped, 15-16% of the flags "
                  "were real flips from a 37%-accurate model and 58-80% from a 91-95%-accurate "
                  "one, with recall 73-89% of the flips covered")


def _ci(ci: Any) -> tuple[float | None, float | None]:
    lo, hi = (list(ci) + [None, None])[:2] if isinstance(ci, list | tuple) else (None, None)
    return num(lo), num(hi)


def _signed(x: Any) -> str:
    f = num(x)
    return "n/a" if f is None else f"{f:+.2f}"


def describe_share(share: dict[str, Any], k: int) -> str:
    """Do the failures sit among their predicted class? The test of
    analysis.neighbours.neighbour_share, as a sentence (supported) or its numbers."""
    ms, mr, d = (num(share.get(x)) for x in ("mean_share", "mean_reference", "mean_diff"))
    n_cls, n_t = int(share.get("n_classes") or 0), int(share.get("n_tested") or 0)
    lo, hi = _ci(share.get("ci"))
    if ms is None or mr is None:
        return ("No failure has correctly classified test images of its own class to compare "
                "with, so the share was not tested.")
    numbers = (f"on average {fmt_pct(ms, 1)} of a failure's {k} nearest training images (over "
               f"all classes) carry its predicted label, against {fmt_pct(mr, 1)} of the "
               f"predicted label among the neighbours of correctly classified test images of "
               f"the same true class ({fmt_int(n_t)} failures of {fmt_int(n_cls)} classes)")
    if lo is None or hi is None:
        return (f"Numbers only: {numbers}. With fewer than 5 true classes there is no interval "
                "and no test.")
    test = (f"difference {_signed(d)}, 95% CI [{_signed(lo)}, {_signed(hi)}] (bootstrap over "
            f"true classes), p = {fmt_p(share.get('p'))} (permutation within classes); this "
            "covers test-image sampling for this one trained model, not training seeds")
    if share.get("supported"):
        return (f"The baseline's failures sit among training images of their predicted class: "
                f"{numbers}; {test}.")
    return (f"Not shown that the failures sit nearer their predicted class than correct images "
            f"of their class do: {numbers}; {test}. For scale, {SHARE_POWER}.")


def describe_claims(share: dict[str, Any]) -> str:
    """How many failures get their own sentence, and why none can where none does."""
    n = int(share.get("n_claims") or 0)
    n_cls = int(share.get("n_classes") or 0)
    per = (int(share.get("n_reference") or 0) / n_cls) if n_cls else 0
    if n:
        return (f"{fmt_int(n)} of the {fmt_int(share.get('n_failures'))} failures get their own "
                "sentence below: more than half of their neighbours carry the predicted label, "
                "and their share is above that of every correct image of their class but a "
                f"few (Benjamini-Hochberg adjusted p < {ALPHA:g}, and the test above supported).")
    if not share.get("supported"):
        return "No failure gets its own sentence: the test over all failures does not support it."
    return ("No failure gets its own sentence: with about "
            f"{per:.0f} correct test images per class, one failure's p-value cannot go below "
            f"1/{per + 1:.0f}, which the adjustment over {fmt_int(share.get('n_failures'))} "
            "failures does not let through." if per else
            "No failure gets its own sentence.")


def describe_data_change(ch: dict[str, Any], k: int) -> str:
    """The change seen through the data (analysis.neighbours.share_change on the fixed
    failures, with those still wrong as the reference)."""
    fx, sw = ch.get("fixed") or {}, ch.get("still_wrong") or {}
    what = f"With {_s(ch.get('change'))} (seed {_s(ch.get('seed'))} pair)"
    if not fx.get("n"):
        return f"{what}, the variant fixed none of the baseline's test errors."
    lo, hi = _ci(fx.get("ci"))
    nums = (f"of the {fmt_int(fx.get('n'))} failures the variant fixed, "
            f"{fmt_pct(fx.get('mean_base'), 1)} of their {k} nearest training images carried the baseline's predicted label in "
            f"the baseline's features and {fmt_pct(fx.get('mean_variant'), 1)} in the variant's")
    if lo is None:
        return (f"{what}: numbers only, {nums} (fewer than 5 true classes: no interval, no "
                "test).")
    test = (f"difference {_signed(fx.get('mean_diff'))}, 95% CI [{_signed(lo)}, {_signed(hi)}] "
            f"over {fmt_int(fx.get('n_clusters'))} true classes, p = {fmt_p(fx.get('p'))} "
            "(sign-flip test within classes; test-image sampling for this pair of models only)")
    ref = ""
    slo, shi = _ci(sw.get("ci"))
    if sw.get("n"):
        ref = (f" For reference, the {fmt_int(sw.get('n'))} failures both models get wrong the "
               f"same way moved {_signed(sw.get('mean_diff'))}"
               + (f" [{_signed(slo)}, {_signed(shi)}]" if slo is not None else "")
               + (", so the fall is not a shift of every image's neighbourhood."
                  if fx.get("fell") and not sw.get("fell") else "."))
    if fx.get("fell"):
        return (f"{what}, the failures it fixed moved away from their old predicted class in "
                f"the model's representation: {nums}; {test}.{ref}")
    if fx.get("rose"):
        return (f"{what}, the failures it fixed sit more among their old predicted class in the "
                f"variant's representation than in the baseline's, though it now classifies "
                f"them right: {nums}; {test}.{ref}")
    return (f"{what}, not shown that the failures it fixed moved away from their old predicted "
            f"class: {nums}; {test}.{ref}")


def describe_label_issues(li: dict[str, Any]) -> str:
    """What the flag list is and how far to trust it: coverage, the model's accuracy, and the
    precision measured against planted flips."""
    seeds = li.get("seeds") or []
    accs = [num(s.get("val_top1")) for s in seeds if num(s.get("val_top1")) is not None]
    acc = ("The baseline's accuracy on those val images is "
           + ", ".join(fmt_pct(a, 1) for a in accs) + " (by seed)") if accs else \
        "The baseline's accuracy on those val images was not recorded"
    return (f"cleanlab's confident learning, on probabilities from models that never trained "
            f"on the images (each seed's validation split), flags {fmt_int(li.get('n_flagged'))} "
            f"of the {fmt_int(li.get('n_covered'))} training images those splits cover: "
            f"{fmt_pct(li.get('coverage'), 1)} of the {fmt_int(li.get('n_train'))} training "
            "images; the rest were not judged. "
            f"{acc}. How many flags are real label errors follows that accuracy: "
            f"{FLAG_PRECISION} (docs/label-issues.md). Read the list as candidates to check, "
            "ranked by how little probability the models give the label.")


def _sim_range(nb: list[Any]) -> str:
    sims = [num(e.similarity) for e in nb if num(e.similarity) is not None]
    return f"{max(sims):.2f}–{min(sims):.2f}" if sims else "n/a"


def _label_counts(nb: list[Any]) -> str:
    c = Counter(_s(e.name if e.name is not None else e.label) for e in nb)
    return ", ".join(f"{name} ×{n}" for name, n in c.most_common())


def sec_data_side(v: View) -> list[Block] | None:
    """The data side of the failures; absent from summaries without it."""
    ds = v.s.data_side
    if ds is None:
        return None
    out: list[Block] = [paragraph(
        f"For each tracked failure of the baseline (seed {_s(v.s.seeds[0] if v.s.seeds else None)}"
        f"), the {ds.k} training images its model represents most alike (cosine similarity of "
        f"the features at layer {_s(ds.layer)}), of the predicted and of the true class. {WHAT}")]
    share = to_json(ds.share) if ds.share else None
    if share:
        out.append(paragraph(describe_share(share, ds.k)))
        out.append(paragraph(describe_claims(share)))
    thumbs = _thumbs(v)
    if thumbs:
        out.append(thumbs)
    if ds.failures:
        claim = "the model's representation places this image among {} training images"
        out.append(table_block(
            ["Rank", "Image", "True", "Predicted", f"Share of {ds.k} nearest predicted",
             "Predicted-class sim.", "True-class sim.", "Sentence"],
            [[_s(f.rank), _s(f.index), _s(f.true_name), _s(f.pred_name), fmt_pct(f.share, 0),
              _sim_range(f.pred), _sim_range(f.true),
              claim.format(f.pred_name) if f.claim else "—"] for f in ds.failures],
            align="rrllrrrl",
            caption=f"Tracked failures and their {ds.k} nearest training images (similarity of "
                    "the most and the least similar of each class)"))
    for ch in ds.changes:
        out.append(paragraph(describe_data_change(to_json(ch), ds.k)))
    out += _label_issue_blocks(ds.label_issues)
    return out


def _label_issue_blocks(li: Any) -> list[Block]:
    if li is None:
        return []
    out: list[Block] = [heading("Label issues in the training set"),
                        paragraph(describe_label_issues(to_json(li)))]
    if li.top:
        out.append(table_block(
            ["Rank", "Training image", "Given label", "Suggested", "P(given label)",
             "Seeds flagging", "Nearest training images"],
            [[_s(r.rank), _s(r.index), _s(r.label), _s(r.suggested),
              fmt_float(r.self_confidence, 3), f"{r.votes} of {r.covering}",
              _label_counts(r.neighbours)] for r in li.top],
            align="rrllrrl",
            caption=f"The first {len(li.top)} of {fmt_int(li.n_flagged)} flagged training "
                    "images, fewest probability for the given label first (mean over the "
                    "seeds whose val split holds it)"))
    if li.csv:
        out.append(note_block(f"Every flagged image, with its nearest training images, is in "
                              f"{li.csv}."))
    return out


def _thumbs(v: View) -> Block | None:
    """Each tracked failure and its neighbours as tiles of the failure browser's atlas (HTML;
    the table carries the same in Markdown); None without a browse record."""
    ds = v.s.data_side
    rec = load(v.study_dir, v.s.browse.file) if v.s.browse else None
    if not rec or not rec.get("atlas_bytes") or not rec.get("neighbours"):
        return None
    names, cols, tile = rec["class_names"], int(rec.get("cols", 32)), int(rec.get("tile", 32))
    row_of = {int(r["index"]): int(r["k"]) for r in rec["rows"]}

    def bg(t: int) -> str:
        return f"-{(t % cols) * tile}px -{(t // cols) * tile}px"

    rows = []
    for f in ds.failures:
        k = row_of.get(f.index)
        nb = row_neighbours(rec["neighbours"], k) if k is not None else None
        if nb is None or not rec["neighbours"]["tiles"].get(str(k)):
            continue
        groups = [{"title": f"{side}: {name}",
                   "cells": [{"bg": bg(t), "title": f"{names[lab]} ({sim:.2f})"}
                             for t, lab, sim in nb[key] if t is not None]}
                  for side, name, key in (("predicted", f.pred_name, "pred"),
                                          ("true", f.true_name, "true"))]
        rows.append({"label": f"#{f.rank}: image {f.index}", "bg": bg(k),
                     "title": f"true {f.true_name}, predicted {f.pred_name}", "groups": groups})
    if not rows:
        return None
    return {"type": "thumbs", "rows": rows,
            "caption": f"Each tracked failure (left) and its {ds.k} nearest training images of "
                       "the predicted class, then of the true class, most similar first (hover "
                       "for label and similarity)"}
