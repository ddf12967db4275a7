"""Your own data: a dataset in the CIFAR python format that is not the official one (a
relabelled CIFAR-100, a subset, your own classes), registered once and verified on every read;
or a folder of images in class subfolders, converted once into that format.

Layout. A user dataset is one folder, named `cifarlens-user` (what `data import` writes) or,
for files you made yourself, `cifar-100-python` or `cifar-10-batches-py`. The folder's name is
how a run finds it again: a run records the folder's parent as its data folder, and each of
these names can hold only one dataset per parent. Inside, the files of one of the two official
layouts (told apart by their names, not the folder's):

- CIFAR-100 layout: `train`, `test`, `meta` (fine_labels, data; optional coarse_labels, with
  coarse_label_names in meta: then the superclass analysis runs);
- CIFAR-10 layout: `data_batch_1` ... `data_batch_N`, `test_batch`, `batches.meta` (labels).

Any number of classes (the label names in meta say how many), uint8 RGB rows of
`image_size` x `image_size` pixels (32 unless imported at another `--size`), and the manifest
`cifarlens-data.json`, written once by `cifarlens data register` or `data import`: the name,
the layout, the number of classes and images, and the MD5 and size of every file. Every read
checks every file against it; a changed file is one line naming it.

Select it with `--dataset user --data-dir DIR` (DIR: the folder, or its parent). Runs record
dataset "user", data source "user" and the data's identity (its name and every file's MD5), so
the guards tell two user datasets apart; reports call it "your data: NAME".
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens._io import read_bytes, write_json
from cifarlens.data.dataset import CifarData, fine_to_coarse
from cifarlens.data.download import install_folder
from cifarlens.data.image_import import check_class_names, check_inside, load_image, shown
from cifarlens.data.pickles import (
    dump_pickle,
    md5_bytes,
    read_images,
    read_labels,
    read_names,
    safe_unpickle,
)
from cifarlens.data.registry import DATASETS, SYNTH_MANIFEST, USER, USER_MANIFEST, default_data_dir
from cifarlens.errors import CifarlensError

USER_FOLDER = "cifarlens-user"  # what `data import` writes
# A run finds its data again as <recorded parent>/<one of these>: one dataset per name and parent.
USER_FOLDERS = (USER_FOLDER, "cifar-100-python", "cifar-10-batches-py")
FORMAT = "cifarlens-user-data"
VERSION = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_CLASSES = 10_000
MAX_SIDE = 512  # a 512x512 image is 768 KiB; larger is not what a CIFAR-style CNN takes
_BATCH = re.compile(r"^data_batch_([1-9][0-9]{0,3})$")


def _bad(where: str, msg: str) -> CifarlensError:
    return CifarlensError(f"bad manifest {where}: {msg}")


# --- layouts -------------------------------------------------------------------------------------


def detect_layout(folder: Path) -> tuple[str, dict[str, Any]]:
    """("cifar100" | "cifar10", {"meta": name, "train": [names], "test": [names]}) from the files
    present, or a one-line error saying what a layout needs."""
    names = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    if {"train", "test", "meta"} <= names:
        return "cifar100", {"meta": "meta", "train": ["train"], "test": ["test"]}
    batches = sorted((int(m.group(1)), n) for n in names if (m := _BATCH.match(n)))
    if batches and {"test_batch", "batches.meta"} <= names:
        nums = [b for b, _ in batches]
        if nums != list(range(1, len(nums) + 1)):
            raise CifarlensError(f"{folder}: training batches must be data_batch_1 to "
                                 f"data_batch_{len(nums)} without gaps, found "
                                 f"{', '.join(n for _, n in batches[:6])}")
        return "cifar10", {"meta": "batches.meta", "train": [n for _, n in batches],
                           "test": ["test_batch"]}
    raise CifarlensError(
        f"no CIFAR python files in {folder}: need train, test and meta (the CIFAR-100 layout) or "
        "data_batch_1..N, test_batch and batches.meta (the CIFAR-10 layout)")


def _all_files(files: dict[str, Any]) -> list[str]:
    return [files["meta"], *files["train"], *files["test"]]


# --- the manifest --------------------------------------------------------------------------------


def validate_manifest(obj: Any, where: str) -> dict[str, Any]:
    """A user data manifest checked against the schema `register` writes; or one line naming the
    file and the field."""
    if not isinstance(obj, dict):
        raise _bad(where, f"expected a JSON object, got {type(obj).__name__}")
    need = ["format", "version", "name", "layout", "files", "md5", "bytes", "image_size",
            "num_classes", "class_names", "superclasses", "sizes"]
    missing = [k for k in need if k not in obj]
    if missing:
        raise _bad(where, f"missing {', '.join(missing)} (register the folder again)")
    if obj["format"] != FORMAT:
        raise _bad(where, f"format is {str(obj['format'])[:40]!r}, not {FORMAT!r}")
    if type(obj["version"]) is not int or not 1 <= obj["version"] <= VERSION:
        raise _bad(where, f"version {str(obj['version'])[:20]} (this cifarlens reads 1 to "
                          f"{VERSION})")
    name = obj["name"]
    if not isinstance(name, str) or not 1 <= len(name) <= 80 or not name.isprintable():
        raise _bad(where, "name must be 1 to 80 printable characters")
    if obj["layout"] not in ("cifar100", "cifar10"):
        raise _bad(where, "layout must be cifar100 or cifar10")
    files = obj["files"]
    ok = (isinstance(files, dict) and set(files) == {"meta", "train", "test"}
          and isinstance(files["train"], list) and isinstance(files["test"], list))
    if ok:
        want = {"cifar100": ("meta", ["train"], ["test"]),
                "cifar10": ("batches.meta", None, ["test_batch"])}[obj["layout"]]
        ok = files["meta"] == want[0] and files["test"] == want[2] and (
            files["train"] == want[1] if want[1] else
            files["train"] == [f"data_batch_{i}" for i in range(1, len(files["train"]) + 1)]
            and 1 <= len(files["train"]) <= 9999)
    if not ok:
        raise _bad(where, f"files do not name the {obj['layout']} layout's files")
    names = _all_files(files)
    for key, check in (("md5", lambda h: isinstance(h, str) and re.fullmatch(r"[0-9a-f]{32}", h)),
                       ("bytes", lambda b: type(b) is int and b >= 0)):
        v = obj[key]
        if not isinstance(v, dict) or set(v) != set(names) or not all(map(check, v.values())):
            raise _bad(where, f"{key} must give every file ({', '.join(names)}) a valid value")
    side = obj["image_size"]
    if type(side) is not int or not 8 <= side <= MAX_SIDE:
        raise _bad(where, f"image_size must be an integer from 8 to {MAX_SIDE}")
    k = obj["num_classes"]
    if type(k) is not int or not 2 <= k <= MAX_CLASSES:
        raise _bad(where, f"num_classes must be an integer from 2 to {MAX_CLASSES}")
    cn = obj["class_names"]
    if not isinstance(cn, list) or len(cn) != k or not all(isinstance(c, str) for c in cn):
        raise _bad(where, f"class_names must be {k} strings")
    sc = obj["superclasses"]
    if type(sc) is not int or not 0 <= sc <= k or sc == 1 or (sc and obj["layout"] != "cifar100"):
        raise _bad(where, "superclasses must be 0 (none) or the number of coarse classes (>= 2, "
                          "CIFAR-100 layout only)")
    sizes = obj["sizes"]
    if not (isinstance(sizes, dict) and set(sizes) == {"train", "test"}
            and all(type(v) is int and v >= 1 for v in sizes.values())):
        raise _bad(where, "sizes must give positive train and test image counts")
    return obj


def read_manifest(folder: Path) -> dict[str, Any]:

    path = folder / USER_MANIFEST
    raw = read_bytes(path, "manifest")
    if len(raw) > 64 * 1024 + 256 * MAX_CLASSES:  # names of every class and a few fields
        raise _bad(str(path), f"{len(raw)} bytes, more than a manifest can have")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise _bad(str(path), f"not JSON ({type(e).__name__})") from None
    return validate_manifest(obj, str(path))


def manifest_files(folder: Path) -> list[str]:
    """The data files the folder's manifest lists ([] if it has none or it is unreadable: the
    cache then keys on the manifest alone, and the read itself reports the problem)."""
    try:
        return _all_files(read_manifest(folder)["files"])
    except CifarlensError:
        return []


# --- finding and reading -------------------------------------------------------------------------


def locate_user(data_dir: str | os.PathLike | None) -> Path:
    """The user dataset folder for `--data-dir`: the folder itself (it holds the manifest), or
    the one of USER_FOLDERS inside it that holds one."""
    root = default_data_dir(data_dir)
    if (root / USER_MANIFEST).is_file():
        if root.name not in USER_FOLDERS:  # renamed after registering: runs could not find it
            raise CifarlensError(f"{root} holds registered data but a run finds user data by its "
                                 f"folder's name: rename it {USER_FOLDER} (or cifar-100-python / "
                                 "cifar-10-batches-py)")
        return root
    found = [root / n for n in USER_FOLDERS if (root / n / USER_MANIFEST).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise CifarlensError(f"{root} holds several user datasets ({', '.join(f.name for f in found)}): "
                             "point --data-dir at one of them")
    raise CifarlensError(f"no registered user data in {root}: `cifarlens data register DIR` "
                         "registers a folder of CIFAR python files, `cifarlens data import SRC "
                         "--data-dir DIR` converts a folder of images")


def read_user(folder: Path) -> CifarData:
    """Read a registered user dataset, every file checked against its manifest first."""

    folder = Path(folder).absolute()
    m = read_manifest(folder)

    def get(f: str) -> tuple[bytes, str]:
        raw = read_bytes(folder / f, "data file")
        if len(raw) != m["bytes"][f] or md5_bytes(raw) != m["md5"][f]:
            raise CifarlensError(
                f"{folder / f} changed since it was registered ({len(raw)} bytes, MD5 "
                f"{md5_bytes(raw)}; the manifest says {m['bytes'][f]} bytes, MD5 {m['md5'][f]}): "
                f"restore it, or register the folder again (`cifarlens data register {folder} "
                "--force`; runs trained on the old data will then refuse it)")
        return raw, m["md5"][f]

    return decode(folder, m, get)


def decode(folder: Path, m: dict[str, Any], get) -> CifarData:
    """The arrays of a user dataset from its verified files, checked against the format and the
    manifest (`get(file)` -> (bytes, md5))."""
    files, layout, side = m["files"], m["layout"], m["image_size"]
    where = lambda f: str(folder / f)  # noqa: E731
    meta_raw, meta_md5 = get(files["meta"])
    meta = safe_unpickle(meta_raw, where(files["meta"]))
    md5 = {files["meta"]: meta_md5}
    fine_key = b"fine_labels" if layout == "cifar100" else b"labels"
    names_key = b"fine_label_names" if layout == "cifar100" else b"label_names"
    k, kc = m["num_classes"], m["superclasses"]
    class_names = read_names(meta, names_key, k, where(files["meta"]), len(meta_raw))
    if class_names != m["class_names"]:
        raise CifarlensError(f"{where(files['meta'])}: its class names differ from the manifest's")
    coarse_names = (read_names(meta, b"coarse_label_names", kc, where(files["meta"]), len(meta_raw))
                    if kc else None)
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        xs, ys, cs = [], [], []
        for f in files[split]:
            raw, md5[f] = get(f)
            d = safe_unpickle(raw, where(f))
            x = read_images(d, where(f), len(raw), side)
            del raw
            xs.append(x)
            ys.append(read_labels(d, fine_key, len(x), k, where(f)))
            if kc:
                cs.append(read_labels(d, b"coarse_labels", len(x), kc, where(f)))
        out[f"{split}_x"] = np.concatenate(xs)
        out[f"{split}_y"] = np.concatenate(ys)
        if kc:
            out[f"{split}_coarse"] = np.concatenate(cs)
    got = {"train": len(out["train_y"]), "test": len(out["test_y"])}
    if m["sizes"] is not None and got != m["sizes"]:  # None: being registered
        raise CifarlensError(f"{folder}: the files hold {got['train']} train / {got['test']} test "
                             f"images, the manifest says {m['sizes']['train']} / "
                             f"{m['sizes']['test']}")
    identity = {"dataset": USER, "source": USER, "name": m["name"], "md5": md5}
    extra = {"user_manifest": m}
    f2c = fine_to_coarse(out, class_names, coarse_names, str(folder)) if kc else None
    return CifarData(USER, USER, folder, class_names=class_names, coarse_names=coarse_names,
                     fine_to_coarse=f2c, extra=extra, identity=identity, **out)


# --- register ------------------------------------------------------------------------------------


def _dataset_folder(path: str | os.PathLike) -> Path:
    """The folder holding the files for `register DIR`: DIR itself, or the one of USER_FOLDERS
    inside it with CIFAR files; refused where a run could not find it again."""
    if not str(path).strip():
        raise CifarlensError("the folder to register must not be empty")
    root = default_data_dir(path)
    if not root.is_dir():
        raise CifarlensError(f"{root} is not a folder")
    inside = [root / n for n in USER_FOLDERS if (root / n).is_dir()]
    try:
        detect_layout(root)
        here = True
    except CifarlensError:
        here = False
    if here:
        if root.name not in USER_FOLDERS:
            raise CifarlensError(
                f"{root} holds CIFAR files but a run finds user data by its folder's name: move "
                f"them into a folder named {USER_FOLDER} (or cifar-100-python / "
                "cifar-10-batches-py for those layouts) and register that")
        return root
    if len(inside) == 1:
        return inside[0]
    if len(inside) > 1:
        raise CifarlensError(f"{root} holds {', '.join(p.name for p in inside)}: register one of "
                             "them")
    detect_layout(root)  # raises: says which files a layout needs
    raise AssertionError("unreachable")


def register(path: str | os.PathLike, name: str | None = None, *, force: bool = False
             ) -> tuple[Path, dict[str, Any], str]:
    """Check a folder of CIFAR python files and write its manifest once (atomically).

    Returns (folder, manifest, what happened: "registered", "unchanged" or "re-registered").
    An existing manifest is kept when it still matches the files (and the name); a changed
    file is refused in one line unless `force`. Official and generated data are refused: they
    have their own checksums (`--dataset cifar100|cifar10`).
    """

    folder = _dataset_folder(path)
    layout, files = detect_layout(folder)
    if (folder / SYNTH_MANIFEST).exists():
        raise CifarlensError(f"{folder} is data cifarlens generated (it has {SYNTH_MANIFEST}); "
                             f"use it with --dataset {layout}")
    old = None
    if (folder / USER_MANIFEST).exists():
        try:
            old = read_manifest(folder)
        except CifarlensError:
            if not force:
                raise
    name = name if name is not None else (
        old["name"] if old else (folder.parent.name if folder.name in USER_FOLDERS
                                 else folder.name) or "my-data")
    if not name or len(name) > 80 or not name.isprintable():
        raise CifarlensError(f"--name must be 1 to 80 printable characters, got {name!r}")
    raws, md5, size = {}, {}, {}
    for f in _all_files(files):
        raws[f] = read_bytes(folder / f, "data file")
        md5[f], size[f] = md5_bytes(raws[f]), len(raws[f])
    official = DATASETS[layout]["md5"]
    if all(official.get(f) == h for f, h in md5.items()):
        raise CifarlensError(f"{folder} is the official {layout} data (every file has its official "
                             f"MD5): use it with --dataset {layout}")
    if old is not None and not force:
        changed = [f for f in sorted(set(md5) | set(old["md5"])) if old["md5"].get(f) != md5.get(f)]
        if changed:
            raise CifarlensError(
                f"{folder / changed[0]} changed since it was registered"
                + (f" (and {len(changed) - 1} more files)" if len(changed) > 1 else "")
                + "; runs trained on the old data will refuse the new; add --force to register "
                  "the folder again")
        if old["name"] != name:
            raise CifarlensError(f"{folder} is registered as {old['name']!r}; add --force to "
                                 f"rename it {name!r}")
        return folder, old, "unchanged"
    # Decode everything before a byte is written: a folder that cannot be read is not registered.
    meta = safe_unpickle(raws[files["meta"]], str(folder / files["meta"]))
    names_key = b"fine_label_names" if layout == "cifar100" else b"label_names"
    names = meta.get(names_key)
    if not isinstance(names, list) or not 2 <= len(names) <= MAX_CLASSES:
        raise CifarlensError(f"bad {names_key.decode()} in {folder / files['meta']}: need a list "
                             f"of 2 to {MAX_CLASSES} class names")
    class_names = read_names(meta, names_key, len(names), str(folder / files["meta"]),
                         len(raws[files["meta"]]))
    # blank, control-character or look-alike names: one line before a byte is written
    check_class_names(class_names, [f"{folder / files['meta']} (class {i})"
                                    for i in range(len(class_names))])
    coarse = meta.get(b"coarse_label_names") if layout == "cifar100" else None
    first = safe_unpickle(raws[files["train"][0]], str(folder / files["train"][0]))
    has_coarse = isinstance(coarse, list) and b"coarse_labels" in first
    x = first.get(b"data")
    side = int(round((x.shape[1] / 3) ** 0.5)) if isinstance(x, np.ndarray) and x.ndim == 2 else 0
    if not 8 <= side <= MAX_SIDE or 3 * side * side != x.shape[1]:
        raise CifarlensError(f"bad image array in {folder / files['train'][0]}: need uint8 rows of "
                             "3 x side x side values (side 8 to 512; 32 for CIFAR)")
    del first, meta
    manifest = {
        "format": FORMAT, "version": VERSION, "name": name, "layout": layout, "files": files,
        "md5": md5, "bytes": size, "image_size": side, "num_classes": len(class_names),
        "class_names": class_names,
        "superclasses": len(coarse) if has_coarse else 0,
        "sizes": None,  # from the decoded files, below
        "registered": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = decode(folder, manifest, lambda f: (raws[f], md5[f]))  # every check a read makes
    manifest["sizes"] = {"train": len(data.train_y), "test": len(data.test_y)}
    del data
    validate_manifest(manifest, str(folder / USER_MANIFEST))
    write_json(folder / USER_MANIFEST, manifest)
    return folder, manifest, "re-registered" if old is not None else "registered"


# --- import a folder of images ------------------------------------------------------------------


def _scan(src: Path) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: [image paths]}} of SRC/train/CLASS/* and SRC/test/CLASS/*, sorted."""
    out: dict[str, dict[str, list[Path]]] = {}
    for split in ("train", "test"):
        d = src / split
        if not d.is_dir():
            raise CifarlensError(f"{src} has no {split}/ folder: an image folder is "
                                 f"SRC/train/CLASS/*.png|jpg and SRC/test/CLASS/*.png|jpg")
        check_inside(src, d)
        classes: dict[str, list[Path]] = {}
        for c in sorted(p for p in d.iterdir() if not p.name.startswith(".")):
            check_inside(src, c)
            if not c.is_dir():
                raise CifarlensError(f"{shown(c)} is not a class folder (only class folders "
                                     f"belong in {shown(d)})")
            imgs = []
            for f in sorted(c.iterdir()):
                if f.name.startswith("."):
                    continue  # .DS_Store and the like
                check_inside(src, f)
                if f.suffix.lower() not in IMAGE_EXTENSIONS or not f.is_file():
                    raise CifarlensError(f"{shown(f)} is not a .png, .jpg or .jpeg image")
                imgs.append(f)
            if not imgs:
                raise CifarlensError(f"class folder {shown(c)} has no images")
            classes[c.name] = imgs
        # one line for a non-UTF-8, blank or look-alike name; stored NFC-normalised
        names = check_class_names(list(classes), [str(d / c) for c in classes])
        classes = dict(zip(names, classes.values(), strict=True))
        if len(classes) < 2:
            raise CifarlensError(f"{d} needs at least 2 class folders, found {len(classes)}")
        out[split] = classes
    a, b = set(out["train"]), set(out["test"])
    if a != b:
        only = [f"train only: {', '.join(sorted(a - b)[:5])}" if a - b else "",
                f"test only: {', '.join(sorted(b - a)[:5])}" if b - a else ""]
        raise CifarlensError(f"the class folders of {src}/train and {src}/test differ ("
                             + "; ".join(filter(None, only)) + ")")
    if len(a) > MAX_CLASSES:
        raise CifarlensError(f"{len(a)} classes: at most {MAX_CLASSES}")
    return out


