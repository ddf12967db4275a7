import pickle
import shutil

import numpy as np
import pytest
import torch

from cifarlens.data.dataset import read_folder
from cifarlens.data.load import load_dataset, locate
from cifarlens.data.pickles import safe_unpickle
from cifarlens.data.registry import DATASETS
from cifarlens.data.split import channel_stats, stratified_split, stratified_subset
from cifarlens.errors import CifarlensError
from cifarlens.training.augment import random_crop, random_flip
from cifarlens.training.batches import Batches


def test_reads_cifar100_format(synth100):
    d = load_dataset("cifar100", synth100, download=False)
    assert d.source == "generated"
    assert d.train_x.shape == (5000, 3, 32, 32) and d.train_x.dtype == np.uint8
    assert d.test_x.shape == (1000, 3, 32, 32)
    assert d.train_y.dtype == np.int64 and d.train_y.min() == 0 and d.train_y.max() == 99
    assert d.class_names[:3] == ["apple", "aquarium_fish", "baby"] and len(d.class_names) == 100
    assert len(d.coarse_names) == 20
    # the fine->coarse table agrees with every image's coarse label
    assert (d.fine_to_coarse[d.test_y] == d.test_coarse).all()
    assert np.bincount(d.fine_to_coarse, minlength=20).tolist() == [5] * 20


def test_reads_cifar10_format(synth10):
    d = load_dataset("cifar10", synth10, download=False)
    assert d.num_classes == 10 and d.class_names[0] == "airplane"
    assert d.train_x.shape == (1000, 3, 32, 32) and d.test_x.shape == (300, 3, 32, 32)
    assert d.fine_to_coarse is None


def test_pixel_layout_matches_official_row_format(synth100):
    # Official rows are 1024 R, then G, then B values, each plane row-major.
    raw = pickle.loads((synth100 / "cifar-100-python" / "test").read_bytes(), encoding="bytes")
    d = load_dataset("cifar100", synth100, download=False)
    row = raw[b"data"][7]
    assert (d.test_x[7, 1, 2, 5] == row[1024 + 2 * 32 + 5])


def _copy(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def test_md5_mismatch_is_refused(synth100, tmp_path):
    root = _copy(synth100, tmp_path)
    f = root / "cifar-100-python" / "train"
    b = bytearray(f.read_bytes())
    b[-100] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(CifarlensError, match="checksum mismatch"):
        load_dataset("cifar100", root, download=False)


def test_generated_files_are_not_taken_for_official(synth100, tmp_path):
    root = _copy(synth100, tmp_path)
    (root / "cifar-100-python" / "cifarlens-synth.json").unlink()
    with pytest.raises(CifarlensError, match="expected MD5 7973b15100ade9c7d40fb424638fde48"):
        load_dataset("cifar100", root, download=False)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_tampered_pickle_runs_nothing(synth100, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker)}, protocol=2)
    # 1) the restricted unpickler refuses on its own
    with pytest.raises(CifarlensError, match="forbidden global"):
        safe_unpickle(payload, "evil")
    assert not marker.exists()
    # 2) even with the manifest rewritten to match the tampered file, nothing runs
    root = _copy(synth100, tmp_path)
    folder = root / "cifar-100-python"
    (folder / "train").write_bytes(payload)
    import hashlib
    import json

    m = json.loads((folder / "cifarlens-synth.json").read_text())
    m["md5"]["train"] = hashlib.md5(payload).hexdigest()
    (folder / "cifarlens-synth.json").write_text(json.dumps(m))
    with pytest.raises(CifarlensError, match="forbidden global posix.system|forbidden global os"):
        read_folder(folder, "cifar100")
    assert not marker.exists()
    # sanity: the payload really would have run under plain pickle
    pickle.loads(payload)
    assert marker.exists()


