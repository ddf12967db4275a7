"""The failure browser's neighbour data: for every error, the k nearest training images (of the
predicted class and of the true class) in the feature space of a model that gets it wrong, and
for the baseline's most confident failures their thumbnails as tiles of the browser's atlas.

Baseline errors (fixed, still wrong, wrong differently) get the baseline's neighbours, read from
its failures_test.json (stages/neighbours.py); images only the variant gets wrong get the
variant's, from its feature cache. Compact, because the report must stay within 2.5 MB: labels
as little-endian uint16 and similarities as uint8 ((s + 1) * 127.5, a step of 0.008), each one
base64 string of (rows, 2, k) values, side 0 the predicted class and 1 the true class; NONE
where a class has fewer than k training images. Only the first ROWS failures get thumbnails:
every error's would not fit (the 3-seed demo's baseline: 327 failures have 2,087 distinct
neighbour images, 1.29 MB of JPEG; its 12 first add 185 tiles; docs/label-issues.md).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from cifarlens.runs import Run

ROWS = 12  # the failures a study tracks by default (explain's --failures 12)
NONE = 65535
WHAT = ("the nearest training images (cosine similarity of the model's features) in the feature "
        "space of a model that gets the image wrong: images it represents alike, not a cause")


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _variant_rows(run_b: Run, pos: np.ndarray, pred: np.ndarray, true: np.ndarray, k: int,
                  layer: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(len(pos), 2, k) labels and similarities in the variant's feature space."""
    # here, not at the top: both need torch, and the report reads browse/ without it
    from cifarlens.analysis.neighbours import nearest
    from cifarlens.stages.neighbours import split_features

    ftr, itr, _ = split_features(run_b, "train", layer)
    fq, _, _ = split_features(run_b, "test", layer)
    ytr = run_b.data().train_y[itr].astype(np.int64)
    nb = nearest(fq[pos], ftr, ytr, np.stack([pred, true], axis=1), k)
    labels = np.where(nb["class_index"] >= 0, ytr[np.maximum(nb["class_index"], 0)], NONE)
    return labels, np.nan_to_num(nb["class_similarity"], nan=-1.0)


def neighbour_record(run_a: Run, run_b: Run, rows: list[dict[str, Any]], positions: np.ndarray,
                     first_tile: int) -> tuple[dict[str, Any] | None, np.ndarray]:
    """(the record errors.json keeps under "neighbours", the training images for tiles
    first_tile, first_tile + 1, ...), or (None, no images) when the baseline has no current
    neighbours. `rows`: the browser's rows (outcome, pred_b, true), `positions` their places in
    the test predictions."""
    no_images = np.empty((0, 3, 32, 32), dtype=np.uint8)
    res = run_a.current("failures", "test")
    if not res or "neighbours" not in res:
        return None, no_images
    meta = res["neighbours"]
    k, layer = int(meta["k"]), meta.get("asked_layer") or None
    by_index = {int(f["index"]): f for f in res["failures"] if "neighbours" in f}
    labels = np.full((len(rows), 2, k), NONE, dtype="<u2")
    sims = np.full((len(rows), 2, k), -1.0)
    of = ["-"] * len(rows)
    tiles: dict[int, int] = {}  # training dataset index -> tile
    row_tiles: dict[str, list[int]] = {}
    for r, row in enumerate(rows):
        f = by_index.get(int(row["index"]))
        if row["outcome"] == "newly_wrong" or f is None:
            continue
        of[r] = "a"
        for side, key in enumerate(("pred", "true")):
            for j, e in enumerate(f["neighbours"][key][:k]):
                labels[r, side, j], sims[r, side, j] = e["label"], e["similarity"]
        if len(row_tiles) < ROWS and f["rank"] <= ROWS:
            row_tiles[str(r)] = [
                tiles.setdefault(int(e["index"]), first_tile + len(tiles)) if e else -1
                for key in ("pred", "true")
                for e in (f["neighbours"][key][:k] + [None] * k)[:k]]  # -1: no neighbour
    new = [r for r, row in enumerate(rows) if row["outcome"] == "newly_wrong"]
    if new:
        lab, sim = _variant_rows(run_b, positions[new], np.array([rows[r]["pred_b"] for r in new]),
                                 np.array([rows[r]["true"] for r in new]), k, layer)
        labels[new], sims[new] = lab, sim
        for r in new:
            of[r] = "b"
    order = sorted(tiles, key=tiles.get)
    images = run_a.data().train_x[order] if order else no_images
    q = np.round((np.clip(sims, -1, 1) + 1) * 127.5).astype(np.uint8)
    return ({"k": k, "layer": str(meta.get("layer", "")), "what": WHAT, "of": "".join(of),
             "labels": _b64(labels), "sims": _b64(q), "tiles": row_tiles}, images)


def decode(rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, 2, k) labels (NONE: no neighbour) and similarities of a neighbour record."""
    n, k = len(rec["of"]), int(rec["k"])
    labels = np.frombuffer(base64.b64decode(rec["labels"], validate=True), dtype="<u2")
    q = np.frombuffer(base64.b64decode(rec["sims"], validate=True), dtype=np.uint8)
    return labels.reshape(n, 2, k).astype(np.int64), q.reshape(n, 2, k) / 127.5 - 1


def row_neighbours(rec: dict[str, Any], row: int) -> dict[str, list] | None:
    """One row's {"pred": [(tile or None, label, similarity)], "true": [...]}, or None."""
    if rec is None or not 0 <= row < len(rec["of"]) or rec["of"][row] == "-":
        return None
    labels, sims = decode(rec)
    tiles = rec["tiles"].get(str(row))
    k = int(rec["k"])
    out = {}
    for side, key in enumerate(("pred", "true")):
        out[key] = [(tiles[side * k + j] if tiles and tiles[side * k + j] >= 0 else None,
                     int(labels[row, side, j]),
                     round(float(sims[row, side, j]), 2))
                    for j in range(k) if labels[row, side, j] != NONE]
    return out


def valid(rec: Any, n_classes: int, n_rows: int) -> bool:
    """A neighbour record as `neighbour_record` writes it (what the script indexes checked)."""
    if rec is None:
        return True
    try:
        k, of = rec["k"], rec["of"]
        if type(k) is not int or not 1 <= k <= 64 or not isinstance(of, str) \
                or len(of) != n_rows or set(of) - set("ab-"):
            return False
        labels, _ = decode(rec)
        if np.any((labels >= n_classes) & (labels != NONE)):
            return False
        tiles = rec["tiles"]
        return isinstance(tiles, dict) and all(
            isinstance(t, list) and len(t) == 2 * k and all(type(x) is int and x >= -1 for x in t)
            and r.isdigit() and int(r) < n_rows for r, t in tiles.items())
    except (KeyError, TypeError, ValueError, binascii.Error):
        return False
