"""`cifarlens data ...`: generate, inspect, register, import, verify and download datasets."""

from __future__ import annotations

import argparse

from cifarlens.cli.args import Parser, add_data_args, finite_float, int_range, nonneg_int, one_line
from cifarlens.errors import CifarlensError


def cmd_data_synth(a: argparse.Namespace) -> int:
    from cifarlens.data.registry import default_data_dir
    from cifarlens.data.synth import write_synthetic

    kw = {k: v for k, v in (("train_per_class", a.train_per_class),
                            ("test_per_class", a.test_per_class)) if v is not None}
    folder = write_synthetic(default_data_dir(a.data_dir), a.dataset, seed=a.seed,
                             label_noise=a.label_noise,
                             train_noise=(a.train_label_noise, a.train_noise_kind), **kw)
    print(f"wrote generated {a.dataset} data to {folder} (and its archive beside it)")
    return 0


def cmd_data_info(a: argparse.Namespace) -> int:
    from cifarlens.data.registry import DATASETS, USER, USER_MANIFEST, default_data_dir
    from cifarlens.data.userdata import USER_FOLDERS, read_manifest

    root = default_data_dir(a.data_dir)
    print(f"data folder: {root}")
    for name, spec in DATASETS.items():
        if name == USER:
            continue
        folder, archive = root / spec["folder"], root / spec["archive"]
        state = "extracted" if folder.is_dir() else "archive only" if archive.exists() else "absent"
        print(f"  {name}: {state} ({folder if folder.is_dir() else archive})")
    for folder in [root] + [root / n for n in USER_FOLDERS]:
        if (folder / USER_MANIFEST).is_file():
            try:
                m = read_manifest(folder)
                state = (f"registered as {m['name']!r}, {m['num_classes']} classes, "
                         f"{m['sizes']['train']} train / {m['sizes']['test']} test images")
            except CifarlensError as e:
                state = f"unreadable manifest ({e})"
            print(one_line(f"  user: {state} ({folder})"))
    return 0


def cmd_data_register(a: argparse.Namespace) -> int:
    from cifarlens.data.userdata import register

    folder, m, what = register(a.dir, a.name, force=a.force)
    said = {"unchanged": "already registered, files unchanged; nothing written",
            "registered": "registered", "re-registered": "registered again"}[what]
    print(one_line(f"{folder}: {said}: {m['name']!r}, {m['layout']} layout, "
                    f"{m['num_classes']} classes, {m['sizes']['train']} train / "
                    f"{m['sizes']['test']} test images of {m['image_size']}x{m['image_size']}"
                    + (f", {m['superclasses']} superclasses" if m["superclasses"] else "")
                    + f"; use it with --dataset user --data-dir {folder}"))
    return 0


def cmd_data_import(a: argparse.Namespace) -> int:
    from cifarlens.data.userdata import import_images, read_manifest

    folder = import_images(a.src, a.data_dir, size=a.size, name=a.name)
    m = read_manifest(folder)
    print(one_line(f"imported {m['sizes']['train']} train / {m['sizes']['test']} test images "
                    f"of {m['num_classes']} classes as {m['name']!r} into {folder}; use it with "
                    f"--dataset user --data-dir {folder}"))
    return 0


def cmd_data_verify(a: argparse.Namespace) -> int:
    from cifarlens.data.load import load_dataset

    d = load_dataset(a.dataset, a.data_dir, download=False)  # reads only: nothing is extracted
    where = f"{d.extra['archive']} (read in place)" if "archive" in d.extra else d.folder
    print(f"{a.dataset} at {where}: {d.source} data, checksums OK; {len(d.train_y)} train / "
          f"{len(d.test_y)} test images, {d.num_classes} classes")
    return 0


def cmd_data_download(a: argparse.Namespace) -> int:
    from cifarlens.data.load import locate

    folder = locate(a.dataset, a.data_dir, download=True)
    print(f"{a.dataset} ready at {folder}")
    return 0


