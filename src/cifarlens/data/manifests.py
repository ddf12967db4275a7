"""The manifests beside generated and imported data: validated before anything in them is used."""

from __future__ import annotations

from typing import Any

import numpy as np

from cifarlens.data.registry import DATASETS as OFFICIAL
from cifarlens.data.registry import (
    IMAGE_SIZE,
    SYNTH_MANIFEST,
    data_files,
    dataset_spec,
    manifest_size_limit,
)
from cifarlens.data.synth_flips import check_train_noise
from cifarlens.errors import CifarlensError

# Bump when the rendering changes, so cached synthetic data is recognisably stale.
SYNTH_VERSION = 1


SIDE_FILE = SYNTH_MANIFEST  # the manifest beside generated files (data/dataset.py reads it)


GENERATED = ("cifar100", "cifar10")  # the datasets `cifarlens data synth` can stand in for


def _official_spec(dataset: str) -> dict[str, Any]:

    return dataset_spec(dataset)


def _generated_names(dataset: str) -> set[str]:

    return {*data_files(_official_spec(dataset)), SIDE_FILE}


_MD5_HEX = frozenset("0123456789abcdef")


def parse_manifest(raw: bytes, where: str, name: str | None, data_bytes: int) -> dict:
    """A generated dataset's manifest, validated; or a one-line error naming the file."""

    limit = manifest_size_limit(data_bytes)
    if len(raw) > limit:
        raise CifarlensError(f"bad manifest {where}: {len(raw)} bytes, more than a manifest of "
                             f"these data files can have ({limit})")
    import json

    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise CifarlensError(f"bad manifest {where}: not JSON ({type(e).__name__})") from None
    return validate_manifest(obj, where, dataset=name)



def _is_int(v: Any) -> bool:
    return type(v) is int


def validate_manifest(obj: Any, where: str, dataset: str | None = None) -> dict[str, Any]:
    """Check a manifest (parsed JSON) against the schema `write_synthetic` writes; return it.

    Every field a reader uses is checked here, once, so a reader gets a valid manifest or a
    one-line error naming the file and the field, never a KeyError later (after training).
    """

    def bad(msg: str) -> CifarlensError:
        return CifarlensError(f"bad manifest {where}: {msg}")

    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    need = ["generator", "version", "seed", "dataset", "num_classes", "train_per_class",
            "test_per_class", "sizes", "label_noise", "md5", "classes", "boxes", "flipped_labels"]
    missing = [k for k in need if k not in obj]
    if missing:
        raise bad(f"missing {', '.join(missing)} (a generated dataset's manifest has them all; "
                  "generate the data again)")
    if obj["generator"] != "cifarlens.synth":
        raise bad(f"generator is {str(obj['generator'])[:40]!r}, not 'cifarlens.synth'")
    if not _is_int(obj["version"]) or not 1 <= obj["version"] <= SYNTH_VERSION:
        raise bad(f"version {str(obj['version'])[:20]} (this cifarlens reads 1 to {SYNTH_VERSION})")
    if not _is_int(obj["seed"]) or obj["seed"] < 0:
        raise bad("seed must be an integer >= 0")
    name = obj["dataset"]
    if name not in GENERATED or (dataset is not None and name != dataset):
        raise bad(f"dataset is {str(name)[:40]!r}, expected {dataset or ' or '.join(GENERATED)!r}")
    k = OFFICIAL[name]["num_classes"]
    if obj["num_classes"] != k or not _is_int(obj["num_classes"]):
        raise bad(f"num_classes must be {k} for {name}")
    for key in ("train_per_class", "test_per_class"):
        if not _is_int(obj[key]) or obj[key] < 1:
            raise bad(f"{key} must be a positive integer")
    sizes = obj["sizes"]
    want_sizes = {"train": k * obj["train_per_class"], "test": k * obj["test_per_class"]}
    if sizes != want_sizes or not all(_is_int(v) for v in sizes.values()):
        raise bad(f"sizes must be {want_sizes} (classes x images per class)")
    noise = obj["label_noise"]
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise <= 1:
        raise bad("label_noise must be a number from 0 to 1")
    check_train_noise(obj.get("train_label_noise", 0.0), obj.get("train_noise_kind", "uniform"),
                      f"bad manifest {where}: ")  # optional keys: only data with training flips
    files = _generated_names(name) - {SIDE_FILE}
    md5 = obj["md5"]
    if not isinstance(md5, dict) or set(md5) != files:
        raise bad(f"md5 must list exactly {', '.join(sorted(files))}")
    for f, h in md5.items():
        if not (isinstance(h, str) and len(h) == 32 and set(h) <= _MD5_HEX):
            raise bad(f"md5 of {f} is not 32 lowercase hex digits")
    classes = obj["classes"]
    if not isinstance(classes, list) or len(classes) != k or \
            not all(isinstance(c, str) for c in classes):
        raise bad(f"classes must be {k} strings")
    boxes = obj["boxes"]
    if not isinstance(boxes, dict) or set(boxes) != {"train", "test"}:
        raise bad("boxes must have a train and a test list")
    for split in ("train", "test"):
        _check_boxes(boxes[split], sizes[split], f"boxes.{split}", bad)
    flips = obj["flipped_labels"]
    if not isinstance(flips, dict) or set(flips) != {"train", "test"}:
        raise bad("flipped_labels must have a train and a test list")
    for split in ("train", "test"):
        rows = flips[split]
        if not isinstance(rows, list) or len(rows) > sizes[split]:
            raise bad(f"flipped_labels.{split} must be a list of at most {sizes[split]} entries")
        for i, r in enumerate(rows):
            if not (isinstance(r, dict) and set(r) == {"index", "original", "noisy"}
                    and all(_is_int(v) for v in r.values())
                    and 0 <= r["index"] < sizes[split] and 0 <= r["original"] < k
                    and 0 <= r["noisy"] < k and r["original"] != r["noisy"]):
                raise bad(f"flipped_labels.{split}[{i}] must be {{index, original, noisy}}: an "
                          f"image index below {sizes[split]} and two different classes below {k}")
        idx = [r["index"] for r in rows]
        if idx != sorted(set(idx)):
            raise bad(f"flipped_labels.{split} indices must be increasing and distinct")
    return obj


def _check_boxes(boxes: Any, n: int, what: str, bad) -> None:
    if not isinstance(boxes, list) or len(boxes) != n:
        raise bad(f"{what} must be a list of {n} boxes (one per image)")
    if not all(isinstance(b, list) and len(b) == 4 and all(_is_int(v) for v in b) for b in boxes):
        raise bad(f"{what} entries must be [x0, y0, x1, y1] integer lists")
    if n:
        a = np.asarray(boxes, dtype=np.int64)
        ok = (a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 0] < a[:, 2]) & (a[:, 1] < a[:, 3]) \
            & (a[:, 2] <= IMAGE_SIZE) & (a[:, 3] <= IMAGE_SIZE)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise bad(f"{what}[{i}] = {a[i].tolist()} is not a box inside the "
                      f"{IMAGE_SIZE}x{IMAGE_SIZE} image")
