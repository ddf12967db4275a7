"""The synthetic datasets match the official CIFAR pickle format and are learnable."""

from __future__ import annotations

import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cifarlens.data.cifar_names import CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES, FINE_TO_COARSE
from cifarlens.data.manifests import SIDE_FILE, SYNTH_VERSION
from cifarlens.data.pickles import from_cifar_rows, to_cifar_rows
from cifarlens.data.synth import (
    CIFAR10_NAMES,
    DATASETS,
    MAX_SIZE,
    class_attributes,
    read_synth_info,
    render_class_object,
    render_images,
    write_synthetic,
)
from cifarlens.errors import CifarlensError

# The official superclass table, written by name, independent of FINE_TO_COARSE.
SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


@pytest.fixture(scope="module")
def c100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("c100")
    return write_synthetic(out, "cifar100", train_per_class=8, test_per_class=4, seed=3)


@pytest.fixture(scope="module")
def c10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("c10")
    return write_synthetic(out, "cifar10", seed=5, label_noise=0.1)


def check_data(d: dict, n: int) -> None:
    assert isinstance(d[b"batch_label"], bytes)
    data = d[b"data"]
    assert type(data) is np.ndarray and data.dtype == np.uint8 and data.shape == (n, 3072)
    assert data.flags.c_contiguous
    names = d[b"filenames"]
    assert type(names) is list and len(names) == n
    assert all(type(x) is bytes and x.endswith(b".png") for x in names)
    assert len(set(names)) == n


