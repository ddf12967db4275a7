"""CIFAR-10/100 from the official python-format files: locate, download, verify, read, split, batch.

Data never runs code and never costs more than its size: every pickle is MD5-checked first
(against the official checksums, or the validated manifest of a dataset `cifarlens data synth`
generated), its opcodes are scanned before unpickling (no declared length beyond the file's end,
no memo index out of proportion, no object-building opcodes), and it is read with an unpickler
that allows only the few numpy globals the format needs, each checked so that an array is only
ever as large as the bytes that carry it.

Reading never writes: `load_dataset(..., download=False)` reads an extracted folder, or the
members of a verified archive in memory. Only a caller that asks to prepare the data
(`download=True`: `cifarlens data download`, `train`) writes, and then only new names (the
archive, then the dataset folder renamed into place from a temp folder once every file in it
verified); nothing that exists is replaced or deleted.
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifarlens._io import read_bytes
from cifarlens.data.download import md5_file, read_members
from cifarlens.data.manifests import parse_manifest
from cifarlens.data.pickles import (
    _OPCODE_AT,
    check_md5,
    md5_bytes,
    read_images,
    read_labels,
    read_names,
    safe_unpickle,
)
from cifarlens.data.registry import (
    SYNTH_MANIFEST,
    USER_MANIFEST,
    data_files,
    dataset_spec,
)
from cifarlens.errors import CifarlensError

# --- batching and augmentation (batched tensor ops on the training device) ----------------------

for _op in pickletools.opcodes:
    _OPCODE_AT[ord(_op.code)] = _op


@dataclass
class CifarData:
    """A whole dataset in memory: uint8 NCHW images and int64 labels.

    `folder` is absolute (where the dataset is, or would be once extracted when it was read
    from its archive: `extra["archive"]` then names the archive). Generated data carries its
    validated manifest in `extra["manifest"]`.
    """

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


def _build(name: str, source: str, folder: Path, get: Callable[[str], tuple[bytes, str]],
           where: Callable[[str], str], manifest: dict | None) -> CifarData:
    """Decode verified file bytes into a CifarData, checking every field against the format.

    `get(file)` returns a file's verified bytes and their MD5; it is called once per file, so
    only one raw file is held at a time beside the decoded arrays."""
    spec = dataset_spec(name)
    k = spec["num_classes"]
    meta_bytes, meta_md5 = get(spec["meta"])
    meta = safe_unpickle(meta_bytes, where(spec["meta"]))
    # The data's identity by content (MD5 of every file), recorded by runs at creation.
    md5: dict[str, str] = {spec["meta"]: meta_md5}
    out: dict = {"identity": {"dataset": name, "source": source, "md5": md5}}
    fine_key = b"fine_labels" if name == "cifar100" else b"labels"
    for split in ("train", "test"):
        xs, ys, cs = [], [], []
        for f in spec[split]:
            raw, md5[f] = get(f)
            d = safe_unpickle(raw, where(f))
            x = read_images(d, where(f), len(raw))
            del raw
            xs.append(x)
            ys.append(read_labels(d, fine_key, len(x), k, where(f)))
            if name == "cifar100":
                cs.append(read_labels(d, b"coarse_labels", len(x), 20, where(f)))
            del d
        out[f"{split}_x"] = np.concatenate(xs)
        out[f"{split}_y"] = np.concatenate(ys)
        if cs:
            out[f"{split}_coarse"] = np.concatenate(cs)
    extra: dict = {}
    if manifest is not None:
        sizes = manifest["sizes"]
        got = {"train": len(out["train_y"]), "test": len(out["test_y"])}
        if got != sizes:
            raise CifarlensError(f"bad manifest {where(SYNTH_MANIFEST)}: it lists {sizes['train']} "
                                 f"train / {sizes['test']} test images, the data files hold "
                                 f"{got['train']} / {got['test']}")
        extra["manifest"] = manifest
    if name == "cifar100":
        class_names = read_names(meta, b"fine_label_names", 100, where(spec["meta"]), len(meta_bytes))
        coarse_names = read_names(meta, b"coarse_label_names", 20, where(spec["meta"]),
                              len(meta_bytes))
        f2c = fine_to_coarse(out, class_names, coarse_names, str(folder))
        return CifarData(name, source, folder, class_names=class_names, coarse_names=coarse_names,
                         fine_to_coarse=f2c, extra=extra, **out)
    class_names = read_names(meta, b"label_names", 10, where(spec["meta"]), len(meta_bytes))
    return CifarData(name, source, folder, class_names=class_names, extra=extra, **out)


def fine_to_coarse(out: dict, fine_names: list[str], coarse_names: list[str], where: str
                    ) -> np.ndarray:
    """The fine->coarse table, refusing a fine class labelled with two coarse classes (in either
    split) or coarse labels that do not form one group per coarse name (20 for CIFAR-100)."""
    k, kc = len(fine_names), len(coarse_names)
    missing = np.flatnonzero(np.bincount(out["train_y"], minlength=k) == 0).tolist()
    if missing:
        raise CifarlensError(f"{where}: fine classes {_classes(missing, fine_names)} have no "
                             "training images")
    fine = np.concatenate([out["train_y"], out["test_y"]])
    coarse = np.concatenate([out["train_coarse"], out["test_coarse"]])
    pairs = np.unique(fine * kc + coarse)
    f_of, c_of = pairs // kc, pairs % kc
    counts = np.bincount(f_of, minlength=k)
    if (counts > 1).any():
        c = int(np.flatnonzero(counts > 1)[0])
        both = c_of[f_of == c].tolist()
        raise CifarlensError(
            f"{where}: inconsistent coarse labels: fine class {_classes([c], fine_names)} is "
            f"labelled coarse {_classes(both, coarse_names)} ({int((counts > 1).sum())} fine "
            "classes with more than one coarse class)")
    f2c = np.empty(k, dtype=np.int64)
    f2c[f_of] = c_of
    unused = sorted(set(range(kc)) - set(f2c.tolist()))
    if unused:
        raise CifarlensError(f"{where}: coarse labels form {kc - len(unused)} groups, need {kc}: "
                             f"coarse classes {_classes(unused, coarse_names)} have no fine class")
    return f2c


def _classes(ids: list[int], names: list[str]) -> str:
    shown = [f"{i} ({names[i][:40]})" for i in ids[:5]]
    return ", ".join(shown) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def read_folder(folder: Path, name: str) -> CifarData:
    """Read an extracted official-format folder, verifying every file before unpickling it."""

    spec = dataset_spec(name)
    folder = Path(folder).absolute()
    names = data_files(spec)
    sizes = {}
    for f in names:
        try:
            sizes[f] = (folder / f).stat().st_size
        except FileNotFoundError:
            raise CifarlensError(f"missing data file {folder / f}") from None
        except OSError as e:
            raise CifarlensError(f"cannot read data file {folder / f}: {e.strerror or e}") from None
    manifest = None
    if (folder / USER_MANIFEST).exists() and not (folder / SYNTH_MANIFEST).exists():
        raise CifarlensError(f"{folder} holds your own data (registered, {USER_MANIFEST}), not "
                             f"the official {name}: read it with --dataset user")
    if (folder / SYNTH_MANIFEST).exists():
        raw = read_bytes(folder / SYNTH_MANIFEST, "manifest")
        manifest = parse_manifest(raw, str(folder / SYNTH_MANIFEST), name, sum(sizes.values()))
        md5s, source = manifest["md5"], "generated"
    else:
        md5s, source = spec["md5"], "official"

    def get(f: str) -> tuple[bytes, str]:
        raw = read_bytes(folder / f, "data file")
        return raw, check_md5(raw, f, md5s, str(folder / f))

    return _build(name, source, folder, get, lambda f: str(folder / f), manifest)


def read_archive_files(archive: Path, name: str) -> tuple[dict[str, bytes], str, dict | None]:
    """The verified files of a dataset archive, read in memory: {name: bytes} (with the raw
    manifest of generated data under its own name), the source, and the parsed manifest.

    An archive is accepted when its MD5 is the official one, or when it is exactly a generated
    dataset: only the dataset folder, its data files and its manifest, regular files only, no
    more bytes than 16 times the archive's size, a valid manifest, and every data file matching
    the manifest's MD5. Anything else is refused before a byte of it is used or written.
    """

    spec = dataset_spec(name)
    archive = Path(archive)
    wanted = data_files(spec)
    official = md5_file(archive) == spec["archive_md5"]
    if official:
        members = read_members(archive, spec["folder"], set(wanted), allowed=None, max_total=None)
        md5s, manifest = spec["md5"], None
    else:
        allowed = {*wanted, SYNTH_MANIFEST}
        limit = 16 * archive.stat().st_size + (1 << 20)
        members = read_members(archive, spec["folder"], allowed, allowed=allowed, max_total=limit,
                               not_verified=f"expected MD5 {spec['archive_md5']}")
        if SYNTH_MANIFEST not in members:
            raise CifarlensError(f"checksum mismatch for {archive}: expected MD5 "
                                 f"{spec['archive_md5']} (and it is not a dataset cifarlens "
                                 "generated: no manifest); delete it and download again")
        data_bytes = sum(len(members.get(f, b"")) for f in wanted)
        manifest = parse_manifest(members[SYNTH_MANIFEST], f"{archive} ({SYNTH_MANIFEST})",
                                  name, data_bytes)
        md5s = manifest["md5"]
    for f in wanted:
        if f not in members:
            raise CifarlensError(f"{archive} has no {spec['folder']}/{f}")
        check_md5(members[f], f, md5s, f"{archive} (member {spec['folder']}/{f})")
    return members, ("official" if official else "generated"), manifest


def read_archive(archive: Path, name: str) -> CifarData:
    """Read a dataset straight from its archive, in memory: nothing is extracted or written."""
    spec = dataset_spec(name)
    archive = Path(archive).absolute()
    files, source, manifest = read_archive_files(archive, name)

    def get(f: str) -> tuple[bytes, str]:  # verified by read_archive_files
        raw = files.pop(f)
        return raw, md5_bytes(raw)

    data = _build(name, source, archive.parent / spec["folder"], get,
                  lambda f: f"{archive} (member {spec['folder']}/{f})", manifest)
    data.extra["archive"] = archive
    return data
