"""Flipped labels for generated data (`cifarlens data synth --label-noise`,
`--train-label-noise`): which images, and to which class. The manifest records every flip, so
label-issue detection can be scored against them (bench/label_noise.py)."""

from __future__ import annotations

import numpy as np

from cifarlens.errors import CifarlensError

TRAIN_NOISE_KINDS = ("uniform", "confusable")


def flip_labels(labels: np.ndarray, rate: float, kind: str, num_classes: int,
                rng: np.random.Generator, partner: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[dict[str, int]]]:
    """Flip round(rate * N) labels, chosen uniformly: "uniform" to a uniformly drawn other
    class, "confusable" to `partner[label]` (synth.confusable_classes: the class the object is
    easiest to mistake for, the realistic case). Returns the noisy labels and the manifest's
    records."""
    check_train_noise(rate, kind)
    if kind == "confusable" and (partner is None or len(partner) != num_classes):
        raise CifarlensError("confusable flips need each class's partner class")
    n_flip = int(round(rate * len(labels)))
    if not n_flip:
        return labels, []
    idx = np.sort(rng.choice(len(labels), n_flip, replace=False))
    noisy = labels.copy()
    if kind == "uniform":
        shift = rng.integers(1, num_classes, n_flip)  # never back to the same class
        noisy[idx] = (labels[idx] + shift) % num_classes
    else:
        noisy[idx] = np.asarray(partner)[labels[idx]]
    return noisy, [{"index": int(i), "original": int(labels[i]), "noisy": int(noisy[i])}
                   for i in idx]


def check_train_noise(rate: object, kind: object, prefix: str = "") -> None:
    """A flip rate from 0 to 1 and a known kind, else one line (starting with `prefix`)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise CifarlensError(f"{prefix}train label noise must be a number from 0 to 1, got "
                             f"{str(rate)[:20]}")
    if kind not in TRAIN_NOISE_KINDS:
        raise CifarlensError(f"{prefix}unknown label noise kind {str(kind)[:40]!r}; choose from: "
                             f"{', '.join(TRAIN_NOISE_KINDS)}")


def train_noise_record(rate: float, kind: str) -> dict[str, object]:
    """The manifest's keys for training flips; none without flips, so the manifests of data
    without them stay byte for byte as they were."""
    return {"train_label_noise": rate, "train_noise_kind": kind} if rate else {}


def train_noise_of(settings: dict) -> tuple[float, str | None]:
    """(rate, kind) of training flips in a manifest or write_synthetic's keyword arguments
    (`train_noise`); no kind without flips, and a manifest without the keys has none."""
    if "train_noise" in settings:
        rate, kind = settings["train_noise"]
    else:
        rate, kind = settings.get("train_label_noise"), settings.get("train_noise_kind")
    rate = float(rate or 0.0)
    return rate, (kind or "uniform") if rate else None
