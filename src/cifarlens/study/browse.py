"""Every test error of a study, browsable offline inside report.html.

`prepare(study, run_a, run_b)` is a stage: from the two runs' saved predictions and best
checkpoints it writes, into STUDY/browse/,
  errors.json   one row per test image that either model gets wrong (classes, both predictions
                with raw and temperature-scaled confidence, outcome, label-error flag) and each
                model's Grad-CAM of its prediction and of the true class at the layer's own
                resolution (4x4 for the seed's VGG), scaled per model (see below)
  errors.csv    the same rows without maps, for a spreadsheet
  atlas.jpg     the rows' images, 32 to a line, in one JPEG (the report shows tiles of it)
`load(study)` reads them back for the report, which draws the table (sortable and filterable by a
small inline script under the report's content security policy) and the maps on demand.

Grad-CAM strengths of two networks are not comparable (they scale with each network's logits and
activations), so each model's maps are divided by the 99th percentile of that model's
predicted-class maps over these images and clipped to 1: colours compare within a model, not
across the two.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens._io import read_bytes, read_json, write_bytes, write_json, write_text
from cifarlens.analysis.metrics import softmax
from cifarlens.csvfile import csv_text
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.study.browse_neighbours import neighbour_record
from cifarlens.study.browse_neighbours import valid as valid_neighbours
from cifarlens.study.folder import StudyFolder

FOLDER = StudyFolder.BROWSE
TILE = 32  # atlas tile side in px (CIFAR images are 32x32)
ATLAS_COLS = 32
OUTCOMES = {  # key: (short label for the table, what it means)
    "fixed": ("fixed", "baseline wrong, variant right"),
    "still_wrong": ("still wrong", "both wrong, same class"),
    "other_wrong": ("wrong differently", "both wrong, different classes"),
    "newly_wrong": ("newly wrong", "baseline right, variant wrong"),
}


def outcomes(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """Per image: '' (both right) or one of OUTCOMES' keys."""
    wa, wb = pred_a != y, pred_b != y
    out = np.full(len(y), "", dtype=object)
    out[wa & ~wb] = "fixed"
    out[wa & wb & (pred_a == pred_b)] = "still_wrong"
    out[wa & wb & (pred_a != pred_b)] = "other_wrong"
    out[~wa & wb] = "newly_wrong"
    return out


def _temperature(run: Run) -> float:
    t = run.temperature("test")
    return float(t) if isinstance(t, int | float) and math.isfinite(t) and t > 0 else 1.0


def _label_flags(run: Run) -> dict[int, bool]:
    """Dataset index -> label-error suspect, from the run's failures file (if any)."""
    if not run.has(Run.failures_name("test")):
        return {}
    return {int(f["index"]): bool(f.get("label_error_suspect")) for f in
            run.failures("test").get("failures", []) if isinstance(f, dict) and "index" in f}


