#!/usr/bin/env python
"""Level and power of `neighbour_share`'s test on constructed neighbour labels.

Each draw: `classes` true classes, `fails` failures and `ok` correctly classified images per
class, k = 8 neighbours. A correct image's neighbour carries its class with probability 0.6,
else a uniformly random label; a failure's carries its predicted label with probability
`planted`, else is drawn like a correct image's. planted = 0 is the null (failures placed like
correct images): the share of draws with p < 0.05 is the test's level, the share `supported`
its false-claim rate; planted > 0 gives the power.

  .venv/bin/python bench/neighbour_share_level.py --draws 300
"""

from __future__ import annotations

import argparse

import numpy as np

from cifarlens.analysis.neighbours import neighbour_share


def draw(rng: np.random.Generator, planted: float, classes: int, fails: int, ok: int, k: int = 8):
    f_true = np.repeat(np.arange(classes), fails)
    f_pred = (f_true + rng.integers(1, classes, len(f_true))) % classes
    o_true = np.repeat(np.arange(classes), ok)

    def like_correct(target: np.ndarray) -> np.ndarray:
        rand = rng.integers(0, classes, (len(target), k))
        return np.where(rng.random((len(target), k)) < 0.6, target[:, None], rand)

    f_nb = np.where(rng.random((len(f_true), k)) < planted, f_pred[:, None], like_correct(f_true))
    return f_nb, f_pred, f_true, like_correct(o_true), o_true


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--resamples", type=int, default=199)
    a = ap.parse_args()
    print("| classes x failures x correct | planted | draws | p < 0.05 | supported |\n"
          "|---|---|---|---|---|")
    for classes, fails, ok in ((5, 3, 8), (8, 6, 20), (20, 5, 50)):
        for planted in (0.0, 0.1, 0.3):
            res = [neighbour_share(*draw(np.random.default_rng([s, classes]), planted, classes,
                                         fails, ok), resamples=a.resamples, seed=s)
                   for s in range(a.draws)]
            low = np.mean([r["p"] is not None and r["p"] < 0.05 for r in res])
            sup = np.mean([r["supported"] for r in res])
            print(f"| {classes} x {fails} x {ok} | {planted} | {a.draws} | {low:.1%} | "
                  f"{sup:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
