"""The run folder: its one owner (`Run`), checksummed checkpoints, and loading a run back.

RUN/                                  (every name below is spelled once, in `Run`)
  config.json          resolved config, seed, versions, device, git commit, data source
  split.npz            train/val indices into the official training set (and the subset used)
  norm.json            per-channel mean/std of the training split (0-1 scale)
  metrics.jsonl, .csv  one row per epoch;  curves.png  training curves
  checkpoints/ckpt-eNNNN.pt (+ .sha256)   the newest two complete epochs (resume state)
  checkpoints/best.pt (+ .sha256)         weights with the best val accuracy
  done.json            written last by training: the run finished
  predictions_<split>.npz, .csv   evaluate: logits, predicted class, confidence per image
  metrics_<split>.json            evaluate: accuracy, calibration, confusion matrix, ...
  failures_<split>.json           failures: ranked confident errors, label-error suspects
  explanations_<split>[_<tag>].npz  explain: Grad-CAM maps (a tag for ad-hoc options)
  features_<split>[_<layer>].npz    neighbours: float16 features of the split's images
  analysis.json        what each analysis stage produced, with the checkpoint it came from
  figures/*.png        every stage's figures
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
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarlens._io import read_bytes, read_json, save_npz, write_bytes, write_json, write_text
from cifarlens.csvfile import csv_text
from cifarlens.data import load as data_load  # a module: tests replace its load_dataset
from cifarlens.errors import CifarlensError

if TYPE_CHECKING:  # torch is imported where a checkpoint or tensor is handled: the layout
    import torch  # and the JSON readers stay light for the report

CKPT_DIR = "checkpoints"
_EPOCH_RE = re.compile(r"^ckpt-e(\d{4,})\.pt$")


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Checkpoint first, checksum second: a file without a matching checksum is incomplete."""
    import torch

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
    import torch

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
    return Run.open(run).path


def read_config(run: str | os.PathLike) -> dict:
    """config.json, checked: a hand-edited or foreign file is one line naming what is wrong."""
    path = require_run(run) / Run.CONFIG
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
    for where, d in (("data_dir", cfg.get("data_dir")),
                     ("config.data_dir", cfg["config"].get("data_dir"))):
        if d is not None and not isinstance(d, str):  # a list or number: a path it cannot be
            raise bad(f"'{where}' is not a path (got {type(d).__name__})")
    return cfg


def read_norm(run: str | os.PathLike) -> dict[str, list[float]]:
    """norm.json: three finite means and three positive finite stds (0-1 scale)."""
    path = require_run(run) / Run.NORM
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
    path = require_run(run) / Run.HISTORY
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
    from cifarlens.training.models import build_model  # torch: the report reads runs without it

    run = require_run(run_dir)
    config = read_config(run)
    if which == "best":
        state = load_checkpoint(Run(run).checkpoint_path("best"))
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
    path = require_run(run) / Run.SPLIT
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
    import torch

    run = Run.open(run_dir)
    x, y, idx = run.split_arrays(split, run.data(data_dir, download=download))
    xt = run.normalize(x) if normalized else torch.from_numpy(np.ascontiguousarray(x))
    return xt, torch.from_numpy(y.astype(np.int64)), idx


# --- the run folder's one owner ----------------------------------------------------------------


