"""Your own data: register a CIFAR-format folder, import an image folder, read it verified."""

import json
import pickle
import shutil

import numpy as np
import pytest

from cifarlens.cli import main
from cifarlens.data.dataset import read_folder
from cifarlens.data.load import load_dataset
from cifarlens.data.registry import USER_MANIFEST
from cifarlens.data.userdata import import_images, register
from cifarlens.errors import CifarlensError


def dump_pickle(obj, path):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar100_layout(folder, k=4, n_train=6, n_test=3, coarse=None, seed=0, side=32):
    """A small dataset in the CIFAR-100 file layout: class c is images of brightness 40 * c."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.repeat(np.arange(k), n)
        x = (np.clip(40 * y[:, None] + rng.integers(0, 30, (len(y), 3 * side * side)), 0, 255)
             .astype(np.uint8))
        d = {b"fine_labels": y.tolist(), b"data": x, b"batch_label": b"x"}
        if coarse is not None:
            d[b"coarse_labels"] = [coarse[c] for c in y]
        dump_pickle(d, folder / name)
    meta = {b"fine_label_names": [f"class{c}".encode() for c in range(k)]}
    if coarse is not None:
        meta[b"coarse_label_names"] = [f"group{g}".encode() for g in range(max(coarse) + 1)]
    dump_pickle(meta, folder / "meta")
    return folder


def test_register_writes_manifest_once_and_reads_verified(tmp_path):
    folder = make_cifar100_layout(tmp_path / "relab" / "cifar-100-python")
    f, m, what = register(tmp_path / "relab")  # the parent finds the folder
    assert (f, what) == (folder, "registered") and m["name"] == "relab"
    assert m["num_classes"] == 4 and m["sizes"] == {"train": 24, "test": 12}
    assert m["superclasses"] == 0 and m["image_size"] == 32
    before = (folder / USER_MANIFEST).read_bytes()
    assert register(folder)[2] == "unchanged"  # written once: the second call keeps it
    assert (folder / USER_MANIFEST).read_bytes() == before
    d = load_dataset("user", tmp_path / "relab", download=False)
    assert (d.name, d.source, d.num_classes) == ("user", "user", 4)
    assert d.class_names == ["class0", "class1", "class2", "class3"]
    assert d.identity["name"] == "relab" and set(d.identity["md5"]) == {"train", "test", "meta"}
    assert d.fine_to_coarse is None and d.train_x.shape == (24, 3, 32, 32)
    # the official loaders do not take it for CIFAR-100
    with pytest.raises(CifarlensError, match="--dataset user"):
        read_folder(folder, "cifar100")


def test_a_changed_file_is_one_line_naming_it(tmp_path):
    folder = make_cifar100_layout(tmp_path / "d" / "cifar-100-python")
    register(folder, "mine")
    raw = bytearray((folder / "test").read_bytes())
    raw[-50] ^= 1
    (folder / "test").write_bytes(bytes(raw))
    with pytest.raises(CifarlensError) as e:
        load_dataset("user", folder, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(folder / "test") in msg and "changed since it was registered" \
        in msg
    with pytest.raises(CifarlensError, match="changed since.*--force"):
        register(folder)
    assert register(folder, force=True)[2] == "re-registered"
    assert load_dataset("user", folder, download=False).identity["name"] == "mine"


def test_superclasses_only_where_the_data_defines_them(tmp_path):
    folder = make_cifar100_layout(tmp_path / "s" / "cifar-100-python", k=4, coarse=[0, 0, 1, 1])
    m = register(folder)[1]
    assert m["superclasses"] == 2
    d = load_dataset("user", folder, download=False)
    assert d.fine_to_coarse.tolist() == [0, 0, 1, 1] and d.coarse_names == ["group0", "group1"]


def test_cifar10_layout_and_other_image_size(tmp_path):
    folder = tmp_path / "t" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        y = np.arange(6) % 3
        dump_pickle({b"labels": y.tolist(), b"data": rng.integers(0, 255, (6, 3 * 16 * 16), np.uint8)},
                folder / name)
    dump_pickle({b"label_names": [b"a", b"b", b"c"]}, folder / "batches.meta")
    m = register(folder)[1]
    assert m["layout"] == "cifar10" and m["files"]["train"] == ["data_batch_1", "data_batch_2"]
    d = load_dataset("user", folder, download=False)
    assert d.train_x.shape == (12, 3, 16, 16) and d.test_x.shape == (6, 3, 16, 16)


def test_register_refuses_official_generated_and_unfindable_folders(tmp_path, synth10):
    with pytest.raises(CifarlensError, match="generated"):
        register(synth10 / "cifar-10-batches-py")
    odd = make_cifar100_layout(tmp_path / "myfiles")
    with pytest.raises(CifarlensError, match="by its folder's name"):
        register(odd)
    assert not (odd / USER_MANIFEST).exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CifarlensError, match="no CIFAR python files"):
        register(tmp_path / "empty")
    bad = make_cifar100_layout(tmp_path / "b" / "cifar-100-python")
    dump_pickle({b"fine_labels": [0, 9], b"data": np.zeros((2, 3072), np.uint8)}, bad / "test")
    with pytest.raises(CifarlensError, match="labels fine_labels"):
        register(bad)
    assert not (bad / USER_MANIFEST).exists()  # nothing written for data that cannot be read


def test_official_md5s_stay_required_for_cifar100(synth100, tmp_path):
    # a folder that claims to be the official data keeps being checked against official MD5s
    root = tmp_path / "o"
    shutil.copytree(synth100 / "cifar-100-python", root / "cifar-100-python")
    (root / "cifar-100-python" / "cifarlens-synth.json").unlink()
    with pytest.raises(CifarlensError, match="checksum mismatch.*expected MD5 7973b151"):
        load_dataset("cifar100", root, download=False)


# --- import ------------------------------------------------------------------------------------


def make_image_folder(src, classes=("blue", "green", "red"), n_train=6, n_test=3, size=(40, 48)):
    """Images whose colour is their class, PNG and JPEG alternating, not 32x32."""
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
               "grey": (128, 128, 128)}
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            (src / split / c).mkdir(parents=True)
            for i in range(n):
                a = np.clip(rng.normal(colours[c], 25, (*size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(src / split / c / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return src


def test_import_converts_once_with_manifest(tmp_path):
    src = make_image_folder(tmp_path / "flowers")
    folder = import_images(src, tmp_path / "d", progress=False)
    assert folder == tmp_path / "d" / "cifarlens-user"
    m = json.loads((folder / USER_MANIFEST).read_text())
    assert m["name"] == "flowers" and m["class_names"] == ["blue", "green", "red"]
    d = load_dataset("user", tmp_path / "d", download=False)
    assert d.train_x.shape == (18, 3, 32, 32) and d.test_x.shape == (9, 3, 32, 32)
    assert np.bincount(d.train_y).tolist() == [6, 6, 6]
    # colour is the class: the red class's red channel dominates after conversion
    red = d.train_x[d.train_y == 2].mean(axis=(0, 2, 3))
    assert red[0] > 150 and red[1] < 80 and red[2] < 80
    with pytest.raises(CifarlensError, match="already exists"):
        import_images(src, tmp_path / "d", progress=False)
    big = import_images(src, tmp_path / "d64", size=64, progress=False)
    assert load_dataset("user", big, download=False).train_x.shape == (18, 3, 64, 64)


def test_import_bad_image_names_it_and_leaves_nothing(tmp_path):
    src = make_image_folder(tmp_path / "src")
    bad = src / "train" / "green" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(CifarlensError) as e:
        import_images(src, tmp_path / "d", progress=False)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").iterdir()) == []


def test_import_needs_matching_class_sets(tmp_path):
    src = make_image_folder(tmp_path / "src")
    shutil.rmtree(src / "test" / "red")
    with pytest.raises(CifarlensError, match="differ.*train only: red"):
        import_images(src, tmp_path / "d", progress=False)
    (src / "train" / "notes.txt").write_text("x")
    with pytest.raises(CifarlensError, match="notes.txt is not a class folder"):
        import_images(src, tmp_path / "d", progress=False)


def test_cli_register_import_verify_info(tmp_path, capsys):
    src = make_image_folder(tmp_path / "pics")
    assert main(["data", "import", str(src), "--data-dir", str(tmp_path / "d"),
                 "--name", "my pics"]) == 0
    assert "'my pics'" in capsys.readouterr().out
    assert main(["data", "verify", "--dataset", "user", "--data-dir", str(tmp_path / "d")]) == 0
    assert "user data, checksums OK; 18 train / 9 test images, 3 classes" in capsys.readouterr().out
    assert main(["data", "info", "--data-dir", str(tmp_path / "d")]) == 0
    assert "registered as 'my pics'" in capsys.readouterr().out
    assert main(["data", "register", str(tmp_path / "d")]) == 0
    assert "nothing written" in capsys.readouterr().out
    (tmp_path / "d" / "cifarlens-user" / "meta").write_bytes(b"junk")
    assert main(["data", "verify", "--dataset", "user", "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "meta changed since it was registered" in err
    assert main(["data", "import", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "e")]) == 1
    assert main(["complexity", "--dataset", "user"]) == 1
    assert "manifest" in capsys.readouterr().err


def test_report_names_user_data_and_never_cifar():
    from summaries import make_summary

    from cifarlens.report.formats import dataset_title
    from cifarlens.report.sentences import replication_applies
    from cifarlens.study.schema import summary_from_json

    def summary(**kw):
        return summary_from_json({**make_summary(), **kw})

    sm = summary(dataset="user", data_source="user", data_name="pics")
    assert dataset_title(sm) == "your data: pics"
    why = replication_applies(sm)
    assert "the study ran on your data: pics, not CIFAR-100" in why
    assert not any("generated" in w or "the dataset is" in w for w in why)
    assert dataset_title(summary(dataset="cifar100", data_source="official")) == "CIFAR-100"
    assert dataset_title(summary(dataset="cifar100", data_source="generated")) == "CIFAR-100"


def test_a_model_that_cannot_take_the_image_size_is_refused_before_training():
    from cifarlens.data.userdata import check_input_size
    from cifarlens.training.models import build_model

    with pytest.raises(CifarlensError, match="model small does not take the data's 16x16 images"):
        check_input_size(build_model("small", 3), 16, "small")
    model = build_model("resnet18", 3)
    check_input_size(model, 16, "resnet18")  # adaptive pooling: any size
    assert model.training  # left as it was


def test_a_renamed_dataset_folder_is_refused_with_the_fix(tmp_path):
    folder = make_cifar100_layout(tmp_path / "x" / "cifar-100-python")
    register(folder)
    moved = folder.rename(tmp_path / "x" / "renamed")
    with pytest.raises(CifarlensError, match="rename it cifarlens-user"):
        load_dataset("user", moved, download=False)
    with pytest.raises(CifarlensError, match="no registered user data"):
        load_dataset("user", tmp_path / "x", download=False)


def test_train_refuses_a_model_that_cannot_take_the_size_before_writing_the_run(tmp_path):
    # 16x16 images: the built-in `small` VGG's head fits 32x32 only. The refusal must come
    # before config.json/split.npz/norm.json exist, so no half-made run is left to resume.
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    folder = tmp_path / "t" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        dump_pickle({b"labels": (np.arange(12) % 3).tolist(),
                 b"data": rng.integers(0, 255, (12, 3 * 16 * 16), np.uint8)}, folder / name)
    dump_pickle({b"label_names": [b"a", b"b", b"c"]}, folder / "batches.meta")
    register(folder)
    cfg = make_config("smoke", dataset="user", data_dir=str(folder), model="small", epochs=1,
                      device="cpu")
    out = tmp_path / "run"
    with pytest.raises(CifarlensError, match="does not take the data's 16x16 images"):
        train(cfg, out, progress=False)
    assert not out.exists()
    out.mkdir()  # an existing empty folder stays empty
    with pytest.raises(CifarlensError, match="16x16"):
        train(cfg, out, progress=False)
    assert list(out.iterdir()) == []
