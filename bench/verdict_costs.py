"""What issue 22's verdict records cost a study: the ECE bootstrap intervals, the clustered
superclass test, the variance sources, P(improvement), the decision and the seed-level ECE test,
on synthetic logits of the real test-set size (10,000 images, 100 classes, 3 seeds).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/verdict_costs.py
"""

from __future__ import annotations

import time

import numpy as np

from cifarlens.analysis.calibration_stats import ece_scaling_intervals, ece_seed_change
from cifarlens.analysis.noise import variance_sources
from cifarlens.analysis.power import decide, prob_improvement
from cifarlens.analysis.sequential import boundaries, wave_looks
from cifarlens.analysis.superclass_stats import superclass_cluster_test


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    rng = np.random.default_rng(0)
    n, c = 10_000, 100
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, (n, c))
    z[np.arange(n), y] += 3
    f2c = np.repeat(np.arange(20), 5)
    ca, cb = rng.random((3, n)) < 0.6, rng.random((3, n)) < 0.62
    rows = {
        "ECE intervals before/after scaling (one model, 2,000 resamples)":
            lambda: ece_scaling_intervals(z, y, 1.3),
        "superclass cluster test (one model, 10,000 resamples)":
            lambda: superclass_cluster_test(y, z.argmax(1), f2c),
        "variance sources (3 seeds x 10,000 images)": lambda: variance_sources(ca, cb),
        "P(improvement), decide, seed-level ECE test":
            lambda: (prob_improvement([.6, .61, .62], [.62, .6, .64]),
                     decide([.02, -.01, .02], .01),
                     ece_seed_change([.1, .11, .12], [.1, .12, .11], margin=.01)),
        "sequential boundaries, looks 3..10 (once per design)":
            lambda: boundaries(wave_looks(1)),
    }
    for name, fn in rows.items():
        print(f"{name}: {_timed(fn):.2f} s")


if __name__ == "__main__":
    main()
