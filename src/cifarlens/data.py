"""CIFAR-10/100 from the official python-format files: locate, download, verify, read, split, batch.

Data never runs code: every pickle is MD5-checked first (against the official checksums, or the
manifest of a dataset `cifarlens data synth` generated) and then read with an unpickler that only
allows the few numpy globals the format needs.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import CifarlensError

ENV_DATA_DIR = "CIFARLENS_DATA"
SYNTH_MANIFEST = "cifarlens-synth.json"

DATASETS: dict[str, dict] = {
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive": "cifar-100-python.tar.gz",
        "archive_md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "num_classes": 100,
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "md5": {
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    },
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive": "cifar-10-python.tar.gz",
        "archive_md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "num_classes": 10,
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "md5": {
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    },
}


def dataset_spec(name: str) -> dict:
    if name not in DATASETS:
        raise CifarlensError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $CIFARLENS_DATA, else the user's cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cifarlens")) / "data"


# --- safe reading ------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1"): pure, safe.
    ("_codecs", "encode"),
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the numpy array reconstruction the CIFAR format needs; refuses everything else."""

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _ForbiddenGlobal(f"forbidden global {module}.{name}")


def safe_unpickle(data: bytes, source: str = "data file") -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise CifarlensError(f"refusing to load {source}: {e} (tampered or not a CIFAR file)") from None
    except Exception as e:  # truncated or garbage pickles raise many types
        raise CifarlensError(f"cannot read {source}: corrupt pickle ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CifarlensError(f"cannot read {source}: expected a dict, got {type(obj).__name__}")
    return obj


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _expected_md5s(folder: Path, spec: dict) -> tuple[dict[str, str], str]:
    """Official checksums, or a generated dataset's own manifest (which says it is generated)."""
    manifest = folder / SYNTH_MANIFEST
    if manifest.exists():
        from ._io import read_json

        m = read_json(manifest)
        if not isinstance(m.get("md5"), dict):
            raise CifarlensError(f"corrupt manifest {manifest}: no md5 table")
        return {str(k): str(v) for k, v in m["md5"].items()}, "generated"
    return spec["md5"], "official"


def _read_verified(folder: Path, name: str, md5s: dict[str, str]) -> dict:
    from ._io import read_bytes

    path = folder / name
    data = read_bytes(path)
    want = md5s.get(name)
    got = md5_bytes(data)
    if want is None or got != want:
        raise CifarlensError(f"checksum mismatch for {path}: expected MD5 {want}, got {got}; "
                             "the file is corrupt or was modified (delete it and download again)")
    return safe_unpickle(data, str(path))


def _images(d: dict, source: str) -> np.ndarray:
    x = d.get(b"data")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise CifarlensError(f"bad image array in {source}: need uint8 (N, 3072)")
    return x.reshape(-1, 3, 32, 32)


def _labels(d: dict, key: bytes, n: int, k: int, source: str) -> np.ndarray:
    y = d.get(key)
    try:
        y = np.asarray(y, dtype=np.int64)
    except (TypeError, ValueError):
        raise CifarlensError(f"bad labels {key.decode()} in {source}") from None
    if y.shape != (n,) or (n and (y.min() < 0 or y.max() >= k)):
        raise CifarlensError(f"bad labels {key.decode()} in {source}: need {n} ints in [0, {k})")
    return y


def _names(d: dict, key: bytes, k: int, source: str) -> list[str]:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != k or not all(isinstance(s, bytes | str) for s in v):
        raise CifarlensError(f"bad {key.decode()} in {source}: need {k} names")
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in v]


