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

With --train-flips DIR it scores the TRAINING-set label issues instead (analysis/label_issues.py,
docs/label-issues.md): generated data whose training labels are flipped at --rate (uniform and
confusable, recorded in the manifest), smoke-preset models trained for each of --epochs with
--seeds seeds (each seed draws its own val split), and cleanlab's flags on each seed's
out-of-sample val probabilities merged over the seeds, against the recorded flips:

  python bench/label_noise.py --train-flips /tmp/lnf --epochs 1,3,8 --seeds 3 --rate 0.1 \
      --json bench/results/label_issues_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    ap.add_argument("run", nargs="?", help="an evaluated run folder (predictions_test/val.npz)")
    ap.add_argument("--rate", type=float, default=0.05, help="fraction of test labels to flip")
    ap.add_argument("--repeats", type=int, default=5, help="flip seeds per noise kind")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--train-flips", metavar="DIR", help="score training-set label issues "
                    "from val predictions (data and runs are made under DIR)")
    ap.add_argument("--epochs", default="1,3,8", help="with --train-flips: epochs per model")
    ap.add_argument("--seeds", type=int, default=3, help="with --train-flips: seeds per setting")
    ap.add_argument("--train-per-class", type=int, default=100)
    a = ap.parse_args(argv)
    if a.train_flips:
        return score_train_flips(a)
    if not a.run:
        ap.error("give an evaluated run, or --train-flips DIR")
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


# --- training-set flips, scored from each seed's out-of-sample val predictions -------------------


def _train_runs(root: Path, kind: str, rate: float, per_class: int, epochs: list[int],
                seeds: int) -> tuple[Path, dict[tuple[int, int], Path]]:
    """Generated data with flipped training labels and one evaluated smoke run per (epochs,
    seed); kept when already there (the bench can be rerun cheaply)."""
    from cifarlens.data.synth import ensure_synthetic
    from cifarlens.stages.evaluate import evaluate
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    data = root / f"data-{kind}"
    ensure_synthetic(data, "cifar100", train_per_class=per_class, test_per_class=10, seed=0,
                     train_noise=(rate, kind))
    runs = {}
    for e in epochs:
        for s in range(seeds):
            out = root / f"{kind}-e{e}-s{s}"
            if not Run(out).is_done():
                cfg = make_config("smoke", data_dir=str(data), device="cpu", epochs=e, seed=s)
                train(cfg, out, progress=False, log=lambda m: None)
            if not Run(out).predictions_current("val"):
                evaluate(out, ("val",), device="cpu", figures=(), log=lambda m: None)
            runs[(e, s)] = out
    return data, runs


def _score(found: dict, flipped: np.ndarray, original: np.ndarray) -> dict[str, float]:
    covered = found["covered"]
    is_flip = np.isin(covered, flipped)
    flagged = found["flagged"]
    tp = int((flagged & is_flip).sum())
    n_top = int(is_flip.sum())  # precision of the ranking's first (number of covered flips)
    top = np.isin(found["index"][:n_top], flipped).mean() if n_top else float("nan")
    fixed = (found["suggested"][is_flip] == original[covered[is_flip]]).mean() if n_top else 0
    return {"covered": len(covered), "coverage": found["coverage"],
            "flips_covered": n_top, "flagged": int(flagged.sum()),
            "precision": tp / flagged.sum() if flagged.sum() else float("nan"),
            "recall": tp / n_top if n_top else float("nan"),
            "chance_precision": float(is_flip.mean()), "precision_at_n_flips": float(top),
            "suggested_is_original": float(fixed)}


def score_train_flips(a: argparse.Namespace) -> int:
    from cifarlens.analysis.label_issues import find_issues
    from cifarlens.data.synth import read_synth_info
    from cifarlens.stages.label_issues import val_set as run_val_set

    root, epochs = Path(a.train_flips), [int(e) for e in a.epochs.split(",")]
    rows = []
    print("| flips | epochs | val accuracy (clean labels) | covered | flips covered | flagged "
          "| precision | recall | chance precision | precision at n flips |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("uniform", "confusable"):
        data, runs = _train_runs(root, kind, a.rate, a.train_per_class, epochs, a.seeds)
        info = read_synth_info(data / "cifar-100-python")
        flips = info["flipped_labels"]["train"]
        flipped = np.array([f["index"] for f in flips])
        original = Run(next(iter(runs.values()))).data().train_y.astype(np.int64).copy()
        original[flipped] = [f["original"] for f in flips]
        for e in epochs:
            sets = {t: [run_val_set(runs[(e, s)], temperature=t) for s in range(a.seeds)]
                    for t in (False, True)}
            acc = np.mean([np.mean(v["probs"].argmax(1) == original[v["indices"]])
                           for v in sets[False]])
            for t, vs in sets.items():
                sc = _score(find_issues(vs, len(original)), flipped, original)
                rows.append({"kind": kind, "epochs": e, "seeds": a.seeds, "scaled": t,
                             "val_accuracy_clean": float(acc), **sc})
                print(f"| {kind}{' (scaled)' if t else ''} | {e} | {acc:.1%} | "
                      f"{sc['coverage']:.1%} | {sc['flips_covered']} | {sc['flagged']} | "
                      f"{sc['precision']:.1%} | {sc['recall']:.1%} | "
                      f"{sc['chance_precision']:.1%} | {sc['precision_at_n_flips']:.1%} |")
    if a.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import machine_info, write_json

        write_json(a.json, {"rate": a.rate, "seeds": a.seeds, "epochs": epochs,
                            "train_per_class": a.train_per_class, "rows": rows,
                            "machine": machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
