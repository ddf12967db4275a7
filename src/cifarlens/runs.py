"""The run directory: its layout, checksummed checkpoints, and loading a trained run back.

RUN/
  config.json          resolved config, seed, versions, device, git commit, data source
  split.npz            train/val indices into the official training set (and the subset used)
  norm.json            per-channel mean/std of the training split (0-1 scale)
  metrics.jsonl, .csv  one row per epoch;  curves.png  training curves
  checkpoints/ckpt-eNNNN.pt (+ .sha256)   the newest two complete epochs (resume state)
  checkpoints/best.pt (+ .sha256)         weights with the best val accuracy
  done.json            written last: the run finished
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import read_bytes, read_json, write_bytes, write_text
from .errors import CifarlensError

CKPT_DIR = "checkpoints"
_EPOCH_RE = re.compile(r"^ckpt-e(\d{4,})\.pt$")


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Checkpoint first, checksum second: a file without a matching checksum is incomplete."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()  # no copy of an 80 MiB checkpoint (getvalue() would make one)
    write_bytes(path, data)
    write_text(path.with_name(path.name + ".sha256"), sha256(data) + "\n")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify the checksum, then load with weights_only=True (a checkpoint can never run code)."""
    data = read_bytes(path, "checkpoint")
    side = path.with_name(path.name + ".sha256")
    try:
        want = side.read_text().strip()
    except FileNotFoundError:
        raise CifarlensError(f"checkpoint {path} has no checksum file: incomplete write") from None
    if sha256(data) != want:
        raise CifarlensError(f"checkpoint {path} is corrupt (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if m := re.search(r"GLOBAL (\S+)", text):
            # Not torch's advice (weights_only=False): that is exactly what must never be done.
            raise CifarlensError(f"refusing to load checkpoint {path}: it contains a forbidden "
                                 f"global ({m.group(1)}); it was tampered with or is not a "
                                 "cifarlens checkpoint") from None
        first = "" if text.startswith("Weights only load failed") else (text.splitlines() or [""])[0]
        raise CifarlensError(f"cannot load checkpoint {path}: {type(e).__name__}: {first}") from None


def epoch_checkpoints(run: Path) -> list[Path]:
    """Numbered epoch checkpoints, newest first."""
    d = Path(run) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


RESUME_KEYS = ("model", "optimizer", "scheduler", "history", "epoch", "best_val_acc",
               "best_epoch")


def _check_state(state: Any, path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A loaded checkpoint must be a dict with `keys` (a valid checksum only says it is whole)."""
    if not isinstance(state, dict):
        raise CifarlensError(f"checkpoint {path} is not a cifarlens checkpoint "
                             f"(it holds a {type(state).__name__})")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CifarlensError(f"checkpoint {path} is not a cifarlens "
                             f"{'resume ' if 'optimizer' in keys else ''}checkpoint "
                             f"(no {', '.join(missing)})")
    if not isinstance(state["model"], dict):
        raise CifarlensError(f"checkpoint {path} has no model weights")
    return state


def latest_good_checkpoint(run: Path, warn=None) -> tuple[Path, dict] | None:
    """The newest epoch checkpoint that verifies and holds resume state; others are reported
    and skipped (e.g. a corrupt file, or best.pt copied over the newest epoch checkpoint)."""
    for p in epoch_checkpoints(run):
        try:
            return p, _check_state(load_checkpoint(p), p, RESUME_KEYS)
        except CifarlensError as e:
            if warn:
                warn(f"warning: {e}; falling back to an earlier checkpoint")
    return None


def checkpoint_sha256(run: str | os.PathLike, which: str = "best") -> str:
    """The recorded checksum of a run's checkpoint: the identity of the weights an analysis
    was computed from (written beside the checkpoint, verified whenever it is loaded)."""
    path = Path(run) / CKPT_DIR / f"{which}.pt.sha256"
    text = read_bytes(path, "checkpoint checksum").decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise CifarlensError(f"corrupt checksum file {path}")
    return text


def prune_checkpoints(run: Path, keep: int = 2) -> None:
    """Keep the newest `keep` epoch checkpoints; also drop temp files a killed write left.

    Only the lock holder calls this, after its own writes finished, so no temp file is live.
    """
    for p in epoch_checkpoints(run)[keep:]:
        for q in (p, p.with_name(p.name + ".sha256")):
            q.unlink(missing_ok=True)
    d = Path(run) / CKPT_DIR
    if d.is_dir():
        for t in d.glob(".*.tmp"):
            t.unlink(missing_ok=True)


def require_run(run: str | os.PathLike) -> Path:
    run = Path(run)
    if not (run / "config.json").is_file():
        raise CifarlensError(f"{run} is not a cifarlens run (no config.json)")
    return run


def read_config(run: str | os.PathLike) -> dict:
    """config.json, checked: a hand-edited or foreign file is one line naming what is wrong."""
    path = require_run(run) / "config.json"
    cfg = read_json(path)

    def bad(what: str) -> CifarlensError:
        return CifarlensError(f"{path} is not a valid run config: {what}")

    if not isinstance(cfg, dict):
        raise bad(f"expected a JSON object, got {type(cfg).__name__}")
    for key, kind in (("config", dict), ("model", str), ("dataset", str), ("num_classes", int),
                      ("class_names", list)):
        if not isinstance(cfg.get(key), kind) or isinstance(cfg.get(key), bool):
            raise bad(f"'{key}' missing or not a {kind.__name__}")
    k = cfg["num_classes"]
    if k < 2 or len(cfg["class_names"]) != k or not all(isinstance(c, str)
                                                          for c in cfg["class_names"]):
        raise bad(f"need {k} >= 2 class names as strings")
    if "data_identity" in cfg and not isinstance(cfg["data_identity"], dict):
        raise bad("'data_identity' is not an object")
    return cfg


def read_norm(run: str | os.PathLike) -> dict[str, list[float]]:
    """norm.json: three finite means and three positive finite stds (0-1 scale)."""
    path = require_run(run) / "norm.json"
    norm = read_json(path)
    ok = isinstance(norm, dict)
    for key in ("mean", "std"):
        v = norm.get(key) if ok else None
        ok = ok and isinstance(v, list) and len(v) == 3 and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in v)
    if not ok or min(norm["std"]) <= 0:
        raise CifarlensError(f"{path} is not valid: need 'mean' and 'std', three finite numbers "
                             "each, std > 0")
    return norm


def read_history(run: str | os.PathLike) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of rows (blank lines are ignored; a corrupt line is an error)."""
    path = require_run(run) / "metrics.jsonl"
    text = read_bytes(path, "metrics file").decode("utf-8", "replace")
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise CifarlensError(f"{path} line {i} is not a metrics row")
        rows.append(row)
    if not rows:
        raise CifarlensError(f"{path} has no epochs")
    return rows


def check_data_identity(run: str | os.PathLike, cfg: dict, data: Any) -> None:
    """Refuse data whose content differs from the data the run was trained on (runs made
    before identities were recorded are not checked)."""
    want = cfg.get("data_identity")
    got = getattr(data, "identity", None)
    if not want or not got or want == got:
        return
    diff = sorted(f for f in set(want.get("md5", {})) | set(got.get("md5", {}))
                  if want.get("md5", {}).get(f) != got.get("md5", {}).get(f))
    what = (f"files {', '.join(diff)} differ" if diff else
            f"{want.get('dataset')}/{want.get('source')} vs {got.get('dataset')}/{got.get('source')}")
    raise CifarlensError(f"{run} was trained on other data than {data.folder} ({what}); "
                         "point --data-dir at the run's own dataset")

def load_model(run_dir: str | os.PathLike, which: str = "best") -> tuple[torch.nn.Module, dict]:
    """The trained model of a run (in eval mode, on the CPU) and the run's config.

    `which` is "best" (best val accuracy) or "last" (the newest complete epoch).
    """
    from .models import build_model

    run = require_run(run_dir)
    config = read_config(run)
    if which == "best":
        state = load_checkpoint(run / CKPT_DIR / "best.pt")
    elif which == "last":
        found = latest_good_checkpoint(run)
        if found is None:
            raise CifarlensError(f"{run} has no complete checkpoint")
        state = found[1]
    else:
        raise CifarlensError(f"checkpoint must be 'best' or 'last', got {which!r}")
    _check_state(state, run / CKPT_DIR / f"{which}.pt", ("model",))
    # a user model is imported again and must match the source file the run recorded
    model = build_model(config["model"], config["num_classes"], source=config.get("model_source"))
    if state.get("model_name") != config["model"] or state.get("num_classes") != config["num_classes"]:
        raise CifarlensError(f"checkpoint in {run} does not match its config "
                             f"(model {state.get('model_name')}, {state.get('num_classes')} classes)")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CifarlensError(f"checkpoint in {run} does not fit model {config['model']}: "
                             f"{str(e).splitlines()[0]}") from None
    model.eval()
    return model, config


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz (no pickles); a missing, truncated or foreign file is one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CifarlensError(f"missing {what} {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CifarlensError(f"corrupt {what} {path}: {type(e).__name__}") from None


def load_split_indices(run: str | os.PathLike, n_train: int | None = None
                       ) -> dict[str, np.ndarray]:
    """split.npz: disjoint train/val indices (train_used within train), in [0, n_train)."""
    path = require_run(run) / "split.npz"
    z = load_npz(path, "split file")
    for k in ("train", "val", "train_used"):
        a = z.get(k)
        if a is None or a.ndim != 1 or a.dtype.kind not in "iu" or (len(a) and a.min() < 0):
            raise CifarlensError(f"{path} is not valid: '{k}' must be non-negative indices")
    if np.intersect1d(z["train"], z["val"]).size:
        raise CifarlensError(f"{path} is not valid: validation indices overlap training")
    if not np.isin(z["train_used"], z["train"]).all() or not len(z["train_used"]):
        raise CifarlensError(f"{path} is not valid: 'train_used' must be training indices")
    top = max(int(z[k].max()) for k in ("train", "val") if len(z[k]))
    if n_train is not None and top >= n_train:
        raise CifarlensError(f"{path} is not valid: index {top} is out of range for "
                             f"{n_train} training images")
    return z


def load_split(run_dir: str | os.PathLike, split: str = "test", data_dir: str | None = None, *,
               normalized: bool = True, download: bool = False):
    """A run's split ("train", "val" or "test") as (images, labels, dataset_indices).

    Images are normalized float32 NCHW tensors with the run's own train-split statistics (or
    uint8 when normalized=False). Indices refer to the official train or test set.
    """
    from .data import load_dataset, normalize

    run = require_run(run_dir)
    cfg = read_config(run)
    data = load_dataset(cfg["dataset"], data_dir or cfg.get("data_dir"), download=download)
    check_data_identity(run, cfg, data)
    if split == "test":
        idx = np.arange(len(data.test_y))
        x, y = data.test_x, data.test_y
    elif split in ("train", "val"):
        idx = load_split_indices(run, len(data.train_y))["train_used" if split == "train"
                                                         else "val"]
        x, y = data.train_x[idx], data.train_y[idx]
    else:
        raise CifarlensError(f"unknown split {split!r}; choose from: train, val, test")
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if normalized:
        norm = read_norm(run)
        xt = normalize(xt, torch.tensor(norm["mean"]), torch.tensor(norm["std"]))
    return xt, torch.from_numpy(y.astype(np.int64)), idx
