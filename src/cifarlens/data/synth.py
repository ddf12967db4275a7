"""Small, learnable synthetic datasets in the exact official CIFAR python pickle format.

The whole pipeline (download, load, train, evaluate, explain) can then be tested without the
real data. Each class is one "object": a colour from a well separated palette combined with a
shape and an internal texture, drawn at a random position on a cluttered background that
carries no class information. The object's bounding box is recorded, so explanation methods
can be checked against ground truth, and deliberately flipped test labels are recorded, so
label-error detection can be checked too.

Layout written by :func:`write_synthetic` (``out`` is the data root)::

    out/cifar-100-python/{train,test,meta,cifarlens-synth.json}
    out/cifar-100-python.tar.gz          (same folder, as the official archive has it)

or for CIFAR-10 ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
``cifar-10-python.tar.gz``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens._io import read_bytes, write_bytes
from cifarlens.data.cifar_names import (
    CIFAR10_NAMES,
    CIFAR100_COARSE_NAMES,
    CIFAR100_FINE_NAMES,
    FINE_TO_COARSE,
)
from cifarlens.data.dataset import parse_manifest, read_archive_files
from cifarlens.data.download import install_folder, md5_file, read_members
from cifarlens.data.manifests import (
    IMAGE_SIZE,
    SIDE_FILE,
    SYNTH_VERSION,
    _generated_names,
    _official_spec,
)
from cifarlens.data.pickles import dump_pickle, md5_bytes, to_cifar_rows
from cifarlens.data.registry import DATASETS as OFFICIAL
from cifarlens.data.synth_flips import (
    check_train_noise,
    flip_labels,
    train_noise_of,
    train_noise_record,
)
from cifarlens.errors import CifarlensError

# The official table (folder, archive, class count) plus the generator's default sizes.
_SIZES = {"cifar100": (50, 10), "cifar10": (200, 50)}  # train, test images per class
DATASETS: dict[str, dict[str, Any]] = {
    name: {**{k: OFFICIAL[name][k] for k in ("folder", "archive", "num_classes")},
           "train_per_class": train, "test_per_class": test}
    for name, (train, test) in _SIZES.items()
}

# Saturated, well separated colours. No black: textures darken the colour, and a dark object
# must still stand out from the mid-grey background.
PALETTE = np.array(
    [
        [230, 25, 25],  # red
        [255, 135, 0],  # orange
        [245, 230, 20],  # yellow
        [30, 190, 40],  # green
        [0, 215, 230],  # cyan
        [25, 55, 245],  # blue
        [135, 30, 210],  # purple
        [245, 25, 205],  # magenta
        [250, 250, 250],  # white
        [120, 255, 160],  # mint
    ],
    dtype=np.float32,
)
COLOUR_NAMES = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta",
                "white", "mint"]  # fmt: skip

SHAPES = ["disc", "square", "triangle", "cross", "ring", "diamond"]
TEXTURES = ["solid", "hstripes", "vstripes", "checker", "dots"]
# Ten (shape, texture) patterns. The first ten classes get ten different colours AND ten
# different patterns, so CIFAR-10 synth is easy; CIFAR-100 classes sharing a colour always
# differ in pattern.
PATTERNS: list[tuple[str, str]] = [
    ("disc", "solid"),
    ("square", "solid"),
    ("triangle", "solid"),
    ("cross", "solid"),
    ("ring", "solid"),
    ("diamond", "solid"),
    ("square", "hstripes"),
    ("disc", "vstripes"),
    ("square", "checker"),
    ("diamond", "dots"),
]
DARK = 0.35  # brightness of texture "off" pixels relative to the object colour
MIN_SIZE, MAX_SIZE = 10, 14  # object side in pixels, inclusive


def class_attributes(cls: int, num_classes: int) -> tuple[int, str, str]:
    """(palette index, shape, texture) of class `cls`; unique over all classes."""
    if not 0 <= cls < num_classes <= len(PALETTE) * len(PATTERNS):
        raise CifarlensError(f"class {cls} out of range for {num_classes} classes")
    colour = cls % len(PALETTE)
    # A bijection on (cls % 10, cls // 10): classes sharing a colour get different patterns.
    pattern = (cls // len(PALETTE) + colour) % len(PATTERNS)
    shape, texture = PATTERNS[pattern]
    return colour, shape, texture


def class_description(cls: int, num_classes: int) -> str:
    """Human-readable description of a class's object, e.g. 'red disc (solid)'."""
    colour, shape, texture = class_attributes(cls, num_classes)
    return f"{COLOUR_NAMES[colour]} {shape} ({texture})"


