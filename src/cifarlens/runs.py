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
import os
import re
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


def latest_good_checkpoint(run: Path, warn=None) -> tuple[Path, dict] | None:
    """The newest epoch checkpoint that verifies; corrupt ones are reported and skipped."""
    for p in epoch_checkpoints(run):
        try:
            return p, load_checkpoint(p)
        except CifarlensError as e:
            if warn:
                warn(f"warning: {e}; falling back to an earlier checkpoint")
    return None


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
    return read_json(require_run(run) / "config.json")


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
    model = build_model(config["model"], config["num_classes"])
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


def load_split_indices(run: str | os.PathLike) -> dict[str, np.ndarray]:
    path = require_run(run) / "split.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CifarlensError(f"missing {path}") from None
    except (ValueError, OSError) as e:
        raise CifarlensError(f"corrupt {path}: {e}") from None


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
    if split == "test":
        idx = np.arange(len(data.test_y))
        x, y = data.test_x, data.test_y
    elif split in ("train", "val"):
        idx = load_split_indices(run)["train_used" if split == "train" else "val"]
        x, y = data.train_x[idx], data.train_y[idx]
    else:
        raise CifarlensError(f"unknown split {split!r}; choose from: train, val, test")
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if normalized:
        norm = read_json(run / "norm.json")
        xt = normalize(xt, torch.tensor(norm["mean"]), torch.tensor(norm["std"]))
    return xt, torch.from_numpy(y.astype(np.int64)), idx