def import_images(src: str | os.PathLike, data_dir: str | os.PathLike | None, *, size: int = 32,
                  name: str | None = None, progress: bool = True) -> Path:
    """Convert SRC/{train,test}/CLASS/*.png|jpg|jpeg once into DIR/cifarlens-user (CIFAR-100
    layout, label names = class folder names sorted) with its manifest; return the folder.

    Written into a temp folder and renamed into place only when every image converted: a bad
    image is one line naming it and nothing is left behind. An existing DIR/cifarlens-user is
    never replaced.
    """
    from tqdm import tqdm


    if not 8 <= size <= MAX_SIDE:
        raise CifarlensError(f"--size must be from 8 to {MAX_SIDE}, got {size}")
    if not str(src).strip() or (data_dir is not None and not str(data_dir).strip()):
        raise CifarlensError("SRC and --data-dir must not be empty")
    srcp = Path(src).expanduser()
    if not srcp.is_dir():
        raise CifarlensError(f"{srcp} is not a folder")
    srcp = srcp.resolve()
    root = default_data_dir(data_dir)
    target = root / USER_FOLDER
    if target.exists() or target.is_symlink():
        raise CifarlensError(f"{target} already exists; not replacing it (choose another "
                             "--data-dir or move it away)")
    name = name if name is not None else srcp.name
    if not name or len(name) > 80 or not name.isprintable():
        raise CifarlensError(f"--name must be 1 to 80 printable characters, got {name!r}")
    tree = _scan(srcp)
    classes = sorted(tree["train"])
    total = sum(len(v) for s in tree.values() for v in s.values())
    files: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    with tqdm(total=total, desc="importing images", unit="img", disable=not progress,
              leave=False) as bar:
        for split in ("train", "test"):
            xs, ys, fnames = [], [], []
            for label, c in enumerate(classes):
                for f in tree[split][c]:
                    xs.append(load_image(f, size))
                    ys.append(label)
                    fnames.append(os.fsencode(f.relative_to(srcp)))
                    bar.update()
            rows = np.stack(xs).transpose(0, 3, 1, 2).reshape(len(xs), -1)
            files[split] = dump_pickle({
                b"batch_label": f"{split} images of {name}".encode("utf-8", "replace"),
                b"fine_labels": ys, b"data": np.ascontiguousarray(rows), b"filenames": fnames})
            sizes[split] = len(xs)
    files["meta"] = dump_pickle({b"fine_label_names": [c.encode("utf-8") for c in classes]})
    layout = {"meta": "meta", "train": ["train"], "test": ["test"]}
    manifest = {
        "format": FORMAT, "version": VERSION, "name": name, "layout": "cifar100",
        "files": layout, "md5": {f: md5_bytes(b) for f, b in files.items()},
        "bytes": {f: len(b) for f, b in files.items()}, "image_size": size,
        "num_classes": len(classes), "class_names": classes, "superclasses": 0, "sizes": sizes,
        "registered": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "imported_from": {"source": str(srcp), "size": size,
                          "resize": "centre crop to square, bicubic resize (PIL ImageOps.fit)"},
    }
    validate_manifest(manifest, "the new manifest")
    decode(root / USER_FOLDER, manifest, lambda f: (files[f], manifest["md5"][f]))
    files[USER_MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    return install_folder(root, USER_FOLDER, files)



def check_input_size(model, side: int, name: str) -> None:
    """Refuse, in one line before training, a model that cannot take side x side images (the
    user's data imported at another --size than 32: the built-in VGGs' heads fit 32x32 only)."""
    import torch

    p = next(model.parameters(), None)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, side, side, device=p.device if p is not None else "cpu"))
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise RuntimeError(f"output {type(out).__name__}")
    except Exception as e:
        raise CifarlensError(
            f"model {name} does not take the data's {side}x{side} images ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); the built-in baseline and small take "
            "only 32x32: import the images again with --size 32, or use resnet18") from None
    finally:
        model.train(was)