def test_cifar100_format(c100: Path) -> None:
    assert c100.name == "cifar-100-python"
    assert {p.name for p in c100.iterdir()} == {"train", "test", "meta", SIDE_FILE}
    for split, n, label in (
        ("train", 800, b"training batch 1 of 1"),
        ("test", 400, b"testing batch 1 of 1"),
    ):
        d = load(c100 / split)
        assert set(d) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
        check_data(d, n)
        assert d[b"batch_label"] == label
        fine, coarse = d[b"fine_labels"], d[b"coarse_labels"]
        assert type(fine) is list and all(type(x) is int for x in fine + coarse)
        assert sorted(set(fine)) == list(range(100)) and min(coarse) == 0 and max(coarse) == 19
        assert coarse == [FINE_TO_COARSE[f] for f in fine]
        # Balanced classes, shuffled order (not grouped by class).
        assert np.bincount(fine).tolist() == [n // 100] * 100
        assert fine != sorted(fine)
    meta = load(c100 / "meta")
    assert set(meta) == {b"fine_label_names", b"coarse_label_names"}
    assert [x.decode() for x in meta[b"fine_label_names"]] == CIFAR100_FINE_NAMES
    assert [x.decode() for x in meta[b"coarse_label_names"]] == CIFAR100_COARSE_NAMES
    assert all(type(x) is bytes for x in meta[b"fine_label_names"] + meta[b"coarse_label_names"])


def test_official_names_and_superclasses() -> None:
    fine, coarse = CIFAR100_FINE_NAMES, CIFAR100_COARSE_NAMES
    assert len(fine) == len(set(fine)) == 100 and fine == sorted(fine)
    assert len(coarse) == len(set(coarse)) == 20 and coarse == sorted(coarse)
    assert fine[4] == "beaver" and fine[30] == "dolphin" and fine[95] == "whale"
    assert FINE_TO_COARSE[4] == FINE_TO_COARSE[95] == 0
    assert sorted(SUPERCLASSES) == coarse
    assert np.bincount(FINE_TO_COARSE).tolist() == [5] * 20
    for c, members in SUPERCLASSES.items():
        for name in members.split():
            assert FINE_TO_COARSE[fine.index(name)] == coarse.index(c), name
    assert CIFAR10_NAMES[0] == "airplane" and CIFAR10_NAMES[9] == "truck"


def test_cifar10_format(c10: Path) -> None:
    assert c10.name == "cifar-10-batches-py"
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    assert {p.name for p in c10.iterdir()} == {
        *batches,
        "test_batch",
        "batches.meta",
        SIDE_FILE,
    }
    train_labels: list[int] = []
    for i, name in enumerate(batches, 1):
        d = load(c10 / name)
        assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
        check_data(d, 400)  # 200 per class * 10 classes / 5 batches
        assert d[b"batch_label"] == f"training batch {i} of 5".encode()
        assert all(type(x) is int and 0 <= x < 10 for x in d[b"labels"])
        train_labels += d[b"labels"]
    assert np.bincount(train_labels).tolist() == [200] * 10
    d = load(c10 / "test_batch")
    check_data(d, 500)
    assert d[b"batch_label"] == b"testing batch 1 of 1"
    meta = load(c10 / "batches.meta")
    assert meta == {
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_cases_per_batch": 400,
        b"num_vis": 3072,
    }


def test_pickle_protocol_2(c100: Path) -> None:
    # The official files are protocol 2: PROTO opcode 0x80 0x02.
    assert (c100 / "train").read_bytes()[:2] == b"\x80\x02"


@pytest.mark.parametrize("fixture", ["c100", "c10"])
def test_archive_members_match_folder(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    archive = (
        folder.parent / DATASETS["cifar100" if fixture == "c100" else "cifar10"]["archive"]
    )
    head = archive.read_bytes()[:10]
    # gzip header: magic, method, flags (no FNAME), then MTIME = 0 so the bytes never vary.
    assert head[:3] == b"\x1f\x8b\x08" and head[3] == 0 and head[4:8] == b"\0\0\0\0"
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        files = {m.name: m for m in members if m.isfile()}
        dirs = [m.name for m in members if m.isdir()]
        assert dirs == [folder.name]
        assert set(files) == {f"{folder.name}/{p.name}" for p in folder.iterdir()}
        for name, m in files.items():
            assert m.mtime == 0 and m.uid == 0 and m.gid == 0
            assert tar.extractfile(m).read() == (folder.parent / name).read_bytes()
    assert not list(folder.parent.glob(".*"))  # no temp files left behind


def test_side_file_md5_and_verify(c100: Path) -> None:
    info = json.loads((c100 / SIDE_FILE).read_text())
    assert info["version"] == SYNTH_VERSION and info["seed"] == 3
    assert info["dataset"] == "cifar100" and info["sizes"] == {"train": 800, "test": 400}
    assert set(info["md5"]) == {"train", "test", "meta"}
    for name, digest in info["md5"].items():
        assert hashlib.md5((c100 / name).read_bytes()).hexdigest() == digest
    assert read_synth_info(c100)["md5"] == info["md5"]


def test_read_synth_info_detects_corruption(tmp_path: Path) -> None:
    folder = write_synthetic(
        tmp_path, "cifar10", train_per_class=2, test_per_class=1, archive=False
    )
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()
    data = bytearray((folder / "test_batch").read_bytes())
    data[-5] ^= 0xFF
    (folder / "test_batch").write_bytes(bytes(data))
    with pytest.raises(CifarlensError, match="test_batch is corrupt"):
        read_synth_info(folder)


def test_deterministic(tmp_path: Path) -> None:
    kw = dict(train_per_class=3, test_per_class=2, label_noise=0.2)
    a = write_synthetic(tmp_path / "a", "cifar100", seed=7, **kw)
    b = write_synthetic(tmp_path / "b", "cifar100", seed=7, **kw)
    c = write_synthetic(tmp_path / "c", "cifar100", seed=8, **kw)
    for name in ("train", "test", "meta", SIDE_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    archive = "cifar-100-python.tar.gz"
    assert (tmp_path / "a" / archive).read_bytes() == (tmp_path / "b" / archive).read_bytes()
    assert (a / "train").read_bytes() != (c / "train").read_bytes()
    assert (a / "meta").read_bytes() == (c / "meta").read_bytes()


def test_boxes_inside_and_object_salient(c10: Path) -> None:
    info = read_synth_info(c10)
    d = load(c10 / "test_batch")
    images = from_cifar_rows(d[b"data"]).astype(np.float32)
    boxes = np.array(info["boxes"]["test"])
    assert boxes.shape == (len(images), 4)
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 32).all() and (y1 <= 32).all()
    sides = np.minimum(x1 - x0, y1 - y0)
    assert sides.min() >= 8 and np.maximum(x1 - x0, y1 - y0).max() <= MAX_SIZE
    assert len(info["boxes"]["train"]) == 2000
    wins = 0
    for img, (a, b, c, e) in zip(images, boxes, strict=True):
        dev = np.abs(img - np.median(img, axis=(0, 1))).mean(axis=2)
        inside = np.zeros((32, 32), bool)
        inside[b:e, a:c] = True
        wins += dev[inside].mean() > 2 * dev[~inside].mean()
    assert wins / len(images) >= 0.97, wins


def test_box_is_tight_around_object() -> None:
    # Random draws do not depend on the labels, so rendering, from the same seed, a partner
    # class with the same shape and texture but another colour changes exactly the object's
    # pixels: their bounding box must be the recorded one.
    attrs = [class_attributes(c, 100) for c in range(100)]
    partner = [
        next(p for p in range(100) if attrs[p][1:] == a[1:] and attrs[p][0] != a[0]) for a in attrs
    ]
    img_a, box_a = render_images(np.arange(100), 100, np.random.default_rng(11))
    img_b, box_b = render_images(np.array(partner), 100, np.random.default_rng(11))
    assert (box_a == box_b).all()
    changed = (img_a != img_b).any(axis=3)
    for m, (x0, y0, x1, y1) in zip(changed, box_a, strict=True):
        ys, xs = np.nonzero(m)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x0, y0, x1, y1]
    one, box = render_class_object(5, 100, np.random.default_rng(11))
    img, boxes = render_images(np.array([5]), 100, np.random.default_rng(11))
    assert one.shape == (32, 32, 3) and one.dtype == np.uint8
    assert (one == img[0]).all() and box == boxes[0].tolist()


def test_label_noise_recorded(c10: Path) -> None:
    info = read_synth_info(c10)
    flips = info["flipped_labels"]
    assert flips["train"] == []
    assert len(flips["test"]) == 50  # 10% of 500
    labels = load(c10 / "test_batch")[b"labels"]
    idx = [f["index"] for f in flips["test"]]
    assert idx == sorted(set(idx))
    for f in flips["test"]:
        assert f["original"] != f["noisy"] == labels[f["index"]]
    # The image still shows the original class: compare with a clean generation.
    clean = write_synthetic(c10.parent / "clean", "cifar10", seed=5)
    clean_labels = load(clean / "test_batch")[b"labels"]
    assert [clean_labels[i] for i in idx] == [f["original"] for f in flips["test"]]
    assert sum(a != b for a, b in zip(labels, clean_labels, strict=True)) == 50
    assert (load(clean / "test_batch")[b"data"] == load(c10 / "test_batch")[b"data"]).all()


def test_cifar100_label_noise_keeps_coarse_consistent(tmp_path: Path) -> None:
    folder = write_synthetic(
        tmp_path, "cifar100", train_per_class=1, test_per_class=2, label_noise=0.5, archive=False
    )
    d = load(folder / "test")
    assert d[b"coarse_labels"] == [FINE_TO_COARSE[f] for f in d[b"fine_labels"]]
    assert len(read_synth_info(folder)["flipped_labels"]["test"]) == 100


def test_class_attributes_unique() -> None:
    attrs = [class_attributes(c, 100) for c in range(100)]
    assert len(set(attrs)) == 100
    # CIFAR-10 classes differ in colour AND pattern, so each is distinguishable by colour alone.
    first = attrs[:10]
    assert len({a[0] for a in first}) == 10 and len({a[1:] for a in first}) == 10
    with pytest.raises(CifarlensError):
        class_attributes(100, 100)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(CifarlensError, match="unknown dataset"):
        write_synthetic(tmp_path, "mnist")
    with pytest.raises(CifarlensError, match="label noise"):
        write_synthetic(tmp_path, "cifar10", label_noise=1.5)
    with pytest.raises(CifarlensError):
        write_synthetic(tmp_path, "cifar10", train_per_class=0)
    assert not any(tmp_path.iterdir())


def test_rows_roundtrip() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    rows = to_cifar_rows(img)
    # Official layout: 1024 red values (row-major), then green, then blue.
    assert rows[1, 0] == img[1, 0, 0, 0] and rows[1, 1] == img[1, 0, 1, 0]
    assert rows[1, 32] == img[1, 1, 0, 0] and rows[1, 1024] == img[1, 0, 0, 1]
    assert rows[1, 2048 + 33] == img[1, 1, 1, 2]
    assert (from_cifar_rows(rows) == img).all()


def _quadrant_histograms(images: np.ndarray) -> np.ndarray:
    """Colour histograms (4 levels per channel) of each image quadrant: position-tolerant."""
    q = (images // 64).astype(np.int64)
    code = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]  # (N, 32, 32) in 0..63
    feats = []
    for ys in (slice(0, 16), slice(16, 32)):
        for xs in (slice(0, 16), slice(16, 32)):
            c = code[:, ys, xs].reshape(len(code), -1)
            h = np.zeros((len(code), 64))
            np.add.at(h, (np.arange(len(code))[:, None], c), 1.0)
            feats.append(h / c.shape[1])
    return np.sqrt(np.concatenate(feats, axis=1))


def test_learnable_cifar10_with_linear_model(c10: Path) -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    from threadpoolctl import threadpool_limits

    tr = [load(c10 / f"data_batch_{i}") for i in range(1, 6)]
    x_tr = from_cifar_rows(np.concatenate([d[b"data"] for d in tr]))
    y_tr = np.concatenate([d[b"labels"] for d in tr])
    info = read_synth_info(c10)
    te = load(c10 / "test_batch")
    x_te = from_cifar_rows(te[b"data"])
    y_te = np.array(te[b"labels"])
    for f in info["flipped_labels"]["test"]:  # score against what the images show
        y_te[f["index"]] = f["original"]
    # One BLAS thread: on a busy shared machine, oversubscribed threads make this fit 20x slower.
    with threadpool_limits(1):
        clf = linear_model.LogisticRegression(max_iter=300).fit(_quadrant_histograms(x_tr), y_tr)
    acc = (clf.predict(_quadrant_histograms(x_te)) == y_te).mean()
    assert acc > 0.8, acc  # chance is 0.1


def test_learnable_cifar100_object_crops(c100: Path) -> None:
    """All 100 classes are distinguishable from the object alone (nearest class mean)."""
    info = read_synth_info(c100)

    def crops(split: str) -> tuple[np.ndarray, np.ndarray]:
        d = load(c100 / split)
        imgs = from_cifar_rows(d[b"data"]).astype(np.float32)
        out = []
        for img, (x0, y0, x1, y1) in zip(imgs, info["boxes"][split], strict=True):
            # Resample the box to 12x12 so objects of different sizes line up.
            yi = y0 + (np.arange(12) * (y1 - y0)) // 12
            xi = x0 + (np.arange(12) * (x1 - x0)) // 12
            out.append(img[np.ix_(yi, xi)].ravel())
        return np.array(out), np.array(d[b"fine_labels"])

    x_tr, y_tr = crops("train")
    x_te, y_te = crops("test")
    means = np.stack([x_tr[y_tr == c].mean(0) for c in range(100)])
    dist = ((x_te[:, None, :] - means[None]) ** 2).sum(-1)
    acc = (dist.argmin(1) == y_te).mean()
    assert acc > 0.5, acc  # chance is 0.01
