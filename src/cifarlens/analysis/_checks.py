"""Checks of the arrays every analysis takes (labels, probabilities, logits, confusion
matrices, class names): one place, shared by metrics, stats and their figures, each failure one
clear CifarlensError line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cifarlens.errors import CifarlensError

# float32 softmax rows sum to 1 within ~1e-6; anything far off is almost surely logits.
SUM_TOL = 1e-3
RANGE_TOL = 1e-6


def as_labels(labels: Any, name: str = "labels", num_classes: int | None = None) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 1:
        raise CifarlensError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.dtype.kind == "b":
        a = a.astype(np.int64)
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise CifarlensError(f"{name} must hold integer class indices")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise CifarlensError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and a.min() < 0:
        raise CifarlensError(f"{name} has a negative class index ({a.min()})")
    if num_classes is not None and a.size and a.max() >= num_classes:
        raise CifarlensError(
            f"{name} has class index {a.max()} but there are only {num_classes} classes"
        )
    return a


def as_bool(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise CifarlensError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.dtype.kind != "b":
        if a.dtype.kind not in "iuf" or not np.all((a == 0) | (a == 1)):
            raise CifarlensError(f"{name} must be boolean (or 0/1)")
        a = a.astype(bool)
    return a


def as_matrix(x: Any, name: str) -> np.ndarray:
    """A finite, non-empty float64 (N, C) array with C >= 2 (probs or logits)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise CifarlensError(f"{name} must have shape (N, C) with C >= 2, got {a.shape}")
    if a.shape[0] == 0:
        raise CifarlensError(f"{name} is empty: nothing to evaluate")
    if not np.all(np.isfinite(a)):
        raise CifarlensError(f"{name} contains NaN or infinite values")
    return a


def as_probs(probs: Any) -> np.ndarray:
    p = as_matrix(probs, "probs")
    if p.min() < -RANGE_TOL or p.max() > 1 + RANGE_TOL:
        raise CifarlensError("probs must lie in [0, 1] (were logits passed instead of probs?)")
    worst = float(np.max(np.abs(p.sum(axis=1) - 1.0)))
    if worst > SUM_TOL:
        raise CifarlensError(
            f"probs rows must sum to 1 (worst row is off by {worst:.3g}); apply softmax first"
        )
    return np.clip(p, 0.0, 1.0)


def as_logits(logits: Any) -> np.ndarray:
    return as_matrix(logits, "logits")


def probs_and_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = as_probs(probs)
    y = as_labels(labels, num_classes=p.shape[1])
    if y.shape[0] != p.shape[0]:
        raise CifarlensError(f"{y.shape[0]} labels but {p.shape[0]} rows of probs")
    return p, y


def as_cm(cm: Any, name: str = "confusion matrix") -> np.ndarray:
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise CifarlensError(f"{name} must be square (C, C), got shape {m.shape}")
    if not np.all(np.isfinite(m)) or m.min() < 0 or not np.all(m == np.round(m)):
        raise CifarlensError(f"{name} must hold non-negative integer counts")
    return m.astype(np.int64)


def label_names(class_names: Sequence[str] | None, n: int, what: str = "class_names") -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(s) for s in class_names]
    if len(names) != n:
        raise CifarlensError(f"{what} has {len(names)} entries but there are {n} classes")
    return names