def test_truncated_pickle_is_a_clear_error():
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    with pytest.raises(CifarlensError, match="corrupt pickle"):
        safe_unpickle(good[: len(good) // 2])


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


def test_archive_only_is_read_in_memory_and_extracted_only_on_request(synth100, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    shutil.copy(synth100 / "cifar-100-python.tar.gz", root)
    before = _snapshot(root)
    d = load_dataset("cifar100", root, download=False)  # reading never writes
    assert d.source == "generated" and d.train_x.shape == (5000, 3, 32, 32)
    assert d.folder == root / "cifar-100-python"
    assert d.extra["archive"] == root / "cifar-100-python.tar.gz"
    assert _snapshot(root) == before
    with pytest.raises(CifarlensError, match="not extracted.*data download"):
        locate("cifar100", root, download=False)
    folder = locate("cifar100", root, download=True)  # preparing may write: new names only
    assert folder == root / "cifar-100-python" and (folder / "train").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python", "cifar-100-python.tar.gz"]
    assert load_dataset("cifar100", root, download=False).source == "generated"


def test_truncated_archive_is_refused(synth100, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    data = (synth100 / "cifar-100-python.tar.gz").read_bytes()
    (root / "cifar-100-python.tar.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(CifarlensError):
        locate("cifar100", root, download=False)
    assert not (root / "cifar-100-python").exists()


def test_offline_message_says_where_to_put_files(tmp_path, monkeypatch):

    spec = dict(DATASETS["cifar100"], url="http://127.0.0.1:9/cifar-100-python.tar.gz")
    monkeypatch.setitem(DATASETS, "cifar100", spec)
    with pytest.raises(CifarlensError) as e:
        locate("cifar100", tmp_path, download=True, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "by hand" in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []


def test_data_dir_from_environment(monkeypatch, synth100):
    monkeypatch.setenv("CIFARLENS_DATA", str(synth100))
    assert load_dataset("cifar100", None, download=False).source == "generated"


def test_stratified_split_is_stratified_deterministic_and_disjoint():
    y = np.repeat(np.arange(10), 50)
    tr, va = stratified_split(y, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 500
    assert np.bincount(y[va]).tolist() == [10] * 10
    tr2, va2 = stratified_split(y, 0.2, seed=3)
    assert (va == va2).all() and (tr == tr2).all()
    _, va3 = stratified_split(y, 0.2, seed=4)
    assert not (va == va3).all()


def test_stratified_subset_keeps_class_balance():
    y = np.repeat(np.arange(10), 40)
    sub = stratified_subset(y, np.arange(400), 100, seed=0)
    assert len(sub) == 100 and np.bincount(y[sub]).tolist() == [10] * 10


def test_channel_stats_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    mean, std = channel_stats(x)
    ref = x.transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    assert np.allclose(mean, ref.mean(1)) and np.allclose(std, ref.std(1))


def test_crop_and_flip_match_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    dx = torch.tensor([0, 8, 4, 1, 7, 3])
    dy = torch.tensor([8, 0, 4, 6, 2, 5])
    flip = torch.tensor([True, False, True, False, True, True])
    out = random_flip(random_crop(x, dx, dy), flip).numpy()
    for i in range(6):
        p = np.pad(x[i].numpy(), ((0, 0), (4, 4), (4, 4)))  # zero padding
        ref = p[:, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        if flip[i]:
            ref = ref[:, :, ::-1]
        assert np.array_equal(out[i], ref)
    # offset (4, 4) without flip is the identity
    assert torch.equal(random_crop(x, torch.full((6,), 4), torch.full((6,), 4)), x)


def test_batches_are_seeded_normalized_and_drop_the_remainder():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 70)
    mean, std = channel_stats(x)
    b = Batches(x, y, 32, mean, std, device=torch.device("cpu"), augment="crop-flip", seed=1)
    assert len(b) == 2
    e0 = [t.clone() for t, _ in b.epoch(0)]
    e0b = [t.clone() for t, _ in b.epoch(0)]
    e1 = [t.clone() for t, _ in b.epoch(1)]
    assert all(torch.equal(a, c) for a, c in zip(e0, e0b, strict=True))
    assert not torch.equal(e0[0], e1[0])
    plain = Batches(x, y, 70, mean, std, device=torch.device("cpu"))
    xb, yb = next(plain.epoch(0))
    assert abs(xb.mean().item()) < 1e-4 and abs(xb.std().item() - 1) < 0.01
    # the labels follow their images through the shuffle
    order = torch.from_numpy(y)
    assert sorted(yb.tolist()) == sorted(order.tolist())


def test_unknown_dataset_and_augment():
    with pytest.raises(CifarlensError, match="choose from"):
        load_dataset("mnist", "/nonexistent")
    with pytest.raises(CifarlensError, match="crop-flip"):
        Batches(np.zeros((2, 3, 32, 32), np.uint8), np.zeros(2), 2, [0] * 3, [1] * 3,
                device=torch.device("cpu"), augment="rotate")