def _maps(run: Run, images: np.ndarray, pred: np.ndarray, true: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Layer-resolution Grad-CAM of the prediction and of the true class, per-model scaled."""
    import torch  # here, not at the top: the report reads browse/ without torch

    from cifarlens.cam.gradcam import gradcam_pair

    mp, mt = gradcam_pair(run.model("best"), run.normalize(images), torch.from_numpy(pred),
                          torch.from_numpy(true), upsample=False)
    mp, mt = mp.numpy().astype(np.float64), mt.numpy().astype(np.float64)
    scale = float(np.percentile(mp, 99)) if mp.size else 0.0
    scale = scale if scale > 0 else 1.0
    return np.clip(mp / scale, 0, 1), np.clip(mt / scale, 0, 1)


def _atlas(images: np.ndarray) -> bytes:
    """(N, 3, 32, 32) uint8 -> one JPEG of 32x32 tiles, ATLAS_COLS per line."""
    from PIL import Image

    n = max(len(images), 1)
    rows = math.ceil(n / ATLAS_COLS)
    canvas = np.full((rows * TILE, ATLAS_COLS * TILE, 3), 255, dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, ATLAS_COLS)
        canvas[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = img.transpose(1, 2, 0)
    buf = io.BytesIO()
    # no chroma subsampling: 32 px tiles keep their colours (a class cue on generated data).
    # Quality 85, not 90: on the demo's 637 tiles (errors and neighbours) 278 KB instead of
    # 398 KB, mean error 6.1 instead of 5.2 grey levels of 255; the report fits 2.5 MB with
    # the neighbour thumbnails (docs/label-issues.md)
    Image.fromarray(canvas).save(buf, format="JPEG", quality=85, subsampling=0, optimize=True)
    return buf.getvalue()


def prepare(study: str | Path, run_a: Run | str | Path, run_b: Run | str | Path
            ) -> dict[str, Any]:
    """Write STUDY/browse/{errors.json, errors.csv, atlas.jpg} for baseline run_a and variant
    run_b (same test images). Returns the counts per outcome."""
    study, run_a, run_b = Path(study), Run.open(run_a), Run.open(run_b)
    pa = run_a.require_current("predictions", "test")
    pb = run_b.require_current("predictions", "test")
    if not np.array_equal(pa["indices"], pb["indices"]) or not np.array_equal(pa["labels"],
                                                                              pb["labels"]):
        raise CifarlensError("baseline and variant were evaluated on different test images")
    data = run_a.data()
    y = pa["labels"]
    out = outcomes(y, pa["pred"], pb["pred"])
    pos = np.flatnonzero(out != "")
    names = list(data.class_names)
    flags = _label_flags(run_a)
    probs = {}
    for arm, p, run in (("a", pa, run_a), ("b", pb, run_b)):
        raw = softmax(p["logits"])
        scaled = softmax(p["logits"].astype(np.float64) / _temperature(run))
        probs[arm] = (raw, scaled)
    rows_out: list[dict[str, Any]] = []
    for k, i in enumerate(pos):
        row: dict[str, Any] = {"k": k, "index": int(pa["indices"][i]), "true": int(y[i]),
                               "outcome": str(out[i]),
                               "label_suspect": bool(flags.get(int(pa["indices"][i]), False))}
        for arm, p in (("a", pa), ("b", pb)):
            raw, scaled = probs[arm]
            c = int(p["pred"][i])
            row[f"pred_{arm}"] = c
            row[f"conf_{arm}"] = round(float(raw[i, c]), 4)
            row[f"tconf_{arm}"] = round(float(scaled[i, c]), 4)
        rows_out.append(row)
    maps: dict[str, Any] = {}
    neighbours = None
    if len(pos):
        images = data.test_x[pa["indices"][pos]]
        ma_p, ma_t = _maps(run_a, images, pa["pred"][pos], y[pos])
        mb_p, mb_t = _maps(run_b, images, pb["pred"][pos], y[pos])
        maps = {"shape": list(ma_p.shape), "a_pred": _packed(ma_p), "a_true": _packed(ma_t),
                "b_pred": _packed(mb_p), "b_true": _packed(mb_t)}
        # every error's nearest training images; the tracked failures' as tiles after the rows'
        neighbours, nb_images = neighbour_record(run_a, run_b, rows_out, pos, len(pos))
        write_bytes(study / FOLDER / "atlas.jpg", _atlas(np.concatenate([images, nb_images])))
    counts = {k: int((out == k).sum()) for k in OUTCOMES}
    record = {"n_test": int(len(y)), "counts": counts, "class_names": names,
              "tile": TILE, "cols": ATLAS_COLS, "rows": rows_out, "maps": maps,
              "map_scale": "each model's maps / its 99th percentile of predicted-class maps "
                           "over these images, clipped to 1; stored as uint8 (x 255)",
              "atlas": "atlas.jpg" if len(pos) else None, "neighbours": neighbours}
    write_json(study / FOLDER / "errors.json", record)
    write_text(study / FOLDER / "errors.csv", _csv(rows_out, names))
    return {"file": f"{FOLDER}/errors.json", "csv": f"{FOLDER}/errors.csv", "counts": counts,
            "rows": len(rows_out)}


def _packed(m: np.ndarray) -> str:
    """Maps in [0, 1] as one base64 string of uint8 (value * 255, row-major (N, h, w)): a
    fifth of the nested decimal lists they were (188 KB on the 3-seed demo), read by browse.js."""
    q = np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _csv(rows: list[dict[str, Any]], names: list[str]) -> str:
    return csv_text(["index", "true", "baseline_pred", "baseline_conf", "baseline_conf_scaled",
                     "variant_pred", "variant_conf", "variant_conf_scaled", "outcome",
                     "label_error_suspect"],
                    ([r["index"], names[r["true"]], names[r["pred_a"]], r["conf_a"], r["tconf_a"],
                      names[r["pred_b"]], r["conf_b"], r["tconf_b"], r["outcome"],
                      int(r["label_suspect"])] for r in rows))


def load(study: str | Path, rel: Any) -> dict[str, Any] | None:
    """The browse record for the report, checked; None when the study has none or it is not
    usable (the report then says so instead of failing)."""
    study = Path(study)
    if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
        return None
    path = study / rel
    if not path.is_file():
        return None
    try:
        rec = read_json(path)
        names = [str(s) for s in rec["class_names"]]
        rows = [r for r in rec["rows"] if isinstance(r, dict)]
        for r in rows:
            for key in ("true", "pred_a", "pred_b"):
                if not (isinstance(r.get(key), int) and 0 <= r[key] < len(names)):
                    raise ValueError(key)
            if r.get("outcome") not in OUTCOMES:
                raise ValueError("outcome")
        _check_maps(rec.get("maps"), len(rows))
        if not valid_neighbours(rec.get("neighbours"), len(names), len(rows)):
            rec["neighbours"] = None  # the table works without them
        atlas = None
        if rec.get("atlas"):
            data = read_bytes(path.parent / "atlas.jpg", "atlas")
            if not data.startswith(b"\xff\xd8\xff"):
                raise ValueError("atlas is not a JPEG")
            atlas = data
    except (CifarlensError, KeyError, TypeError, ValueError, binascii.Error):
        return None
    return {**rec, "class_names": names, "rows": rows, "atlas_bytes": atlas}


def _check_maps(maps: Any, n_rows: int) -> None:
    """The packed maps hold (rows, h, w) bytes each, as the script reads them; else ValueError."""
    if not maps:
        return
    n, h, w = maps["shape"]
    if n != n_rows or not all(type(x) is int and 0 < x <= 64 for x in (h, w)):
        raise ValueError("maps shape")
    for key in ("a_pred", "a_true", "b_pred", "b_true"):
        if len(base64.b64decode(maps[key], validate=True)) != n * h * w:
            raise ValueError(key)


def table_context(study: str | Path, rel: Any) -> dict[str, Any] | None:
    """What the report's browse section shows, as plain strings and numbers (escaped by the
    template like everything else); None without a usable record."""
    import base64
    import json

    rec = load(study, rel)
    if rec is None:
        return None
    names, cols, tile = rec["class_names"], int(rec.get("cols", ATLAS_COLS)), int(
        rec.get("tile", TILE))
    rows = []
    for r in rec["rows"]:
        k = int(r["k"])
        rows.append({
            "k": k, "index": r["index"], "true": names[r["true"]],
            "pa": names[r["pred_a"]], "pb": names[r["pred_b"]],
            "ca": r["conf_a"], "cb": r["conf_b"], "tca": r["tconf_a"], "tcb": r["tconf_b"],
            "ca_text": f"{100 * r['conf_a']:.1f}%", "cb_text": f"{100 * r['conf_b']:.1f}%",
            "tca_text": f"{100 * r['tconf_a']:.1f}%", "tcb_text": f"{100 * r['tconf_b']:.1f}%",
            "outcome": r["outcome"], "outcome_text": OUTCOMES[r["outcome"]][0],
            "outcome_title": OUTCOMES[r["outcome"]][1],
            "label": "yes" if r.get("label_suspect") else "no",
            "bg": f"-{(k % cols) * tile}px -{(k // cols) * tile}px",
        })
    atlas = rec["atlas_bytes"]
    counts = rec.get("counts", {})
    return {
        "rows": rows,
        "n_test": rec.get("n_test"),
        "counts": [(f"{short} ({long})", counts.get(k, 0))
                   for k, (short, long) in OUTCOMES.items()],
        "atlas_uri": "data:image/jpeg;base64," + base64.b64encode(atlas).decode("ascii")
        if atlas else "",
        # Only what the script needs; HTML-safe because the template writes it with |tojson.
        "data": json.loads(json.dumps({"tile": tile, "cols": cols, "maps": rec.get("maps", {}),
                                       "neighbours": rec.get("neighbours"), "names": names})),
        "map_scale": str(rec.get("map_scale", "")),
        "csv": str(Path(rel).with_suffix(".csv")),
    }