@functools.lru_cache(maxsize=1)
def _sprites() -> tuple[np.ndarray, np.ndarray]:
    """Every (pattern, side) object as a MAX_SIZE x MAX_SIZE code sprite, plus its tight box.

    Codes: 0 outside the object, 1 lit pixel, 2 darkened texture pixel. Returns sprites
    (patterns, sizes, MAX_SIZE, MAX_SIZE) int8 and boxes (patterns, sizes, 4) as local
    [x0, y0, x1, y1).
    """
    sizes = range(MIN_SIZE, MAX_SIZE + 1)
    sprites = np.zeros((len(PATTERNS), len(sizes), MAX_SIZE, MAX_SIZE), dtype=np.int8)
    boxes = np.zeros((len(PATTERNS), len(sizes), 4), dtype=np.int64)
    for k, s in enumerate(sizes):
        ly, lx = np.mgrid[0:s, 0:s]
        a = (lx - (s - 1) / 2) / (s / 2)  # -1..1 across the box
        b = (ly - (s - 1) / 2) / (s / 2)
        r2 = a * a + b * b
        shapes = {
            "disc": r2 <= 1.0,
            "square": np.ones((s, s), dtype=bool),
            "triangle": np.abs(a) <= (ly + 0.5) / s,  # apex up
            "cross": (np.abs(a) <= 0.34) | (np.abs(b) <= 0.34),
            "ring": (r2 <= 1.0) & (r2 >= 0.3),
            "diamond": np.abs(a) + np.abs(b) <= 1.0,
        }
        textures = {
            "solid": np.ones((s, s), dtype=bool),
            "hstripes": (ly // 2) % 2 == 0,
            "vstripes": (lx // 2) % 2 == 0,
            "checker": ((lx // 2) + (ly // 2)) % 2 == 0,
            "dots": ~((lx % 3 == 1) & (ly % 3 == 1)),
        }
        for p, (shape, texture) in enumerate(PATTERNS):
            mask, lit = shapes[shape], textures[texture]
            sprites[p, k, :s, :s] = np.where(mask, np.where(lit, 1, 2), 0)
            rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            boxes[p, k] = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    sprites.setflags(write=False)
    boxes.setflags(write=False)
    return sprites, boxes


def render_images(
    labels: np.ndarray, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image per label, vectorized over the batch.

    Returns ``images`` uint8 (N, 32, 32, 3) HWC and ``boxes`` int64 (N, 4) as the tight
    [x0, y0, x1, y1) bounding box of the object's pixels (x = column, y = row).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    size = IMAGE_SIZE
    attrs = [class_attributes(int(c), num_classes) for c in range(num_classes)]
    col_of = np.array([a[0] for a in attrs])
    pattern_of = np.array([PATTERNS.index((a[1], a[2])) for a in attrs])

    # Per-image random parameters, drawn in a fixed order for determinism. Pixel arithmetic
    # is int16 throughout: float images of 10k samples would be several times slower.
    side = rng.integers(MIN_SIZE, MAX_SIZE + 1, n)
    x0 = (rng.random(n) * (size - side + 1)).astype(np.int64)
    y0 = (rng.random(n) * (size - side + 1)).astype(np.int64)
    brightness = rng.uniform(0.8, 1.0, n)
    colour_jitter = rng.normal(0.0, 6.0, (n, 3))
    grey = rng.integers(95, 156, n)
    tint = rng.normal(0.0, 10.0, (n, 3))
    # Low-contrast coloured noise: triangular on [-16, 16], cheap to draw as two uniforms.
    noise = rng.integers(-8, 9, (n, size, size, 3), dtype=np.int16)
    noise += rng.integers(-8, 9, (n, size, size, 3), dtype=np.int16)

    base = np.rint(grey[:, None] + tint).astype(np.int16)
    img = noise
    img += base[:, None, None, :]
    ys = np.arange(size)[None, :, None]
    xs = np.arange(size)[None, None, :]

    # Clutter: 2-4 small blobs or thin lines per image, colours from the same palette as the
    # objects but half-blended into the background, independent of the class.
    n_items = rng.integers(2, 5, n)
    clutter = np.full((n, size, size), -1, dtype=np.int8)  # palette index; later items on top
    for j in range(4):
        is_line = rng.random(n) < 0.5
        horizontal = rng.random(n) < 0.5
        length = rng.integers(4, 9, n)
        blob_w = rng.integers(2, 5, n)
        blob_h = rng.integers(2, 5, n)
        w = np.where(is_line, np.where(horizontal, length, 1), blob_w)
        h = np.where(is_line, np.where(horizontal, 1, length), blob_h)
        cx = (rng.random(n) * (size - w + 1)).astype(np.int64)
        cy = (rng.random(n) * (size - h + 1)).astype(np.int64)
        ccol = rng.integers(0, len(PALETTE), n).astype(np.int8)
        inside = (
            (ys >= cy[:, None, None]) & (ys < (cy + h)[:, None, None])
            & (xs >= cx[:, None, None]) & (xs < (cx + w)[:, None, None])
            & (j < n_items)[:, None, None]
        )  # fmt: skip
        clutter = np.where(inside, ccol[:, None, None], clutter)
    pal16 = PALETTE.astype(np.int16)
    has = clutter >= 0
    img[has] = (img[has] + pal16[clutter[has]]) // 2

    # The object: paste the class's sprite (0 = none, 1 = lit, 2 = darkened) into a padded
    # canvas with one fancy-indexing assignment, then colour it.
    sprites, extents = _sprites()
    pattern = pattern_of[labels]
    sprite = sprites[pattern, side - MIN_SIZE]  # (n, MAX_SIZE, MAX_SIZE)
    canvas = np.zeros((n, size + MAX_SIZE, size + MAX_SIZE), dtype=np.int8)
    r = np.arange(MAX_SIZE)
    canvas[
        np.arange(n)[:, None, None],
        y0[:, None, None] + r[None, :, None],
        x0[:, None, None] + r[None, None, :],
    ] = sprite
    code = canvas[:, :size, :size, None]

    colour = PALETTE[col_of[labels]] * brightness[:, None] + colour_jitter
    colour = np.clip(np.rint(colour), 0, 255).astype(np.int16)
    dark = np.rint(colour * DARK).astype(np.int16)
    img = np.where(code == 1, colour[:, None, None, :], img)
    img = np.where(code == 2, dark[:, None, None, :], img)
    images = np.clip(img, 0, 255, out=img).astype(np.uint8)

    ext = extents[pattern, side - MIN_SIZE]  # tight box of the sprite, local coordinates
    boxes = ext + np.stack([x0, y0, x0, y0], axis=1)
    return images, boxes


def render_class_object(
    cls: int, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """One image (uint8 32x32x3 HWC) of class `cls` and its box [x0, y0, x1, y1)."""
    images, boxes = render_images(np.array([cls]), num_classes, rng)
    return images[0], boxes[0].tolist()


def _tar_gz(folder: str, files: dict[str, bytes]) -> bytes:
    """A deterministic tar.gz holding `folder/` and `files`: fixed mtimes, owners, modes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(folder)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # mtime=0 and no file name in the gzip header, so equal inputs give equal bytes. Level 1:
    # the noisy pixels barely compress anyway, and level 6 is 4x slower.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=1) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@functools.lru_cache(maxsize=4)
def confusable_classes(num_classes: int) -> np.ndarray:
    """Per class, the other class whose object looks most alike: the nearest (L2) prototype,
    each class's sprite at full size in its colour (textures darkened) on a mid-grey ground.
    On CIFAR-100 synth this is a class of the same colour with a similar pattern."""
    sprites, _ = _sprites()
    protos = []
    for c in range(num_classes):
        colour, shape, texture = class_attributes(c, num_classes)
        code = sprites[PATTERNS.index((shape, texture)), -1][..., None]
        rgb = PALETTE[colour]
        protos.append(np.where(code == 1, rgb, np.where(code == 2, rgb * DARK, 128.0)))
    flat = np.stack(protos).reshape(num_classes, -1).astype(np.float64)
    dist = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    partner = dist.argmin(1)
    partner.setflags(write=False)
    return partner


def _split_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return labels[rng.permutation(len(labels))]  # shuffled, as in the official files


def write_synthetic(
    out: Path,
    dataset: str = "cifar100",
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    label_noise: float = 0.0,
    archive: bool = True,
    train_noise: tuple[float, str] = (0.0, "uniform"),
) -> Path:
    """Write a synthetic dataset in the official pickle format under `out`; return its folder.

    Defaults: cifar100 50 train / 10 test images per class, cifar10 200 / 50. With
    `label_noise` p, a fraction p of TEST labels is flipped to another class (image unchanged),
    with `train_noise` (rate, kind) TRAINING labels too (`synth_flips.flip_labels`); the side file
    records which. Same arguments give byte-identical files.
    """
    if dataset not in DATASETS:
        raise CifarlensError(
            f"unknown dataset {dataset!r} for synthetic data; choose one of {', '.join(DATASETS)}"
        )
    spec = DATASETS[dataset]
    train_per_class = spec["train_per_class"] if train_per_class is None else train_per_class
    test_per_class = spec["test_per_class"] if test_per_class is None else test_per_class
    if train_per_class < 1 or test_per_class < 1:
        raise CifarlensError("synthetic data needs at least 1 train and 1 test image per class")
    if not 0.0 <= label_noise <= 1.0:
        raise CifarlensError(f"label noise must be between 0 and 1, got {label_noise}")
    train_label_noise, train_noise_kind = train_noise
    check_train_noise(train_label_noise, train_noise_kind)
    num_classes: int = spec["num_classes"]
    root = _absolute(out)
    _check_ours(root, dataset, archive)  # before the work; checked again just before writing

    # Independent streams per split: the test set does not change with the train size.
    rng_train = np.random.default_rng([seed, 0])
    rng_test = np.random.default_rng([seed, 1])
    rng_noise = np.random.default_rng([seed, 2])
    rng_flips = np.random.default_rng([seed, 3])  # training flips: the test set stays as it was

    train_y = _split_labels(num_classes, train_per_class, rng_train)
    train_x, train_boxes = render_images(train_y, num_classes, rng_train)
    test_y = _split_labels(num_classes, test_per_class, rng_test)
    test_x, test_boxes = render_images(test_y, num_classes, rng_test)

    test_y, flipped = flip_labels(test_y, label_noise, "uniform", num_classes, rng_noise)
    train_y, train_flipped = flip_labels(train_y, train_label_noise, train_noise_kind,
                                         num_classes, rng_flips, confusable_classes(num_classes))

    files = _format_files(dataset, (train_x, train_y), (test_x, test_y))

    info = {
        "generator": "cifarlens.synth",
        "version": SYNTH_VERSION,
        "seed": seed,
        "dataset": dataset,
        "num_classes": num_classes,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "sizes": {"train": len(train_y), "test": len(test_y)},
        "label_noise": label_noise,
        "md5": {
            name: hashlib.md5(data, usedforsecurity=False).hexdigest()
            for name, data in files.items()
        },
        "classes": [class_description(c, num_classes) for c in range(num_classes)],
        "boxes": {"train": train_boxes.tolist(), "test": test_boxes.tolist()},
        "flipped_labels": {"train": train_flipped, "test": flipped},
    }
    info.update(train_noise_record(train_label_noise, train_noise_kind))

    replace = _check_ours(root, dataset, archive)
    manifest = (json.dumps(info, indent=2) + "\n").encode()
    if archive:
        write_bytes(root / spec["archive"], _tar_gz(spec["folder"], {**files, SIDE_FILE: manifest}))
    # Written whole into a temp folder and renamed into place: a kill never leaves a half dataset
    # under the final name (a rerun then finds no folder, or an old complete one, and rewrites).
    return install_folder(root, spec["folder"], {**files, SIDE_FILE: manifest}, replace=replace)


def _format_files(dataset: str, train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray]) -> dict[str, bytes]:
    """The official format's files (name -> pickled bytes) for images and labels."""
    (train_x, train_y), (test_x, test_y) = train, test

    def filenames(labels: np.ndarray) -> list[bytes]:
        return [f"synth_c{int(c):03d}_{i:06d}.png".encode() for i, c in enumerate(labels)]

    files: dict[str, bytes] = {}
    if dataset == "cifar100":
        coarse = np.array(FINE_TO_COARSE)
        for name, x, y, label in (
            ("train", train_x, train_y, b"training batch 1 of 1"),
            ("test", test_x, test_y, b"testing batch 1 of 1"),
        ):
            files[name] = dump_pickle(
                {
                    b"filenames": filenames(y),
                    b"batch_label": label,
                    b"fine_labels": y.tolist(),
                    b"coarse_labels": coarse[y].tolist(),
                    b"data": to_cifar_rows(x),
                }
            )
        files["meta"] = dump_pickle(
            {
                b"fine_label_names": [n.encode() for n in CIFAR100_FINE_NAMES],
                b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_NAMES],
            }
        )
    else:
        per_batch = len(train_y) // 5  # 10 classes * k images always split evenly in 5
        names = filenames(train_y)
        rows = to_cifar_rows(train_x)
        for b in range(5):
            sl = slice(b * per_batch, (b + 1) * per_batch)
            files[f"data_batch_{b + 1}"] = dump_pickle(
                {
                    b"batch_label": f"training batch {b + 1} of 5".encode(),
                    b"labels": train_y[sl].tolist(),
                    b"data": rows[sl],
                    b"filenames": names[sl],
                }
            )
        files["test_batch"] = dump_pickle(
            {
                b"batch_label": b"testing batch 1 of 1",
                b"labels": test_y.tolist(),
                b"data": to_cifar_rows(test_x),
                b"filenames": filenames(test_y),
            }
        )
        files["batches.meta"] = dump_pickle(
            {
                b"label_names": [n.encode() for n in CIFAR10_NAMES],
                b"num_cases_per_batch": per_batch,
                b"num_vis": 3072,
            }
        )
    return files


def _absolute(path: str | Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:
        raise CifarlensError(f"cannot use data folder {path}: {e}") from None


def _check_ours(root: Path, dataset: str, with_archive: bool = True) -> bool:
    """Refuse to write where something cifarlens did not generate would be overwritten.

    Returns whether the dataset folder exists (and is ours, so it may be replaced). Ours means:
    the folder holds only the names `data synth` writes and either a valid manifest (a complete
    generated dataset) or no manifest and no file with an official checksum (a generated dataset
    an older cifarlens was killed while writing); the archive must be exactly a generated
    dataset's archive. Official data, foreign files, links: refused, nothing written.
    """
    spec = _official_spec(dataset)
    folder, archive = root / spec["folder"], root / spec["archive"]
    hint = "choose another --data-dir (or move it away yourself)"
    if root.exists() and not root.is_dir():
        raise CifarlensError(f"cannot write generated data into {root}: not a folder")
    if with_archive and (archive.exists() or archive.is_symlink()):
        if archive.is_symlink() or not archive.is_file():
            raise CifarlensError(f"refusing to overwrite {archive}: not a regular file; {hint}")
        if md5_file(archive) == spec["archive_md5"]:
            raise CifarlensError(f"refusing to overwrite {archive}: it is the official {dataset} "
                                 f"archive; {hint}")
        try:
            _read_archive_manifest(archive, dataset)
        except CifarlensError as e:
            raise CifarlensError(f"refusing to overwrite {archive}: not an archive cifarlens "
                                 f"generated ({e}); {hint}") from None
    if not (folder.exists() or folder.is_symlink()):
        return False
    if folder.is_symlink() or not folder.is_dir():
        raise CifarlensError(f"refusing to overwrite {folder}: not a folder cifarlens made; {hint}")
    names = {p.name for p in folder.iterdir()}
    temp = {n for n in names if n.startswith(".") and n.endswith(".tmp")}  # atomic_write leftovers
    foreign = sorted(names - temp - _generated_names(dataset))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise CifarlensError(f"refusing to overwrite {folder}: it holds files cifarlens does not "
                             f"write ({shown}); {hint}")
    if SIDE_FILE in names:
        try:
            read_synth_info(folder, verify=False)
        except CifarlensError as e:
            raise CifarlensError(f"refusing to overwrite {folder}: {e}; {hint}") from None
        return True
    for name, want in spec["md5"].items():
        p = folder / name
        if p.is_file() and md5_bytes(p.read_bytes()) == want:
            raise CifarlensError(f"refusing to overwrite {folder}: it holds official {dataset} "
                                 f"files ({name}); {hint}")
    return True  # an incomplete generated dataset (no manifest, only our names): rewritten


def _read_archive_manifest(archive: Path, dataset: str) -> dict[str, Any]:
    """The validated manifest of a generated archive (whose member list must be exactly that of
    a generated dataset); the data members are not read."""
    spec = _official_spec(dataset)
    allowed = _generated_names(dataset)
    size = archive.stat().st_size
    raw = read_members(archive, spec["folder"], {SIDE_FILE}, allowed=allowed,
                       max_total=16 * size + (1 << 20))
    if SIDE_FILE not in raw:
        raise CifarlensError(f"{archive} has no {SIDE_FILE}")
    return parse_manifest(raw[SIDE_FILE], f"{archive} ({SIDE_FILE})", dataset, 16 * size)


def ensure_synthetic(out: Path, dataset: str = "cifar100", **kwargs: Any) -> Path:
    """The generated dataset under `out` with these settings: kept when it is complete (valid
    manifest, every file's MD5 matching) and was made with the same arguments, else written
    again (an incomplete or different generated dataset is replaced; anything else is refused
    by `write_synthetic`)."""
    spec = DATASETS.get(dataset)
    if spec is not None:
        folder = _absolute(out) / spec["folder"]
        if (folder / SIDE_FILE).is_file():
            try:
                info = read_synth_info(folder, verify=True)
            except CifarlensError:
                info = None
            want = {
                "version": SYNTH_VERSION,
                "seed": kwargs.get("seed", 0),
                "train_per_class": kwargs.get("train_per_class") or spec["train_per_class"],
                "test_per_class": kwargs.get("test_per_class") or spec["test_per_class"],
                "label_noise": kwargs.get("label_noise", 0.0),
            }
            if info is not None and all(info.get(k) == v for k, v in want.items()) \
                    and train_noise_of(info) == train_noise_of(kwargs):
                return folder
    return write_synthetic(out, dataset, **kwargs)


def read_synth_info(folder: Path, *, verify: bool = True) -> dict[str, Any]:
    """A generated dataset's manifest, validated against its schema; with `verify`, every data
    file's MD5 is checked too. Reads `folder`, or (read-only, in memory) the dataset's archive
    beside it when only the archive is there."""
    folder = Path(folder)
    dataset = next((k for k, v in DATASETS.items() if v["folder"] == folder.name), None)
    if not folder.is_dir() and dataset is not None:
        archive = folder.parent / DATASETS[dataset]["archive"]
        if archive.is_file():
            _, source, info = read_archive_files(archive, dataset)  # verifies every MD5
            if info is None:
                raise CifarlensError(f"{archive} is official data, not a generated dataset")
            return info
    path = folder / SIDE_FILE
    try:
        data_bytes = sum(p.stat().st_size for p in folder.iterdir()
                         if p.name != SIDE_FILE and p.is_file())
    except OSError as e:
        raise CifarlensError(f"cannot read {folder}: {e.strerror or e}") from None
    info = parse_manifest(read_bytes(path, "manifest"), str(path), dataset, data_bytes)
    if verify:
        for name, expected in info["md5"].items():
            p = folder / name
            try:
                got = hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
            except FileNotFoundError:
                raise CifarlensError(f"synthetic dataset {folder} is missing {name}") from None
            if got != expected:
                raise CifarlensError(
                    f"synthetic dataset file {p} is corrupt (MD5 {got}, expected {expected}); "
                    "delete the folder and generate it again"
                )
    return info


# --- the manifest's schema ------------------------------------------------------------------------

