"""The failure browser's neighbour data: for the baseline's most confident failures, their k
nearest training images (predicted and true class) as tiles of the browser's atlas.

Read from the baseline run's failures_test.json (written by stages/neighbours.py); nothing is
computed here. Only the first ROWS failures get thumbnails: every error's would not fit the
report's 2.5 MB (the 3-seed demo's baseline: 327 failures have 2,087 distinct neighbour
images, 1.29 MB of JPEG before base64; its 12 first add 185 tiles and 158 KB to the report;
docs/label-issues.md). The rest keep their neighbours, as numbers, in failures_test.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cifarlens.runs import Run

ROWS = 12  # the failures a study tracks by default (explain's --failures 12)


def neighbour_record(run_a: Run, row_of_index: dict[int, int], first_tile: int
                     ) -> tuple[dict[str, Any] | None, np.ndarray]:
    """({"k", "layer", "what", "rows": {row: {"pred": [[tile, label, similarity], ...],
    "true": [...]}}}, the training images for tiles first_tile, first_tile + 1, ...), or
    (None, no images) when the baseline has no current neighbours."""
    res = run_a.current_failures("test")
    if not res or "neighbours" not in res:
        return None, np.empty((0, 3, 32, 32), dtype=np.uint8)
    tiles: dict[int, int] = {}  # training dataset index -> tile
    rows: dict[str, Any] = {}
    for f in res["failures"]:
        k = row_of_index.get(int(f.get("index", -1)))
        if k is None or "neighbours" not in f:
            continue
        rows[str(k)] = {side: [[tiles.setdefault(int(e["index"]), first_tile + len(tiles)),
                                int(e["label"]), round(float(e["similarity"]), 3)]
                               for e in f["neighbours"][side]] for side in ("pred", "true")}
        if len(rows) == ROWS:
            break
    order = sorted(tiles, key=tiles.get)
    images = run_a.data().train_x[order] if order else np.empty((0, 3, 32, 32), np.uint8)
    meta = res["neighbours"]
    return ({"k": int(meta.get("k", 0)), "layer": str(meta.get("layer", "")),
             "what": "the baseline's nearest training images (cosine, its features): images it "
                     "represents alike, not a cause", "rows": rows}, images)


def valid(rec: Any, n_classes: int) -> bool:
    """A neighbour record as `neighbour_record` writes it (ints where the script indexes)."""
    if rec is None:
        return True
    if not isinstance(rec, dict) or not isinstance(rec.get("rows"), dict):
        return False
    for row in rec["rows"].values():
        if not isinstance(row, dict) or set(row) != {"pred", "true"}:
            return False
        for e in row["pred"] + row["true"]:
            if not (isinstance(e, list) and len(e) == 3 and type(e[0]) is int and e[0] >= 0
                    and type(e[1]) is int and 0 <= e[1] < n_classes
                    and isinstance(e[2], int | float)):
                return False
    return True