class Run:
    """One run folder: the only place that knows its layout (every file name is below), and a
    per-instance cache of what was read from it. Stages take a Run, read their inputs and write
    their outputs through it, and never run another stage; the CLI and the study decide what
    runs first.

    The files training writes (config, split, norm, history, checkpoints) never change after the
    run is made, so they are cached; predictions, metrics, failures and the analysis record are
    re-read unless this Run wrote them.
    """

    CONFIG = "config.json"
    SPLIT = "split.npz"
    NORM = "norm.json"
    HISTORY = "metrics.jsonl"
    HISTORY_CSV = "metrics.csv"
    CURVES = "curves.png"
    DONE = "done.json"
    ANALYSIS = "analysis.json"
    CHECKPOINTS = CKPT_DIR
    FIGURES = "figures"
    SPLITS = ("train", "val", "test")
    PREDICTION_KEYS = ("indices", "labels", "logits", "pred", "confidence", "checkpoint")

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._cache: dict[Any, Any] = {}

    @classmethod
    def of(cls, run: Run | str | os.PathLike) -> Run:
        """`run` itself when it is a Run (its cache is kept), else a Run of that folder."""
        return run if isinstance(run, Run) else cls(run)

    @classmethod
    def open(cls, run: Run | str | os.PathLike) -> Run:
        """An existing run (one with a config.json), else one clear line."""
        r = cls.of(run)
        if not r.config_path.is_file():
            raise CifarlensError(f"{r.path} is not a cifarlens run (no {cls.CONFIG})")
        return r

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # --- layout: names relative to the folder, and paths --------------------------------------

    @staticmethod
    def predictions_name(split: str, ext: str = "npz") -> str:
        return f"predictions_{split}.{ext}"

    @staticmethod
    def metrics_name(split: str) -> str:
        return f"metrics_{split}.json"

    @staticmethod
    def failures_name(split: str) -> str:
        return f"failures_{split}.json"

    @staticmethod
    def explanations_name(split: str, tag: str = "") -> str:
        return f"explanations_{split}{'_' + tag if tag else ''}.npz"

    @staticmethod
    def robustness_name(split: str, ext: str = "json") -> str:
        """robustness_<split>.json (accuracies), .csv (the same, one row per condition) and
        .npz (per-image correctness, packed)."""
        return f"robustness_{split}.{ext}"

    @staticmethod
    def features_name(split: str, layer: str = "") -> str:
        """The feature cache of a split; `layer` '' is the default (the last Linear's input)."""
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", layer)
        return f"features_{split}{'_' + tag if tag else ''}.npz"

    @classmethod
    def figure_name(cls, stem: str) -> str:
        """A figure's name relative to the run (what analysis.json and summaries record)."""
        return f"{cls.FIGURES}/{stem}.png"

    def file(self, name: str) -> Path:
        """The path of a file named relative to the run (e.g. a recorded figure)."""
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    def checkpoint_path(self, which: str = "best") -> Path:
        return self.checkpoint_dir / f"{which}.pt"

    # --- what training wrote (cached: it never changes once the run exists) -------------------

    def _cached(self, key: Any, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def config(self) -> dict:
        return self._cached("config", lambda: read_config(self.path))

    @property
    def norm(self) -> dict[str, list[float]]:
        return self._cached("norm", lambda: read_norm(self.path))

    def history(self) -> list[dict[str, Any]]:
        return read_history(self.path)

    @property
    def done(self) -> dict | None:
        """done.json (the summary training wrote last), or None while the run is unfinished."""
        path = self.path / self.DONE
        return read_json(path) if path.is_file() else None

    def is_done(self) -> bool:
        return (self.path / self.DONE).is_file()

    def split_indices(self, n_train: int | None = None) -> dict[str, np.ndarray]:
        return self._cached(("split", n_train), lambda: load_split_indices(self.path, n_train))

    def data(self, data_dir: str | os.PathLike | None = None, *, download: bool = False,
             progress: bool = False) -> Any:
        """The run's dataset (read and verified once per Run), refused if its content is not
        what the run was trained on."""
        def read() -> Any:
            cfg = self.config
            data = data_load.load_dataset(cfg["dataset"], data_dir or cfg.get("data_dir"),
                                download=download, progress=progress)
            check_data_identity(self.path, cfg, data)
            return data

        return self._cached(("data", str(data_dir) if data_dir else None), read)

    def split_arrays(self, split: str, data: Any = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 images, labels and dataset indices of the split ("train", "val" or "test")."""
        data = data if data is not None else self.data()
        if split == "test":
            return data.test_x, data.test_y, np.arange(len(data.test_y))
        if split in ("train", "val"):
            idx = self.split_indices(len(data.train_y))["train_used" if split == "train"
                                                        else "val"]
            return data.train_x[idx], data.train_y[idx], idx
        raise CifarlensError(f"unknown split {split!r}; choose from: {', '.join(self.SPLITS)}")

    def normalize(self, images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Images as the model sees them: float32 NCHW scaled with the run's train statistics."""
        import torch  # here, not at the top: the report reads runs without torch

        from cifarlens.data.split import normalize

        x = images_uint8 if isinstance(images_uint8, torch.Tensor) else \
            torch.from_numpy(np.ascontiguousarray(images_uint8))
        return normalize(x, torch.tensor(self.norm["mean"]), torch.tensor(self.norm["std"]))

    def model(self, which: str = "best") -> torch.nn.Module:
        """The trained model (eval mode, CPU), loaded and checked once per Run."""
        return self._cached(("model", which), lambda: load_model(self.path, which)[0])

    def checkpoint_sha256(self, which: str = "best") -> str:
        return checkpoint_sha256(self.path, which)

    # --- what the analysis stages write ---------------------------------------------------------

    def _read_json(self, name: str) -> Any:
        if ("json", name) in self._cache:
            return self._cache[("json", name)]
        return read_json(self.path / name)

    def _write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)
        self._cache[("json", name)] = obj

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def predictions(self, split: str) -> dict[str, np.ndarray]:
        """predictions_<split>.npz, checked for shape: N indices/labels/preds, (N, C) logits."""
        key = ("predictions", split)
        if key in self._cache:
            return self._cache[key]
        path = self.path / self.predictions_name(split)
        if not path.exists():
            raise CifarlensError(f"no predictions for split {split!r} in {self.path}: run "
                                 f"`cifarlens evaluate {self.path} --split {split}` first")
        p = load_npz(path, "predictions file")
        missing = [k for k in self.PREDICTION_KEYS if k not in p]
        if missing:
            raise CifarlensError(f"{path} is not valid: no {', '.join(missing)}")
        n = len(p["labels"])
        shapes_ok = (p["logits"].ndim == 2 and p["logits"].shape[0] == n
                     and p["logits"].shape[1] >= 2 and np.isfinite(p["logits"]).all()
                     and all(p[k].shape == (n,) for k in ("indices", "pred", "confidence")))
        labels_ok = shapes_ok and n and all(
            p[k].dtype.kind in "iu" and p[k].min() >= 0 and p[k].max() < p["logits"].shape[1]
            for k in ("labels", "pred"))
        if not labels_ok:
            raise CifarlensError(f"{path} is not valid: inconsistent shapes or class indices")
        self._cache[key] = p
        return p

    def write_predictions(self, split: str, arrays: dict[str, np.ndarray], csv_text: str) -> None:
        save_npz(self.path / self.predictions_name(split), **arrays)
        write_text(self.path / self.predictions_name(split, "csv"), csv_text)
        self._cache[("predictions", split)] = arrays

    def metrics(self, split: str) -> dict:
        name = self.metrics_name(split)
        if not self.has(name):
            raise CifarlensError(f"no metrics for split {split!r} in {self.path}: run "
                                 f"`cifarlens evaluate {self.path}` first")
        return self._read_json(name)

    def temperature(self, split: str = "test") -> float | None:
        """The temperature evaluate fitted on val (recorded with every split's metrics)."""
        if not self.has(self.metrics_name(split)):
            return None
        t = self._read_json(self.metrics_name(split)).get("temperature_scaling", {}) \
            .get("temperature")
        return None if t is None else float(t)

    def write_metrics(self, split: str, m: dict) -> None:
        self._write_json(self.metrics_name(split), m)

    def failures(self, split: str = "test") -> dict:
        name = self.failures_name(split)
        if not self.has(name):
            raise CifarlensError(f"no failures for split {split!r} in {self.path}: run "
                                 f"`cifarlens failures {self.path} --split {split}` first")
        return self._read_json(name)

    def write_failures(self, split: str, result: dict) -> None:
        self._write_json(self.failures_name(split), result)

    def write_robustness(self, split: str, record: dict, csv_text: str,
                         per_image: dict[str, np.ndarray]) -> None:
        """The per-image npz and the CSV first, the JSON (what `current("robustness")` reads)
        last."""
        save_npz(self.path / self.robustness_name(split, "npz"), **per_image)
        write_text(self.path / self.robustness_name(split, "csv"), csv_text)
        self._write_json(self.robustness_name(split), record)

    def write_explanations(self, split: str, tag: str, arrays: dict[str, np.ndarray]) -> str:
        name = self.explanations_name(split, tag)
        save_npz(self.path / name, **arrays)
        return name

    def write_features(self, split: str, layer: str, arrays: dict[str, np.ndarray]) -> str:
        name = self.features_name(split, layer)
        save_npz(self.path / name, **arrays)
        return name

    def analysis(self) -> dict[str, Any]:
        """analysis.json: what each analysis stage produced (files and the numbers behind them)."""
        return self._read_json(self.ANALYSIS) if self.has(self.ANALYSIS) else {}

    def record(self, key: str, entry: dict[str, Any]) -> None:
        """Record a stage's outputs in analysis.json under `key`."""
        index = dict(read_json(self.path / self.ANALYSIS)) if self.has(self.ANALYSIS) else {}
        index[key] = entry
        self._write_json(self.ANALYSIS, index)

    # --- freshness: one rule for every analysis output -----------------------------------------

    OUTPUTS = ("predictions", "metrics", "failures", "explanation", "features", "neighbours",
               "robustness")
    _MADE_BY = {"predictions": "evaluate", "metrics": "evaluate", "failures": "failures",
                "explanation": "explain", "features": "failures", "neighbours": "failures",
                "robustness": "robustness"}

    def current(self, output: str, split: str = "test", tag: str = "") -> Any:
        """An analysis output of this run if it exists, reads cleanly and was made from the run's
        best.pt as it is now; else None. Every output records the checkpoint's sha256 it was
        made from (predictions in the npz, the JSON files and explanation records in their
        `checkpoint_sha256`), and an output made from any other checkpoint is stale. Metrics
        are current only with current predictions (they are computed from them); an
        explanation (`tag` for an ad-hoc one) also needs its npz. Features (`tag`: the layer
        asked for, '' the default) must be whole float16 rows; neighbours are current failures
        that hold the neighbours asked for with that `tag`."""
        if output not in self.OUTPUTS:
            raise CifarlensError(f"unknown run output {output!r}; one of {', '.join(self.OUTPUTS)}")
        sha = self.checkpoint_sha256()
        if output in ("predictions", "metrics"):
            if not self.has(self.predictions_name(split)):
                return None
            try:
                p = self.predictions(split)
            except CifarlensError:
                return None
            if str(p.get("checkpoint_sha256", "")) != sha:
                return None
            if output == "predictions":
                return p
        if output == "features":
            return self._current_features(split, tag, sha)
        if output == "neighbours":
            f = self.current("failures", split)
            ok = f is not None and (f.get("neighbours") or {}).get("asked_layer") == tag
            return f if ok else None
        if output == "explanation":
            rec = self.analysis().get(f"explain_{split}{'_' + tag if tag else ''}")
            ok = (isinstance(rec, dict) and rec.get("checkpoint_sha256") == sha
                  and self.has(self.explanations_name(split, tag)))
            return rec if ok else None
        name = {"metrics": self.metrics_name, "failures": self.failures_name,
                "robustness": self.robustness_name}[output](split)
        if not self.has(name):
            return None
        obj = self._read_json(name)
        return obj if isinstance(obj, dict) and obj.get("checkpoint_sha256") == sha else None

    def _current_features(self, split: str, layer: str, sha: str) -> dict[str, np.ndarray] | None:
        name = self.features_name(split, layer)
        try:
            f = load_npz(self.path / name, "features file") if self.has(name) else {}
        except CifarlensError:
            return None
        ok = (all(k in f for k in ("indices", "features", "layer", "checkpoint_sha256"))
              and f["features"].ndim == 2 and f["features"].dtype == np.float16
              and f["indices"].shape == (len(f["features"]),)
              and str(f["checkpoint_sha256"]) == sha)
        return f if ok else None

    def require_current(self, output: str, split: str = "test", tag: str = "") -> Any:
        """current(), or one line naming the command that makes it again."""
        obj = self.current(output, split, tag)
        if obj is None:
            raise CifarlensError(
                f"the {output} of split {split!r} in {self.path} are missing or were made from "
                f"another checkpoint than its best.pt now: run `cifarlens "
                f"{self._MADE_BY[output]} {self.path}` first")
        return obj

    # --- what training writes ------------------------------------------------------------------

    def write_start(self, *, split: dict[str, np.ndarray], norm: dict[str, Any],
                    config: dict[str, Any]) -> None:
        """A fresh run's split, normalization statistics and config; config last, since its
        presence is what makes a folder a run."""
        save_npz(self.path / self.SPLIT, **split)
        write_json(self.path / self.NORM, norm)
        write_json(self.config_path, config)
        self._cache.clear()

    def epoch_checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"ckpt-e{epoch:04d}.pt"

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """metrics.jsonl and metrics.csv: one row per epoch (every key of every row: a run
        resumed from an older version's checkpoint has rows without newer columns)."""
        write_text(self.path / self.HISTORY, "".join(json.dumps(r) + "\n" for r in history))
        keys = list(dict.fromkeys(k for r in history for k in r))
        write_text(self.path / self.HISTORY_CSV,
                   csv_text(keys, ([r.get(k) for k in keys] for r in history)))

    def write_done(self, summary: dict[str, Any]) -> None:
        write_json(self.path / self.DONE, summary)
