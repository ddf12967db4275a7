"""Precision and recall of label-error detection under realistic and random label noise.

Takes an evaluated run (its test probabilities are out-of-sample: the model never trained on
them), corrupts a fraction of the TEST labels in memory (the images and the model are
unchanged, so the probabilities stay valid) and asks each detector to find the corrupted ones.
Three kinds of noise, each repeated over several seeds:

  random      the label moves to a uniformly random other class (what synth.py's --label-noise
              does, and the only case the old rule was validated on)
  superclass  the label moves to another class of the same CIFAR-100 superclass (boy/man,
              maple/oak: how real CIFAR-100 label errors look)
  confused    the label moves to the class the model confuses most with the true one (the
              largest mean off-diagonal probability on the VALIDATION split)

Usage (the run used in docs/analysis.md):

  cifarlens data synth --out /tmp/ln/data --train-per-class 50 --test-per-class 30 --seed 0
  cifarlens train --data-dir /tmp/ln/data --preset smoke --device cpu --out /tmp/ln/run
  cifarlens evaluate /tmp/ln/run
  python bench/label_noise.py /tmp/ln/run --rate 0.05 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from cifarlens.analysis.failures import label_issues
from cifarlens.analysis.metrics import softmax
from cifarlens.runs import Run
from cifarlens.stages.failures import scaled_probs

KINDS = ("random", "superclass", "confused")


def corrupt(labels: np.ndarray, kind: str, rate: float, rng: np.random.Generator,
            f2c: np.ndarray, confused: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, k = len(labels), len(f2c)
    pick = np.sort(rng.choice(n, int(round(rate * n)), replace=False))
    new = labels.copy()
    for i in pick:
        y = labels[i]
        if kind == "random":
            new[i] = rng.choice(np.delete(np.arange(k), y))
        elif kind == "superclass":
            mates = np.flatnonzero((f2c == f2c[y]) & (np.arange(k) != y))
            new[i] = rng.choice(mates)
        else:
            new[i] = confused[y]
    flipped = np.zeros(n, dtype=bool)
    flipped[pick] = True
    return new, flipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="an evaluated run folder (predictions_test/val.npz)")
    ap.add_argument("--rate", type=float, default=0.05, help="fraction of test labels to flip")
    ap.add_argument("--repeats", type=int, default=5, help="flip seeds per noise kind")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    data = Run(a.run).data()
    if data.fine_to_coarse is None:
        raise SystemExit("needs a CIFAR-100-format run (superclasses)")
    f2c = np.asarray(data.fine_to_coarse)
    pt, pv = Run(a.run).predictions("test"), Run(a.run).predictions("val")
    raw = softmax(pt["logits"])
    scaled, t = scaled_probs(a.run, "test", pt["logits"])
    vprobs = softmax(pv["logits"])
    k = vprobs.shape[1]
    mean_p = np.stack([vprobs[pv["labels"] == c].mean(0) if (pv["labels"] == c).any()
                       else np.zeros(k) for c in range(k)])
    np.fill_diagonal(mean_p, -1)
    confused = mean_p.argmax(1)
    labels = pt["labels"].astype(np.int64)
    detectors = {
        "rule, raw probs (before)": lambda y: label_issues(y, raw, method="rule"),
        "rule, scaled probs (default)": lambda y: label_issues(y, scaled, method="rule"),
        "cleanlab, raw probs": lambda y: label_issues(y, raw, method="cleanlab"),
        "cleanlab, scaled probs (cleanlab_issue)": lambda y: label_issues(y, scaled,
                                                                        method="cleanlab"),
    }
    results = {}
    print(f"run {a.run}: {len(labels)} test images, top-1 {np.mean(raw.argmax(1) == labels):.1%},"
          f" T = {t}; {a.rate:.0%} of labels flipped, {a.repeats} seeds per kind",
          file=sys.stderr)
    print("| noise | detector | flagged | precision | recall |\n|---|---|---|---|---|")
    for kind in KINDS:
        for name, det in detectors.items():
            prec, rec, nflag = [], [], []
            for rep in range(a.repeats):
                rng = np.random.default_rng(1000 * KINDS.index(kind) + rep)
                y, flipped = corrupt(labels, kind, a.rate, rng, f2c, confused)
                m = det(y)
                tp = int((m & flipped).sum())
                prec.append(tp / m.sum() if m.sum() else float("nan"))
                rec.append(tp / flipped.sum())
                nflag.append(int(m.sum()))
            results[f"{kind}/{name}"] = {"precision": float(np.nanmean(prec)),
                                         "recall": float(np.mean(rec)),
                                         "flagged": float(np.mean(nflag))}
            print(f"| {kind} | {name} | {np.mean(nflag):.1f} | {np.nanmean(prec):.1%} | "
                  f"{np.mean(rec):.1%} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"run": str(a.run), "rate": a.rate, "repeats": a.repeats,
                       "temperature": t, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