@dataclass
class CifarData:
    """A whole dataset in memory: uint8 NCHW images and int64 labels."""

    name: str
    source: str  # "official" or "generated"
    folder: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    train_coarse: np.ndarray | None = None
    test_coarse: np.ndarray | None = None
    coarse_names: list[str] | None = None
    fine_to_coarse: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    # What the data is, by content: dataset, source and the MD5 of every file read. A run
    # records it at creation; later stages refuse data whose identity differs.
    identity: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def read_folder(folder: Path, name: str) -> CifarData:
    """Read an extracted official-format folder, verifying every file before unpickling it."""
    spec = dataset_spec(name)
    md5s, source = _expected_md5s(folder, spec)
    k = spec["num_classes"]
    meta = _read_verified(folder, spec["meta"], md5s)
    parts: dict[str, list[dict]] = {
        split: [_read_verified(folder, f, md5s) for f in spec[split]] for split in ("train", "test")
    }
    out: dict = {"identity": {"dataset": name, "source": source, "md5": {
        f: md5s[f] for f in [spec["meta"], *spec["train"], *spec["test"]]}}}
    fine_key = b"fine_labels" if name == "cifar100" else b"labels"
    for split, dicts in parts.items():
        xs, ys, cs = [], [], []
        for f, d in zip(spec[split], dicts, strict=True):
            x = _images(d, str(folder / f))
            xs.append(x)
            ys.append(_labels(d, fine_key, len(x), k, str(folder / f)))
            if name == "cifar100":
                cs.append(_labels(d, b"coarse_labels", len(x), 20, str(folder / f)))
        out[f"{split}_x"] = np.concatenate(xs)
        out[f"{split}_y"] = np.concatenate(ys)
        if cs:
            out[f"{split}_coarse"] = np.concatenate(cs)
    if name == "cifar100":
        class_names = _names(meta, b"fine_label_names", 100, str(folder / spec["meta"]))
        coarse_names = _names(meta, b"coarse_label_names", 20, str(folder / spec["meta"]))
        f2c = np.full(100, -1, dtype=np.int64)
        f2c[out["train_y"]] = out["train_coarse"]
        if (f2c < 0).any():
            raise CifarlensError(f"{folder}: some fine classes have no training images")
        return CifarData(name, source, folder, class_names=class_names, coarse_names=coarse_names,
                         fine_to_coarse=f2c, **out)
    class_names = _names(meta, b"label_names", 10, str(folder / spec["meta"]))
    return CifarData(name, source, folder, class_names=class_names, **out)


def locate(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
           progress: bool = True) -> Path:
    """Find (or extract, or download) the dataset's folder under `data_dir`."""
    spec = dataset_spec(name)
    root = default_data_dir(data_dir)
    if root.name == spec["folder"] and root.is_dir():  # pointed straight at the folder
        return root
    folder = root / spec["folder"]
    if folder.is_dir():
        return folder
    archive = root / spec["archive"]
    from .download import fetch, md5_file, safe_extract

    if archive.exists():
        manifest_ok = md5_file(archive) == spec["archive_md5"] or _is_generated_archive(archive)
        if not manifest_ok:
            raise CifarlensError(f"checksum mismatch for {archive}: expected MD5 {spec['archive_md5']};"
                                 " delete it and download again")
    elif download:
        fetch(spec["url"], archive, spec["archive_md5"], progress=progress)
    else:
        raise CifarlensError(f"{name} not found in {root}: put {spec['archive']} or the extracted "
                             f"{spec['folder']}/ folder there, or allow downloading")
    safe_extract(archive, root)
    if not folder.is_dir():
        raise CifarlensError(f"{archive} did not contain {spec['folder']}/")
    return folder


def _is_generated_archive(archive: Path) -> bool:
    """A generated archive carries its own manifest; its files are still MD5-checked on read."""
    import tarfile

    try:
        with tarfile.open(archive) as t:
            return any(n.endswith("/" + SYNTH_MANIFEST) for n in t.getnames())
    except (tarfile.TarError, OSError, EOFError):
        return False


def load_dataset(name: str = "cifar100", data_dir: str | os.PathLike | None = None, *,
                 download: bool = True, progress: bool = True) -> CifarData:
    folder = locate(name, data_dir, download=download, progress=progress)
    return read_folder(folder, name)


# --- split and normalization -------------------------------------------------------------------


