"""Uncertainty of calibration numbers, and the one rule for concluding a calibration change.

Two different noises, two different tools:

- **ECE of one model, with a bootstrap interval over test images** (``ece_interval``,
  ``ece_scaling_intervals``): how much the binned ECE would move if the test images were drawn
  again, for this one trained model. The binning is metrics.ece's (15 equal-width bins on the
  top-label confidence, (i/n, (i+1)/n], exactly 0 in the first and 1.0 in the last), so the
  point estimates are metrics.ece's numbers. The interval does not correct the binned
  estimator's upward bias on small test sets (it covers sampling, not that bias), and with
  scaling it keeps the temperature fixed (fitted on validation images, not resampled).
- **Whether the variant is better or worse calibrated** (``ece_seed_change``): a question
  about the setting, so it is answered across training seeds, like accuracy: the per-seed ECE
  differences go through power.decide (paired t interval, equivalence within a margin). One
  pair's ECE gap is never a conclusion (the issue's seeds gave +1.41, -3.54 and +3.84 points).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CifarlensError
from .metrics import apply_temperature, confidences_and_correct, softmax
from .power import decide

CHUNK = 100  # bootstrap resamples per vectorised block: CHUNK x n indices in memory

# decide() speaks of accuracy ("helped" = the difference rose); for ECE a rise is worse.
CALIBRATION_WORDS = {"helped": "worse calibrated", "hurt": "better calibrated",
                     "equivalent": "equally calibrated", "not decided": "not decided",
                     "no detectable difference": "no detectable difference",
                     "not tested": "not tested"}
CONCLUSIONS = frozenset({"worse calibrated", "better calibrated", "equally calibrated"})


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    # The binning of metrics.calibration_bins (tests check the ECEs agree to 1e-12).
    edges = np.arange(n_bins + 1) / n_bins
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def _gaps(probs: Any, labels: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin of each image, correct - confidence per image). ECE = (1/N) sum over bins of
    |sum of the gaps in the bin|, since count/N * |acc - conf| = |sum(correct - conf)| / N."""
    if n_bins < 1:
        raise CifarlensError(f"n_bins must be positive, got {n_bins}")
    conf, correct = confidences_and_correct(probs, labels)
    return _bin_index(conf, n_bins), correct.astype(np.float64) - conf


def _ece_of(bins: np.ndarray, gaps: np.ndarray, n_bins: int) -> float:
    return float(np.abs(np.bincount(bins, weights=gaps, minlength=n_bins)).sum() / gaps.size)


def _boot_eces(series: list[tuple[np.ndarray, np.ndarray]], n_bins: int, n_boot: int,
               seed: int) -> np.ndarray:
    """(n_boot, len(series)) ECEs of every series on the same resamples of the images."""
    n = series[0][1].size
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(series)))
    for start in range(0, n_boot, CHUNK):
        b = min(CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        rows = np.repeat(np.arange(b) * n_bins, n)
        for j, (bins, gaps) in enumerate(series):
            sums = np.bincount(rows + bins[idx].ravel(), weights=gaps[idx].ravel(),
                               minlength=b * n_bins).reshape(b, n_bins)
            out[start:start + b, j] = np.abs(sums).sum(axis=1) / n
    return out


def _interval(point: float, boot: np.ndarray, level: float) -> dict[str, Any]:
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"ece": point, "lo": float(lo), "hi": float(hi), "se": float(np.std(boot, ddof=1))}


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 2:
        raise CifarlensError(f"n_boot must be at least 2, got {n_boot}")
    if not 0 < level < 1:
        raise CifarlensError(f"level must be between 0 and 1, got {level}")


COVERS_IMAGES = "test-image sampling, for this one trained model"


def ece_interval(probs: Any, labels: Any, n_bins: int = 15, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """metrics.ece with a percentile bootstrap interval over the test images (seeded)."""
    _check_boot(n_boot, level)
    bins, gaps = _gaps(probs, labels, n_bins)
    boot = _boot_eces([(bins, gaps)], n_bins, n_boot, seed)[:, 0]
    return {**_interval(_ece_of(bins, gaps, n_bins), boot, level), "level": level,
            "n": int(gaps.size), "n_bins": n_bins, "n_boot": n_boot,
            "method": "percentile bootstrap over test images", "covers": COVERS_IMAGES}


def ece_scaling_intervals(logits: Any, labels: Any, temperature: float, n_bins: int = 15,
                          n_boot: int = 2000, level: float = 0.95, seed: int = 0
                          ) -> dict[str, Any]:
    """ECE before and after temperature scaling, each with its bootstrap interval over the
    test images, and the change (after - before) on the same resamples (paired: the same
    images score both), so "scaling lowered ECE" can be stated with its interval."""
    _check_boot(n_boot, level)
    z = np.asarray(logits, dtype=np.float64)
    before = _gaps(softmax(z), labels, n_bins)
    after = _gaps(apply_temperature(z, temperature), labels, n_bins)
    boot = _boot_eces([before, after], n_bins, n_boot, seed)
    eb, ea = _ece_of(*before, n_bins), _ece_of(*after, n_bins)
    change = _interval(ea - eb, boot[:, 1] - boot[:, 0], level)
    return {"before": _interval(eb, boot[:, 0], level), "after": _interval(ea, boot[:, 1], level),
            "change": {"diff": change.pop("ece"), **change}, "temperature": float(temperature),
            "level": level, "n": int(before[1].size), "n_bins": n_bins, "n_boot": n_boot,
            "method": "percentile bootstrap over test images, same resamples before and after",
            "covers": COVERS_IMAGES + "; the temperature is held fixed"}


def ece_seed_change(ece_a: Any, ece_b: Any, alpha: float = 0.05, margin: float | None = None,
                    detect: float = 0.01) -> dict[str, Any]:
    """The seed-level test of a calibration change: per-seed ECE differences (variant minus
    baseline, seed s paired with seed s) through power.decide. ``verdict`` is "better
    calibrated" / "worse calibrated" / "equally calibrated" (within +/-margin) / "not decided"
    / "no detectable difference" / "not tested"; only the first three are conclusions."""
    a = np.asarray(ece_a, dtype=np.float64).ravel()
    b = np.asarray(ece_b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise CifarlensError(f"ece_a ({a.size}) and ece_b ({b.size}) must be equal-length, "
                             "one entry per seed")
    d = decide(b - a, margin, alpha, detect=detect)
    return {**d.as_dict(), "verdict": CALIBRATION_WORDS[d.decision],
            "per_seed": [float(x) for x in b - a],
            "covers": "training seeds and test-image sampling as it shows in each seed's ECE"}


def calibration_claim(seed_change: dict[str, Any] | None) -> str | None:
    """The words a report may use about a calibration change: the seed-level verdict when it
    concludes something, else None (state the numbers only). One pair's ECE gap, or a
    single-seed study, never yields a claim."""
    if not seed_change:
        return None
    v = seed_change.get("verdict")
    return v if v in CONCLUSIONS else None
