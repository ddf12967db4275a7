"""The datasets cifarlens knows: official CIFAR files and checksums, class names, where data lives."""

from __future__ import annotations

import os
from pathlib import Path

from cifarlens.errors import CifarlensError

# --- batching and augmentation (batched tensor ops on the training device) ----------------------

ENV_DATA_DIR = "CIFARLENS_DATA"
IMAGE_SIZE = 32  # the CIFAR format's side; user data may be imported at another --size
SYNTH_MANIFEST = "cifarlens-synth.json"
USER_MANIFEST = "cifarlens-data.json"  # the user's own data: data/userdata.py

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

USER = "user"


class _UserSpec(dict):
    """The `user` entry of DATASETS: the user's own data in the CIFAR python format, described
    by the manifest `cifarlens data register`/`import` wrote beside its files (data/userdata.py).
    What the official entries fix (classes, files, checksums) is read from that manifest, so
    asking this table for it is a clear error, not a KeyError."""

    def __missing__(self, key: str):
        raise CifarlensError(f"the {key.replace('_', ' ')} of user data is read from its folder's "
                             f"manifest, not known in advance (this command needs --dataset "
                             f"{' or '.join(n for n in DATASETS if n != USER)})")


# `--dataset user --data-dir DIR`: see data/userdata.py for the folder layout and its manifest.
DATASETS[USER] = _UserSpec(folder="cifarlens-user")

# A manifest lists a few small fields and one box (and at most one flipped label) per image:
# anything larger than this per image the data files can hold is not a manifest.
MANIFEST_BYTES_PER_IMAGE = 160
MANIFEST_BASE_BYTES = 64 * 1024


def dataset_spec(name: str) -> dict:
    if name not in DATASETS:
        raise CifarlensError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $CIFARLENS_DATA, else the user's cache folder; always absolute.

    Absolute and resolved, so a run records where its data really was, not a path relative to
    the folder it happened to be started from.
    """
    if data_dir:
        root = Path(data_dir).expanduser()
    elif os.environ.get(ENV_DATA_DIR):
        root = Path(os.environ[ENV_DATA_DIR]).expanduser()
    else:
        try:
            import platformdirs
        except ImportError:  # e.g. a bare GPU image: fall back to the Linux convention
            root = Path("~/.cache/cifarlens/data").expanduser()
        else:
            root = Path(platformdirs.user_cache_dir("cifarlens")) / "data"
    try:
        return root.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable parent
        raise CifarlensError(f"cannot use data folder {root}: {e}") from None


def manifest_size_limit(data_bytes: int) -> int:
    """The most bytes a manifest may have beside data files of `data_bytes` bytes in all."""
    return MANIFEST_BASE_BYTES + MANIFEST_BYTES_PER_IMAGE * (data_bytes // 3072)


def data_files(spec: dict) -> list[str]:
    return [spec["meta"], *spec["train"], *spec["test"]]