def stratified_split(labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded shuffle; round(val_fraction * n_c) of each class go to val. Sorted indices."""
    if not 0.0 < val_fraction < 1.0:
        raise CifarlensError(f"val fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        nv = int(round(val_fraction * len(idx)))
        val.append(idx[:nv])
        train.append(idx[nv:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_subset(labels: np.ndarray, indices: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded, class-balanced subset of `indices` of size n (proportional per class)."""
    if n >= len(indices):
        return indices
    if n <= 0:
        raise CifarlensError(f"--train-limit must be positive, got {n}")
    frac = n / len(indices)
    keep, _ = stratified_split(labels[indices], val_fraction=1 - frac, seed=seed + 7919)
    return np.sort(indices[keep])


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0-1 scale (computed in float64 for exactness)."""
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return ((x_uint8.to(dtype) / 255.0) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


# --- batching and augmentation (batched tensor ops on the training device) ----------------------

# The augmentations live in augment.py; re-exported here, where Batches applies them.
from .augment import AUGMENTS, MIXING, random_crop, random_flip  # noqa: E402, F401


class Batches:
    """Epochs of seeded, shuffled, augmented, normalized batches from a uint8 tensor on `device`.

    The permutation and augmentation draws come from a CPU generator seeded by (seed, epoch), so
    an epoch is the same whether the run was resumed or not. The last incomplete batch is dropped
    (a different random remainder each epoch) so every step sees the same batch size.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, mean, std, *,
                 device: torch.device, augment: str = "none", seed: int = 0,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 num_classes: int | None = None, cutout_size: int = 8, mixup_alpha: float = 1.0,
                 cutmix_alpha: float = 1.0):
        if augment not in AUGMENTS:
            raise CifarlensError(f"unknown augment {augment!r}; choose from: {', '.join(AUGMENTS)}")
        if augment in MIXING and not num_classes:
            raise CifarlensError(f"augment {augment} mixes labels: Batches needs num_classes")
        self.num_classes, self.cutout_size = num_classes, cutout_size
        self.alpha = mixup_alpha if augment == "mixup" else cutmix_alpha
        self.x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size = min(batch_size, len(self.x))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.device, self.augment, self.seed = device, augment, seed
        self.dtype, self.channels_last = dtype, channels_last

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def epoch(self, epoch: int):
        """Batches of (normalized images, labels): int64 labels, or for mixup/cutmix float soft
        targets (batch, num_classes). Draw order: permutation, crop/flip, then the method's own
        draws, so every augment sees the same batches as `none` and the same crops as
        `crop-flip` (existing runs' numbers do not change)."""
        from . import augment as A

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n, steps, bs = len(self.x), len(self), self.batch_size
        perm = torch.randperm(n, generator=g)
        if self.augment != "none":
            dx = torch.randint(0, 9, (n,), generator=g).to(self.device)
            dy = torch.randint(0, 9, (n,), generator=g).to(self.device)
            flip = (torch.rand(n, generator=g) < 0.5).to(self.device)
        h, w = self.x.shape[-2:]
        if self.augment == "cutout":  # one square centre per image
            cy = torch.randint(0, h, (n,), generator=g).to(self.device)
            cx = torch.randint(0, w, (n,), generator=g).to(self.device)
        elif self.augment in A.MIXING:  # per batch: partners, lam (and a box centre for cutmix)
            partners = torch.argsort(torch.rand(steps, bs, generator=g), dim=1).to(self.device)
            lams = A.beta_draws(g, self.alpha, steps)
            centres = torch.stack([torch.randint(0, h, (steps,), generator=g),
                                   torch.randint(0, w, (steps,), generator=g)], 1).tolist()
        perm = perm.to(self.device)
        for i in range(steps):
            sel = perm[i * bs:(i + 1) * bs]
            xb, yb = self.x[sel], self.y[sel]
            if self.augment != "none":
                xb = random_flip(random_crop(xb, dx[sel], dy[sel]), flip[sel])
            xb = normalize(xb, self.mean, self.std, self.dtype)
            if self.augment == "cutout":
                xb = A.cutout(xb, cy[sel], cx[sel], self.cutout_size)
            elif self.augment == "mixup":
                lam = float(lams[i])
                xb, yb = A.mixup(xb, partners[i], lam), A.mixed_targets(
                    yb, partners[i], lam, self.num_classes)
            elif self.augment == "cutmix":
                box = A.cutmix_box(h, w, float(lams[i]), *centres[i])
                xb, lam = A.cutmix(xb, partners[i], box)
                yb = A.mixed_targets(yb, partners[i], lam, self.num_classes)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