def register(sub) -> None:
    """`data` and its actions."""
    dp = sub.add_parser("data", help="dataset tools: synth, info, verify, download, register, "
                                     "import")
    dsub = dp.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    dsub.required = True
    from cifarlens.data.synth import DATASETS as SYNTH

    per_class = "; ".join(f"{k}: {v['train_per_class']} train / {v['test_per_class']} test"
                          for k, v in sorted(SYNTH.items()))
    s = dsub.add_parser(
        "synth", help="write a small generated dataset in the official format",
        description="Write a small generated dataset (coloured shapes on clutter, with object "
                    "boxes) in the official CIFAR python format, plus its archive. Only writes "
                    "into an empty folder or over data cifarlens generated; official data and "
                    f"foreign files are never overwritten. Default images per class: {per_class}.")
    s.add_argument("--data-dir", "--out", dest="data_dir", metavar="DIR",
                   help="data folder to write into (default: $CIFARLENS_DATA or the user cache); "
                        "--out is the older name")
    s.add_argument("--dataset", choices=sorted(SYNTH), default="cifar100",
                   help="format to write (default cifar100)")
    s.add_argument("--train-per-class", type=int_range(1, 10_000),
                   help="training images per class (default: "
                        + ", ".join(f"{v['train_per_class']} for {k}" for k, v in sorted(SYNTH.items()))
                        + ")")
    s.add_argument("--test-per-class", type=int_range(1, 10_000),
                   help="test images per class (default: "
                        + ", ".join(f"{v['test_per_class']} for {k}" for k, v in sorted(SYNTH.items()))
                        + ")")
    s.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    s.add_argument("--label-noise", type=finite_float, default=0.0,
                   help="fraction of test labels to corrupt (recorded), for label-error checks "
                        "(default 0)")
    s.add_argument("--train-label-noise", type=finite_float, default=0.0, metavar="RATE",
                   help="fraction of TRAINING labels to flip (recorded in the manifest), for "
                        "scoring label-issue detection (default 0)")
    s.add_argument("--train-noise-kind", choices=("uniform", "confusable"), default="uniform",
                   help="uniform: to a random other class; confusable: to the class whose "
                        "object looks most alike (default uniform)")
    s.set_defaults(func=cmd_data_synth)
    i = dsub.add_parser("info", help="where the data lives and what is there")
    i.add_argument("--data-dir", help="data folder (default: $CIFARLENS_DATA or the user cache)")
    i.set_defaults(func=cmd_data_info)
    v = dsub.add_parser("verify", help="check every data file's checksum and format")
    add_data_args(v)
    v.set_defaults(func=cmd_data_verify)
    dl = dsub.add_parser("download", help="download and verify the official archive")
    add_data_args(dl)
    dl.set_defaults(func=cmd_data_download)
    r = dsub.add_parser(
        "register", help="check your own CIFAR-format data and write its checksums once",
        description="Check a folder of CIFAR python files that is not the official data (a "
                    "relabelled CIFAR-100, a subset, your own classes) and write its manifest "
                    "cifarlens-data.json (MD5 and size of every file, classes, image counts) "
                    "once; every later read checks the files against it. Then: "
                    "--dataset user --data-dir DIR. See docs/data.md.")
    r.add_argument("dir", metavar="DIR",
                   help="the folder holding the files (named cifarlens-user, cifar-100-python or "
                        "cifar-10-batches-py), or its parent")
    r.add_argument("--name", help="what reports call the data (default: the folder's name, or "
                                  "its parent's for the standard folder names)")
    r.add_argument("--force", action="store_true",
                   help="register again although files changed since the last registration")
    r.set_defaults(func=cmd_data_register)
    im = dsub.add_parser(
        "import", help="convert a folder of images in class subfolders into CIFAR format",
        description="Convert SRC/train/CLASS/*.png|jpg|jpeg and SRC/test/CLASS/... once into "
                    "the CIFAR python format (uint8 arrays, label names from the folder names "
                    "sorted) in DIR/cifarlens-user, with its manifest. Images are centre-cropped "
                    "to a square and resized to --size (bicubic). Nothing is left behind when an "
                    "image cannot be read. Then: --dataset user --data-dir DIR.")
    im.add_argument("src", metavar="SRC", help="folder with train/ and test/ class folders")
    im.add_argument("--data-dir", required=True, metavar="DIR",
                    help="folder to write cifarlens-user/ into (must not hold one yet)")
    im.add_argument("--size", type=int_range(8, 512), default=32,
                    help="image side in pixels (default 32; the built-in VGG models take only "
                         "32, resnet18 any size from 8)")
    im.add_argument("--name", help="what reports call the data (default: SRC's folder name)")
    im.set_defaults(func=cmd_data_import)
